//! `symbiont-service`: the HTTP face of symbiont-runtime, for agents in
//! any language.
//!
//! - **Who**: a bearer token proves an agent id (`[slm.service.agent_tokens]`
//!   holds their SHA-256); every model request goes through a runner
//!   bound to that agent (`ModelPool::for_agent(agent).runner(model, _)`),
//!   made after the pool checks the agent's allow-list and audits a
//!   refusal. Nothing here checks access on its own.
//! - **What**: the OpenAI-compatible API ([`openai`]), the native
//!   `POST /v1/execute` ([`native`]), `/health`, `/ready`, `/metrics`
//!   (Prometheus) and `/openapi.json`.
//! - **How much**: body and prompt size limits, concurrency per agent and
//!   in all ([`limits`]), the models' bounded queues behind them: every
//!   refusal is a 429 with `Retry-After`. A client that goes away cancels
//!   its generation (the handler's future, or the stream, is dropped).
//!
//! ```no_run
//! # async fn demo(pool: symbiont_runtime::models::ModelPool) -> std::io::Result<()> {
//! let service = symbiont_service::Service::new(pool);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! service.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod anthropic;
pub mod auth;
pub mod connection;
pub mod error;
mod generate;
pub mod limits;
mod live;
pub mod metrics;
pub mod native;
pub mod openai;
pub mod openapi;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use symbiont_runtime::audit::{self, AuditEvent, AuditKind};
use symbiont_runtime::config::ServiceSettings;
use symbiont_runtime::models::{
    AgentRunner, ExecutionMetadata, ExecutionOptions, ExecutionResult, ModelPool, SlmRunnerError,
    StreamEvent,
};

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::limits::{Limits, Permit};
pub use crate::live::{Current, Live};
use crate::metrics::{Metrics, RequestLabels};

/// A connection's buffer in the service, bytes: the most of a response
/// waiting for a slow client (beyond the kernel's socket buffer), and the
/// longest request head accepted.
const CONNECTION_BUFFER_BYTES: usize = 64 << 10;

/// The service: cheap to clone (an `Arc`). A handle is a snapshot of one
/// config: each request runs on the config in force when it came
/// ([`Current`]), and [`Service::reload`] puts a new one in force for the
/// requests after it.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Arc<Shared>,
    /// The config in force now, shared by every handle.
    live: Arc<std::sync::RwLock<Arc<Shared>>>,
    /// Set once the service drains (see [`Live::drain`]), whatever config
    /// is in force.
    draining: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    pool: ModelPool,
    settings: ServiceSettings,
    /// `[slm.service]` as the service started: what the socket was made
    /// with, whatever a reload says.
    socket: Arc<ServiceSettings>,
    profile: String,
    tokens: Tokens,
    /// Kept across reloads while their values stay.
    limits: Arc<Limits>,
    /// Counted across reloads.
    metrics: Arc<Metrics>,
    started: i64,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A non-loopback address with nothing to authenticate agents.
    #[error("refusing to listen on {addr}: it is not a loopback address and {why}")]
    UnsafeListen {
        /// The address.
        addr: SocketAddr,
        /// What is missing.
        why: &'static str,
    },
}

impl Service {
    /// A service over a pool, with the pool's config's `[slm.service]`.
    pub fn new(pool: ModelPool) -> Self {
        let shared = Arc::new(Shared::new(
            pool,
            Arc::new(Metrics::new()),
            jiff::Timestamp::now().as_second(),
        ));
        Self {
            live: Arc::new(std::sync::RwLock::new(shared.clone())),
            shared,
            draining: Arc::default(),
        }
    }

    /// The service on the config in force now.
    pub fn current(&self) -> Service {
        self.live().current()
    }

    /// A handle on the config in force that holds on to none (see
    /// [`Live`]).
    pub fn live(&self) -> Live {
        Live {
            current: self.live.clone(),
            draining: self.draining.clone(),
        }
    }

