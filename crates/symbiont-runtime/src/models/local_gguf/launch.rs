//! The worker life cycle: a worker for a request (the running one, or a
//! fresh one: the model opened and checked, the sandbox plan made, the
//! process started and its confinement verified, backing off after
//! repeated crashes), retired before it could reach its CPU backstop.

use std::sync::Arc;
use std::time::Duration;

use symbiont_slm_protocol::{LaunchSpec, PROTOCOL_VERSION};
use tokio::time::Instant;

use super::driver::{Driven, Settings};
use super::metadata::ms;
use super::metrics::Unload;
use super::model_file::open_model_file_blocking;
use super::worker::{self, Worker};
use super::{defaults, sandbox_plan, Shared, Tenant};
use crate::audit::AuditKind;
use crate::models::SlmRunnerError;

impl Shared {
    /// The running worker, or a fresh one, and how long loading it took
    /// (ms) if it was loaded now. A failure once the request's deadline has
    /// passed is its timeout.
    pub(super) async fn worker_for(
        self: &Arc<Self>,
        tenant: &Tenant,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Driven, Option<f64>), SlmRunnerError> {
        let timeout_err = || SlmRunnerError::ExecutionTimeout {
            seconds: timeout.as_secs_f64(),
        };
        let mut state = tokio::time::timeout_at(deadline, tenant.state.lock())
            .await
            .map_err(|_| timeout_err())?;
        if let Some(d) = state.driven.take() {
            if d.alive() {
                if !self.near_cpu_backstop(&d) {
                    state.driven = Some(d.clone());
                    return Ok((d, None));
                }
                // It finishes what it runs, then exits; new requests go to
                // a fresh worker.
                d.drain(Unload::Retired);
            }
        }
        let started = Instant::now();
        match self.start(tenant, deadline).await {
            Ok(d) => {
                state.driven = Some(d.clone());
                Ok((d, Some(ms(started.elapsed()))))
            }
            Err(_) if Instant::now() >= deadline => Err(timeout_err()),
            Err(e) => Err(e),
        }
    }

    /// With a keep-alive of zero, unloads the worker as soon as no request
    /// runs or waits (it finishes nothing: there is nothing to finish).
    pub(super) async fn unload_if_idle_now(&self, tenant: &Tenant) {
        if !self.keep_alive.is_zero() || self.pinned {
            return;
        }
        let mut state = tenant.state.lock().await;
        if tenant.admission.load() == (0, 0) {
            if let Some(d) = state.driven.take() {
                d.drain(Unload::KeepAlive);
            }
        }
    }

    /// Whether a request could run the worker into its lifetime CPU
    /// backstop (RLIMIT_CPU): the requests it runs together use at most
    /// threads × max_execution_time_seconds.
    fn near_cpu_backstop(&self, d: &Driven) -> bool {
        let limit = sandbox_plan::cpu_backstop_seconds(&self.profile, self.threads) as f64;
        let one_request = (u64::from(self.threads)
            * self.profile.process_limits.max_execution_time_seconds)
            as f64;
        worker::cpu_seconds(d.pid()).is_some_and(|used| used + one_request > limit)
    }

    fn driver_settings(self: &Arc<Self>, tenant: &Tenant) -> Settings {
        let shared = Arc::downgrade(self);
        Settings {
            // Pinned: loaded for as long as the runner lives (the driver
            // ends when the runner goes).
            keep_alive: if self.pinned {
                Duration::from_secs(u32::MAX as u64)
            } else {
                self.keep_alive
            },
            model: self.model_label.as_str().into(),
            profile: self.profile_label.as_deref().unwrap_or("-").into(),
            batch_size: self.batch_size,
            context_size: self.context_size,
            cache_tokens: self.cache_tokens,
            cancel_grace_steps: defaults::CANCEL_GRACE_STEPS,
            crashes: tenant.crashes.clone(),
            counters: self.counters.clone(),
            audit: Arc::new(
                move |kind: AuditKind, control: &str, detail: String, agent: Option<&str>| {
                    if let Some(s) = shared.upgrade() {
                        s.audit(kind, control, detail, agent);
                    }
                },
            ),
        }
    }

    /// Starts a worker, backing off after repeated crashes.
    async fn start(
        self: &Arc<Self>,
        tenant: &Tenant,
        deadline: Instant,
    ) -> Result<Driven, SlmRunnerError> {
        let (crashes, last_crash) = tenant.crashes.get();
        if crashes >= 2 {
            let backoff = Duration::from_millis(250)
                .saturating_mul(1 << (crashes - 2).min(5))
                .min(Duration::from_secs(8));
            if let Some(at) = last_crash {
                let wait_until = at + backoff;
                if wait_until > deadline {
                    return Err(SlmRunnerError::InitializationFailed {
                        reason: format!(
                            "the worker crashed {crashes} times in a row; next start in {:.1} s",
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
        let (model_file, summary) =
            open_model_file_blocking(&self.model_path, self.pin.clone()).await?;
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
                        source: source.into(),
                    })?,
            )
        } else {
            None
        };
        let mut sandbox = sandbox_plan::plan_for(
            &self.profile,
            &self.model_path,
            scratch.as_ref().map(|d| d.path()),
            self.threads,
        )?;
        // Room in the host budget (idle workers evicted for it, or a wait);
        // the worker's CPUs are its lease's, shared with no other worker.
        let lease = self
            .budget
            .lease(self.need_mb, self.threads, self.pinned, deadline)
            .await?;
        sandbox.cpu_offset = lease.first_cpu;
        let spec = LaunchSpec {
            protocol_version: PROTOCOL_VERSION,
            model_path: self.model_path.clone(),
            threads: self.threads,
            context_size: self.context_size,
            cache_tokens: self.cache_tokens,
            batch_size: self.batch_size,
            slots: self.slots,
            supervisor_pid: std::process::id(),
            sandbox,
        };
        let load_deadline = deadline.min(Instant::now() + defaults::LOAD_TIMEOUT);
        let started = Instant::now();
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
                        &gap.kind.to_string(),
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
                self.counters.loaded(started.elapsed());
                tracing::info!(
                    target: "symbi_slm_models",
                    model = %self.model_label,
                    profile = self.profile_label.as_deref().unwrap_or("-"),
                    pid = w.pid(),
                    load_ms = started.elapsed().as_millis() as u64,
                    slots = self.slots,
                    context_size = self.context_size,
                    threads = self.threads,
                    estimate_mb = self.need_mb,
                    "worker loaded"
                );
                Ok(Driven::spawn(w, lease, self.driver_settings(tenant)))
            }
            Err(e) => {
                if matches!(e, SlmRunnerError::WorkerCrashed { .. }) {
                    tenant.crashes.record();
                }
                tracing::warn!(
                    target: "symbi_slm_models",
                    model = %self.model_label,
                    profile = self.profile_label.as_deref().unwrap_or("-"),
                    "worker failed to start: {e}"
                );
                Err(e)
            }
        }
    }
}
