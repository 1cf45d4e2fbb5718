//! One worker process: spawning it, its pipes, its stderr, its death.
//!
//! The worker is started with a scrubbed environment (only
//! `GGML_NO_BACKTRACE=1`, so that ggml's abort handler does not run gdb), in its own process group, with its stdin,
//! stdout and stderr as pipes and nothing else. It is killed, with its whole
//! group, when the handle is dropped or killed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use symbiont_slm_protocol::{encode, FromWorker, LaunchSpec, ModelFacts, ToWorker, MODEL_FD};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use super::confinement::verify_confinement;
use super::frames::{FrameReader, OutputEnd};
use crate::models::{SlmRunnerError, WorkerLoss};

/// Largest frame the supervisor reads from a worker. A worker's messages
/// are small (a token's text, figures, the model's facts); a bigger frame
/// is a protocol violation, refused before its bytes are read.
pub(super) const MAX_FRAME_FROM_WORKER: usize = 256 * 1024;
/// Longest text one piece may carry: llama.cpp's pieces are a few bytes,
/// but text held back while it might start a stop sequence (at most
/// `MAX_STOP_BYTES`) comes out with a later piece.
pub(super) const MAX_PIECE_BYTES: usize = 4096;
/// How long a write to the worker may block before the worker is taken
/// for lost (it reads its input on a thread of its own, always).
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the worker's stderr passed on to `tracing` per second; the
/// rest are counted and reported as suppressed.
const STDERR_LINES_PER_SECOND: u32 = 50;
/// Lines of the worker's stderr kept for crash reports.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept; longer lines are cut.
const STDERR_LINE_BYTES: usize = 1024;

/// Forks `cmd` on a thread that lives as long as the process. The worker's
/// parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that
/// forked it exits, and the threads that poll a future come and go (a
/// `block_in_place`, a `Handle::block_on` from a short-lived thread, a
/// runtime dropped while another goes on): forked there, a worker would be
/// killed while its supervisor lives. The child is registered with the
/// caller's runtime.
async fn spawn_on_lasting_thread(mut cmd: Command, deadline: Instant) -> std::io::Result<Child> {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let spawner = match SPAWNER.get() {
        Some(s) => s,
        None => {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("symbi-slm-spawner".into())
                .spawn(move || {
                    for job in rx {
                        // A panic in one spawn must not take the thread
                        // (and every later start) with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
            // A racing caller may have set it first; this thread then ends
            // when `tx` goes.
            let _ = SPAWNER.set(tx);
            SPAWNER.get().expect("set just above")
        }
    };
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The start gave up (its deadline passed while this waited): no
        // worker to kill at once.
        if tx.is_closed() {
            return;
        }
        let _runtime = handle.enter();
        let _ = tx.send(cmd.spawn());
    });
    spawner
        .send(job)
        .map_err(|_| std::io::Error::other("the worker spawner thread is gone"))?;
    // A spawn stuck in the kernel (a worker binary on a hung mount) holds
    // the spawner; this start gives up at its deadline.
    tokio::time::timeout_at(deadline, rx)
        .await
        .map_err(|_| std::io::Error::other("the worker did not start before the deadline"))?
        .map_err(|_| std::io::Error::other("the worker spawner thread dropped the request"))?
}

/// A running, loaded worker.
#[derive(Debug)]
pub(super) struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    /// The worker's stdout, read by whoever waits for its next event
    /// (the driver, once it runs): no task and no channel in between.
    events: FrameReader,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    memory_limit: Option<u64>,
    /// Slowest costs measured on this worker (decaying), for the cancel
    /// grace: per prompt token (prompts are decoded in batches), and per
    /// generated token.
    prompt_token_cost: Option<(Duration, Instant)>,
    token_step: Option<(Duration, Instant)>,
    pub facts: ModelFacts,
    /// The worker's private scratch directory, removed with the handle.
    _scratch: Option<tempfile::TempDir>,
}

/// How a wait for the next event ended.
pub(super) enum Next {
    Event(FromWorker),
    /// The worker closed its stdout: it is dead or lost.
    Lost(String),
    /// It broke the framing.
    Violation(String),
    /// The deadline passed first.
    Deadline,
}

