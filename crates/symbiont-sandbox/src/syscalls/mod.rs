//! Syscall policy as reviewed data.
//!
//! The worker's allow-list comes from `strace -f -c` of real inference on
//! the default model (start-up to shutdown, prompt and generation), then
//! reviewed: every entry is something a loaded llama.cpp worker does; the
//! unusual ones say why. Calls made only before the sandbox is applied
//! (execve, loading shared libraries, reading the launch spec) are not here.

mod table;

pub use table::syscall_number;

/// Added to the allow-list for `sandbox exec` only (`plan.allow_exec`):
/// what `execve`, the dynamic loader, libc start-up and a shell with common
/// file tools need, from `strace -f -c` of `sh -c 'echo; cat; ls'`.
/// `fork`/`vfork` are not here: [`CHILD_ALLOW_LIST`] adds them for a plan
/// with child processes.
pub const EXEC_ALLOW_LIST: &[(&str, &str)] = &[
    ("execve", "the program itself"),
    ("arch_prctl", "loader: thread-local storage base"),
    ("set_tid_address", "libc start-up"),
    ("prlimit64", "libc start-up reads the stack limit"),
    (
        "openat",
        "loader opens shared libraries; the program its files",
    ),
    ("access", "loader checks /etc/ld.so.preload"),
    ("faccessat2", "shells test files"),
    ("readlink", "programs resolve /proc/self/exe"),
    ("readlinkat", "programs resolve links"),
    ("fcntl", "shells move descriptors"),
    ("dup2", "shells redirect"),
    ("dup3", "shells redirect"),
    ("pipe2", "shells"),
    ("getdents64", "listing directories"),
    ("ioctl", "terminal queries (TCGETS)"),
    ("uname", "libc and tools"),
    ("statfs", "tools ask the file system type"),
    ("getuid", "identity queries"),
    ("geteuid", "identity queries"),
    ("getgid", "identity queries"),
    ("getegid", "identity queries"),
    ("getpgrp", "shells"),
    ("getcwd", "shells"),
    ("chdir", "shells"),
    ("wait4", "shells reap (no child can exist without fork)"),
];

/// Added to the allow-list when the plan allows child processes
/// (`max_child_processes` above 0, `sandbox exec` only), from `strace -f
/// -c` of `sh` running subshells and commands and of Python's `os.fork`
/// and `subprocess`. `clone` stays restricted to no `CLONE_NEW*` flag.
pub const CHILD_ALLOW_LIST: &[(&str, &str)] = &[
    ("fork", "child processes"),
    ("vfork", "posix_spawn, shells"),
    ("waitid", "reaping children"),
    ("rt_sigsuspend", "shells wait for children"),
    ("close_range", "subprocess closes inherited descriptors"),
    (
        "setsid",
        "a child that leads a session of its own (setsid(1))",
    ),
    ("setpgid", "shells put jobs in process groups"),
    (
        "kill",
        "signals to the tree's processes (restricted: never its init)",
    ),
    ("getpgid", "shells and ps-like tools"),
];

/// Added to [`EXEC_ALLOW_LIST`] when the program has a network (`Full`,
/// or `Proxy`: TCP to the egress proxy only, which Landlock and the
/// namespace bound): what `curl` and Python's `urllib` need, from
/// `strace -f -c` of both fetching through the proxy.
pub const EXEC_NET_ALLOW_LIST: &[(&str, &str)] = &[
    ("socket", "by family, as the plan's socket policy allows"),
    ("socketpair", "curl's wake-up pair"),
    ("connect", "Landlock allows only the permitted ports"),
    ("getsockopt", "connection status"),
    ("setsockopt", "TCP_NODELAY, keep-alive"),
    ("getsockname", "local address"),
    ("getpeername", "peer address"),
    ("sendto", "sending"),
    ("recvfrom", "receiving"),
    ("sendmsg", "sending"),
    ("recvmsg", "receiving"),
    ("sendmmsg", "resolver queries"),
    ("shutdown", "half-close"),
    ("poll", "waiting for sockets"),
    ("ppoll", "waiting for sockets"),
    ("pselect6", "waiting for sockets"),
    ("select", "waiting for sockets"),
    ("epoll_create1", "event loops"),
    ("epoll_ctl", "event loops"),
    ("epoll_wait", "event loops"),
    ("epoll_pwait", "event loops"),
    ("eventfd2", "event loops"),
    ("clock_gettime", "timeouts (when the vDSO is not used)"),
    ("gettimeofday", "timeouts"),
];

