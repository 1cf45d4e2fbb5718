//! The native API: `POST /v1/execute` (the runner's own request and
//! result, with the full metadata), and the operator's endpoints:
//! `/health`, `/ready`, `/metrics`, `/openapi.json`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use symbiont_runtime::config::ModelProvider;
use symbiont_runtime::models::{ChatMessage, ChatRole, ExecutionOptions, ExecutionResult};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::generate::{conversation, whole, Job};
use crate::{parse_body, Current};

/// `POST /v1/execute`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// A model id from `GET /v1/models`.
    pub model: String,
    /// The prompt (the new user message in chat mode).
    pub prompt: String,
    /// The runner's options; `agent_id` is the token's agent (another
    /// value is refused).
    #[serde(default)]
    pub options: ExecutionOptions,
}

/// Runs a prompt with the runner's options; answers the runner's result
/// with everything it measured (tokens, time to first token, the
/// worker's peak memory, limits hit, sandbox layers in force).
#[utoipa::path(post, path = "/v1/execute", tag = "native",
    request_body = ExecuteRequest,
    responses(
        (status = 200, body = ExecutionResult),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 500, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 502, description = "A remote model's provider failed", body = ErrorBody),
        (status = 504, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn execute(Current(service): Current, headers: HeaderMap, body: Body) -> Response {
    let mut call = service.call("/v1/execute");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: ExecuteRequest = parse_body(&service, &headers, body).await?;
        let options = request.options;
        // Requests run for the token's agent (the runner is bound to it);
        // a body that names another is refused rather than ignored.
        #[allow(deprecated)]
        let named = options.agent_id.as_ref();
        if named.is_some_and(|a| *a != call.agent) {
            return Err(ApiError::bad_request(
                "agent_mismatch",
                Some("options.agent_id"),
                "options.agent_id: requests run for the token's agent; leave it out",
            ));
        }
        let mut options = options;
        let mut turns = std::mem::take(&mut options.history);
        turns.push(ChatMessage::new(ChatRole::User, request.prompt));
        let (prompt, history) = conversation(
            turns,
            service.settings().max_prompt_bytes,
            "prompt",
            "the prompt and its history",
        )?;
        options.history = history;
        let job = Job {
            model: request.model,
            prompt,
            options,
            stream: false,
        };
        whole(&service, &mut call, job, |_, _, result| {
            Json(result).into_response()
        })
        .await
    }
    .await;
    call.respond(result)
}

/// `/health` and `/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok`, or `unavailable`.
    pub status: String,
    /// What keeps the service from being ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Status)))]
pub async fn health() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
        problems: vec![],
    })
}

/// Readiness: the config is loaded and every local model's runner can be
/// built (its file opens and its header checks out; the worker executable
/// is found); a Hugging Face model not pulled yet is named. No model is
/// loaded or downloaded by this check. A draining service (SIGTERM) is
/// not ready, while it still answers requests.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Status), (status = 503, body = Status)))]
pub async fn ready(Current(service): Current) -> Response {
    let mut problems = Vec::new();
    if service.live().draining() {
        problems.push(
            "draining: the service is stopping (SIGTERM); it still answers requests until slm.service.drain_seconds have passed, then finishes those in progress".to_string(),
        );
    }
    for model in service.pool().catalog().list_models() {
        // Remote models are ready when their runner builds (key present,
        // endpoint allowed by the profile); nothing is sent to them. A
        // Hugging Face model is ready once pulled (its runner builds from
        // the cache).
        let local = matches!(
            model.provider,
            ModelProvider::LocalFile { .. } | ModelProvider::HuggingFace { .. }
        );
        // Not pulled yet: said as such (a readiness probe never pulls).
        // Under `pull_on_first_use` that is no fault: the first request
        // pulls it (an unready service would never get that request).
        if service.pool().missing(&model.id).is_some() {
            if service.pool().catalog().config().pool.pull_on_first_use {
                continue;
            }
            problems.push(format!(
                "model `{}` is not in the Hugging Face cache yet (`symbi-slm models pull {}`)",
                model.id, model.id
            ));
            continue;
        }
        let checked = if local {
            service
                .pool()
                .runner(&model.id, Some(service.profile()))
                .await
                .map(Some)
        } else {
            service
                .pool()
                .check(&model.id, Some(service.profile()))
                .await
                .map(|()| None)
        };
        match checked {
            Ok(runner) => {
                if runner.is_some_and(|r| r.local().is_some_and(|r| !r.worker_path().is_file())) {
                    problems.push(format!(
                        "model `{}`: the worker executable is missing",
                        model.id
                    ));
                }
            }
            // The reason may hold a path: the operator reads it in the log.
            Err(e) => {
                static LOGGED: symbiont_runtime::egress::Throttle =
                    symbiont_runtime::egress::Throttle::new();
                if let Some(more) = LOGGED.admit() {
                    tracing::warn!(model = %model.id, "not ready: {e} ({more} more such lines held back)");
                }
                problems.push(format!(
                    "model `{}` cannot be run (see the service log)",
                    model.id
                ));
            }
        }
    }
    let (code, status) = if problems.is_empty() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        code,
        Json(Status {
            status: status.into(),
            problems,
        }),
    )
        .into_response()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text format when the request's `Accept` names it (as Prometheus' does), else Prometheus' classic text format 0.0.4", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`slm.service.metrics_token` is set and the request does not carry it", body = ErrorBody),
        (status = 403, description = "Agents have tokens and no `slm.service.metrics_token` is set", body = ErrorBody)))]
