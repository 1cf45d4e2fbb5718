//! Applying a plan to the calling process, as one ordered checklist.
//!
//! Order matters (see ../shared/FACTS.md): namespaces need a
//! single-threaded process; rlimits and prctl before anything can allocate
//! or trace; Landlock, then seccomp last, because seccomp would otherwise
//! forbid the calls that install the other layers.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::SeccompCmpArgLen::{Dword, Qword};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

use crate::plan::{NetworkMode, SandboxPlan, SocketPolicy, SyscallPolicy};
use crate::syscalls::{
    never_allowed, syscall_number, PidArg, ALLOWED_PRCTL, CLONE_NEW_FLAGS, DENIED_FCNTL,
    DENIED_IOCTLS, DENIED_PRCTL, DENY_LIST, EXEC_ALLOW_LIST, EXEC_NET_ALLOW_LIST, METADATA_WRITES,
    PID_CALLS, SYSV_IPC, WORKER_ALLOW_LIST, X32_SYSCALL_BIT,
};

/// The Landlock ABI whose rights we ask for: filesystem (incl. truncate and
/// ioctl on devices), TCP ports (ABI 4) and scoping (ABI 6).
const LANDLOCK_ABI: ABI = ABI::V6;

/// Why the sandbox could not be applied. Every variant names the layer and
/// the call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The process has more than one thread (namespaces and Landlock need
    /// to be applied before any thread starts).
    #[error("the process already runs {0} threads; the sandbox must be applied before any thread starts")]
    NotSingleThreaded(usize),
    /// `unshare` failed.
    #[error("unshare({flags}) failed: {source}")]
    Namespace {
        /// The namespaces asked for.
        flags: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// Writing the user namespace's id maps failed.
    #[error("user namespace map {file}: {source}")]
    IdMap {
        /// The file.
        file: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// Mounting the scratch tmpfs failed.
    #[error("mount of the scratch tmpfs on {}: {source}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A `setrlimit`, `prctl`, `setpriority` or affinity call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// The call.
        call: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// A Landlock rule could not be built or installed.
    #[error("landlock: {0}")]
    Landlock(String),
    /// Landlock is not fully enforced on this kernel and the plan is strict.
    #[error("landlock is {0} on this kernel; the strict plan refuses to run without it")]
    LandlockNotEnforced(String),
    /// A path to allow does not exist or cannot be opened.
    #[error("cannot open {} for a landlock rule: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A descriptor the plan keeps is not an open regular file.
    #[error("inherited descriptor {fd}: {reason}")]
    Descriptor {
        /// The descriptor.
        fd: i32,
        /// What is wrong with it.
        reason: String,
    },
    /// An unknown syscall name in the policy.
    #[error("unknown syscall `{0}` in the seccomp policy")]
    UnknownSyscall(String),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// One layer and whether it is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The layer, such as `landlock` or `network namespace`.
    pub name: String,
    /// In force, or the gap and why.
    pub enforced: Result<(), String>,
}

/// What [`apply`] put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Every layer the plan asked for, in order.
    pub layers: Vec<Layer>,
    /// Time the whole set-up took, in microseconds.
    pub setup_micros: u64,
}

impl Applied {
    /// The layers that are not in force.
    pub fn gaps(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.enforced.is_err())
    }
}