    /// [`Live::reload`].
    pub fn reload(&self, pool: ModelPool) -> Vec<&'static str> {
        self.live().reload(pool)
    }

    /// The pool the service runs models in.
    pub fn pool(&self) -> &ModelPool {
        &self.shared.pool
    }

    /// `[slm.service]`.
    pub fn settings(&self) -> &ServiceSettings {
        &self.shared.settings
    }

    /// The sandbox profile models run under.
    pub fn profile(&self) -> &str {
        &self.shared.profile
    }

    /// Unix time the service started.
    pub fn started(&self) -> i64 {
        self.shared.started
    }

    /// Refuses a non-loopback address while no agent token is configured,
    /// or while an anonymous agent is (anyone who can connect would be it).
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ServiceError> {
        if addr.ip().is_loopback() {
            return Ok(());
        }
        if !self.shared.tokens.any() {
            return Err(ServiceError::UnsafeListen {
                addr,
                why: "no agent token is configured ([slm.service.agent_tokens]; symbi-slm agents token AGENT makes one)",
            });
        }
        if self.shared.settings.anonymous_agent.is_some() {
            return Err(ServiceError::UnsafeListen {
                addr,
                why: "slm.service.anonymous_agent is set (anyone who can connect would act as that agent)",
            });
        }
        Ok(())
    }

    /// Every route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/v1/completions", post(openai::completions))
            .route("/v1/models", get(openai::models))
            .route("/v1/models/{*model}", get(openai::model))
            .route("/v1/embeddings", post(openai::embeddings))
            .route("/v1/messages", post(anthropic::messages))
            .route("/v1/execute", post(native::execute))
            .route("/health", get(native::health))
            .route("/ready", get(native::ready))
            .route("/metrics", get(native::metrics))
            .route("/v1/ps", get(native::ps))
            .route("/openapi.json", get(native::openapi))
            .fallback(|uri: Uri| async move { ApiError::no_route(uri.path()).into_response() })
            // Each request runs under its id: the audit events it causes,
            // wherever in the pool, carry it.
            .layer(axum::middleware::from_fn_with_state(
                self.live(),
                in_request,
            ))
            .with_state(self.live())
    }

    /// Serves on `listener` until `shutdown` resolves; then stops
    /// accepting, lets requests in progress finish for
    /// `shutdown_grace_seconds`, and returns (dropping the last handle on
    /// the pool stops its workers).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            self.check_listen(addr).map_err(std::io::Error::other)?;
        }
        let settings = self.shared.settings.clone();
        let metrics = self.shared.metrics.clone();
        let app = self.router();
        // From here on the service holds no config of its own: each
        // request takes the one in force (a reloaded one's predecessor
        // goes with its last request).
        drop(self);
        let grace = Duration::from_secs(settings.shutdown_grace_seconds);
        let header_timeout = Duration::from_secs(settings.header_timeout_seconds);
        let send_timeout = Duration::from_secs(settings.send_timeout_seconds);
        let connections = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
        let cap = settings.max_connections;
        let per_client = settings.max_connections_per_client;
        let clients = Arc::new(connection::PerClient::default());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors (or a connection reset before
                        // it was taken): wait instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                metrics.connection_refused();
                static LOGGED: symbiont_runtime::egress::Throttle =
                    symbiont_runtime::egress::Throttle::new();
                if let Some(more) = LOGGED.admit() {
                    tracing::warn!(%peer, "connection refused: {cap} connections are open (slm.service.max_connections; {more} more refused since the last line; symbi_slm_connections_refused_total counts them all)");
                }
                tokio::spawn(connection::refuse(tcp, "", "max_connections", cap));
                continue;
            };
            let Some(slot) = clients.admit(peer.ip(), per_client) else {
                metrics.connection_refused();
                static LOGGED: symbiont_runtime::egress::Throttle =
                    symbiont_runtime::egress::Throttle::new();
                if let Some(more) = LOGGED.admit() {
                    tracing::warn!(%peer, "connection refused: this client has {per_client} connections open (slm.service.max_connections_per_client; {more} more refused since the last line)");
                }
                tokio::spawn(connection::refuse(
                    tcp,
                    "from one client",
                    "max_connections_per_client",
                    per_client,
                ));
                continue;
            };
            // Tokens go out as small writes, one after another: without
            // TCP_NODELAY, Nagle's algorithm holds each behind the peer's
            // delayed ACK (up to 40 ms a token).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            // The header timeout covers a request's headers and a kept-
            // alive connection's wait for its next request; the send
            // timeout, a response the client does not take.
            let io = connection::SendDeadline::new(tcp, send_timeout);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                // What hyper holds of a response the client has not taken
                // (400 KiB by default), and the longest request head.
                .max_buf_size(CONNECTION_BUFFER_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _permits = (permit, slot);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "connection: {e}");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: no new connections; requests in progress may finish");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!("shutdown grace of {} s passed; stopping with requests still in progress", grace.as_secs());
            }
        }
        Ok(())
    }

    fn call(&self, endpoint: &'static str) -> Call {
        Call {
            // The id the request runs under (see `in_request`).
            id: audit::current_request_id()
                .map(|id| id.to_string())
                .unwrap_or_else(|| new_request_id(endpoint)),
            created: jiff::Timestamp::now().as_second(),
            started: Instant::now(),
            agent: String::new(),
            model: None,
            endpoint,
            status: None,
            done: None,
            armed: true,
            metrics: self.clone(),
        }
    }
}

