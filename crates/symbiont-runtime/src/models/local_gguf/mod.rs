//! `LocalGgufRunner`: runs a GGUF model in a supervised worker process.
//!
//! The supervisor (this module) never links llama.cpp. It checks the model
//! file's header itself, starts `symbi-slm-worker` on first use, and runs
//! up to `slots` requests at once in it (continuous batching in the
//! worker), the rest waiting in a bounded queue that is fair between
//! agents. It streams tokens, enforces each request's wall-clock limit
//! (cancel, then kill the process group after a grace period), cancels a
//! request whose caller went away, turns a dead worker into
//! `WorkerCrashed` and starts a fresh one for the next request (backing off
//! when crashes repeat), and stops an idle worker after its keep-alive.
//!
//! The modules, along the path of a request:
//! - `builder`: the model file and the settings checked, nothing started;
//! - `request`: options validated → queued (`queue`) → a worker (`launch`)
//!   → followed to its end → `metadata`;
//! - `launch`: the worker life cycle: the model opened and checked, the
//!   sandbox plan made (`sandbox_plan`), the process started (`worker`),
//!   back-off after crashes, retirement near the CPU backstop;
//! - `driver`: the task that owns one running worker, routes its events to
//!   the requests, polices the protocol, enforces deadlines and keep-alive.
//!
//! Worker executable, first found wins: [`LocalGgufRunnerBuilder::worker_path`],
//! then `$SYMBI_SLM_WORKER` (absolute path), then `symbi-slm-worker` beside
//! the current executable (or beside its parent directory when that is
//! cargo's `deps/`). Never `$PATH`, never a relative path.

mod budget;
mod builder;
mod confinement;
mod denied_paths;
pub mod digest;
mod driver;
mod frames;
pub mod gguf;
mod launch;
mod metadata;
mod metrics;
mod model_file;
mod queue;
mod request;
mod sandbox_plan;
mod status;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use symbiont_slm_protocol::ModelFacts;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use budget::{Budget, HostBudget};
pub(crate) use builder::memory_need_mb;
pub use builder::{find_worker, threads_for, LocalGgufRunnerBuilder};
pub use gguf::{GgufError, GgufSummary};
pub use metrics::RunnerMetrics;
pub use sandbox_plan::{
    exec_plan_for as sandbox_exec_plan_for, plan_for as sandbox_plan_for, sandbox_report,
};
pub use status::WorkerStatus;

use self::driver::{Command, CrashLog, Driven};
use self::metadata::set_sandbox_facts;
use self::metrics::Counters;
use self::queue::Admission;
use crate::audit::AuditLog;
use crate::config::{ModelResourceRequirements, SandboxProfile};
use crate::models::stream::RequestStream;
use crate::models::StreamEvent;
use crate::models::{
    EmbeddingResult, ExecutionOptions, ExecutionResult, RunnerInfo, SlmRunner, SlmRunnerError,
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
    /// Slots (requests one worker runs at once) by default. They share
    /// one KV cache ([`CACHE_CONTEXTS`]), so a slot costs next to no
    /// memory: eight is where batching still pays on 2 cores (measured
    /// with llama-cpp-2 driven directly: 105 tokens/s with one sequence,
    /// 156 with four, 184 with eight; through the runner see
    /// `bench/RESULTS.md`).
    pub const SLOTS: u32 = 8;
    /// The shared KV cache by default, in contexts: four contexts' tokens
    /// (as many as the slots when they are fewer, and fewer when the
    /// profile's memory does not hold them, down to one). Eight short
    /// requests fit where four of a whole context each do.
    pub const CACHE_CONTEXTS: u32 = 4;
    /// Address space a worker needs beyond the mapped model and its KV
    /// caches (llama.cpp's compute buffers, thread stacks and allocator
    /// arenas, the runtime), for the profile's `max_memory_mb`
    /// (`RLIMIT_AS`). Measured, default model, 4 slots of 2048 tokens
    /// (per-slot caches, as before the shared cache): `VmPeak` 528 MB
    /// where model + KV caches are 278 MB.
    pub const WORKER_OVERHEAD_MB: u64 = 256;
    /// Resident memory a worker needs beyond the mapped model and its KV
    /// caches (llama.cpp touches the whole cache when it creates it), for
    /// the host budget. Measured, default model, a shared cache of 8,192
    /// tokens: `VmHWM` 304–318 MB after 1, 4 and 8 requests of short and
    /// long prompts where model + cache are 274 MB (estimate 306 MB), and
    /// 861 MB with a cache of 32,768 tokens (estimate 846 MB): the compute
    /// buffers barely grow with the cache (`tests/batching.rs`).
    pub const WORKER_RESIDENT_OVERHEAD_MB: u64 = 32;
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

/// Slots and queue of a runner, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerLoad {
    /// Requests the worker runs at once.
    pub slots: usize,
    /// Slots running a request now.
    pub busy: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Whether a worker is loaded.
    pub loaded: bool,
    /// Workers loaded (one per agent with requests when agents are
    /// isolated).
    pub workers: usize,
    /// Tokens of KV cache per worker, shared by its slots (0: no local
    /// worker).
    pub cache_tokens: u64,
    /// Tokens of it the running requests hold now, over its workers.
    pub cache_tokens_reserved: u64,
}