fn os_err(call: &'static str) -> SandboxError {
    SandboxError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Applies `plan` to the calling process. On error, the process must not go
/// on to do untrusted work: some layers may already be in place, others not.
pub fn apply(plan: &SandboxPlan) -> Result<Applied, SandboxError> {
    let started = Instant::now();
    let mut layers = Vec::new();
    let mut record = |name: &str, r: Result<(), String>| {
        layers.push(Layer {
            name: name.to_string(),
            enforced: r,
        })
    };

    // 1. Inherited file descriptors: keep only stdin, stdout, stderr (the
    //    protocol pipes and the log) and the plan's read-only files.
    close_inherited(&plan.read_fds, plan.proxy_handoff_fd)?;
    record("inherited file descriptors closed", Ok(()));

    // 2. Priority, while root still may set a negative nice value
    //    (CAP_SYS_NICE in the initial namespace), which step 3 gives up.
    if let Some(n) = plan.nice {
        // SAFETY: setpriority on this process with an integer value.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
            // A negative nice value needs CAP_SYS_NICE in the initial user
            // namespace: a gap for a lenient plan, fatal for a strict one.
            let e = os_err("setpriority");
            if plan.strict {
                return Err(e);
            }
            record("priority: setpriority", Err(e.to_string()));
        } else {
            record("priority: setpriority", Ok(()));
        }
    }

    // 3. Namespaces and identity. A private network namespace (no
    //    interfaces but a down loopback) and a private mount namespace for
    //    the scratch tmpfs. Started as root with an unprivileged id to
    //    become: those two first, owned by the initial user namespace (so
    //    that no other process of that id can enter them), then the id
    //    change, then a user namespace of its own (threads are counted
    //    there). Otherwise a user namespace when the plan asks or another
    //    namespace needs one (not root), together with the others. A user
    //    namespace needs a single-threaded process.
    let threads = thread_count();
    if threads > 1 {
        return Err(SandboxError::NotSingleThreaded(threads));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // (uid, gid) to become when started as root.
    let give_up = plan.unprivileged_id.filter(|_| root).map(|gid| {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let uid = if plan.per_process_uid {
            crate::plan::per_process_uid(pid)
        } else {
            gid
        };
        (uid, gid)
    });
    let mut own_user_namespace = false;
    let mut flags = 0;
    let proxy_port = match plan.network {
        NetworkMode::Proxy { port } => Some(port),
        _ => None,
    };
    if plan.network != NetworkMode::Full {
        flags |= libc::CLONE_NEWNET;
    }
    if plan.scratch.is_some() {
        flags |= libc::CLONE_NEWNS;
    }
    if plan.ipc_namespace {
        flags |= libc::CLONE_NEWIPC;
    }
    if plan.user_namespace && give_up.is_none() {
        flags |= libc::CLONE_NEWUSER;
    }
    if flags != 0 {
        match enter_namespaces(flags) {
            Ok(user) => {
                own_user_namespace = user;
                if user {
                    record("user namespace", Ok(()));
                }
                if flags & libc::CLONE_NEWNET != 0 {
                    record("network namespace", Ok(()));
                }
                if flags & libc::CLONE_NEWIPC != 0 {
                    record("IPC namespace", Ok(()));
                }
                if let Some(port) = proxy_port {
                    crate::handoff::hand_proxy_listener_over(port, plan.proxy_handoff_fd)?;
                    record(
                        &format!("network: only the egress proxy (127.0.0.1:{port} in its own namespace)"),
                        Ok(()),
                    );
                }
                if let Some((path, bytes)) = &plan.scratch {
                    mount_scratch(path, *bytes, give_up)?;
                    record("scratch tmpfs (size-limited)", Ok(()));
                }
            }
            // Without its namespace the proxy would be no bound at all:
            // a restricted network fails closed, strict or not.
            Err(e) if plan.strict || proxy_port.is_some() => return Err(e),
            Err(e) => {
                if flags & libc::CLONE_NEWUSER != 0 {
                    record("user namespace", Err(e.to_string()));
                }
                if flags & libc::CLONE_NEWNET != 0 {
                    record("network namespace", Err(e.to_string()));
                }
                if flags & libc::CLONE_NEWIPC != 0 {
                    record("IPC namespace", Err(e.to_string()));
                }
                if plan.scratch.is_some() {
                    record("scratch tmpfs (size-limited)", Err(e.to_string()));
                }
            }
        }
    }
    // Landlock's paths are opened (O_PATH) before root is given up and
    // after the scratch tmpfs is mounted: a rule names an inode whatever
    // the unprivileged id may reach, and the id's own file rights still
    // apply to every access beneath it (a path only root may read stays
    // closed; `sandbox exec` says which).
    let landlock_paths = if plan.confine_filesystem {
        open_landlock_paths(plan)?
    } else {
        Vec::new()
    };
    if let Some((uid, gid)) = give_up {
        let userns = give_root_up(uid, gid, plan.user_namespace)?;
        record(
            &format!("identity: root gave up for uid {uid}, gid {gid}"),
            Ok(()),
        );
        if plan.user_namespace {
            match userns {
                Ok(()) => {
                    own_user_namespace = true;
                    record("user namespace", Ok(()));
                }
                Err(e) if plan.strict => return Err(e),
                Err(e) => record("user namespace", Err(e.to_string())),
            }
        }
    }

    // 3b. A PID namespace (sandbox exec): its init is ours, and the tree
    //     dies with it. Needs the privilege of the process's user
    //     namespace, so after the ids are settled.
    if plan.pid_namespace {
        match enter_pid_namespace() {
            Ok(()) => record(
                "PID namespace (the whole tree dies with the caller)",
                Ok(()),
            ),
            Err(e) if plan.strict => return Err(e),
            Err(e) => record(
                "PID namespace (the whole tree dies with the caller)",
                Err(e.to_string()),
            ),
        }
    }

    // 4. Resource limits. No core dumps ever (they would write the model's
    //    memory, and the prompt, to disk).
    set_rlimit(libc::RLIMIT_CORE, 0, "setrlimit(RLIMIT_CORE)")?;
    if let Some(n) = plan.max_threads {
        // Counted per user in the process's own user namespace (kernels
        // 5.14 and later); uid 0 of the host is exempt wherever it is, and
        // outside a namespace of its own the count would include every
        // other process of the same user: then the limit is not set, unless
        // the uid is this process's own (a per-process uid: no other
        // process has it, so the host-wide count is this process's).
        let own_uid = plan.per_process_uid && give_up.is_some();
        // SAFETY: geteuid has no preconditions.
        let gap = if unsafe { libc::geteuid() } == 0 {
            Some("uid 0 is exempt from RLIMIT_NPROC")
        } else if own_uid {
            None
        } else if !crate::report::kernel_counts_threads_per_namespace() {
            Some("this kernel (before 5.14) counts every process of the uid on the host")
        } else if !own_user_namespace {
            Some("no user namespace of its own to count threads in")
        } else {
            None
        };
        match gap {
            None => {
                set_rlimit(libc::RLIMIT_NPROC, n, "setrlimit(RLIMIT_NPROC)")?;
                record(
                    if own_user_namespace {
                        "threads: RLIMIT_NPROC (own user namespace)"
                    } else {
                        "threads: RLIMIT_NPROC (a uid of its own)"
                    },
                    Ok(()),
                );
            }
            Some(why) if plan.strict => {
                return Err(SandboxError::Call {
                    call: "setrlimit(RLIMIT_NPROC)",
                    source: io::Error::other(why),
                })
            }
            Some(why) => record(
                "threads: RLIMIT_NPROC (own user namespace)",
                Err(why.into()),
            ),
        }
    }
    if let Some(n) = plan.max_pending_signals {
        set_rlimit(libc::RLIMIT_SIGPENDING, n, "setrlimit(RLIMIT_SIGPENDING)")?;
        record("queued signals: RLIMIT_SIGPENDING", Ok(()));
    }
    if let Some(b) = plan.address_space_bytes {
        set_rlimit(libc::RLIMIT_AS, b, "setrlimit(RLIMIT_AS)")?;
        record("memory: RLIMIT_AS", Ok(()));
    }
    if let Some(s) = plan.cpu_seconds {
        set_rlimit(libc::RLIMIT_CPU, s, "setrlimit(RLIMIT_CPU)")?;
        record("cpu time: RLIMIT_CPU (lifetime backstop)", Ok(()));
    }
    if let Some(n) = plan.max_open_files {
        set_rlimit(libc::RLIMIT_NOFILE, n, "setrlimit(RLIMIT_NOFILE)")?;
        record("open files: RLIMIT_NOFILE", Ok(()));
    }
    if let Some(b) = plan.file_size_bytes {
        set_rlimit(libc::RLIMIT_FSIZE, b, "setrlimit(RLIMIT_FSIZE)")?;
        // Writing past the limit then fails with EFBIG instead of killing.
        // SAFETY: installs SIG_IGN for SIGXFSZ; no handler code runs.
        if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(os_err("signal(SIGXFSZ, SIG_IGN)"));
        }
        record("file size: RLIMIT_FSIZE", Ok(()));
    }

    // 5. Process attributes: no privilege gain through exec, no debugging,
    //    CPUs; no READ_IMPLIES_EXEC persona (the kernel would add
    //    PROT_EXEC to readable mappings behind seccomp's back). On x86-64
    //    exec of a 64-bit program already clears it (`setarch -X` does not
    //    reach the worker); this is for callers that apply a plan without
    //    an exec, and seccomp keeps `personality` from setting it again.
    if plan.no_exec_memory {
        // SAFETY: personality(0xffffffff) only reads the persona.
        let persona = unsafe { libc::personality(0xffff_ffff) };
        if persona >= 0 && persona & READ_IMPLIES_EXEC != 0 {
            // SAFETY: sets the persona without the one flag; no memory.
            if unsafe { libc::personality((persona & !READ_IMPLIES_EXEC) as libc::c_ulong) } < 0 {
                return Err(os_err("personality"));
            }
            record("inherited READ_IMPLIES_EXEC persona cleared", Ok(()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    record("no_new_privs", Ok(()));
    if plan.disable_debugging {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(os_err("prctl(PR_SET_DUMPABLE, 0)"));
        }
        record("undumpable (no ptrace, no /proc/<pid>/mem)", Ok(()));
    }
    if let Some(n) = plan.cpu_count {
        set_affinity(n as usize, plan.cpu_offset as usize)?;
        record("cpus: sched_setaffinity", Ok(()));
    }

    // 5. Landlock: read-only on the model and the profile's read paths,
    //    read-write on the scratch dir and write paths, nothing else; with no
    //    network, no TCP bind or connect either; no signals or abstract
    //    sockets outside the sandbox.
    if plan.confine_filesystem {
        match landlock(plan, landlock_paths) {
            Ok(RulesetStatus::FullyEnforced) => record("landlock", Ok(())),
            Ok(other) if plan.strict => {
                return Err(SandboxError::LandlockNotEnforced(format!("{other:?}")))
            }
            Ok(other) => record("landlock", Err(format!("{other:?} on this kernel"))),
            Err(e) => return Err(e),
        }
    }

    // 5b. Capabilities: none left, in any set, after the last step that
    //     needed one (mounts, priority, opening the paths Landlock allows).
    //     Root and a user namespace's owner both end as a process that
    //     cannot override permissions, make device nodes, change owners,
    //     or regain any of it by exec.
    if plan.drop_capabilities {
        drop_capabilities()?;
        record(
            "capabilities: none (effective, permitted, inheritable, ambient, bounding)",
            Ok(()),
        );
    }

    // 6. seccomp, last: it would forbid the calls above.
    match &plan.syscalls {
        SyscallPolicy::Off => {}
        policy => {
            install_seccomp(plan, policy)?;
            record(
                match policy {
                    SyscallPolicy::AllowList { .. } => "seccomp allow-list",
                    _ => "seccomp deny-list",
                },
                Ok(()),
            );
            record("seccomp: x32 and foreign-architecture calls kill", Ok(()));
            record(
                "seccomp: other processes unreachable (pid arguments)",
                Ok(()),
            );
            record("seccomp: no terminal input injection (TIOCSTI)", Ok(()));
            if plan.no_exec_memory {
                record("seccomp: no new executable memory (PROT_EXEC)", Ok(()));
            }
            record(
                "seccomp: no file mode, owner, time or attribute changes",
                Ok(()),
            );
            if plan.no_sysv_ipc {
                record("seccomp: no System V IPC", Ok(()));
            }
            record("seccomp: the parent-death signal stays", Ok(()));
            record(
                match plan.sockets {
                    SocketPolicy::None => "seccomp: no sockets",
                    SocketPolicy::PairsOnly => "seccomp: socket pairs only",
                    SocketPolicy::Any => "seccomp: sockets as the network allows",
                    SocketPolicy::InetOnly => "seccomp: inet sockets and socket pairs only",
                },
                Ok(()),
            );
        }
    }
    Ok(Applied {
        layers,
        setup_micros: started.elapsed().as_micros() as u64,
    })
}

/// Closes every descriptor above 2 but `keep`, each of which must be an open
/// regular file.
fn close_inherited(files: &[i32], handoff: Option<i32>) -> Result<(), SandboxError> {
    if let Some(fd) = handoff {
        // SAFETY: fstat writes into a zeroed stat buffer we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; a bad descriptor is an error return.
        let ok = fd > 2 && unsafe { libc::fstat(fd, &mut st) } == 0;
        if !ok || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(SandboxError::Descriptor {
                fd,
                reason: "the proxy hand-off is not an open socket".into(),
            });
        }
    }
    let mut keep: Vec<i32> = files.iter().copied().chain(handoff).collect();
    keep.sort_unstable();
    keep.dedup();
    for &fd in files {
        if fd <= 2 {
            return Err(SandboxError::Descriptor {
                fd,
                reason: "standard streams are not files to keep".into(),
            });
        }
        // SAFETY: fstat writes into a zeroed stat buffer we own; a closed
        // or bad descriptor is an error return, not undefined behaviour.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(SandboxError::Descriptor {
                fd,
                reason: format!("not open: {}", io::Error::last_os_error()),
            });
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(SandboxError::Descriptor {
                fd,
                reason: "not a regular file".into(),
            });
        }
        // SAFETY: F_GETFL reads the descriptor's flags; no memory.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 || fl & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(SandboxError::Descriptor {
                fd,
                reason: "not opened read-only".into(),
            });
        }
    }
    let mut from = 3u32;
    for upto in keep.iter().map(|&fd| fd as u32).chain(std::iter::once(0)) {
        // The last range runs to the end; the others stop before a kept fd.
        let (first, last) = if upto == 0 {
            (from, u32::MAX)
        } else {
            (from, upto - 1)
        };
        if first <= last {
            // SAFETY: close_range only closes descriptors; nothing in this
            // process holds descriptors above 2 that it still uses at this
            // point, but the kept ones, which the ranges skip.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
            if rc != 0 {
                return Err(os_err("close_range"));
            }
        }
        from = upto.saturating_add(1);
    }
    Ok(())
}

pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Started as root: no supplementary groups, then `gid` and `uid` (real,
/// effective, saved), keeping the parent-death signal (which the change
/// clears), undumpable.
fn become_unprivileged(uid: u32, gid: u32) -> Result<(), SandboxError> {
    // A change of effective ids clears the parent-death signal: keep it.
    let mut pdeathsig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int into `pdeathsig`.
    if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeathsig as *mut libc::c_int) } != 0 {
        return Err(os_err("prctl(PR_GET_PDEATHSIG)"));
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: setgroups with an empty list reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(os_err("setgroups([])"));
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(os_err("setresgid"));
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(os_err("setresuid"));
    }
    // The change left the process undumpable (suid_dumpable is 0 on any
    // sane host): make sure, so that no other process of `id` can open it.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_DUMPABLE, 0)"));
    }
    if pdeathsig != 0 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, pdeathsig as libc::c_ulong) } != 0 {
            return Err(os_err("prctl(PR_SET_PDEATHSIG)"));
        }
        // The parent may have died while the signal was off.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            return Err(SandboxError::Call {
                call: "getppid",
                source: io::Error::other("the parent died while the ids changed"),
            });
        }
    }
    Ok(())
}

/// Enters the namespaces in `flags` (and a user namespace whenever the
/// process is not root); returns whether a user namespace was entered.
fn enter_namespaces(mut flags: libc::c_int) -> Result<bool, SandboxError> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        flags |= libc::CLONE_NEWUSER;
    }
    let names = [
        (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
        (libc::CLONE_NEWNET, "CLONE_NEWNET"),
        (libc::CLONE_NEWNS, "CLONE_NEWNS"),
        (libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join("|");
    // SAFETY: unshare takes flags only; the process is single-threaded
    // (checked by the caller), as CLONE_NEWUSER requires.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(SandboxError::Namespace {
            flags: names,
            source: io::Error::last_os_error(),
        });
    }
    if flags & libc::CLONE_NEWUSER != 0 {
        // Map our own ids onto themselves: nothing gains privilege outside.
        let write = |file: &'static str, text: String| {
            std::fs::write(file, text).map_err(|source| SandboxError::IdMap { file, source })
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    Ok(flags & libc::CLONE_NEWUSER != 0)
}