/// (name, why) for every call the worker may make once sandboxed.
pub const WORKER_ALLOW_LIST: &[(&str, &str)] = &[
    // Memory: the allocator, llama.cpp's buffers, the model's mapping.
    ("brk", "allocator"),
    ("mmap", "allocator, model weights mapping"),
    ("munmap", "allocator"),
    ("mremap", "allocator (realloc of large blocks)"),
    ("mprotect", "thread stacks' guard pages"),
    (
        "madvise",
        "allocator returns memory; ggml advises the model mapping",
    ),
    // Files: only what Landlock lets through (the model, the scratch dir).
    (
        "openat",
        "reading the model file; Landlock limits the paths",
    ),
    ("read", "protocol frames on stdin, the model file"),
    ("pread64", "reading tensors from the model file"),
    ("write", "protocol frames on stdout, log lines on stderr"),
    ("writev", "stdio may gather writes"),
    ("close", "closing files"),
    ("lseek", "model file reads"),
    ("fadvise64", "llama.cpp hints sequential reads of the model"),
    ("newfstatat", "file sizes (the model)"),
    ("fstat", "file sizes"),
    ("statx", "std's file metadata"),
    // Threads: OpenMP's and ours. `clone` is allowed only with CLONE_THREAD
    // (see apply.rs); `clone3` is answered ENOSYS so glibc falls back to it.
    (
        "clone",
        "threads only: restricted to CLONE_THREAD by argument",
    ),
    (
        "clone3",
        "answered ENOSYS by a second filter; glibc then uses clone",
    ),
    ("futex", "locks and OpenMP barriers"),
    ("set_robust_list", "new threads"),
    ("rseq", "new threads (glibc restartable sequences)"),
    (
        "sched_getaffinity",
        "OpenMP and std count the CPUs they may use",
    ),
    ("sched_yield", "OpenMP spin-wait"),
    ("gettid", "thread ids"),
    ("getpid", "std and glibc"),
    ("getppid", "the worker checks its parent"),
    ("prctl", "thread names (PR_SET_NAME)"),
    ("sigaltstack", "Rust's stack-overflow guard on new threads"),
    ("rt_sigaction", "signal setup on new threads"),
    ("rt_sigprocmask", "signal masks around thread creation"),
    ("rt_sigreturn", "returning from a signal handler"),
    ("nanosleep", "sleeps"),
    ("clock_nanosleep", "sleeps"),
    (
        "clock_gettime",
        "timing (when the vDSO falls back to the syscall)",
    ),
    ("getrandom", "hash map seeds"),
    ("sysinfo", "ggml reads total memory"),
    ("exit", "thread exit"),
    ("exit_group", "process exit"),
    ("tgkill", "abort() raising SIGABRT on a failed assertion"),
];

/// Calls denied with EPERM under the deny-list policy: kernel attack
/// surface, privilege changes, and ways out of the other layers.
pub const DENY_LIST: &[&str] = &[
    "ptrace",
    // Maps an ELF library executable inside the kernel, around mmap's rule.
    "uselib",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
    "personality",
    "fanotify_init",
    // Kernel attack surface the worker and ordinary programs do not need.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "memfd_create",
    "modify_ldt",
    "lookup_dcookie",
    // Reaching into other processes through a pidfd or by comparison.
    "pidfd_getfd",
    "process_madvise",
    "kcmp",
    // Widening the CPU set past `max_cpu_cores` (the plan set it).
    "sched_setaffinity",
    // Signals through a pidfd (a /proc/<pid> directory descriptor is one).
    "pidfd_send_signal",
    // Watching files and directories: Landlock governs neither inotify nor
    // fanotify marks, so a watch on a readable directory (/etc) would
    // report the names of files other processes create or open there.
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    // The host's mounts and namespaces, listed by id (not by path, so
    // Landlock cannot bound them), and mount attributes.
    "statmount",
    "listmount",
    "listns",
    "open_tree_attr",
];

/// Calls no profile can add back through `allowed_syscalls`: the deny-list
/// (kernel attack surface, ways into other processes), and what creating a
/// process takes. The allow-list drops them even when a plan names them.
pub fn never_allowed(name: &str) -> bool {
    DENY_LIST.contains(&name) || ["fork", "vfork", "clone3", "seccomp"].contains(&name)
}

/// Calls that change a file's mode, owner, times or extended attributes
/// (POSIX ACLs are attributes). Landlock governs none of them, so a
/// sandboxed process could otherwise change any file its uid owns, by path
/// or through a descriptor opened for reading (make a private key
/// world-readable, a copy of a program setuid, forge a time), wherever it
/// lies. Refused under both policies for every plan, also when a profile
/// lists them in `allowed_syscalls`: seccomp sees no path, so it cannot
/// allow them on a write path only. Tools that set modes on what they
/// write (`cp -p`, `tar`, `install`) get EPERM for that step.
pub const METADATA_WRITES: &[&str] = &[
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "setxattrat",
    "removexattrat",
    // Times are metadata too (a forged mtime hides a change).
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    // The inode flags and project id (FS_IOC_FSSETXATTR as a syscall).
    "file_setattr",
];

/// System V IPC: objects that live in the IPC namespace, not in the
/// process (a segment outlives it, and its pages are outside RLIMIT_AS).
/// Every plan gets an IPC namespace of its own (so nothing of the host's
/// is reachable, and what is made dies with the namespace); the worker,
/// which needs none of it, is refused the calls as well.
pub const SYSV_IPC: &[&str] = &[
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
];

