//! A model's own settings: how its workers are sized and how it samples
//! when a request does not say (`settings` of a model entry).
//!
//! ```toml
//! [[slm.model_allow_lists.global_models]]
//! id = "qwen2.5-1.5b"
//! # …
//! [slm.model_allow_lists.global_models.settings]
//! context_size = 8192      # llama-server -c (per request), Ollama num_ctx
//! threads = 2              # -t, num_thread
//! slots = 8                # -np: requests one worker runs at once
//! cache_tokens = 16384     # -c: KV cache the slots share (--kv-unified below slots x context)
//! batch_size = 512         # -b
//! keep_alive_seconds = 600 # Ollama keep_alive
//! [slm.model_allow_lists.global_models.settings.sampling]
//! temperature = 0.2
//! max_tokens = 256
//! ```
//!
//! Every key is optional; a missing one takes the runtime's default. The
//! ranges are checked with the rest of the config; what depends on the
//! model file or the profile (the trained context, the profile's memory
//! and cores) is checked when the model's runner is built, and the error
//! names the key to change and a value that fits.

use serde::Serialize;

use super::validate::{Issues, MAX_CPU_CORES, MAX_EXECUTION_SECONDS};
use super::{ModelProvider, Problem, Slm};

/// Largest `context_size` accepted before the model file is read (the
/// file's trained context bounds it further).
pub const MAX_CONTEXT_SIZE: u32 = 1 << 20;
/// Smallest `context_size`.
pub const MIN_CONTEXT_SIZE: u32 = 16;
/// Most `slots` (llama.cpp's sequence limit).
pub const MAX_SLOTS: u32 = 256;
/// Largest `batch_size`.
pub const MAX_BATCH_SIZE: u32 = 1 << 16;

/// `settings` of a model entry. `None` everywhere: the runtime's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelSettings {
    /// Tokens of context each request may use, prompt and answer together
    /// (default 2048, or the model's trained context when that is less);
    /// at most the model's trained context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u32>,
    /// Compute threads of a worker (default: the profile's `max_cpu_cores`
    /// rounded down); at most that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Requests one worker runs at once (default 8, at most
    /// `batch_size`), sharing its KV cache (`cache_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Tokens of KV cache one worker's requests share; each running
    /// request reserves its prompt plus `max_tokens` (at most
    /// `context_size`) of it, and one that does not fit waits. Resident
    /// from the worker's start. At least `context_size`, at most `slots ×
    /// context_size` (default: four contexts, or `slots` of them when
    /// fewer, as the profile's `max_memory_mb` holds, at least one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_tokens: Option<u32>,
    /// Prompt tokens per decode step (default 512); at least `slots`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Idle time before the model's workers unload, seconds (default
    /// `slm.pool.keep_alive_seconds`; `0` unloads after each request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_seconds: Option<u64>,
    /// Sampling for requests that do not set it.
    #[serde(skip_serializing_if = "SamplingDefaults::is_empty")]
    pub sampling: SamplingDefaults,
}

