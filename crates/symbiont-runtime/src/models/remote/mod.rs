//! Remote models: `OpenAI`, `Anthropic` and `Custom` (any OpenAI-compatible
//! endpoint) providers behind the same [`SlmRunner`] API, queue, metrics and
//! network policy as local models.
//!
//! - **Network.** Under a `Restricted` profile every connection goes
//!   through an egress proxy of the runner's own (the same
//!   `symbiont-egress` code that serves `sandbox exec`), on loopback with a
//!   random credential: the endpoint's host and port must be in the
//!   profile's `allowed_destinations` (checked when the runner is built,
//!   before any byte leaves, and again by the proxy on the address it
//!   connects to), bandwidth is capped, refusals are audited. A `None`
//!   profile refuses remote models; `Full` connects directly.
//! - **Keys** come from the runtime's environment only (`OPENAI_API_KEY`,
//!   `ANTHROPIC_API_KEY`, or the provider's `api_key_env`), are read once
//!   when the runner is built, sent as a header marked sensitive, and named
//!   (never shown) in errors.
//! - **Requests** always stream (so that time to first token is measured);
//!   `execute` collects the stream. Failures before the answer starts
//!   (connection refused, 429, 5xx) are retried, at most 3 attempts, after
//!   `Retry-After` or a doubling back-off, within the request's deadline.
//!   Token counts and the finish reason are the provider's own; a count it
//!   does not send stays unknown.

mod wire;

pub use wire::{SseParser, MAX_SSE_LINE};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::{ModelProvider, ModelResourceRequirements, NetworkAccessMode, SandboxProfile};
use crate::egress::{self, AuditRefusals, Kind, Proxy, ProxyStats};
use crate::models::stream::RequestStream;
use crate::models::{
    EmbeddingResult, ExecutionMetadata, ExecutionOptions, ExecutionResult, RunnerInfo, RunnerLoad,
    RunnerMetrics, SlmRunner, SlmRunnerError, StreamEvent,
};
use wire::Api;

/// Requests one remote runner sends at once.
pub const REMOTE_CONCURRENCY: usize = 16;
/// Requests that may wait for one of those.
pub const REMOTE_QUEUE: usize = 64;
/// Most bytes of one answer's stream.
const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of an error answer read.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Attempts for a request that fails before its answer starts.
const ATTEMPTS: u32 = 3;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Connecting to the endpoint (or the proxy's connecting onwards).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A model served by a remote endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RemoteRunner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    model_id: String,
    provider: &'static str,
    api: Api,
    url: reqwest::Url,
    destination: String,
    model_name: String,
    key_var: Option<String>,
    key: Option<Secret>,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: reqwest::Client,
    profile_name: String,
    profile: SandboxProfile,
    requirements: ModelResourceRequirements,
    egress: Option<EgressTask>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    counters: Mutex<RunnerMetrics>,
}

/// A key, kept only to take it out of error texts; never printed.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The runner's own egress proxy; stopped with the runner.
#[derive(Debug)]
struct EgressTask {
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for EgressTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn init(reason: String) -> SlmRunnerError {
    SlmRunnerError::InitializationFailed { reason }
}

impl RemoteRunner {
    /// A runner for catalog model `model_id` of a remote `provider`, under
    /// profile `profile_name`. Reads the key from the environment; checks
    /// the endpoint against the profile's network policy (a refusal is an
    /// error naming the destination and the profile, and an audit event);
    /// starts the egress proxy of a `Restricted` profile. Nothing is sent.
    pub async fn new(
        model_id: &str,
        provider: &ModelProvider,
        profile_name: &str,
        profile: SandboxProfile,
        requirements: ModelResourceRequirements,
        audit: AuditLog,
    ) -> Result<Self, SlmRunnerError> {
        Self::build(
            model_id,
            provider,
            profile_name,
            profile,
            requirements,
            Some(audit),
        )
        .await
    }

    /// What [`RemoteRunner::new`] checks (the endpoint's URL, the key's
    /// variable, the profile's network policy), with no audit event and no
    /// proxy started: for readiness probes, which anyone may call often.
    pub async fn preflight(
        model_id: &str,
        provider: &ModelProvider,
        profile_name: &str,
        profile: SandboxProfile,
    ) -> Result<(), SlmRunnerError> {
        let requirements = ModelResourceRequirements::default();
        Self::build(
            model_id,
            provider,
            profile_name,
            profile,
            requirements,
            None,
        )
        .await
        .map(|_| ())
    }