/// `fcntl` commands refused under both policies: `F_SETOWN` and
/// `F_SETOWN_EX` would make the kernel signal another process (the
/// supervisor reading the worker's pipe) with the signal `F_SETSIG` picks.
pub const DENIED_FCNTL: &[(&str, u64)] = &[
    ("F_SETOWN", 8),
    ("F_SETSIG", 10),
    ("F_SETOWN_EX", 15),
    // Watches by another name: dnotify reports changes in a directory, a
    // lease the opening of a file (and stalls other openers).
    ("F_SETLEASE", 1024),
    ("F_NOTIFY", 1026),
];

/// Calls whose target is a process named by a pid argument: allowed only on
/// the caller itself (the pid it has, or 0 where 0 means "myself"), under
/// either policy, so that a sandboxed process cannot signal, re-limit,
/// re-prioritize or inspect the supervisor or any other process. For the
/// `which, who` calls, `which` must also name a single process.
pub const PID_CALLS: &[(&str, PidArg)] = &[
    ("kill", PidArg::OwnOnly(0)),
    ("tkill", PidArg::Pid(0)),
    ("tgkill", PidArg::Pid(0)),
    ("rt_sigqueueinfo", PidArg::Pid(0)),
    ("rt_tgsigqueueinfo", PidArg::Pid(0)),
    ("pidfd_open", PidArg::Pid(0)),
    ("prlimit64", PidArg::Pid(0)),
    ("sched_getaffinity", PidArg::Pid(0)),
    ("sched_setscheduler", PidArg::Pid(0)),
    ("sched_setparam", PidArg::Pid(0)),
    ("sched_setattr", PidArg::Pid(0)),
    ("get_robust_list", PidArg::Pid(0)),
    ("migrate_pages", PidArg::Pid(0)),
    ("move_pages", PidArg::Pid(0)),
    // setpriority(PRIO_PROCESS = 0, who, prio)
    ("setpriority", PidArg::WhichWho(0)),
    // ioprio_set(IOPRIO_WHO_PROCESS = 1, who, ioprio)
    ("ioprio_set", PidArg::WhichWho(1)),
];

/// Where a call names its target process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidArg {
    /// Argument `n` is the pid, and only the caller's own pid passes (for
    /// `kill`, 0 means the whole process group and -1 every process).
    OwnOnly(u8),
    /// Argument `n` is the pid (0 means the caller).
    Pid(u8),
    /// Argument 0 is a kind of target that must equal this value (a single
    /// process), argument 1 the pid.
    WhichWho(u64),
}

/// `ioctl` requests refused under both policies: pushing input into a
/// terminal (TIOCSTI) or the Linux console (TIOCLINUX) would let a program
/// type commands into the user's shell; making another process a socket's
/// owner would have the kernel signal it.
pub const DENIED_IOCTLS: &[(&str, u64)] = &[
    ("TIOCSTI", libc::TIOCSTI),
    ("TIOCLINUX", libc::TIOCLINUX),
    // Like fcntl's F_SETOWN, on sockets: the kernel would signal the owner.
    ("FIOSETOWN", 0x8901),
    ("SIOCSPGRP", 0x8902),
    // Inode flags and project ids (`chattr`), metadata like modes.
    ("FS_IOC_SETFLAGS", 0x4008_6602),
    ("FS_IOC32_SETFLAGS", 0x4004_6602),
    ("FS_IOC_FSSETXATTR", 0x401c_5820),
    // Also by descriptor, also not Landlock's: verity makes a file
    // unwritable for good, a policy or version changes how it is kept.
    ("FS_IOC_ENABLE_VERITY", 0x4080_6685),
    ("FS_IOC_SETVERSION", 0x4008_7602),
    ("FS_IOC_SET_ENCRYPTION_POLICY", 0x800c_6613),
];

/// `prctl` options the allow-list policy permits (thread names).
pub const ALLOWED_PRCTL: &[(&str, u64)] = &[("PR_SET_NAME", 15), ("PR_GET_NAME", 16)];

/// `prctl` options the deny-list policy refuses: undoing
/// `disable_debugging`, opening the process to a tracer, changing
/// capabilities and memory layout fields, or clearing the parent-death
/// signal (the process would outlive the caller that bounds its time).
pub const DENIED_PRCTL: &[(&str, u64)] = &[
    ("PR_SET_PDEATHSIG", 1),
    ("PR_SET_DUMPABLE", 4),
    ("PR_SET_KEEPCAPS", 8),
    ("PR_SET_SECUREBITS", 28),
    ("PR_SET_MM", 35),
    ("PR_CAP_AMBIENT", 47),
    ("PR_SET_PTRACER", 0x5961_6d61),
];

/// `clone` flags that make new namespaces: refused under both policies
/// (`unshare` and `setns` are, too). `CLONE_NEWTIME` is not among them: in
/// `clone`'s flags its bit is part of the exit signal.
pub const CLONE_NEW_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
];

/// The bit that marks an x32 system call number on x86-64. A filter written
/// for x86-64 numbers would let `nr | X32_SYSCALL_BIT` through on kernels
/// with x32 enabled: every such number kills the process.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
