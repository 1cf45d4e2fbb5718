//! One error type for every endpoint, answered in the OpenAI error shape:
//! `{"error": {"message", "type", "param", "code"}}` with a stable `code`.
//! Internal details (paths, a worker's stderr) go to the service's log
//! under a request id, never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use symbiont_runtime::models::{ResourceLimit, SlmRunnerError};
use utoipa::ToSchema;

/// A refused or failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The OpenAI error `type`.
    pub kind: &'static str,
    /// A stable, documented code.
    pub code: &'static str,
    /// For the client: what was wrong, without internal details.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (429).
    pub retry_after: Option<u64>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// For people.
    pub message: String,
    /// The class: `invalid_request_error`, `authentication_error`,
    /// `permission_error`, `not_found_error`, `rate_limit_error`,
    /// `timeout_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// Stable code for programs, such as `model_not_found`.
    pub code: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or an option is out of range.
    pub fn bad_request(
        code: &'static str,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            param: param.map(str::to_string),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                code,
                message.into(),
            )
        }
    }

    /// 400 `prompt_too_large`: `what` (field `param`) holds `bytes`
    /// bytes of text, more than `max` (`slm.service.max_prompt_bytes`).
    pub fn prompt_too_large(param: &str, what: &str, bytes: u64, max: u64) -> Self {
        Self::bad_request(
            "prompt_too_large",
            Some(param),
            format!(
                "{what}: {bytes} bytes of text, more than {max} (slm.service.max_prompt_bytes)"
            ),
        )
    }

    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message.into(),
        )
    }

    /// 403 for something no token of this request's kind may see.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            code,
            message.into(),
        )
    }

    /// 404 for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "unknown_url",
            format!("no endpoint at {path} (see /openapi.json)"),
        )
    }

    /// 413.
    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("the request body is larger than {limit} bytes (slm.service.max_body_bytes)"),
        )
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(within: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            format!(
                "the request body did not arrive within {} s (slm.service.body_timeout_seconds)",
                within.as_secs()
            ),
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)".into(),
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                code,
                message.into(),
            )
        }
    }

    /// 500/503 whose details stay in the log: the client gets the request
    /// id to quote.
    pub fn internal(status: StatusCode, code: &'static str, what: &str, request_id: &str) -> Self {
        Self::new(
            status,
            "server_error",
            code,
            format!("{what}; the service log has the details under request id {request_id}"),
        )
    }

    /// The error a runner's failure becomes. Failures of the host side are
    /// logged here with `request_id` and answered without their details.
    pub fn from_runner(e: SlmRunnerError, request_id: &str) -> Self {
        match e {
            SlmRunnerError::UnknownModel { model_id } => Self::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "model_not_found",
                format!("the model `{model_id}` does not exist"),
            ),
            SlmRunnerError::AccessDenied {
                agent_id,
                model_id,
                ..
            } => Self {
                param: Some("model".into()),
                ..Self::new(
                    StatusCode::FORBIDDEN,
                    "permission_error",
                    "model_access_denied",
                    format!("agent `{agent_id}` may not use the model `{model_id}`"),
                )
            },
            SlmRunnerError::InvalidInput { field, reason } => {
                Self::bad_request("invalid_value", Some(field), format!("{field}: {reason}"))
            }
            e @ SlmRunnerError::ContextLengthExceeded { .. } => {
                Self::bad_request("context_length_exceeded", Some("prompt"), format!("prompt: {e}"))
            }
            SlmRunnerError::Overloaded {
                capacity,
                queued,
                retry_after,
            } => Self::too_many(
                "model_overloaded",
                format!(
                    "the model's queue is full ({queued} waiting, {capacity} may run or wait at once)"
                ),
                retry_after.as_secs_f64().ceil() as u64,
            ),
            SlmRunnerError::ExecutionTimeout { seconds } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "timeout",
                format!("the request ran out of time after {seconds:.1} s and was stopped"),
            ),
            SlmRunnerError::ResourceLimitExceeded {
                limit: limit @ (ResourceLimit::ContextSize | ResourceLimit::MaxTokens),
                detail,
            } => Self::bad_request(
                "context_length_exceeded",
                Some("messages"),
                format!("{limit}: {detail}"),
            ),
            SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::QueueCapacity,
                ..
            } => Self::too_many("model_overloaded", "the model's queue is full", 1),
            // A remote model's provider: the agent's own mistakes are a
            // 400 with the provider's words; the operator's (a refused
            // key, a wrong model name) a 502 whose details stay in the log.
            SlmRunnerError::Remote {
                status: 429, ..
            } => Self::too_many(
                "model_overloaded",
                "the remote model's provider is rate-limiting this runtime",
                1,
            ),
            SlmRunnerError::Remote {
                status: 400 | 413 | 422,
                detail,
                ..
            } => Self::bad_request(
                "invalid_value",
                None,
                format!("the remote model's provider refused the request: {detail}"),
            ),
            SlmRunnerError::Remote {
                status,
                endpoint,
                detail,
            } => {
                // The provider's words: cut and cleaned, on one line.
                let said = symbiont_runtime::audit::clean_text(&detail, 512).replace('\n', "⏎");
                tracing::error!(request_id, endpoint, status, "{said}");
                let (code, what) = match status {
                    401 | 403 => (
                        "upstream_authentication",
                        "the remote model's provider refused the runtime's key",
                    ),
                    _ => (
                        "upstream_error",
                        "the remote model's provider answered with an error",
                    ),
                };
                Self::internal(StatusCode::BAD_GATEWAY, code, what, request_id)
            }
            other => {
                let (status, code, what) = match &other {
                    SlmRunnerError::ResourceLimitExceeded { .. } => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "resource_limit",
                        "the model's worker reached a limit of its sandbox profile",
                    ),
                    SlmRunnerError::SandboxViolation { .. } => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "sandbox_violation",
                        "the model's worker was stopped by its sandbox",
                    ),
                    SlmRunnerError::WorkerCrashed { .. } => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "worker_crashed",
                        "the model's worker failed while running this request",
                    ),
                    _ => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model_unavailable",
                        "the model could not be run",
                    ),
                };
                tracing::error!(request_id, "{other}");
                Self::internal(status, code, what, request_id)
            }
        }
    }

    /// The body as sent (also inside a stream, as an SSE event).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.into(),
                param: self.param.clone(),
                code: self.code.into(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner's typed errors choose the status and code; nothing is
    /// read back from a message.
    #[test]
    fn typed_runner_errors_choose_status_and_code() {
        let e = ApiError::from_runner(
            SlmRunnerError::ContextLengthExceeded {
                prompt_tokens: 5001,
                context_size: 2048,
            },
            "r1",
        );
        assert_eq!(
            (e.status, e.code, e.param.as_deref()),
            (
                StatusCode::BAD_REQUEST,
                "context_length_exceeded",
                Some("prompt")
            )
        );
        assert!(
            e.message.contains("5001") && e.message.contains("2048"),
            "{}",
            e.message
        );
        // A prompt refused for another reason that happens to say
        // "context" stays an invalid value.
        let e = ApiError::from_runner(
            SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: "the context of this request is empty".into(),
            },
            "r2",
        );
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_value")
        );
        let e = ApiError::from_runner(
            SlmRunnerError::WorkerCrashed {
                cause: symbiont_runtime::models::WorkerLoss::Signalled { signal: 9 },
                stderr_tail: "/secret/path".into(),
            },
            "r3",
        );
        assert_eq!(e.status.as_u16() / 100, 5);
        assert!(!e.message.contains("/secret/path"), "{}", e.message);
    }
}
