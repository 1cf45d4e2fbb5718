//! The supervisor ⇄ worker protocol.
//!
//! Frames are a 4-byte little-endian length followed by that many bytes of
//! JSON. A frame longer than [`MAX_FRAME_BYTES`] is refused before anything
//! is allocated for it. The supervisor writes [`ToWorker`] messages to the
//! worker's stdin; the worker writes [`FromWorker`] messages to its stdout.
//! Its stderr carries llama.cpp's log lines, never protocol data.
//!
//! The first message is always [`ToWorker::Launch`]; the worker answers
//! [`FromWorker::Ready`] or [`FromWorker::LoadFailed`]. Requests carry an id
//! chosen by the supervisor; every event about a request carries that id:
//! up to [`LaunchSpec::slots`] requests run at once in one worker (continuous
//! batching), their events interleaved.
//!
//! This crate owns the message types and the framing; it never spawns,
//! sandboxes or runs anything.
#![deny(missing_docs)]

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
pub use symbiont_sandbox_plan::{Applied, Layer, LayerKind, SandboxPlan};
#[cfg(feature = "probe")]
pub use symbiont_sandbox_probe::ProbeAction;

/// Bumped on any incompatible change to the messages.
pub const PROTOCOL_VERSION: u32 = 10;

/// The worker's descriptor for the model file: opened (without following a
/// symbolic link) and header-checked by the supervisor, inherited by the
/// worker, which loads `/proc/self/fd/3` and never looks the model up by
/// name.
pub const MODEL_FD: i32 = 3;

/// Largest frame either side accepts (4 MiB): room for a long prompt, small
/// enough that a hostile peer cannot make the other side allocate much.
pub const MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// Largest prompt the supervisor sends, in bytes.
pub const MAX_PROMPT_BYTES: usize = 1024 * 1024;

/// Messages from the supervisor to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// One message is decoded at a time: the size of the largest variant (a
// launch spec with its sandbox plan) costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ToWorker {
    /// First message: what to load and how.
    Launch(LaunchSpec),
    /// First message instead of `Launch`: apply `plan` exactly as a launch
    /// would, then try `action` and report it, then exit. For the escape
    /// tests and the sandbox cost bench; only with the `probe` feature
    /// (a release worker refuses it as an unknown message).
    #[cfg(feature = "probe")]
    Probe {
        /// The sandbox to apply.
        plan: SandboxPlan,
        /// What to try inside it.
        action: ProbeAction,
    },
    /// Generate text for a prompt.
    Generate(GenerateRequest),
    /// Stop generating request `id` within one decode step.
    Cancel {
        /// The request.
        id: u64,
    },
    /// Liveness check; answered with [`FromWorker::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Finish and exit cleanly.
    Shutdown,
}

/// What the worker loads and with which resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Absolute path of the GGUF file, for messages only: the worker reads
    /// the model through [`MODEL_FD`].
    pub model_path: PathBuf,
    /// Compute threads for llama.cpp.
    pub threads: u32,
    /// Tokens of context one request may use, prompt and answer together.
    pub context_size: u32,
    /// Tokens of KV cache the requests share (llama.cpp's unified cache;
    /// a stream each when it holds `slots × context_size`), at least
    /// `context_size`. A request reserves `min(prompt +
    /// max_tokens, context_size)` of them when it starts, so that it never
    /// runs out mid-answer; one that does not fit beside the running ones
    /// waits in the worker until they end (idle sequences' cached prefixes
    /// are dropped first, least recently used first).
    pub cache_tokens: u32,
    /// Tokens decoded per batch while reading a prompt.
    pub batch_size: u32,
    /// Requests the worker runs at once, each in its own sequence of one
    /// context, sharing `cache_tokens`; a request beyond them waits in the
    /// worker (at most `slots` wait), more are refused.
    pub slots: u32,
    /// Process id of the supervisor: the worker exits if its parent changes.
    pub supervisor_pid: u32,
    /// The sandbox to apply before the model file is parsed.
    pub sandbox: SandboxPlan,
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Chosen by the supervisor, unique per worker.
    pub id: u64,
    /// The prompt text.
    pub prompt: String,
    /// Whether to apply the model's chat template.
    pub chat: bool,
    /// Earlier turns of the conversation, oldest first (chat only); the
    /// prompt is the new user message.
    #[serde(default)]
    pub history: Vec<ChatMessage>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// Stop before the first of these strings.
    pub stop: Vec<String>,
    /// The worker stops by itself after this long (the supervisor also
    /// cancels, then kills).
    pub timeout_ms: u64,
    /// Instead of generating: the embedding of the prompt as it is (no
    /// template), mean-pooled over its tokens and L2-normalized, sent as
    /// [`FromWorker::Embedding`] before `Done`. At most
    /// [`MAX_EMBED_TOKENS`] tokens.
    #[serde(default)]
    pub embed: bool,
    /// Whose prompt this is (a hash of the agent; 0 for none): a slot's
    /// cached prefix serves only requests of the same key, so no agent
    /// reuses, or learns from the count or the speed of, another agent's
    /// cached prompt.
    #[serde(default)]
    pub cache_key: u64,
    /// What the output must be: every sampled token is one the constraint
    /// allows (llguidance, compiled in the worker before the request
    /// starts; a constraint it cannot compile ends the request with
    /// [`RequestError::Constraint`] before any token).
    #[serde(default)]
    pub constraint: Option<Constraint>,
    /// Tools the model may call (chat only): the worker writes them into
    /// the prompt, constrains a call to the function's parameters and
    /// streams the calls as [`FromWorker::ToolCall`]. Never together with
    /// `constraint`.
    #[serde(default)]
    pub tools: Option<Tools>,
}

