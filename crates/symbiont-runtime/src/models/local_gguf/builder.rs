//! Building a [`LocalGgufRunner`]: the model file checked, the settings and
//! the profile validated, nothing started.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use super::budget::{Budget, HostBudget};
use super::model_file::{open_model_file_blocking, resolve_model_path};
use super::{
    defaults, sandbox_plan, GgufSummary, HostGap, LocalGgufRunner, Shared, WORKER_ENV, WORKER_FILE,
};
use crate::audit::AuditLog;
use crate::config::{ModelResourceRequirements, SandboxProfile, MAX_SLOTS, MIN_CONTEXT_SIZE};
use crate::models::{ResourceLimit, SlmRunnerError};
use symbiont_slm_protocol::MAX_EMBED_TOKENS;

/// Builds a [`LocalGgufRunner`] with non-default settings.
#[derive(Debug, Clone)]
pub struct LocalGgufRunnerBuilder {
    model_path: PathBuf,
    profile: SandboxProfile,
    requirements: ModelResourceRequirements,
    worker_path: Option<PathBuf>,
    keep_alive: Duration,
    context_size: u32,
    /// Whether `context_size` was asked for (then more than the model's
    /// trained context is an error, not a cap).
    context_explicit: bool,
    batch_size: u32,
    threads: Option<u32>,
    queue_capacity: usize,
    slots: Option<u32>,
    cache_tokens: Option<u32>,
    one_at_a_time: bool,
    budget: Option<Arc<Budget>>,
    pinned: bool,
    embeddings: bool,
    check_memory_estimate: bool,
    sha256: Option<String>,
    audit: AuditLog,
    labels: Option<(String, String)>,
}

