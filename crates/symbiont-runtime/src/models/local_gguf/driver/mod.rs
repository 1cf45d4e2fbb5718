//! One worker's driver: the task that owns a running worker and everything
//! said to it.
//!
//! Requests reach it as [`Command::Run`] with their slot permit and a
//! channel for their events; it sends `Generate`, routes the worker's
//! events by request id, and holds each permit until the worker has
//! finished that request, so a slot is free only when the worker says so.
//! It enforces each request's deadline (`Cancel`, then the kill after the
//! grace), cancels a request whose caller went away (its future or stream
//! dropped: [`CancelOnDrop`]), and unloads the worker after its keep-alive.
//!
//! The worker is untrusted: anything it sends is checked against what the
//! protocol allows for the requests it runs (their ids, order, text and
//! token caps); a violation kills it. Requests that had already received
//! something fail with `WorkerCrashed` naming the violation; those that had
//! not get [`Event::Retry`] with their permit and run again on a fresh
//! worker (at most 3 attempts in all: `request.rs`'s `MAX_ATTEMPTS`). When no request takes the blame, the driver records the
//! kill in the audit log itself.

mod events;
mod request;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use symbiont_slm_protocol::{
    Finish, FromWorker, GenerateRequest, GenerationStats, ModelFacts, ToWorker,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::request::{Active, CancelWhy, Cancelled, Progress};
use super::budget::Lease;
use super::metrics::{Counters, Unload};
use super::queue::SlotPermit;
use super::worker::{self, Next, Worker};
use crate::audit::AuditKind;
use crate::models::stream::{reader_behind, REQUEST_EVENTS};
use crate::models::{SlmRunnerError, WorkerLoss};

/// What the driver tells a request.
#[derive(Debug)]
pub(super) enum Event {
    /// The worker tokenized the prompt.
    PromptRead,
    /// Generated text.
    Token(String),
    /// A piece of a tool call (checked: a named piece opens call `index`,
    /// the next ones extend it).
    ToolCall {
        index: u32,
        name: Option<String>,
        arguments: String,
    },
    /// The end, with the worker's figures and its peak resident memory.
    Done {
        stats: GenerationStats,
        peak_rss: Option<u64>,
    },
    /// The request's deadline passed (the worker stopped it, or was killed).
    Timeout,
    /// The embedding of an embedding request (then `Done`).
    Embedding(Vec<f32>),
    /// The request failed.
    Failed(SlmRunnerError),
    /// The worker was lost before this request received anything, through
    /// no fault of its own: run it again (with this permit) on a fresh one.
    Retry(SlotPermit),
}

/// What a request or the runner asks of the driver.
pub(super) enum Command {
    Run {
        request: Box<GenerateRequest>,
        deadline: Instant,
        events: mpsc::Sender<Event>,
        permit: SlotPermit,
        /// Who it runs for, named in the audit events of its end.
        caller: Caller,
    },
    /// The caller went away: stop the request within one decode step.
    Cancel {
        id: u64,
    },
    Ping {
        nonce: u64,
        reply: PingReply,
    },
    /// Finish what runs, then exit: evicted for room, or retired near its
    /// CPU backstop.
    Drain(Unload),
}

type PingReply = oneshot::Sender<Result<(), SlmRunnerError>>;

/// Who a request runs for: its agent and the service's request id, which
/// the audit events of its end carry (the driver's task serves many
/// requests: it has no request of its own).
#[derive(Debug, Clone, Default)]
pub(super) struct Caller {
    pub agent: Option<Arc<str>>,
    pub request_id: Option<Arc<str>>,
}

/// Records an audit event: kind, control, detail, agent.
pub(super) type Audit = Arc<dyn Fn(AuditKind, &str, String, Option<&str>) + Send + Sync>;

/// Tells a request how it ended, recording first the audit event its
/// failure gives (a worker lost, a limit hit, its deadline): here, where
/// it happens, not when (or whether) the request's reader reads it.
fn tell_end(audit: &Audit, caller: &Caller, events: &mpsc::Sender<Event>, end: Event) {
    let agent = caller.agent.as_deref();
    crate::audit::with_request_id(caller.request_id.clone(), || match &end {
        Event::Failed(e) => {
            if let Some((kind, control)) = super::metadata::audit_event_for(e) {
                audit(kind, &control, e.to_string(), agent);
            }
        }
        Event::Timeout => audit(
            AuditKind::LimitHit,
            "process_limits.max_execution_time_seconds",
            "the request's deadline passed; it was stopped".into(),
            agent,
        ),
        _ => {}
    });
    let _ = events.try_send(end);
}

/// Settings the driver needs from its runner.
pub(super) struct Settings {
    /// The model id and profile name the log lines name.
    pub model: Arc<str>,
    pub profile: Arc<str>,
    pub keep_alive: Duration,
    pub batch_size: u32,
    pub context_size: u32,
    /// Tokens of KV cache the worker's requests share.
    pub cache_tokens: u32,
    pub cancel_grace_steps: u32,
    pub audit: Audit,
    /// Worker failures in a row (for the start's back-off).
    pub crashes: Arc<CrashLog>,
    pub counters: Arc<Counters>,
}

/// Workers of one tenant that failed in a row (crashed, killed for a
/// violation or an ignored cancel), counted once per worker; a request
/// that finishes resets it.
#[derive(Debug, Default)]
pub(super) struct CrashLog {
    inner: std::sync::Mutex<(u32, Option<Instant>)>,
}

impl CrashLog {
    pub fn record(&self) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *c = (c.0 + 1, Some(Instant::now()));
    }

