//! From a `SandboxProfile` and the worker's needs to a concrete
//! [`SandboxPlan`], and the per-control report of what it enforces here.
//!
//! Rules (documented, control by control, in `docs/sandbox.md`):
//! - memory: `RLIMIT_AS` = `max_memory_mb` (a memory-mapped model counts);
//!   no cgroup is created or touched.
//! - CPU: threads = `max_cpu_cores` rounded down (at least 1), CPU affinity
//!   to that many CPUs; `RLIMIT_CPU` = 4 × threads × `max_execution_time_seconds`
//!   as a lifetime backstop, and the supervisor retires a worker before a
//!   request could reach it.
//! - disk: a private tmpfs of `max_disk_mb` at the scratch directory when
//!   `allow_temp_files`; `RLIMIT_FSIZE` = `max_file_size_mb`.
//! - filesystem: Landlock; read-only on the model (a rule made from the
//!   descriptor the supervisor opened and checked, `MODEL_FD`: the worker
//!   never looks the model up by name) and `read_paths`
//!   (missing paths are skipped), read-write on the scratch dir and
//!   `write_paths`; everything else, `denied_paths` included, is denied. A
//!   denied path inside an allowed one cannot be carved out by Landlock: that
//!   profile is refused.
//! - network `None`: network namespace, Landlock TCP rules, seccomp.
//! - network `Restricted`: the worker as `None`; a `sandbox exec` program
//!   in its own namespace whose only listener is the egress proxy's
//!   (`NetworkMode::Proxy`), Landlock TCP connect to that port only.
//! - syscalls: `strict_syscall_filtering` → allow-list (+ `allowed_syscalls`),
//!   else a deny-list. Strictness also makes every layer fail closed. Under
//!   both: x32 numbers kill, pid-taking calls reach only the caller, no
//!   `TIOCSTI`, `clone` without namespaces; the worker creates no socket,
//!   a `sandbox exec` program only socket pairs unless the network is `Full`.
//! - executable memory: none new in the worker once it is confined
//!   (seccomp on `PROT_EXEC`/`SHM_EXEC`).
//! - identity: started by root, a uid of the process's own (never root,
//!   never an account's) and gid 65534, for the worker and `sandbox exec`
//!   alike; its own user namespace (threads counted there) and IPC
//!   namespace; no file metadata changes, no inotify, no clearing of the
//!   parent-death signal, few queued signals.
//! - open files: `RLIMIT_NOFILE` ([`WORKER_OPEN_FILES`], [`EXEC_OPEN_FILES`]).

use std::path::{Path, PathBuf};

use symbiont_sandbox::{
    report, ControlRow, HostSupport, Need, NetworkMode, SandboxPlan, SocketPolicy, SyscallPolicy,
};

use symbiont_slm_protocol::MODEL_FD;

use super::denied_paths::{expand, Expansion, MAX_EXPANDED_ENTRIES};
use crate::config::{normalize_path, NetworkAccessMode, SandboxProfile};
use crate::models::SlmRunnerError;

const MB: u64 = 1024 * 1024;

/// The CPU-seconds backstop for a worker with `threads` threads.
pub(super) fn cpu_backstop_seconds(profile: &SandboxProfile, threads: u32) -> u64 {
    4 * u64::from(threads.max(1)) * profile.process_limits.max_execution_time_seconds
}

/// Open files at once for the worker: its pipes, the model, llama.cpp's
/// and OpenMP's few descriptors, with room to spare.
pub const WORKER_OPEN_FILES: u64 = 256;
/// The group a worker (or a `sandbox exec` program) started by root runs
/// as outside its user namespace (`nogroup` on Debian): root widens
/// nothing. Its user id is one of its own, which no host account has
/// ([`symbiont_sandbox::per_process_uid`]).
pub const WORKER_UNPRIVILEGED_ID: u32 = 65534;

/// Signals queued to a sandboxed process at once (`RLIMIT_SIGPENDING`):
/// the worker queues none; a program's few timers and children fit.
pub const MAX_PENDING_SIGNALS: u64 = 64;