/// A new PID namespace, then two forks: this process stays outside as the
/// waiter, its child is the namespace's init (pid 1, ours: it only forks
/// and waits), and the init's child returns from here and goes on. The
/// waiter and the init never return: the waiter ends the way the program
/// ended (the init sends it the program's wait status on a pipe), the init
/// once the program has ended (which ends every process in the namespace).
/// The init dies with the waiter (parent-death signal, checked against a
/// pipe the waiter holds), the waiter with the caller (set by the caller).
fn enter_pid_namespace() -> Result<(), SandboxError> {
    // The waiter and the init run our code unconfined with the program's
    // uid: nothing of that uid may open them (/proc/<pid>/mem, fds).
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_DUMPABLE, 0)"));
    }
    // SAFETY: flags only; the process is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(SandboxError::Namespace {
            flags: "CLONE_NEWPID".into(),
            source: io::Error::last_os_error(),
        });
    }
    let pipe = || -> Result<(libc::c_int, libc::c_int), SandboxError> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os_err("pipe2"));
        }
        Ok((fds[0], fds[1]))
    };
    // The program's wait status, init → waiter; and the waiter's life,
    // seen by the init as the end of a pipe only the waiter writes.
    let (status_r, status_w) = pipe()?;
    let (alive_r, alive_w) = pipe()?;
    // SAFETY: single-threaded; the child runs only the code below.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return Err(os_err("fork (PID namespace init)"));
    }
    if init > 0 {
        // SAFETY: closes this process's copies of the other ends.
        unsafe {
            libc::close(status_w);
            libc::close(alive_r);
        }
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reads into the rest of a local buffer.
            let n =
                unsafe { libc::read(status_r, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
            if n > 0 {
                got += n as usize;
            } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let mut st = 0;
        // SAFETY: reaps our own child; `st` is a valid out pointer.
        while unsafe { libc::waitpid(init, &mut st, 0) } < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
        let status = if got == buf.len() {
            i32::from_ne_bytes(buf)
        } else {
            st
        };
        end_as(status);
    }
    // The init (pid 1 of the namespace).
    // SAFETY: closes the ends the waiter keeps; prctl with integers.
    unsafe {
        libc::close(status_r);
        libc::close(alive_w);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    // The waiter may have died before the signal was set: its end of
    // `alive` is then closed, and poll sees the hang-up at once.
    let mut pfd = libc::pollfd {
        fd: alive_r,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
        // SAFETY: ends the init at once.
        unsafe { libc::_exit(crate::exec::EXIT_SANDBOX_FAILED) };
    }
    // SAFETY: single-threaded; the child returns from here.
    let program = unsafe { libc::fork() };
    if program < 0 {
        // SAFETY: ends the init; the waiter reports its status.
        unsafe { libc::_exit(crate::exec::EXIT_SANDBOX_FAILED) };
    }
    if program > 0 {
        loop {
            let mut st = 0;
            // SAFETY: reaps any child of the init; valid out pointer.
            let r = unsafe { libc::waitpid(-1, &mut st, 0) };
            if r == program {
                let b = st.to_ne_bytes();
                // SAFETY: writes a local buffer to our pipe end, then ends
                // the init (and with it the namespace).
                unsafe {
                    libc::write(status_w, b.as_ptr().cast(), b.len());
                    libc::_exit(0);
                }
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // SAFETY: nothing left to wait for.
                unsafe { libc::_exit(crate::exec::EXIT_SANDBOX_FAILED) };
            }
        }
    }
    // The program: dies with the init, which is pid 1 here, and leads a
    // session of its own (as the waiter did outside).
    // SAFETY: closes the init's pipe ends; setsid, prctl and getppid with
    // integers (a fresh child is no group leader: setsid succeeds).
    let parent = unsafe {
        libc::close(status_w);
        libc::close(alive_r);
        libc::setsid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::getppid()
    };
    if parent != 1 {
        return Err(SandboxError::Call {
            call: "getppid",
            source: io::Error::other("the PID namespace's init is gone"),
        });
    }
    Ok(())
}

/// Ends this process as a process with wait `status` ended: with its exit
/// code, or killed by its signal (no core dump).
fn end_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit; default action for the signal; the
        // signal unblocked and raised at this process; _exit as a fallback.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        crate::exec::EXIT_SANDBOX_FAILED
    };
    // SAFETY: ends the waiter with the program's code.
    unsafe { libc::_exit(code) }
}

/// Empties the bounding set where the process may (CAP_SETPCAP); without it
/// (an unprivileged process outside a user namespace) there is nothing to
/// drop, and no_new_privs keeps exec from granting anything.
fn drop_bounding_set() -> Result<(), SandboxError> {
    let last: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            match io::Error::last_os_error().raw_os_error() {
                // No CAP_SETPCAP: nothing to drop.
                Some(libc::EPERM) => break,
                // Past the kernel's last capability.
                Some(libc::EINVAL) => break,
                _ => return Err(os_err("prctl(PR_CAPBSET_DROP)")),
            }
        }
    }
    Ok(())
}