    async fn build(
        model_id: &str,
        provider: &ModelProvider,
        profile_name: &str,
        profile: SandboxProfile,
        requirements: ModelResourceRequirements,
        audit: Option<AuditLog>,
    ) -> Result<Self, SlmRunnerError> {
        let join = |base: &str, path: &str| {
            let base = base.trim_end_matches('/');
            if base.ends_with(path) {
                base.to_string()
            } else {
                format!("{base}{path}")
            }
        };
        let (kind, api, url, model_name, key_var, key_needed) = match provider {
            ModelProvider::OpenAI {
                model_name,
                base_url,
                api_key_env,
            } => (
                "OpenAI",
                Api::OpenAi,
                join(
                    base_url.as_deref().unwrap_or("https://api.openai.com/v1"),
                    "/chat/completions",
                ),
                model_name.clone(),
                Some(
                    api_key_env
                        .clone()
                        .unwrap_or_else(|| "OPENAI_API_KEY".into()),
                ),
                true,
            ),
            ModelProvider::Anthropic {
                model_name,
                base_url,
                api_key_env,
            } => (
                "Anthropic",
                Api::Anthropic,
                join(
                    base_url.as_deref().unwrap_or("https://api.anthropic.com"),
                    "/v1/messages",
                ),
                model_name.clone(),
                Some(
                    api_key_env
                        .clone()
                        .unwrap_or_else(|| "ANTHROPIC_API_KEY".into()),
                ),
                true,
            ),
            ModelProvider::Custom {
                endpoint_url,
                model_name,
                api_key_env,
            } => (
                "Custom",
                Api::Compatible,
                join(endpoint_url, "/chat/completions"),
                model_name.clone().unwrap_or_else(|| model_id.to_string()),
                api_key_env.clone(),
                api_key_env.is_some(),
            ),
            other => {
                return Err(SlmRunnerError::InvalidInput {
                    field: "model",
                    reason: format!(
                        "model `{model_id}` has provider {}, which is not a remote endpoint",
                        other.kind()
                    ),
                })
            }
        };
        let url = reqwest::Url::parse(&url)
            .map_err(|e| init(format!("model `{model_id}`: endpoint URL {url}: {e}")))?;
        let (host, port) = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) if matches!(url.scheme(), "http" | "https") => (h.to_string(), p),
            _ => {
                return Err(init(format!(
                    "model `{model_id}`: endpoint URL {url} needs http(s), a host and a port"
                )))
            }
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_string)
            .unwrap_or(host);
        let destination = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };

        // The key: from the environment, never the config.
        let mut headers = Vec::new();
        let mut key = None;
        if let Some(var) = &key_var {
            match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => {
                    key = Some(Secret(k.trim().to_string()));
                    let (name, value) = match api {
                        Api::Anthropic => ("x-api-key", k.trim().to_string()),
                        _ => ("authorization", format!("Bearer {}", k.trim())),
                    };
                    let mut value = HeaderValue::from_str(&value).map_err(|_| {
                        init(format!(
                            "model `{model_id}`: the key in ${var} is not a valid header value"
                        ))
                    })?;
                    value.set_sensitive(true);
                    headers.push((HeaderName::from_static(name), value));
                }
                _ if key_needed => {
                    return Err(init(format!(
                        "model `{model_id}` ({kind}) needs its API key in the environment variable {var}, which is not set"
                    )))
                }
                _ => {}
            }
        }
        if api == Api::Anthropic {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(wire::ANTHROPIC_VERSION),
            ));
        }

        // The network policy decides before anything is sent.
        let refuse = |reason: String| {
            let event = AuditEvent::new(
                AuditKind::EgressRefused,
                "network.allowed_destinations",
                format!("model `{model_id}`: {reason}"),
            )
            .about(None, Some(model_id), Some(profile_name));
            if let Some(audit) = &audit {
                audit.record(&event, profile.security.enable_audit_logging);
            }
            SlmRunnerError::InvalidInput {
                field: "sandbox_profile",
                reason,
            }
        };
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        let (client, egress) = match profile.network.access_mode {
            NetworkAccessMode::Full => (builder.build(), None),
            // A preflight: the policy admits the endpoint; nothing starts.
            NetworkAccessMode::Restricted if audit.is_none() => {
                let policy = egress::policy_for(profile_name, &profile, None)
                    .ok_or_else(|| init("a Restricted profile without a policy".into()))?;
                let how = if url.scheme() == "https" { Kind::Tunnel } else { Kind::Http };
                if let Err(r) = policy.admits_name(&host, port, how) {
                    return Err(refuse(format!(
                        "remote model `{model_id}` cannot reach {}: {}",
                        r.destination, r.reason
                    )));
                }
                (builder.build(), None)
            }
            NetworkAccessMode::Restricted => {
                let policy = egress::policy_for(profile_name, &profile, None).ok_or_else(|| {
                    init("a Restricted profile without a policy".into())
                })?;
                let how = if url.scheme() == "https" {
                    Kind::Tunnel
                } else {
                    Kind::Http
                };
                if let Err(r) = policy.admits_name(&host, port, how) {
                    return Err(refuse(format!(
                        "remote model `{model_id}` cannot reach {}: {}",
                        r.destination, r.reason
                    )));
                }
                let (user, secret) = ("symbiont", random_secret()?);
                let proxy = Proxy::new(policy)
                    .observed_by(Arc::new(AuditRefusals::new(
                        audit.clone().unwrap_or_default(),
                        profile.security.enable_audit_logging,
                        Some(model_id.to_string()),
                    )))
                    .require_credential(user, &secret)
                    // Another local user cannot even hold a connection
                    // (issue 18, row 8).
                    .only_for_user(nix::unistd::geteuid().as_raw());
                let stats = proxy.stats();
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                    .await
                    .map_err(|e| init(format!("egress proxy: {e}")))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| init(format!("egress proxy: {e}")))?;
                let task = tokio::spawn(Arc::new(proxy).serve(listener));
                let via = reqwest::Proxy::all(format!("http://{addr}"))
                    .map_err(|e| init(format!("egress proxy: {e}")))?
                    .basic_auth(user, &secret);
                (builder.proxy(via).build(), Some(EgressTask { stats, task }))
            }
            _ => {
                return Err(refuse(format!(
                    "profile `{profile_name}` allows no network (access_mode = None): remote model `{model_id}` cannot reach {destination}; use a Restricted profile whose allowed_destinations list it"
                )))
            }
        };
        let client = client.map_err(|e| init(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model_id: model_id.to_string(),
                provider: kind,
                api,
                url,
                destination,
                model_name,
                key_var,
                key,
                headers,
                client,
                profile_name: profile_name.to_string(),
                profile,
                requirements,
                egress,
                slots: Arc::new(Semaphore::new(REMOTE_CONCURRENCY)),
                waiting: AtomicUsize::new(0),
                counters: Mutex::new(RunnerMetrics {
                    slots: REMOTE_CONCURRENCY,
                    ..RunnerMetrics::default()
                }),
            }),
        })
    }

    /// The endpoint's URL (no key in it).
    pub fn endpoint(&self) -> &str {
        self.inner.url.as_str()
    }

    /// The egress proxy's counters, under a `Restricted` profile.
    pub fn egress_stats(&self) -> Option<Arc<ProxyStats>> {
        self.inner.egress.as_ref().map(|e| e.stats.clone())
    }

    /// Counters, as local runners report them (no workers, no memory).
    pub fn metrics(&self) -> RunnerMetrics {
        let mut m = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        m.queued = self.inner.waiting.load(Ordering::Relaxed);
        m.slots_busy = REMOTE_CONCURRENCY - self.inner.slots.available_permits();
        if let Some(e) = &self.inner.egress {
            m.egress_refused = e.stats.refused.load(Ordering::Relaxed);
            m.egress_bytes_out = e.stats.bytes_out.load(Ordering::Relaxed);
            m.egress_bytes_in = e.stats.bytes_in.load(Ordering::Relaxed);
        }
        m
    }

    /// Slots and queue now.
    pub fn load(&self) -> RunnerLoad {
        RunnerLoad {
            slots: REMOTE_CONCURRENCY,
            busy: REMOTE_CONCURRENCY - self.inner.slots.available_permits(),
            queued: self.inner.waiting.load(Ordering::Relaxed),
            loaded: true,
            workers: 0,
        }
    }

    /// Runs a prompt and returns the whole answer.
    pub async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        crate::models::stream::collect(self.execute_stream(prompt, options)).await
    }

    /// Runs a prompt and streams its text, ending with
    /// [`StreamEvent::Done`]. Dropping the stream closes the connection.
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send + 'static {
        let inner = self.inner.clone();
        let prompt = prompt.to_string();
        RequestStream::new(move |text| async move {
            inner
                .run(&prompt, options.unwrap_or_default(), move |t| text.push(t))
                .await
        })
    }
}

