//! Anthropic's Messages API: `POST /v1/messages`, JSON or server-sent
//! events, so that agents written against the Anthropic SDK use the same
//! models, tokens, allow-lists and limits. The token comes as
//! `x-api-key` or `Authorization: Bearer` (the SDK sends either, by
//! version); `anthropic-version` is accepted whatever its value. Errors
//! have Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
//!
//! Usage follows Anthropic's meaning: `input_tokens` are the prompt tokens
//! that were computed, `cache_read_input_tokens` those reused from the
//! prefix cache (their sum is the prompt's length in tokens). In a stream,
//! `message_start` carries 0 for both (the prompt is tokenized in the
//! worker); the measured counts come in `message_delta`, which the SDK
//! folds into the final message.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason,
    PromptMode, ToolCall, ToolCallDelta, ToolChoice, ToolDefinition,
};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::generate::{answer, conversation, Dialect, Job};
use crate::{parse_body, Call, Current};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    /// The agent.
    User,
    /// The model.
    Assistant,
    /// Instructions (as newer SDKs may send them inside `messages`).
    System,
}

/// Text, or content blocks of which only `text` ones are supported.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<ContentBlock>),
}

/// One content block: `text`; in an assistant's message `tool_use`, in a
/// user's `tool_result`. Blocks of another type (images) are refused with
/// the block's place named, never skipped.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ContentBlock {
    /// `text`, `tool_use` or `tool_result`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
    /// `tool_use`: the call's id.
    #[serde(default)]
    pub id: Option<String>,
    /// `tool_use`: the tool.
    #[serde(default)]
    pub name: Option<String>,
    /// `tool_use`: its input (an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<serde_json::Value>,
    /// `tool_result`: the call it answers.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// `tool_result`: the result (text, or text blocks).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub content: Option<serde_json::Value>,
    /// `tool_result`: whether the tool failed.
    #[serde(default)]
    pub is_error: Option<bool>,
    /// Accepted and ignored: every prompt prefix is cached anyway.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub cache_control: Option<serde_json::Value>,
    /// Accepted when null or empty (a transcript echoed back from the
    /// Anthropic API carries `"citations": null`); citations themselves
    /// are refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub citations: Option<serde_json::Value>,
    /// Any other field (refused).
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One turn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputMessage {
    /// Who wrote it.
    pub role: MessageRole,
    /// What it says.
    pub content: MessageContent,
}

/// `metadata`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestMetadata {
    /// Accepted, not used (the token names the agent).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `POST /v1/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// The conversation; the last message is the user's.
    pub messages: Vec<InputMessage>,
    /// Instructions.
    #[serde(default)]
    pub system: Option<MessageContent>,
    /// Up to 16 stop sequences.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// 0 (greedy) to 2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k sampling.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Accepted, not used.
    #[serde(default)]
    pub metadata: Option<RequestMetadata>,
    /// Extension: seed of the sampler.
    #[serde(default)]
    pub seed: Option<u32>,
    /// Extension: min-p sampling.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Extension: repetition penalty.
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Tools the model may use (the model needs the `ToolUse` or
    /// `FunctionCalling` capability). A call's input is valid under the
    /// tool's `input_schema` (constrained decoding).
    #[serde(default)]
    pub tools: Option<Vec<AnthropicTool>>,
    /// `{"type": "auto" | "any" | "tool" (with `name`) | "none"}`, with
    /// `disable_parallel_tool_use`.
    #[serde(default)]
    pub tool_choice: Option<AnthropicToolChoice>,
}

/// A tool offered to the model.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnthropicTool {
    /// 1 to 64 of `a-z A-Z 0-9 _ -`.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// The JSON Schema of its input (an object schema).
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
    /// Only `custom` (the default).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub cache_control: Option<serde_json::Value>,
}

/// Whether the model must use a tool.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnthropicToolChoice {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// With `tool`: which.
    #[serde(default)]
    pub name: Option<String>,
    /// At most one call.
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// A content block of the answer: `text`, or `tool_use`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnswerBlock {
    /// Text.
    Text(TextBlock),
    /// A tool call.
    ToolUse(ToolUseBlock),
}

/// A tool call of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolUseBlock {
    /// `tool_use`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its id (`toolu_…`), which the `tool_result` names.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its input.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

/// A text block of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextBlock {
    /// `text`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

/// Token counts, as Anthropic defines them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageUsage {
    /// Prompt tokens computed (not read from the cache).
    pub input_tokens: u32,
    /// Tokens generated.
    pub output_tokens: u32,
    /// Prompt tokens reused from the prefix cache.
    pub cache_read_input_tokens: u32,
    /// Always 0: nothing is written to a cache on request.
    pub cache_creation_input_tokens: u32,
}

