//! Probes: actions tried inside an applied sandbox, to prove each denial
//! (and, run without the sandbox, that the probe itself works).
//!
//! Every action reports the kernel's answer; none of them panics.
//!
//! Test equipment, in a crate of its own: the worker carries it only with
//! its `probe` feature (the escape tests and the sandbox cost bench), and
//! nothing of it is in a release build.

mod attempts;
mod run;

pub use run::run;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The bit that marks an x32 system call number on x86-64 (the kernel's
/// `__X32_SYSCALL_BIT`; the sandbox's filter kills every such call).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Something a probe tries inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeAction {
    /// Read a file.
    Read(PathBuf),
    /// List a directory.
    ListDir(PathBuf),
    /// Create (or truncate) a file and write this many bytes to it.
    Write(PathBuf, u64),
    /// Connect over TCP.
    ConnectTcp(String),
    /// Open a UDP socket and send one datagram.
    SendUdp(String),
    /// Execute a program (then exit with its status).
    Exec(PathBuf),
    /// Fork a child process.
    Fork,
    /// Allocate and touch this many bytes.
    Allocate(u64),
    /// Burn this many seconds of CPU time (the process's own clock, so a
    /// busy host or a low priority only stretches the wall time), giving
    /// up after [`SPIN_WALL_CAP`].
    Spin(u64),
    /// ptrace-attach to a process.
    Ptrace(u32),
    /// Read another process's memory with process_vm_readv.
    ReadMemory(u32),
    /// Mount a tmpfs on this directory (and unmount it at once).
    Mount(PathBuf),
    /// Enter new namespaces.
    Unshare,
    /// Join another process's network namespace.
    Setns(u32),
    /// `setns` on stdin (a pipe, not a namespace): the kernel answers
    /// EINVAL, a filter EPERM before it. (`Setns` opens `/proc/<pid>/ns`
    /// first, which Landlock refuses before `setns` is reached.)
    SetnsOnStdin,
    /// Write to an inherited file descriptor.
    UseFd(i32),
    /// Call `getpid` by its x32 number (x86-64 number | the x32 bit).
    X32Syscall,
    /// Create an io_uring instance.
    IoUringSetup,
    /// Create an anonymous memory file.
    MemfdCreate,
    /// Read the local descriptor table.
    ModifyLdt,
    /// Start this many threads at once (each waits until all are started
    /// or one fails).
    Threads(u32),
    /// Make memory executable by one route: `mmap` (a page with
    /// `PROT_EXEC`), `mprotect` or `pkey_mprotect` (a writable page made
    /// executable), `shmat` (a private segment with `SHM_EXEC`), or
    /// `personality` (turn on READ_IMPLIES_EXEC).
    ExecutableMemory(String),
    /// The parent-death signal in force (`PR_GET_PDEATHSIG`).
    ParentDeathSignal,
    /// How many capabilities the bounding set holds (`PR_CAPBSET_READ`).
    BoundingSet,
    /// Make a file world-readable by path (`fchmodat`, mode 0644).
    ChangeMode(PathBuf),
    /// `clone` a thread into a new user namespace (a combination the kernel
    /// itself refuses with EINVAL, so nothing is ever created: the answer
    /// tells whether the call reached the kernel).
    CloneNewNamespace,
    /// Push one byte into the terminal (or pipe) on stdin with TIOCSTI.
    PushTerminalInput,
    /// Ask the terminal (or pipe) on stdin for its settings (TCGETS).
    TerminalQuery,
    /// Read another process's resource limits (`prlimit64`; 0: its own).
    LimitsOf(u32),
    /// Lower another process's priority (`setpriority`, nice 19; 0: its
    /// own).
    Deprioritize(u32),
    /// Open a pidfd on another process.
    PidfdOpen(u32),
    /// Signal 0 to a process (`tgkill(pid, pid, 0)`: a permission check);
    /// 0 names the probe itself.
    SignalZero(u32),
    /// Make a process the owner of the probe's stdout (`fcntl F_SETOWN`):
    /// with `O_ASYNC` the kernel would signal it on the probe's behalf.
    SignalOwner(u32),
    /// Signal 0 to a process through a pidfd made from its `/proc`
    /// directory (`pidfd_send_signal`).
    PidfdSignal(u32),
    /// Widen the CPU affinity to every CPU.
    WidenAffinity,
    /// Connect to a UNIX socket by path.
    ConnectUnix(PathBuf),
    /// Create a fifo (a special file) at a path.
    MakeFifo(PathBuf),
    /// Make the process dumpable (traceable) again.
    SetDumpable,
    /// Create a file at a path and give it to another owner (uid 4242):
    /// only CAP_CHOWN allows it.
    GiveAway(PathBuf),
    /// Change a file's metadata by one route: `chmod` (by path), `fchmod`
    /// (through a descriptor opened for reading), `chown` (to its own
    /// owner: no capability needed), `utimensat` (by path), `setxattr` (a
    /// `user.` attribute), `chattr` (`FS_IOC_SETFLAGS` with the flags it
    /// has), or make a set-user-ID file `<path>.suid` by its create mode
    /// (`create_suid`: `open` with `O_CREAT`; `mknod_suid`: `mknod` of a
    /// regular file). With `create`, the file is made first (so that it is the
    /// probe's own and only a filter can refuse).
    Metadata {
        /// The file.
        path: PathBuf,
        /// The route.
        how: String,
        /// Make the file first.
        create: bool,
    },
    /// System V shared memory under `key`: with `create`, make a segment
    /// of one page holding a marker and leave it behind; without, attach
    /// an existing one read-only and read what it holds.
    SysvShm {
        /// The IPC key.
        key: i32,
        /// Make it rather than read it.
        create: bool,
    },
    /// Queue this many real-time signals to the probe's own thread
    /// (blocked, so they stay pending), as `tgkill` to itself does.
    QueueSignals(u32),
    /// Watch a path with inotify.
    Inotify(PathBuf),
    /// Clear the parent-death signal (`PR_SET_PDEATHSIG`, 0).
    ClearParentDeathSignal,
    /// The process's user and group ids (`uid gid`).
    Identity,
    /// Sleep this many milliseconds, then answer.
    Sleep(u64),
}

/// Longest wall time a [`ProbeAction::Spin`] waits for its CPU time.
pub const SPIN_WALL_CAP: Duration = Duration::from_secs(120);