/// Threads a program under `sandbox exec` may have at once
/// (`RLIMIT_NPROC`, counted in its own user namespace).
pub const EXEC_MAX_THREADS: u64 = 64;

/// Whether a worker started here can count its threads in a user namespace
/// of its own: a worker started by root creates it after giving root up,
/// so unprivileged user namespaces must be allowed.
pub(super) fn threads_countable() -> bool {
    HostSupport::probe().user_namespaces && symbiont_sandbox::kernel_counts_threads_per_namespace()
}

/// Threads (and processes) a worker may have at once: its compute threads,
/// the main and command threads, and room for the runtime's helpers.
pub fn worker_max_threads(threads: u32) -> u64 {
    2 * u64::from(threads.max(1)) + 16
}

/// Open files at once for a program under `sandbox exec`.
pub const EXEC_OPEN_FILES: u64 = 1024;

/// Builds the plan for a worker with `threads` threads that reads `model`
/// and may use `scratch`: exactly what `LocalGgufRunner` applies.
pub fn plan_for(
    profile: &SandboxProfile,
    model: &Path,
    scratch: Option<&Path>,
    threads: u32,
) -> Result<SandboxPlan, SlmRunnerError> {
    // Landlock follows symlinks and `..` when it opens a rule's path: the
    // rules, and the denied-inside-allowed check, use the canonical paths.
    let existing = |paths: &[String]| -> Vec<PathBuf> {
        paths
            .iter()
            .map(|p| Path::new(normalize_path(p)))
            .filter(|p| p.exists())
            .map(canonical)
            .collect()
    };
    // The model is read through the descriptor the supervisor opened and
    // checked (MODEL_FD), never by name: no path rule for it.
    let _ = model;
    // A directory holding a denied path becomes its other entries.
    let denied = denied_canonical(profile);
    let mut expanded = Expansion::default();
    let read_paths = expand(
        existing(&profile.filesystem.read_paths),
        &denied,
        &mut expanded,
    )?;
    let mut write_paths = existing(&profile.filesystem.write_paths);
    if let Some(s) = scratch {
        write_paths.push(s.to_path_buf());
    }
    let write_paths = expand(write_paths, &denied, &mut expanded)?;
    // The scratch dir gets its tmpfs before Landlock opens it: another
    // file by design, not pinned.
    if let Some(s) = scratch {
        expanded.pinned.retain(|p| p.0 != s);
    }
    let strict = profile.security.strict_syscall_filtering;
    Ok(SandboxPlan {
        address_space_bytes: Some(profile.resources.max_memory_mb.saturating_mul(MB)),
        cpu_seconds: Some(cpu_backstop_seconds(profile, threads)),
        file_size_bytes: Some(profile.filesystem.max_file_size_mb.saturating_mul(MB)),
        cpu_count: Some(threads),
        cpu_offset: 0,
        nice: Some(i32::from(profile.process_limits.process_priority)),
        confine_filesystem: true,
        read_paths,
        read_fds: vec![MODEL_FD],
        exec_paths: Vec::new(),
        write_paths,
        scratch: scratch.map(|s| {
            (
                s.to_path_buf(),
                profile.resources.max_disk_mb.saturating_mul(MB),
            )
        }),
        max_open_files: Some(WORKER_OPEN_FILES),
        // The worker needs no network: under `Restricted` it gets none at
        // all (the proxy is for programs under `sandbox exec`).
        network: match profile.network.access_mode {
            NetworkAccessMode::Full => NetworkMode::Full,
            _ => NetworkMode::None,
        },
        proxy_handoff_fd: None,
        // The worker talks to its supervisor over its standard pipes only.
        sockets: SocketPolicy::None,
        syscalls: if strict {
            SyscallPolicy::AllowList {
                extra: profile.process_limits.allowed_syscalls.clone(),
            }
        } else {
            SyscallPolicy::DenyList
        },
        // The worker starts no process, whatever the profile says
        // (`max_child_processes` is for programs under `sandbox exec`).
        no_child_processes: true,
        disable_debugging: profile.security.disable_debugging,
        // llama.cpp's code is mapped when the worker starts; no JIT.
        no_exec_memory: true,
        // Its own user namespace always (threads counted apart); as root,
        // a uid of its own and group nogroup outside it.
        user_namespace: true,
        unprivileged_id: Some(WORKER_UNPRIVILEGED_ID),
        per_process_uid: true,
        // It starts no process: no PID namespace needed (its parent-death
        // signal cannot be cleared, and it cannot exec).
        pid_namespace: false,
        // No System V IPC of the host's reachable, none left behind; the
        // worker makes none at all.
        ipc_namespace: true,
        no_sysv_ipc: true,
        max_pending_signals: Some(MAX_PENDING_SIGNALS),
        max_threads: Some(worker_max_threads(threads)),
        // Root widens nothing: no capability survives, whatever the profile.
        drop_capabilities: true,
        allow_exec: false,
        strict,
        pinned: expanded.pinned,
    })
}

