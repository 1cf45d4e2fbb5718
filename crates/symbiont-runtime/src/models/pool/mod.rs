//! The model pool: one object that runs every model of a catalog, for any
//! agent, under one host budget.
//!
//! A request names an agent and a model: [`ModelPool::for_agent`] gives
//! the agent's view of the pool, whose `runner` checks the agent's access
//! in the catalog (a refusal is an audit event) and returns a runner
//! bound to the agent (see `agent.rs`). Underneath is that model's runner, built on first use with the profile
//! asked for (default: the config's) and the pool's [`Budget`], so that the
//! workers of every model stay together within `[slm.pool]`'s memory,
//! cores and worker count (idle ones evicted least recently used first).
//! Pinned models are loaded by [`ModelPool::preload_pinned`] and never
//! unloaded; the others unload after their keep-alive.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::ModelProvider;

mod hub_models;
mod runner;

pub use runner::PoolRunner;

use crate::models::agent::AgentModels;
use crate::models::{
    hub, Budget, ExecutionOptions, ExecutionResult, HostBudget, LocalGgufRunner, ModelCatalog,
    ModelCatalogError, RemoteRunner, RunnerLoad, RunnerMetrics, SlmRunner, SlmRunnerError,
};

/// Every model of a catalog, run for agents under one host budget. Cheap
/// to clone; clones share the runners.
#[derive(Debug, Clone)]
pub struct ModelPool {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: ModelCatalog,
    budget: Arc<Budget>,
    audit: AuditLog,
    worker_path: Option<PathBuf>,
    /// Where Hugging Face models are found.
    hub_cache: hub::HfCache,
    /// Runners by (model id, profile name).
    runners: Mutex<HashMap<(String, String), PoolRunner>>,
    /// The embedder's own runners, by model id.
    supplied: HashMap<String, Arc<dyn SlmRunner>>,
    /// Local workers sized for one request at a time.
    one_at_a_time: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("catalog", &self.catalog)
            .field("budget", &self.budget)
            .field("worker_path", &self.worker_path)
            .field("runners", &self.runners)
            .field("supplied", &self.supplied.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ModelPool`].
pub struct ModelPoolBuilder {
    catalog: ModelCatalog,
    budget: Option<Arc<Budget>>,
    audit: Option<AuditLog>,
    worker_path: Option<PathBuf>,
    hub_cache: Option<hub::HfCache>,
    supplied: HashMap<String, Arc<dyn SlmRunner>>,
    one_at_a_time: bool,
}

impl std::fmt::Debug for ModelPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPoolBuilder")
            .field("catalog", &self.catalog)
            .field("worker_path", &self.worker_path)
            .field("supplied", &self.supplied.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ModelPoolBuilder {
    /// The host budget (default: from the config's `[slm.pool]`).
    pub fn budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }
    /// Where security events go (default: the config's `audit_log_path`,
    /// else `tracing` only).
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }
    /// The worker executable (default: as [`LocalGgufRunner`] finds it).
    pub fn worker_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_path = Some(path.into());
        self
    }
    /// Local models run one request at a time (`symbi-slm run`, `chat`):
    /// each worker gets one slot and a KV cache of one context, whatever
    /// the models' `slots` and `cache_tokens` say, so that a one-shot
    /// holds no memory it cannot use (default: off).
    pub fn one_request_at_a_time(mut self, on: bool) -> Self {
        self.one_at_a_time = on;
        self
    }
    /// The Hugging Face cache that `HuggingFace` models run from (default:
    /// where `huggingface_hub` keeps it, [`hub::HfCache::from_env`]).
    pub fn hub_cache(mut self, cache: hub::HfCache) -> Self {
        self.hub_cache = Some(cache);
        self
    }
    /// The embedder's own runner for the catalog's model `model_id`, in
    /// place of the one its provider would give, under every profile.
    /// The pool's access checks, the service's APIs, limits and metrics
    /// apply to it as to the built-in runners, and the profile's
    /// `max_execution_time_seconds` to each of its requests (then
    /// `ExecutionTimeout`); its sandbox, queue and counters are its own
    /// (the pool reports none for it: it is not in [`ModelPool::metrics`]
    /// nor [`ModelPool::loads`]), and it serves every agent's requests
    /// alike (no tenant is passed to it). Its stream is read in a task of
    /// its own, through a channel of bounded size, as a remote runner's
    /// is; a stream that ends without a result, or a runner that panics,
    /// ends the request with `ExecutionFailed`.
    pub fn runner(mut self, model_id: impl Into<String>, runner: Arc<dyn SlmRunner>) -> Self {
        self.supplied.insert(model_id.into(), runner);
        self
    }
    /// The pool; nothing is loaded yet. `UnknownModel` when a supplied
    /// runner names no model of the catalog.
    pub fn build(self) -> Result<ModelPool, SlmRunnerError> {
        if let Some(id) = self
            .supplied
            .keys()
            .find(|id| self.catalog.get_model(id).is_none())
        {
            return Err(SlmRunnerError::UnknownModel {
                model_id: id.clone(),
            });
        }
        let settings = &self.catalog.config().pool;
        let audit = match self.audit {
            Some(a) => a,
            None => match &self.catalog.config().audit_log_path {
                Some(p) => AuditLog::at(p).map_err(|source| SlmRunnerError::Io {
                    context: format!("opening the audit log {p}"),
                    source: source.into(),
                })?,
                None => AuditLog::tracing_only(),
            },
        };
        let budget = self
            .budget
            .unwrap_or_else(|| Budget::new(HostBudget::from_settings(settings)));
        Ok(ModelPool {
            inner: Arc::new(Inner {
                catalog: self.catalog,
                budget,
                audit,
                worker_path: self.worker_path,
                hub_cache: self.hub_cache.unwrap_or_else(hub::HfCache::from_env),
                runners: Mutex::new(HashMap::new()),
                supplied: self.supplied,
                one_at_a_time: self.one_at_a_time,
            }),
        })
    }
}

impl ModelPool {
    /// A builder over a validated catalog.
    pub fn builder(catalog: ModelCatalog) -> ModelPoolBuilder {
        ModelPoolBuilder {
            catalog,
            budget: None,
            audit: None,
            worker_path: None,
            hub_cache: None,
            supplied: HashMap::new(),
            one_at_a_time: false,
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &ModelCatalog {
        &self.inner.catalog
    }

    /// Where the pool's security events go (the service records its own
    /// there too: refused tokens).
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The host budget every worker draws on.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.inner.budget
    }

    /// Takes over from `old` (the pool of the config before a reload) the
    /// runners this pool would build the same, with their loaded workers:
    /// the same model entry under the same profile, the same keep-alive and
    /// pin, and one host budget (build this pool with `old`'s
    /// [`budget`](ModelPool::budget)); the embedder's own runners are not
    /// the config's and are not taken. The others are left to `old`: its
    /// requests in progress finish there, and its workers stop when the
    /// last of them lets go of it. Returns the (model, profile) pairs
    /// taken over.
    pub async fn adopt(&self, old: &ModelPool) -> Vec<(String, String)> {
        if !Arc::ptr_eq(&self.inner.budget, &old.inner.budget) {
            return Vec::new();
        }
        let (new_c, old_c) = (self.catalog().config(), old.catalog().config());
        let same = |model: &str, profile: &str| {
            let m = (
                new_c
                    .model_allow_lists
                    .global_models
                    .iter()
                    .find(|m| m.id == model),
                old_c
                    .model_allow_lists
                    .global_models
                    .iter()
                    .find(|m| m.id == model),
            );
            let keep_alive = |c: &crate::config::Slm| {
                (
                    c.pool.keep_alive_by_model.get(model).copied(),
                    c.pool.keep_alive_seconds,
                    c.pool.pinned_models.iter().any(|p| p == model),
                    c.audit_log_path.clone(),
                )
            };
            matches!(m, (Some(a), Some(b)) if a == b)
                && new_c.sandbox_profiles.contains_key(profile)
                && new_c.sandbox_profiles.get(profile) == old_c.sandbox_profiles.get(profile)
                && keep_alive(new_c) == keep_alive(old_c)
                && !self.inner.supplied.contains_key(model)
        };
        let taken: Vec<((String, String), PoolRunner)> = old
            .inner
            .runners
            .lock()
            .await
            .iter()
            .filter(|((m, p), _)| same(m, p))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        let mut mine = self.inner.runners.lock().await;
        let mut out = Vec::new();
        for (key, runner) in taken {
            out.push(key.clone());
            mine.entry(key).or_insert(runner);
        }
        out.sort();
        out
    }

    /// The pool as `agent_id` may use it: the way to a runner for an
    /// agent's requests (access checked once, the runner bound to the
    /// agent).
    pub fn for_agent(&self, agent_id: &str) -> AgentModels {
        AgentModels::new(self.clone(), Some(agent_id))
    }

    /// The pool as the config's owner uses it (`symbi-slm run` without
    /// `--agent`): every model, no allow-list to check, requests as the
    /// anonymous tenant. Never for an agent's requests.
    pub fn for_operator(&self) -> AgentModels {
        AgentModels::new(self.clone(), None)
    }

    /// Runs `prompt` on `model_id` for `agent_id`, under `profile` (default:
    /// the config's `default_sandbox_profile`), after checking the agent's
    /// access (a refusal is recorded in the audit log): a shorthand for
    /// `for_agent(agent_id).runner(model_id, profile)` and its `execute`.
    pub async fn execute(
        &self,
        agent_id: &str,
        model_id: &str,
        profile: Option<&str>,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        self.for_agent(agent_id)
            .runner(model_id, profile)
            .await?
            .execute(prompt, options)
            .await
    }

    /// The runner of `model_id` under `profile`, after checking that
    /// `agent_id` may use the model (a refusal is recorded in the audit
    /// log); not bound to the agent.
    #[deprecated(
        since = "0.2.0",
        note = "use ModelPool::for_agent(agent).runner(model, profile): the runner it returns is bound to the agent"
    )]
    pub async fn runner_for_agent(
        &self,
        agent_id: &str,
        model_id: &str,
        profile: Option<&str>,
    ) -> Result<PoolRunner, SlmRunnerError> {
        self.check_access(agent_id, model_id, profile)?;
        self.runner(model_id, profile).await
    }

    /// Whether `agent_id` may use `model_id`: `UnknownModel`, or
    /// `AccessDenied` recorded in the audit log.
    pub(crate) fn check_access(
        &self,
        agent_id: &str,
        model_id: &str,
        profile: Option<&str>,
    ) -> Result<(), SlmRunnerError> {
        let catalog = &self.inner.catalog;
        if let Err(e) = catalog.validate_model_access(model_id, agent_id) {
            return Err(match e {
                ModelCatalogError::ModelNotFound { .. } => SlmRunnerError::UnknownModel {
                    model_id: model_id.to_string(),
                },
                other => {
                    // Recorded whatever profile was asked for; to the file
                    // when that profile logs (an unknown name: it does).
                    let (name, to_file) = match self.profile(profile) {
                        Ok((name, p)) => (Some(name), p.security.enable_audit_logging),
                        Err(_) => (None, true),
                    };
                    let event = AuditEvent::new(
                        AuditKind::AccessRefused,
                        "model_allow_lists",
                        other.to_string(),
                    )
                    .about(Some(agent_id), Some(model_id), name.as_deref());
                    self.inner.audit.record(&event, to_file);
                    SlmRunnerError::AccessDenied {
                        agent_id: agent_id.to_string(),
                        model_id: model_id.to_string(),
                        detail: other.to_string(),
                    }
                }
            });
        }
        Ok(())
    }

    /// The runner of `model_id` under `profile` (built on first use), for
    /// its figures and life cycle (metrics, load, preload, the worker's
    /// pid). No access check: requests for agents go through
    /// [`ModelPool::for_agent`].
    pub async fn runner(
        &self,
        model_id: &str,
        profile: Option<&str>,
    ) -> Result<PoolRunner, SlmRunnerError> {
        let (profile_name, profile) = self.profile(profile)?;
        if let Some(r) = self.inner.supplied.get(model_id) {
            return Ok(PoolRunner::Supplied {
                runner: r.clone(),
                time_limit: Duration::from_secs(profile.process_limits.max_execution_time_seconds),
            });
        }
        let key = (model_id.to_string(), profile_name.clone());
        if let Some(r) = self.inner.runners.lock().await.get(&key) {
            return Ok(r.clone());
        }
        // Built without the lock (it reads the model file's header): one
        // slow build does not stall the other models.
        let catalog = &self.inner.catalog;
        let model = catalog
            .get_model(model_id)
            .ok_or_else(|| SlmRunnerError::UnknownModel {
                model_id: model_id.to_string(),
            })?;
        let located;
        let (file_path, pin) = match &model.provider {
            ModelProvider::LocalFile { file_path, sha256 } => (file_path, sha256.clone()),
            ModelProvider::HuggingFace { .. } => {
                located = self.hub_file(model_id, &model.provider).await?;
                (&located.blob, located.sha256.clone())
            }
            remote => {
                let runner = RemoteRunner::new(
                    model_id,
                    remote,
                    &profile_name,
                    profile,
                    model.resource_requirements.clone(),
                    self.inner.audit.clone(),
                )
                .await?;
                return Ok(self
                    .inner
                    .runners
                    .lock()
                    .await
                    .entry(key)
                    .or_insert(PoolRunner::Remote(runner))
                    .clone());
            }
        };
        let settings = &catalog.config().pool;
        let keep_alive = settings
            .keep_alive_by_model
            .get(model_id)
            .copied()
            .unwrap_or(settings.keep_alive_seconds);
        let mut builder = LocalGgufRunner::builder(
            file_path,
            profile.clone(),
            model.resource_requirements.clone(),
        )
        .budget(self.inner.budget.clone())
        .keep_alive(Duration::from_secs(keep_alive))
        // The model's own settings (its keep-alive wins over the pool's).
        .settings(&model.settings)
        .one_at_a_time(self.inner.one_at_a_time)
        .sha256(pin)
        .pinned(settings.pinned_models.iter().any(|m| m == model_id))
        .embeddings(
            model
                .capabilities
                .contains(&crate::config::ModelCapability::Embeddings),
        )
        .audit_log(self.inner.audit.clone())
        .labels(model_id, &profile_name);
        if let Some(w) = &self.inner.worker_path {
            builder = builder.worker_path(w);
        }
        let runner = builder.build().await?;
        // A racing build of the same key may have won: keep the first.
        Ok(self
            .inner
            .runners
            .lock()
            .await
            .entry(key)
            .or_insert(PoolRunner::Local(runner))
            .clone())
    }

    /// Whether `model_id` could run under `profile`, without side effects:
    /// a local model's runner is built (cached, nothing loaded); a remote
    /// one is only checked (URL, key variable, network policy), with no
    /// audit event and no proxy started, so that a readiness probe called
    /// in a loop writes nothing.
    pub async fn check(&self, model_id: &str, profile: Option<&str>) -> Result<(), SlmRunnerError> {
        let model =
            self.inner
                .catalog
                .get_model(model_id)
                .ok_or_else(|| SlmRunnerError::UnknownModel {
                    model_id: model_id.to_string(),
                })?;
        if self.inner.supplied.contains_key(model_id) {
            return self.profile(profile).map(|_| ());
        }
        // A check never downloads, whatever `pull_on_first_use` says.
        if let Some(reason) = self.missing(model_id) {
            return Err(SlmRunnerError::ModelNotPulled {
                model_id: model_id.to_string(),
                reason,
            });
        }
        match &model.provider {
            ModelProvider::LocalFile { .. } | ModelProvider::HuggingFace { .. } => {
                self.runner(model_id, profile).await.map(|_| ())
            }
            remote => {
                let (name, p) = self.profile(profile)?;
                RemoteRunner::preflight(model_id, remote, &name, p).await
            }
        }
    }

    /// Loads every pinned model under the default profile now (`serve`
    /// loads them under the service's profile instead, through
    /// [`ModelPool::runner`]).
    pub async fn preload_pinned(&self) -> Result<(), SlmRunnerError> {
        for id in &self.inner.catalog.config().pool.pinned_models {
            self.runner(id, None).await?.preload().await?;
        }
        Ok(())
    }

    /// Every runner built so far: model id, profile name, its load.
    pub async fn loads(&self) -> Vec<(String, String, RunnerLoad)> {
        let runners = self.inner.runners.lock().await;
        let mut out: Vec<_> = runners
            .iter()
            .map(|((m, p), r)| (m.clone(), p.clone(), r.load()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Every running worker of the local runners built so far: model id,
    /// profile name, the worker (see [`LocalGgufRunner::workers`]).
    pub async fn workers(&self) -> Vec<(String, String, crate::models::WorkerStatus)> {
        let runners: Vec<_> = {
            let r = self.inner.runners.lock().await;
            r.iter()
                .filter_map(|((m, p), r)| Some((m.clone(), p.clone(), r.local()?.clone())))
                .collect()
        };
        let mut out = Vec::new();
        for (m, p, r) in runners {
            for w in r.workers().await {
                out.push((m.clone(), p.clone(), w));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2.agent).cmp(&(&b.0, &b.1, &b.2.agent)));
        out
    }

    /// The counters of every runner built so far: model id, profile name,
    /// its metrics.
    pub async fn metrics(&self) -> Vec<(String, String, RunnerMetrics)> {
        let runners = self.inner.runners.lock().await;
        let mut out: Vec<_> = runners
            .iter()
            .map(|((m, p), r)| (m.clone(), p.clone(), r.metrics()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    fn profile(
        &self,
        name: Option<&str>,
    ) -> Result<(String, crate::config::SandboxProfile), SlmRunnerError> {
        let catalog = &self.inner.catalog;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| catalog.config().default_sandbox_profile.clone());
        let profile =
            catalog
                .get_sandbox_profile(&name)
                .ok_or_else(|| SlmRunnerError::InvalidInput {
                    field: "profile",
                    reason: format!(
                        "no sandbox profile is named `{name}` (profiles: {})",
                        catalog.list_sandbox_profiles().join(", ")
                    ),
                })?;
        Ok((name, profile.clone()))
    }
}
