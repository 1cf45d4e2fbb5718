//! Namespaces, ids and capabilities: the steps of [`crate::apply`] that
//! make the process someone else (an unprivileged id, a user, network,
//! mount, IPC and PID namespace of its own, no capability). It never
//! decides which of them a plan gets.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::apply::{os_err, SandboxError};

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
pub(crate) fn enter_namespaces(mut flags: libc::c_int) -> Result<bool, SandboxError> {
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
pub(crate) fn enter_pid_namespace() -> Result<(), SandboxError> {
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
pub(crate) fn give_root_up(
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
pub(crate) fn drop_capabilities() -> Result<(), SandboxError> {
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
pub(crate) fn mount_scratch(
    path: &Path,
    bytes: u64,
    owner: Option<(u32, u32)>,
) -> Result<(), SandboxError> {
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
