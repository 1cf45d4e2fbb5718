//! The runner the pool hands out: a sandboxed local worker, a remote
//! endpoint, or the embedder's own, behind one type.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};

use crate::models::{
    EmbeddingResult, ExecutionOptions, ExecutionResult, LocalGgufRunner, RemoteRunner, RunnerLoad,
    RunnerMetrics, SlmRunner, SlmRunnerError, StreamEvent,
};

/// A model's runner in the pool: a sandboxed local worker, a remote
/// endpoint reached under the profile's network policy, or the embedder's
/// own runner. Cheap to clone.
#[derive(Clone)]
#[non_exhaustive]
pub enum PoolRunner {
    /// A GGUF model in sandboxed workers.
    Local(LocalGgufRunner),
    /// An `OpenAI`, `Anthropic` or `Custom` endpoint.
    Remote(RemoteRunner),
    /// A runner the embedder supplied for a catalog model
    /// ([`ModelPoolBuilder::runner`]), and the profile's
    /// `max_execution_time_seconds` that bounds each of its requests.
    Supplied {
        /// The embedder's runner.
        runner: Arc<dyn SlmRunner>,
        /// How long one request may run.
        time_limit: Duration,
    },
}

impl std::fmt::Debug for PoolRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(r) => f.debug_tuple("Local").field(r).finish(),
            Self::Remote(r) => f.debug_tuple("Remote").field(r).finish(),
            Self::Supplied { runner, time_limit } => f
                .debug_struct("Supplied")
                .field("runner", &runner.get_info().runner_type)
                .field("time_limit", time_limit)
                .finish(),
        }
    }
}

impl PoolRunner {
    /// The local runner, if it is one.
    pub fn local(&self) -> Option<&LocalGgufRunner> {
        match self {
            Self::Local(r) => Some(r),
            _ => None,
        }
    }

    /// The remote runner, if it is one.
    pub fn remote(&self) -> Option<&RemoteRunner> {
        match self {
            Self::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// Runs a prompt (see [`LocalGgufRunner::execute`]) as the anonymous
    /// tenant, or the agent that the deprecated `options.agent_id` names,
    /// with no access check.
    #[deprecated(
        since = "0.2.0",
        note = "use ModelPool::for_agent(agent).runner(model, profile): a runner bound to the agent, after its access check"
    )]
    pub async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        match self {
            Self::Local(r) => r.execute(prompt, options).await,
            Self::Remote(r) => r.execute(prompt, options).await,
            Self::Supplied { .. } => {
                crate::models::stream::collect(self.execute_stream_as(None, prompt, options)).await
            }
        }
    }

    /// Streams a prompt's text, ending with [`StreamEvent::Done`];
    /// dropping the stream cancels the request. As the anonymous tenant,
    /// or the agent that the deprecated `options.agent_id` names, with no
    /// access check.
    #[deprecated(
        since = "0.2.0",
        note = "use ModelPool::for_agent(agent).runner(model, profile): a runner bound to the agent, after its access check"
    )]
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> BoxStream<'static, Result<StreamEvent, SlmRunnerError>> {
        #[allow(deprecated)]
        let agent = options.as_ref().and_then(|o| o.agent_id.clone());
        self.execute_stream_as(agent.as_deref(), prompt, options)
    }

    /// Streams a prompt's text for `agent` (`None`: the anonymous tenant).
    pub(crate) fn execute_stream_as(
        &self,
        agent: Option<&str>,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> BoxStream<'static, Result<StreamEvent, SlmRunnerError>> {
        match self {
            Self::Local(r) => r.execute_stream_as(agent, prompt, options).boxed(),
            Self::Remote(r) => r.execute_stream(prompt, options).boxed(),
            Self::Supplied { runner, time_limit } => {
                crate::models::stream::owned(runner.clone(), prompt, options, *time_limit)
            }
        }
    }

    /// An embedding (local models only), as the anonymous tenant or the
    /// agent that the deprecated `options.agent_id` names.
    #[deprecated(
        since = "0.2.0",
        note = "use ModelPool::for_agent(agent).runner(model, profile): a runner bound to the agent, after its access check"
    )]
    pub async fn embed(
        &self,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        #[allow(deprecated)]
        let agent = options.as_ref().and_then(|o| o.agent_id.clone());
        self.embed_as(agent.as_deref(), text, options).await
    }

    /// An embedding for `agent` (`None`: the anonymous tenant).
    pub(crate) async fn embed_as(
        &self,
        agent: Option<&str>,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        match self {
            Self::Local(r) => r.embed_as(agent, text, options).await,
            Self::Remote(r) => SlmRunner::embed(r, text, options).await,
            Self::Supplied { runner, time_limit } => {
                tokio::time::timeout(*time_limit, runner.embed(text, options))
                    .await
                    .unwrap_or(Err(SlmRunnerError::ExecutionTimeout {
                        seconds: time_limit.as_secs_f64(),
                    }))
            }
        }
    }

    /// The runner's counters.
    pub fn metrics(&self) -> RunnerMetrics {
        match self {
            Self::Local(r) => r.metrics(),
            Self::Remote(r) => r.metrics(),
            // The embedder's runner keeps its own.
            Self::Supplied { .. } => RunnerMetrics::default(),
        }
    }

    /// Slots and queue now.
    pub fn load(&self) -> RunnerLoad {
        match self {
            Self::Local(r) => r.load(),
            Self::Remote(r) => r.load(),
            Self::Supplied { .. } => RunnerLoad {
                slots: 0,
                busy: 0,
                queued: 0,
                loaded: true,
                workers: 0,
                cache_tokens: 0,
                cache_tokens_reserved: 0,
            },
        }
    }

    /// Requests it runs at once.
    pub fn slots(&self) -> u32 {
        match self {
            Self::Local(r) => r.slots(),
            Self::Remote(_) => crate::models::remote::REMOTE_CONCURRENCY as u32,
            // Unknown: the embedder's runner queues as it likes.
            Self::Supplied { .. } => 0,
        }
    }

    /// Loads a local model's worker now (a remote one has nothing to load;
    /// a supplied one is asked for its health check).
    pub async fn preload(&self) -> Result<(), SlmRunnerError> {
        match self {
            Self::Local(r) => r.preload().await,
            Self::Remote(_) => Ok(()),
            Self::Supplied { runner, .. } => runner.health_check().await,
        }
    }

    /// A local model's worker process, if one runs.
    pub async fn worker_pid(&self) -> Option<u32> {
        match self {
            Self::Local(r) => r.worker_pid().await,
            _ => None,
        }
    }
}