impl Worker {
    /// Starts a worker and waits until it has loaded the model.
    pub async fn start(
        worker_path: &Path,
        spec: LaunchSpec,
        model_file: std::fs::File,
        scratch: Option<tempfile::TempDir>,
        deadline: Instant,
    ) -> Result<Worker, SlmRunnerError> {
        let memory_limit = spec.sandbox.address_space_bytes;
        let mut cmd = Command::new(worker_path);
        cmd.env_clear()
            // ggml's abort handler would otherwise try to run gdb.
            .env("GGML_NO_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // The model, as the descriptor the supervisor checked (the worker's
        // MODEL_FD; closed here when `cmd` goes).
        symbiont_sandbox::spawn::inherit_fd(cmd.as_std_mut(), model_file.into(), MODEL_FD);
        let mut child = spawn_on_lasting_thread(cmd, deadline).await.map_err(|e| {
            SlmRunnerError::InitializationFailed {
                reason: format!("cannot start worker {}: {e}", worker_path.display()),
            }
        })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SlmRunnerError::InitializationFailed {
                reason: "worker pipes missing".into(),
            });
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(read_stderr(stderr, stderr_tail.clone(), pid));
        let events = FrameReader::new(stdout);
        let mut worker = Worker {
            child,
            pid,
            stdin,
            events,
            stderr_tail,
            memory_limit,
            prompt_token_cost: None,
            token_step: None,
            facts: placeholder_facts(),
            _scratch: scratch,
        };
        let plan = spec.sandbox.clone();
        worker.send(&ToWorker::Launch(spec)).await?;
        let mut confined = None;
        loop {
            match worker.next(deadline).await {
                Next::Event(FromWorker::Confined { sandbox }) if confined.is_none() => {
                    // The worker says it is confined; the kernel must agree
                    // before it is given anything.
                    if let Err(why) = verify_confinement(pid, &plan, &sandbox) {
                        worker.kill().await;
                        return Err(SlmRunnerError::SandboxViolation {
                            control: "sandbox set-up".into(),
                            detail: format!(
                                "the worker's report does not match the kernel's: {why}"
                            ),
                        });
                    }
                    confined = Some(sandbox);
                }
                Next::Event(FromWorker::Ready(mut facts)) => {
                    // What is in force is what was reported (and checked)
                    // before the model was parsed, never what comes after.
                    let Some(sandbox) = confined else {
                        worker.kill().await;
                        return Err(SlmRunnerError::SandboxViolation {
                            control: "sandbox set-up".into(),
                            detail:
                                "the worker reported ready without reporting its confinement first"
                                    .into(),
                        });
                    };
                    facts.sandbox = sandbox;
                    worker.facts = facts;
                    return Ok(worker);
                }
                Next::Event(FromWorker::LoadFailed { stage, detail }) => {
                    worker.kill().await;
                    // The worker's words, bounded and without control
                    // characters, before they reach errors and the audit.
                    let detail = clean(&detail, 2048);
                    if stage == symbiont_slm_protocol::LoadStage::Sandbox && confined.is_some() {
                        return Err(SlmRunnerError::WorkerCrashed {
                            cause: WorkerLoss::ProtocolViolation {
                                detail: "a sandbox failure reported after the sandbox was reported in force".into(),
                            },
                            stderr_tail: worker.stderr_text().await,
                        });
                    }
                    // llama.cpp reports why in its log, not in the null
                    // pointer the binding turns into `detail`.
                    let tail = worker.stderr_text().await;
                    if let Some(limit) =
                        memory_limit.filter(|_| looks_like_oom(&detail) || looks_like_oom(&tail))
                    {
                        return Err(memory_exceeded(limit, &format!("{tail}\n{detail}")));
                    }
                    if stage == symbiont_slm_protocol::LoadStage::Sandbox {
                        return Err(SlmRunnerError::SandboxViolation {
                            control: "sandbox set-up".into(),
                            detail,
                        });
                    }
                    let why = tail
                        .lines()
                        .rev()
                        .find(|l| l.contains("error"))
                        .unwrap_or("");
                    return Err(SlmRunnerError::InitializationFailed {
                        reason: format!("worker failed at {stage:?}: {detail}; {why}"),
                    });
                }
                Next::Event(other) => {
                    // Nothing else belongs in start-up, and the model is
                    // being parsed: the worker is untrusted already.
                    let why = format!("unexpected during start-up: {}", describe(&other));
                    return Err(worker.violated(&why).await);
                }
                Next::Lost(why) => return Err(worker.crashed(&why).await),
                Next::Violation(why) => return Err(worker.violated(&why).await),
                Next::Deadline => {
                    worker.kill().await;
                    return Err(SlmRunnerError::InitializationFailed {
                        reason: "the worker did not finish loading the model in time".into(),
                    });
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Records how long a prompt of `tokens` tokens took to decode (up to
    /// its first generated token).
    pub fn observe_prompt(&mut self, d: Duration, tokens: u32) {
        let per_token = d / tokens.max(1);
        self.prompt_token_cost = Some(decaying_max(self.prompt_token_cost, per_token));
    }

    /// Records the time between two generated tokens as the supervisor saw
    /// them arrive (frames read back-to-back after a delay say little and
    /// cannot lower the figure: it only decays with time).
    pub fn observe_token(&mut self, d: Duration) {
        self.token_step = Some(decaying_max(self.token_step, d));
    }

    /// How long this worker may take to answer a cancel before it is
    /// killed (see [`super::defaults::CANCEL_GRACE_MIN`]): a few of the
    /// steps it may be in the middle of. `prompt_batch`: the tokens of the
    /// prompt batch it may be decoding (when the request is still in its
    /// prompt), else it is between generated tokens.
    pub fn cancel_grace(&self, prompt_batch: Option<u32>) -> Duration {
        use super::defaults::{
            CANCEL_GRACE_MAX, CANCEL_GRACE_MIN, CANCEL_GRACE_STEPS, UNMEASURED_PROMPT_TOKEN,
            UNMEASURED_STEP,
        };
        let current = |m: Option<(Duration, Instant)>, unmeasured| {
            m.map_or(unmeasured, |(v, at)| decayed(v, at))
        };
        let step = match prompt_batch {
            Some(n) => current(self.prompt_token_cost, UNMEASURED_PROMPT_TOKEN) * n.max(1),
            None => current(self.token_step, UNMEASURED_STEP),
        };
        step.saturating_mul(CANCEL_GRACE_STEPS)
            .clamp(CANCEL_GRACE_MIN, CANCEL_GRACE_MAX)
    }

    /// Sends one message. The worker reads its input on a thread of its
    /// own at all times; one that stops reading (its pipe full for
    /// [`WRITE_TIMEOUT`]) is lost, never waited on.
    pub async fn send(&mut self, msg: &ToWorker) -> Result<(), SlmRunnerError> {
        let frame = encode(msg).map_err(|e| SlmRunnerError::InvalidInput {
            field: "prompt",
            reason: e.to_string(),
        })?;
        let write = async {
            self.stdin.write_all(&frame).await?;
            self.stdin.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.crashed(&format!("writing to worker: {e}")).await),
            Err(_) => {
                self.kill().await;
                Err(SlmRunnerError::WorkerCrashed {
                    cause: WorkerLoss::StoppedReading {
                        seconds: WRITE_TIMEOUT.as_secs(),
                    },
                    stderr_tail: self.stderr_text().await,
                })
            }
        }
    }

    /// Waits for the next event, or the deadline.
    pub async fn next(&mut self, deadline: Instant) -> Next {
        match tokio::time::timeout_at(deadline, self.events.next()).await {
            Err(_) => Next::Deadline,
            Ok(Ok(msg)) => Next::Event(msg),
            Ok(Err(OutputEnd::Lost(why))) => Next::Lost(why),
            Ok(Err(OutputEnd::Violation(why))) => Next::Violation(why),
        }
    }

    /// Kills a worker that broke the protocol and builds the error: a
    /// `WorkerCrashed` naming the violation.
    pub async fn violated(&mut self, why: &str) -> SlmRunnerError {
        self.kill().await;
        SlmRunnerError::WorkerCrashed {
            cause: WorkerLoss::ProtocolViolation {
                detail: why.to_string(),
            },
            stderr_tail: self.stderr_text().await,
        }
    }

    /// The kernel's figure for the worker's peak resident memory (VmHWM).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_bytes(self.pid)
    }

    /// Kills the worker's whole process group and reaps it.
    pub async fn kill(&mut self) {
        kill_group(self.pid);
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Asks the worker to exit; kills it if it does not within a second.
    pub async fn shutdown(mut self) {
        let msg = encode(&ToWorker::Shutdown).unwrap_or_default();
        let write = async {
            self.stdin.write_all(&msg).await?;
            self.stdin.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// Builds the `WorkerCrashed` error: waits briefly for the exit status
    /// (killing the group if the worker lingers) and takes the stderr tail.
    pub async fn crashed(&mut self, why: &str) -> SlmRunnerError {
        let mut cpu_limit = false;
        let cause = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                // SIGXCPU: the kernel's signal for a process past RLIMIT_CPU.
                cpu_limit = status.signal() == Some(nix::sys::signal::Signal::SIGXCPU as i32);
                match status.signal() {
                    Some(signal) => WorkerLoss::Signalled { signal },
                    None => WorkerLoss::Exited {
                        code: status.code().unwrap_or(-1),
                    },
                }
            }
            _ => {
                self.kill().await;
                WorkerLoss::Unresponsive {
                    what: why.to_string(),
                }
            }
        };
        let tail = self.stderr_text().await;
        if cpu_limit {
            return SlmRunnerError::ResourceLimitExceeded {
                limit: crate::models::ResourceLimit::CpuTime,
                detail: format!("the worker used up its RLIMIT_CPU backstop ({cause})"),
            };
        }
        if let Some(limit) = self.memory_limit.filter(|_| looks_like_oom(&tail)) {
            return memory_exceeded(limit, &format!("{cause}; {tail}"));
        }
        SlmRunnerError::WorkerCrashed {
            cause,
            stderr_tail: tail,
        }
    }

    /// The last lines the worker wrote to stderr, after giving the reader
    /// a moment to drain them.
    async fn stderr_text(&self) -> String {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// The slowest of `new` and `old`, where `old` loses a tenth of its value
/// per second since it was set (so that one slow spell does not stretch
/// the grace for ever, while a burst of quick samples cannot wipe it).
fn decaying_max(old: Option<(Duration, Instant)>, new: Duration) -> (Duration, Instant) {
    let now = Instant::now();
    match old {
        Some((value, at)) if new < decayed(value, at) => (value, at),
        _ => (new, now),
    }
}

/// `value` set at `at`, less a tenth per second since.
fn decayed(value: Duration, at: Instant) -> Duration {
    value.mul_f64(0.9f64.powf(at.elapsed().as_secs_f64()))
}

/// A short description of a message, for errors and logs (never the
/// whole text a worker sent).
pub(super) fn describe(msg: &FromWorker) -> String {
    clean(&format!("{msg:?}"), 120)
}

/// Text from the worker made fit for errors, logs and the audit log: at
/// most `max` characters, control and bidirectional-override characters
/// replaced.
pub(super) fn clean(text: &str, max: usize) -> String {
    crate::audit::clean_text(text, max)
}

/// Whether a failure text is an allocation failure (llama.cpp, libgomp and
/// the C++ runtime word it differently; under RLIMIT_AS all mean memory).
pub(super) fn looks_like_oom(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "failed to allocate",
        "bad_alloc",
        "cannot allocate memory",
        "out of memory",
        "thread creation failed",
        "unable to allocate",
        "memory allocation of",
        "insufficient memory",
        "mem_buffer != null",
    ]
    .iter()
    .any(|p| t.contains(p))
}

/// The error for a worker that ran out of its address-space limit.
pub(super) fn memory_exceeded(limit: u64, detail: &str) -> SlmRunnerError {
    SlmRunnerError::ResourceLimitExceeded {
        limit: crate::models::ResourceLimit::Memory,
        detail: format!(
            "the worker exceeded max_memory_mb = {} (RLIMIT_AS): {}",
            limit / (1024 * 1024),
            detail
                .lines()
                .find(|l| looks_like_oom(l))
                .or_else(|| detail.lines().last())
                .unwrap_or(detail)
                .trim()
        ),
    }
}

fn placeholder_facts() -> ModelFacts {
    ModelFacts {
        protocol_version: 0,
        worker_version: String::new(),
        architecture: None,
        name: None,
        parameters: 0,
        size_bytes: 0,
        trained_context: 0,
        context_size: 0,
        vocab_size: 0,
        chat_template: false,
        embedding_size: 0,
        threads: 0,
        load_ms: 0.0,
        sandbox: symbiont_slm_protocol::Applied {
            layers: Vec::new(),
            setup_micros: 0,
        },
    }
}

/// SIGKILL to the worker's process group (the worker leads its own group,
/// so this reaches anything it started too).
pub(super) fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// VmHWM of a process, from `/proc/<pid>/status`.
pub(super) fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/status"))).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Forwards the worker's stderr to `tracing` at debug level and keeps the
/// last lines. Reads in bounded chunks so a line without end cannot grow.
async fn read_stderr<R: AsyncRead + Unpin>(mut r: R, tail: Arc<Mutex<VecDeque<String>>>, pid: u32) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    // A worker may write anything: control characters (terminal escapes)
    // are replaced, and lines past a rate go uncounted into the log.
    let mut window = std::time::Instant::now();
    let mut in_window = 0u32;
    let mut suppressed = 0u64;
    let mut push = |line: &mut Vec<u8>| {
        let text = clean(String::from_utf8_lossy(line).trim_end(), STDERR_LINE_BYTES);
        line.clear();
        if text.is_empty() {
            return;
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if suppressed > 0 {
                tracing::debug!(target: "symbi_slm_worker", worker_pid = pid, "{suppressed} stderr lines suppressed");
            }
            window = std::time::Instant::now();
            in_window = 0;
            suppressed = 0;
        }
        in_window += 1;
        if in_window <= STDERR_LINES_PER_SECOND {
            tracing::debug!(target: "symbi_slm_worker", worker_pid = pid, "{text}");
        } else {
            suppressed += 1;
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text);
        }
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                push(&mut line);
            } else if line.len() < STDERR_LINE_BYTES {
                line.push(b);
            }
        }
    }
    push(&mut line);
}

/// CPU seconds (user + system) process `pid` has used, from /proc.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime is
    // the 14th field, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks as f64 / hz as f64)
}