/// Runs a GGUF model through llama.cpp in a supervised worker process.
///
/// Cheap to clone (an `Arc`); every clone shares the worker, its slots and
/// its queue, so one runner serves many tasks at once.
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
    /// The file's pinned SHA-256, checked at every worker start.
    pin: Option<String>,
    profile: SandboxProfile,
    requirements: ModelResourceRequirements,
    summary: GgufSummary,
    worker_path: PathBuf,
    keep_alive: Duration,
    context_size: u32,
    batch_size: u32,
    threads: u32,
    slots: u32,
    /// Tokens of KV cache one worker's slots share.
    cache_tokens: u32,
    /// Controls of the profile the supervisor knows are not enforced here
    /// (beside the layers the worker reports).
    host_gaps: Vec<HostGap>,
    queue_capacity: usize,
    /// One worker per agent (the profile's `isolate_agents`), or one for
    /// all.
    isolate_agents: bool,
    /// The host's budget this runner's workers draw on.
    budget: Arc<Budget>,
    /// Estimated memory of one worker, MB.
    need_mb: u64,
    /// Whether [`LocalGgufRunner::embed`] may run.
    embeddings: bool,
    /// Loaded until the runner is dropped, never evicted.
    pinned: bool,
    /// Who shares a worker: one tenant for all requests, or one per agent.
    tenants: StdMutex<HashMap<String, Arc<Tenant>>>,
    /// What the runner counts.
    counters: Arc<Counters>,
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

/// The requests that share one worker: its slots and queue, and the
/// worker.
#[derive(Debug)]
struct Tenant {
    /// The worker's slots and the fair queue in front of them.
    admission: Arc<Admission>,
    /// The running worker, if any.
    state: Mutex<WorkerState>,
    /// Its workers' failures in a row, for the back-off.
    crashes: Arc<CrashLog>,
    /// Request ids (and ping nonces) of this tenant.
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct WorkerState {
    driven: Option<Driven>,
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
        LocalGgufRunnerBuilder::new(
            model_path.as_ref().to_path_buf(),
            sandbox_profile,
            resource_requirements,
        )
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

    /// Requests the worker runs at once.
    pub fn slots(&self) -> u32 {
        self.shared.slots
    }

    /// Whether requests of different agents run in different workers
    /// (the profile's `isolate_agents`).
    pub fn isolates_agents(&self) -> bool {
        self.shared.isolate_agents
    }

    /// Estimated resident memory of one worker, MB: the mapped model, the
    /// KV cache its slots share, the compute buffers (what it leases from
    /// the host budget; compare with `metrics().memory_peak_mb`).
    pub fn worker_memory_estimate_mb(&self) -> u64 {
        self.shared.need_mb
    }

    /// What the runner counted since it was built, with its load now.
    pub fn metrics(&self) -> RunnerMetrics {
        let mut m = self.shared.counters.snapshot();
        let load = self.load();
        m.queued = load.queued;
        m.slots_busy = load.busy;
        m.slots = load.slots;
        m.cache_tokens = u64::from(self.shared.cache_tokens);
        m.workers = load.workers;
        m.memory_estimate_mb = self.shared.need_mb;
        m
    }

    /// Slots busy and requests waiting, now (over every agent's worker
    /// when agents are isolated).
    pub fn load(&self) -> RunnerLoad {
        let (mut busy, mut queued) = (0, 0);
        for t in self.shared.all_tenants() {
            let (b, q) = t.admission.load();
            busy += b;
            queued += q;
        }
        let workers = self.shared.workers();
        RunnerLoad {
            slots: self.shared.slots as usize,
            busy,
            queued,
            loaded: workers > 0 || self.shared.loaded(),
            workers,
            cache_tokens: u64::from(self.shared.cache_tokens),
            cache_tokens_reserved: self.shared.counters.snapshot().cache_tokens_reserved,
        }
    }

    /// Runs one prompt to completion (the same as [`SlmRunner::execute`],
    /// callable without the trait in scope). Dropping the future cancels
    /// the request in the worker within one decode step.
    pub async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        crate::models::stream::collect(self.execute_stream(prompt, options)).await
    }

