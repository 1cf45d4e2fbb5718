//! The life of one request: options validated → a slot in the fair queue
//! → a worker → `Generate` → its events followed to the end → the result.
//! Dropping the future at any point cancels it: it leaves the queue, or
//! the worker stops it within one decode step and frees its slot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use symbiont_slm_protocol::{Finish, GenerateRequest, Sampling, ToWorker, MAX_PROMPT_BYTES};
use tokio::time::Instant;

use super::driver::{Command, Event};
use super::metadata::{audit_event_for, ms, result, set_sandbox_facts};
use super::queue::Refusal;
use super::{defaults, Shared};
use crate::audit::{AuditEvent, AuditKind};
use crate::models::{
    ChatRole, ExecutionOptions, ExecutionResult, FinishReason, PromptMode, ResponseFormat,
    SlmRunnerError, StreamEvent, ToolCall, ToolCallDelta, ToolChoice, WorkerLoss,
};

/// Times a request may be handed to a fresh worker because the one it was
/// sent to was lost before it began (a protocol violation by another
/// request, an unload racing it).
const MAX_ATTEMPTS: u32 = 3;

impl Shared {
    /// Records a security event about this runner's model and profile.
    pub(super) fn audit(
        &self,
        kind: AuditKind,
        control: &str,
        detail: String,
        agent: Option<&str>,
    ) {
        let event = AuditEvent::new(kind, control, detail).about(
            agent,
            Some(&self.model_label),
            self.profile_label.as_deref(),
        );
        self.audit
            .record(&event, self.profile.security.enable_audit_logging);
    }

    /// Runs a generation and records its security-relevant failure, if
    /// any.
    pub(super) async fn run(
        self: &Arc<Self>,
        agent: Option<&str>,
        prompt: &str,
        options: ExecutionOptions,
        on_token: impl FnMut(StreamEvent) + Send,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        self.run_job(agent, prompt, options, false, on_token, |_| {})
            .await
    }

    /// Computes the embedding of `text` (a request like any other: the
    /// queue, a slot, the worker, the same failures and audit).
    pub(super) async fn embed(
        self: &Arc<Self>,
        agent: Option<&str>,
        text: &str,
        options: ExecutionOptions,
    ) -> Result<(ExecutionResult, Vec<f32>), SlmRunnerError> {
        if !self.embeddings {
            return Err(SlmRunnerError::InvalidInput {
                field: "model",
                reason: "this runner was built without embeddings (LocalGgufRunnerBuilder::embeddings; the pool turns them on for models with the Embeddings capability)".into(),
            });
        }
        let mut vector = None;
        let result = self
            .run_job(agent, text, options, true, |_| {}, |v| vector = Some(v))
            .await?;
        // The driver lets `Done` through for an embedding request only
        // after its embedding.
        let vector = vector.ok_or_else(|| SlmRunnerError::ExecutionFailed {
            reason: "the worker finished without an embedding".into(),
        })?;
        Ok((result, vector))
    }

