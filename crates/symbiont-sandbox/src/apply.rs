//! Applying a plan to the calling process, as one ordered checklist.
//!
//! Order matters (`ARCHITECTURE.md` lists it): namespaces need a
//! single-threaded process; rlimits and prctl before anything can allocate
//! or trace; Landlock, then seccomp last, because seccomp would otherwise
//! forbid the calls that install the other layers.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use landlock::RulesetStatus;

use crate::filesystem::{landlock, open_landlock_paths};
use crate::identity::{
    drop_capabilities, enter_namespaces, enter_pid_namespace, give_root_up, mount_scratch,
};
use crate::plan::{
    Applied, Layer, LayerKind as L, NetworkMode, SandboxPlan, SyscallPolicy, ThreadCount,
};
use crate::seccomp::{install_seccomp, READ_IMPLIES_EXEC};

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
    /// A plan that allows child processes, where what counts and ends
    /// them is not in force. Whatever the plan's strictness: without them
    /// a fork bomb would be bounded by nothing but the clock.
    #[error("child processes are allowed only with a PID namespace and a thread count (RLIMIT_NPROC) in force: {0}")]
    ChildrenUnbounded(String),
}

pub(crate) fn os_err(call: &'static str) -> SandboxError {
    SandboxError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

/// Applies `plan` to the calling process. On error, the process must not go
/// on to do untrusted work: some layers may already be in place, others not.
pub fn apply(plan: &SandboxPlan) -> Result<Applied, SandboxError> {
    let started = Instant::now();
    // (A plan without a syscall filter confines nothing: a twin in tests.)
    let confined = !matches!(plan.syscalls, crate::plan::SyscallPolicy::Off);
    let children = confined && !plan.no_child_processes;
    if children && (!plan.pid_namespace || plan.max_threads.is_none()) {
        return Err(SandboxError::ChildrenUnbounded(
            "the plan has no PID namespace or no thread cap".into(),
        ));
    }
    let mut layers = Vec::new();
    let mut record = |kind: L, enforced: Result<(), String>| layers.push(Layer { kind, enforced });

    // 1. Inherited file descriptors: keep only stdin, stdout, stderr (the
    //    protocol pipes and the log) and the plan's read-only files.
    close_inherited(&plan.read_fds, plan.proxy_handoff_fd)?;
    record(L::InheritedDescriptorsClosed, Ok(()));

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
            record(L::Priority, Err(e.to_string()));
        } else {
            record(L::Priority, Ok(()));
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
                    record(L::UserNamespace, Ok(()));
                }
                if flags & libc::CLONE_NEWNET != 0 {
                    record(L::NetworkNamespace, Ok(()));
                }
                if flags & libc::CLONE_NEWIPC != 0 {
                    record(L::IpcNamespace, Ok(()));
                }
                if let Some(port) = proxy_port {
                    crate::handoff::hand_proxy_listener_over(port, plan.proxy_handoff_fd)?;
                    record(L::EgressProxyOnly { port }, Ok(()));
                }
                if let Some((path, bytes)) = &plan.scratch {
                    mount_scratch(path, *bytes, give_up)?;
                    record(L::ScratchTmpfs, Ok(()));
                }
            }
            // Without its namespace the proxy would be no bound at all:
            // a restricted network fails closed, strict or not.
            Err(e) if plan.strict || proxy_port.is_some() => return Err(e),
            Err(e) => {
                if flags & libc::CLONE_NEWUSER != 0 {
                    record(L::UserNamespace, Err(e.to_string()));
                }
                if flags & libc::CLONE_NEWNET != 0 {
                    record(L::NetworkNamespace, Err(e.to_string()));
                }
                if flags & libc::CLONE_NEWIPC != 0 {
                    record(L::IpcNamespace, Err(e.to_string()));
                }
                if plan.scratch.is_some() {
                    record(L::ScratchTmpfs, Err(e.to_string()));
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
        record(L::Identity { uid, gid }, Ok(()));
        if plan.user_namespace {
            match userns {
                Ok(()) => {
                    own_user_namespace = true;
                    record(L::UserNamespace, Ok(()));
                }
                Err(e) if plan.strict => return Err(e),
                Err(e) => record(L::UserNamespace, Err(e.to_string())),
            }
        }
    }

    // 3b. A PID namespace (sandbox exec): its init is ours, and the tree
    //     dies with it. Needs the privilege of the process's user
    //     namespace, so after the ids are settled.
    if plan.pid_namespace {
        match enter_pid_namespace() {
            Ok(()) => record(L::PidNamespace, Ok(())),
            Err(e) if plan.strict => return Err(e),
            Err(e) if children => {
                return Err(SandboxError::ChildrenUnbounded(format!(
                    "PID namespace: {e}"
                )))
            }
            Err(e) => record(L::PidNamespace, Err(e.to_string())),
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
                    L::Threads(if own_user_namespace {
                        ThreadCount::OwnUserNamespace
                    } else {
                        ThreadCount::OwnUid
                    }),
                    Ok(()),
                );
            }
            Some(why) if children => {
                return Err(SandboxError::ChildrenUnbounded(format!(
                    "RLIMIT_NPROC: {why}"
                )))
            }
            Some(why) if plan.strict => {
                return Err(SandboxError::Call {
                    call: "setrlimit(RLIMIT_NPROC)",
                    source: io::Error::other(why),
                })
            }
            Some(why) => record(L::Threads(ThreadCount::OwnUserNamespace), Err(why.into())),
        }
    }
    if let Some(n) = plan.max_pending_signals {
        set_rlimit(libc::RLIMIT_SIGPENDING, n, "setrlimit(RLIMIT_SIGPENDING)")?;
        record(L::QueuedSignals, Ok(()));
    }
    if let Some(b) = plan.address_space_bytes {
        set_rlimit(libc::RLIMIT_AS, b, "setrlimit(RLIMIT_AS)")?;
        record(L::Memory, Ok(()));
    }
    if let Some(s) = plan.cpu_seconds {
        set_rlimit(libc::RLIMIT_CPU, s, "setrlimit(RLIMIT_CPU)")?;
        record(L::CpuTime, Ok(()));
    }
    if let Some(n) = plan.max_open_files {
        set_rlimit(libc::RLIMIT_NOFILE, n, "setrlimit(RLIMIT_NOFILE)")?;
        record(L::OpenFiles, Ok(()));
    }
    if let Some(b) = plan.file_size_bytes {
        set_rlimit(libc::RLIMIT_FSIZE, b, "setrlimit(RLIMIT_FSIZE)")?;
        // Writing past the limit then fails with EFBIG instead of killing.
        // SAFETY: installs SIG_IGN for SIGXFSZ; no handler code runs.
        if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(os_err("signal(SIGXFSZ, SIG_IGN)"));
        }
        record(L::FileSize, Ok(()));
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
            record(L::ReadImpliesExecCleared, Ok(()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os_err("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    record(L::NoNewPrivs, Ok(()));
    if plan.disable_debugging {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(os_err("prctl(PR_SET_DUMPABLE, 0)"));
        }
        record(L::Undumpable, Ok(()));
    }
    if let Some(n) = plan.cpu_count {
        set_affinity(n as usize, plan.cpu_offset as usize)?;
        record(L::Cpus, Ok(()));
    }

    // 5. Landlock: read-only on the model and the profile's read paths,
    //    read-write on the scratch dir and write paths, nothing else; with no
    //    network, no TCP bind or connect either; no signals or abstract
    //    sockets outside the sandbox.
    if plan.confine_filesystem {
        match landlock(plan, landlock_paths) {
            Ok(RulesetStatus::FullyEnforced) => record(L::Landlock, Ok(())),
            Ok(other) if plan.strict => {
                return Err(SandboxError::LandlockNotEnforced(format!("{other:?}")))
            }
            Ok(other) => record(L::Landlock, Err(format!("{other:?} on this kernel"))),
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
        record(L::Capabilities, Ok(()));
    }

    // 6. seccomp, last: it would forbid the calls above.
    match &plan.syscalls {
        SyscallPolicy::Off => {}
        policy => {
            install_seccomp(plan, policy)?;
            record(
                match policy {
                    SyscallPolicy::AllowList { .. } => L::SeccompAllowList,
                    _ => L::SeccompDenyList,
                },
                Ok(()),
            );
            record(L::SeccompForeignArchitectures, Ok(()));
            record(L::SeccompOtherProcesses, Ok(()));
            record(L::SeccompTerminalInjection, Ok(()));
            if plan.no_exec_memory {
                record(L::SeccompNoExecMemory, Ok(()));
            }
            record(L::SeccompNoFileMetadata, Ok(()));
            if plan.no_sysv_ipc {
                record(L::SeccompNoSysvIpc, Ok(()));
            }
            record(L::SeccompParentDeathSignal, Ok(()));
            record(L::SeccompSockets(plan.sockets), Ok(()));
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
