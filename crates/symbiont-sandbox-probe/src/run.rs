//! Running one probe action and reporting the kernel's answer.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::attempts::{executable_memory, metadata, queue_signals, sysv_shm};
use super::{ProbeAction, SPIN_WALL_CAP, X32_SYSCALL_BIT};

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

pub(crate) fn errno() -> String {
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