impl MessageUsage {
    fn of(m: &ExecutionMetadata) -> Self {
        let prompt = m.input_tokens.unwrap_or(0);
        let cached = m.cached_tokens.unwrap_or(0).min(prompt);
        Self {
            input_tokens: prompt - cached,
            output_tokens: m.output_tokens.unwrap_or(0),
            cache_read_input_tokens: cached,
            cache_creation_input_tokens: 0,
        }
    }
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    /// `msg_…`.
    pub id: String,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `assistant`.
    pub role: &'static str,
    /// The model id asked for.
    pub model: String,
    /// A text block (if there is text), then a block per tool call.
    pub content: Vec<AnswerBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`.
    pub stop_reason: &'static str,
    /// The stop sequence that ended the answer.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: MessageUsage,
    /// Everything the runner measured.
    #[schema(value_type = Object)]
    pub symbiont: ExecutionMetadata,
}

/// Anthropic's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicErrorBody {
    /// `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What went wrong.
    pub error: AnthropicError,
    /// The request id (also the `request-id` header).
    pub request_id: String,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnthropicError {
    /// `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `request_too_large`,
    /// `rate_limit_error`, `overloaded_error`, `timeout_error`,
    /// `api_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// For people (the OpenAI-style `code` is in brackets at the start).
    pub message: String,
}

/// Anthropic's status for an overloaded model.
const OVERLOADED: u16 = 529;

fn error_body(e: &ApiError, request_id: &str) -> AnthropicErrorBody {
    let kind = match e.status {
        _ if e.code == "model_overloaded" => "overloaded_error",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::GATEWAY_TIMEOUT => "timeout_error",
        s if s.is_server_error() => "api_error",
        _ => e.kind,
    };
    AnthropicErrorBody {
        kind: "error",
        error: AnthropicError {
            kind,
            message: format!("[{}] {}", e.code, e.message),
        },
        request_id: request_id.to_string(),
    }
}

/// The error as Anthropic sends it; a full queue is its 529
/// `overloaded_error` (the SDK retries it after `Retry-After`).
fn error_response(e: ApiError, request_id: &str) -> Response {
    let status = if e.code == "model_overloaded" {
        StatusCode::from_u16(OVERLOADED).unwrap_or(e.status)
    } else {
        e.status
    };
    let mut r = (status, Json(error_body(&e, request_id))).into_response();
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

fn text_of(at: &str, c: MessageContent) -> Result<String, ApiError> {
    let turns = turns_of(at, ChatRole::System, c)?;
    Ok(turns.into_iter().map(|t| t.content).collect())
}

/// A message's turns: its text (with an assistant's `tool_use` blocks as
/// its tool calls); a user's `tool_result` blocks become tool turns, before
/// the text that goes with them.
fn turns_of(at: &str, role: ChatRole, c: MessageContent) -> Result<Vec<ChatMessage>, ApiError> {
    let blocks = match c {
        MessageContent::Text(s) => return Ok(vec![ChatMessage::new(role, s)]),
        MessageContent::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        let field = format!("{at}[{j}]");
        let unsupported = |what: &str| {
            ApiError::bad_request(
                "unsupported_content",
                Some(&field),
                format!("{field}: {what}"),
            )
        };
        // Fields left null (the SDK echoes its blocks' empty fields, such as
        // a `tool_use`'s `caller`) say nothing.
        if b.other.values().any(|v| !v.is_null())
            || !b
                .citations
                .as_ref()
                .is_none_or(|c| c.as_array().is_some_and(Vec::is_empty))
        {
            return Err(unsupported("a field this service does not support"));
        }
        match (b.kind.as_str(), role) {
            ("text", _) => match (b.text, &b.id, &b.input, &b.tool_use_id, &b.content) {
                (Some(t), None, None, None, None) => text.push_str(&t),
                _ => return Err(unsupported("a text block has a `text` field only")),
            },
            ("tool_use", ChatRole::Assistant) => match (b.id, b.name, b.input) {
                (Some(id), Some(name), Some(input)) if input.is_object() => calls.push(ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                }),
                _ => return Err(unsupported("a tool_use block has an id, a name and an input object")),
            },
            ("tool_result", ChatRole::User) => {
                let Some(id) = b.tool_use_id else {
                    return Err(unsupported("a tool_result block names its tool_use_id"));
                };
                let mut content = match b.content {
                    None => String::new(),
                    Some(serde_json::Value::String(s)) => s,
                    Some(serde_json::Value::Array(parts)) => {
                        let mut out = String::new();
                        for p in parts {
                            match (p.get("type").and_then(|t| t.as_str()), p.get("text").and_then(|t| t.as_str())) {
                                (Some("text"), Some(t)) => out.push_str(t),
                                _ => return Err(unsupported("a tool_result's content is text or text blocks")),
                            }
                        }
                        out
                    }
                    Some(_) => return Err(unsupported("a tool_result's content is text or text blocks")),
                };
                if b.is_error == Some(true) {
                    content = format!("Error: {content}");
                }
                let mut turn = ChatMessage::new(ChatRole::Tool, content);
                turn.tool_call_id = Some(id);
                results.push(turn);
            }
            _ => {
                return Err(unsupported(
                    "only `text` blocks, an assistant's `tool_use` and a user's `tool_result` blocks are supported",
                ))
            }
        }
    }
    let mut turns = results;
    if !text.is_empty() || !calls.is_empty() || turns.is_empty() {
        let mut turn = ChatMessage::new(role, text);
        turn.tool_calls = calls;
        turns.push(turn);
    }
    Ok(turns)
}

/// The runner's tools, choice and whether calls may be parallel.
type Tools = (Vec<ToolDefinition>, Option<ToolChoice>, Option<bool>);

/// Anthropic's `tools` and `tool_choice`.
fn tools(
    tools: Option<Vec<AnthropicTool>>,
    choice: Option<AnthropicToolChoice>,
) -> Result<Tools, ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.unwrap_or_default().into_iter().enumerate() {
        if t.kind.as_deref().is_some_and(|k| k != "custom") {
            let field = format!("tools[{i}].type");
            return Err(ApiError::bad_request(
                "invalid_value",
                Some(&field),
                format!("{field}: only custom tools are supported"),
            ));
        }
        out.push(ToolDefinition {
            name: t.name,
            description: t.description.unwrap_or_default(),
            parameters: t.input_schema,
        });
    }
    let Some(c) = choice else {
        return Ok((out, None, None));
    };
    let parallel = c.disable_parallel_tool_use.map(|d| !d);
    let choice = match (c.kind.as_str(), c.name) {
        ("auto", None) => ToolChoice::Auto,
        ("any", None) => ToolChoice::Required,
        ("none", None) => ToolChoice::None,
        ("tool", Some(name)) => ToolChoice::Function(name),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_value",
                Some("tool_choice"),
                "tool_choice: {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": …} is expected",
            ))
        }
    };
    Ok((out, Some(choice), parallel))
}

