//! The pool's Hugging Face models: run from the cache (`hub::locate`),
//! pulled only under `slm.pool.pull_on_first_use`, and what the cache
//! holds for `/v1/models` and `/ready`.

use super::ModelPool;
use crate::config::ModelProvider;
use crate::models::{hub, SlmRunnerError};

impl ModelPool {
    /// The blob a Hugging Face model runs from and the digest it must
    /// have: from the cache, never downloaded here (`symbi-slm models
    /// pull` does that) unless `pull_on_first_use` says so.
    pub(super) async fn hub_file(
        &self,
        model_id: &str,
        provider: &ModelProvider,
    ) -> Result<hub::Located, SlmRunnerError> {
        let m =
            hub::HubModel::of(model_id, provider).ok_or_else(|| SlmRunnerError::InvalidInput {
                field: "model",
                reason: format!("model `{model_id}`: its `file` is refused by the config's rules"),
            })?;
        let located = match hub::locate(&self.inner.hub_cache, &m) {
            Ok(found) => found,
            // Only a model that is not there is pulled (a split model is
            // there, and cannot run: said as it is).
            Err(hub::HubError::Missing { .. })
                if self.inner.catalog.config().pool.pull_on_first_use =>
            {
                self.pull(&m).await?
            }
            Err(e) => {
                return Err(SlmRunnerError::ModelNotPulled {
                    model_id: model_id.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        if located.sha256.is_none() {
            // Not an LFS file and not pinned: nothing says which bytes
            // must run, and nothing is run unchecked.
            return Err(SlmRunnerError::InvalidInput {
                field: "model",
                reason: format!(
                    "model `{model_id}`: `{}` in the Hugging Face cache is not an LFS file, so nothing names the bytes it must have: pin it with `sha256` (`symbi-slm models verify {model_id}` prints its digest)",
                    located.file
                ),
            });
        }
        Ok(located)
    }

    /// What model `model_id`'s bytes are (present, size, digest, for a
    /// Hugging Face model its revision and commit); `None` for a remote
    /// or unknown model.
    pub fn artifact(&self, model_id: &str) -> Option<hub::Artifact> {
        let m = self.inner.catalog.get_model(model_id)?;
        hub::Artifact::of(m, &self.inner.hub_cache)
    }

    /// Why model `model_id` cannot run yet when it is a Hugging Face model
    /// that is not in the cache (nothing is pulled here); `None` for any
    /// other model, or one that is there (whether it can run is the
    /// runner's to say).
    pub fn missing(&self, model_id: &str) -> Option<String> {
        let model = self.inner.catalog.get_model(model_id)?;
        let m = hub::HubModel::of(model_id, &model.provider)?;
        match hub::locate(&self.inner.hub_cache, &m) {
            Err(e @ hub::HubError::Missing { .. }) => Some(e.to_string()),
            _ => None,
        }
    }

    /// Pulls a Hugging Face model missing from the cache
    /// (`slm.pool.pull_on_first_use`): one download however many requests
    /// wait for it (the blob's lock), checked as `models pull` checks it.
    async fn pull(&self, m: &hub::HubModel) -> Result<hub::Located, SlmRunnerError> {
        let failed = |e: hub::HubError| SlmRunnerError::ModelNotPulled {
            model_id: m.id.clone(),
            reason: format!(
                "model `{}` is not in the Hugging Face cache and pulling it failed: {e}",
                m.id
            ),
        };
        let client =
            hub::HubClient::new(hub::HubEnv::from_env().map_err(failed)?).map_err(failed)?;
        tracing::info!(target: "symbi_slm_models", model = %m.id, "pulling {} (slm.pool.pull_on_first_use)", m.describe());
        let plan = hub::PullPlan::resolve(&client, m).await.map_err(failed)?;
        let pulled = hub::pull(&client, &self.inner.hub_cache, &plan, &|_| {})
            .await
            .map_err(failed)?;
        tracing::info!(target: "symbi_slm_models", model = %m.id, "pulled {} at {}: {} bytes downloaded", m.describe(), pulled.commit, pulled.downloaded);
        hub::locate(&self.inner.hub_cache, m).map_err(failed)
    }
}