/// Started as root: gives root up for `uid` and `gid` (bounding set emptied first,
/// while root may), then, when `user_namespace`, enters a user namespace of
/// its own whose id maps a root helper process writes: a process may write
/// its own maps only while dumpable, and a dumpable process of `id` could
/// be opened (`/proc/<pid>/mem`) by any other process of `uid`. Returns
/// whether the user namespace was made (its failure is the caller's to
/// judge).
fn give_root_up(
    uid: u32,
    gid: u32,
    user_namespace: bool,
) -> Result<Result<(), SandboxError>, SandboxError> {
    drop_bounding_set()?;
    if !user_namespace {
        become_unprivileged(uid, gid)?;
        return Ok(Err(SandboxError::Namespace {
            flags: "CLONE_NEWUSER".into(),
            source: io::Error::other("not planned"),
        }));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    let (go_read, go_write) = (fds[0], fds[1]);
    // SAFETY: the process is single-threaded (checked by the caller), so
    // the child may allocate and use std; it only writes three /proc
    // files of its parent and exits with `_exit`.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(os_err("fork (id map helper)"));
    }
    if helper == 0 {
        // SAFETY: closes our copy of the write end; reads one byte into a
        // local buffer.
        let go = unsafe {
            libc::close(go_write);
            let mut b = 0u8;
            libc::read(go_read, (&mut b as *mut u8).cast(), 1)
        };
        let code = if go != 1 {
            2
        } else {
            // SAFETY: getppid has no preconditions.
            let parent = unsafe { libc::getppid() };
            let write = |file: &str, text: &str| {
                std::fs::write(format!("/proc/{parent}/{file}"), text).is_ok()
            };
            if write("setgroups", "deny")
                && write("uid_map", &format!("{uid} {uid} 1"))
                && write("gid_map", &format!("{gid} {gid} 1"))
            {
                0
            } else {
                1
            }
        };
        // SAFETY: ends the helper without running the parent's exit
        // handlers.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closes our copy of the read end.
    unsafe { libc::close(go_read) };
    let finish = |go: bool| -> Result<bool, SandboxError> {
        if go {
            // SAFETY: writes one byte from a local to our pipe end.
            unsafe { libc::write(go_write, b"g".as_ptr().cast(), 1) };
        }
        let mut status = 0;
        // SAFETY: closes our pipe end, then reaps our own child.
        let reaped = unsafe {
            libc::close(go_write);
            libc::waitpid(helper, &mut status, 0)
        };
        if reaped != helper {
            return Err(os_err("waitpid (id map helper)"));
        }
        Ok(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    };
    if let Err(e) = become_unprivileged(uid, gid) {
        let _ = finish(false);
        return Err(e);
    }
    // SAFETY: unshare takes flags only; single-threaded (the helper is a
    // separate process).
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let e = SandboxError::Namespace {
            flags: "CLONE_NEWUSER".into(),
            source: io::Error::last_os_error(),
        };
        finish(false)?;
        return Ok(Err(e));
    }
    if !finish(true)? {
        return Err(SandboxError::IdMap {
            file: "/proc/<pid>/uid_map (written by the root helper)",
            source: io::Error::other("the helper could not write the id maps"),
        });
    }
    Ok(Ok(()))
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` (two of them for 64 capability bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties every capability set of the calling thread (before any other
/// thread exists): ambient, bounding (when the process may change it:
/// without CAP_SETPCAP it holds no capability to drop), then effective,
/// permitted and inheritable, and checks the result.
fn drop_capabilities() -> Result<(), SandboxError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(os_err("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
    }
    drop_bounding_set()?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [CapData::default(); 2];
    // SAFETY: a valid header and two data structs, as version 3 expects.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            none.as_ptr(),
        )
    } != 0
    {
        return Err(os_err("capset"));
    }
    let mut now = [CapData::default(); 2];
    // SAFETY: as above; the kernel writes two data structs into `now`.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            now.as_mut_ptr(),
        )
    } != 0
    {
        return Err(os_err("capget"));
    }
    if now
        .iter()
        .any(|d| d.effective != 0 || d.permitted != 0 || d.inheritable != 0)
    {
        return Err(SandboxError::Call {
            call: "capset",
            source: io::Error::other("capabilities remain after dropping them"),
        });
    }
    Ok(())
}

/// Files and directories the scratch tmpfs can hold: its size limit alone
/// would let a process fill kernel memory with empty files.
pub const SCRATCH_INODES: u64 = 4096;

/// Mounts the size-limited tmpfs on `path`, owned by `owner` (uid and gid)
/// when the process is about to become that id, else by the caller.
fn mount_scratch(path: &Path, bytes: u64, owner: Option<(u32, u32)>) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Mount {
        path: path.to_path_buf(),
        source,
    };
    let root = CString::new("/").map_err(|e| err(io::Error::other(e)))?;
    // SAFETY: valid C strings; null source, type and data are allowed for a
    // propagation change. Our mounts stop propagating to the host.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|e| err(io::Error::other(e)))?;
    let fstype = CString::new("tmpfs").map_err(|e| err(io::Error::other(e)))?;
    let owner = owner
        .map(|(uid, gid)| format!(",uid={uid},gid={gid}"))
        .unwrap_or_default();
    let data = CString::new(format!(
        "size={bytes},nr_inodes={SCRATCH_INODES},mode=0700{owner}"
    ))
    .map_err(|e| err(io::Error::other(e)))?;
    // SAFETY: valid C strings for source, target, type and data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    value: u64,
    call: &'static str,
) -> Result<(), SandboxError> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(os_err(call));
    }
    Ok(())
}

/// Keeps `n` of the CPUs this process may run on, after skipping the first
/// `skip` of them (fewer when there are not so many: at least the last
/// `n`).
fn set_affinity(n: usize, skip: usize) -> Result<(), SandboxError> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid buffer of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(os_err("sched_getaffinity"));
    }
    // SAFETY: as above; CPU_* only touch the set.
    let mut keep: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu < CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    let skip = skip.min(allowed.len().saturating_sub(n));
    for &cpu in allowed.iter().skip(skip).take(n) {
        // SAFETY: cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut keep) };
    }
    // SAFETY: `keep` is a valid set of `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, &keep) } != 0 {
        return Err(os_err("sched_setaffinity"));
    }
    Ok(())
}

/// The plan's read, exec and write paths, opened (`O_PATH`), each with the
/// rights it is to get: only the rights that apply to files for a path
/// that is not a directory.
fn open_landlock_paths(
    plan: &SandboxPlan,
) -> Result<Vec<(PathFd, BitFlags<AccessFs>)>, SandboxError> {
    let abi = LANDLOCK_ABI;
    // `from_read` includes Execute: a worker that maps no new executable
    // memory executes no file either.
    let read = if plan.no_exec_memory {
        AccessFs::from_read(abi) & !AccessFs::Execute
    } else {
        AccessFs::from_read(abi)
    };
    let exec = read | AccessFs::Execute;
    // Writable paths get every right but making device nodes, fifos and
    // sockets: a device node is a way around every other rule.
    let nodes = AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::MakeFifo | AccessFs::MakeSock;
    let write = if plan.no_exec_memory {
        AccessFs::from_all(abi) & !nodes & !AccessFs::Execute
    } else {
        AccessFs::from_all(abi) & !nodes
    };
    let groups = [
        (&plan.read_paths, read),
        (&plan.exec_paths, exec),
        (&plan.write_paths, write),
    ];
    let mut opened = Vec::new();
    for (paths, access) in groups {
        for path in paths.iter() {
            let fd = PathFd::new(path).map_err(|e| SandboxError::Path {
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            // SAFETY: stat is plain data; fstat writes into it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            use std::os::fd::{AsFd, AsRawFd};
            // SAFETY: an open O_PATH descriptor (fstat accepts one).
            if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut st) } != 0 {
                return Err(SandboxError::Path {
                    path: path.clone(),
                    source: io::Error::last_os_error(),
                });
            }
            let access = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            opened.push((fd, access));
        }
    }
    Ok(opened)
}