    /// Runs a request and records its security-relevant failure, if any.
    async fn run_job(
        self: &Arc<Self>,
        agent: Option<&str>,
        prompt: &str,
        options: ExecutionOptions,
        embed: bool,
        on_token: impl FnMut(StreamEvent) + Send,
        on_embedding: impl FnMut(Vec<f32>) + Send,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        // Failures the driver delivered, it has recorded already (at once,
        // whether or not this request's reader is still there).
        let mut audited = false;
        let tools = !options.offered_tools().is_empty();
        let result = self
            .run_inner(
                agent,
                prompt,
                options,
                embed,
                on_token,
                on_embedding,
                &mut audited,
            )
            .await;
        // The constraint the worker refused was the tools' call grammar.
        let result = match result {
            Err(SlmRunnerError::InvalidInput {
                field: "response_format",
                reason,
            }) if tools => Err(SlmRunnerError::InvalidInput {
                field: "tools",
                reason,
            }),
            r => r,
        };
        self.counters.finished(result.as_ref().ok().map(|r| {
            let m = &r.metadata;
            (
                m.input_tokens.unwrap_or(0),
                m.cached_tokens.unwrap_or(0),
                m.output_tokens.unwrap_or(0),
            )
        }));
        if let (Err(e), false) = (&result, audited) {
            if let Some((kind, control)) = audit_event_for(e) {
                self.audit(kind, &control, e.to_string(), agent);
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)] // the request's parts, each once
    async fn run_inner(
        self: &Arc<Self>,
        agent: Option<&str>,
        prompt: &str,
        options: ExecutionOptions,
        embed: bool,
        mut on_token: impl FnMut(StreamEvent) + Send,
        mut on_embedding: impl FnMut(Vec<f32>) + Send,
        audited: &mut bool,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let started = Instant::now();
        let mut request = self.request(agent, prompt, &options)?;
        if embed {
            if !options.history.is_empty() {
                return Err(SlmRunnerError::InvalidInput {
                    field: "history",
                    reason: "an embedding is of one text; it takes no history".into(),
                });
            }
            // The text as it is, no template, nothing generated.
            request.embed = true;
            request.chat = false;
            request.max_tokens = 1;
        }
        let timeout = Duration::from_millis(request.timeout_ms);
        let deadline = started + timeout;
        let timeout_err = || SlmRunnerError::ExecutionTimeout {
            seconds: timeout.as_secs_f64(),
        };
        let tenant = self.tenant(agent);
        let mut permit = tenant
            .admission
            .acquire(agent.unwrap_or(""), deadline)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Full {
                    queued,
                    retry_after,
                } => {
                    self.counters.overloaded();
                    SlmRunnerError::Overloaded {
                        capacity: self.queue_capacity,
                        queued,
                        retry_after,
                    }
                }
                Refusal::Deadline { .. } => {
                    self.counters.expired_in_queue();
                    timeout_err()
                }
            })?;
        self.counters.admitted(started.elapsed());
        let mut model_load_ms = None;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let (driven, load_ms) = self.worker_for(&tenant, deadline, timeout).await?;
            if load_ms.is_some() {
                model_load_ms = load_ms;
            }
            // Ids count per tenant: a worker learns nothing of the others'
            // traffic from the gaps between them.
            request.id = tenant.next_id.fetch_add(1, Ordering::Relaxed);
            request.timeout_ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .max(1) as u64;
            let id = request.id;
            let (events, mut rx) = super::driver::request_events();
            let mut cancel_on_drop = driven.cancel_on_drop(id);
            let run = Command::Run {
                request: Box::new(request.clone()),
                deadline,
                events,
                permit,
                caller: super::driver::Caller {
                    agent: agent.map(Arc::from),
                    // The service's request this one is (see `audit`).
                    request_id: crate::audit::current_request_id(),
                },
            };
            if let Err(cmd) = driven.send(run) {
                // The worker was unloaded meanwhile: take a fresh one.
                cancel_on_drop.disarm();
                match cmd {
                    Command::Run { permit: p, .. } if attempts < MAX_ATTEMPTS => {
                        permit = p;
                        continue;
                    }
                    _ => {
                        return Err(SlmRunnerError::WorkerCrashed {
                            cause: WorkerLoss::LostBeforeStart { attempts },
                            stderr_tail: String::new(),
                        })
                    }
                }
            }
            let mut text = String::new();
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut ttft = None;
            // A backstop behind the driver's own deadline, grace and kill:
            // a caller never waits past them.
            let backstop = deadline + defaults::CANCEL_GRACE_MAX + Duration::from_secs(15);
            let outcome = loop {
                let Ok(event) = tokio::time::timeout_at(backstop, rx.recv()).await else {
                    break Err(Ok(SlmRunnerError::WorkerCrashed {
                        cause: WorkerLoss::DriverSilent,
                        stderr_tail: String::new(),
                    }));
                };
                match event {
                    Some(Event::PromptRead) => {}
                    Some(Event::Token(t)) => {
                        ttft.get_or_insert_with(|| ms(started.elapsed()));
                        text.push_str(&t);
                        on_token(StreamEvent::Token(t));
                    }
                    Some(Event::ToolCall {
                        index,
                        name,
                        arguments,
                    }) => {
                        ttft.get_or_insert_with(|| ms(started.elapsed()));
                        // The driver checked the order: a named piece opens
                        // the next call, the others extend the last.
                        let id = name.as_ref().map(|name| {
                            let id = call_id();
                            calls.push(ToolCall {
                                id: id.clone(),
                                name: name.clone(),
                                arguments: String::new(),
                            });
                            id
                        });
                        if let Some(c) = calls.last_mut() {
                            c.arguments.push_str(&arguments);
                        }
                        on_token(StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id,
                            name,
                            arguments,
                        }));
                    }
                    Some(Event::Embedding(v)) => {
                        ttft.get_or_insert_with(|| ms(started.elapsed()));
                        on_embedding(v);
                    }
                    Some(Event::Done { stats, peak_rss }) => break Ok((stats, peak_rss)),
                    Some(Event::Timeout) => {
                        *audited = true;
                        break Err(Ok(timeout_err()));
                    }
                    Some(Event::Failed(e)) => {
                        *audited = true;
                        break Err(Ok(e));
                    }
                    Some(Event::Retry(p)) => break Err(Err(p)),
                    None => {
                        break Err(Ok(SlmRunnerError::WorkerCrashed {
                            cause: WorkerLoss::DriverGone,
                            stderr_tail: String::new(),
                        }))
                    }
                }
            };
            cancel_on_drop.disarm();
            self.unload_if_idle_now(&tenant).await;
            let outcome = match outcome {
                Ok(done) => Ok(done),
                Err(Ok(e)) => Err(e),
                Err(Err(p)) if attempts < MAX_ATTEMPTS => {
                    permit = p;
                    continue;
                }
                Err(Err(_)) => Err(SlmRunnerError::WorkerCrashed {
                    cause: WorkerLoss::LostBeforeStart { attempts },
                    stderr_tail: String::new(),
                }),
            };
            return match outcome {
                Ok((stats, peak)) => {
                    if stats.finish == Finish::Timeout {
                        return Err(timeout_err());
                    }
                    let mut r = result(text, stats, started, ttft, peak, model_load_ms);
                    // Only whole calls: one cut by a limit (its pieces were
                    // streamed) is not a call. The worker's grammar makes
                    // them objects; checked here all the same, as JSON
                    // text (read without converting numbers: a number
                    // of 700 digits is JSON, if not one a double holds).
                    let whole = |c: &ToolCall| {
                        c.arguments.trim_start().starts_with('{')
                            && serde_json::from_str::<serde::de::IgnoredAny>(&c.arguments).is_ok()
                    };
                    if r.metadata.finish_reason == Some(FinishReason::ToolCalls)
                        && !calls.iter().all(whole)
                    {
                        return Err(SlmRunnerError::ExecutionFailed {
                            reason: "the worker ended the answer with a tool call whose arguments are not a JSON object".into(),
                        });
                    }
                    r.tool_calls = calls.into_iter().filter(whole).collect();
                    set_sandbox_facts(
                        &mut r.metadata.sandbox_layers,
                        &mut r.metadata.sandbox_gaps,
                        &driven.facts().sandbox,
                    );
                    r.metadata
                        .sandbox_gaps
                        .extend(self.host_gaps.iter().map(|g| g.text.clone()));
                    Ok(r)
                }
                Err(e) => {
                    if let SlmRunnerError::WorkerCrashed { .. } = &e {
                        tracing::warn!(request = id, "worker crashed");
                    }
                    Err(e)
                }
            };
        }
    }

    /// Resolves options into a worker request, refusing what cannot be
    /// honoured.
    fn request(
        &self,
        agent: Option<&str>,
        prompt: &str,
        o: &ExecutionOptions,
    ) -> Result<GenerateRequest, SlmRunnerError> {
        o.validate()?;
        if let Some(name) = o.custom_parameters.keys().next() {
            return Err(SlmRunnerError::InvalidInput {
                field: "custom_parameters",
                reason: format!("LocalGgufRunner knows no custom parameter `{name}`"),
            });
        }
        // After tool results the model answers them: no new user turn.
        let answers_tools = o.history.last().is_some_and(|m| m.role == ChatRole::Tool);
        if prompt.is_empty() && !answers_tools {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: "the prompt is empty".into(),
            });
        }
        let total = prompt.len() + o.history.iter().map(|m| m.content.len()).sum::<usize>();
        if total > MAX_PROMPT_BYTES {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: format!(
                    "the prompt (with its history) is {total} bytes, more than the {MAX_PROMPT_BYTES} allowed"
                ),
            });
        }
        if !o.history.is_empty() && o.prompt_mode == PromptMode::Raw {
            return Err(SlmRunnerError::InvalidInput {
                field: "history",
                reason: "a conversation history needs the chat template; PromptMode::Raw takes one prompt".into(),
            });
        }
        if let Some(i) = o
            .history
            .iter()
            .skip(1)
            .position(|m| m.role == ChatRole::System)
        {
            return Err(SlmRunnerError::InvalidInput {
                field: "history",
                reason: format!("turn {} is a system turn; only the first may be", i + 1),
            });
        }
        let max_secs = self.profile.process_limits.max_execution_time_seconds;
        let limit = Duration::from_secs(max_secs);
        let timeout = o.timeout.unwrap_or(limit);
        if timeout > limit {
            return Err(SlmRunnerError::InvalidInput {
                field: "timeout",
                reason: format!(
                    "{:.1} s exceeds the profile's max_execution_time_seconds = {max_secs}",
                    timeout.as_secs_f64()
                ),
            });
        }
        let seed = o.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0)
        });
        let request = GenerateRequest {
            // Given per attempt, from the tenant's counter.
            id: 0,
            prompt: prompt.to_string(),
            chat: o.prompt_mode == PromptMode::Chat,
            history: o
                .history
                .iter()
                .map(|m| symbiont_slm_protocol::ChatMessage {
                    role: m.role.as_str().into(),
                    content: m.content.clone(),
                    tool_calls: m
                        .tool_calls
                        .iter()
                        .map(|c| symbiont_slm_protocol::CallMade {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        })
                        .collect(),
                    tool_call_id: m.tool_call_id.clone(),
                })
                .collect(),
            max_tokens: o.max_tokens.unwrap_or(defaults::MAX_TOKENS),
            sampling: Sampling {
                temperature: o.temperature.unwrap_or(defaults::TEMPERATURE),
                top_k: o.top_k.unwrap_or(defaults::TOP_K),
                top_p: o.top_p.unwrap_or(defaults::TOP_P),
                min_p: o.min_p.unwrap_or(defaults::MIN_P),
                repeat_penalty: o.repeat_penalty.unwrap_or(defaults::REPEAT_PENALTY),
                repeat_last_n: defaults::REPEAT_LAST_N,
                seed,
            },
            stop: o.stop.clone(),
            timeout_ms: timeout.as_millis() as u64,
            embed: false,
            cache_key: cache_key(agent),
            constraint: o.response_format.as_ref().map(ResponseFormat::constraint),
            tools: tools(o),
        };
        // The frame must fit the protocol (JSON escapes a control character
        // as six bytes): refused here, never at the worker's pipe.
        let frame = symbiont_slm_protocol::encode(&ToWorker::Generate(request.clone()));
        if let Err(e) = frame {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: format!("the request does not fit one protocol frame: {e}"),
            });
        }
        Ok(request)
    }
}

