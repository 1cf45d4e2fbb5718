//! Probes: actions tried inside an applied sandbox, to prove each denial
//! (and, run without the sandbox, that the probe itself works).
//!
//! Every action reports the kernel's answer; none of them panics.
//!
//! Test equipment, in a crate of its own: the worker carries it only with
//! its `probe` feature (the escape tests and the sandbox cost bench), and
//! nothing of it is in a release build.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// CPU time used by this process, all threads (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_time() -> Result<Duration, String> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, owned `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(errno());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Tries `action`; `Ok` with a detail if it succeeded, `Err` with the error.
pub fn run(action: &ProbeAction) -> Result<String, String> {
    match action {
        ProbeAction::Read(p) => std::fs::read(p)
            .map(|b| format!("read {} bytes", b.len()))
            .map_err(|e| e.to_string()),
        ProbeAction::ListDir(p) => std::fs::read_dir(p)
            .map(|d| format!("{} entries", d.count()))
            .map_err(|e| e.to_string()),
        ProbeAction::Write(p, n) => {
            let mut f = std::fs::File::create(p).map_err(|e| e.to_string())?;
            let chunk = vec![0x5au8; 1 << 20];
            let mut left = *n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..k]).map_err(|e| e.to_string())?;
                left -= k as u64;
            }
            Ok(format!("wrote {n} bytes"))
        }
        ProbeAction::ConnectTcp(addr) => {
            let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map(|_| "connected".to_string())
                .map_err(|e| e.to_string())
        }
        ProbeAction::SendUdp(addr) => {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            s.send_to(b"probe", addr.as_str())
                .map(|n| format!("sent {n} bytes"))
                .map_err(|e| e.to_string())
        }
        ProbeAction::Exec(p) => {
            use std::os::unix::process::CommandExt;
            // Only returns on failure.
            let e = std::process::Command::new(p).exec();
            Err(e.to_string())
        }
        ProbeAction::Fork => {
            // A raw fork (no exec): refused only if creating a process is.
            // SAFETY: the child only calls _exit; the probe process is
            // single-threaded at this point.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(errno());
            }
            if pid == 0 {
                // SAFETY: ends the child at once, running no Rust code.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waits for the child just forked; valid out pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Ok(format!("forked child {pid}, status {status}"))
        }
        ProbeAction::Allocate(n) => {
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve_exact(*n as usize)
                .map_err(|e| e.to_string())?;
            v.resize(*n as usize, 1);
            Ok(format!("allocated and touched {} bytes", v.len()))
        }
        ProbeAction::Spin(secs) => {
            let give_up = Instant::now() + SPIN_WALL_CAP;
            let want = Duration::from_secs(*secs);
            let mut x = 0u64;
            loop {
                let used = process_cpu_time()?;
                if used >= want {
                    return Ok(format!(
                        "spun {:.2} s of CPU time ({x})",
                        used.as_secs_f64()
                    ));
                }
                if Instant::now() >= give_up {
                    return Err(format!(
                        "gave up after {SPIN_WALL_CAP:?} of wall time with {:.2} s of CPU time",
                        used.as_secs_f64()
                    ));
                }
                for _ in 0..100_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
            }
        }
        ProbeAction::Ptrace(pid) => {
            // SAFETY: PTRACE_ATTACH with integer arguments; on success the
            // target is detached again below.
            let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, *pid as libc::pid_t, 0, 0) };
            if rc != 0 {
                return Err(errno());
            }
            // SAFETY: as above.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, *pid as libc::pid_t, 0, 0) };
            Ok("attached".into())
        }
        ProbeAction::ReadMemory(pid) => {
            let mut buf = [0u8; 16];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // An address every x86-64 process has mapped: its vDSO is not
            // fixed, so read from the target's stack-free zero page guard is
            // not useful; a failure with EFAULT still proves access.
            let remote = libc::iovec {
                iov_base: 0x400000 as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: `local` points to `buf`, valid for its length; the
            // kernel checks `remote` against the target's mappings.
            let n =
                unsafe { libc::process_vm_readv(*pid as libc::pid_t, &local, 1, &remote, 1, 0) };
            let err = std::io::Error::last_os_error();
            if n >= 0 || err.raw_os_error() == Some(libc::EFAULT) {
                Ok("access to the process's memory granted".into())
            } else {
                Err(err.to_string())
            }
        }
        ProbeAction::Mount(dir) => {
            let target = std::ffi::CString::new(dir.to_string_lossy().as_bytes())
                .map_err(|e| e.to_string())?;
            let t = c"tmpfs";
            // SAFETY: valid C strings. A mount that succeeds is removed at
            // once below, so a probe never leaves a mount behind.
            let rc = unsafe {
                libc::mount(t.as_ptr(), target.as_ptr(), t.as_ptr(), 0, std::ptr::null())
            };
            if rc != 0 {
                return Err(errno());
            }
            // SAFETY: unmounts the mount made just above.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            Ok("mounted".into())
        }
        ProbeAction::Unshare => {
            // SAFETY: flags only.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
                return Err(errno());
            }
            Ok("unshared".into())
        }
        ProbeAction::Setns(pid) => {
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open namespace descriptor.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(errno());
            }
            Ok("joined".into())
        }
        ProbeAction::X32Syscall => {
            let nr = libc::SYS_getpid | i64::from(X32_SYSCALL_BIT);
            // SAFETY: getpid takes no arguments, whatever its number.
            let rc = unsafe { libc::syscall(nr) };
            if rc < 0 {
                return Err(errno());
            }
            Ok(format!("x32 getpid answered {rc}"))
        }
        ProbeAction::IoUringSetup => {
            let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                         // SAFETY: `params` is a zeroed io_uring_params of the kernel's
                                         // size (120 bytes); the kernel writes into it.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
            if fd < 0 {
                return Err(errno());
            }
            Ok(format!("io_uring fd {fd}"))
        }
        ProbeAction::MemfdCreate => {
            // SAFETY: a valid C string name and integer flags.
            let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), 0) };
            if fd < 0 {
                return Err(errno());
            }
            Ok(format!("memfd {fd}"))
        }
        ProbeAction::Threads(n) => {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
            let mut handles = Vec::new();
            let mut failed = None;
            for i in 0..*n {
                let wait = wait.clone();
                match std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        // Blocks until the sender goes.
                        let _ = wait.lock().map(|w| w.recv());
                    }) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        failed = Some(format!("thread {} of {n}: {e}", i + 1));
                        break;
                    }
                }
            }
            drop(release);
            for h in handles {
                let _ = h.join();
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(format!("{n} threads at once")),
            }
        }
        ProbeAction::ExecutableMemory(how) => executable_memory(how),
        ProbeAction::ChangeMode(path) => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a valid C string path and an integer mode.
            if unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), 0o644, 0) } != 0 {
                return Err(errno());
            }
            Ok("mode changed".into())
        }
        ProbeAction::BoundingSet => {
            let mut held = 0;
            for cap in 0..64 {
                // SAFETY: prctl with integer arguments only.
                match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } {
                    1 => held += 1,
                    0 => {}
                    _ if cap == 0 => return Err(errno()),
                    _ => break,
                }
            }
            Ok(held.to_string())
        }
        ProbeAction::ParentDeathSignal => {
            let mut sig: libc::c_int = 0;
            // SAFETY: PR_GET_PDEATHSIG writes one int into `sig`.
            if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) } != 0 {
                return Err(errno());
            }
            Ok(sig.to_string())
        }
        ProbeAction::ModifyLdt => {
            let mut buf = [0u8; 64];
            // SAFETY: func 0 reads at most `buf.len()` bytes into `buf`.
            let rc = unsafe { libc::syscall(libc::SYS_modify_ldt, 0, buf.as_mut_ptr(), buf.len()) };
            if rc < 0 {
                return Err(errno());
            }
            Ok(format!("read {rc} bytes of LDT"))
        }
        ProbeAction::CloneNewNamespace => {
            let flags =
                libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_VM | libc::CLONE_NEWUSER;
            // SAFETY: the kernel refuses CLONE_THREAD with CLONE_NEWUSER
            // (EINVAL) before creating anything, and a filter refuses it
            // earlier still; no thread can start on this stack.
            let rc = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0, 0, 0, 0) };
            if rc < 0 {
                return Err(errno());
            }
            Ok(format!("clone returned {rc}"))
        }
        ProbeAction::PushTerminalInput => {
            let byte = b'#';
            // SAFETY: TIOCSTI reads one byte from a valid pointer.
            let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, &byte as *const u8) };
            if rc < 0 {
                return Err(errno());
            }
            Ok("pushed a byte".into())
        }
        ProbeAction::TerminalQuery => {
            // SAFETY: termios is plain data; TCGETS writes one into it.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: a valid termios out pointer.
            if unsafe { libc::ioctl(0, libc::TCGETS, &mut t as *mut libc::termios) } != 0 {
                return Err(errno());
            }
            Ok("a terminal".into())
        }
        ProbeAction::LimitsOf(pid) => {
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: reads only (new limit null) into a valid rlimit.
            let rc = unsafe {
                libc::prlimit(
                    *pid as libc::pid_t,
                    libc::RLIMIT_NOFILE,
                    std::ptr::null(),
                    &mut old,
                )
            };
            if rc != 0 {
                return Err(errno());
            }
            Ok(format!("its open-file limit is {}", old.rlim_cur))
        }
        ProbeAction::Deprioritize(pid) => {
            // SAFETY: integer arguments only.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, *pid as libc::id_t, 19) } != 0 {
                return Err(errno());
            }
            Ok("set to nice 19".into())
        }
        ProbeAction::PidfdOpen(pid) => {
            // SAFETY: integer arguments only.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, *pid as libc::pid_t, 0) };
            if fd < 0 {
                return Err(errno());
            }
            Ok(format!("pidfd {fd}"))
        }
        ProbeAction::SignalZero(pid) => {
            let pid = if *pid == 0 {
                // SAFETY: getpid has no preconditions.
                unsafe { libc::getpid() }
            } else {
                *pid as libc::pid_t
            };
            // SAFETY: signal 0 only checks the permission to signal.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, 0) } != 0 {
                return Err(errno());
            }
            Ok("may signal it".into())
        }
        ProbeAction::SignalOwner(pid) => {
            // SAFETY: integer arguments; only the owner field of the pipe
            // changes (no O_ASYNC, so no signal is ever sent).
            if unsafe { libc::fcntl(1, libc::F_SETOWN, *pid as libc::c_int) } != 0 {
                return Err(errno());
            }
            Ok("owner set".into())
        }
        ProbeAction::PidfdSignal(pid) => {
            let dir = std::fs::File::open(format!("/proc/{pid}")).map_err(|e| e.to_string())?;
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor, signal 0 (a permission check), no
            // siginfo.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    dir.as_raw_fd(),
                    0,
                    0usize,
                    0u32,
                )
            };
            if rc != 0 {
                return Err(errno());
            }
            Ok("may signal it".into())
        }
        ProbeAction::WidenAffinity => {
            // SAFETY: cpu_set_t is plain data; CPU_SET touches only the set.
            let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            for cpu in 0..cpus.max(64).min(libc::CPU_SETSIZE as usize) {
                // SAFETY: cpu < CPU_SETSIZE.
                unsafe { libc::CPU_SET(cpu, &mut all) };
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: a valid set of `size` bytes.
            if unsafe { libc::sched_setaffinity(0, size, &all) } != 0 {
                return Err(errno());
            }
            Ok("affinity widened".into())
        }
        ProbeAction::ConnectUnix(path) => std::os::unix::net::UnixStream::connect(path)
            .map(|_| "connected".to_string())
            .map_err(|e| e.to_string()),
        ProbeAction::MakeFifo(path) => {
            let c = std::ffi::CString::new(path.to_string_lossy().as_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a valid C string path and a mode.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(errno());
            }
            Ok("fifo made".into())
        }
        ProbeAction::SetDumpable => {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
                return Err(errno());
            }
            Ok("dumpable again".into())
        }
        ProbeAction::GiveAway(path) => {
            std::fs::write(path, b"x").map_err(|e| e.to_string())?;
            std::os::unix::fs::chown(path, Some(4242), None).map_err(|e| e.to_string())?;
            Ok("given to uid 4242".into())
        }
        ProbeAction::Metadata { path, how, create } => metadata(path, how, *create),
        ProbeAction::SysvShm { key, create } => sysv_shm(*key, *create),
        ProbeAction::QueueSignals(n) => queue_signals(*n),
        ProbeAction::Inotify(path) => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: integer flags.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(errno());
            }
            // SAFETY: a valid descriptor and C string.
            let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_ALL_EVENTS) };
            let out = if wd < 0 {
                Err(format!("inotify_add_watch: {}", errno()))
            } else {
                Ok(format!("watching (wd {wd})"))
            };
            // SAFETY: closes the descriptor made above.
            unsafe { libc::close(fd) };
            out
        }
        ProbeAction::ClearParentDeathSignal => {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) } != 0 {
                return Err(errno());
            }
            Ok("parent-death signal cleared".into())
        }
        ProbeAction::Identity => {
            // SAFETY: getuid/getgid have no preconditions.
            let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
            Ok(format!("{u} {g}"))
        }
        ProbeAction::Sleep(ms) => {
            std::thread::sleep(Duration::from_millis(*ms));
            Ok("slept".into())
        }
        ProbeAction::SetnsOnStdin => {
            // SAFETY: integer arguments; fd 0 is not a namespace, so even
            // an unconfined call changes nothing.
            if unsafe { libc::setns(0, libc::CLONE_NEWNET) } != 0 {
                return Err(errno());
            }
            Ok("joined".into())
        }
        ProbeAction::UseFd(fd) => {
            let msg = b"probe";
            // SAFETY: writes from a valid buffer; the kernel checks the
            // descriptor.
            let n = unsafe { libc::write(*fd, msg.as_ptr().cast(), msg.len()) };
            if n < 0 {
                return Err(errno());
            }
            Ok(format!("wrote {n} bytes to fd {fd}"))
        }
    }
}