    fn reset(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0 = 0;
    }

    /// Failures in a row, and when the last one was.
    pub fn get(&self) -> (u32, Option<Instant>) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a fresh worker waits for the request that started it before
/// it counts as idle (and may be evicted or unloaded).
const FRESH: Duration = Duration::from_secs(1);

/// A handle on a driven worker; cheap to clone.
#[derive(Clone)]
pub(super) struct Driven {
    tx: mpsc::UnboundedSender<Command>,
    pid: u32,
    /// When it was loaded, its keep-alive, and since when it is idle
    /// (`None`: busy), for `ps`.
    loaded_at: Instant,
    keep_alive: Duration,
    idle: Arc<std::sync::Mutex<Option<Instant>>>,
    facts: Arc<ModelFacts>,
    alive: Arc<AtomicBool>,
    /// Told to drain: it takes no new request.
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Driven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driven")
            .field("pid", &self.pid)
            .field("alive", &self.alive())
            .finish()
    }
}

impl Driven {
    /// Starts the driver task for a loaded worker.
    pub fn spawn(worker: Worker, lease: Lease, settings: Settings) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let draining = Arc::new(AtomicBool::new(false));
        // Evicted for room only while idle: it drains (nothing to finish)
        // and exits, returning its lease. A weak sender: the budget holding
        // this callback must not keep the driver alive once the runner is
        // gone.
        let evict = tx.downgrade();
        let evicting = draining.clone();
        lease.on_evict(move || {
            evicting.store(true, Ordering::Release);
            if let Some(tx) = evict.upgrade() {
                let _ = tx.send(Command::Drain(Unload::Evicted));
            }
        });
        let alive = Arc::new(AtomicBool::new(true));
        let now = Instant::now();
        let idle = Arc::new(std::sync::Mutex::new(Some(now)));
        let driven = Self {
            tx,
            pid: worker.pid(),
            loaded_at: now,
            keep_alive: settings.keep_alive,
            idle: idle.clone(),
            facts: Arc::new(worker.facts.clone()),
            alive: alive.clone(),
            draining,
        };
        let driver = Driver {
            w: worker,
            settings,
            active: HashMap::new(),
            pings: Vec::new(),
            draining: false,
            idle_since: Some(now),
            idle_shared: idle,
            fresh: true,
            started: Instant::now(),
            lease,
            unload: Unload::KeepAlive,
        };
        tokio::spawn(async move {
            driver.run(rx).await;
            alive.store(false, Ordering::Release);
        });
        driven
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// How long it has been loaded.
    pub fn loaded_for(&self) -> Duration {
        self.loaded_at.elapsed()
    }

    /// How long it has been idle (`None`: it runs something).
    pub fn idle_for(&self) -> Option<Duration> {
        let since = *self.idle.lock().ok()?;
        since.map(|t| t.elapsed())
    }

