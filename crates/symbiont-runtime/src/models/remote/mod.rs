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

mod build;
mod request;
mod wire;

pub use wire::SseParser;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::{ModelProvider, ModelResourceRequirements, NetworkAccessMode, SandboxProfile};
use crate::egress::{self, AuditRefusals, Kind, Proxy, ProxyStats};
use crate::models::stream::REQUEST_EVENTS;
use crate::models::{
    EmbeddingResult, ExecutionMetadata, ExecutionOptions, ExecutionResult, RunnerInfo, RunnerLoad,
    RunnerMetrics, SlmRunner, SlmRunnerError, StreamEvent, ToolCall,
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
            cache_tokens: 0,
            cache_tokens_reserved: 0,
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
    ///
    /// The request runs in a task of its own, which hands the text on
    /// through a bounded channel (one task and one channel per token, as
    /// for a local model): its deadline, its slot among the runner's
    /// [`REMOTE_CONCURRENCY`] and its connection never wait for the
    /// reader, and a reader that leaves [`REQUEST_EVENTS`] events unread
    /// ends the request with `ResourceLimit::StreamBuffer`.
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(REQUEST_EVENTS + 1);
        let inner = self.inner.clone();
        let prompt = prompt.to_string();
        crate::audit::spawn_in_request(async move {
            let text = tx.clone();
            // One place stays free for the end; a full channel or a
            // reader gone stops the request.
            let run = inner.run(&prompt, options.unwrap_or_default(), move |e| {
                text.capacity() > 1 && text.try_send(Ok(e)).is_ok()
            });
            tokio::select! {
                end = run => {
                    let _ = tx.try_send(end.map(|r| StreamEvent::Done(Box::new(r))));
                }
                // The reader is gone: dropping `run` closes the connection.
                () = tx.closed() => {}
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
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