/// The worker's prefix-cache key for an agent: a hash of its id (0 for a
/// request with none). Fixed keys, so one agent keeps its key across
/// requests and workers.
pub(super) fn cache_key(agent: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let Some(agent) = agent else { return 0 };
    let mut h = std::hash::DefaultHasher::new();
    agent.hash(&mut h);
    h.finish().max(1)
}

/// The tools a request offers the worker (none with `ToolChoice::None`).
fn tools(o: &ExecutionOptions) -> Option<symbiont_slm_protocol::Tools> {
    let offered = o.offered_tools();
    if offered.is_empty() {
        return None;
    }
    Some(symbiont_slm_protocol::Tools {
        functions: offered
            .iter()
            .map(|t| symbiont_slm_protocol::Function {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.to_string(),
            })
            .collect(),
        choice: match &o.tool_choice {
            Some(ToolChoice::Required) => symbiont_slm_protocol::ToolChoice::Required,
            Some(ToolChoice::Function(name)) => {
                symbiont_slm_protocol::ToolChoice::Function { name: name.clone() }
            }
            _ => symbiont_slm_protocol::ToolChoice::Auto,
        },
        parallel: o.parallel_tool_calls.unwrap_or(true),
    })
}

/// A fresh call id (`call_` and 24 hex digits, from the OS's randomness
/// through the standard library's hasher keys).
fn call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("call_{:016x}{:08x}", half(), half() as u32)
}