    /// Its keep-alive (pinned: about 136 years).
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// Whether the worker still runs and takes requests (not killed,
    /// crashed, unloaded, or draining).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && !self.tx.is_closed()
    }

    /// Lets the worker finish what it runs, then exit; it takes nothing new.
    pub fn drain(&self, why: Unload) {
        self.draining.store(true, Ordering::Release);
        let _ = self.tx.send(Command::Drain(why));
    }

    /// Hands a command to the driver; gives it back if the driver is gone.
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        self.tx.send(cmd).map_err(|e| e.0)
    }

    /// A guard that cancels request `id` when dropped unless disarmed.
    pub fn cancel_on_drop(&self, id: u64) -> CancelOnDrop {
        CancelOnDrop {
            tx: self.tx.clone(),
            id,
            armed: true,
        }
    }
}

/// Cancels a request when the future that follows it is dropped.
pub(super) struct CancelOnDrop {
    tx: mpsc::UnboundedSender<Command>,
    id: u64,
    armed: bool,
}

impl CancelOnDrop {
    /// The request ended: nothing to cancel.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Command::Cancel { id: self.id });
        }
    }
}

/// The channel a request's events come through: [`REQUEST_EVENTS`]
/// places, and one more kept for the request's last event.
pub(super) fn request_events() -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
    mpsc::channel(REQUEST_EVENTS + 1)
}

struct Driver {
    w: Worker,
    settings: Settings,
    active: HashMap<u64, Active>,
    /// Pings sent: nonce, when the answer is due, whom to tell.
    pings: Vec<(u64, Instant, PingReply)>,
    draining: bool,
    idle_since: Option<Instant>,
    /// `idle_since` for [`Driven::idle_since`], set when it changes.
    idle_shared: Arc<std::sync::Mutex<Option<Instant>>>,
    /// No command yet: the request that started the worker is on its way
    /// (for at most [`FRESH`]).
    fresh: bool,
    started: Instant,
    /// Why it will stop, if it drains.
    unload: Unload,
    /// The worker's share of the host budget, returned when the driver
    /// ends (after the worker is gone).
    lease: Lease,
}