/// Tools offered to the model, and whether it must call one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tools {
    /// The functions, in the caller's order.
    pub functions: Vec<Function>,
    /// Whether a call is forced.
    pub choice: ToolChoice,
    /// Whether several calls may come in one answer.
    pub parallel: bool,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON Schema of its arguments (JSON text).
    pub parameters: String,
}

/// Whether the model must call a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolChoice {
    /// A call or a text answer, as the model writes (the constraint holds
    /// from the call's opening marker on).
    Auto,
    /// At least one call, to any of the functions.
    Required,
    /// A call to this function.
    Function {
        /// Its name (one of `functions`).
        name: String,
    },
}

/// A call the model made, in a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMade {
    /// The caller's id for it.
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments (JSON text).
    pub arguments: String,
}

/// A constraint on the generated text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// A value valid under this JSON Schema (its JSON text).
    JsonSchema {
        /// The schema.
        schema: String,
    },
    /// Text that the whole of this regular expression matches (Rust's
    /// `regex` syntax).
    Regex {
        /// The expression.
        pattern: String,
    },
    /// Text of this grammar (llguidance's Lark dialect; `start` is the
    /// root rule).
    Lark {
        /// The grammar.
        grammar: String,
    },
}

/// Most tokens an embedding request may have: the worker's embedding
/// context decodes the whole input in one batch, and llama.cpp keeps an
/// output row (vocabulary-sized logits and the embedding) per token.
pub const MAX_EMBED_TOKENS: u32 = 256;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (of a `tool` message: the tool's result).
    pub content: String,
    /// An assistant's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<CallMade>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// Sampling parameters, all resolved (no defaults left to the worker).
/// Each float is finite: a number beyond `f32`'s range is refused when
/// decoded (it would otherwise become infinity, which JSON cannot carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy.
    #[serde(deserialize_with = "finite_f32")]
    pub temperature: f32,
    /// Top-k, 0 disables.
    pub top_k: u32,
    /// Top-p, 1 disables.
    #[serde(deserialize_with = "finite_f32")]
    pub top_p: f32,
    /// Min-p, 0 disables.
    #[serde(deserialize_with = "finite_f32")]
    pub min_p: f32,
    /// Repeat penalty, 1 disables.
    #[serde(deserialize_with = "finite_f32")]
    pub repeat_penalty: f32,
    /// Tokens the repeat penalty looks back over.
    pub repeat_last_n: u32,
    /// Random seed.
    pub seed: u32,
}

fn finite_f32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(
            "a number beyond the range of a 32-bit float",
        ))
    }
}

