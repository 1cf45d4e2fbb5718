//! `symbi-slm sandbox`: what a profile enforces on this host, and running
//! any program under it.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Subcommand;
use symbiont_runtime::audit::{AuditEvent, AuditKind};
use symbiont_runtime::egress::AuditRefusals;
use symbiont_runtime::models::{sandbox_exec_plan_for, sandbox_report, threads_for};
use symbiont_sandbox::{exec, Enforcement, HostSupport};

use crate::catalog_cmds::{audit_log, catalog, profile};
use crate::Failure;

/// `symbi-slm sandbox …`
#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// One row per control of a profile: configured value, mechanism, and
    /// whether this host enforces it (yes / partial / no, and why). Exits 1
    /// when a control is not fully enforced here.
    Report {
        /// The profile (default: the config's default_sandbox_profile).
        #[arg(long)]
        profile: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run PROGRAM under a profile, through exactly the code the worker
    /// uses to confine itself, then execve. The program, the dynamic loader
    /// and the shared libraries (/lib, /usr/lib, …) are readable and
    /// executable; the environment holds only PATH. The program runs in a
    /// PID namespace and a session of its own; at the profile's
    /// max_execution_time_seconds, or when it ends, every process of the
    /// namespace is killed (children too, even after setsid). Exits with the program's status (128 +
    /// signal when killed; 124 when the time limit killed it, 125 when the
    /// sandbox could not be applied, 127 when execve failed).
    Exec {
        /// The profile (default: the config's default_sandbox_profile).
        #[arg(long)]
        profile: Option<String>,
        /// Also readable (repeatable).
        #[arg(long = "read", value_name = "PATH")]
        reads: Vec<PathBuf>,
        /// Also readable and writable (repeatable).
        #[arg(long = "write", value_name = "PATH")]
        writes: Vec<PathBuf>,
        /// Also readable and executable, a file or a directory such as
        /// /usr/bin (repeatable): what a script may run, for a profile
        /// with max_child_processes above 0.
        #[arg(long = "exec", value_name = "PATH")]
        execs: Vec<PathBuf>,
        /// The program (a path, or a name looked up in $PATH) and its
        /// arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

pub fn sandbox(cmd: SandboxCmd, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = catalog(config)?;
    match cmd {
        SandboxCmd::Report {
            profile: name,
            json,
        } => {
            let (name, p) = profile(&c, name.as_deref())?;
            let host = HostSupport::probe();
            let rows = sandbox_report(p, &host, c.config().audit_log_path.as_deref());
            if json {
                let doc = serde_json::json!({ "profile": name, "host": host, "controls": rows });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                println!(
                    "profile `{name}` on this host (landlock ABI {}, seccomp {}, {}, user namespaces {}, cgroup v2 memory controller {})",
                    host.landlock_abi,
                    yes_no(host.seccomp),
                    if host.root { "root" } else { "unprivileged" },
                    yes_no(host.user_namespaces),
                    yes_no(host.cgroup_memory),
                );
                let w0 = rows.iter().map(|r| r.control.len()).max().unwrap_or(0);
                let w1 = rows
                    .iter()
                    .map(|r| r.configured.len().min(24))
                    .max()
                    .unwrap_or(0)
                    .max(10);
                println!(
                    "{:<w0$}  {:<w1$}  {:<8}  MECHANISM",
                    "CONTROL", "CONFIGURED", "ENFORCED"
                );
                for r in &rows {
                    let (enf, why) = match &r.enforced {
                        Enforcement::Yes => ("yes", String::new()),
                        Enforcement::Partial(w) => ("PARTIAL", format!(" [not enforced: {w}]")),
                        Enforcement::No(w) => ("NO", format!(" [not enforced: {w}]")),
                    };
                    let mut conf = r.configured.clone();
                    if conf.chars().count() > 24 {
                        conf = conf.chars().take(23).collect::<String>() + "…";
                    }
                    println!(
                        "{:<w0$}  {:<w1$}  {:<8}  {}{}",
                        r.control, conf, enf, r.mechanism, why
                    );
                }
            }
            if rows.iter().any(|r| r.enforced != Enforcement::Yes) {
                return Err(Failure::Runtime(anyhow!(
                    "profile `{name}`: some controls are not enforced on this host (see the rows above)"
                )));
            }
            Ok(())
        }
        SandboxCmd::Exec {
            profile: name,
            reads,
            writes,
            execs,
            command,
        } => {
            let (profile_name, p) = profile(&c, name.as_deref())?;
            let program = resolve(&command[0])?;
            let absolute = |v: Vec<PathBuf>| -> Result<Vec<PathBuf>, Failure> {
                v.into_iter()
                    .map(|p| {
                        std::fs::canonicalize(&p)
                            .map_err(|e| Failure::Input(anyhow!("{}: {e}", p.display())))
                    })
                    .collect()
            };
            let (reads, writes, execs) = (absolute(reads)?, absolute(writes)?, absolute(execs)?);
            // The same private scratch directory a worker gets; removed
            // when the program has ended.
            let scratch = if p.filesystem.allow_temp_files {
                remove_stale_scratch();
                Some(
                    tempfile::Builder::new()
                        .prefix(&format!("{SCRATCH_PREFIX}{}-", std::process::id()))
                        .tempdir()
                        .map_err(|e| Failure::Runtime(anyhow!("scratch directory: {e}")))?,
                )
            } else {
                None
            };
            let mut plan = sandbox_exec_plan_for(
                p,
                &program,
                &reads,
                &writes,
                &execs,
                scratch.as_ref().map(|s| s.path()),
                threads_for(p.resources.max_cpu_cores),
            )
            .map_err(|e| Failure::Input(e.into()))?;
            let mut env = vec![(
                OsString::from("PATH"),
                OsString::from("/usr/local/bin:/usr/bin:/bin"),
            )];
            if let Some(s) = &scratch {
                env.push((OsString::from("TMPDIR"), s.path().as_os_str().to_owned()));
            }
            // Restricted: the egress proxy, served here on a listener the
            // program's own network namespace holds; its address in there
            // goes to the program in the usual variables.
            let egress = symbiont_runtime::egress::policy_for(&profile_name, p, None);
            // The refusals' log, kept here too: the process ends with
            // `exit`, so the count of repeated refusals is written before.
            let mut refusals_log: Option<symbiont_runtime::audit::AuditLog> = None;
            let handoff = match egress {
                Some(_) => Some(
                    symbiont_sandbox::proxy_handoff()
                        .map_err(|e| Failure::Runtime(anyhow!("egress hand-off: {e}")))?,
                ),
                None => None,
            };
            if let Some((_, theirs)) = &handoff {
                plan.proxy_handoff_fd = Some(theirs.as_raw_fd());
                let url = OsString::from(format!(
                    "http://127.0.0.1:{}",
                    symbiont_runtime::egress::PROXY_PORT
                ));
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
            let child = exec::spawn_confined(&plan, &program, &command, &env)
                .map_err(|e| Failure::Runtime(anyhow!("sandbox exec: {e}")))?;
            let child_pid = child.pid();
            if let (Some((mine, theirs)), Some(policy)) = (handoff, egress) {
                drop(theirs);
                match symbiont_sandbox::receive_listener(&mine, Duration::from_secs(10)) {
                    Ok(listener) => {
                        // Refusals are audited; a log that cannot be
                        // opened is said, and refusals still go to the
                        // tracing output.
                        let log = audit_log(&c).unwrap_or_else(|e| {
                            let (Failure::Input(e) | Failure::Runtime(e)) = e;
                            eprintln!(
                                "symbi-slm sandbox: egress refusals go to the log output only: {e}"
                            );
                            symbiont_runtime::audit::AuditLog::tracing_only()
                        });
                        refusals_log = Some(log.clone());
                        let observer = Some(Arc::new(AuditRefusals::new(
                            log,
                            p.security.enable_audit_logging,
                            None,
                        ))
                            as Arc<dyn symbiont_egress::Observer>);
                        serve_egress(listener, policy, observer);
                    }
                    // The child failed before its namespace was ready: it
                    // says why and exits 125; nothing is served.
                    Err(e) => eprintln!("symbi-slm sandbox: no egress proxy: {e}"),
                }
            }
            let ended = child
                .wait(Some(Duration::from_secs(limit)))
                .map_err(|e| Failure::Runtime(anyhow!("sandbox exec: {e}")))?;
            hand_back(&plan, child_pid, scratch.as_ref().map(|s| s.path()));
            drop(scratch);
            if let Some(log) = &refusals_log {
                log.flush(p.security.enable_audit_logging);
            }
            if let Some(sig) = ended.interrupted {
                eprintln!("symbi-slm sandbox: stopped by signal {sig}; the program was killed");
                std::process::exit(128 + sig);
            }
            if ended.timed_out {
                let detail = format!(
                    "{} ran past max_execution_time_seconds = {limit}; it and every process it started were killed",
                    program.display()
                );
                eprintln!("symbi-slm sandbox: {detail}");
                let event = AuditEvent::new(
                    AuditKind::LimitHit,
                    "process_limits.max_execution_time_seconds",
                    detail,
                )
                .about(None, None, Some(&profile_name));
                // A log that cannot be opened must not hide the kill.
                match audit_log(&c) {
                    Ok(log) => log.record(&event, p.security.enable_audit_logging),
                    Err(Failure::Input(e) | Failure::Runtime(e)) => {
                        eprintln!("symbi-slm sandbox: {e}")
                    }
                }
                std::process::exit(exec::EXIT_TIMED_OUT);
            }
            let status = ended.status;
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            std::process::exit(code);
        }
    }
}

/// Serves the egress proxy on `listener` from a thread of its own until
/// the process exits.
fn serve_egress(
    listener: std::net::TcpListener,
    policy: symbiont_egress::Policy,
    observer: Option<Arc<dyn symbiont_egress::Observer>>,
) {
    let mut proxy = symbiont_egress::Proxy::new(policy);
    if let Some(o) = observer {
        proxy = proxy.observed_by(o);
    }
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
fn hand_back(plan: &symbiont_sandbox::SandboxPlan, pid: i32, scratch: Option<&Path>) {
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

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A program named by path, or looked up in `$PATH`.
fn resolve(program: &OsString) -> Result<PathBuf, Failure> {
    let p = Path::new(program);
    let found = if p.as_os_str().to_string_lossy().contains('/') {
        Some(p.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(p))
                .find(|c| c.is_file())
        })
    };
    let found = found
        .ok_or_else(|| Failure::Input(anyhow!("program {} not found in $PATH", p.display())))?;
    std::fs::canonicalize(&found).map_err(|e| Failure::Input(anyhow!("{}: {e}", found.display())))
}