    /// The agent a request on this runner runs for: the one the deprecated
    /// `options.agent_id` names, else the anonymous tenant.
    fn agent_of(options: Option<&ExecutionOptions>) -> Option<String> {
        #[allow(deprecated)]
        options.and_then(|o| o.agent_id.clone())
    }

    /// The embedding of `text` as the model sees it (no chat template):
    /// mean-pooled over its tokens, L2-normalized, `embedding_size`
    /// numbers; at most `MAX_EMBED_TOKENS` (256) tokens. The request goes
    /// through the same queue, slots, deadlines and sandbox as a
    /// generation; `metadata.input_tokens` counts its tokens. The runner
    /// must be built with [`LocalGgufRunnerBuilder::embeddings`].
    pub async fn embed(
        &self,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        let agent = Self::agent_of(options.as_ref());
        self.embed_as(agent.as_deref(), text, options).await
    }

    /// [`LocalGgufRunner::embed`] for `agent` (`None`: the anonymous
    /// tenant).
    pub(crate) async fn embed_as(
        &self,
        agent: Option<&str>,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        let (result, embedding) = self
            .shared
            .embed(agent, text, options.unwrap_or_default())
            .await?;
        Ok(EmbeddingResult {
            embedding,
            metadata: result.metadata,
        })
    }

    /// Loads the model now instead of on first use.
    pub async fn preload(&self) -> Result<(), SlmRunnerError> {
        let deadline = Instant::now() + defaults::LOAD_TIMEOUT;
        let tenant = self.shared.tenant(None);
        self.shared
            .worker_for(&tenant, deadline, defaults::LOAD_TIMEOUT)
            .await?;
        self.shared.unload_if_idle_now(&tenant).await;
        Ok(())
    }