/// One route to executable memory (see [`ProbeAction::ExecutableMemory`]).
fn executable_memory(how: &str) -> Result<String, String> {
    let len = 4096;
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    let page = |prot| {
        // SAFETY: an anonymous private mapping of one page; nothing aliases
        // it, and the caller unmaps it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(format!("mmap: {}", errno()))
        } else {
            Ok(p)
        }
    };
    let unmap = |p| {
        // SAFETY: unmaps a page `page` mapped, used no more.
        unsafe { libc::munmap(p, len) }
    };
    match how {
        "mmap" => {
            let p = page(rx)?;
            unmap(p);
            Ok("mapped an executable page".into())
        }
        "mprotect" | "pkey_mprotect" => {
            let p = page(libc::PROT_READ | libc::PROT_WRITE)?;
            let rc = if how == "mprotect" {
                // SAFETY: changes the protection of our own page only.
                unsafe { libc::mprotect(p, len, rx) }
            } else {
                // SAFETY: as above; pkey -1 is "no key".
                unsafe {
                    libc::syscall(
                        libc::SYS_pkey_mprotect,
                        p,
                        len,
                        rx as libc::c_ulong,
                        -1 as libc::c_long,
                    ) as libc::c_int
                }
            };
            let out = if rc != 0 {
                Err(errno())
            } else {
                Ok(format!("{how} made a page executable"))
            };
            unmap(p);
            out
        }
        "shmat" => {
            // SAFETY: a private segment of one page (executable by its owner:
            // SHM_EXEC asks for that right), removed below.
            let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o700) };
            if id < 0 {
                return Err(format!("shmget: {}", errno()));
            }
            // SAFETY: attaches the segment made above at an address the
            // kernel picks.
            let at = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_EXEC) };
            let out = if at as isize == -1 {
                Err(errno())
            } else {
                // SAFETY: detaches what was attached above.
                unsafe { libc::shmdt(at) };
                Ok("attached an executable segment".into())
            };
            // SAFETY: removes the segment made above.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            out
        }
        "personality" => {
            // SAFETY: personality(0xffffffff) only reads the persona.
            let persona = unsafe { libc::personality(0xffff_ffff) };
            if persona < 0 {
                return Err(errno());
            }
            // SAFETY: sets one flag on this process's persona.
            if unsafe { libc::personality((persona | 0x0400000) as libc::c_ulong) } < 0 {
                return Err(errno());
            }
            // SAFETY: reads it back.
            let now = unsafe { libc::personality(0xffff_ffff) };
            if now & 0x0400000 == 0 {
                return Err("READ_IMPLIES_EXEC did not stick".into());
            }
            Ok("READ_IMPLIES_EXEC on".into())
        }
        other => Err(format!("unknown route {other}")),
    }
}

