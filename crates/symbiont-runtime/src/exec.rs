//! Any program under a sandbox profile (`symbi-slm sandbox exec`): the plan
//! a worker gets ([`sandbox_exec_plan_for`], the same builder), its private
//! scratch directory, the egress proxy of a `Restricted` profile, the
//! wall-clock limit, and what the program wrote handed back to the caller.
//!
//! The caller stays thin: it names the program and the extra paths, and
//! turns [`Exit`] into its own exit status.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use symbiont_sandbox::{exec, SandboxPlan};

use crate::audit::{AuditEvent, AuditKind, AuditLog};
use crate::config::SandboxProfile;
use crate::egress::{policy_for, AuditRefusals, PROXY_PORT};
use crate::models::{sandbox_exec_plan_for, threads_for};

/// A program to run under a profile.
#[derive(Debug)]
pub struct Program<'a> {
    /// The profile's name (in audit events).
    pub profile_name: &'a str,
    /// The profile.
    pub profile: &'a SandboxProfile,
    /// The program: an absolute path.
    pub path: PathBuf,
    /// Its arguments, the first being its name.
    pub args: &'a [OsString],
    /// Also readable.
    pub reads: Vec<PathBuf>,
    /// Also readable and writable.
    pub writes: Vec<PathBuf>,
    /// Also readable and executable.
    pub execs: Vec<PathBuf>,
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status (128 + the signal when a signal ended
    /// it).
    Status(i32),
    /// It ran past the profile's `max_execution_time_seconds`; it and
    /// every process it started were killed (recorded in the audit log).
    TimedOut {
        /// The limit, seconds.
        limit_seconds: u64,
    },
    /// This process was asked to stop (SIGINT, SIGTERM, SIGHUP, SIGQUIT)
    /// while the program ran: the program was killed.
    Interrupted {
        /// The signal.
        signal: i32,
    },
}

/// Why the program could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The caller's mistake: a path that does not exist, a profile whose
    /// plan cannot be built.
    #[error("{0}")]
    Input(String),
    /// This host's: a scratch directory, the sandbox's set-up.
    #[error("{0}")]
    Host(String),
}

/// Runs `program` under its profile and waits for it. For a command that
/// runs one program and exits, as `symbi-slm sandbox exec` does: the
/// process must be single-threaded (the child enters namespaces; a
/// threaded caller gets `ExecError::Host`), and under `Restricted` the
/// egress proxy serves from a thread of its own until the process exits,
/// so a second call in the same process is refused. Refusals of the
/// egress proxy and a kill at the time limit go to the log `audit` opens,
/// when it is first needed (a log that cannot be opened is said on
/// stderr, and the events still go to `tracing`); its warnings go to
/// stderr, named `symbi-slm sandbox:`.
pub fn run(
    program: Program<'_>,
    audit: &dyn Fn() -> Result<AuditLog, String>,
) -> Result<Exit, ExecError> {
    let p = program.profile;
    let absolute = |v: Vec<PathBuf>| -> Result<Vec<PathBuf>, ExecError> {
        v.into_iter()
            .map(|p| {
                std::fs::canonicalize(&p)
                    .map_err(|e| ExecError::Input(format!("{}: {e}", p.display())))
            })
            .collect()
    };
    let (reads, writes, execs) = (
        absolute(program.reads)?,
        absolute(program.writes)?,
        absolute(program.execs)?,
    );
    // The same private scratch directory a worker gets; removed when the
    // program has ended.
    let scratch = if p.filesystem.allow_temp_files {
        remove_stale_scratch();
        Some(
            tempfile::Builder::new()
                .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
                .tempdir()
                .map_err(|e| ExecError::Host(format!("scratch directory: {e}")))?,
        )
    } else {
        None
    };
    let mut plan = sandbox_exec_plan_for(
        p,
        &program.path,
        &reads,
        &writes,
        &execs,
        scratch.as_ref().map(|s| s.path()),
        threads_for(p.resources.max_cpu_cores),
    )
    .map_err(|e| ExecError::Input(e.to_string()))?;
    let mut env = vec![(
        OsString::from("PATH"),
        OsString::from("/usr/local/bin:/usr/bin:/bin"),
    )];
    if let Some(s) = &scratch {
        env.push((OsString::from("TMPDIR"), s.path().as_os_str().to_owned()));
    }
    // Restricted: the egress proxy, served here on a listener the
    // program's own network namespace holds; its address in there goes to
    // the program in the usual variables.
    let egress = policy_for(program.profile_name, p, None);
    let handoff = match egress {
        Some(_) => Some(
            symbiont_sandbox::proxy_handoff()
                .map_err(|e| ExecError::Host(format!("egress hand-off: {e}")))?,
        ),
        None => None,
    };
    if let Some((_, theirs)) = &handoff {
        plan.proxy_handoff_fd = Some(theirs.as_raw_fd());
        let url = OsString::from(format!("http://127.0.0.1:{PROXY_PORT}"));
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.push((OsString::from(var), url.clone()));
        }
    }
    let limit = p.process_limits.max_execution_time_seconds;
    let to_file = p.security.enable_audit_logging;
    let child = exec::spawn_confined(&plan, &program.path, program.args, &env)
        .map_err(|e| ExecError::Host(format!("sandbox exec: {e}")))?;
    let child_pid = child.pid();
    // The refusals' log, kept here too: the caller may end with `exit`,
    // so the count of repeated refusals is written before.
    let mut refusals_log = None;
    if let (Some((mine, theirs)), Some(policy)) = (handoff, egress) {
        drop(theirs);
        match symbiont_sandbox::receive_listener(&mine, Duration::from_secs(10)) {
            Ok(listener) => {
                let log = open_or_say(audit, "egress refusals go to the log output only");
                refusals_log = Some(log.clone());
                let observer: Arc<dyn symbiont_egress::Observer> =
                    Arc::new(AuditRefusals::new(log, to_file, None));
                serve_egress(listener, policy, observer);
            }
            // The child failed before its namespace was ready: it says
            // why and exits 125; nothing is served.
            Err(e) => eprintln!("symbi-slm sandbox: no egress proxy: {e}"),
        }
    }
    let ended = child
        .wait(Some(Duration::from_secs(limit)))
        .map_err(|e| ExecError::Host(format!("sandbox exec: {e}")))?;
    hand_back(&plan, child_pid, scratch.as_ref().map(|s| s.path()));
    drop(scratch);
    if let Some(log) = &refusals_log {
        log.flush(to_file);
    }
    if let Some(signal) = ended.interrupted {
        return Ok(Exit::Interrupted { signal });
    }
    if ended.timed_out {
        let detail = format!(
            "{} ran past max_execution_time_seconds = {limit}; it and every process it started were killed",
            program.path.display()
        );
        let event = AuditEvent::new(
            AuditKind::LimitHit,
            "process_limits.max_execution_time_seconds",
            detail,
        )
        .about(None, None, Some(program.profile_name));
        // A log that cannot be opened must not hide the kill.
        open_or_say(audit, "the kill goes to the log output only").record(&event, to_file);
        return Ok(Exit::TimedOut {
            limit_seconds: limit,
        });
    }
    let status = ended.status;
    Ok(Exit::Status(
        status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1),
    ))
}