    /// The pids of every running worker (one per agent with agents
    /// isolated).
    pub async fn worker_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for t in self.shared.all_tenants() {
            let state = t.state.lock().await;
            pids.extend(state.driven.as_ref().filter(|d| d.alive()).map(Driven::pid));
        }
        pids
    }

    /// The pid of the running worker, if one is loaded (with agents
    /// isolated: the worker of requests without an agent, else any).
    pub async fn worker_pid(&self) -> Option<u32> {
        for t in self.shared.all_tenants() {
            let state = t.state.lock().await;
            if let Some(pid) = state.driven.as_ref().filter(|d| d.alive()).map(Driven::pid) {
                return Some(pid);
            }
        }
        None
    }

    /// Runs a prompt and streams its text; the stream ends with
    /// [`StreamEvent::Done`] or an error. Dropping the stream cancels the
    /// generation within one decode step.
    pub fn execute_stream(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send + 'static {
        let agent = Self::agent_of(options.as_ref());
        self.execute_stream_as(agent.as_deref(), prompt, options)
    }

    /// [`LocalGgufRunner::execute_stream`] for `agent` (`None`: the
    /// anonymous tenant).
    pub(crate) fn execute_stream_as(
        &self,
        agent: Option<&str>,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send + 'static {
        let shared = self.shared.clone();
        let prompt = prompt.to_string();
        let agent = agent.map(str::to_string);
        RequestStream::new(move |text| async move {
            let on_token = move |e: StreamEvent| text.push_event(e);
            shared
                .run(
                    agent.as_deref(),
                    &prompt,
                    options.unwrap_or_default(),
                    on_token,
                )
                .await
        })
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

    fn execute_stream<'a>(
        &'a self,
        prompt: &'a str,
        options: Option<ExecutionOptions>,
    ) -> futures::stream::BoxStream<'a, Result<StreamEvent, SlmRunnerError>> {
        Box::pin(LocalGgufRunner::execute_stream(self, prompt, options))
    }

    async fn embed(
        &self,
        text: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<EmbeddingResult, SlmRunnerError> {
        LocalGgufRunner::embed(self, text, options).await
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
        let tenant = self.shared.tenant(None);
        let (driven, _) = self
            .shared
            .worker_for(&tenant, deadline, defaults::LOAD_TIMEOUT)
            .await?;
        let nonce = tenant.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        if driven.send(Command::Ping { nonce, reply }).is_err() {
            return Err(SlmRunnerError::ExecutionFailed {
                reason: "the worker stopped before it could be pinged".into(),
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(SlmRunnerError::ExecutionFailed {
                reason: "the worker stopped before it answered a ping".into(),
            })
        })
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
        put("slots", Some(s.slots.to_string()));
        if let Some(f) = &facts {
            put("parameters", Some(f.parameters.to_string()));
            put("context_size", Some(f.context_size.to_string()));
            put("vocab_size", Some(f.vocab_size.to_string()));
            put("load_ms", Some(format!("{:.1}", f.load_ms)));
        }
        let loaded = s.loaded();
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

impl Shared {
    /// Whether a worker is loaded now (true while its state is being
    /// changed).
    fn loaded(&self) -> bool {
        self.all_tenants().iter().any(|t| {
            t.state
                .try_lock()
                .map(|s| s.driven.as_ref().is_some_and(Driven::alive))
                .unwrap_or(true)
        })
    }

    /// Workers loaded now (those whose state is being changed count).
    fn workers(&self) -> usize {
        self.all_tenants()
            .iter()
            .filter(|t| {
                t.state
                    .try_lock()
                    .map(|s| s.driven.as_ref().is_some_and(Driven::alive))
                    .unwrap_or(true)
            })
            .count()
    }

    /// The tenant whose worker runs `agent`'s requests: the agent's own
    /// when agents are isolated, else the one shared by all.
    fn tenant(&self, agent: Option<&str>) -> Arc<Tenant> {
        let key = if self.isolate_agents {
            agent.unwrap_or("")
        } else {
            ""
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        // Agents come and go: forget a tenant nobody uses, with no worker,
        // nothing queued and no crash history (its back-off must stay).
        if tenants.len() > 64 {
            tenants.retain(|k, t| {
                k == key
                    || Arc::strong_count(t) > 1
                    || t.admission.load() != (0, 0)
                    || t.crashes.get().0 > 0
                    || t.state
                        .try_lock()
                        .map(|s| s.driven.as_ref().is_some_and(Driven::alive))
                        .unwrap_or(true)
            });
        }
        tenants
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Tenant {
                    admission: Admission::new(self.slots as usize, self.queue_capacity),
                    state: Mutex::new(WorkerState::default()),
                    crashes: Arc::default(),
                    next_id: AtomicU64::new(1),
                })
            })
            .clone()
    }

    /// Every tenant, the shared one (no agent) first.
    fn all_tenants(&self) -> Vec<Arc<Tenant>> {
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&String, &Arc<Tenant>)> = tenants.iter().collect();
        all.sort_by_key(|(k, _)| k.as_str());
        all.into_iter().map(|(_, t)| t.clone()).collect()
    }
}