impl MessagesRequest {
    fn into_job(self, max_prompt_bytes: u64) -> Result<Job, ApiError> {
        let mut turns = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = self.system {
            turns.push(ChatMessage::new(
                ChatRole::System,
                text_of("system", system)?,
            ));
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role {
                MessageRole::User => ChatRole::User,
                MessageRole::Assistant => ChatRole::Assistant,
                MessageRole::System => ChatRole::System,
            };
            turns.extend(turns_of(
                &format!("messages[{i}].content"),
                role,
                m.content,
            )?);
        }
        let (tools, tool_choice, parallel_tool_calls) = tools(self.tools, self.tool_choice)?;
        let (prompt, history) = conversation(
            turns,
            max_prompt_bytes,
            "messages",
            "the system text and messages",
        )?;
        Ok(Job {
            model: self.model,
            prompt,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                max_tokens: Some(self.max_tokens),
                seed: self.seed,
                stop: self.stop_sequences.unwrap_or_default(),
                prompt_mode: PromptMode::Chat,
                history,
                tools,
                tool_choice,
                parallel_tool_calls,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
        })
    }
}

fn stop_reason(m: &ExecutionMetadata) -> &'static str {
    match (m.finish_reason, &m.stop_sequence) {
        (Some(FinishReason::Length), _) => "max_tokens",
        (Some(FinishReason::ToolCalls), _) => "tool_use",
        (_, Some(_)) => "stop_sequence",
        _ => "end_turn",
    }
}

fn event(name: &'static str, v: serde_json::Value) -> Event {
    Event::default().event(name).data(v.to_string())
}

/// Messages, Anthropic-compatible.
#[utoipa::path(post, path = "/v1/messages", tag = "anthropic",
    request_body = MessagesRequest,
    responses(
        (status = 200, description = "The message (JSON), or with `stream: true` server-sent events: message_start, content_block_start, content_block_delta…, content_block_stop, message_delta, message_stop", content(
            (MessageResponse = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, body = AnthropicErrorBody), (status = 401, body = AnthropicErrorBody),
        (status = 403, body = AnthropicErrorBody), (status = 404, body = AnthropicErrorBody),
        (status = 413, body = AnthropicErrorBody), (status = 415, body = AnthropicErrorBody),
        (status = 429, body = AnthropicErrorBody),
        (status = 500, body = AnthropicErrorBody), (status = 503, body = AnthropicErrorBody),
        (status = 502, description = "A remote model's provider failed", body = AnthropicErrorBody),
        (status = 504, body = AnthropicErrorBody),
        (status = 529, description = "The model's queue is full (Retry-After)", body = AnthropicErrorBody),
    ),
    security(("bearer" = []), ("x-api-key" = [])))]
