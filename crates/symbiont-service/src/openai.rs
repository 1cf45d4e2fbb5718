//! The OpenAI-compatible API: `POST /v1/chat/completions`,
//! `POST /v1/completions`, `GET /v1/models`. Requests name the fields they
//! use; a field this service cannot honour (`tools`, `n` > 1, penalties
//! other than 0) is a 400 naming it, never silently ignored.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason,
    PromptMode, StreamEvent,
};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::{parse_body, Call, Service};

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
    fn into_vec(self) -> Vec<String> {
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
    /// What it says.
    pub content: Content,
    /// An optional name of the author (accepted, not used).
    #[serde(default)]
    pub name: Option<String>,
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
    /// Only `{"type": "text"}`.
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<serde_json::Value>,
    /// Accepted; nothing is stored either way.
    pub store: Option<bool>,
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
    fn of(m: &ExecutionMetadata) -> Self {
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
    /// The generated text.
    pub content: String,
    /// Always null: a model here refuses in its text, if at all (OpenAI's
    /// schema requires the field).
    pub refusal: Option<String>,
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
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}

/// What a generation endpoint runs.
pub(crate) struct Job {
    pub model: String,
    pub prompt: String,
    pub options: ExecutionOptions,
    pub stream: bool,
    pub include_usage: bool,
}

fn only_zero(param: &str, v: Option<f32>) -> Result<(), ApiError> {
    match v {
        Some(x) if x != 0.0 => Err(ApiError::bad_request(
            "unsupported_parameter",
            Some(param),
            format!("{param}: only 0 is supported"),
        )),
        _ => Ok(()),
    }
}

fn only_one(param: &str, n: Option<u32>) -> Result<(), ApiError> {
    match n {
        Some(n) if n != 1 => Err(ApiError::bad_request(
            "unsupported_parameter",
            Some(param),
            format!("{param}: only one choice per request is supported, got {n}"),
        )),
        _ => Ok(()),
    }
}

fn text_of(i: usize, c: Content) -> Result<String, ApiError> {
    match c {
        Content::Text(s) => Ok(s),
        Content::Parts(parts) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => out.push_str(&t),
                    _ => {
                        return Err(ApiError::bad_request(
                            "unsupported_content",
                            Some(&format!("messages[{i}].content[{j}]")),
                            format!(
                                "messages[{i}].content[{j}]: only parts of type `text` with a `text` field are supported"
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn stream_options_need_stream(
    stream: Option<bool>,
    o: &Option<StreamOptions>,
) -> Result<(), ApiError> {
    if o.is_some() && stream != Some(true) {
        return Err(ApiError::bad_request(
            "invalid_value",
            Some("stream_options"),
            "stream_options: only allowed with stream: true",
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<Job, ApiError> {
        only_one("n", self.n)?;
        stream_options_need_stream(self.stream, &self.stream_options)?;
        if self.logprobs == Some(true) {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                Some("logprobs"),
                "logprobs: log probabilities are not returned; only false is supported",
            ));
        }
        if let Some(f) = &self.response_format {
            if f.get("type").and_then(|t| t.as_str()) != Some("text") {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("response_format"),
                    "response_format: only {\"type\": \"text\"} is supported",
                ));
            }
        }
        only_zero("frequency_penalty", self.frequency_penalty)?;
        only_zero("presence_penalty", self.presence_penalty)?;
        let mut turns = Vec::with_capacity(self.messages.len());
        let mut bytes = 0u64;
        for (i, m) in self.messages.into_iter().enumerate() {
            let text = text_of(i, m.content)?;
            bytes += text.len() as u64;
            let role = match m.role {
                Role::System | Role::Developer => ChatRole::System,
                Role::User => ChatRole::User,
                Role::Assistant => ChatRole::Assistant,
            };
            turns.push(ChatMessage::new(role, text));
        }
        if bytes > max_prompt_bytes {
            return Err(ApiError::prompt_too_large(
                "messages",
                "the messages",
                bytes,
                max_prompt_bytes,
            ));
        }
        let last = match turns.pop() {
            Some(m) if m.role == ChatRole::User => m,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    Some("messages"),
                    "messages: the last message must be the user's",
                ))
            }
            None => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    Some("messages"),
                    "messages: at least one (user) message is needed",
                ))
            }
        };
        Ok(Job {
            model: self.model,
            prompt: last.content,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                seed: self.seed,
                stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
                prompt_mode: PromptMode::Chat,
                history: turns,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

impl CompletionRequest {
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<Job, ApiError> {
        only_one("n", self.n)?;
        stream_options_need_stream(self.stream, &self.stream_options)?;
        only_zero("frequency_penalty", self.frequency_penalty)?;
        only_zero("presence_penalty", self.presence_penalty)?;
        if self.echo == Some(true) {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                Some("echo"),
                "echo: only false is supported",
            ));
        }
        let prompt = match self.prompt {
            Stop::One(s) => s,
            Stop::Many(mut v) if v.len() == 1 => v.remove(0),
            Stop::Many(v) => {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("prompt"),
                    format!(
                        "prompt: one prompt per request is supported, got {}",
                        v.len()
                    ),
                ))
            }
        };
        if prompt.len() as u64 > max_prompt_bytes {
            return Err(ApiError::prompt_too_large(
                "prompt",
                "the prompt",
                prompt.len() as u64,
                max_prompt_bytes,
            ));
        }
        Ok(Job {
            model: self.model,
            prompt,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                max_tokens: Some(self.max_tokens.unwrap_or(16)),
                seed: self.seed,
                stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
                prompt_mode: PromptMode::Raw,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

fn finish(m: &ExecutionMetadata) -> &'static str {
    match m.finish_reason {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    }
}

/// Chat (`chat.completion.chunk`) or text (`text_completion`) chunks.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

impl Shape {
    fn chunk(
        self,
        call: &Call,
        model: &str,
        text: Option<&str>,
        finish: Option<&str>,
    ) -> serde_json::Value {
        match self {
            Shape::Chat => {
                let delta = match (text, finish) {
                    (Some(t), _) => serde_json::json!({ "content": t }),
                    (None, None) => serde_json::json!({ "role": "assistant", "content": "" }),
                    (None, Some(_)) => serde_json::json!({}),
                };
                serde_json::json!({
                    "id": call.id, "object": "chat.completion.chunk", "created": call.created,
                    "model": model,
                    "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
                })
            }
            Shape::Text => serde_json::json!({
                "id": call.id, "object": "text_completion", "created": call.created, "model": model,
                "choices": [{ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null }],
            }),
        }
    }

    fn usage_chunk(self, call: &Call, model: &str, m: &ExecutionMetadata) -> serde_json::Value {
        let object = match self {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        };
        serde_json::json!({
            "id": call.id, "object": object, "created": call.created, "model": model,
            "choices": [], "usage": Usage::of(m), "symbiont": m,
        })
    }
}

fn data(v: &serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().data(v.to_string()))
}

/// Runs a job and answers it: JSON, or server-sent events that start once
/// the first token is there (so that a refusal — full queue, timeout
/// waiting — is still an HTTP status).
async fn answer(
    service: &Service,
    call: &mut Call,
    job: Job,
    shape: Shape,
) -> Result<Response, ApiError> {
    let (runner, permit) = call.admit(service, &job.model).await?;
    let options = job.options;
    let model = job.model;
    if !job.stream {
        let result = runner
            .execute(&job.prompt, Some(options))
            .await
            .map_err(|e| call.runner_error(service, e))?;
        drop(permit);
        call.completed(service, &result);
        return Ok(Json(
            match shape {
                Shape::Chat => serde_json::to_value(chat_completion(call, &model, result)),
                Shape::Text => serde_json::to_value(completion(call, &model, result)),
            }
            .unwrap_or_default(),
        )
        .into_response());
    }
    let (mut call, events) = call
        .open_stream(service, &runner, &job.prompt, options)
        .await?;
    let mut permit = Some(permit);
    let service = service.clone();
    let include_usage = job.include_usage;
    let opening = match shape {
        Shape::Chat => vec![data(&shape.chunk(&call, &model, None, None))],
        Shape::Text => vec![],
    };
    let body = futures::stream::iter(opening).chain(events.flat_map(move |event| {
        let out: Vec<Result<Event, Infallible>> = match event {
            Ok(StreamEvent::Token(t)) => {
                vec![data(&shape.chunk(&call, &model, Some(&t), None))]
            }
            Ok(StreamEvent::Done(result)) => {
                // The generation is over: its permit is free even
                // if the client reads the rest slowly.
                permit.take();
                call.completed(&service, &result);
                let m = &result.metadata;
                let mut v = vec![data(&shape.chunk(&call, &model, None, Some(finish(m))))];
                if include_usage {
                    v.push(data(&shape.usage_chunk(&call, &model, m)));
                }
                v.push(Ok(Event::default().data("[DONE]")));
                v
            }
            Ok(_) => vec![],
            Err(e) => {
                permit.take();
                let e = call.runner_error(&service, e);
                // Counted with the status it would have had.
                call.status = Some(e.status.as_u16());
                vec![data(&serde_json::to_value(e.body()).unwrap_or_default())]
            }
        };
        futures::stream::iter(out)
    }));
    Ok(sse(body))
}

fn sse(body: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn chat_completion(call: &Call, model: &str, r: ExecutionResult) -> ChatCompletion {
    ChatCompletion {
        id: call.id.clone(),
        object: "chat.completion".into(),
        created: call.created,
        model: model.into(),
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: Role::Assistant,
                content: r.response,
                refusal: None,
            },
            finish_reason: finish(&r.metadata).into(),
            logprobs: None,
        }],
        usage: Usage::of(&r.metadata),
        symbiont: r.metadata,
    }
}

