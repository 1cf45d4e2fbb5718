//! The OpenAI-compatible API: `POST /v1/chat/completions`,
//! `POST /v1/completions`, `GET /v1/models`. Requests name the fields they
//! use; a field this service cannot honour (`n` > 1, penalties other
//! than 0) is a 400 naming it, never silently ignored.

mod embedding;
mod jobs;
mod wire;

pub use embedding::*;
pub use wire::*;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason,
    PromptMode, ResponseFormat, ToolCall, ToolCallDelta, ToolChoice, ToolDefinition,
};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::generate::{answer, conversation, Dialect, Job};
use crate::{parse_body, Call, Current, Service};

fn finish(m: &ExecutionMetadata) -> &'static str {
    match m.finish_reason {
        Some(FinishReason::Length) => "length",
        Some(FinishReason::ToolCalls) => "tool_calls",
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

fn data(v: &serde_json::Value) -> Event {
    Event::default().data(v.to_string())
}

/// OpenAI's answers: chat or text, with the usage chunk at the end of a
/// stream when `stream_options.include_usage` asked for it.
pub(crate) struct OpenAi {
    shape: Shape,
    include_usage: bool,
}

impl Dialect for OpenAi {
    fn whole(&self, call: &Call, model: &str, result: ExecutionResult) -> Response {
        Json(
            match self.shape {
                Shape::Chat => serde_json::to_value(chat_completion(call, model, result)),
                Shape::Text => serde_json::to_value(completion(call, model, result)),
            }
            .unwrap_or_default(),
        )
        .into_response()
    }

    fn opening(&self, call: &Call, model: &str) -> Vec<Event> {
        match self.shape {
            Shape::Chat => vec![data(&self.shape.chunk(call, model, None, None))],
            Shape::Text => vec![],
        }
    }

    fn text(&self, call: &Call, model: &str, text: &str) -> Vec<Event> {
        vec![data(&self.shape.chunk(call, model, Some(text), None))]
    }

    fn tool_call(&self, call: &Call, model: &str, d: &ToolCallDelta) -> Vec<Event> {
        // OpenAI's delta: the first piece of a call has its id, type and
        // name; the others only more of the arguments.
        let mut piece = serde_json::json!({
            "index": d.index,
            "function": {"arguments": d.arguments},
        });
        if let (Some(id), Some(name)) = (&d.id, &d.name) {
            piece["id"] = id.as_str().into();
            piece["type"] = "function".into();
            piece["function"]["name"] = name.as_str().into();
        }
        let chunk = serde_json::json!({
            "id": call.id, "object": "chat.completion.chunk", "created": call.created,
            "model": model,
            "choices": [{ "index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": null, "logprobs": null }],
        });
        vec![data(&chunk)]
    }

    fn done(&self, call: &Call, model: &str, m: &ExecutionMetadata) -> Vec<Event> {
        let mut v = vec![data(&self.shape.chunk(call, model, None, Some(finish(m))))];
        if self.include_usage {
            v.push(data(&self.shape.usage_chunk(call, model, m)));
        }
        v.push(Event::default().data("[DONE]"));
        v
    }

    fn error(&self, _call: &Call, e: &ApiError) -> Event {
        data(&serde_json::to_value(e.body()).unwrap_or_default())
    }
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
                content: (!r.response.is_empty() || r.tool_calls.is_empty()).then_some(r.response),
                refusal: None,
                tool_calls: r
                    .tool_calls
                    .into_iter()
                    .map(|c| MessageToolCall {
                        id: c.id,
                        kind: "function".into(),
                        function: FunctionCall {
                            name: c.name,
                            arguments: c.arguments,
                        },
                    })
                    .collect(),
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
    Current(service): Current,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut call = service.call("/v1/chat/completions");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: ChatCompletionRequest = parse_body(&service, &headers, body).await?;
        let (job, dialect) = request.into_job(service.settings().max_prompt_bytes)?;
        answer(&service, &mut call, job, dialect).await
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
pub async fn completions(Current(service): Current, headers: HeaderMap, body: Body) -> Response {
    let mut call = service.call("/v1/completions");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: CompletionRequest = parse_body(&service, &headers, body).await?;
        let (mut job, dialect) = request.into_job(service.settings().max_prompt_bytes)?;
        // OpenAI's default for completions is 16 tokens; a model's own
        // `settings.sampling.max_tokens` comes first.
        if job.options.max_tokens.is_none() {
            let configured = service
                .pool()
                .catalog()
                .get_model(&job.model)
                .and_then(|m| m.settings.sampling.max_tokens);
            job.options.max_tokens = Some(configured.unwrap_or(16));
        }
        answer(&service, &mut call, job, dialect).await
    }
    .await;
    call.respond(result)
}

/// A model as `/v1/models` lists it.
fn model_object(service: &Service, m: &symbiont_runtime::config::Model) -> ModelObject {
    ModelObject {
        id: m.id.clone(),
        object: "model".into(),
        created: service.started(),
        owned_by: "symbiont".into(),
        name: m.name.clone(),
        capabilities: m.capabilities.iter().map(|c| format!("{c:?}")).collect(),
        artifact: service.pool().artifact(&m.id),
    }
}

/// The models the calling agent may use.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn models(Current(service): Current, headers: HeaderMap) -> Response {
    let mut call = service.call("/v1/models");
    let result = call.authenticate(&service, &headers).map(|()| {
        let data = service
            .pool()
            .catalog()
            .get_models_for_agent(&call.agent)
            .into_iter()
            .map(|m| model_object(&service, m))
            .collect();
        Json(ModelList {
            object: "list".into(),
            data,
        })
        .into_response()
    });
    call.respond(result)
}

/// One model the calling agent may use (`404` for any other: a model the
/// agent may not use is not told apart from one that does not exist).
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai",
    params(("model" = String, Path, description = "The model's id")),
    responses((status = 200, body = ModelObject), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn model(
    Current(service): Current,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = service.call("/v1/models/{model}");
    let result = call.authenticate(&service, &headers).and_then(|()| {
        service
            .pool()
            .catalog()
            .get_models_for_agent(&call.agent)
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| Json(model_object(&service, m)).into_response())
            .ok_or_else(|| {
                ApiError::from_runner(
                    symbiont_runtime::models::SlmRunnerError::UnknownModel { model_id: id },
                    &call.id,
                )
            })
    });
    call.respond(result)
}