/// One route to a file's metadata (see [`ProbeAction::Metadata`]).
fn metadata(path: &std::path::Path, how: &str, create: bool) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    if create {
        std::fs::write(path, b"mine").map_err(|e| format!("create: {e}"))?;
    }
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let rc = match how {
        // SAFETY: a valid C string and a mode.
        "chmod" => unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), 0o4755, 0) },
        "fchmod" => {
            let f = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
            // SAFETY: an open descriptor and a mode.
            unsafe { libc::fchmod(f.as_raw_fd(), 0o4755) }
        }
        "chown" => {
            // SAFETY: geteuid/getegid have no preconditions.
            let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
            // SAFETY: a valid C string and integer ids.
            unsafe { libc::fchownat(libc::AT_FDCWD, c.as_ptr(), u, g, 0) }
        }
        "utimensat" => {
            let t = libc::timespec {
                tv_sec: 1_000_000_000,
                tv_nsec: 0,
            };
            let times = [t, t];
            // SAFETY: a valid C string and two timespecs.
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }
        }
        "setxattr" => {
            let v = b"probe";
            // SAFETY: valid C strings and a buffer of the given length.
            unsafe {
                libc::setxattr(
                    c.as_ptr(),
                    c"user.probe".as_ptr(),
                    v.as_ptr().cast(),
                    v.len(),
                    0,
                )
            }
        }
        // A new file beside `path`, made set-user-ID by its create mode.
        "create_suid" | "mknod_suid" => {
            let new = std::ffi::CString::new(format!("{}.suid", path.display()))
                .map_err(|e| e.to_string())?;
            let rc = if how == "create_suid" {
                // SAFETY: a valid C string, flags and a mode; the
                // descriptor is closed below.
                let fd = unsafe {
                    libc::open(
                        new.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o4755 as libc::c_uint,
                    )
                };
                if fd >= 0 {
                    // SAFETY: closes the descriptor just opened.
                    unsafe { libc::close(fd) };
                    0
                } else {
                    -1
                }
            } else {
                // SAFETY: a valid C string, a regular file's mode, no device.
                unsafe { libc::mknod(new.as_ptr(), libc::S_IFREG | 0o4755, 0) }
            };
            if rc != 0 {
                return Err(errno());
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(new.to_str().unwrap_or_default())
                .map(|m| m.permissions().mode())
                .map_err(|e| e.to_string())?;
            if mode & 0o4000 == 0 {
                return Err(format!("made without the set-user-ID bit: {mode:o}"));
            }
            0
        }
        // Opening without creating, with a set-id mode (which the kernel
        // ignores then): no refusal is due.
        "open_suid_mode" => {
            // SAFETY: a valid C string, read-only flags and a mode the
            // kernel ignores without O_CREAT; closed below.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0o4755) };
            if fd >= 0 {
                // SAFETY: closes the descriptor just opened.
                unsafe { libc::close(fd) };
                0
            } else {
                -1
            }
        }
        "chattr" => {
            let f = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
            let mut flags: libc::c_long = 0;
            // FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with the same flags.
            // SAFETY: the kernel writes one long into `flags`.
            if unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_6601, &mut flags) } != 0 {
                return Err(format!("FS_IOC_GETFLAGS: {}", errno()));
            }
            // SAFETY: the kernel reads one long from `flags`.
            unsafe { libc::ioctl(f.as_raw_fd(), 0x4008_6602, &flags) }
        }
        other => return Err(format!("unknown route {other}")),
    };
    if rc != 0 {
        return Err(errno());
    }
    Ok(format!("{how} done"))
}