impl ModelSettings {
    /// The keys that size a local worker and mean nothing to a remote
    /// endpoint, with whether each is set.
    pub(super) fn worker_keys(&self) -> [(&'static str, bool); 6] {
        [
            ("context_size", self.context_size.is_some()),
            ("threads", self.threads.is_some()),
            ("slots", self.slots.is_some()),
            ("cache_tokens", self.cache_tokens.is_some()),
            ("batch_size", self.batch_size.is_some()),
            ("keep_alive_seconds", self.keep_alive_seconds.is_some()),
        ]
    }
}

/// `settings.sampling`: what a request gets for each option it leaves
/// out (the request's own value always wins).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SamplingDefaults {
    /// Sampling temperature, 0 for greedy decoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling (0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Keep only this many most likely tokens (≥ 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Drop tokens less likely than this fraction of the most likely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Penalty for repeating recent tokens (1.0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f32>,
    /// Most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl SamplingDefaults {
    /// Whether no default is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A model's `settings`: each number in its range, the worker's keys
/// only where there is a worker, one keep-alive per model. What needs the
/// model file or the profile is checked when the runner is built.
pub(super) fn check(slm: &Slm, base: &str, m: &super::Model, out: &mut Issues) {
    let s = &m.settings;
    let mut range = |key: &str, value: Option<u32>, lo: u32, hi: u32| {
        if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
            out.push((
                format!("{base}.{key}"),
                Problem::OutOfRange {
                    value: v.to_string(),
                    range: format!("from {lo} to {hi}"),
                },
            ));
        }
    };
    range(
        "context_size",
        s.context_size,
        MIN_CONTEXT_SIZE,
        MAX_CONTEXT_SIZE,
    );
    range("threads", s.threads, 1, MAX_CPU_CORES as u32);
    range("slots", s.slots, 1, MAX_SLOTS);
    range(
        "cache_tokens",
        s.cache_tokens,
        MIN_CONTEXT_SIZE,
        MAX_CONTEXT_SIZE.saturating_mul(4),
    );
    range("batch_size", s.batch_size, 1, MAX_BATCH_SIZE);
    range("sampling.top_k", s.sampling.top_k, 1, u32::MAX);
    range("sampling.max_tokens", s.sampling.max_tokens, 1, u32::MAX);
    if let (Some(cache), Some(context)) = (s.cache_tokens, s.context_size) {
        if cache < context && cache >= MIN_CONTEXT_SIZE {
            out.push((
                format!("{base}.cache_tokens"),
                Problem::OutOfRange {
                    value: cache.to_string(),
                    range: format!("at least context_size = {context} (one request must fit)"),
                },
            ));
        }
        if let Some(slots) = s.slots.filter(|n| (1..=MAX_SLOTS).contains(n)) {
            let most = u64::from(slots) * u64::from(context);
            if u64::from(cache) > most {
                out.push((
                    format!("{base}.cache_tokens"),
                    Problem::OutOfRange {
                        value: cache.to_string(),
                        range: format!(
                            "at most slots × context_size = {most} (more can never be used)"
                        ),
                    },
                ));
            }
        }
    }
    if let (Some(slots), Some(batch)) = (s.slots, s.batch_size) {
        if slots > batch && slots <= MAX_SLOTS {
            out.push((
                format!("{base}.slots"),
                Problem::OutOfRange {
                    value: slots.to_string(),
                    range: format!(
                        "at most batch_size = {batch} (each running request adds one token to every decode step)"
                    ),
                },
            ));
        }
    }
    if let Some(k) = s.keep_alive_seconds {
        if k > MAX_EXECUTION_SECONDS * 52 {
            out.push((
                format!("{base}.keep_alive_seconds"),
                Problem::TooLarge {
                    value: k,
                    max: MAX_EXECUTION_SECONDS * 52,
                },
            ));
        }
        if slm.pool.keep_alive_by_model.contains_key(&m.id) {
            out.push((
                format!("{base}.keep_alive_seconds"),
                Problem::Conflict(
                    "this model's keep-alive is also set in slm.pool.keep_alive_by_model: keep one",
                ),
            ));
        }
    }
    // (range, lower bound open) as `ExecutionOptions::validate` has them.
    let floats = [
        ("temperature", s.sampling.temperature, 0.0, 100.0, false),
        ("top_p", s.sampling.top_p, 0.0, 1.0, true),
        ("min_p", s.sampling.min_p, 0.0, 1.0, false),
        ("repeat_penalty", s.sampling.repeat_penalty, 0.0, 10.0, true),
    ];
    for (key, value, lo, hi, open) in floats {
        let Some(v) = value else { continue };
        let ok = v.is_finite() && (if open { v > lo } else { v >= lo }) && v <= hi;
        if !ok {
            out.push((
                format!("{base}.sampling.{key}"),
                Problem::OutOfRange {
                    value: v.to_string(),
                    range: format!(
                        "from {lo} ({}) to {hi}",
                        if open { "excluded" } else { "included" }
                    ),
                },
            ));
        }
    }
    let local = matches!(
        m.provider,
        ModelProvider::LocalFile { .. } | ModelProvider::HuggingFace { .. }
    );
    if !local {
        for (key, set) in s.worker_keys() {
            if set {
                out.push((
                    format!("{base}.{key}"),
                    Problem::NotForProvider {
                        key,
                        provider: m.provider.kind(),
                    },
                ));
            }
        }
    }
}
