//! `LocalGgufRunner`: runs a GGUF model in a supervised worker process.
//!
//! The supervisor (this module) never links llama.cpp. It checks the model
//! file's header itself, starts `symbi-slm-worker` on first use, sends it one
//! request at a time (FIFO, bounded queue), streams its tokens, enforces the
//! request's wall-clock limit (cancel, then kill the process group after a
//! grace period), turns a dead worker into `WorkerCrashed` and starts a fresh
//! one for the next request (backing off when crashes repeat), and stops an
//! idle worker after its keep-alive.
//!
//! Worker executable, first found wins: [`LocalGgufRunnerBuilder::worker_path`],
//! then `$SYMBI_SLM_WORKER` (absolute path), then `symbi-slm-worker` beside
//! the current executable (or beside its parent directory when that is
//! cargo's `deps/`). Never `$PATH`, never a relative path.

pub mod gguf;
mod model_file;
mod sandbox_plan;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use symbiont_slm_protocol::{
    Finish, FromWorker, GenerateRequest, GenerationStats, LaunchSpec, ModelFacts, RequestError,
    Sampling, ToWorker, MAX_PROMPT_BYTES, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

pub use gguf::{GgufError, GgufSummary};
pub use sandbox_plan::{
    exec_plan_for as sandbox_exec_plan_for, plan_for as sandbox_plan_for, sandbox_report,
};

use self::model_file::{open_model_file_blocking, resolve_model_path};
use self::worker::{Next, Worker};
use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::{ModelResourceRequirements, SandboxProfile};
use crate::models::{
    ChatRole, ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason, PromptMode,
    ResourceLimit, RunnerInfo, SlmRunner, SlmRunnerError,
};

/// Environment variable naming the worker executable (absolute path).
pub const WORKER_ENV: &str = "SYMBI_SLM_WORKER";
/// File name of the worker executable.
pub const WORKER_FILE: &str = "symbi-slm-worker";

/// Defaults, as llama.cpp's own tools use them where they have one.
pub mod defaults {
    use std::time::Duration;
    /// Idle time after which the worker exits.
    pub const KEEP_ALIVE: Duration = Duration::from_secs(300);
    /// Context size in tokens (capped by the model's trained context).
    pub const CONTEXT_SIZE: u32 = 2048;
    /// Prompt batch size.
    pub const BATCH_SIZE: u32 = 512;
    /// Requests waiting or running at once before `Overloaded`.
    pub const QUEUE_CAPACITY: usize = 64;
    /// Tokens generated when `max_tokens` is not given.
    pub const MAX_TOKENS: u32 = 512;
    /// Sampling temperature.
    pub const TEMPERATURE: f32 = 0.8;
    /// Top-k.
    pub const TOP_K: u32 = 40;
    /// Top-p.
    pub const TOP_P: f32 = 0.95;
    /// Min-p.
    pub const MIN_P: f32 = 0.05;
    /// Repeat penalty (1.0: off).
    pub const REPEAT_PENALTY: f32 = 1.0;
    /// Tokens the repeat penalty looks back over.
    pub const REPEAT_LAST_N: u32 = 64;
    /// How long a cancelled worker may take to answer before it is killed:
    /// `CANCEL_GRACE_STEPS` times the step it may be in the middle of, as
    /// measured on this worker (slowest recent, decaying): one generated
    /// token, or, while the request is still in its prompt, one prompt
    /// batch (the cost per prompt token × the batch's tokens); within
    /// `CANCEL_GRACE_MIN..=CANCEL_GRACE_MAX`. The worker looks for a cancel
    /// between two steps, so an honest worker answers within one step; a
    /// loaded host makes steps slower, and the grace follows. A hostile
    /// worker can stretch it to the maximum by decoding slowly, no further.
    pub const CANCEL_GRACE_MIN: Duration = Duration::from_millis(500);
    /// Upper bound of the cancel grace.
    pub const CANCEL_GRACE_MAX: Duration = Duration::from_secs(10);
    /// The grace in decode steps.
    pub const CANCEL_GRACE_STEPS: u32 = 4;
    /// The time per generated token assumed before a worker has been
    /// measured.
    pub const UNMEASURED_STEP: Duration = Duration::from_secs(1);
    /// The time per prompt token assumed before a worker has been measured
    /// (50 tokens/s, a slow host: a full prompt batch then gets the
    /// longest grace).
    pub const UNMEASURED_PROMPT_TOKEN: Duration = Duration::from_millis(20);
    /// How long loading the model may take.
    pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
}

/// One event of a streamed execution.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// Generated text (whole UTF-8 characters).
    Token(String),
    /// The end: the whole result with its metadata.
    Done(Box<ExecutionResult>),
}

/// Builds a [`LocalGgufRunner`] with non-default settings.
#[derive(Debug, Clone)]
pub struct LocalGgufRunnerBuilder {
    model_path: PathBuf,
    profile: SandboxProfile,
    requirements: ModelResourceRequirements,
    worker_path: Option<PathBuf>,
    keep_alive: Duration,
    context_size: u32,
    batch_size: u32,
    threads: Option<u32>,
    queue_capacity: usize,
    audit: AuditLog,
    labels: Option<(String, String)>,
}