/// Messages from the worker to the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The sandbox is applied (sent before the model file is opened, so a
    /// hostile model cannot forge it). The supervisor checks it against
    /// what the kernel shows of the worker from outside.
    Confined {
        /// The layers as applied.
        sandbox: Applied,
    },
    /// The model is loaded.
    Ready(ModelFacts),
    /// The outcome of a probe: what happened, or the error the kernel gave.
    #[cfg(feature = "probe")]
    ProbeResult {
        /// The sandbox as applied.
        applied: Applied,
        /// `Ok(detail)` if the action succeeded, `Err(error)` if it failed.
        outcome: Result<String, String>,
    },
    /// The model could not be loaded.
    LoadFailed {
        /// Which step failed.
        stage: LoadStage,
        /// What llama.cpp or the OS said.
        detail: String,
    },
    /// The prompt was read; generation starts.
    PromptRead {
        /// The request.
        id: u64,
        /// Prompt tokens, from the tokenizer.
        input_tokens: u32,
        /// Of those, the tokens found in the slot's cache (not decoded).
        #[serde(default)]
        cached_tokens: u32,
    },
    /// A piece of generated text: always whole UTF-8 characters.
    Token {
        /// The request.
        id: u64,
        /// The text.
        text: String,
    },
    /// The request finished.
    Done {
        /// The request.
        id: u64,
        /// Measured figures.
        stats: GenerationStats,
    },
    /// The request failed; the worker stays usable.
    Failed {
        /// The request.
        id: u64,
        /// Why.
        error: RequestError,
    },
    /// The embedding of an `embed` request (then `Done`).
    Embedding {
        /// The request.
        id: u64,
        /// `embedding_size` numbers, L2-normalized.
        vector: Vec<f32>,
    },
    /// A piece of a tool call: the first piece of call `index` names the
    /// function, the next ones carry more of its arguments' JSON text
    /// (their concatenation is the whole arguments object).
    ToolCall {
        /// The request.
        id: u64,
        /// The call's place in the answer, from 0.
        index: u32,
        /// The function, in the call's first piece only.
        name: Option<String>,
        /// More of the arguments.
        arguments: String,
    },
    /// Answer to [`ToWorker::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// Where loading failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    /// The launch spec was unusable.
    Launch,
    /// The sandbox could not be applied.
    Sandbox,
    /// llama.cpp's backend.
    Backend,
    /// Reading the model file.
    Model,
    /// Creating the inference context.
    Context,
}

/// Facts about the loaded model, read by llama.cpp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// The worker's protocol version.
    pub protocol_version: u32,
    /// The worker's crate version.
    pub worker_version: String,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Parameter count.
    pub parameters: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
    /// Context length the model was trained with.
    pub trained_context: u32,
    /// Context size of this worker.
    pub context_size: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Whether the GGUF carries a chat template.
    pub chat_template: bool,
    /// Length of the model's embeddings (`n_embd`).
    #[serde(default)]
    pub embedding_size: u32,
    /// Compute threads.
    pub threads: u32,
    /// Time to load the model and create the context, in milliseconds.
    pub load_ms: f64,
    /// The sandbox layers applied, and any gap.
    pub sandbox: Applied,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End-of-generation token.
    EndOfText,
    /// A stop sequence.
    StopSequence,
    /// `max_tokens`.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// Cancelled by the supervisor.
    Cancelled,
    /// The worker's own deadline passed.
    Timeout,
    /// The answer ended with tool calls, each whole.
    ToolCalls,
}

/// What the worker measured for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Prompt tokens after templating, from the tokenizer.
    pub input_tokens: u32,
    /// Tokens generated (sampled and decoded).
    pub output_tokens: u32,
    /// Time to decode the prompt, in milliseconds.
    pub prompt_ms: f64,
    /// Time from the first generated token to the last, in milliseconds.
    pub generation_ms: f64,
    /// Time from receiving the request to sending `Done`, in milliseconds.
    pub total_ms: f64,
    /// Prompt tokens found already in the slot's KV cache (a prefix shared
    /// with an earlier request) and not decoded again; included in
    /// `input_tokens`.
    #[serde(default)]
    pub cached_tokens: u32,
    /// Why it ended.
    pub finish: Finish,
    /// The stop sequence that matched.
    pub stop_sequence: Option<String>,
    /// A constrained answer's tokens that the closing policy chose to end
    /// it within `max_tokens` (0: the model ended it itself); `None`
    /// without a constraint.
    #[serde(default)]
    pub steered_tokens: Option<u32>,
}

