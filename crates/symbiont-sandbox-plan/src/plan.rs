//! The concrete plan: every limit resolved to a number or a path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the worker may do, fully resolved. Built by the runtime from a
/// `SandboxProfile` plus the worker's own needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// `RLIMIT_AS`: address space, bytes (the memory-mapped model counts).
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_CPU`: CPU seconds over the process's life (all threads), a
    /// backstop behind the supervisor's per-request wall clock.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_FSIZE`: largest file the process may write, bytes.
    pub file_size_bytes: Option<u64>,
    /// CPUs the process may run on (affinity): `n` of those it has now,
    /// after skipping the first `cpu_offset` (so that workers given
    /// different offsets never share a CPU).
    pub cpu_count: Option<u32>,
    /// How many of the allowed CPUs to skip before taking `cpu_count`.
    #[serde(default)]
    pub cpu_offset: u32,
    /// Nice value.
    pub nice: Option<i32>,
    /// Confine the filesystem with Landlock to the paths below.
    pub confine_filesystem: bool,
    /// Files and directories readable (read-only).
    pub read_paths: Vec<PathBuf>,
    /// Inherited descriptors of regular files (the model, opened by the
    /// supervisor) that stay open and readable, through
    /// `/proc/self/fd/<n>`, whatever names the file on disk now: Landlock's
    /// rule is made from the descriptor, so the file is never looked up
    /// again by name and a path swapped after the supervisor's check opens
    /// nothing.
    #[serde(default)]
    pub read_fds: Vec<i32>,
    /// Files and directories readable and executable (for `sandbox exec`).
    pub exec_paths: Vec<PathBuf>,
    /// Directories readable and writable.
    pub write_paths: Vec<PathBuf>,
    /// A private scratch directory mounted as a size-limited tmpfs in a
    /// private mount namespace (also in `write_paths`).
    pub scratch: Option<(PathBuf, u64)>,
    /// `RLIMIT_NOFILE`: open file descriptors at once.
    pub max_open_files: Option<u64>,
    /// Network access.
    pub network: NetworkMode,
    /// With [`NetworkMode::Proxy`]: an inherited UNIX socket (a
    /// `socketpair` end) over which the process sends the proxy's listener,
    /// made inside its own network namespace, to the caller, which serves
    /// it from outside. Closed once sent.
    #[serde(default)]
    pub proxy_handoff_fd: Option<i32>,
    /// Which sockets may be created at all (beside what `network` allows).
    pub sockets: SocketPolicy,
    /// Syscall filtering.
    pub syscalls: SyscallPolicy,
    /// No child processes (no fork, no exec).
    pub no_child_processes: bool,
    /// Undumpable, untraceable.
    pub disable_debugging: bool,
    /// No new executable memory once the sandbox is in place: `mmap`,
    /// `mprotect`, `pkey_mprotect` with `PROT_EXEC` and `shmat` with
    /// `SHM_EXEC` fail (seccomp). The worker's code is all mapped before;
    /// a program under `sandbox exec` needs its loader to map libraries, so
    /// its plan leaves this off.
    #[serde(default)]
    pub no_exec_memory: bool,
    /// Enter a user namespace of its own even when no other namespace is
    /// needed: its threads are then counted apart (`max_threads`), and
    /// capabilities held in it are worthless outside.
    #[serde(default)]
    pub user_namespace: bool,
    /// Started as root: become this user and group (no supplementary
    /// groups) before the namespaces, so that the process is this
    /// unprivileged id outside its user namespace and root widens nothing
    /// (files are opened with its rights; the model comes as a descriptor).
    /// With [`SandboxPlan::per_process_uid`], this is the group only.
    #[serde(default)]
    pub unprivileged_id: Option<u32>,
    /// Started as root: the user id to become is
    /// [`per_process_uid`]`(pid)`, an id of this process alone that no host
    /// account has, so that no other process (the host's `nobody`, another
    /// worker) holds the same uid and may signal it, re-limit it or read
    /// its `/proc` files; `unprivileged_id` is then the group.
    #[serde(default)]
    pub per_process_uid: bool,
    /// A PID namespace whose init is a small process of ours (it never
    /// runs other code, so it keeps its parent-death signal): when the
    /// caller dies or kills it, the kernel kills every process of the
    /// namespace, whatever they did with their own parent-death signal (a
    /// thread that calls `execve` drops it, and `prctl` is not the only
    /// route). [`crate::apply`] forks twice for it: a waiter outside, the
    /// init, and the process that goes on (the only one `apply` returns
    /// in); the waiter ends as the program ends (its status, its signal).
    #[serde(default)]
    pub pid_namespace: bool,
    /// A System V IPC namespace of its own: no segment, queue or semaphore
    /// of the host is reachable, and whatever the process makes dies with
    /// the namespace instead of outliving it on the host.
    #[serde(default)]
    pub ipc_namespace: bool,
    /// seccomp refuses System V IPC calls (`shmget`, `msgget`, `semget`
    /// and the rest): the worker needs none.
    #[serde(default)]
    pub no_sysv_ipc: bool,
    /// `RLIMIT_SIGPENDING`: signals queued to the process at once (kernel
    /// memory, and a per-user count of whoever made its user namespace).
    #[serde(default)]
    pub max_pending_signals: Option<u64>,
    /// `RLIMIT_NPROC` inside the process's own user namespace: threads (and
    /// processes) at once. Not enforced for root in the initial namespace,
    /// hence `user_namespace`.
    #[serde(default)]
    pub max_threads: Option<u64>,
    /// Drop every capability (all sets) before Landlock and seccomp.
    pub drop_capabilities: bool,
    /// The process will `execve` one program after applying (sandbox exec):
    /// `execve` stays allowed by seccomp.
    pub allow_exec: bool,
    /// Refuse to run when any layer cannot be enforced fully.
    pub strict: bool,
    /// Paths of the read, exec and write lists that must still be the file
    /// they were when the plan was made (device, inode): entries that stand
    /// for a directory holding a denied path. One swapped since (renamed,
    /// replaced by a link to the denied path) fails the plan.
    #[serde(default)]
    pub pinned: Vec<(PathBuf, u64, u64)>,
}