impl LocalGgufRunnerBuilder {
    /// Where security events go (default: `tracing` only). The file gets
    /// them only when the profile has `enable_audit_logging = true`.
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.audit = log;
        self
    }
    /// The model id and profile name that audit events name (default: the
    /// model file's name, no profile name).
    pub fn labels(mut self, model_id: impl Into<String>, profile_name: impl Into<String>) -> Self {
        self.labels = Some((model_id.into(), profile_name.into()));
        self
    }
    /// The worker executable (absolute path).
    pub fn worker_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_path = Some(path.into());
        self
    }
    /// Idle time before the worker exits; zero unloads after each request.
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }
    /// Context size in tokens.
    pub fn context_size(mut self, n: u32) -> Self {
        self.context_size = n;
        self
    }
    /// Compute threads; default: the profile's `max_cpu_cores` rounded down
    /// (at least 1), capped at the machine's cores.
    pub fn threads(mut self, n: u32) -> Self {
        self.threads = Some(n);
        self
    }
    /// Requests that may wait or run at once.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Validates the model file and the settings; starts nothing.
    pub async fn build(mut self) -> Result<LocalGgufRunner, SlmRunnerError> {
        self.model_path = resolve_model_path(&self.model_path)?;
        let (_, summary) = open_model_file_blocking(&self.model_path).await?;
        let max_mb = self.profile.resources.max_memory_mb;
        let file_mb = summary.file_size.div_ceil(1024 * 1024);
        if file_mb > max_mb {
            return Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::Memory,
                detail: format!(
                    "the model file is {file_mb} MB, more than the profile's max_memory_mb = {max_mb}"
                ),
            });
        }
        if self.requirements.min_memory_mb > max_mb {
            return Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::Memory,
                detail: format!(
                    "the model needs min_memory_mb = {}, more than the profile's max_memory_mb = {max_mb}",
                    self.requirements.min_memory_mb
                ),
            });
        }
        if self.requirements.gpu_requirements.is_some() {
            return Err(SlmRunnerError::InvalidInput {
                field: "resource_requirements.gpu_requirements",
                reason:
                    "this runner is a CPU build; models that require a GPU are not supported yet"
                        .into(),
            });
        }
        if self.context_size < 16 || self.batch_size == 0 || self.queue_capacity == 0 {
            return Err(SlmRunnerError::InvalidInput {
                field: "runner settings",
                reason: format!(
                    "context_size {} (min 16), batch_size {}, queue_capacity {} (min 1)",
                    self.context_size, self.batch_size, self.queue_capacity
                ),
            });
        }
        // A profile built in code meets the same rules as one from a config
        // file: nothing the loader refuses runs through the builder.
        let issues = crate::config::check_sandbox_profile("sandbox_profile", &self.profile);
        if !issues.is_empty() {
            return Err(SlmRunnerError::InvalidInput {
                field: "sandbox_profile",
                reason: issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        let cores = self.profile.resources.max_cpu_cores;
        let allowed_threads = threads_for(cores);
        if cores < 1.0 && self.profile.security.strict_syscall_filtering {
            return Err(SlmRunnerError::SandboxViolation {
                control: "resources.max_cpu_cores".into(),
                detail: format!(
                    "max_cpu_cores = {cores} is less than one core, which needs cgroup cpu.max (not used); a strict profile refuses to run on a whole core"
                ),
            });
        }
        if let Some(n) = self.threads.filter(|&n| n > allowed_threads) {
            return Err(SlmRunnerError::InvalidInput {
                field: "threads",
                reason: format!(
                    "{n} threads exceed the profile's max_cpu_cores = {cores} ({allowed_threads} thread(s) on this host)"
                ),
            });
        }
        // A lenient profile below one core runs on one whole core: a gap,
        // reported like the layers the host cannot give.
        let mut host_gaps = Vec::new();
        if cores < 1.0 {
            host_gaps.push(HostGap {
                control: "resources.max_cpu_cores",
                text: format!(
                    "cpus: max_cpu_cores = {cores} runs on 1 whole CPU (a fraction needs cgroup cpu.max, not used)"
                ),
            });
        }
        if !sandbox_plan::threads_countable() {
            let text = "threads: not capped (RLIMIT_NPROC needs a user namespace of the worker's own and kernel 5.14 or later; here unprivileged user namespaces are disabled or restricted, or the kernel is older)".to_string();
            if self.profile.security.strict_syscall_filtering {
                return Err(SlmRunnerError::SandboxViolation {
                    control: "threads".into(),
                    detail: format!("{text}; a strict profile refuses to run so"),
                });
            }
            host_gaps.push(HostGap {
                control: "threads",
                text,
            });
        }
        let worker_path = find_worker(self.worker_path.as_deref())?;
        let threads = self.threads.unwrap_or(allowed_threads);
        // Refuse a profile the sandbox cannot express now, not at first use.
        sandbox_plan::plan_for(&self.profile, &self.model_path, None, threads)?;
        let (model_label, profile_label) = match self.labels {
            Some((m, p)) => (m, Some(p)),
            None => (
                self.model_path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None,
            ),
        };
        Ok(LocalGgufRunner {
            shared: Arc::new(Shared {
                audit: self.audit,
                model_label,
                profile_label,
                model_path: self.model_path,
                profile: self.profile,
                requirements: self.requirements,
                summary,
                worker_path,
                keep_alive: self.keep_alive,
                context_size: self.context_size,
                batch_size: self.batch_size,
                threads: threads.max(1),
                host_gaps,
                queue_capacity: self.queue_capacity,
                slot: Mutex::new(Slot::default()),
                pending: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                facts: StdMutex::new(None),
            }),
        })
    }
}

/// Threads for a CPU budget: whole cores only (fractions round down, at
/// least one), never more than the machine has.
pub fn threads_for(max_cpu_cores: f32) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    (max_cpu_cores.floor() as u32).clamp(1, cores.max(1))
}

/// Runs a GGUF model through llama.cpp in a supervised worker process.
///
/// Cheap to clone (an `Arc`); every clone shares the worker and its queue.
#[derive(Debug, Clone)]
pub struct LocalGgufRunner {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    audit: AuditLog,
    model_label: String,
    profile_label: Option<String>,
    model_path: PathBuf,
    profile: SandboxProfile,
    requirements: ModelResourceRequirements,
    summary: GgufSummary,
    worker_path: PathBuf,
    keep_alive: Duration,
    context_size: u32,
    batch_size: u32,
    threads: u32,
    /// Controls of the profile the supervisor knows are not enforced here
    /// (beside the layers the worker reports).
    host_gaps: Vec<HostGap>,
    queue_capacity: usize,
    /// The worker, behind a FIFO-fair lock: one request at a time, in order.
    slot: Mutex<Slot>,
    /// Requests waiting or running.
    pending: AtomicUsize,
    next_id: AtomicU64,
    /// Facts of the last loaded model, for `get_info`.
    facts: StdMutex<Option<ModelFacts>>,
}