/// `path` with every symlink and `..` resolved: the longest ancestor that
/// exists, canonicalized, with the rest appended.
fn canonical(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut base = path;
    loop {
        if let Ok(c) = std::fs::canonicalize(base) {
            return rest
                .iter()
                .rev()
                .fold(c, |acc: PathBuf, part| acc.join(part));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The profile's denied paths, canonical (one that does not exist yet by
/// its longest existing ancestor): a symlink or `..` cannot hide a denied
/// directory behind another name.
fn denied_canonical(profile: &SandboxProfile) -> Vec<PathBuf> {
    profile
        .filesystem
        .denied_paths
        .iter()
        .map(|d| canonical(Path::new(normalize_path(d))))
        .collect()
}

/// Where the dynamic loader and shared libraries live: executable for
/// `sandbox exec`.
const LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/libexec"];

/// RLIMIT_NPROC for a `sandbox exec` plan with `children` child processes:
/// the waiter and the PID namespace's init (ours), the program's main
/// thread, and `children` more tasks (processes or threads).
pub fn exec_max_tasks(children: u64) -> u64 {
    children + 3
}

/// The plan for `symbi-slm sandbox exec`: the worker's plan for `profile`,
/// with `program` (and the loader and libraries) executable instead of a
/// model file readable, plus the operator's extra `reads`, `writes` and
/// executable `execs`.
pub fn exec_plan_for(
    profile: &SandboxProfile,
    program: &Path,
    reads: &[PathBuf],
    writes: &[PathBuf],
    execs: &[PathBuf],
    scratch: Option<&Path>,
    threads: u32,
) -> Result<SandboxPlan, SlmRunnerError> {
    let reads: Vec<PathBuf> = reads.iter().map(|p| canonical(p)).collect();
    let writes: Vec<PathBuf> = writes.iter().map(|p| canonical(p)).collect();
    let execs: Vec<PathBuf> = execs.iter().map(|p| canonical(p)).collect();
    let (reads, writes) = (&reads[..], &writes[..]);
    let mut plan = plan_for(profile, program, scratch, threads)?;
    plan.read_fds.clear();
    // The program's loader maps its libraries executable.
    plan.no_exec_memory = false;
    // Started by root, the program is a uid of its own and group nogroup
    // (what it writes in its write paths is handed back to the caller
    // when it has ended); started by another user, it keeps that user's
    // ids. Either way in a user namespace of its own, where its threads
    // are counted, and an IPC namespace of its own. System V IPC stays
    // refused as for the worker: a segment's pages are outside RLIMIT_AS
    // even in a namespace of its own (the namespace is a second wall).
    plan.user_namespace = true;
    // Its threads, and the two processes of ours beside it: the waiter and
    // the PID namespace's init (same uid, same namespace). With children,
    // RLIMIT_NPROC counts tasks: the program's main thread and N more,
    // each a child process or a thread (of the program or of a child).
    let children = u64::from(profile.process_limits.max_child_processes);
    plan.no_child_processes = children == 0;
    plan.max_threads = Some(if children == 0 {
        EXEC_MAX_THREADS + 2
    } else {
        exec_max_tasks(children)
    });
    // A PID namespace whose init is ours: the whole tree dies with the
    // caller, whatever the program does with its parent-death signal.
    plan.pid_namespace = true;
    let denied = denied_canonical(profile);
    // One budget of rules per plan: what the worker's part pinned counts.
    let mut expanded = Expansion {
        count: plan.pinned.len(),
        ..Expansion::default()
    };
    plan.read_paths
        .extend(expand(reads.to_vec(), &denied, &mut expanded)?);
    let ld_cache = Path::new("/etc/ld.so.cache");
    if ld_cache.exists() {
        plan.read_paths.push(ld_cache.to_path_buf());
    }
    plan.write_paths
        .extend(expand(writes.to_vec(), &denied, &mut expanded)?);
    // Shells give a background job /dev/null as its input, and programs
    // throw output away there: readable and writable (a device that holds
    // nothing; the hand-back never changes it, root owns it).
    let null = Path::new("/dev/null");
    if null.exists() {
        plan.write_paths.push(null.to_path_buf());
    }
    // Canonical (`/lib` is a link to `usr/lib` here): Landlock follows
    // links, so a denied path is looked for where the rule will land.
    let mut execs: Vec<PathBuf> = std::iter::once(canonical(program))
        .chain(execs.iter().cloned())
        .chain(
            LIBRARY_DIRS
                .iter()
                .map(Path::new)
                .filter(|p| p.exists())
                .map(canonical),
        )
        .collect();
    let mut seen = std::collections::HashSet::new();
    execs.retain(|p| seen.insert(p.clone()));
    plan.exec_paths = expand(execs, &denied, &mut expanded)?;
    plan.pinned.extend(expanded.pinned);
    plan.allow_exec = true;
    plan.max_open_files = Some(EXEC_OPEN_FILES);
    // `Restricted`: the egress proxy's listener in the program's own
    // network namespace is its only way out (the caller sets
    // `proxy_handoff_fd` and serves it).
    if profile.network.access_mode == NetworkAccessMode::Restricted {
        plan.network = NetworkMode::Proxy {
            port: crate::egress::PROXY_PORT,
        };
    }
    // No socket by path to a host daemon without the network: socket
    // pairs only; with the proxy, inet sockets too. With `Full` network,
    // whatever the program asks.
    plan.sockets = match plan.network {
        NetworkMode::Full => SocketPolicy::Any,
        NetworkMode::None => SocketPolicy::PairsOnly,
        NetworkMode::Proxy { .. } => SocketPolicy::InetOnly,
    };
    Ok(plan)
}

/// One row per control of `profile`: configured value, mechanism, and
/// whether this host enforces it. `audit_log_path` is the config's
/// `slm.audit_log_path`.
pub fn sandbox_report(
    profile: &SandboxProfile,
    host: &HostSupport,
    audit_log_path: Option<&str>,
) -> Vec<ControlRow> {
    let r = &profile.resources;
    let f = &profile.filesystem;
    let l = &profile.process_limits;
    let s = &profile.security;
    let threads = super::threads_for(r.max_cpu_cores);
    let mut rows: Vec<(String, String, String, Vec<Need>)> = vec![
        (
            "resources.max_memory_mb".into(),
            r.max_memory_mb.to_string(),
            "RLIMIT_AS on the worker; allocation failures reported as a memory limit (no cgroup v2 memory controller is used)".into(),
            vec![Need::Always],
        ),
        (
            "resources.max_cpu_cores".into(),
            format!("{}", r.max_cpu_cores),
            format!("{threads} compute thread(s) and CPU affinity to {threads} CPU(s) (fractions round down)"),
            if r.max_cpu_cores.fract() == 0.0 {
                vec![Need::Always]
            } else {
                vec![Need::Always, Need::Unavailable("fractional cores need cgroup cpu.max, not used")]
            },
        ),
        (
            "resources.max_disk_mb".into(),
            r.max_disk_mb.to_string(),
            format!(
                "size-limited tmpfs on the scratch dir in a private mount namespace, at most {} files",
                symbiont_sandbox::SCRATCH_INODES
            ),
            if f.allow_temp_files { vec![Need::Namespaces] } else { vec![Need::Landlock(1)] },
        ),
        (
            "resources.gpu_access".into(),
            "None".into(),
            "Landlock: no device node is readable (`sandbox exec` programs: /dev/null, which holds nothing)".into(),
            vec![Need::Landlock(1)],
        ),
        (
            "filesystem.read_paths".into(),
            format!("{:?} + the model file", f.read_paths),
            "Landlock read-only rules; the model only as the descriptor the supervisor opened (O_NOFOLLOW, regular file) and checked, never by name".into(),
            vec![Need::Landlock(1)],
        ),
        (
            "filesystem.write_paths".into(),
            format!("{:?} + the scratch dir", f.write_paths),
            "Landlock read-write rules, without the right to make device nodes, fifos or sockets".into(),
            vec![Need::Landlock(1)],
        ),
        (
            "filesystem.denied_paths".into(),
            format!("{:?}", f.denied_paths),
            format!("denied by Landlock's allow-list; an allowed directory holding a denied path is replaced at plan time by rules for its other entries (at most {MAX_EXPANDED_ENTRIES}, matched by device and inode, each pinned to the file it was): symlinks among them get no rule; refused: an allowed path inside a denied one, a mount point on the way, a mount in an allowed path showing a denied path's file system, a denied file with another link; the directories on the way cannot be listed nor get new entries"),
            vec![Need::Landlock(1)],
        ),
        (
            "filesystem.allow_temp_files".into(),
            f.allow_temp_files.to_string(),
            "private scratch directory, removed with the worker".into(),
            vec![Need::Always],
        ),
        (
            "filesystem.max_file_size_mb".into(),
            f.max_file_size_mb.to_string(),
            "RLIMIT_FSIZE (writes past it fail with EFBIG)".into(),
            vec![Need::Always],
        ),
        (
            "process_limits.max_execution_time_seconds".into(),
            l.max_execution_time_seconds.to_string(),
            format!(
                "supervisor wall clock per request (cancel; kill the process group when no answer comes within {} of the worker's measured decode steps, {:.1}-{:.0} s) + RLIMIT_CPU lifetime backstop",
                super::defaults::CANCEL_GRACE_STEPS,
                super::defaults::CANCEL_GRACE_MIN.as_secs_f64(),
                super::defaults::CANCEL_GRACE_MAX.as_secs_f64()
            ),
            vec![Need::Always],
        ),
        if l.max_child_processes == 0 {
            (
                "process_limits.max_child_processes".into(),
                "0".into(),
                "seccomp: clone only with CLONE_THREAD, no fork, vfork or execve (the worker and sandbox exec)".into(),
                vec![Need::Seccomp],
            )
        } else {
            (
                "process_limits.max_child_processes".into(),
                l.max_child_processes.to_string(),
                format!(
                    "the worker starts none (seccomp: clone only with CLONE_THREAD); under sandbox exec, {n} tasks alive at once besides the program's main thread, each a child process or a thread of the program or of a child: RLIMIT_NPROC = {} in the program's own user namespace and uid (the waiter and the PID namespace's init are the other 2), seccomp allows fork, vfork and clone without CLONE_NEW* flags and signals to any process of the tree but its init, execve only of executable paths (Landlock); a PID namespace whose end kills every descendant, also after setsid, at max_execution_time_seconds; refused to run (any profile) where these cannot hold",
                    exec_max_tasks(u64::from(l.max_child_processes)),
                    n = l.max_child_processes,
                ),
                vec![Need::Seccomp, Need::Namespaces],
            )
        },
        (
            "process_limits.allowed_syscalls".into(),
            format!("{:?}", l.allowed_syscalls),
            if s.strict_syscall_filtering {
                "added to the worker's seccomp allow-list".into()
            } else {
                "unused: the deny-list policy allows everything not denied".into()
            },
            vec![Need::Seccomp],
        ),
        (
            "process_limits.process_priority".into(),
            l.process_priority.to_string(),
            if l.process_priority >= 10 {
                format!(
                    "setpriority (nice {}: the worker yields to every busier process; on a loaded host generation slows to a crawl, by design)",
                    l.process_priority
                )
            } else {
                "setpriority".into()
            },
            if l.process_priority < 0 && !host.root {
                vec![Need::Unavailable("a negative nice value needs root")]
            } else {
                vec![Need::Always]
            },
        ),
        (
            "network.access_mode".into(),
            format!("{:?}", profile.network.access_mode),
            match profile.network.access_mode {
                NetworkAccessMode::Full => "no restriction".into(),
                NetworkAccessMode::Restricted => format!(
                    "worker: none at all (as None); `sandbox exec`: own network namespace with only loopback, whose one listener (127.0.0.1:{port}) is the egress proxy served from outside; Landlock TCP connect to port {port} only, no bind; seccomp: inet sockets only (no UNIX socket by path); the proxy checks {n} destination(s) on the address it connects to{bw}; refusals audited",
                    port = crate::egress::PROXY_PORT,
                    n = profile.network.allowed_destinations.len(),
                    bw = match profile.network.max_bandwidth_mbps {
                        Some(m) => format!(", {m} Mbit/s each way (token bucket)"),
                        None => String::new(),
                    },
                ),
                _ => "network namespace + Landlock TCP bind/connect denial + seccomp socket denial".into(),
            },
            match profile.network.access_mode {
                NetworkAccessMode::Full => vec![Need::Always],
                _ => vec![Need::Namespaces, Need::Landlock(4), Need::Seccomp],
            },
        ),
        (
            "security.strict_syscall_filtering".into(),
            s.strict_syscall_filtering.to_string(),
            if s.strict_syscall_filtering {
                "seccomp allow-list (EPERM for anything else); every layer fails closed".into()
            } else {
                "seccomp deny-list of dangerous calls; gaps are reported, not fatal".into()
            },
            vec![Need::Seccomp],
        ),
        (
            "security.disable_debugging".into(),
            s.disable_debugging.to_string(),
            "PR_SET_DUMPABLE 0, no core dumps, seccomp denies ptrace".into(),
            vec![Need::Always],
        ),
        (
            "security.isolate_agents".into(),
            s.isolate_agents.to_string(),
            if s.isolate_agents {
                "one worker process per agent: requests of different agents share no process, memory or prompt cache".into()
            } else {
                "requests of different agents may share a worker and its slots; its prompt cache is keyed by agent (no agent's prompt is served to, or counted for, another), but their load shows in each other's timing".into()
            },
            vec![Need::Always],
        ),
        (
            "security.enable_audit_logging".into(),
            s.enable_audit_logging.to_string(),
            match (s.enable_audit_logging, audit_log_path) {
                (true, Some(p)) if p == crate::audit::STDOUT => "JSON lines to standard output (`serve`; other commands: standard error), and `tracing` (target symbi_slm_audit)".to_string(),
                (true, Some(p)) => format!("JSON lines appended to {p}, and `tracing` (target symbi_slm_audit)"),
                (true, None) => "`tracing` events (target symbi_slm_audit) only".into(),
                (false, _) => "`tracing` events (target symbi_slm_audit) only; no file".into(),
            },
            match (s.enable_audit_logging, audit_log_path) {
                (true, None) => vec![Need::Unavailable("slm.audit_log_path is not set: no audit file")],
                _ => vec![Need::Always],
            },
        ),
        (
            "(always)".into(),
            "-".into(),
            format!(
                "no_new_privs, inherited file descriptors closed, scrubbed environment (only GGML_NO_BACKTRACE=1), own process group, at most {WORKER_OPEN_FILES} open files (RLIMIT_NOFILE)"
            ),
            vec![Need::Always],
        ),
        (
            "(always) other processes".into(),
            "-".into(),
            "seccomp: calls aimed at a pid (kill, tgkill, prlimit64, setpriority, ioprio_set, sched_*, pidfd_open, migrate_pages, …) reach only the worker itself; its CPU set cannot grow; pidfd_getfd, process_madvise, kcmp refused".into(),
            vec![Need::Seccomp],
        ),
        (
            "(always) syscall hardening".into(),
            "-".into(),
            "seccomp: x32 and foreign-architecture numbers kill the process; clone never makes namespaces; io_uring, memfd_create, modify_ldt, uselib refused; inotify refused (Landlock does not govern watches); statmount, listmount, listns refused; TIOCSTI and TIOCLINUX refused; prctl cannot undo disable_debugging or clear the parent-death signal; at most 64 queued signals (RLIMIT_SIGPENDING)".into(),
            vec![Need::Seccomp],
        ),
        (
            "(always) identity".into(),
            "-".into(),
            format!(
                "started by root, a uid of its own that no host account has ({base} + its pid: no other process, the host's nobody included, may signal or re-limit it), gid {WORKER_UNPRIVILEGED_ID}, no supplementary groups (root widens nothing; the model must be readable by group {WORKER_UNPRIVILEGED_ID} or by others), its network, mount and IPC namespaces owned by the host's root; own user namespace with at most 2 × threads + 16 threads (RLIMIT_NPROC, counted there; kernel 5.14 or later); started by another user, that user's ids",
                base = symbiont_sandbox::PER_PROCESS_UID_BASE
            ),
            vec![Need::UnprivilegedUserNamespaces],
        ),
        (
            "(always) identity of sandbox exec".into(),
            "-".into(),
            format!(
                "started by root, the program never runs as root or spends root's per-user counts: a uid of its own ({base} + its pid), gid {WORKER_UNPRIVILEGED_ID}, given before its user namespace is made (per-user counts are charged to that uid), at most {EXEC_MAX_THREADS} threads (RLIMIT_NPROC in its own user namespace; with max_child_processes = N above 0, N tasks beside its main thread); a PID namespace whose init is ours, so the whole tree dies with the caller; read, write and program paths must be open to group {WORKER_UNPRIVILEGED_ID} or to others (the command warns otherwise); files it writes in write paths are handed back to the caller when it ends; started by another user, that user's ids with the same caps",
                base = symbiont_sandbox::PER_PROCESS_UID_BASE
            ),
            vec![Need::UnprivilegedUserNamespaces],
        ),
        (
            "(always) System V IPC".into(),
            "-".into(),
            "seccomp refuses every System V IPC call to the worker and to `sandbox exec` programs (a segment's pages are outside RLIMIT_AS, and outlive the process); behind it, an IPC namespace of its own, so that none of the host's segments, queues or semaphores is reachable and nothing made there outlives the namespace".into(),
            vec![Need::Namespaces, Need::Seccomp],
        ),
        (
            "(always) executable memory".into(),
            "-".into(),
            "seccomp: once confined, the worker maps no new executable memory (mmap, mprotect, pkey_mprotect with PROT_EXEC; shmat with SHM_EXEC), before or after the model is parsed; `sandbox exec` programs may (their loader maps libraries)".into(),
            vec![Need::Seccomp],
        ),
        (
            "(always) file metadata".into(),
            "-".into(),
            "seccomp: no sandboxed process (worker or `sandbox exec` program) changes a file's mode, owner, times, inode flags or extended attributes, POSIX ACLs included (chmod, chown, utimensat, xattr writes, FS_IOC_SETFLAGS, file_setattr: Landlock governs none of them), by path or by descriptor, write paths included (seccomp sees no path)".into(),
            vec![Need::Seccomp],
        ),
        (
            "(always) sockets".into(),
            "-".into(),
            "seccomp: the worker creates no socket at all (no UNIX socket by path to a host daemon); `sandbox exec` programs only socket pairs unless access_mode = Full (then no netlink)".into(),
            vec![Need::Seccomp],
        ),
    ];
    if l.max_child_processes > 0 {
        rows.push((
            "resources.max_memory_mb (a sandbox exec process tree)".into(),
            r.max_memory_mb.to_string(),
            format!(
                "RLIMIT_AS bounds each process of the tree, so together they may map up to {} times as much",
                u64::from(l.max_child_processes) + 1
            ),
            vec![Need::Unavailable(
                "the tree's total needs a cgroup v2 memory controller, not used",
            )],
        ));
    }
    report(rows, host)
}