/// See [`ProbeAction::SysvShm`].
fn sysv_shm(key: i32, create: bool) -> Result<String, String> {
    let len = 4096;
    let flags = if create {
        libc::IPC_CREAT | libc::IPC_EXCL | 0o600
    } else {
        0
    };
    // SAFETY: integer arguments only.
    let id = unsafe { libc::shmget(key, if create { len } else { 0 }, flags) };
    if id < 0 {
        return Err(format!("shmget: {}", errno()));
    }
    let ro = if create { 0 } else { libc::SHM_RDONLY };
    // SAFETY: attaches the segment found above where the kernel picks.
    let at = unsafe { libc::shmat(id, std::ptr::null(), ro) };
    if at as isize == -1 {
        return Err(format!("shmat: {}", errno()));
    }
    let out = if create {
        let marker = b"left behind";
        // SAFETY: the segment is at least one page long and attached
        // read-write; the marker is shorter.
        unsafe { std::ptr::copy_nonoverlapping(marker.as_ptr(), at.cast::<u8>(), marker.len()) };
        format!("segment {id} left behind")
    } else {
        let mut buf = [0u8; 32];
        // SAFETY: reads 32 bytes of an attached segment of at least one
        // page (segments are whole pages).
        unsafe { std::ptr::copy_nonoverlapping(at.cast::<u8>(), buf.as_mut_ptr(), buf.len()) };
        String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_string()
    };
    // SAFETY: detaches what was attached above.
    unsafe { libc::shmdt(at) };
    Ok(out)
}

/// See [`ProbeAction::QueueSignals`].
fn queue_signals(n: u32) -> Result<String, String> {
    let sig = libc::SIGRTMIN();
    // SAFETY: sigset_t is plain data; the calls only touch `set`.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, then blocks the one signal for this thread.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    for i in 0..n {
        // SAFETY: integer arguments; the signal is blocked, so it stays
        // pending (real-time signals queue one entry each).
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } != 0 {
            return Err(format!("signal {} of {n}: {}", i + 1, errno()));
        }
    }
    Ok(format!("{n} signals pending"))
}