fn completion(call: &Call, model: &str, r: ExecutionResult) -> Completion {
    Completion {
        id: call.id.clone(),
        object: "text_completion".into(),
        created: call.created,
        model: model.into(),
        choices: vec![CompletionChoice {
            text: r.response,
            index: 0,
            finish_reason: finish(&r.metadata).into(),
            logprobs: None,
        }],
        usage: Usage::of(&r.metadata),
        symbiont: r.metadata,
    }
}

/// Chat completion, OpenAI-compatible.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion (JSON), or with `stream: true` server-sent events of `chat.completion.chunk` objects ending with `data: [DONE]`", content(
            (ChatCompletion = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "Malformed request or unsupported option", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "The agent may not use the model", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many requests: concurrency limit or full queue (see Retry-After)", body = ErrorBody),
        (status = 500, description = "The worker failed", body = ErrorBody),
        (status = 503, description = "The model cannot run", body = ErrorBody),
        (status = 502, description = "A remote model's provider failed (details in the service log)", body = ErrorBody),
        (status = 504, description = "The request ran out of time", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn chat_completions(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = service.call("/v1/chat/completions");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: ChatCompletionRequest = parse_body(&service, &headers, body).await?;
        let job = request.into_job(service.settings().max_prompt_bytes)?;
        answer(&service, &mut call, job, Shape::Chat).await
    }
    .await;
    call.respond(result)
}

/// Text completion, OpenAI-compatible (the prompt as it is, no chat
/// template).
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion (JSON), or with `stream: true` server-sent events of `text_completion` objects ending with `data: [DONE]`", content(
            (Completion = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn completions(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = service.call("/v1/completions");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: CompletionRequest = parse_body(&service, &headers, body).await?;
        let job = request.into_job(service.settings().max_prompt_bytes)?;
        answer(&service, &mut call, job, Shape::Text).await
    }
    .await;
    call.respond(result)
}

/// The models the calling agent may use.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn models(State(service): State<Service>, headers: HeaderMap) -> Response {
    let mut call = service.call("/v1/models");
    let result = call.authenticate(&service, &headers).map(|()| {
        let data = service
            .pool()
            .catalog()
            .get_models_for_agent(&call.agent)
            .into_iter()
            .map(|m| ModelObject {
                id: m.id.clone(),
                object: "model".into(),
                created: service.started(),
                owned_by: "symbiont".into(),
                name: m.name.clone(),
                capabilities: m.capabilities.iter().map(|c| format!("{c:?}")).collect(),
            })
            .collect();
        Json(ModelList {
            object: "list".into(),
            data,
        })
        .into_response()
    });
    call.respond(result)
}