fn random_secret() -> Result<String, SlmRunnerError> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b)
        .map_err(|e| init(format!("no randomness for the proxy credential: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Inner {
    fn count(&self, f: impl FnOnce(&mut RunnerMetrics)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn run(
        &self,
        prompt: &str,
        options: ExecutionOptions,
        mut on_text: impl FnMut(String),
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let started = Instant::now();
        let mut result = self.run_inner(prompt, options, &mut on_text, started).await;
        self.count(|m| match &result {
            Ok(r) => {
                m.requests_ok += 1;
                m.input_tokens += u64::from(r.metadata.input_tokens.unwrap_or(0));
                m.cached_tokens += u64::from(r.metadata.cached_tokens.unwrap_or(0));
                m.output_tokens += u64::from(r.metadata.output_tokens.unwrap_or(0));
            }
            Err(SlmRunnerError::Overloaded { .. }) => m.requests_overloaded += 1,
            Err(_) => m.requests_failed += 1,
        });
        // The provider's prompt cache is shared by every agent that uses
        // this runner's key: its count would tell one agent what another
        // sent (issue 18, row 6). Dropped (after the runner's own count).
        if let Ok(r) = &mut result {
            r.metadata.cached_tokens = None;
        }
        result
    }

    async fn run_inner(
        &self,
        prompt: &str,
        options: ExecutionOptions,
        on_text: &mut impl FnMut(String),
        started: Instant,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        options.validate()?;
        if options.prompt_mode != crate::models::PromptMode::Chat {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt_mode",
                reason: "a remote model answers chat messages only (no raw completion)".into(),
            });
        }
        let max = Duration::from_secs(self.profile.process_limits.max_execution_time_seconds);
        let limit = options.timeout.unwrap_or(max).min(max);
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = || SlmRunnerError::ExecutionTimeout {
            seconds: limit.as_secs_f64(),
        };
        let body = wire::body(self.api, &self.model_name, prompt, &options)?;

        // A slot, or a place in the bounded queue.
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
        if queued >= REMOTE_QUEUE && self.slots.available_permits() == 0 {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(SlmRunnerError::Overloaded {
                capacity: REMOTE_CONCURRENCY + REMOTE_QUEUE,
                queued,
                retry_after: Duration::from_secs(1),
            });
        }
        let waited = Instant::now();
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = match permit {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(SlmRunnerError::ExecutionFailed {
                    reason: "the runner is closing".into(),
                })
            }
            Err(_) => return Err(timed_out()),
        };
        let wait_ms = waited.elapsed().as_secs_f64() * 1000.0;
        self.count(|m| {
            m.admitted += 1;
            m.queue_wait_ms_total += wait_ms;
            m.queue_wait_ms_max = m.queue_wait_ms_max.max(wait_ms);
        });

        let response = self.send(&body, deadline, &timed_out).await?;
        self.read(response, deadline, on_text, started, &timed_out)
            .await
    }

    /// Sends the request; retries what failed before an answer started
    /// (nothing of an answer was read, so nothing is repeated that was
    /// generated for this caller). A wait that would pass the deadline
    /// gives the failure that caused it, not a timeout.
    async fn send(
        &self,
        body: &serde_json::Value,
        deadline: tokio::time::Instant,
        timed_out: &impl Fn() -> SlmRunnerError,
    ) -> Result<reqwest::Response, SlmRunnerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.client.post(self.url.clone()).json(body);
            for (k, v) in &self.headers {
                req = req.header(k, v.clone());
            }
            let last = attempt >= ATTEMPTS;
            let refused_before = self.refusals();
            let (error, wait) = match tokio::time::timeout_at(deadline, req.send()).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    let text = self.redact(&error_chain(&e));
                    // A CONNECT the egress proxy refused (the client sees
                    // only that the tunnel failed; the proxy counted it).
                    if e.is_connect() && self.refusals() > refused_before {
                        return Err(self.refused_by_proxy(&text));
                    }
                    let error = SlmRunnerError::ExecutionFailed {
                        reason: format!(
                            "model `{}`: cannot reach {}: {text}",
                            self.model_id, self.destination
                        ),
                    };
                    if last || !(e.is_connect() || e.is_timeout()) {
                        return Err(error);
                    }
                    (error, backoff(attempt, None))
                }
                Ok(Ok(r)) if r.status().is_success() => return Ok(r),
                Ok(Ok(r)) => {
                    let status = r.status().as_u16();
                    let egress = r
                        .headers()
                        .get("x-symbiont-egress")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(MAX_BACKOFF.as_secs_f64())));
                    let text = self.redact(&read_capped(r, deadline).await);
                    // Only the runner's own proxy says this (a destination
                    // reached without one could send the header too).
                    let egress = egress.filter(|_| self.egress.is_some());
                    let short: String = text.trim().chars().take(300).collect();
                    match egress.as_deref() {
                        // Our proxy refused (plain http://): a policy
                        // decision, not repeated.
                        Some("refused") => return Err(self.refused_by_proxy(&short)),
                        // Our proxy could not connect onwards: as a
                        // connection failure.
                        Some(_) if status == 502 => {
                            let error = SlmRunnerError::ExecutionFailed {
                                reason: format!(
                                    "model `{}`: cannot reach {}: {short}",
                                    self.model_id, self.destination
                                ),
                            };
                            if last {
                                return Err(error);
                            }
                            (error, backoff(attempt, None))
                        }
                        _ => {
                            let error = self.failure(status, &text);
                            let retryable =
                                matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529);
                            if last || !retryable {
                                return Err(error);
                            }
                            (error, backoff(attempt, after))
                        }
                    }
                }
            };
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Refusals the runner's egress proxy has made so far.
    fn refusals(&self) -> u64 {
        self.egress
            .as_ref()
            .map_or(0, |e| e.stats.refused.load(Ordering::Relaxed))
    }

    /// `text` without the key, should a provider or a library quote it.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) if !k.0.is_empty() => text.replace(k.0.as_str(), "[key]"),
            _ => text.to_string(),
        }
    }

    fn refused_by_proxy(&self, text: &str) -> SlmRunnerError {
        SlmRunnerError::SandboxViolation {
            control: "network.allowed_destinations".into(),
            detail: format!(
                "the egress proxy of profile `{}` refused model `{}`'s connection to {}: {text}",
                self.profile_name, self.model_id, self.destination
            ),
        }
    }

    /// The error an unsuccessful answer (`status`, its body `text`)
    /// becomes. A refused key is named by its variable only: the
    /// provider's words about it may quote the key, masked or not.
    fn failure(&self, status: u16, text: &str) -> SlmRunnerError {
        let detail = match (status, &self.key_var) {
            (401 | 403, Some(var)) => format!("the endpoint refused the key in ${var}"),
            (401 | 403, None) => "the endpoint wants a key (set api_key_env)".to_string(),
            _ => self.redact(
                &serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("error").map(wire::error_text))
                    .unwrap_or_else(|| {
                        text.chars()
                            .take(300)
                            .collect::<String>()
                            .trim()
                            .to_string()
                    }),
            ),
        };
        SlmRunnerError::Remote {
            endpoint: self.url.to_string(),
            status,
            detail,
        }
    }

    async fn read(
        &self,
        response: reqwest::Response,
        deadline: tokio::time::Instant,
        on_text: &mut impl FnMut(String),
        started: Instant,
        timed_out: &impl Fn() -> SlmRunnerError,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let failed = |reason: String| SlmRunnerError::ExecutionFailed {
            reason: format!("model `{}` ({}): {reason}", self.model_id, self.destination),
        };
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut text = String::new();
        let mut meta = ExecutionMetadata::default();
        let mut first: Option<Instant> = None;
        let mut bytes = 0usize;
        let mut done = false;
        let mut eof = false;
        while !done && !eof {
            let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => return Err(timed_out()),
                // The end: a last event without its blank line still counts.
                Ok(None) => {
                    eof = true;
                    bytes::Bytes::from_static(b"\n\n")
                }
                Ok(Some(Err(e))) => {
                    return Err(failed(format!(
                        "the answer broke off: {}",
                        self.redact(&error_chain(&e))
                    )))
                }
                Ok(Some(Ok(c))) => c,
            };
            bytes += chunk.len();
            if bytes > MAX_STREAM_BYTES {
                return Err(failed(format!(
                    "the answer is longer than {MAX_STREAM_BYTES} bytes"
                )));
            }
            for (event, data) in parser.feed(&chunk).map_err(&failed)? {
                let d = wire::delta(self.api, event.as_deref(), &data)
                    .map_err(|e| failed(self.redact(&e)))?;
                if let Some(t) = d.text {
                    first.get_or_insert_with(Instant::now);
                    text.push_str(&t);
                    on_text(t);
                }
                if d.input_tokens.is_some() {
                    meta.input_tokens = d.input_tokens;
                }
                if d.cached_tokens.is_some() {
                    meta.cached_tokens = d.cached_tokens;
                }
                if d.output_tokens.is_some() {
                    meta.output_tokens = d.output_tokens;
                }
                if d.finish.is_some() {
                    meta.finish_reason = d.finish;
                }
                if d.stop_sequence.is_some() {
                    meta.stop_sequence = d.stop_sequence;
                }
                done |= d.done;
            }
        }
        if meta.finish_reason.is_none() && !done {
            return Err(failed("the answer ended before its end was sent".into()));
        }
        let end = Instant::now();
        meta.execution_time_ms = (end - started).as_secs_f64() * 1000.0;
        meta.time_to_first_token_ms = first.map(|f| (f - started).as_secs_f64() * 1000.0);
        if let (Some(f), Some(n)) = (first, meta.output_tokens) {
            let secs = (end - f).as_secs_f64();
            if n > 1 && secs > 0.0 {
                meta.generation_tokens_per_second = Some(f64::from(n - 1) / secs);
            }
        }
        meta.sandbox_layers = vec![match &self.egress {
            Some(_) => format!(
                "remote ({}): {} only through the egress proxy of profile `{}`",
                self.provider, self.destination, self.profile_name
            ),
            None => format!(
                "remote ({}): {} without restriction (access_mode = Full)",
                self.provider, self.destination
            ),
        }];
        Ok(ExecutionResult {
            response: text,
            metadata: meta,
        })
    }
}