fn landlock(
    plan: &SandboxPlan,
    paths: Vec<(PathFd, BitFlags<AccessFs>)>,
) -> Result<RulesetStatus, SandboxError> {
    let ll = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let abi = LANDLOCK_ABI;
    let level = if plan.strict {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?;
    if plan.network != NetworkMode::Full {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(ll)?;
    }
    let mut created = ruleset
        .scope(Scope::from_all(abi))
        .map_err(ll)?
        .create()
        .map_err(ll)?;
    for (fd, access) in paths {
        created = created.add_rule(PathBeneath::new(fd, access)).map_err(ll)?;
    }
    let read = if plan.no_exec_memory {
        AccessFs::from_read(abi) & !AccessFs::Execute
    } else {
        AccessFs::from_read(abi)
    };
    for &fd in &plan.read_fds {
        // SAFETY: `close_inherited` checked that `fd` is an open regular
        // file, and nothing closes it while the borrow lives (this call).
        let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        created = created
            .add_rule(PathBeneath::new(file, read & AccessFs::from_file(abi)))
            .map_err(ll)?;
    }
    if let NetworkMode::Proxy { port } = plan.network {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(ll)?;
    }
    let status = created.restrict_self().map_err(ll)?;
    Ok(status.ruleset)
}

fn rules_for(
    names: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SandboxError> {
    let mut rules = BTreeMap::new();
    for n in names {
        let n = n.as_ref();
        let nr = syscall_number(n).ok_or_else(|| SandboxError::UnknownSyscall(n.to_string()))?;
        rules.insert(nr, Vec::new());
    }
    Ok(rules)
}

fn seccomp_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Seccomp(e.to_string())
}

fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, len, op, value).map_err(seccomp_err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conditions).map_err(seccomp_err)
}

fn nr(name: &str) -> Result<i64, SandboxError> {
    syscall_number(name).ok_or_else(|| SandboxError::UnknownSyscall(name.into()))
}

/// Allow-list: when `clone` is allowed, it is allowed only without any
/// `CLONE_NEW*` flag, and only for threads when `threads_only`.
fn clone_allowed(threads_only: bool) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut all = Vec::new();
    if threads_only {
        let thread = libc::CLONE_THREAD as u64;
        all.push(cond(0, Qword, SeccompCmpOp::MaskedEq(thread), thread)?);
    }
    for (_, flag) in CLONE_NEW_FLAGS {
        all.push(cond(0, Qword, SeccompCmpOp::MaskedEq(*flag), 0)?);
    }
    Ok(vec![rule(all)?])
}

/// Deny-list: `clone` is refused with any `CLONE_NEW*` flag, and without
/// `CLONE_THREAD` when `threads_only`.
fn clone_denied(threads_only: bool) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    if threads_only {
        let thread = libc::CLONE_THREAD as u64;
        rules.push(rule(vec![cond(
            0,
            Qword,
            SeccompCmpOp::MaskedEq(thread),
            0,
        )?])?);
    }
    for (_, flag) in CLONE_NEW_FLAGS {
        rules.push(rule(vec![cond(
            0,
            Qword,
            SeccompCmpOp::MaskedEq(*flag),
            *flag,
        )?])?);
    }
    Ok(rules)
}

/// Allow-list rules for a pid call: the caller itself only (`me`, or 0).
/// pids are `int`s: only the low 32 bits count, as in the kernel.
fn own_pid_allowed(arg: PidArg, me: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    let (which, pid_arg, targets) = match arg {
        PidArg::OwnOnly(i) => (None, i, vec![me]),
        PidArg::Pid(i) => (None, i, vec![0, me]),
        PidArg::WhichWho(w) => (Some(w), 1, vec![0, me]),
    };
    let mut rules = Vec::new();
    for target in targets {
        let mut c = vec![cond(pid_arg, Dword, SeccompCmpOp::Eq, target)?];
        if let Some(w) = which {
            c.push(cond(0, Dword, SeccompCmpOp::Eq, w)?);
        }
        rules.push(rule(c)?);
    }
    Ok(rules)
}

/// Deny-list rules for a pid call: anything but the caller itself.
fn other_pid_denied(arg: PidArg, me: u64) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    let pid_arg = match arg {
        PidArg::OwnOnly(i) => {
            rules.push(rule(vec![cond(i, Dword, SeccompCmpOp::Ne, me)?])?);
            return Ok(rules);
        }
        PidArg::Pid(i) => i,
        PidArg::WhichWho(w) => {
            rules.push(rule(vec![cond(0, Dword, SeccompCmpOp::Ne, w)?])?);
            1
        }
    };
    rules.push(rule(vec![
        cond(pid_arg, Dword, SeccompCmpOp::Ne, 0)?,
        cond(pid_arg, Dword, SeccompCmpOp::Ne, me)?,
    ])?);
    Ok(rules)
}

/// Allow-list: a listed call is allowed only under `conditions`; an
/// unlisted one stays refused.
fn restrict(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, conditions: Vec<SeccompRule>) {
    if let Some(r) = rules.get_mut(&nr) {
        *r = conditions;
    }
}

/// Calls that create a file with a mode: the argument holding the mode,
/// and for `open`/`openat` the one holding the flags (the mode counts only
/// with `O_CREAT` or `O_TMPFILE`; without them a caller may pass anything).
const CREATE_MODE_CALLS: &[(&str, u8, Option<u8>)] = &[
    ("open", 2, Some(1)),
    ("openat", 3, Some(2)),
    ("creat", 1, None),
    ("mknod", 1, None),
    ("mknodat", 2, None),
];

/// The flags under which `open` uses its mode: `O_CREAT`, `__O_TMPFILE`.
const CREATING_FLAGS: [u64; 2] = [libc::O_CREAT as u64, 0o2000_0000];

/// The set-user-ID and set-group-ID mode bits.
const SET_ID_BITS: u64 = (libc::S_ISUID | libc::S_ISGID) as u64;

/// Allow-list rules: the call with a mode holding neither set-id bit, or
/// (`open`/`openat`) without a flag that creates.
fn no_set_id_mode(arg: u8, flags: Option<u8>) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = vec![rule(vec![cond(
        arg,
        Dword,
        SeccompCmpOp::MaskedEq(SET_ID_BITS),
        0,
    )?])?];
    if let Some(f) = flags {
        let creating = CREATING_FLAGS.iter().fold(0, |a, b| a | b);
        rules.push(rule(vec![cond(
            f,
            Dword,
            SeccompCmpOp::MaskedEq(creating),
            0,
        )?])?);
    }
    Ok(rules)
}

/// Deny-list rules: the call with a mode holding either set-id bit (and,
/// for `open`/`openat`, a flag that creates).
fn set_id_mode(arg: u8, flags: Option<u8>) -> Result<Vec<SeccompRule>, SandboxError> {
    let mut rules = Vec::new();
    for bit in [libc::S_ISUID as u64, libc::S_ISGID as u64] {
        let with_bit = cond(arg, Dword, SeccompCmpOp::MaskedEq(bit), bit)?;
        match flags {
            None => rules.push(rule(vec![with_bit])?),
            Some(f) => {
                for flag in CREATING_FLAGS {
                    rules.push(rule(vec![
                        cond(arg, Dword, SeccompCmpOp::MaskedEq(bit), bit)?,
                        cond(f, Dword, SeccompCmpOp::MaskedEq(flag), flag)?,
                    ])?);
                }
            }
        }
    }
    Ok(rules)
}

