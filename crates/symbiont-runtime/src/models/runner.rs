//! The runner API: what every way of executing a model offers and reports.
//!
//! A runner owns the execution of one model under one [`SandboxProfile`].
//! Every figure it reports is measured; a figure it cannot measure is `None`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::{ModelResourceRequirements, SandboxProfile};
use crate::models::tools::{ToolCall, ToolCallDelta, ToolChoice, ToolDefinition};

/// Executes prompts on one model within a sandbox profile.
///
/// Object-safe: use it as `Arc<dyn SlmRunner>`.
#[async_trait]
pub trait SlmRunner: Send + Sync {
    /// Runs one prompt to completion.
    async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError>;
    /// Runs one prompt as a stream of its text that ends with
    /// [`StreamEvent::Done`] (or an error). Dropping the stream cancels
    /// the request. The built-in runners stream as the model generates
    /// (and their `execute` reads this stream to its end); the default,
    /// for runners that only implement `execute`, gives the whole text as
    /// one piece when it is done.
    fn execute_stream<'a>(
        &'a self,
        prompt: &'a str,
        options: Option<ExecutionOptions>,
    ) -> BoxStream<'a, Result<StreamEvent, SlmRunnerError>> {
        futures::stream::once(self.execute(prompt, options))
            .flat_map(|r| {
                let events = match r {
                    Ok(r) => vec![
                        Ok(StreamEvent::Token(r.response.clone())),
                        Ok(StreamEvent::Done(Box::new(r))),
                    ],
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(events)
            })
            .boxed()
    }
    /// The embedding of `text`. Runners that compute none refuse it
    /// (the default).
    async fn embed(
        &self,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        let _ = (text, options);
        Err(SlmRunnerError::InvalidInput {
            field: "model",
            reason: "this runner computes no embeddings".into(),
        })
    }
    /// The profile every execution runs under.
    fn get_sandbox_profile(&self) -> &SandboxProfile;
    /// What the model needs.
    fn get_resource_requirements(&self) -> &ModelResourceRequirements;
    /// Checks that the runner can execute (loading the model if needed).
    async fn health_check(&self) -> Result<(), SlmRunnerError>;
    /// What the runner is and runs.
    fn get_info(&self) -> RunnerInfo;
}

/// One event of a streamed execution.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// Generated text (whole UTF-8 characters).
    Token(String),
    /// A piece of a tool call: the first piece of a call names it and
    /// gives its id, the next ones carry more of its arguments' JSON text.
    ToolCall(ToolCallDelta),
    /// The end: the whole result with its metadata.
    Done(Box<ExecutionResult>),
}

/// How the prompt is given to the model.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PromptMode {
    /// The prompt is one user message, rendered with the model's own chat
    /// template (raw completion when the model has none).
    #[default]
    Chat,
    /// The prompt is passed to the model as it is.
    Raw,
}

/// Who said a turn of a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    /// Instructions for the model.
    System,
    /// The person or agent asking.
    User,
    /// The model.
    Assistant,
    /// A tool's result (with the call's id in `tool_call_id`).
    Tool,
}

impl ChatRole {
    /// The role's name in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
            ChatRole::Tool => "tool",
        }
    }
}

/// One turn of a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: ChatRole,
    /// What was said.
    pub content: String,
    /// An assistant's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool's result: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A turn of `role`.
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// Longest stop sequence accepted, in bytes.
pub const MAX_STOP_BYTES: usize = 1024;
/// Most stop sequences one request may have: the worker checks each
/// against the text it holds back at every token, in a worker other
/// requests share (OpenAI's API allows 4).
pub const MAX_STOPS: usize = 16;