/// A control of the profile the supervisor knows is not enforced here.
#[derive(Debug, Clone)]
struct HostGap {
    /// The control, as audit events name it.
    control: &'static str,
    /// What is not enforced, and why.
    text: String,
}

#[derive(Debug, Default)]
struct Slot {
    worker: Option<Worker>,
    /// Crashes in a row, for back-off.
    crashes: u32,
    last_crash: Option<Instant>,
    /// Bumped on every use; the keep-alive timer compares it.
    uses: u64,
    /// The request the worker is running, while a caller follows it; left
    /// set when the caller's future is dropped mid-request.
    in_flight: Option<u64>,
}

impl LocalGgufRunner {
    /// Checks the model file (exists, regular, readable, sane GGUF header)
    /// and that it fits the profile's memory limit. Nothing is started: the
    /// model loads on first use.
    pub async fn new(
        model_path: impl AsRef<Path>,
        sandbox_profile: SandboxProfile,
        resource_requirements: ModelResourceRequirements,
    ) -> Result<Self, SlmRunnerError> {
        Self::builder(model_path, sandbox_profile, resource_requirements)
            .build()
            .await
    }

    /// A builder for non-default settings.
    pub fn builder(
        model_path: impl AsRef<Path>,
        sandbox_profile: SandboxProfile,
        resource_requirements: ModelResourceRequirements,
    ) -> LocalGgufRunnerBuilder {
        LocalGgufRunnerBuilder {
            model_path: model_path.as_ref().to_path_buf(),
            profile: sandbox_profile,
            requirements: resource_requirements,
            worker_path: None,
            keep_alive: defaults::KEEP_ALIVE,
            context_size: defaults::CONTEXT_SIZE,
            batch_size: defaults::BATCH_SIZE,
            threads: None,
            queue_capacity: defaults::QUEUE_CAPACITY,
            audit: AuditLog::tracing_only(),
            labels: None,
        }
    }

    /// What the supervisor read from the model file's header.
    pub fn model_summary(&self) -> &GgufSummary {
        &self.shared.summary
    }

    /// The worker executable this runner starts.
    pub fn worker_path(&self) -> &Path {
        &self.shared.worker_path
    }

    /// Compute threads the worker uses.
    pub fn threads(&self) -> u32 {
        self.shared.threads
    }

    /// Runs one prompt to completion (the same as [`SlmRunner::execute`],
    /// callable without the trait in scope).
    pub async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        self.shared
            .run(prompt, options.unwrap_or_default(), |_| true)
            .await
    }

    /// Loads the model now instead of on first use.
    pub async fn preload(&self) -> Result<(), SlmRunnerError> {
        let deadline = Instant::now() + defaults::LOAD_TIMEOUT;
        let mut slot = self.shared.slot.lock().await;
        self.shared.ensure_worker(&mut slot, deadline).await?;
        slot.uses += 1;
        self.shared.arm_keep_alive(&mut slot).await;
        Ok(())
    }

    /// The pid of the running worker, if one is loaded.
    pub async fn worker_pid(&self) -> Option<u32> {
        self.shared
            .slot
            .lock()
            .await
            .worker
            .as_ref()
            .map(Worker::pid)
    }

    /// Runs a prompt and streams its text; the stream ends with
    /// [`StreamEvent::Done`] or an error. Dropping the stream cancels the
    /// generation.
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        let prompt = prompt.to_string();
        tokio::spawn(async move {
            let token_tx = tx.clone();
            let result = shared
                .run(&prompt, options.unwrap_or_default(), move |t| {
                    token_tx.send(Ok(StreamEvent::Token(t.to_string()))).is_ok()
                })
                .await;
            let _ = tx.send(result.map(|r| StreamEvent::Done(Box::new(r))));
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
    }
}

#[async_trait]
impl SlmRunner for LocalGgufRunner {
    async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        LocalGgufRunner::execute(self, prompt, options).await
    }

    fn get_sandbox_profile(&self) -> &SandboxProfile {
        &self.shared.profile
    }

    fn get_resource_requirements(&self) -> &ModelResourceRequirements {
        &self.shared.requirements
    }

    /// Loads the model if needed, then pings the worker.
    async fn health_check(&self) -> Result<(), SlmRunnerError> {
        let deadline = Instant::now() + defaults::LOAD_TIMEOUT;
        let mut slot = self.shared.slot.lock().await;
        self.shared.ensure_worker(&mut slot, deadline).await?;
        let nonce = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let ping_deadline = Instant::now() + Duration::from_secs(5);
        let result = {
            let w = slot
                .worker
                .as_mut()
                .ok_or_else(|| SlmRunnerError::InitializationFailed {
                    reason: "no worker".into(),
                })?;
            w.send(&ToWorker::Ping { nonce }).await?;
            loop {
                match w.next(ping_deadline).await {
                    Next::Event(FromWorker::Pong { nonce: n }) if n == nonce => break Ok(()),
                    Next::Event(_) => continue,
                    Next::Lost(why) => break Err(w.crashed(&why).await),
                    Next::Deadline => {
                        break Err(SlmRunnerError::ExecutionFailed {
                            reason: "the worker did not answer a ping within 5 s".into(),
                        })
                    }
                }
            }
        };
        if result.is_err() {
            self.shared.discard_worker(&mut slot).await;
        } else {
            slot.uses += 1;
            self.shared.arm_keep_alive(&mut slot).await;
        }
        result
    }

    fn get_info(&self) -> RunnerInfo {
        let s = &self.shared;
        let facts = s.facts.lock().ok().and_then(|f| f.clone());
        let mut model = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                model.insert(k.to_string(), v);
            }
        };
        put("gguf_version", Some(s.summary.version.to_string()));
        put("architecture", s.summary.architecture.clone());
        put("name", s.summary.name.clone());
        put("tensors", Some(s.summary.tensor_count.to_string()));
        put("file_bytes", Some(s.summary.file_size.to_string()));
        put(
            "trained_context",
            s.summary.context_length.map(|c| c.to_string()),
        );
        put(
            "chat_template",
            Some(s.summary.has_chat_template.to_string()),
        );
        put("threads", Some(s.threads.to_string()));
        if let Some(f) = &facts {
            put("parameters", Some(f.parameters.to_string()));
            put("context_size", Some(f.context_size.to_string()));
            put("vocab_size", Some(f.vocab_size.to_string()));
            put("load_ms", Some(format!("{:.1}", f.load_ms)));
        }
        let loaded = s
            .slot
            .try_lock()
            .map(|slot| slot.worker.is_some())
            .unwrap_or(true);
        let mut sandbox_layers = Vec::new();
        let mut sandbox_gaps = Vec::new();
        if let Some(f) = &facts {
            set_sandbox_facts(&mut sandbox_layers, &mut sandbox_gaps, &f.sandbox);
            sandbox_gaps.extend(s.host_gaps.iter().map(|g| g.text.clone()));
            model.insert(
                "sandbox_setup_us".into(),
                f.sandbox.setup_micros.to_string(),
            );
        }
        RunnerInfo {
            runner_type: "LocalGgufRunner".into(),
            model_path: Some(s.model_path.clone()),
            model,
            worker_version: facts.map(|f| f.worker_version),
            loaded,
            sandbox_layers,
            sandbox_gaps,
        }
    }
}