/// `personality` flag that makes every readable mapping executable.
const READ_IMPLIES_EXEC: libc::c_int = 0x0400000;

/// The calls that can make memory executable, the argument that carries
/// the protection, and the bit that asks for it.
const EXEC_MEMORY_CALLS: &[(&str, u8, u64)] = &[
    ("mmap", 2, libc::PROT_EXEC as u64),
    ("mprotect", 2, libc::PROT_EXEC as u64),
    ("pkey_mprotect", 2, libc::PROT_EXEC as u64),
    ("shmat", 2, libc::SHM_EXEC as u64),
];

/// `socketpair` of stream or seqpacket sockets only. A datagram pair's
/// end can `sendto` any socket path (`/dev/log`, a journal), which
/// Landlock does not govern and a network namespace does not isolate;
/// stream and seqpacket ends ignore or refuse an address.
const PAIR_TYPES: [libc::c_int; 2] = [libc::SOCK_STREAM, libc::SOCK_SEQPACKET];
/// The type bits of `socketpair`'s second argument (without `SOCK_CLOEXEC`
/// and `SOCK_NONBLOCK`).
const SOCK_TYPE_MASK: u64 = 0xf;

/// Allow-list rules: `socketpair` of the types in [`PAIR_TYPES`].
fn pairs_allowed() -> Result<Vec<SeccompRule>, SandboxError> {
    PAIR_TYPES
        .iter()
        .map(|&t| {
            rule(vec![cond(
                1,
                Dword,
                SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                t as u64,
            )?])
        })
        .collect()
}

/// Deny-list rules: `socketpair` of every other type (one rule per value
/// of the type bits: seccomp compares masked arguments for equality only).
fn pairs_denied() -> Result<Vec<SeccompRule>, SandboxError> {
    (0..=SOCK_TYPE_MASK)
        .filter(|t| !PAIR_TYPES.contains(&(*t as libc::c_int)))
        .map(|t| {
            rule(vec![cond(
                1,
                Dword,
                SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                t,
            )?])
        })
        .collect()
}

/// The only families `SocketPolicy::InetOnly` lets `socket` create.
const INET_FAMILIES: [libc::c_int; 2] = [libc::AF_INET, libc::AF_INET6];

/// Socket families a plan refuses when sockets follow the network mode.
fn refused_families(plan: &SandboxPlan) -> Vec<libc::c_int> {
    match plan.network {
        NetworkMode::None => vec![
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_PACKET,
            libc::AF_NETLINK,
        ],
        // Netlink talks to the kernel's configuration interfaces.
        NetworkMode::Full => vec![libc::AF_NETLINK],
        // `SocketPolicy::InetOnly` allows families rather than refusing
        // them; with `Any` these are refused.
        NetworkMode::Proxy { .. } => vec![
            libc::AF_UNIX,
            libc::AF_PACKET,
            libc::AF_NETLINK,
            libc::AF_VSOCK,
        ],
    }
}

