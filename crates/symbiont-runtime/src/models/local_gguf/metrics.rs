//! What a runner counts: requests and their outcome, queue waits, tokens,
//! loads and unloads with their reason, and its memory estimate against
//! the kernel's figure. A snapshot ([`RunnerMetrics`]) is cheap; the
//! service exports it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unload {
    /// Idle past its keep-alive (or the runner was dropped).
    KeepAlive,
    /// Evicted, idle, for another worker's room in the host budget.
    Evicted,
    /// Near its CPU-time backstop; a fresh worker took over.
    Retired,
    /// Crashed, killed for a protocol violation or an ignored cancel.
    Failed,
}

impl Unload {
    /// The reason as the log line says it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::KeepAlive => "keep_alive",
            Self::Evicted => "evicted",
            Self::Retired => "retired",
            Self::Failed => "failed",
        }
    }
}

/// A runner's counters since it was built, and its load now.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RunnerMetrics {
    /// Requests that ended with a result.
    pub requests_ok: u64,
    /// Requests that ended with an error (any, including the two below).
    pub requests_failed: u64,
    /// Requests refused at once because the queue was full.
    pub requests_overloaded: u64,
    /// Requests whose deadline passed while they waited (never run).
    pub requests_expired_in_queue: u64,
    /// Requests the worker stopped because their caller went away (a
    /// dropped future or stream): counted when the worker confirms.
    pub requests_cancelled: u64,
    /// Requests that took a slot.
    pub admitted: u64,
    /// Total time admitted requests waited for a slot, ms.
    pub queue_wait_ms_total: f64,
    /// Longest wait for a slot, ms.
    pub queue_wait_ms_max: f64,
    /// Requests waiting now.
    pub queued: usize,
    /// Slots running a request now (over every worker).
    pub slots_busy: usize,
    /// Slots per worker.
    pub slots: usize,
    /// Tokens of KV cache per worker, shared by its slots.
    pub cache_tokens: u64,
    /// Tokens of KV cache the running requests hold now (each its prompt
    /// plus `max_tokens`, at most the context; over every worker).
    pub cache_tokens_reserved: u64,
    /// Requests the workers have started (their cache reserved), now; the
    /// rest of `slots_busy` wait for room in the cache or for their worker
    /// to load, or are embeddings.
    pub requests_started: u64,
    /// Workers loaded now.
    pub workers: usize,
    /// Prompt tokens of finished requests (from the tokenizer).
    pub input_tokens: u64,
    /// Prompt tokens found in a slot's cache and not computed again.
    pub cached_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Workers started, and their total load time, ms.
    pub loads: u64,
    /// Total load time, ms.
    pub load_ms_total: f64,
    /// Workers unloaded after their keep-alive.
    pub unloads_keep_alive: u64,
    /// Idle workers evicted for another's room in the host budget.
    pub evictions: u64,
    /// Workers retired near their CPU-time backstop.
    pub retirements: u64,
    /// Workers lost: crashed, or killed for a protocol violation or an
    /// ignored cancel.
    pub worker_failures: u64,
    /// The resident memory each worker leases from the budget, MB (the
    /// estimate: model + KV caches + compute buffers).
    pub memory_estimate_mb: u64,
    /// The highest resident peak (`VmHWM`) measured of this runner's
    /// workers, MB; compare with `memory_estimate_mb`.
    pub memory_peak_mb: Option<f64>,
    /// A remote model's egress proxy (Restricted profiles): connections
    /// refused by the policy.
    pub egress_refused: u64,
    /// A remote model's egress proxy: bytes sent to the endpoint.
    pub egress_bytes_out: u64,
    /// A remote model's egress proxy: bytes received from the endpoint.
    pub egress_bytes_in: u64,
}

/// The counters, updated as things happen (per request or per worker,
/// never per token).
#[derive(Debug, Default)]
pub(super) struct Counters {
    m: Mutex<RunnerMetrics>,
}

impl Counters {
    fn with(&self, f: impl FnOnce(&mut RunnerMetrics)) {
        let mut m = self.m.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut m);
    }

    pub fn overloaded(&self) {
        self.with(|m| m.requests_overloaded += 1);
    }

    pub fn cancelled(&self) {
        self.with(|m| m.requests_cancelled += 1);
    }

    pub fn expired_in_queue(&self) {
        self.with(|m| m.requests_expired_in_queue += 1);
    }

    pub fn admitted(&self, waited: Duration) {
        let ms = waited.as_secs_f64() * 1e3;
        self.with(|m| {
            m.admitted += 1;
            m.queue_wait_ms_total += ms;
            m.queue_wait_ms_max = m.queue_wait_ms_max.max(ms);
        });
    }

    pub fn finished(&self, ok: Option<(u32, u32, u32)>) {
        self.with(|m| match ok {
            Some((input, cached, output)) => {
                m.requests_ok += 1;
                m.input_tokens += u64::from(input);
                m.cached_tokens += u64::from(cached);
                m.output_tokens += u64::from(output);
            }
            None => m.requests_failed += 1,
        });
    }

    pub fn loaded(&self, load: Duration) {
        self.with(|m| {
            m.loads += 1;
            m.load_ms_total += load.as_secs_f64() * 1e3;
        });
    }

    pub fn unloaded(&self, why: Unload) {
        self.with(|m| match why {
            Unload::KeepAlive => m.unloads_keep_alive += 1,
            Unload::Evicted => m.evictions += 1,
            Unload::Retired => m.retirements += 1,
            Unload::Failed => m.worker_failures += 1,
        });
    }

    pub fn peak(&self, bytes: u64) {
        let mb = bytes as f64 / (1024.0 * 1024.0);
        self.with(|m| m.memory_peak_mb = Some(m.memory_peak_mb.map_or(mb, |p| p.max(mb))));
    }

    /// Counts `tokens` of cache as held until the guard is dropped.
    pub fn hold_cache(self: &Arc<Self>, tokens: u64) -> CacheHold {
        self.with(|m| {
            m.cache_tokens_reserved += tokens;
            m.requests_started += 1;
        });
        CacheHold {
            counters: self.clone(),
            tokens,
        }
    }

    pub fn snapshot(&self) -> RunnerMetrics {
        self.m.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Cache a running request holds in its worker, counted in
/// [`RunnerMetrics::cache_tokens_reserved`] until dropped (however the
/// request ends).
#[derive(Debug)]
pub(super) struct CacheHold {
    counters: Arc<Counters>,
    tokens: u64,
}

impl CacheHold {
    /// The tokens held.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

impl Drop for CacheHold {
    fn drop(&mut self) {
        let t = self.tokens;
        self.counters.with(|m| {
            m.cache_tokens_reserved = m.cache_tokens_reserved.saturating_sub(t);
            m.requests_started = m.requests_started.saturating_sub(1);
        });
    }
}
