//! The OpenAI API's request and response bodies, as this service reads
//! and writes them (checked against OpenAI's published schemas by the
//! service tests).

use serde::{Deserialize, Serialize};
use symbiont_runtime::models::ExecutionMetadata;
use utoipa::ToSchema;

/// `stop`: one string or several.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Up to 16 stop sequences.
    Many(Vec<String>),
}

impl Stop {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and empty `choices`) before
    /// `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (first message only).
    System,
    /// Instructions, as newer clients name them; the same as `system`.
    Developer,
    /// The agent.
    User,
    /// The model.
    Assistant,
    /// A tool's result (with `tool_call_id`).
    Tool,
}

/// A message's content: a string, or text parts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts, of which only `{"type": "text"}` is supported.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentPart {
    /// Only `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it says (null for an assistant's message that only calls
    /// tools).
    #[serde(default)]
    pub content: Option<Content>,
    /// An optional name of the author (accepted, not used).
    #[serde(default)]
    pub name: Option<String>,
    /// An assistant's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<MessageToolCall>>,
    /// A tool message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Accepted with null only (refusals are not produced here).
    #[serde(default)]
    pub refusal: Option<String>,
}

/// A tool call, in an assistant's message or answer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageToolCall {
    /// Its id (`call_…`).
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// The function a call calls.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: JSON text.
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

/// A function the model may call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionDefinition {
    /// 1 to 64 of `a-z A-Z 0-9 _ -`.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON Schema of its arguments (default: any object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// Accepted: arguments always follow `parameters` here (constrained
    /// decoding), strict or not.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The conversation: an optional system message first, then user and
    /// assistant turns; the last one is the user's.
    pub messages: Vec<Message>,
    /// Sampling temperature, 0 (greedy) to 100; default 0.8.
    #[schema(minimum = 0.0, maximum = 100.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling, (0, 1].
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Most tokens to generate (deprecated name of
    /// `max_completion_tokens`).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Most tokens to generate.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// Random seed: the same seed and options give the same text.
    pub seed: Option<u32>,
    /// Generation stops before the first of these.
    pub stop: Option<Stop>,
    /// Stream server-sent events (`chat.completion.chunk`), ending with
    /// `data: [DONE]`.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices per request: only 1.
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    /// An end-user id (accepted, not used: the agent is the token's).
    pub user: Option<String>,
    /// Only 0 (not supported).
    pub frequency_penalty: Option<f32>,
    /// Only 0 (not supported).
    pub presence_penalty: Option<f32>,
    /// Only false (log probabilities are not returned).
    pub logprobs: Option<bool>,
    /// `{"type": "text"}`, `{"type": "json_object"}` (any JSON object) or
    /// `{"type": "json_schema", "json_schema": {"name": …, "schema": {…}}}`:
    /// the answer is guaranteed by constrained decoding (compact JSON). A
    /// schema the engine cannot compile is a 400 naming the keyword and
    /// where it is.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<serde_json::Value>,
    /// Accepted; nothing is stored either way.
    pub store: Option<bool>,
    /// Functions the model may call. A call's arguments are valid under
    /// the function's `parameters` (constrained decoding from the call's
    /// opening on).
    pub tools: Option<Vec<Tool>>,
    /// `none`, `auto` (the default with tools), `required`, or
    /// `{"type": "function", "function": {"name": …}}`.
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<serde_json::Value>,
    /// Whether one answer may make several calls (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Extension (as llama.cpp's server): keep the k most likely tokens.
    #[schema(minimum = 1)]
    pub top_k: Option<u32>,
    /// Extension: drop tokens less likely than this fraction of the best.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    /// Extension: penalty for repeating recent tokens (1: none).
    pub repeat_penalty: Option<f32>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The text to continue, as it is (no chat template): a string, or a
    /// list holding one string.
    pub prompt: Stop,
    /// Most tokens to generate; default 16, as OpenAI's.
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0 (greedy) to 100.
    #[schema(minimum = 0.0, maximum = 100.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling, (0, 1].
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// Random seed.
    pub seed: Option<u32>,
    /// Generation stops before the first of these.
    pub stop: Option<Stop>,
    /// Stream server-sent events (`text_completion` chunks).
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Only 1.
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<u32>,
    /// Only false.
    pub echo: Option<bool>,
    /// Accepted, not used.
    pub user: Option<String>,
    /// Only 0.
    pub frequency_penalty: Option<f32>,
    /// Only 0.
    pub presence_penalty: Option<f32>,
    /// Extension: top-k.
    #[schema(minimum = 1)]
    pub top_k: Option<u32>,
    /// Extension: min-p.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    /// Extension: repeat penalty.
    pub repeat_penalty: Option<f32>,
}

/// Token counts, from the model's tokenizer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens (template included).
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// The sum.
    pub total_tokens: u32,
    /// Prompt tokens found in the prefix cache.
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Details of the prompt tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Read from the worker's prefix cache, not computed again.
    pub cached_tokens: u32,
}

impl Usage {
    pub(super) fn of(m: &ExecutionMetadata) -> Self {
        let (p, c) = (m.input_tokens.unwrap_or(0), m.output_tokens.unwrap_or(0));
        Self {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p.saturating_add(c),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: m.cached_tokens.unwrap_or(0),
            },
        }
    }
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: Role,
    /// The generated text (null when the answer is only tool calls).
    pub content: Option<String>,
    /// Always null: a model here refuses in its text, if at all (OpenAI's
    /// schema requires the field).
    pub refusal: Option<String>,
    /// The tool calls the answer made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<MessageToolCall>,
}

/// One choice (there is always exactly one).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop` (end of answer or a stop sequence) or `length` (token limit
    /// or context size).
    pub finish_reason: String,
    /// Always null.
    pub logprobs: Option<()>,
}

/// A chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-…`, also the request id in the service log.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix time of the request.
    pub created: i64,
    /// The model id.
    pub model: String,
    /// One choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// What the runner measured: times, tokens, the worker's peak memory,
    /// limits hit, sandbox layers in force.
    pub symbiont: ExecutionMetadata,
}

/// One choice of a text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionChoice {
    /// The generated text.
    pub text: String,
    /// 0.
    pub index: u32,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Always null.
    pub logprobs: Option<()>,
}

/// A text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Completion {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix time of the request.
    pub created: i64,
    /// The model id.
    pub model: String,
    /// One choice.
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    pub usage: Usage,
    /// What the runner measured.
    pub symbiont: ExecutionMetadata,
}

/// A model the calling agent may use.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    /// The catalog id: what `model` takes.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix time the service loaded its catalog.
    pub created: i64,
    /// `symbiont`.
    pub owned_by: String,
    /// The model's display name.
    pub name: String,
    /// Its capabilities, such as `TextGeneration`.
    pub capabilities: Vec<String>,
    /// A local model's bytes: present, size, the SHA-256 they must have,
    /// a Hugging Face model's revision and commit (absent for a remote
    /// model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<symbiont_runtime::models::hub::Artifact>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}