/// Per-request options. Every `None` takes the runner's documented default.
/// An option a runner cannot honour is an [`SlmRunnerError::InvalidInput`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionOptions {
    /// Wall-clock limit of this request; default: the profile's
    /// `max_execution_time_seconds`. It cannot exceed that either.
    #[serde(with = "opt_duration_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub timeout: Option<Duration>,
    /// Sampling temperature, 0 for greedy decoding.
    pub temperature: Option<f32>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add
    /// up to this (0, 1].
    pub top_p: Option<f32>,
    /// Keep only the this many most likely tokens (≥ 1).
    pub top_k: Option<u32>,
    /// Drop tokens less likely than this fraction of the most likely [0, 1].
    pub min_p: Option<f32>,
    /// Random seed; the same seed and options give the same text.
    pub seed: Option<u32>,
    /// Generation stops before the first of these strings.
    pub stop: Vec<String>,
    /// Penalty for repeating recent tokens (1.0: none).
    pub repeat_penalty: Option<f32>,
    /// Chat template or raw completion.
    pub prompt_mode: PromptMode,
    /// Runner-specific parameters. Runners reject names they do not know;
    /// they never become process arguments.
    pub custom_parameters: BTreeMap<String, String>,
    /// The agent this request runs for, on a runner built directly (its
    /// embedder checks access with `ModelCatalog::validate_model_access`).
    /// Runners of a pool are bound to their agent instead
    /// (`ModelPool::for_agent`), which ignore this.
    #[deprecated(
        since = "0.2.0",
        note = "identity is not an option: use ModelPool::for_agent(agent).runner(model, profile), a runner bound to the agent"
    )]
    pub agent_id: Option<String>,
    /// Earlier turns of the conversation, oldest first; the prompt is the
    /// new user message. Chat mode only (with `PromptMode::Raw` it is an
    /// `InvalidInput`). A `System` turn may only come first.
    pub history: Vec<ChatMessage>,
    /// What the answer must be (JSON, a schema's JSON, a regular
    /// expression's or a grammar's text), guaranteed by constrained
    /// decoding: every token sampled is one the format allows. Needs no
    /// capability; a format the engine cannot compile is an
    /// `InvalidInput` naming the keyword (and where in a schema), before
    /// any token.
    pub response_format: Option<ResponseFormat>,
    /// Functions the model may call (chat mode; not with
    /// `response_format` or `stop`). The calls come back in
    /// [`ExecutionResult::tool_calls`] (streamed as
    /// [`StreamEvent::ToolCall`]), their arguments valid under the
    /// function's parameters: constrained decoding from the call's
    /// opening on. Their definitions count in the prompt.
    pub tools: Vec<ToolDefinition>,
    /// Whether a call is forced (default `Auto` with tools).
    pub tool_choice: Option<ToolChoice>,
    /// Whether one answer may make several calls (default true).
    pub parallel_tool_calls: Option<bool>,
}

/// Longest response format accepted (a schema's JSON text, a pattern or a
/// grammar), in bytes.
pub const MAX_RESPONSE_FORMAT_BYTES: usize = 256 * 1024;

/// What a constrained answer must be.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// Any JSON object (OpenAI's JSON mode).
    JsonObject,
    /// A JSON value valid under this JSON Schema (Draft 2020-12 as far as
    /// llguidance implements it: `$ref`/`$defs`, `anyOf`/`oneOf`/`allOf`,
    /// `enum`/`const`, `pattern`, `format`, lengths and item counts,
    /// `additionalProperties`, …). Compact: no whitespace outside strings.
    JsonSchema {
        /// The schema.
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        schema: serde_json::Value,
    },
    /// Text that this regular expression (Rust's `regex` syntax) matches
    /// whole.
    Regex {
        /// The expression.
        pattern: String,
    },
    /// Text of this grammar, in llguidance's Lark dialect (`start` is the
    /// root rule).
    Lark {
        /// The grammar.
        grammar: String,
    },
}

impl ResponseFormat {
    /// The constraint sent to the worker.
    pub(crate) fn constraint(&self) -> symbiont_slm_protocol::Constraint {
        use symbiont_slm_protocol::Constraint;
        match self {
            Self::JsonObject => Constraint::JsonObject,
            Self::JsonSchema { schema } => Constraint::JsonSchema {
                schema: schema.to_string(),
            },
            Self::Regex { pattern } => Constraint::Regex {
                pattern: pattern.clone(),
            },
            Self::Lark { grammar } => Constraint::Lark {
                grammar: grammar.clone(),
            },
        }
    }

    /// Its size, bytes (the schema's JSON text).
    fn size(&self) -> usize {
        match self {
            Self::JsonObject => 0,
            Self::JsonSchema { schema } => schema.to_string().len(),
            Self::Regex { pattern } => pattern.len(),
            Self::Lark { grammar } => grammar.len(),
        }
    }
}

