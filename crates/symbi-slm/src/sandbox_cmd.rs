//! `symbi-slm sandbox`: what a profile enforces on this host, and running
//! any program under it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Subcommand;
use symbiont_runtime::exec::{self, ExecError, Exit};
use symbiont_runtime::models::sandbox_report;
use symbiont_sandbox::{Enforcement, HostSupport};

use crate::catalog_cmds::{audit_log, catalog, profile};
use crate::output::out;
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
                out!(
                    "{}",
                    serde_json::to_string_pretty(&doc).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                out!(
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
                out!(
                    "{:<w0$}  {:<w1$}  {:<8}  MECHANISM",
                    "CONTROL",
                    "CONFIGURED",
                    "ENFORCED"
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
                    out!(
                        "{:<w0$}  {:<w1$}  {:<8}  {}{}",
                        r.control,
                        conf,
                        enf,
                        r.mechanism,
                        why
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
            let path = resolve(&command[0])?;
            let shown = path.display().to_string();
            let program = exec::Program {
                profile_name: &profile_name,
                profile: p,
                path,
                args: &command,
                reads,
                writes,
                execs,
            };
            let audit = || audit_log(&c).map_err(|f| f.to_string());
            let code = match exec::run(program, &audit) {
                Ok(Exit::Status(code)) => code,
                Ok(Exit::Interrupted { signal }) => {
                    eprintln!(
                        "symbi-slm sandbox: stopped by signal {signal}; the program was killed"
                    );
                    128 + signal
                }
                Ok(Exit::TimedOut { limit_seconds }) => {
                    eprintln!(
                        "symbi-slm sandbox: {shown} ran past max_execution_time_seconds = {limit_seconds}; it and every process it started were killed"
                    );
                    symbiont_sandbox::exec::EXIT_TIMED_OUT
                }
                Err(e @ ExecError::Input(_)) => return Err(Failure::Input(e.into())),
                Err(e @ ExecError::Host(_)) => return Err(Failure::Runtime(e.into())),
            };
            std::process::exit(code);
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