/// Network access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// No network: a fresh network namespace (only a down loopback),
    /// Landlock denying TCP bind/connect, and seccomp denying inet sockets.
    None,
    /// No restriction.
    Full,
    /// A fresh network namespace whose loopback is up and holds one
    /// listener, `127.0.0.1:port`, handed to the caller (the egress proxy
    /// serves it from outside the namespace: the one way out); Landlock
    /// allows TCP connect to that port only and no bind; seccomp allows
    /// only inet sockets (no UNIX socket by path, no packet, netlink or
    /// vsock sockets).
    Proxy {
        /// The listener's port on the namespace's loopback.
        port: u16,
    },
}

/// Which sockets a sandboxed process may create. A UNIX socket with a path
/// reaches whatever listens there (a session bus, a container daemon):
/// Landlock does not govern `connect` to it on kernels before ABI 9, so
/// seccomp refuses the `socket` call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SocketPolicy {
    /// No `socket`, no `socketpair` (the worker needs none).
    None,
    /// `socketpair` only (a connected pair inside the process: no path, no
    /// address); `socket` of any family is refused.
    PairsOnly,
    /// Whatever `network` allows (with `NetworkMode::None`, inet, packet
    /// and netlink sockets stay refused).
    Any,
    /// Socket pairs, and `socket` of `AF_INET`/`AF_INET6` only (with
    /// [`NetworkMode::Proxy`]: TCP to the proxy on loopback).
    InetOnly,
}

/// Syscall filtering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyscallPolicy {
    /// Only the worker's reviewed list plus `extra`; anything else fails
    /// with `EPERM`.
    AllowList {
        /// Syscall names added by the profile.
        extra: Vec<String>,
    },
    /// Everything but a list of dangerous calls, which fail with `EPERM`.
    DenyList,
    /// No filter at all (only for unconfined comparisons).
    Off,
}

impl SandboxPlan {
    /// A plan that confines nothing (for comparisons and benchmarks).
    pub fn unconfined() -> Self {
        Self {
            address_space_bytes: None,
            cpu_seconds: None,
            file_size_bytes: None,
            cpu_count: None,
            cpu_offset: 0,
            nice: None,
            confine_filesystem: false,
            read_paths: Vec::new(),
            read_fds: Vec::new(),
            exec_paths: Vec::new(),
            write_paths: Vec::new(),
            scratch: None,
            max_open_files: None,
            network: NetworkMode::Full,
            proxy_handoff_fd: None,
            sockets: SocketPolicy::Any,
            syscalls: SyscallPolicy::Off,
            no_child_processes: false,
            disable_debugging: false,
            no_exec_memory: false,
            user_namespace: false,
            unprivileged_id: None,
            per_process_uid: false,
            pid_namespace: false,
            ipc_namespace: false,
            no_sysv_ipc: false,
            max_pending_signals: None,
            max_threads: None,
            drop_capabilities: false,
            allow_exec: false,
            strict: false,
            pinned: Vec::new(),
        }
    }
}

/// The first of the user ids [`per_process_uid`] hands out: 0x7A00_0000
/// (2,046,820,352), above the ranges distributions give accounts and
/// containers' subordinate ids (systemd's container range ends at
/// 0x6FFF_FFFF), below the upper half that some tools read as negative, and
/// clear of systemd's "foreign" range (0x7FFE_0000 and up) for any pid.
pub const PER_PROCESS_UID_BASE: u32 = 0x7A00_0000;

/// The user id a process started by root becomes under a plan with
/// [`SandboxPlan::per_process_uid`]: one per pid, so no two live processes
/// share it (pids are at most 2^22 on Linux).
pub fn per_process_uid(pid: u32) -> u32 {
    PER_PROCESS_UID_BASE + (pid & 0x3F_FFFF)
}