impl ExecutionOptions {
    /// Checks the ranges of the options; the error names the option.
    pub fn validate(&self) -> Result<(), SlmRunnerError> {
        let bad =
            |field: &'static str, reason: String| SlmRunnerError::InvalidInput { field, reason };
        let finite = |field: &'static str, v: Option<f32>, lo: f32, hi: f32, lo_open: bool| {
            if let Some(v) = v {
                let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v <= hi;
                if !ok {
                    let open = if lo_open { "(" } else { "[" };
                    return Err(bad(field, format!("{v} is outside {open}{lo}, {hi}]")));
                }
            }
            Ok(())
        };
        finite("temperature", self.temperature, 0.0, 100.0, false)?;
        finite("top_p", self.top_p, 0.0, 1.0, true)?;
        finite("min_p", self.min_p, 0.0, 1.0, false)?;
        finite("repeat_penalty", self.repeat_penalty, 0.0, 10.0, true)?;
        if self.top_k == Some(0) {
            return Err(bad("top_k", "must be at least 1".into()));
        }
        if self.max_tokens == Some(0) {
            return Err(bad("max_tokens", "must be at least 1".into()));
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(bad("timeout", "must be greater than 0".into()));
            }
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return Err(bad("stop", format!("stop[{i}] is an empty string")));
        }
        if self.stop.len() > MAX_STOPS {
            return Err(bad(
                "stop",
                format!("{} stop sequences; at most {MAX_STOPS}", self.stop.len()),
            ));
        }
        if let Some(i) = self.stop.iter().position(|s| s.len() > MAX_STOP_BYTES) {
            return Err(bad(
                "stop",
                format!("stop[{i}] is longer than {MAX_STOP_BYTES} bytes"),
            ));
        }
        self.validate_tools()?;
        if let Some(f) = &self.response_format {
            if !self.stop.is_empty() {
                return Err(bad(
                    "stop",
                    "a stop sequence would cut a constrained answer short of its format; leave stop unset with response_format".into(),
                ));
            }
            if f.size() > MAX_RESPONSE_FORMAT_BYTES {
                return Err(bad(
                    "response_format",
                    format!("{} bytes; at most {MAX_RESPONSE_FORMAT_BYTES}", f.size()),
                ));
            }
            if let ResponseFormat::JsonSchema { schema } = f {
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(bad(
                        "response_format",
                        "a JSON Schema is an object or a boolean".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        v.map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|e| serde::de::Error::custom(format!("timeout {s}: {e}")))
        })
        .transpose()
    }
}

/// The outcome of one execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// The generated text.
    pub response: String,
    /// The tool calls the answer made (then `finish_reason` is
    /// `ToolCalls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// What was measured while generating it.
    pub metadata: ExecutionMetadata,
}

/// An embedding and what was measured computing it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResult {
    /// The vector, L2-normalized.
    pub embedding: Vec<f32>,
    /// Tokens (`input_tokens`), times, the worker's peak memory, sandbox
    /// layers.
    pub metadata: ExecutionMetadata,
}

/// Why generation ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The model ended its answer, or a stop sequence was reached.
    Stop,
    /// `max_tokens` or the context size was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
    /// The time limit was reached.
    Timeout,
    /// The answer ended with tool calls, each whole.
    ToolCalls,
}

/// A limit that stopped or shaped an execution.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceLimit {
    /// `max_memory_mb`.
    Memory,
    /// CPU time.
    CpuTime,
    /// Wall-clock execution time.
    ExecutionTime,
    /// `max_disk_mb`.
    Disk,
    /// `max_file_size_mb`.
    FileSize,
    /// `max_child_processes`.
    ChildProcesses,
    /// `max_tokens`.
    MaxTokens,
    /// The model's context window.
    ContextSize,
    /// The runner's request queue.
    QueueCapacity,
    /// The events a streaming request's reader may leave unread.
    StreamBuffer,
}

impl std::fmt::Display for ResourceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory (max_memory_mb)",
            Self::CpuTime => "CPU time",
            Self::ExecutionTime => "execution time (max_execution_time_seconds)",
            Self::Disk => "disk (max_disk_mb)",
            Self::FileSize => "file size (max_file_size_mb)",
            Self::ChildProcesses => "child processes (max_child_processes)",
            Self::MaxTokens => "max_tokens",
            Self::ContextSize => "context size",
            Self::QueueCapacity => "request queue capacity",
            Self::StreamBuffer => "stream buffer (events a reader may leave unread)",
        })
    }
}

