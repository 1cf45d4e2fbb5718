//! Identity by construction: a pool's models as one agent may use them.
//!
//! [`ModelPool::for_agent`] is the way from a pool to a runner for an
//! agent's requests: [`AgentModels::runner`] checks the agent's access
//! once (a refusal is an audit event) and returns an [`AgentRunner`] bound
//! to the agent, whose every request runs for it (its fair-queue line, its
//! worker when agents are isolated, its prefix cache, the audit). Nothing
//! in the options names the agent, so nothing in a request can claim
//! another. The service and the CLI reach runners only this way (the
//! CLI without `--agent` through [`ModelPool::for_operator`]: the config's
//! owner, for whom there is no allow-list to check).
//!
//! A runner built directly ([`LocalGgufRunner::new`](crate::models::LocalGgufRunner::new),
//! the seed's API) belongs to its embedder, who makes the access checks
//! (`ModelCatalog::validate_model_access`); its requests run as the
//! anonymous tenant (one fair-queue line, prefix cache key 0) unless the
//! deprecated `ExecutionOptions::agent_id` names one.

use std::sync::Arc;

use futures::stream::BoxStream;

use crate::config::{Model, ModelCapability};
use crate::models::{
    EmbeddingResult, ExecutionOptions, ExecutionResult, ModelPool, PoolRunner, RunnerLoad,
    RunnerMetrics, SlmRunnerError, StreamEvent,
};

/// A pool's models, as one agent may use them. Made by
/// [`ModelPool::for_agent`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentModels {
    pool: ModelPool,
    /// `None`: the operator (see [`ModelPool::for_operator`]).
    agent: Option<Arc<str>>,
}

impl AgentModels {
    pub(crate) fn new(pool: ModelPool, agent: Option<&str>) -> Self {
        Self {
            pool,
            agent: agent.map(Arc::from),
        }
    }

    /// The agent (`None` for the operator).
    pub fn agent_id(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The runner of `model_id` under `profile` (default: the config's
    /// `default_sandbox_profile`) for this agent, after checking that the
    /// agent may use the model (a refusal is recorded in the audit log):
    /// `UnknownModel` or `AccessDenied`.
    pub async fn runner(
        &self,
        model_id: &str,
        profile: Option<&str>,
    ) -> Result<AgentRunner, SlmRunnerError> {
        if let Some(agent) = &self.agent {
            self.pool.check_access(agent, model_id, profile)?;
        }
        let runner = self.pool.runner(model_id, profile).await?;
        Ok(AgentRunner {
            runner,
            agent: self.agent.clone(),
        })
    }

    /// The models this agent may use, in config order.
    pub fn models(&self) -> Vec<&Model> {
        self.pool
            .catalog()
            .list_models()
            .iter()
            .filter(|m| {
                self.agent
                    .as_ref()
                    .is_none_or(|a| self.pool.catalog().validate_model_access(&m.id, a).is_ok())
            })
            .collect()
    }

    /// The best model this agent may use with every capability in
    /// `capabilities` and needing at most `max_memory_mb` (see
    /// `ModelCatalog::find_best_model_for_requirements`; here the access
    /// check is never skipped).
    pub fn best_model(
        &self,
        capabilities: &[ModelCapability],
        max_memory_mb: Option<u64>,
    ) -> Option<&Model> {
        self.pool.catalog().find_best_model_for_requirements(
            capabilities,
            max_memory_mb,
            self.agent.as_deref(),
        )
    }
}

/// A model's runner bound to one agent: every request through it runs for
/// that agent. Made only by [`AgentModels::runner`], after the access
/// check; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentRunner {
    runner: PoolRunner,
    agent: Option<Arc<str>>,
}

impl AgentRunner {
    /// The agent every request runs for (`None`: the operator's requests,
    /// as the anonymous tenant).
    pub fn agent_id(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The model's runner's counters (shared by every agent that uses it).
    pub fn metrics(&self) -> RunnerMetrics {
        self.runner.metrics()
    }

    /// The model's runner's slots and queue now.
    pub fn load(&self) -> RunnerLoad {
        self.runner.load()
    }

    /// The size of the model's embeddings, read from its header (local
    /// models; `None` for remote ones).
    pub fn embedding_size(&self) -> Option<u64> {
        self.runner
            .local()
            .and_then(|r| r.model_summary().embedding_length)
    }

    /// Runs one prompt to completion for the agent: the stream of
    /// [`AgentRunner::execute_stream`], read to its end.
    pub async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        crate::models::stream::collect(self.execute_stream(prompt, options)).await
    }

    /// Runs one prompt for the agent as a stream of its text, ending with
    /// [`StreamEvent::Done`] or an error. Dropping the stream cancels the
    /// request.
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> BoxStream<'static, Result<StreamEvent, SlmRunnerError>> {
        self.runner
            .execute_stream_as(self.agent.as_deref(), prompt, options)
    }

    /// The embedding of `text` for the agent (local models with the
    /// `Embeddings` capability).
    pub async fn embed(
        &self,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        self.runner
            .embed_as(self.agent.as_deref(), text, options)
            .await
    }
}