/// Decrements the pending count when a request ends, however it ends.
struct PendingGuard<'a>(&'a AtomicUsize);
impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Records a security event about this runner's model and profile.
    fn audit(&self, kind: AuditKind, control: &str, detail: String, agent: Option<&str>) {
        let event = AuditEvent::new(kind, control, detail).about(
            agent,
            Some(&self.model_label),
            self.profile_label.as_deref(),
        );
        self.audit
            .record(&event, self.profile.security.enable_audit_logging);
    }

    /// Runs a request and records its security-relevant failure, if any.
    async fn run(
        self: &Arc<Self>,
        prompt: &str,
        options: ExecutionOptions,
        on_token: impl FnMut(&str) -> bool + Send,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let agent = options.agent_id.clone();
        let result = self.run_inner(prompt, options, on_token).await;
        if let Err(e) = &result {
            let event = match e {
                SlmRunnerError::WorkerCrashed { .. } => {
                    Some((AuditKind::WorkerCrash, "worker".to_string()))
                }
                SlmRunnerError::ResourceLimitExceeded { limit, .. } => {
                    Some((AuditKind::LimitHit, limit_key(*limit).to_string()))
                }
                SlmRunnerError::ExecutionTimeout { .. } => Some((
                    AuditKind::LimitHit,
                    "process_limits.max_execution_time_seconds".to_string(),
                )),
                SlmRunnerError::SandboxViolation { control, .. } => {
                    Some((AuditKind::Denial, control.clone()))
                }
                SlmRunnerError::Overloaded { .. } => {
                    Some((AuditKind::LimitHit, "queue_capacity".to_string()))
                }
                _ => None,
            };
            if let Some((kind, control)) = event {
                self.audit(kind, &control, e.to_string(), agent.as_deref());
            }
        }
        result
    }

    async fn run_inner(
        self: &Arc<Self>,
        prompt: &str,
        options: ExecutionOptions,
        mut on_token: impl FnMut(&str) -> bool + Send,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let started = Instant::now();
        let request = self.request(prompt, &options)?;
        let timeout = Duration::from_millis(request.timeout_ms);
        let deadline = started + timeout;
        let timeout_err = || SlmRunnerError::ExecutionTimeout {
            seconds: timeout.as_secs_f64(),
        };

        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.queue_capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(SlmRunnerError::Overloaded {
                capacity: self.queue_capacity,
            });
        }
        let _pending = PendingGuard(&self.pending);
        let mut slot = tokio::time::timeout_at(deadline, self.slot.lock())
            .await
            .map_err(|_| timeout_err())?;
        slot.uses += 1;

        let loaded_now = slot.worker.is_none();
        let load_ms = self.start_worker(&mut slot, deadline, timeout).await?;
        let mut model_load_ms = loaded_now.then_some(load_ms);
        // A request whose caller went away (its future dropped) may still
        // be running; between requests a worker may send nothing else. A
        // worker that cannot be brought back to idle is replaced, and this
        // request runs on the fresh one.
        let abandoned = slot.in_flight.take();
        if let Some(w) = slot.worker.as_mut() {
            if let Err((kind, detail)) = settle(w, abandoned).await {
                if let Some(mut w) = slot.worker.take() {
                    w.kill().await;
                }
                self.audit(kind, "worker protocol", detail, None);
                model_load_ms = Some(self.start_worker(&mut slot, deadline, timeout).await?);
            }
        }

        let mut request = request;
        request.timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .max(1) as u64;
        let id = request.id;
        let sandbox = slot
            .worker
            .as_ref()
            .map(|w| w.facts.sandbox.clone())
            .unwrap_or_else(|| symbiont_slm_protocol::Applied {
                layers: Vec::new(),
                setup_micros: 0,
            });
        slot.in_flight = Some(id);
        let mut outcome = self
            .drive(&mut slot, request.clone(), deadline, started, &mut on_token)
            .await;
        if let Err(Failure::Stale(why)) = &outcome {
            // The worker sent something between requests that we read only
            // now: it is gone (killed in `drive`); this request, of which
            // nothing has reached the caller, runs once on a fresh worker.
            self.audit(AuditKind::Kill, "worker protocol", why.clone(), None);
            model_load_ms = Some(self.start_worker(&mut slot, deadline, timeout).await?);
            outcome = self
                .drive(&mut slot, request, deadline, started, &mut on_token)
                .await;
        }
        slot.in_flight = None;
        let result = match outcome {
            Ok((text, stats, ttft, peak)) => {
                slot.crashes = 0;
                if stats.finish == Finish::Timeout {
                    Err(timeout_err())
                } else {
                    let mut r = result(text, stats, started, ttft, peak, model_load_ms);
                    set_sandbox_facts(
                        &mut r.metadata.sandbox_layers,
                        &mut r.metadata.sandbox_gaps,
                        &sandbox,
                    );
                    r.metadata
                        .sandbox_gaps
                        .extend(self.host_gaps.iter().map(|g| g.text.clone()));
                    Ok(r)
                }
            }
            Err(Failure::Timeout) => Err(timeout_err()),
            Err(Failure::Error(e)) => Err(e),
            Err(Failure::Stale(why)) => Err(SlmRunnerError::WorkerCrashed {
                status: why,
                stderr_tail: String::new(),
            }),
        };
        if let Err(SlmRunnerError::WorkerCrashed { .. }) = &result {
            slot.crashes += 1;
            slot.last_crash = Some(Instant::now());
            tracing::warn!(request = id, "worker crashed");
        }
        self.arm_keep_alive(&mut slot).await;
        result
    }

    /// Resolves options into a worker request, refusing what cannot be
    /// honoured.
    fn request(
        &self,
        prompt: &str,
        o: &ExecutionOptions,
    ) -> Result<GenerateRequest, SlmRunnerError> {
        o.validate()?;
        if let Some(name) = o.custom_parameters.keys().next() {
            return Err(SlmRunnerError::InvalidInput {
                field: "custom_parameters",
                reason: format!("LocalGgufRunner knows no custom parameter `{name}`"),
            });
        }
        if prompt.is_empty() {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: "the prompt is empty".into(),
            });
        }
        let total = prompt.len() + o.history.iter().map(|m| m.content.len()).sum::<usize>();
        if total > MAX_PROMPT_BYTES {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt",
                reason: format!(
                    "the prompt (with its history) is {total} bytes, more than the {MAX_PROMPT_BYTES} allowed"
                ),
            });
        }
        if !o.history.is_empty() && o.prompt_mode == PromptMode::Raw {
            return Err(SlmRunnerError::InvalidInput {
                field: "history",
                reason: "a conversation history needs the chat template; PromptMode::Raw takes one prompt".into(),
            });
        }
        if let Some(i) = o
            .history
            .iter()
            .skip(1)
            .position(|m| m.role == ChatRole::System)
        {
            return Err(SlmRunnerError::InvalidInput {
                field: "history",
                reason: format!("turn {} is a system turn; only the first may be", i + 1),
            });
        }
        let max_secs = self.profile.process_limits.max_execution_time_seconds;
        let limit = Duration::from_secs(max_secs);
        let timeout = o.timeout.unwrap_or(limit);
        if timeout > limit {
            return Err(SlmRunnerError::InvalidInput {
                field: "timeout",
                reason: format!(
                    "{:.1} s exceeds the profile's max_execution_time_seconds = {max_secs}",
                    timeout.as_secs_f64()
                ),
            });
        }
        let seed = o.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0)
        });
        Ok(GenerateRequest {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            prompt: prompt.to_string(),
            chat: o.prompt_mode == PromptMode::Chat,
            history: o
                .history
                .iter()
                .map(|m| symbiont_slm_protocol::ChatMessage {
                    role: m.role.as_str().into(),
                    content: m.content.clone(),
                })
                .collect(),
            max_tokens: o.max_tokens.unwrap_or(defaults::MAX_TOKENS),
            sampling: Sampling {
                temperature: o.temperature.unwrap_or(defaults::TEMPERATURE),
                top_k: o.top_k.unwrap_or(defaults::TOP_K),
                top_p: o.top_p.unwrap_or(defaults::TOP_P),
                min_p: o.min_p.unwrap_or(defaults::MIN_P),
                repeat_penalty: o.repeat_penalty.unwrap_or(defaults::REPEAT_PENALTY),
                repeat_last_n: defaults::REPEAT_LAST_N,
                seed,
            },
            stop: o.stop.clone(),
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    /// [`Self::ensure_worker`] for a request: how long it took (ms); a
    /// failure once the request's deadline has passed is its timeout.
    async fn start_worker(
        &self,
        slot: &mut Slot,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<f64, SlmRunnerError> {
        let started = Instant::now();
        match self.ensure_worker(slot, deadline).await {
            Ok(()) => Ok(ms(started.elapsed())),
            Err(_) if Instant::now() >= deadline => Err(SlmRunnerError::ExecutionTimeout {
                seconds: timeout.as_secs_f64(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Starts a worker if none runs, backing off after repeated crashes.
    async fn ensure_worker(
        &self,
        slot: &mut Slot,
        deadline: Instant,
    ) -> Result<(), SlmRunnerError> {
        if let Some(w) = &slot.worker {
            // Retire a worker before a request could run into its lifetime
            // CPU backstop (RLIMIT_CPU): one request uses at most
            // threads × max_execution_time_seconds.
            let limit = sandbox_plan::cpu_backstop_seconds(&self.profile, self.threads) as f64;
            let one_request = (u64::from(self.threads)
                * self.profile.process_limits.max_execution_time_seconds)
                as f64;
            if w.cpu_seconds()
                .is_some_and(|used| used + one_request > limit)
            {
                if let Some(w) = slot.worker.take() {
                    w.shutdown().await;
                }
            } else {
                return Ok(());
            }
        }
        if slot.crashes >= 2 {
            let backoff = Duration::from_millis(250)
                .saturating_mul(1 << (slot.crashes - 2).min(5))
                .min(Duration::from_secs(8));
            if let Some(at) = slot.last_crash {
                let wait_until = at + backoff;
                if wait_until > deadline {
                    return Err(SlmRunnerError::InitializationFailed {
                        reason: format!(
                            "the worker crashed {} times in a row; next start in {:.1} s",
                            slot.crashes,
                            wait_until
                                .saturating_duration_since(Instant::now())
                                .as_secs_f64()
                        ),
                    });
                }
                tokio::time::sleep_until(wait_until).await;
            }
        }
        // Opened and checked again for every worker: the worker inherits
        // this descriptor and loads nothing else.
        let (model_file, summary) = open_model_file_blocking(&self.model_path).await?;
        if summary != self.summary {
            return Err(SlmRunnerError::InvalidModelFile {
                path: self.model_path.clone(),
                reason: format!(
                    "changed since the runner was built ({} bytes, {} tensors then; {} bytes, {} tensors now): build a new runner to load it",
                    self.summary.file_size,
                    self.summary.tensor_count,
                    summary.file_size,
                    summary.tensor_count
                ),
            });
        }
        let scratch = if self.profile.filesystem.allow_temp_files {
            Some(
                tempfile::Builder::new()
                    .prefix("symbi-slm-scratch-")
                    .tempdir()
                    .map_err(|source| SlmRunnerError::Io {
                        context: "creating the worker's scratch directory".into(),
                        source,
                    })?,
            )
        } else {
            None
        };
        let sandbox = sandbox_plan::plan_for(
            &self.profile,
            &self.model_path,
            scratch.as_ref().map(|d| d.path()),
            self.threads,
        )?;
        let spec = LaunchSpec {
            protocol_version: PROTOCOL_VERSION,
            model_path: self.model_path.clone(),
            threads: self.threads,
            context_size: self.context_size,
            batch_size: self.batch_size,
            supervisor_pid: std::process::id(),
            sandbox,
        };
        let load_deadline = deadline.min(Instant::now() + defaults::LOAD_TIMEOUT);
        match Worker::start(&self.worker_path, spec, model_file, scratch, load_deadline).await {
            Ok(w) => {
                if w.facts.protocol_version != PROTOCOL_VERSION {
                    return Err(SlmRunnerError::InitializationFailed {
                        reason: format!(
                            "worker speaks protocol {}, supervisor {PROTOCOL_VERSION}",
                            w.facts.protocol_version
                        ),
                    });
                }
                for gap in w.facts.sandbox.gaps() {
                    let why = gap.enforced.clone().err().unwrap_or_default();
                    self.audit(
                        AuditKind::SandboxGap,
                        &gap.name,
                        format!("not enforced on this host: {why}"),
                        None,
                    );
                }
                for gap in &self.host_gaps {
                    self.audit(
                        AuditKind::SandboxGap,
                        gap.control,
                        format!("not enforced on this host: {}", gap.text),
                        None,
                    );
                }
                if let Ok(mut f) = self.facts.lock() {
                    *f = Some(w.facts.clone());
                }
                slot.worker = Some(w);
                Ok(())
            }
            Err(e) => {
                if matches!(e, SlmRunnerError::WorkerCrashed { .. }) {
                    slot.crashes += 1;
                    slot.last_crash = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    async fn discard_worker(&self, slot: &mut Slot) {
        if let Some(mut w) = slot.worker.take() {
            w.kill().await;
        }
    }

    /// After a request: unload now (keep-alive 0) or arm the idle timer.
    async fn arm_keep_alive(self: &Arc<Self>, slot: &mut Slot) {
        if self.keep_alive.is_zero() {
            if let Some(w) = slot.worker.take() {
                w.shutdown().await;
            }
            return;
        }
        if slot.worker.is_none() {
            return;
        }
        let uses = slot.uses;
        let weak: Weak<Shared> = Arc::downgrade(self);
        let keep_alive = self.keep_alive;
        tokio::spawn(async move {
            tokio::time::sleep(keep_alive).await;
            let Some(shared) = weak.upgrade() else { return };
            let mut slot = shared.slot.lock().await;
            if slot.uses == uses {
                if let Some(w) = slot.worker.take() {
                    tracing::debug!("worker idle for {keep_alive:?}: unloading");
                    w.shutdown().await;
                }
            }
        });
    }

    /// Sends the request and follows it to its end.
    async fn drive(
        &self,
        slot: &mut Slot,
        request: GenerateRequest,
        deadline: Instant,
        started: Instant,
        on_token: &mut (impl FnMut(&str) -> bool + Send),
    ) -> Result<(String, GenerationStats, Option<f64>, Option<u64>), Failure> {
        let id = request.id;
        let max_tokens = request.max_tokens as usize;
        let w = slot.worker.as_mut().ok_or_else(|| {
            Failure::Error(SlmRunnerError::InitializationFailed {
                reason: "no worker".into(),
            })
        })?;
        if let Err(e) = w.send(&ToWorker::Generate(request)).await {
            slot.worker = None;
            return Err(Failure::Error(e));
        }
        let mut text = String::new();
        let mut ttft = None;
        let mut cancelled_at: Option<Instant> = None;
        // Step timing: when the prompt was tokenized (and its length), when
        // the last token arrived.
        let mut prompt_read: Option<(Instant, u32)> = None;
        let mut last_token_at: Option<Instant> = None;
        let batch = self.batch_size.max(1);
        // The grace fits the step the worker may be in when the cancel
        // goes out: a prompt batch, or one generated token.
        let grace_now = |w: &Worker, prompt: Option<(Instant, u32)>, last: Option<Instant>| {
            w.cancel_grace(match (prompt, last) {
                (Some((_, tokens)), None) => Some(tokens.min(batch)),
                _ => None,
            })
        };
        let mut grace = grace_now(w, prompt_read, last_token_at);
        // What an honest worker can send for this request, at most: no
        // more tokens than the request or the context allows.
        let (mut frames, frame_cap) = (0usize, max_tokens.min(self.context_size as usize) + 2);
        let byte_cap = frame_cap * worker::MAX_PIECE_BYTES;
        loop {
            // After a cancel, the worker gets a grace to answer.
            let wait_until = match cancelled_at {
                Some(at) => at + grace,
                None => deadline,
            };
            match w.next(wait_until).await {
                Next::Event(FromWorker::PromptRead {
                    id: i,
                    input_tokens,
                }) if i == id && prompt_read.is_none() && frames == 0 => {
                    prompt_read = Some((Instant::now(), input_tokens));
                }
                Next::Event(FromWorker::Token { id: i, text: t }) if i == id => {
                    frames += 1;
                    if frames > frame_cap
                        || t.len() > worker::MAX_PIECE_BYTES
                        || text.len() + t.len() > byte_cap
                    {
                        let why = format!(
                            "more text than max_tokens = {max_tokens} allows ({frames} pieces, {} bytes)",
                            text.len() + t.len()
                        );
                        let err = w.violated(&why).await;
                        slot.worker = None;
                        return Err(Failure::Error(err));
                    }
                    let now = Instant::now();
                    match (last_token_at, prompt_read) {
                        (Some(last), _) => w.observe_token(now - last),
                        // The first token: the whole prompt (and one
                        // sampling step, counted with it).
                        (None, Some((at, tokens))) => w.observe_prompt(now - at, tokens),
                        (None, None) => {}
                    }
                    last_token_at = Some(now);
                    ttft.get_or_insert_with(|| ms(started.elapsed()));
                    text.push_str(&t);
                    if cancelled_at.is_none() && !on_token(&t) {
                        // The consumer went away: stop generating.
                        cancelled_at = Some(Instant::now());
                        grace = grace_now(w, prompt_read, last_token_at);
                        let cancel = w.send(&ToWorker::Cancel { id }).await;
                        if let Err(e) = cancel {
                            slot.worker = None;
                            return Err(Failure::Error(e));
                        }
                    }
                }
                Next::Event(FromWorker::Done { id: i, stats }) if i == id => {
                    if stats.output_tokens as usize > max_tokens {
                        let why = format!(
                            "{} tokens reported for max_tokens = {max_tokens}",
                            stats.output_tokens
                        );
                        let err = w.violated(&why).await;
                        slot.worker = None;
                        return Err(Failure::Error(err));
                    }
                    let peak = w.peak_rss_bytes();
                    if cancelled_at.is_some_and(|_| Instant::now() >= deadline) {
                        return Err(Failure::Timeout);
                    }
                    return Ok((text, stats, ttft, peak));
                }
                Next::Event(FromWorker::Failed { id: i, error }) if i == id => {
                    return Err(Failure::Error(map_request_error(error)));
                }
                Next::Event(
                    other @ (FromWorker::Token { id: i, .. }
                    | FromWorker::Done { id: i, .. }
                    | FromWorker::Failed { id: i, .. }
                    | FromWorker::PromptRead { id: i, .. }),
                ) if i < id && text.is_empty() && prompt_read.is_none() => {
                    let why = format!(
                        "protocol violation: a message outside any request: {}; the worker was killed",
                        worker::describe(&other)
                    );
                    w.kill().await;
                    slot.worker = None;
                    return Err(Failure::Stale(why));
                }
                Next::Event(other) => {
                    // Nothing else belongs in a request: answers for other
                    // ids, a second Ready, pongs nobody asked for.
                    let why = format!(
                        "unexpected during request {id}: {}",
                        worker::describe(&other)
                    );
                    let err = w.violated(&why).await;
                    slot.worker = None;
                    return Err(Failure::Error(err));
                }
                Next::Lost(why) => {
                    // A frame the reader refused (too large, malformed) is
                    // the worker's doing: name it, whatever it exits with.
                    let err = if why.contains("protocol violation") || why.contains("malformed") {
                        w.violated(
                            why.trim_start_matches("I/O: ")
                                .trim_start_matches("protocol violation: "),
                        )
                        .await
                    } else {
                        w.crashed(&why).await
                    };
                    slot.worker = None;
                    return Err(Failure::Error(err));
                }
                Next::Deadline if cancelled_at.is_none() => {
                    cancelled_at = Some(Instant::now());
                    grace = grace_now(w, prompt_read, last_token_at);
                    if let Err(e) = w.send(&ToWorker::Cancel { id }).await {
                        slot.worker = None;
                        return Err(Failure::Error(e));
                    }
                }
                Next::Deadline => {
                    // No answer within the grace period: kill it.
                    tracing::warn!(
                        request = id,
                        pid = w.pid(),
                        "worker ignored cancel; killing its process group"
                    );
                    w.kill().await;
                    self.audit(
                        AuditKind::Kill,
                        "process_limits.max_execution_time_seconds",
                        format!(
                            "worker pid {} did not answer a cancel within {} ms (grace: {} × its slowest measured step); its process group was killed",
                            w.pid(),
                            grace.as_millis(),
                            defaults::CANCEL_GRACE_STEPS
                        ),
                        None,
                    );
                    slot.worker = None;
                    return if Instant::now() >= deadline {
                        Err(Failure::Timeout)
                    } else {
                        Err(Failure::Error(SlmRunnerError::ExecutionFailed {
                            reason: "the worker ignored a cancel and was killed".into(),
                        }))
                    };
                }
            }
        }
    }
}

/// Brings a worker back to idle before a request: an abandoned request is
/// cancelled and its remaining output discarded (within the cancel grace);
/// anything else waiting is a protocol violation, a closed output a crash.
/// `Err` names the audit kind and detail of a worker that must be replaced.
async fn settle(w: &mut Worker, abandoned: Option<u64>) -> Result<(), (AuditKind, String)> {
    if let Some(old) = abandoned {
        if w.send(&ToWorker::Cancel { id: old }).await.is_err() {
            return Err((
                AuditKind::WorkerCrash,
                "the worker's input closed while it ran an abandoned request".into(),
            ));
        }
        let until = Instant::now() + w.cancel_grace(None);
        loop {
            match w.next(until).await {
                Next::Event(
                    FromWorker::Token { id, .. } | FromWorker::PromptRead { id, .. },
                ) if id == old => {}
                Next::Event(FromWorker::Done { id, .. } | FromWorker::Failed { id, .. })
                    if id == old =>
                {
                    break
                }
                Next::Event(other) => {
                    return Err((
                        AuditKind::Kill,
                        format!(
                            "protocol violation: unexpected while request {old} was cancelled: {}; the worker was killed",
                            worker::describe(&other)
                        ),
                    ))
                }
                Next::Lost(why) => return Err((AuditKind::WorkerCrash, why)),
                Next::Deadline => {
                    return Err((
                        AuditKind::Kill,
                        format!("the worker did not stop abandoned request {old} within its cancel grace; its process group was killed"),
                    ))
                }
            }
        }
    }
    match w.between_requests() {
        None => Ok(()),
        Some(Next::Event(msg)) => Err((
            AuditKind::Kill,
            format!(
                "protocol violation: a message outside any request: {}; the worker was killed",
                worker::describe(&msg)
            ),
        )),
        Some(Next::Lost(why)) => Err((
            AuditKind::WorkerCrash,
            format!("the worker died between requests: {why}"),
        )),
        Some(Next::Deadline) => Ok(()),
    }
}

enum Failure {
    Timeout,
    /// The worker had sent a message for an earlier request, outside any
    /// request (a protocol violation); it has been killed, and nothing of
    /// this request reached the caller.
    Stale(String),
    /// Any other failure; a worker that broke the protocol has been killed
    /// and this is a `WorkerCrashed` naming the violation (audited as a
    /// worker crash, like any other).
    Error(SlmRunnerError),
}

/// Splits the applied layers into those in force and the gaps.
fn set_sandbox_facts(
    layers: &mut Vec<String>,
    gaps: &mut Vec<String>,
    applied: &symbiont_slm_protocol::Applied,
) {
    for l in &applied.layers {
        match &l.enforced {
            Ok(()) => layers.push(l.name.clone()),
            Err(why) => gaps.push(format!("{}: {why}", l.name)),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn map_request_error(e: RequestError) -> SlmRunnerError {
    match e {
        RequestError::PromptTooLong {
            tokens,
            context_size,
        } => SlmRunnerError::InvalidInput {
            field: "prompt",
            reason: format!(
                "the prompt is {tokens} tokens, longer than the context of {context_size} tokens allows"
            ),
        },
        RequestError::BadRequest { detail } => SlmRunnerError::InvalidInput {
            field: "request",
            reason: detail,
        },
        other => SlmRunnerError::ExecutionFailed {
            reason: other.to_string(),
        },
    }
}

fn result(
    response: String,
    stats: GenerationStats,
    started: Instant,
    ttft: Option<f64>,
    peak: Option<u64>,
    model_load_ms: Option<f64>,
) -> ExecutionResult {
    let (finish_reason, limits_hit) = match stats.finish {
        Finish::EndOfText | Finish::StopSequence => (FinishReason::Stop, vec![]),
        Finish::MaxTokens => (FinishReason::Length, vec![ResourceLimit::MaxTokens]),
        Finish::ContextFull => (FinishReason::Length, vec![ResourceLimit::ContextSize]),
        Finish::Cancelled => (FinishReason::Cancelled, vec![]),
        Finish::Timeout => (FinishReason::Timeout, vec![ResourceLimit::ExecutionTime]),
    };
    let per_second = |n: f64, ms: f64| (ms > 0.0 && n > 0.0).then(|| n * 1e3 / ms);
    ExecutionResult {
        response,
        metadata: ExecutionMetadata {
            input_tokens: Some(stats.input_tokens),
            output_tokens: Some(stats.output_tokens),
            execution_time_ms: ms(started.elapsed()),
            time_to_first_token_ms: ttft,
            prompt_tokens_per_second: per_second(stats.input_tokens as f64, stats.prompt_ms),
            // The first token's time belongs to the prompt; the rate counts
            // the tokens decoded after it.
            generation_tokens_per_second: per_second(
                stats.output_tokens.saturating_sub(1) as f64,
                stats.generation_ms,
            ),
            worker_time_ms: Some(stats.total_ms),
            model_load_ms,
            peak_memory_mb: peak.map(|b| b as f64 / (1024.0 * 1024.0)),
            finish_reason: Some(finish_reason),
            stop_sequence: stats.stop_sequence,
            limits_hit,
            sandbox_layers: Vec::new(),
            sandbox_gaps: Vec::new(),
        },
    }
}

/// Finds the worker executable (see the module docs for the order).
fn find_worker(explicit: Option<&Path>) -> Result<PathBuf, SlmRunnerError> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else if let Some(p) = std::env::var_os(WORKER_ENV).filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(WORKER_FILE));
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(up) = dir.parent() {
                    candidates.push(up.join(WORKER_FILE));
                }
            }
        }
    }
    for c in candidates {
        if !c.is_absolute() {
            tried.push(format!("{} (not absolute)", c.display()));
            continue;
        }
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(SlmRunnerError::InitializationFailed {
        reason: format!(
            "worker executable `{WORKER_FILE}` not found (tried: {}); build it with \
             `cargo build -p symbi-slm-worker`, or set ${WORKER_ENV} to its absolute path",
            if tried.is_empty() {
                "nothing".to_string()
            } else {
                tried.join(", ")
            }
        ),
    })
}

/// The config key a limit stands for, as audit events name it.
fn limit_key(limit: ResourceLimit) -> &'static str {
    match limit {
        ResourceLimit::Memory => "resources.max_memory_mb",
        ResourceLimit::CpuTime => "process_limits.max_execution_time_seconds (CPU time)",
        ResourceLimit::ExecutionTime => "process_limits.max_execution_time_seconds",
        ResourceLimit::Disk => "resources.max_disk_mb",
        ResourceLimit::FileSize => "filesystem.max_file_size_mb",
        ResourceLimit::ChildProcesses => "process_limits.max_child_processes",
        ResourceLimit::MaxTokens => "max_tokens",
        ResourceLimit::ContextSize => "context size",
        ResourceLimit::QueueCapacity => "queue_capacity",
    }
}