/// A reqwest error with its causes (never the request's headers).
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// At most [`MAX_ERROR_BYTES`] of an error answer, read until `deadline`
/// at the latest.
async fn read_capped(mut r: reqwest::Response, deadline: tokio::time::Instant) -> String {
    let mut out = Vec::new();
    while let Ok(Ok(Some(c))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        out.extend_from_slice(&c);
        if out.len() >= MAX_ERROR_BYTES {
            out.truncate(MAX_ERROR_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn backoff(attempt: u32, after: Option<Duration>) -> Duration {
    after
        .unwrap_or_else(|| Duration::from_millis(500) * 2u32.pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

#[async_trait::async_trait]
impl SlmRunner for RemoteRunner {
    async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        RemoteRunner::execute(self, prompt, options).await
    }

    fn execute_stream<'a>(
        &'a self,
        prompt: &'a str,
        options: Option<ExecutionOptions>,
    ) -> futures::stream::BoxStream<'a, Result<StreamEvent, SlmRunnerError>> {
        Box::pin(RemoteRunner::execute_stream(self, prompt, options))
    }

    async fn embed(
        &self,
        _text: &str,
        _options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        Err(SlmRunnerError::InvalidInput {
            field: "model",
            reason: format!(
                "model `{}` is remote; embeddings run on local models only",
                self.inner.model_id
            ),
        })
    }

    fn get_sandbox_profile(&self) -> &SandboxProfile {
        &self.inner.profile
    }

    fn get_resource_requirements(&self) -> &ModelResourceRequirements {
        &self.inner.requirements
    }

    /// Nothing to load: the endpoint is asked only by requests.
    async fn health_check(&self) -> Result<(), SlmRunnerError> {
        Ok(())
    }

    fn get_info(&self) -> RunnerInfo {
        let i = &self.inner;
        let mut model = std::collections::BTreeMap::new();
        model.insert("provider".into(), i.provider.into());
        model.insert("endpoint".into(), i.url.to_string());
        model.insert("model_name".into(), i.model_name.clone());
        RunnerInfo {
            runner_type: format!("remote-{}", i.provider.to_ascii_lowercase()),
            model_path: None,
            model,
            worker_version: None,
            loaded: true,
            sandbox_layers: Vec::new(),
            sandbox_gaps: Vec::new(),
        }
    }
}