/// What was measured during one execution. `None` means not measured.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionMetadata {
    /// Prompt tokens, as counted by the model's tokenizer.
    pub input_tokens: Option<u32>,
    /// Generated tokens, as counted by the decode loop.
    pub output_tokens: Option<u32>,
    /// Wall time of the request as the caller saw it, in milliseconds.
    pub execution_time_ms: f64,
    /// Time from the request to its first generated token, in milliseconds.
    pub time_to_first_token_ms: Option<f64>,
    /// Prompt tokens per second while reading the prompt.
    pub prompt_tokens_per_second: Option<f64>,
    /// Generated tokens per second after the first token.
    pub generation_tokens_per_second: Option<f64>,
    /// Time the worker spent on the request (template, prompt, generation),
    /// as it measured it; the rest of `execution_time_ms` is queueing,
    /// loading and the supervisor's own cost.
    pub worker_time_ms: Option<f64>,
    /// Time spent loading the model for this request, if it loaded.
    pub model_load_ms: Option<f64>,
    /// Peak resident memory of the worker process that ran the model, in
    /// MB, from the kernel's accounting (`VmHWM`): its high-water mark since
    /// it started, shared by every request it has run, alone or batched
    /// beside this one. Not this request's own share.
    pub worker_peak_memory_mb: Option<f64>,
    /// Prompt tokens that were already in the worker's cache (a prefix
    /// shared with an earlier request: the same instructions, a growing
    /// chat) and were not computed again; part of `input_tokens`. Only
    /// the caller's own prefixes count (the cache is keyed by agent);
    /// remote runners give none, since a provider's cache is shared by
    /// every agent of the runner's key.
    pub cached_tokens: Option<u32>,
    /// Why generation ended.
    pub finish_reason: Option<FinishReason>,
    /// The stop sequence that ended generation, if one did.
    pub stop_sequence: Option<String>,
    /// A constrained answer's last tokens that were chosen to close it
    /// within `max_tokens` rather than sampled (0: the model closed it
    /// itself); `None` without a `response_format`. A `Stop` answer with
    /// steered tokens is whole and valid, its end chosen for it.
    pub steered_tokens: Option<u32>,
    /// Limits that were reached.
    pub limits_hit: Vec<ResourceLimit>,
    /// Sandbox layers in force for this execution.
    pub sandbox_layers: Vec<String>,
    /// Sandbox layers the profile asked for that this host could not
    /// enforce (only non-strict profiles run with gaps).
    pub sandbox_gaps: Vec<String>,
}

/// What a runner is and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// Kind of runner, such as `"LocalGgufRunner"`.
    pub runner_type: String,
    /// The model file.
    pub model_path: Option<PathBuf>,
    /// Facts read from the model, when known.
    pub model: BTreeMap<String, String>,
    /// Version of the worker executable, when one is running.
    pub worker_version: Option<String>,
    /// Whether the model is loaded now.
    pub loaded: bool,
    /// Sandbox layers in force in the running worker (empty before load).
    pub sandbox_layers: Vec<String>,
    /// Sandbox layers not enforced on this host.
    pub sandbox_gaps: Vec<String>,
}

/// Why a worker process was lost (and restarted for the next request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerLoss {
    /// It exited by itself.
    #[error("exited with status {code}")]
    Exited {
        /// Its exit status.
        code: i32,
    },
    /// A signal ended it (SIGKILL from the kernel's OOM killer or an
    /// operator, SIGSEGV from a crash in llama.cpp, …).
    #[error("killed by signal {signal} ({})", signal_name(*signal))]
    Signalled {
        /// The signal's number.
        signal: i32,
    },
    /// It broke the protocol (a frame too large, malformed or out of
    /// turn, more than it may send): the supervisor killed it.
    #[error("protocol violation: {detail}; the worker was killed")]
    ProtocolViolation {
        /// What it did.
        detail: String,
    },
    /// It did not stop a request it was told to cancel, within the grace:
    /// the supervisor killed it, and with it the requests it ran beside.
    #[error("the worker was killed: it ignored the cancel of request {request}, which it ran beside this one")]
    IgnoredCancel {
        /// The request it did not stop.
        request: u64,
    },
    /// Its input pipe stayed full: it stopped reading, and was killed.
    #[error(
        "the worker stopped reading its input (a write blocked for {seconds} s); it was killed"
    )]
    StoppedReading {
        /// How long the write blocked.
        seconds: u64,
    },
    /// Its output ended (or failed) and it did not exit: killed.
    #[error("{what}; killed after it stopped responding")]
    Unresponsive {
        /// What was seen of it last.
        what: String,
    },
    /// Workers started for this request were lost before it reached them.
    #[error("the worker was lost {attempts} times before this request began")]
    LostBeforeStart {
        /// Workers lost.
        attempts: u32,
    },
    /// The task that owns the worker gave no answer past the request's
    /// deadline and the cancel grace.
    #[error("the worker's driver gave no answer past the request's deadline and cancel grace")]
    DriverSilent,
    /// The task that owns the worker ended without answering.
    #[error("the worker's driver ended without an answer")]
    DriverGone,
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str())
        .unwrap_or("unknown")
}