/// A fresh request id, `chatcmpl-…`, `cmpl-…`, `msg-…` or `req-…` by
/// the path, then 24 hex digits. Random: a global counter would tell an
/// agent how busy the others are.
fn new_request_id(path: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut r = [0u8; 12];
    if getrandom::fill(&mut r).is_err() {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        r[..8].copy_from_slice(&n.to_le_bytes());
    }
    let prefix = match path {
        "/v1/chat/completions" => "chatcmpl",
        "/v1/completions" => "cmpl",
        "/v1/messages" => "msg",
        _ => "req",
    };
    format!(
        "{prefix}-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Runs a request under a fresh id (`audit::in_request`), which its
/// `Call` takes, its answer names (`x-request-id`) and its audit events
/// carry. While the service drains, each answer closes its connection
/// (`Connection: close`): a balancer's kept-alive connection is not
/// left to meet the closed socket after the drain.
async fn in_request(
    axum::extract::State(live): axum::extract::State<Live>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id: Arc<str> = new_request_id(req.uri().path()).into();
    let mut response = audit::in_request(id, next.run(req)).await;
    if live.draining() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// One request as the service sees it: who, which model, its status.
/// Counted once in the metrics when it ends (when dropped): with the status
/// it was answered with, or 499 when the client went away first.
pub(crate) struct Call {
    pub id: String,
    pub created: i64,
    started: Instant,
    pub agent: String,
    /// Set once the model is known to the catalog (label values come only
    /// from the config).
    model: Option<String>,
    endpoint: &'static str,
    status: Option<u16>,
    /// What the model did, when it did: tokens in and out, first token.
    done: Option<(u32, u32, Option<f64>)>,
    armed: bool,
    metrics: Service,
}

/// A refused token, audited like any refusal (the token never is: the
/// message says only what was wrong with it), counted and summarized past
/// a burst by the audit log itself.
pub(crate) fn audit_refusal(service: &Service, control: &str, endpoint: &str, e: &ApiError) {
    let event = AuditEvent::new(
        AuditKind::AuthenticationFailed,
        control,
        format!("{} {endpoint}: {}", e.code, e.message),
    );
    let to_file = service
        .shared
        .pool
        .catalog()
        .get_sandbox_profile(&service.shared.profile)
        .is_none_or(|p| p.security.enable_audit_logging);
    service.shared.pool.audit().record(&event, to_file);
}

impl Call {
    fn authenticate(&mut self, service: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
        self.agent = service.shared.tokens.agent(headers).inspect_err(|e| {
            audit_refusal(service, "slm.service.agent_tokens", self.endpoint, e)
        })?;
        Ok(())
    }

    /// The model's runner for this agent (access checked and audited by
    /// the pool) and a concurrency permit.
    async fn admit(
        &mut self,
        service: &Service,
        model: &str,
    ) -> Result<(AgentRunner, Permit), ApiError> {
        let pool = &service.shared.pool;
        if pool.catalog().get_model(model).is_some() {
            self.model = Some(model.to_string());
        }
        let runner = pool
            .for_agent(&self.agent)
            .runner(model, Some(&service.shared.profile))
            .await
            .map_err(|e| self.runner_error(service, e))?;
        let permit = service.shared.limits.admit(&self.agent)?;
        Ok((runner, permit))
    }

    /// A runner's error as the client gets it; counted in the metrics.
    fn runner_error(&mut self, service: &Service, e: SlmRunnerError) -> ApiError {
        let model = self.model.as_deref().unwrap_or("-");
        let m = &service.shared.metrics;
        match &e {
            SlmRunnerError::ResourceLimitExceeded { limit, .. } => {
                m.limit_hit(model, &format!("{limit:?}"))
            }
            SlmRunnerError::ExecutionTimeout { .. } => m.limit_hit(model, "ExecutionTime"),
            SlmRunnerError::SandboxViolation { .. } => m.sandbox_denial(model),
            _ => {}
        }
        ApiError::from_runner(e, &self.id)
    }

    fn completed(&mut self, service: &Service, r: &ExecutionResult) {
        self.completed_metadata(service, &r.metadata);
    }

    fn completed_metadata(&mut self, service: &Service, m: &ExecutionMetadata) {
        self.status = Some(200);
        self.done = Some((
            m.input_tokens.unwrap_or(0),
            m.output_tokens.unwrap_or(0),
            m.time_to_first_token_ms,
        ));
        let model = self.model.as_deref().unwrap_or("-");
        service.shared.metrics.completed(
            &self.agent,
            model,
            m,
            self.started.elapsed().as_secs_f64(),
        );
    }

    /// The response; its status is what the metrics count.
    fn respond(&mut self, result: Result<Response, ApiError>) -> Response {
        let mut response = result.unwrap_or_else(|e| e.into_response());
        // Every answer names its request: the id in the log line, the
        // audit events and the body.
        if let Ok(v) = axum::http::HeaderValue::from_str(&self.id) {
            response.headers_mut().insert("x-request-id", v);
        }
        // A stream's outcome is counted when the stream ends.
        if self.armed {
            self.status = Some(response.status().as_u16());
        }
        response
    }

    /// Starts `prompt` as a stream and waits for its first event, so that
    /// a refusal before it (a full queue, a deadline passed while queued)
    /// is still an HTTP status; then the duty to count the request moves
    /// to the stream (the returned `Call`), which holds the first event
    /// again at its head.
    async fn open_stream(
        &mut self,
        service: &Service,
        runner: &AgentRunner,
        prompt: &str,
        options: ExecutionOptions,
    ) -> Result<
        (
            Call,
            BoxStream<'static, Result<StreamEvent, SlmRunnerError>>,
        ),
        ApiError,
    > {
        let mut events = runner.execute_stream(prompt, Some(options));
        let first = match events.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(self.runner_error(service, e)),
            None => {
                return Err(ApiError::internal(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "stream_ended",
                    "the generation ended without a result",
                    &self.id,
                ))
            }
        };
        let events = futures::stream::once(async { Ok(first) }).chain(events);
        // Polled by the connection after the handler returned: under the
        // request's id still.
        let events = audit::stream_in_request(self.id.as_str().into(), events).boxed();
        Ok((self.hand_off(), events))
    }

    /// Moves the duty to count this request to a stream that outlives the
    /// handler.
    fn hand_off(&mut self) -> Call {
        self.armed = false;
        Call {
            id: self.id.clone(),
            created: self.created,
            started: self.started,
            agent: self.agent.clone(),
            model: self.model.clone(),
            endpoint: self.endpoint,
            status: None,
            done: None,
            armed: true,
            metrics: self.metrics.clone(),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let agent = if self.agent.is_empty() {
            "-".to_string()
        } else {
            self.agent.clone()
        };
        let model = self.model.clone().unwrap_or_else(|| "-".into());
        let status = self.status.unwrap_or(499);
        // One line per request, at the default level: an operator's view
        // of who asked for what and how it went (no prompt, no token).
        let (tokens_in, tokens_out, ttft) = self.done.unwrap_or((0, 0, None));
        // Refusals before any agent is known (a 401 flood from anyone who
        // can connect) are throttled like connection refusals; the
        // metrics count them all.
        static UNKNOWN: symbiont_runtime::egress::Throttle =
            symbiont_runtime::egress::Throttle::new();
        if status == 401 && UNKNOWN.admit().is_none() {
            self.metrics.shared.metrics.request(RequestLabels {
                agent,
                model,
                endpoint: self.endpoint.into(),
                status: status.to_string(),
            });
            return;
        }
        tracing::info!(
            target: "symbi_slm_request",
            request_id = %self.id,
            %agent,
            %model,
            endpoint = self.endpoint,
            status,
            tokens_in,
            tokens_out,
            first_token_ms = ttft.map(|t| (t * 10.0).round() / 10.0),
            total_ms = (self.started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            "request"
        );
        self.metrics.shared.metrics.request(RequestLabels {
            agent,
            model,
            endpoint: self.endpoint.into(),
            status: status.to_string(),
        });
    }
}

/// The request body as `T`, read only now (after the token was checked):
/// a 415 unless it is JSON, a 413 past the limit, a 400 naming the field
/// that does not parse.
async fn parse_body<T: DeserializeOwned>(
    service: &Service,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    // JSON only: a web page cannot send it to a local service without a
    // CORS preflight, which this service never answers.
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::unsupported_media_type());
    }
    let limit = service.shared.settings.max_body_bytes;
    let within = Duration::from_secs(service.shared.settings.body_timeout_seconds);
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = tokio::time::timeout(within, read)
        .await
        .map_err(|_| ApiError::body_timeout(within))?
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::body_too_large(limit)
            } else {
                ApiError::bad_request("invalid_body", None, format!("reading the body: {e}"))
            }
        })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path.as_str());
        let message = match param {
            Some(p) => format!("{p}: {}", e.inner()),
            None => format!("the body is not a valid request: {}", e.inner()),
        };
        ApiError::bad_request("invalid_request", param, message)
    })
}