/// A request the worker refused or could not finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestError {
    /// The prompt does not fit the context.
    #[error("prompt is {tokens} tokens, the context holds {context_size}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: u32,
        /// Context size.
        context_size: u32,
    },
    /// The chat template could not be rendered.
    #[error("chat template failed: {detail}")]
    Template {
        /// The template engine's message.
        detail: String,
    },
    /// llama.cpp failed to decode.
    #[error("decode failed: {detail}")]
    Decode {
        /// What llama.cpp said.
        detail: String,
    },
    /// The request itself was malformed.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What was wrong.
        detail: String,
    },
    /// The output constraint could not be compiled.
    #[error("{detail}")]
    Constraint {
        /// What was wrong, naming the keyword or rule.
        detail: String,
        /// Where in a JSON Schema (a JSON pointer), when known.
        at: Option<String>,
    },
    /// The constraint engine failed while generating (a limit of its work
    /// per token reached, or no token of the model allowed): the request
    /// ends rather than go on unconstrained.
    #[error("constrained sampling failed: {detail}")]
    ConstrainedSampling {
        /// What the engine said.
        detail: String,
    },
    /// Every slot was busy: the supervisor sent more requests at once than
    /// the launch spec's `slots`.
    #[error("all {slots} slots are busy")]
    SlotsFull {
        /// The worker's slots.
        slots: u32,
    },
}

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream at a frame boundary.
    #[error("peer closed the stream")]
    Closed,
    /// A frame announced more than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(u32),
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// Serializes a message into one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = u32::try_from(buf.len() - 4).unwrap_or(u32::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Checks a frame's length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len as usize)
}

/// Decodes a frame's payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(payload)?)
}

/// Writes one message and flushes.
pub fn write_message<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one message; [`FrameError::Closed`] on a clean end of stream.
pub fn read_message<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(prefix)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `protocol` fuzz target: a float with more digits than
    /// an f64 holds decoded to a value that did not survive encoding and
    /// decoding again (serde_json's fast float parser is not correctly
    /// rounded; the `float_roundtrip` feature is).
    #[test]
    fn long_floats_decode_to_what_they_encode_to() {
        let text = r#"{"type": "pong", "nonce": 1}"#;
        let _: FromWorker = decode(text.as_bytes()).unwrap();
        let stats = r#"{"type": "done", "id": 1, "stats": {"input_tokens": 1, "output_tokens": 1,
            "prompt_ms": 124444444444444444444444444444444444444444444444440.5,
            "generation_ms": 0.30000000000000004441, "total_ms": 1e-320,
            "finish": "max_tokens", "stop_sequence": null}}"#;
        let m: FromWorker = decode(stats.as_bytes()).unwrap();
        let again: FromWorker = decode(&encode(&m).unwrap()[4..]).unwrap();
        assert_eq!(again, m);
    }

    /// Found by the `protocol` fuzz target: a sampling value beyond f32's
    /// range decoded to infinity, which encodes as `null` and then fails to
    /// decode. Such a value is refused at once; a large finite one passes.
    #[test]
    fn sampling_floats_beyond_f32_are_refused() {
        let frame = |penalty: &str| {
            format!(
                r#"{{"type": "generate", "id": 7, "prompt": "Hi", "chat": true, "max_tokens": 8,
                "sampling": {{"temperature": 0.0, "top_k": 40, "top_p": 1.0, "min_p": 0.0,
                "repeat_penalty": {penalty}, "repeat_last_n": 64, "seed": 1}},
                "stop": [], "timeout_ms": 1000}}"#
            )
        };
        assert!(matches!(
            decode::<ToWorker>(frame("1.5e79").as_bytes()),
            Err(FrameError::Malformed(_))
        ));
        let ok: ToWorker = decode(frame("3.0e38").as_bytes()).unwrap();
        let again: ToWorker = decode(&encode(&ok).unwrap()[4..]).unwrap();
        assert_eq!(again, ok);
    }

    #[test]
    fn round_trip_and_limits() {
        let msg = ToWorker::Cancel { id: 7 };
        let mut buf = Vec::new();
        write_message(&mut buf, &msg).unwrap();
        let back: ToWorker = read_message(&mut buf.as_slice()).unwrap();
        assert_eq!(back, msg);

        let mut huge = (MAX_FRAME_BYTES + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(matches!(
            read_message::<_, ToWorker>(&mut huge.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_message::<_, ToWorker>(&mut empty),
            Err(FrameError::Closed)
        ));
        let mut junk = 3u32.to_le_bytes().to_vec();
        junk.extend_from_slice(b"{x}");
        assert!(matches!(
            read_message::<_, ToWorker>(&mut junk.as_slice()),
            Err(FrameError::Malformed(_))
        ));
        // A truncated payload is an I/O error, not a hang or a panic.
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(
            read_message::<_, ToWorker>(&mut short.as_slice()),
            Err(FrameError::Io(_))
        ));
    }
}