/// `input` of an embeddings request: a string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts (at most 256), one vector each, in order.
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// A model with the `Embeddings` capability.
    pub model: String,
    /// The text(s), each at most 256 tokens.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian 32-bit floats).
    pub encoding_format: Option<String>,
    /// Only the model's own size (not supported otherwise).
    pub dimensions: Option<u32>,
    /// Accepted, not used.
    pub user: Option<String>,
}

/// One vector: numbers, or base64 of little-endian 32-bit floats.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// `embedding`.
    pub object: String,
    /// Its input's position.
    pub index: u32,
    /// The vector, L2-normalized (mean-pooled over the input's tokens).
    pub embedding: EmbeddingVector,
}

/// Token counts of an embeddings request.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens of every input, from the tokenizer.
    pub prompt_tokens: u32,
    /// The same.
    pub total_tokens: u32,
}

/// The embeddings.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<EmbeddingObject>,
    /// The model id.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// Most inputs in one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Embeddings, OpenAI-compatible, for models with the `Embeddings`
/// capability: one vector per input.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, body = EmbeddingList),
        (status = 400, description = "Malformed request, an input too long, or a model without the Embeddings capability", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn embeddings(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = service.call("/v1/embeddings");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: EmbeddingRequest = parse_body(&service, &headers, body).await?;
        let base64_out = match request.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    Some("encoding_format"),
                    format!("encoding_format: `{other}` is neither `float` nor `base64`"),
                ))
            }
        };
        let inputs = match request.input {
            EmbeddingInput::One(s) => vec![s],
            EmbeddingInput::Many(v) => v,
        };
        if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::bad_request(
                "invalid_value",
                Some("input"),
                format!(
                    "input: 1 to {MAX_EMBEDDING_INPUTS} texts, got {}",
                    inputs.len()
                ),
            ));
        }
        let bytes: u64 = inputs.iter().map(|s| s.len() as u64).sum();
        let max = service.settings().max_prompt_bytes;
        if bytes > max {
            return Err(ApiError::prompt_too_large(
                "input",
                "the inputs",
                bytes,
                max,
            ));
        }
        let (runner, permit) = call.admit(&service, &request.model).await?;
        let has_capability = service
            .pool()
            .catalog()
            .get_model(&request.model)
            .is_some_and(|m| {
                m.capabilities
                    .contains(&symbiont_runtime::config::ModelCapability::Embeddings)
            });
        if !has_capability {
            return Err(ApiError::bad_request(
                "model_without_embeddings",
                Some("model"),
                format!(
                    "the model `{}` does not have the Embeddings capability",
                    request.model
                ),
            ));
        }
        // Known from the model's header: refused before anything runs.
        let size = runner
            .runner()
            .local()
            .and_then(|r| r.model_summary().embedding_length);
        if let (Some(d), Some(size)) = (request.dimensions, size) {
            if u64::from(d) != size {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("dimensions"),
                    format!("dimensions: this model's embeddings have {size} numbers, not {d}"),
                ));
            }
        }
        let mut data = Vec::with_capacity(inputs.len());
        let mut tokens = 0u32;
        let mut last = None;
        for (i, text) in inputs.iter().enumerate() {
            let r = runner.embed(text, None).await.map_err(|e| {
                let mut e = call.runner_error(&service, e);
                if e.param.as_deref() == Some("prompt") {
                    // The runner's name for it; the client sent `input`.
                    e.param = Some(format!("input[{i}]"));
                    e.message = format!("input[{i}]: {}", e.message);
                }
                e
            })?;
            if let Some(d) = request
                .dimensions
                .filter(|&d| d as usize != r.embedding.len())
            {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("dimensions"),
                    format!(
                        "dimensions: this model's embeddings have {} numbers, not {d}",
                        r.embedding.len()
                    ),
                ));
            }
            tokens = tokens.saturating_add(r.metadata.input_tokens.unwrap_or(0));
            let embedding = if base64_out {
                let raw: Vec<u8> = r.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64(&raw))
            } else {
                EmbeddingVector::Float(r.embedding)
            };
            data.push(EmbeddingObject {
                object: "embedding".into(),
                index: i as u32,
                embedding,
            });
            last = Some(r.metadata);
        }
        drop(permit);
        if let Some(mut m) = last {
            m.input_tokens = Some(tokens);
            call.completed_metadata(&service, &m);
        }
        Ok(Json(EmbeddingList {
            object: "list".into(),
            data,
            model: request.model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        })
        .into_response())
    }
    .await;
    call.respond(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }
}
