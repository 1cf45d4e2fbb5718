//! What a runner's workers are doing now, for `symbi-slm ps`.

use std::sync::Arc;

use super::{LocalGgufRunner, Tenant};

/// One running worker, as [`LocalGgufRunner::workers`] sees it now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The agent it serves alone (agents isolated), or `None`: shared.
    pub agent: Option<String>,
    /// Its process id.
    pub pid: u32,
    /// Requests it runs at once.
    pub slots: u32,
    /// Slots running a request now.
    pub busy: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Tokens of KV cache its slots share.
    pub cache_tokens: u32,
    /// Resident memory now (`VmRSS`), MB.
    pub memory_mb: Option<f64>,
    /// Peak resident memory (`VmHWM`), MB.
    pub peak_memory_mb: Option<f64>,
    /// What the runner estimated and leased for it, MB.
    pub estimate_mb: u64,
    /// Since it was loaded, seconds.
    pub loaded_seconds: f64,
    /// Since its last request ended (`None`: it runs one), seconds.
    pub idle_seconds: Option<f64>,
    /// Until its keep-alive unloads it, if it stays idle (`None`: busy, or
    /// pinned), seconds.
    pub keep_alive_left_seconds: Option<f64>,
    /// Loaded for as long as the runner lives.
    pub pinned: bool,
}

impl LocalGgufRunner {
    /// Every running worker now: who it serves, its slots and queue, its
    /// memory (the kernel's accounting, `/proc/PID/status`) against the
    /// estimate, how long it has been loaded and idle, and how long its
    /// keep-alive leaves it (what `symbi-slm ps` shows).
    pub async fn workers(&self) -> Vec<WorkerStatus> {
        let tenants: Vec<(String, Arc<Tenant>)> = {
            let t = self
                .shared
                .tenants
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut all: Vec<_> = t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let mut out = Vec::new();
        for (key, t) in tenants {
            // A worker starting holds this lock through its load (or its
            // wait for room): it shows once loaded, and `ps` never waits.
            let Ok(state) = t.state.try_lock() else {
                continue;
            };
            let Some(d) = state.driven.as_ref().filter(|d| d.alive()) else {
                continue;
            };
            let (busy, queued) = t.admission.load();
            let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).ok();
            let kb = |field: &str| {
                status.as_deref().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
            };
            let idle = d.idle_for();
            out.push(WorkerStatus {
                agent: (!key.is_empty()).then_some(key),
                pid: d.pid(),
                slots: self.shared.slots,
                busy,
                queued,
                cache_tokens: self.shared.cache_tokens,
                memory_mb: kb("VmRSS:").map(|k| k as f64 / 1024.0),
                peak_memory_mb: kb("VmHWM:").map(|k| k as f64 / 1024.0),
                estimate_mb: self.shared.need_mb,
                loaded_seconds: d.loaded_for().as_secs_f64(),
                idle_seconds: idle.map(|i| i.as_secs_f64()),
                keep_alive_left_seconds: if self.shared.pinned {
                    None
                } else {
                    idle.map(|i| d.keep_alive().saturating_sub(i).as_secs_f64())
                },
                pinned: self.shared.pinned,
            });
        }
        out
    }
}