pub async fn metrics(Current(service): Current, headers: HeaderMap) -> Response {
    if let Err(e) = service.shared.tokens.metrics(&headers) {
        crate::audit_refusal(&service, "slm.service.metrics_token", "/metrics", &e);
        return e.into_response();
    }
    let runners = service.pool().metrics().await;
    let text = service.shared.metrics.render(runners);
    // Prometheus asks for OpenMetrics (what prometheus-client writes);
    // anyone else (curl, promtool, older scrapers) gets the classic text
    // format, as Prometheus' own client libraries serve it.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // A cache between the scraper and the service keeps the two apart.
    let vary = (header::VARY, "Accept");
    if openmetrics {
        (
            [
                (
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                vary,
            ],
            text,
        )
            .into_response()
    } else {
        (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                vary,
            ],
            crate::metrics::classic_text(&text),
        )
            .into_response()
    }
}

/// What runs now (`symbi-slm ps`): each model's runner built so far
/// (profile, slots, queue) and each of its workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ps {
    /// One entry per model and profile whose runner was built.
    pub models: Vec<PsModel>,
}

/// A model's runner under one profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct PsModel {
    /// The catalog id.
    pub model: String,
    /// The sandbox profile.
    pub profile: String,
    /// `LocalFile`, `OpenAI`, …
    pub provider: String,
    /// Requests one worker runs at once (remote: at once in all).
    pub slots: usize,
    /// Slots running a request now, over its workers.
    pub busy: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Tokens of KV cache per worker, shared by its slots (0: remote).
    pub cache_tokens: u64,
    /// Tokens of it the running requests hold now (each its prompt plus
    /// `max_tokens`, at most the context), over its workers.
    pub cache_tokens_reserved: u64,
    /// Its running workers (none for a remote model, or an unloaded one).
    pub workers: Vec<symbiont_runtime::models::WorkerStatus>,
}

/// Every model's runner and worker now: who it serves, slots, queue,
/// memory against the estimate, keep-alive left.
#[utoipa::path(get, path = "/v1/ps", tag = "operations",
    responses((status = 200, description = "What runs now", body = Ps),
        (status = 401, description = "`slm.service.operator_token` is set and the request does not carry it", body = ErrorBody),
        (status = 403, description = "Agents have tokens and no `slm.service.operator_token` is set", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ps(Current(service): Current, headers: HeaderMap) -> Response {
    if let Err(e) = service.shared.tokens.operator(&headers) {
        crate::audit_refusal(&service, "slm.service.operator_token", "/v1/ps", &e);
        return e.into_response();
    }
    let pool = service.pool();
    let workers = pool.workers().await;
    let models = pool
        .loads()
        .await
        .into_iter()
        .map(|(model, profile, load)| {
            let mine: Vec<_> = workers
                .iter()
                .filter(|(m, p, _)| *m == model && *p == profile)
                .map(|(_, _, w)| w.clone())
                .collect();
            PsModel {
                provider: pool
                    .catalog()
                    .get_model(&model)
                    .map_or("-", |m| m.provider.kind())
                    .to_string(),
                model,
                profile,
                slots: load.slots,
                busy: load.busy,
                queued: load.queued,
                cache_tokens: load.cache_tokens,
                cache_tokens_reserved: load.cache_tokens_reserved,
                workers: mine,
            }
        })
        .collect();
    Json(Ps { models }).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}