impl LocalGgufRunnerBuilder {
    pub(super) fn new(
        model_path: PathBuf,
        profile: SandboxProfile,
        requirements: ModelResourceRequirements,
    ) -> Self {
        Self {
            model_path,
            profile,
            requirements,
            worker_path: None,
            keep_alive: defaults::KEEP_ALIVE,
            context_size: defaults::CONTEXT_SIZE,
            context_explicit: false,
            batch_size: defaults::BATCH_SIZE,
            threads: None,
            queue_capacity: defaults::QUEUE_CAPACITY,
            slots: None,
            cache_tokens: None,
            one_at_a_time: false,
            budget: None,
            pinned: false,
            embeddings: false,
            check_memory_estimate: true,
            sha256: None,
            audit: AuditLog::tracing_only(),
            labels: None,
        }
    }

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
        // At most about 136 years: a deadline must stay representable.
        self.keep_alive = d.min(Duration::from_secs(u64::from(u32::MAX)));
        self
    }
    /// Tokens of context each request may use (default
    /// [`defaults::CONTEXT_SIZE`], capped by the model's trained context);
    /// more than the trained context is refused when built.
    pub fn context_size(mut self, n: u32) -> Self {
        self.context_size = n;
        self.context_explicit = true;
        self
    }
    /// Prompt tokens per decode step (default [`defaults::BATCH_SIZE`]).
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n;
        self
    }
    /// A model's `settings` from the config: context size, threads, slots,
    /// batch size and keep-alive where they are set (sampling defaults
    /// apply per request, in [`AgentRunner`](crate::models::AgentRunner)).
    pub fn settings(mut self, s: &crate::config::ModelSettings) -> Self {
        if let Some(n) = s.context_size {
            self = self.context_size(n);
        }
        if let Some(n) = s.threads {
            self = self.threads(n);
        }
        if let Some(n) = s.slots {
            self = self.slots(n);
        }
        if let Some(n) = s.cache_tokens {
            self = self.cache_tokens(n);
        }
        if let Some(n) = s.batch_size {
            self = self.batch_size(n);
        }
        if let Some(k) = s.keep_alive_seconds {
            self = self.keep_alive(Duration::from_secs(k));
        }
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
    /// Requests the worker runs at once (continuous batching), each in a
    /// sequence of at most `context_size` tokens, all of them sharing the
    /// worker's KV cache ([`Self::cache_tokens`]). Default
    /// [`defaults::SLOTS`] (at most the batch size).
    pub fn slots(mut self, n: u32) -> Self {
        self.slots = Some(n);
        self
    }
    /// Tokens of KV cache the slots share (llama.cpp's unified cache; it
    /// is resident from the worker's start, so it is what the worker
    /// holds). At `slots × context_size` each slot gets a KV stream of its
    /// own instead, as `llama-server -np` does: no sharing is needed then,
    /// and a stream's attention reads only its own cells (measured against
    /// llama-server `-np 8 -c 16384`: 4 streams 1.40×, 8 streams 0.97×, in
    /// 0.98× its memory; bench/RESULTS.md. A new request takes the lowest
    /// free slot, since llama.cpp decodes non-consecutive streams in
    /// separate passes; a request's text does not depend on what runs
    /// beside it). A request reserves its prompt plus `max_tokens` (at most
    /// `context_size`) when it starts; one that does not fit beside the
    /// running ones waits in the worker. At least `context_size`, at most
    /// `slots × context_size`. Default: [`defaults::CACHE_CONTEXTS`]
    /// contexts (the slots' when fewer), fewer when the profile's
    /// `max_memory_mb` does not hold them (see [`default_cache_tokens`]).
    pub fn cache_tokens(mut self, n: u32) -> Self {
        self.cache_tokens = Some(n);
        self
    }
    /// A runner for one request at a time (`symbi-slm run`, `chat`): one
    /// slot and a cache of one context, whatever the settings say, so
    /// that a one-shot holds no more memory than it can use.
    pub fn one_at_a_time(mut self, on: bool) -> Self {
        self.one_at_a_time = on;
        self
    }
    /// The host budget the workers draw on (memory, cores, count); share
    /// one between runners so that together they stay within it. Default:
    /// a budget of this runner's own, [`HostBudget::from_host`].
    pub fn budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }
    /// Keeps the worker loaded while the runner lives (no keep-alive) and
    /// never evicts it for another worker's room.
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }

    /// Lets the runner compute embeddings ([`LocalGgufRunner::embed`]):
    /// its workers then make an embedding context on the first embedding
    /// request, and the memory it takes ([`embed_context_mb`]) is counted
    /// in the worker's estimate (fewer default slots within
    /// `max_memory_mb`, a larger lease). Off by default; the pool turns it
    /// on for models with the `Embeddings` capability.
    pub fn embeddings(mut self, on: bool) -> Self {
        self.embeddings = on;
        self
    }

    /// Whether `build` refuses a worker that the estimate says will not fit
    /// the profile's `max_memory_mb` (default: yes, so that a model that
    /// can never load fails at once, naming the value that fits). `false`
    /// builds it anyway, for an operator who measured that the model needs
    /// less than the estimate, and for tests of the kernel's limit: the
    /// limit itself (`RLIMIT_AS`) applies either way, and a worker that
    /// exceeds it fails with `ResourceLimitExceeded`. A model file larger
    /// than the limit is refused either way.
    pub fn check_memory_estimate(mut self, on: bool) -> Self {
        self.check_memory_estimate = on;
        self
    }

    /// The model file's SHA-256 (64 hex digits): a file with other bytes
    /// is refused when the runner is built and at every worker start,
    /// both digests named (see `digest.rs`: hashed once per version of
    /// the file).
    pub fn sha256(mut self, hex: Option<String>) -> Self {
        self.sha256 = hex;
        self
    }

    /// Validates the model file and the settings; starts nothing.
    pub async fn build(mut self) -> Result<LocalGgufRunner, SlmRunnerError> {
        self.model_path = resolve_model_path(&self.model_path)?;
        let (_, summary) = open_model_file_blocking(&self.model_path, self.sha256.clone()).await?;
        let embed_mb = if self.embeddings {
            embed_context_mb(&summary)
        } else {
            0
        };
        // What the generation slots may use: the embedding context's share
        // of the address space comes first.
        let embed_space_mb = if self.embeddings {
            embed_mb.saturating_add(EMBED_ADDRESS_EXTRA_MB)
        } else {
            0
        };
        // A batch larger than the default grows the compute buffers (a row
        // of the vocabulary's logits per token of a step) beyond the
        // worker overhead measured at the default: counted like the
        // embedding context's share.
        let batch_space_mb = batch_extra_mb(&summary, self.batch_size);
        let extra_mb = embed_space_mb.saturating_add(batch_space_mb);
        let max_mb = self.profile.resources.max_memory_mb;
        // What the generation slots may use: the embedding context's share
        // of the address space comes first.
        let slots_mb = max_mb.saturating_sub(extra_mb);
        let file_mb = summary.file_size.div_ceil(1024 * 1024);
        if self.requirements.min_memory_mb > max_mb {
            return Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::Memory,
                detail: format!(
                    "the model needs min_memory_mb = {} (its resource_requirements), more than {} = {max_mb}; set it to {} or more",
                    self.requirements.min_memory_mb,
                    self.profile_key("resources.max_memory_mb"),
                    self.requirements.min_memory_mb,
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
        if self.context_size < MIN_CONTEXT_SIZE || self.batch_size == 0 || self.queue_capacity == 0
        {
            return Err(SlmRunnerError::InvalidInput {
                field: "runner settings",
                reason: format!(
                    "context_size {} (min {MIN_CONTEXT_SIZE}), batch_size {}, queue_capacity {} (min 1)",
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
            let host = host_cores();
            let raise = if n <= host {
                format!(
                    ", or raise {} to {n}",
                    self.profile_key("resources.max_cpu_cores")
                )
            } else {
                String::new()
            };
            return Err(SlmRunnerError::InvalidInput {
                field: self.field("threads", "settings.threads"),
                reason: format!(
                    "{} = {n} is more than {} = {cores} allows on this host of {host} CPU(s); set it to {allowed_threads} or less{raise}",
                    self.setting_key("threads"),
                    self.profile_key("resources.max_cpu_cores"),
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
        let trained = summary.context_length.map_or(u32::MAX, |c| {
            u32::try_from(c).unwrap_or(u32::MAX).max(MIN_CONTEXT_SIZE)
        });
        if self.context_explicit && self.context_size > trained {
            return Err(SlmRunnerError::InvalidInput {
                field: self.field("context_size", "settings.context_size"),
                reason: format!(
                    "{} = {} is more than the model's trained context of {trained} tokens; set it to {trained} or less",
                    self.setting_key("context_size"),
                    self.context_size,
                ),
            });
        }
        let context_size = self.context_size.min(trained);
        let slots = match self.slots.filter(|_| !self.one_at_a_time) {
            Some(0) => {
                return Err(SlmRunnerError::InvalidInput {
                    field: "slots",
                    reason: "at least one slot is needed".into(),
                })
            }
            Some(n) if n > self.batch_size.min(MAX_SLOTS) => {
                return Err(SlmRunnerError::InvalidInput {
                    field: self.field("slots", "settings.slots"),
                    reason: format!(
                        "{} = {n}: at most {} (one token of each per decode step must fit the batch of {}, and llama.cpp holds at most {MAX_SLOTS} sequences)",
                        self.setting_key("slots"),
                        self.batch_size.min(MAX_SLOTS),
                        self.batch_size
                    ),
                })
            }
            Some(n) => n,
            None if self.one_at_a_time => 1,
            // Never more than one token of each fits a step's batch.
            None => defaults::SLOTS.min(self.batch_size.min(MAX_SLOTS)).max(1),
        };
        let most_cache = context_size.saturating_mul(slots);
        let cache_tokens = match self.cache_tokens.filter(|_| !self.one_at_a_time) {
            Some(n) if n < context_size || n > most_cache => {
                return Err(SlmRunnerError::InvalidInput {
                    field: self.field("cache_tokens", "settings.cache_tokens"),
                    reason: format!(
                        "{} = {n}: at least one request's context ({} = {context_size}) and at most what {slots} slot(s) of it can fill ({most_cache})",
                        self.setting_key("cache_tokens"),
                        self.setting_key("context_size"),
                    ),
                })
            }
            Some(n) => n,
            None if self.one_at_a_time => context_size,
            None => default_cache_tokens(&summary, context_size, slots, slots_mb),
        };
        // One check for every way the worker may not fit (the file alone,
        // the cache asked for, the one context a default comes down to,
        // the embedding context), naming the one change that makes it fit.
        let need = memory_need_mb(&summary, cache_tokens) + extra_mb;
        if need > max_mb && (self.check_memory_estimate || file_mb > max_mb) {
            // The largest cache that fits (a multiple of 256 tokens when
            // it is that large).
            let fits = |c: u32| memory_need_mb(&summary, c) + extra_mb <= max_mb;
            let (mut lo, mut hi) = (MIN_CONTEXT_SIZE, cache_tokens);
            let instead = if fits(lo) {
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if fits(mid) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                let c = if lo >= 256 { lo / 256 * 256 } else { lo };
                if self.cache_tokens.is_some() && c >= context_size {
                    format!(", or lower {} to {c}", self.setting_key("cache_tokens"))
                } else {
                    format!(", or lower {} to {c}", self.setting_key("context_size"))
                }
            } else {
                String::new()
            };
            return Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::Memory,
                detail: format!(
                    "a KV cache of {cache_tokens} tokens ({slots} slot(s) of at most {context_size}) needs about {need} MB (model file {file_mb} MB + KV cache + {} MB worker overhead{}), more than {} = {max_mb}; set it to {}{instead}",
                    defaults::WORKER_OVERHEAD_MB,
                    [
                        (embed_space_mb, "the embedding context"),
                        (batch_space_mb, "a batch above 512 tokens")
                    ]
                    .iter()
                    .filter(|(mb, _)| *mb > 0)
                    .map(|(mb, what)| format!(" + {mb} MB for {what}"))
                    .collect::<String>(),
                    self.profile_key("resources.max_memory_mb"),
                    need.div_ceil(64) * 64,
                ),
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
        let isolate_agents = self.profile.security.isolate_agents;
        if self.pinned && isolate_agents {
            return Err(SlmRunnerError::InvalidInput {
                field: "pinned",
                reason: "a pinned model keeps one shared worker loaded, but this profile isolates agents (security.isolate_agents = true: a worker per agent); pin it under a profile with isolate_agents = false".into(),
            });
        }
        // The larger batch's buffers are leased too (an upper bound: only
        // the pages a step touches become resident).
        let need_mb = resident_need_mb(&summary, cache_tokens) + embed_mb + batch_space_mb;
        Ok(LocalGgufRunner {
            shared: Arc::new(Shared {
                audit: self.audit,
                model_label,
                profile_label,
                model_path: self.model_path,
                pin: self.sha256,
                profile: self.profile,
                requirements: self.requirements,
                summary,
                worker_path,
                keep_alive: self.keep_alive,
                context_size,
                batch_size: self.batch_size,
                threads: threads.max(1),
                slots,
                cache_tokens,
                host_gaps,
                queue_capacity: self.queue_capacity,
                isolate_agents,
                budget: self
                    .budget
                    .unwrap_or_else(|| Budget::new(HostBudget::from_host())),
                need_mb,
                pinned: self.pinned,
                embeddings: self.embeddings,
                tenants: StdMutex::new(Default::default()),
                counters: Arc::default(),
                facts: StdMutex::new(None),
            }),
        })
    }
}

impl LocalGgufRunnerBuilder {
    /// How an error names a setting: the config key when the runner is a
    /// catalog model's (labels set), else the builder's method.
    fn setting_key(&self, key: &str) -> String {
        match &self.labels {
            Some((model, _)) => format!("`settings.{key}` of model `{model}`"),
            None => format!("`{key}`"),
        }
    }
    /// The `field` of an `InvalidInput` about a setting: the config's key
    /// for a catalog model's runner, the builder's method otherwise.
    fn field(&self, method: &'static str, key: &'static str) -> &'static str {
        if self.labels.is_some() {
            key
        } else {
            method
        }
    }
    /// How an error names a key of the profile.
    fn profile_key(&self, key: &str) -> String {
        match &self.labels {
            Some((_, profile)) => format!("`slm.sandbox_profiles.{profile}.{key}`"),
            None => format!("the profile's `{key}`"),
        }
    }
}

fn host_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Address space a worker with a KV cache of `cache_tokens` tokens needs
/// (what the profile's `max_memory_mb` limits), MB: the mapped model and
/// the cache ([`model_and_cache_mb`]) + [`defaults::WORKER_OVERHEAD_MB`].
pub(crate) fn memory_need_mb(summary: &GgufSummary, cache_tokens: u32) -> u64 {
    model_and_cache_mb(summary, cache_tokens) + defaults::WORKER_OVERHEAD_MB
}

/// Resident memory the same worker needs (what it leases from the host
/// budget), MB: [`model_and_cache_mb`] +
/// [`defaults::WORKER_RESIDENT_OVERHEAD_MB`]. The model's pages are shared
/// between workers of one file, but each lease counts them: the budget
/// errs on the safe side.
pub(super) fn resident_need_mb(summary: &GgufSummary, cache_tokens: u32) -> u64 {
    model_and_cache_mb(summary, cache_tokens) + defaults::WORKER_RESIDENT_OVERHEAD_MB
}

/// The mapped model and a KV cache of `cache_tokens` tokens (from the
/// header's figures; an eighth of the model per 2,048 tokens when the
/// header lacks them), MB.
fn model_and_cache_mb(summary: &GgufSummary, cache_tokens: u32) -> u64 {
    const MB: u64 = 1024 * 1024;
    let cache = summary.kv_bytes_per_token().map_or_else(
        || (summary.file_size / 8).saturating_mul(u64::from(cache_tokens)) / 2048,
        |b| b.saturating_mul(u64::from(cache_tokens)),
    );
    summary.file_size.saturating_add(cache).div_ceil(MB)
}

/// The embedding context of a worker, resident MB: the KV cache of
/// [`MAX_EMBED_TOKENS`] tokens, and twice a row per token of the
/// vocabulary's logits and the embedding (4 bytes each: llama.cpp keeps
/// logits even in embedding mode, once in its output buffer and once in its
/// compute buffer), and 16 MB of other buffers. A header without a
/// vocabulary size is taken as 152,064 tokens (a large one). Measured for
/// the default model: VmHWM +108 MB after a 256-token embedding, against
/// 122 MB from this; the address space grows by [`EMBED_ADDRESS_EXTRA_MB`]
/// more (VmPeak +155 MB).
pub fn embed_context_mb(summary: &GgufSummary) -> u64 {
    const MB: u64 = 1024 * 1024;
    let tokens = u64::from(MAX_EMBED_TOKENS);
    let kv = summary
        .kv_bytes_per_token()
        .map_or(summary.file_size / 8, |b| b.saturating_mul(tokens));
    let row = summary
        .vocab_size
        .unwrap_or(152_064)
        .saturating_add(summary.embedding_length.unwrap_or(8192))
        .saturating_mul(4);
    kv.saturating_add(row.saturating_mul(tokens).saturating_mul(2))
        .div_ceil(MB)
        .saturating_add(16)
}

/// Address space a batch of `batch_size` tokens takes beyond what
/// [`defaults::WORKER_OVERHEAD_MB`] holds (measured at the default batch
/// of [`defaults::BATCH_SIZE`]): a row of logits (4 bytes per vocabulary
/// entry) per extra token of a step, MB. Measured for the default model,
/// 4 slots of 2,048 tokens: `VmPeak` over model and KV caches was 243 MB
/// at a batch of 512 and 163 MB at 128 (the row is 192 KB), and did not
/// grow with the context (248 MB at 4 slots of 8,192 tokens).
pub(crate) fn batch_extra_mb(summary: &GgufSummary, batch_size: u32) -> u64 {
    let extra = u64::from(batch_size.saturating_sub(defaults::BATCH_SIZE));
    let row = summary.vocab_size.unwrap_or(152_064).saturating_mul(4);
    extra.saturating_mul(row).div_ceil(1024 * 1024)
}

/// Address space the embedding context takes beyond its resident
/// estimate, MB (see [`embed_context_mb`]).
pub const EMBED_ADDRESS_EXTRA_MB: u64 = 32;

/// The default KV cache, tokens: [`defaults::CACHE_CONTEXTS`] contexts
/// (`slots` of them when fewer), fewer when `max_memory_mb` does not hold
/// them, at least one context.
pub fn default_cache_tokens(
    summary: &GgufSummary,
    context_size: u32,
    slots: u32,
    max_memory_mb: u64,
) -> u32 {
    (1..=defaults::CACHE_CONTEXTS.min(slots).max(1))
        .rev()
        .map(|n| context_size.saturating_mul(n))
        .find(|&c| memory_need_mb(summary, c) <= max_memory_mb)
        .unwrap_or(context_size)
}

/// Threads for a CPU budget: whole cores only (fractions round down, at
/// least one), never more than the machine has.
pub fn threads_for(max_cpu_cores: f32) -> u32 {
    (max_cpu_cores.floor() as u32).clamp(1, host_cores().max(1))
}

/// Finds the worker executable: `explicit`, else `$SYMBI_SLM_WORKER`,
/// else beside the running executable (or one directory up from a test's
/// `deps`); the error says where it looked and how to build it.
pub fn find_worker(explicit: Option<&Path>) -> Result<PathBuf, SlmRunnerError> {
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