/// How the worker ended, for the requests it ran.
enum End {
    /// Unloaded (idle, drained, or the runner is gone).
    Unloaded,
    /// It broke the protocol: kill; `culprit` is the request it concerned.
    Violation { why: String, culprit: Option<u64> },
    /// It died or closed its output.
    Lost(String),
    /// A write to it failed; the error already says why (a worker that
    /// stopped reading was killed for it, a dead one was described).
    WriteFailed(SlmRunnerError),
    /// It ignored a cancel of request `id`.
    IgnoredCancel { id: u64, grace: Duration },
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let end = loop {
            let wake = self.next_wake();
            let step = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    // The runner is gone.
                    None => Err(End::Unloaded),
                },
                next = self.w.next(wake) => self.event(next).await,
            };
            if let Err(end) = step {
                break end;
            }
            if self.fresh && self.started.elapsed() >= FRESH {
                self.fresh = false;
            }
            self.lease.set_idle(self.active.is_empty() && !self.fresh);
            if self.active.is_empty() {
                let idle = match self.idle_since {
                    Some(t) => t,
                    None => {
                        let now = Instant::now();
                        self.idle_since = Some(now);
                        self.publish_idle();
                        now
                    }
                };
                if self.draining || idle.elapsed() >= self.keep_alive() {
                    break End::Unloaded;
                }
            } else if self.idle_since.take().is_some() {
                self.publish_idle();
            }
        };
        // Commands that came too late: requests go to a fresh worker.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Run { events, permit, .. } => {
                    let _ = events.try_send(Event::Retry(permit));
                }
                Command::Ping { reply, .. } => {
                    let _ = reply.send(Err(SlmRunnerError::ExecutionFailed {
                        reason: "the worker stopped".into(),
                    }));
                }
                Command::Cancel { .. } | Command::Drain(_) => {}
            }
        }
        self.end(end).await;
    }

    /// Idle time before unloading: the setting, but at least a second
    /// before the first command (the request that started the worker is
    /// on its way).
    fn publish_idle(&self) {
        if let Ok(mut shared) = self.idle_shared.lock() {
            *shared = self.idle_since;
        }
    }

    fn keep_alive(&self) -> Duration {
        if self.fresh {
            self.settings.keep_alive.max(Duration::from_secs(1))
        } else {
            self.settings.keep_alive
        }
    }

    /// The next moment something is due: a deadline, the end of a cancel
    /// grace, a ping's answer, the keep-alive.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let requests = self.active.values().map(|a| match a.cancelled {
            Some(c) => c.at + c.grace,
            None => a.deadline,
        });
        let pings = self.pings.iter().map(|p| p.1);
        let idle = self.idle_since.map(|t| t + self.keep_alive());
        let fresh = self.fresh.then_some(self.started + FRESH);
        requests
            .chain(pings)
            .chain(idle)
            .chain(fresh)
            .min()
            .unwrap_or(far)
    }

    async fn command(&mut self, cmd: Command) -> Result<(), End> {
        self.fresh = false;
        match cmd {
            Command::Run {
                request,
                deadline,
                events,
                permit,
                caller,
            } => {
                let id = request.id;
                let max_tokens = request.max_tokens as usize;
                let embed = request.embed;
                // The functions it may call (a call to another is the
                // worker's lie).
                let tools: Vec<String> = request
                    .tools
                    .iter()
                    .flat_map(|t| t.functions.iter().map(|f| f.name.clone()))
                    .collect();
                let parallel = request.tools.as_ref().is_some_and(|t| t.parallel);
                if self.draining {
                    let _ = events.try_send(Event::Retry(permit));
                    return Ok(());
                }
                match self.w.send(&ToWorker::Generate(*request)).await {
                    Ok(()) => {}
                    // The request cannot be put in a frame: its fault, not
                    // the worker's (nothing was written).
                    Err(e @ SlmRunnerError::InvalidInput { .. }) => {
                        tell_end(&self.settings.audit, &caller, &events, Event::Failed(e));
                        return Ok(());
                    }
                    Err(e) => {
                        tell_end(
                            &self.settings.audit,
                            &caller,
                            &events,
                            Event::Failed(e.clone()),
                        );
                        return Err(End::WriteFailed(e));
                    }
                }
                self.active.insert(
                    id,
                    Active {
                        events,
                        permit,
                        deadline,
                        max_tokens,
                        cancelled: None,
                        progress: Progress::Sent,
                        frames: 0,
                        bytes: 0,
                        received: false,
                        embed,
                        tools,
                        parallel,
                        calls: 0,
                        caller,
                        cache: None,
                    },
                );
                Ok(())
            }
            Command::Cancel { id } => self.cancel(id, CancelWhy::Caller).await,
            Command::Ping { nonce, reply } => {
                if let Err(e) = self.w.send(&ToWorker::Ping { nonce }).await {
                    let _ = reply.send(Err(e.clone()));
                    return Err(End::WriteFailed(e));
                }
                self.pings
                    .push((nonce, Instant::now() + Duration::from_secs(5), reply));
                Ok(())
            }
            Command::Drain(why) => {
                if !self.draining {
                    self.unload = why;
                }
                self.draining = true;
                Ok(())
            }
        }
    }

    /// Sends `Cancel` for a running request (once) and starts its grace.
    pub(super) async fn cancel(&mut self, id: u64, why: CancelWhy) -> Result<(), End> {
        if self.active.get(&id).is_none_or(|a| a.cancelled.is_some()) {
            return Ok(());
        }
        // The grace fits the step the worker may be in: while any request
        // is still reading its prompt, a step may carry a whole batch of
        // prompt tokens (this request's or another's); else one token.
        let batch = self.settings.batch_size.max(1);
        let reading = self
            .active
            .values()
            .any(|a| !matches!(a.progress, Progress::Generating { .. }));
        let grace = self.w.cancel_grace(reading.then_some(batch));
        if let Some(a) = self.active.get_mut(&id) {
            a.cancelled = Some(Cancelled {
                at: Instant::now(),
                grace,
                why,
            });
        }
        self.w
            .send(&ToWorker::Cancel { id })
            .await
            .map_err(End::WriteFailed)
    }

    /// A wake-up: deadlines, cancel graces, pings.
    async fn deadlines(&mut self) -> Result<(), End> {
        let now = Instant::now();
        let due: Vec<(u64, Option<Duration>)> = self
            .active
            .iter()
            .filter_map(|(&id, a)| match a.cancelled {
                Some(c) if now >= c.at + c.grace => Some((id, Some(c.grace))),
                None if now >= a.deadline => Some((id, None)),
                _ => None,
            })
            .collect();
        for (id, grace) in due {
            match grace {
                Some(grace) => return Err(End::IgnoredCancel { id, grace }),
                None => self.cancel(id, CancelWhy::Deadline).await?,
            }
        }
        let mut i = 0;
        while i < self.pings.len() {
            if now >= self.pings[i].1 {
                let (_, _, reply) = self.pings.swap_remove(i);
                let _ = reply.send(Err(SlmRunnerError::ExecutionFailed {
                    reason: "the worker did not answer a ping within 5 s".into(),
                }));
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Fails every running request with `err` (a timed-out one with its
    /// timeout).
    fn fail_all(&mut self, err: &SlmRunnerError) {
        let audit = self.settings.audit.clone();
        for (_, a) in self.active.drain() {
            a.end(
                &audit,
                if a.timed_out() {
                    Event::Timeout
                } else {
                    Event::Failed(err.clone())
                },
            );
        }
    }

    /// Stops the worker and tells every request it ran.
    async fn end(mut self, end: End) {
        let pid = self.w.pid();
        let audit = self.settings.audit.clone();
        let counters = self.settings.counters.clone();
        let (model, profile) = (self.settings.model.clone(), self.settings.profile.clone());
        if matches!(end, End::Unloaded) {
            let why = if self.draining {
                self.unload
            } else {
                Unload::KeepAlive
            };
            counters.unloaded(why);
            // One line per unload at the default level: an operator sees
            // memory come back, and why.
            tracing::info!(
                target: "symbi_slm_models",
                %model,
                %profile,
                pid,
                reason = why.as_str(),
                "worker unloaded"
            );
        } else {
            counters.unloaded(Unload::Failed);
            self.settings.crashes.record();
        }
        match end {
            End::Unloaded => {
                for (_, a) in self.active.drain() {
                    let _ = a.events.try_send(Event::Retry(a.permit));
                }
                self.w.shutdown().await;
            }
            End::Violation { why, culprit } => {
                let err = self.w.violated(&why).await;
                tracing::warn!(target: "symbi_slm_models", %model, %profile, pid, "worker killed: {err}");
                let mut blamed = false;
                for (id, a) in self.active.drain() {
                    if Some(id) == culprit || a.received {
                        blamed = true;
                        a.end(&audit, Event::Failed(err.clone()));
                    } else {
                        let _ = a.events.try_send(Event::Retry(a.permit));
                    }
                }
                if !blamed {
                    audit(AuditKind::Kill, "worker protocol", err.to_string(), None);
                }
            }
            End::Lost(why) => {
                let err = self.w.crashed(&why).await;
                tracing::warn!(target: "symbi_slm_models", %model, %profile, pid, "worker lost: {err}");
                self.fail_all(&err);
            }
            End::WriteFailed(err) => {
                // Make sure it is gone (a failed write may leave a live
                // process behind).
                self.w.kill().await;
                tracing::warn!(target: "symbi_slm_models", %model, %profile, pid, "worker killed: {err}");
                self.fail_all(&err);
            }
            End::IgnoredCancel { id, grace } => {
                tracing::warn!(
                    target: "symbi_slm_models",
                    %model,
                    %profile,
                    request = id,
                    pid,
                    "worker ignored cancel; killing its process group"
                );
                self.w.kill().await;
                audit(
                    AuditKind::Kill,
                    "process_limits.max_execution_time_seconds",
                    format!(
                        "worker pid {pid} did not answer a cancel within {} ms (grace: {} × its slowest measured step); its process group was killed",
                        grace.as_millis(),
                        self.settings.cancel_grace_steps
                    ),
                    None,
                );
                for (other, a) in self.active.drain() {
                    let event = if a.timed_out() {
                        Event::Timeout
                    } else if other == id {
                        Event::Failed(SlmRunnerError::ExecutionFailed {
                            reason: "the worker ignored a cancel and was killed".into(),
                        })
                    } else if !a.received {
                        Event::Retry(a.permit)
                    } else {
                        Event::Failed(SlmRunnerError::WorkerCrashed {
                            cause: WorkerLoss::IgnoredCancel { request: id },
                            stderr_tail: String::new(),
                        })
                    };
                    tell_end(&audit, &a.caller, &a.events, event);
                }
            }
        }
        for (_, _, reply) in self.pings.drain(..) {
            let _ = reply.send(Err(SlmRunnerError::ExecutionFailed {
                reason: "the worker stopped".into(),
            }));
        }
    }
}