pub async fn messages(Current(service): Current, headers: HeaderMap, body: Body) -> Response {
    let mut call = service.call("/v1/messages");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: MessagesRequest = parse_body(&service, &headers, body).await?;
        let job = request.into_job(service.settings().max_prompt_bytes)?;
        answer(&service, &mut call, job, Anthropic::default()).await
    }
    .await;
    let id = call.id.clone();
    let mut response = call.respond(Ok(result.unwrap_or_else(|e| error_response(e, &id))));
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", v);
    }
    response
}

/// Anthropic's answers: a message, or its events (the content block open
/// now: 0 the text, 1 + i tool call i).
#[derive(Default)]
struct Anthropic {
    block: std::sync::atomic::AtomicU32,
}

/// Anthropic's name for a call id (`toolu_…` for our `call_…`).
fn tool_use_id(id: &str) -> String {
    format!("toolu_{}", id.strip_prefix("call_").unwrap_or(id))
}

impl Dialect for Anthropic {
    fn whole(&self, call: &Call, model: &str, result: ExecutionResult) -> Response {
        let m = &result.metadata;
        let mut content = Vec::new();
        if !result.response.is_empty() || result.tool_calls.is_empty() {
            content.push(AnswerBlock::Text(TextBlock {
                kind: "text",
                text: result.response.clone(),
            }));
        }
        for c in &result.tool_calls {
            content.push(AnswerBlock::ToolUse(ToolUseBlock {
                kind: "tool_use",
                id: tool_use_id(&c.id),
                name: c.name.clone(),
                input: serde_json::from_str(&c.arguments).unwrap_or_else(|_| serde_json::json!({})),
            }));
        }
        Json(MessageResponse {
            id: message_id(&call.id),
            kind: "message",
            role: "assistant",
            model: model.to_string(),
            content,
            stop_reason: stop_reason(m),
            stop_sequence: m.stop_sequence.clone(),
            usage: MessageUsage::of(m),
            symbiont: result.metadata,
        })
        .into_response()
    }

    fn opening(&self, call: &Call, model: &str) -> Vec<Event> {
        vec![
            event(
                "message_start",
                serde_json::json!({"type": "message_start", "message": {
                    "id": message_id(&call.id), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            ),
            event(
                "content_block_start",
                serde_json::json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            ),
        ]
    }

    fn text(&self, _call: &Call, _model: &str, text: &str) -> Vec<Event> {
        vec![event(
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        )]
    }

    fn tool_call(&self, _call: &Call, _model: &str, d: &ToolCallDelta) -> Vec<Event> {
        use std::sync::atomic::Ordering;
        let index = 1 + d.index;
        let mut out = Vec::new();
        if let (Some(id), Some(name)) = (&d.id, &d.name) {
            // The block before it ends; the call's block starts.
            let open = self.block.swap(index, Ordering::Relaxed);
            out.push(event(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": open}),
            ));
            out.push(event(
                "content_block_start",
                serde_json::json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": tool_use_id(id), "name": name, "input": {}}}),
            ));
        }
        if !d.arguments.is_empty() {
            out.push(event(
                "content_block_delta",
                serde_json::json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": d.arguments}}),
            ));
        }
        out
    }

    fn done(&self, _call: &Call, _model: &str, m: &ExecutionMetadata) -> Vec<Event> {
        let open = self.block.load(std::sync::atomic::Ordering::Relaxed);
        vec![
            event(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": open}),
            ),
            event(
                "message_delta",
                serde_json::json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(m), "stop_sequence": m.stop_sequence},
                    "usage": MessageUsage::of(m)}),
            ),
            event("message_stop", serde_json::json!({"type": "message_stop"})),
        ]
    }

    fn error(&self, call: &Call, e: &ApiError) -> Event {
        event(
            "error",
            serde_json::to_value(error_body(e, &call.id)).unwrap_or_default(),
        )
    }
}

/// `msg_` and the random part of the request id.
fn message_id(request_id: &str) -> String {
    let random = request_id.rsplit('-').next().unwrap_or(request_id);
    format!("msg_{random}")
}