/// Why a runner failed. `Clone`, so that one failure can end every request
/// it concerns (sources are shared behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SlmRunnerError {
    /// The model file does not exist.
    #[error("model file not found: {}", path.display())]
    ModelFileNotFound {
        /// The path.
        path: PathBuf,
    },
    /// A Hugging Face model is not in the local cache (a run never
    /// downloads it: `symbi-slm models pull` does), or the cache does not
    /// hold the file its config picks; `reason` says which and what to run.
    #[error("{reason}")]
    ModelNotPulled {
        /// The model.
        model_id: String,
        /// What is missing, and the command that fetches it.
        reason: String,
    },
    /// The model file is not a usable model.
    #[error("invalid model file {}: {reason}", path.display())]
    InvalidModelFile {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The runner could not be started.
    #[error("runner initialization failed: {reason}")]
    InitializationFailed {
        /// What failed.
        reason: String,
    },
    /// The model failed while generating.
    #[error("execution failed: {reason}")]
    ExecutionFailed {
        /// What failed.
        reason: String,
    },
    /// A resource limit was reached.
    #[error("resource limit exceeded: {limit}: {detail}")]
    ResourceLimitExceeded {
        /// Which limit.
        limit: ResourceLimit,
        /// Figures.
        detail: String,
    },
    /// The sandbox denied something or could not be put in place.
    #[error("sandbox violation: {control}: {detail}")]
    SandboxViolation {
        /// The control, such as `network.access_mode`.
        control: String,
        /// What happened.
        detail: String,
    },
    /// The request ran out of time and was stopped.
    #[error("execution timed out after {seconds:.1} s")]
    ExecutionTimeout {
        /// The limit, in seconds.
        seconds: f64,
    },
    /// The catalog has no model of that id.
    #[error("unknown model `{model_id}`")]
    UnknownModel {
        /// The id asked for.
        model_id: String,
    },
    /// The agent may not use the model (its allow-list, or the rule for
    /// agents without one); recorded in the audit log.
    #[error("access denied: {detail}")]
    AccessDenied {
        /// The agent.
        agent_id: String,
        /// The model.
        model_id: String,
        /// Which rule denies it.
        detail: String,
    },
    /// The request or an option is invalid.
    #[error("invalid input: {field}: {reason}")]
    InvalidInput {
        /// The option or argument.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The prompt (rendered with its history and template) has more
    /// tokens than the model's context holds, counted by its tokenizer.
    #[error("the prompt is {prompt_tokens} tokens, longer than the context of {context_size} tokens allows")]
    ContextLengthExceeded {
        /// Tokens of the prompt.
        prompt_tokens: u32,
        /// Tokens the context holds.
        context_size: u32,
    },
    /// The worker process was lost.
    #[error("worker crashed ({cause}); last stderr lines:\n{stderr_tail}")]
    WorkerCrashed {
        /// Why.
        cause: WorkerLoss,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The model's queue is full: retry later.
    #[error(
        "runner overloaded: {queued} requests waiting, {capacity} may run or wait at once; retry in about {:.1} s",
        retry_after.as_secs_f64()
    )]
    Overloaded {
        /// Requests that may run or wait at once.
        capacity: usize,
        /// Requests waiting when this one was refused.
        queued: usize,
        /// A hint: about when a slot may be free, from recent request
        /// times.
        retry_after: std::time::Duration,
    },
    /// A remote model's endpoint answered with an error (after the
    /// retries a 429 or 5xx gets). `detail` is the provider's message,
    /// shortened; the key is never in it.
    #[error("{endpoint} answered HTTP {status}: {detail}")]
    Remote {
        /// The endpoint's URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// What the provider said.
        detail: String,
    },
    /// An I/O error talking to the worker or reading the model.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stop sequences are bounded in number and length (each is checked
    /// at every token in a worker other requests share); the limits
    /// themselves pass.
    #[test]
    fn stop_sequences_are_bounded() {
        let with = |stop: Vec<String>| ExecutionOptions {
            stop,
            ..Default::default()
        };
        assert!(with(vec!["x".into(); MAX_STOPS]).validate().is_ok());
        assert!(with(vec!["y".repeat(MAX_STOP_BYTES)]).validate().is_ok());
        for bad in [
            with(vec!["x".into(); MAX_STOPS + 1]),
            with(vec!["y".repeat(MAX_STOP_BYTES + 1)]),
            with(vec![String::new()]),
        ] {
            match bad.validate() {
                Err(SlmRunnerError::InvalidInput { field, .. }) => assert_eq!(field, "stop"),
                other => panic!("{other:?}"),
            }
        }
    }
}