/// The audit log, or `tracing` only, saying why.
fn open_or_say(audit: &dyn Fn() -> Result<AuditLog, String>, instead: &str) -> AuditLog {
    audit().unwrap_or_else(|e| {
        eprintln!("symbi-slm sandbox: {instead}: {e}");
        AuditLog::tracing_only()
    })
}

/// Serves the egress proxy on `listener` from a thread of its own until
/// the process exits.
fn serve_egress(
    listener: std::net::TcpListener,
    policy: symbiont_egress::Policy,
    observer: Arc<dyn symbiont_egress::Observer>,
) {
    let proxy = symbiont_egress::Proxy::new(policy).observed_by(observer);
    std::thread::spawn(move || {
        let served = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| {
                rt.block_on(async {
                    listener.set_nonblocking(true)?;
                    let l = tokio::net::TcpListener::from_std(listener)?;
                    Arc::new(proxy).serve(l).await
                })
            });
        if let Err(e) = served {
            eprintln!("symbi-slm sandbox: the egress proxy stopped: {e}");
        }
    });
}

/// Started by root, the program ran as a uid of its own: what it wrote in
/// its write paths goes back to the caller (the scratch dir is removed).
/// It has ended, and with it every process of its PID namespace (the init
/// ends the namespace; `reap_the_rest` waits for what is left), so nothing
/// writes there any more.
fn hand_back(plan: &SandboxPlan, pid: i32, scratch: Option<&Path>) {
    let root = nix::unistd::geteuid().is_root();
    if !root || !plan.per_process_uid || plan.unprivileged_id.is_none() {
        return;
    }
    let from = symbiont_sandbox::per_process_uid(pid as u32);
    let to = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    for path in plan
        .write_paths
        .iter()
        .filter(|w| Some(w.as_path()) != scratch)
    {
        if let Err(e) = exec::hand_back(path, from, to) {
            eprintln!(
                "symbi-slm sandbox: what the program wrote in {} could not all be handed back from uid {from}: {e}",
                path.display()
            );
        }
    }
}

/// The scratch directories of `sandbox exec`: this prefix, the pid of the
/// command that made them, a random part.
const SCRATCH_PREFIX: &str = "symbi-slm-exec-";

/// Removes the scratch directories of commands that were killed before
/// they could (SIGKILL): empty ones (the program's files were on its own
/// tmpfs) whose command's pid no longer runs.
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Fails, harmlessly, unless it is an empty directory.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