/// Builds and installs the filters. Beside the policy's list, both
/// policies restrict the same calls by argument: `clone` (no namespaces,
/// threads only), calls aimed at a pid (the caller only), `ioctl` (no
/// terminal injection), `prctl`, and `socket` (by [`SocketPolicy`]); the
/// allow-list keeps a restricted call only where it lists it.
fn install_seccomp(plan: &SandboxPlan, policy: &SyscallPolicy) -> Result<(), SandboxError> {
    let arch = TargetArch::x86_64;
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u64;
    let clone = nr("clone")?;
    let (socket, socketpair, ioctl, prctl, fcntl) = (
        nr("socket")?,
        nr("socketpair")?,
        nr("ioctl")?,
        nr("prctl")?,
        nr("fcntl")?,
    );
    let filter = match policy {
        SyscallPolicy::AllowList { extra } => {
            // What a profile's `allowed_syscalls` cannot add (the config
            // refuses such names too; a plan built in code may not have
            // been through it) is left out of the extras.
            let mut rules = rules_for(
                WORKER_ALLOW_LIST.iter().map(|(n, _)| *n).chain(
                    extra
                        .iter()
                        .map(String::as_str)
                        .filter(|n| !never_allowed(n)),
                ),
            )?;
            if plan.allow_exec {
                rules.extend(rules_for(EXEC_ALLOW_LIST.iter().map(|(n, _)| *n))?);
                if plan.network != NetworkMode::None {
                    rules.extend(rules_for(EXEC_NET_ALLOW_LIST.iter().map(|(n, _)| *n))?);
                }
            }
            if (plan.no_child_processes || plan.no_exec_memory) && !plan.allow_exec {
                rules.remove(&nr("execve")?);
                rules.remove(&nr("execveat")?);
            }
            let mut fcntl_ok = Vec::new();
            for (_, command) in DENIED_FCNTL {
                fcntl_ok.push(cond(1, Dword, SeccompCmpOp::Ne, *command)?);
            }
            restrict(&mut rules, fcntl, vec![rule(fcntl_ok)?]);
            // Entries allowed only with some arguments. An entry absent
            // from the list stays absent (refused).
            restrict(&mut rules, clone, clone_allowed(plan.no_child_processes)?);
            for (name, arg) in PID_CALLS {
                restrict(&mut rules, nr(name)?, own_pid_allowed(*arg, me)?);
            }
            let mut not_denied = Vec::new();
            for (_, req) in DENIED_IOCTLS {
                not_denied.push(cond(1, Dword, SeccompCmpOp::Ne, *req)?);
            }
            restrict(&mut rules, ioctl, vec![rule(not_denied)?]);
            let mut options = Vec::new();
            for (_, option) in ALLOWED_PRCTL {
                options.push(rule(vec![cond(0, Dword, SeccompCmpOp::Eq, *option)?])?);
            }
            restrict(&mut rules, prctl, options);
            if plan.no_exec_memory {
                for (name, arg, bit) in EXEC_MEMORY_CALLS {
                    let without = cond(*arg, Qword, SeccompCmpOp::MaskedEq(*bit), 0)?;
                    restrict(&mut rules, nr(name)?, vec![rule(vec![without])?]);
                }
            }
            match plan.sockets {
                SocketPolicy::None => {
                    rules.remove(&socket);
                    rules.remove(&socketpair);
                }
                SocketPolicy::PairsOnly => {
                    rules.remove(&socket);
                    restrict(&mut rules, socketpair, pairs_allowed()?);
                }
                SocketPolicy::Any => {
                    let mut allowed = Vec::new();
                    for family in refused_families(plan) {
                        allowed.push(cond(0, Dword, SeccompCmpOp::Ne, family as u64)?);
                    }
                    restrict(&mut rules, socket, vec![rule(allowed)?]);
                }
                SocketPolicy::InetOnly => {
                    let mut families = Vec::new();
                    for family in INET_FAMILIES {
                        families.push(rule(vec![cond(
                            0,
                            Dword,
                            SeccompCmpOp::Eq,
                            family as u64,
                        )?])?);
                    }
                    restrict(&mut rules, socket, families);
                    restrict(&mut rules, socketpair, pairs_allowed()?);
                }
            }
            // No set-user-ID or set-group-ID file made through a create
            // mode (a chmod by other means). openat2 hides its mode in a
            // struct a filter cannot read: the ENOSYS filter answers it
            // (so that callers fall back to openat), this one lets it by.
            for (name, arg, flags) in CREATE_MODE_CALLS {
                restrict(&mut rules, nr(name)?, no_set_id_mode(*arg, *flags)?);
            }
            rules.insert(nr("openat2")?, Vec::new());
            // Whatever a profile's extras list: modes, owners, times and
            // attributes stay unchanged, and the worker makes no System V
            // IPC object.
            for name in METADATA_WRITES {
                rules.remove(&nr(name)?);
            }
            if plan.no_sysv_ipc {
                for name in SYSV_IPC {
                    rules.remove(&nr(name)?);
                }
            }
            SeccompFilter::new(rules, eperm, SeccompAction::Allow, arch).map_err(seccomp_err)?
        }
        SyscallPolicy::DenyList => {
            let mut rules = rules_for(DENY_LIST.iter())?;
            if plan.no_child_processes {
                rules.extend(rules_for(["fork", "vfork", "execveat"])?);
                if !plan.allow_exec {
                    rules.extend(rules_for(["execve"])?);
                }
            }
            // A program the kernel maps is executable memory too.
            if plan.no_exec_memory && !plan.allow_exec {
                rules.extend(rules_for(["execve", "execveat"])?);
            }
            // Modes, owners, times and attributes, which Landlock does not
            // govern: no sandboxed process changes any (by path or by
            // descriptor: seccomp cannot tell a write path from another),
            // nor makes a set-user-ID or set-group-ID file through a
            // create mode (openat2's mode is out of a filter's reach: the
            // ENOSYS filter answers it).
            rules.extend(rules_for(METADATA_WRITES.iter())?);
            for (name, arg, flags) in CREATE_MODE_CALLS {
                rules.insert(nr(name)?, set_id_mode(*arg, *flags)?);
            }
            rules.insert(clone, clone_denied(plan.no_child_processes)?);
            for (name, arg) in PID_CALLS {
                rules.insert(nr(name)?, other_pid_denied(*arg, me)?);
            }
            let mut ioctls = Vec::new();
            for (_, req) in DENIED_IOCTLS {
                ioctls.push(rule(vec![cond(1, Dword, SeccompCmpOp::Eq, *req)?])?);
            }
            rules.insert(ioctl, ioctls);
            let mut fcntls = Vec::new();
            for (_, command) in DENIED_FCNTL {
                fcntls.push(rule(vec![cond(1, Dword, SeccompCmpOp::Eq, *command)?])?);
            }
            rules.insert(fcntl, fcntls);
            let mut prctls = Vec::new();
            for (name, option) in DENIED_PRCTL {
                if *name == "PR_SET_DUMPABLE" && !plan.disable_debugging {
                    continue;
                }
                prctls.push(rule(vec![cond(0, Dword, SeccompCmpOp::Eq, *option)?])?);
            }
            rules.insert(prctl, prctls);
            if plan.no_exec_memory {
                for (name, arg, bit) in EXEC_MEMORY_CALLS {
                    let with = cond(*arg, Qword, SeccompCmpOp::MaskedEq(*bit), *bit)?;
                    rules.insert(nr(name)?, vec![rule(vec![with])?]);
                }
            }
            // After the PROT_EXEC rules: refused outright, shmat included.
            if plan.no_sysv_ipc {
                rules.extend(rules_for(SYSV_IPC.iter())?);
            }
            match plan.sockets {
                SocketPolicy::None => {
                    rules.insert(socket, Vec::new());
                    rules.insert(socketpair, Vec::new());
                }
                SocketPolicy::PairsOnly => {
                    rules.insert(socket, Vec::new());
                    rules.insert(socketpair, pairs_denied()?);
                }
                SocketPolicy::Any => {
                    let mut families = Vec::new();
                    for family in refused_families(plan) {
                        families.push(rule(vec![cond(
                            0,
                            Dword,
                            SeccompCmpOp::Eq,
                            family as u64,
                        )?])?);
                    }
                    rules.insert(socket, families);
                }
                SocketPolicy::InetOnly => {
                    let [v4, v6] = INET_FAMILIES;
                    rules.insert(
                        socket,
                        vec![rule(vec![
                            cond(0, Dword, SeccompCmpOp::Ne, v4 as u64)?,
                            cond(0, Dword, SeccompCmpOp::Ne, v6 as u64)?,
                        ])?],
                    );
                    rules.insert(socketpair, pairs_denied()?);
                }
            }
            SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch).map_err(seccomp_err)?
        }
        SyscallPolicy::Off => return Ok(()),
    };
    let prog: BpfProgram = filter.try_into().map_err(seccomp_err)?;
    // clone3 cannot be filtered by its flags, nor openat2 by its mode (both
    // sit behind a pointer): answer ENOSYS so that glibc and other callers
    // fall back to clone and openat, which are filtered.
    let clone3 = SeccompFilter::new(
        rules_for(["clone3", "openat2"])?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    let clone3: BpfProgram = clone3.try_into().map_err(seccomp_err)?;
    // The x32 and clone3 filters first: once the main filter is in, the
    // allow-list no longer permits installing another one. The kernel runs
    // every filter and takes the strictest answer.
    load_filter(&x32_filter(), 0)?;
    seccompiler::apply_filter_all_threads(&clone3).map_err(seccomp_err)?;
    // The main filter with SECCOMP_FILTER_FLAG_LOG: every call it refuses
    // with EPERM is also an audit record of the kernel (`audit: type=1326
    // … syscall=N`, in the audit log or the kernel log), naming the process
    // and the syscall.
    let main: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    load_filter(&main, libc::SECCOMP_FILTER_FLAG_LOG)
}

/// A filter of our own, ahead of seccompiler's (which checks only the
/// architecture): foreign-architecture calls and x32 numbers kill the
/// process. On a kernel without x32 support such a number would only fail
/// with ENOSYS; on one with it, it would reach a syscall table the other
/// filters never name.
fn x32_filter() -> [libc::sock_filter; 7] {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let ld_abs = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    [
        // struct seccomp_data: int nr at 0, u32 arch at 4.
        op(ld_abs, 4, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        op(ret, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(ld_abs, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        op(ret, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

/// Installs a filter program on every thread (`flags` beside TSYNC).
fn load_filter(prog: &[libc::sock_filter], flags: libc::c_ulong) -> Result<(), SandboxError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| SandboxError::Seccomp("filter too long".into()))?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program from `fprog`, which points into
    // `prog`, alive and unchanged for this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC | flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SandboxError::Seccomp(format!(
            "installing a filter: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
