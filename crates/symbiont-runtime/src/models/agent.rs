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

use futures::stream::{BoxStream, StreamExt};

use crate::config::{Model, ModelCapability, SamplingDefaults};
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
        let model = self.pool.catalog().get_model(model_id);
        let sampling = model
            .map(|m| Arc::new(m.settings.sampling.clone()))
            .unwrap_or_default();
        let calls_tools = model.is_some_and(|m| {
            m.capabilities.iter().any(|c| {
                matches!(
                    c,
                    ModelCapability::ToolUse | ModelCapability::FunctionCalling
                )
            })
        });
        Ok(AgentRunner {
            runner,
            agent: self.agent.clone(),
            sampling,
            calls_tools,
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
    /// The model's `settings.sampling`: what a request that leaves an
    /// option out gets.
    sampling: Arc<SamplingDefaults>,
    /// Whether the model declares `ToolUse` or `FunctionCalling`: a
    /// request with tools needs one.
    calls_tools: bool,
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
        let offers_tools = options
            .as_ref()
            .is_some_and(|o| !o.offered_tools().is_empty());
        if offers_tools && !self.calls_tools {
            let refusal = SlmRunnerError::InvalidInput {
                field: "tools",
                reason:
                    "this model declares neither the ToolUse nor the FunctionCalling capability"
                        .into(),
            };
            return futures::stream::once(async move { Err(refusal) }).boxed();
        }
        let options = with_defaults(options, &self.sampling);
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

/// `options` with the model's sampling defaults in every option it
/// leaves out (`None` stays `None` when there are no defaults).
fn with_defaults(
    options: Option<ExecutionOptions>,
    d: &SamplingDefaults,
) -> Option<ExecutionOptions> {
    if d.is_empty() {
        return options;
    }
    let mut o = options.unwrap_or_default();
    o.temperature = o.temperature.or(d.temperature);
    o.top_p = o.top_p.or(d.top_p);
    o.top_k = o.top_k.or(d.top_k);
    o.min_p = o.min_p.or(d.min_p);
    o.repeat_penalty = o.repeat_penalty.or(d.repeat_penalty);
    o.max_tokens = o.max_tokens.or(d.max_tokens);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's own value wins; a left-out one takes the default.
    #[test]
    fn defaults_fill_only_what_a_request_leaves_out() {
        let d = SamplingDefaults {
            temperature: Some(0.2),
            max_tokens: Some(64),
            top_k: Some(5),
            ..Default::default()
        };
        let o = with_defaults(
            Some(ExecutionOptions {
                temperature: Some(0.9),
                ..Default::default()
            }),
            &d,
        )
        .unwrap();
        assert_eq!(o.temperature, Some(0.9));
        assert_eq!(o.max_tokens, Some(64));
        assert_eq!(o.top_k, Some(5));
        assert_eq!(o.top_p, None);
        let o = with_defaults(None, &d).unwrap();
        assert_eq!(o.temperature, Some(0.2));
        assert!(with_defaults(None, &SamplingDefaults::default()).is_none());
    }

    /// Every default the config loader accepts is one a request may carry:
    /// the config's ranges and `ExecutionOptions::validate`'s agree at
    /// their edges.
    #[test]
    fn the_configs_ranges_are_the_requests() {
        let model = |sampling: &str| {
            format!(
                "[slm]\n[[slm.model_allow_lists.global_models]]\nid = \"m\"\nname = \"m\"\nprovider = {{ LocalFile = {{ file_path = \"/m.gguf\" }} }}\n[slm.model_allow_lists.global_models.settings.sampling]\n{sampling}\n"
            )
        };
        let o = ExecutionOptions::default;
        let f = |v: f32| Some(v);
        let cases: Vec<(&str, ExecutionOptions)> = vec![
            (
                "temperature = 0",
                ExecutionOptions {
                    temperature: f(0.0),
                    ..o()
                },
            ),
            (
                "temperature = 100",
                ExecutionOptions {
                    temperature: f(100.0),
                    ..o()
                },
            ),
            (
                "temperature = 100.5",
                ExecutionOptions {
                    temperature: f(100.5),
                    ..o()
                },
            ),
            (
                "temperature = -0.1",
                ExecutionOptions {
                    temperature: f(-0.1),
                    ..o()
                },
            ),
            (
                "top_p = 1",
                ExecutionOptions {
                    top_p: f(1.0),
                    ..o()
                },
            ),
            (
                "top_p = 0",
                ExecutionOptions {
                    top_p: f(0.0),
                    ..o()
                },
            ),
            (
                "top_p = 1.01",
                ExecutionOptions {
                    top_p: f(1.01),
                    ..o()
                },
            ),
            (
                "min_p = 0",
                ExecutionOptions {
                    min_p: f(0.0),
                    ..o()
                },
            ),
            (
                "min_p = 1",
                ExecutionOptions {
                    min_p: f(1.0),
                    ..o()
                },
            ),
            (
                "min_p = 1.5",
                ExecutionOptions {
                    min_p: f(1.5),
                    ..o()
                },
            ),
            (
                "repeat_penalty = 10",
                ExecutionOptions {
                    repeat_penalty: f(10.0),
                    ..o()
                },
            ),
            (
                "repeat_penalty = 0",
                ExecutionOptions {
                    repeat_penalty: f(0.0),
                    ..o()
                },
            ),
            (
                "top_k = 1",
                ExecutionOptions {
                    top_k: Some(1),
                    ..o()
                },
            ),
            (
                "top_k = 0",
                ExecutionOptions {
                    top_k: Some(0),
                    ..o()
                },
            ),
            (
                "max_tokens = 1",
                ExecutionOptions {
                    max_tokens: Some(1),
                    ..o()
                },
            ),
            (
                "max_tokens = 0",
                ExecutionOptions {
                    max_tokens: Some(0),
                    ..o()
                },
            ),
        ];
        for (line, request) in cases {
            let config = crate::config::Slm::from_toml_str(&model(line));
            assert_eq!(
                config.is_ok(),
                request.validate().is_ok(),
                "{line}: {:?}",
                config.err().map(|e| e.to_string())
            );
            if let Ok(c) = config {
                let filled = with_defaults(
                    None,
                    &c.model_allow_lists.global_models[0].settings.sampling,
                )
                .unwrap();
                assert!(filled.validate().is_ok(), "{line}");
            }
        }
    }
}
