//! What the three generation APIs (OpenAI's, Anthropic's, the native one)
//! share once each has read its request: the conversation checked the
//! same way (its size, its last turn), and one way to run a job and
//! answer it (admission, the whole answer or a stream of events, the
//! count in the metrics). Each API only says how its answers look
//! ([`Dialect`]).

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionMetadata, ExecutionOptions, ExecutionResult, StreamEvent,
    ToolCallDelta,
};

use crate::error::ApiError;
use crate::{Call, Service};

/// What a generation request runs, whichever API asked.
pub(crate) struct Job {
    pub model: String,
    pub prompt: String,
    pub options: ExecutionOptions,
    pub stream: bool,
}

/// A conversation as the runner takes it: the last turn, which must be
/// the user's, is the prompt, the others its history. Its text is at most
/// `max_bytes` (`field` and `what` name it in the refusal).
pub(crate) fn conversation(
    mut turns: Vec<ChatMessage>,
    max_bytes: u64,
    field: &str,
    what: &str,
) -> Result<(String, Vec<ChatMessage>), ApiError> {
    let bytes: u64 = turns.iter().map(|t| t.content.len() as u64).sum();
    if bytes > max_bytes {
        return Err(ApiError::prompt_too_large(field, what, bytes, max_bytes));
    }
    match turns.pop() {
        Some(last) if last.role == ChatRole::User => Ok((last.content, turns)),
        // Tool results last: the model answers them (no new user turn).
        Some(last) if last.role == ChatRole::Tool => {
            turns.push(last);
            Ok((String::new(), turns))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_messages",
            Some("messages"),
            "messages: the last message must be the user's, or a tool's result",
        )),
        None => Err(ApiError::bad_request(
            "invalid_messages",
            Some("messages"),
            "messages: at least one (user) message is needed",
        )),
    }
}

/// How an API writes what a job produced.
pub(crate) trait Dialect: Send + 'static {
    /// The whole answer, when not streamed.
    fn whole(&self, call: &Call, model: &str, result: ExecutionResult) -> Response;
    /// What a stream opens with, before the first text.
    fn opening(&self, call: &Call, model: &str) -> Vec<Event>;
    /// A piece of text.
    fn text(&self, call: &Call, model: &str, text: &str) -> Vec<Event>;
    /// A piece of a tool call (an API that offers no tools never sees
    /// one).
    fn tool_call(&self, _call: &Call, _model: &str, _delta: &ToolCallDelta) -> Vec<Event> {
        vec![]
    }
    /// The end of a stream.
    fn done(&self, call: &Call, model: &str, metadata: &ExecutionMetadata) -> Vec<Event>;
    /// An error after the stream began (its HTTP status was 200).
    fn error(&self, call: &Call, error: &ApiError) -> Event;
}

/// Runs `job` for the call's agent and answers it: JSON, or server-sent
/// events that start once the first event is there (so that a refusal, a
/// full queue or a deadline passed while queued, is still an HTTP status).
pub(crate) async fn answer(
    service: &Service,
    call: &mut Call,
    job: Job,
    dialect: impl Dialect,
) -> Result<Response, ApiError> {
    if !job.stream {
        return whole(service, call, job, |call, model, result| {
            dialect.whole(call, model, result)
        })
        .await;
    }
    let (runner, permit) = call.admit(service, &job.model).await?;
    let Job {
        model,
        prompt,
        options,
        ..
    } = job;
    let (mut call, events) = call.open_stream(service, &runner, &prompt, options).await?;
    let mut permit = Some(permit);
    let service = service.clone();
    let opening = dialect.opening(&call, &model);
    let body = futures::stream::iter(opening)
        .chain(events.flat_map(move |event| {
            let out = match event {
                Ok(StreamEvent::Token(t)) => dialect.text(&call, &model, &t),
                Ok(StreamEvent::ToolCall(d)) => dialect.tool_call(&call, &model, &d),
                Ok(StreamEvent::Done(result)) => {
                    // The generation is over: its permit is free even if
                    // the client reads the rest slowly.
                    permit.take();
                    call.completed(&service, &result);
                    dialect.done(&call, &model, &result.metadata)
                }
                Ok(_) => vec![],
                Err(e) => {
                    permit.take();
                    let e = call.runner_error(&service, e);
                    // Counted with the status it would have had.
                    call.status = Some(e.status.as_u16());
                    vec![dialect.error(&call, &e)]
                }
            };
            futures::stream::iter(out)
        }))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Runs `job` to its end for the call's agent and answers with what
/// `write` makes of the result.
pub(crate) async fn whole(
    service: &Service,
    call: &mut Call,
    job: Job,
    write: impl FnOnce(&Call, &str, ExecutionResult) -> Response,
) -> Result<Response, ApiError> {
    let (runner, permit) = call.admit(service, &job.model).await?;
    let result = runner
        .execute(&job.prompt, Some(job.options))
        .await
        .map_err(|e| call.runner_error(service, e))?;
    drop(permit);
    call.completed(service, &result);
    Ok(write(call, &job.model, result))
}
