//! Running any program under a plan: `symbi-slm sandbox exec`.
//!
//! The child applies the plan with [`crate::apply`], the very function the
//! worker calls at start-up, then `execve`s the program. What `execve` of
//! the program itself needs, and the plan must therefore allow:
//! - `plan.allow_exec` (seccomp keeps `execve`/`execveat`; `fork`, `vfork`
//!   and `clone` without `CLONE_THREAD` stay denied when
//!   `no_child_processes`, so a shell can run builtins but not commands;
//!   otherwise they are allowed, counted by `max_threads` in the PID
//!   namespace that `apply` requires for them);
//! - Landlock execute + read rights on the program and on its dynamic
//!   loader and shared libraries (`plan.exec_paths`), and read rights on
//!   `/etc/ld.so.cache`;
//! - an address-space limit that leaves room for the program.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::apply::{apply, thread_count};
use crate::plan::SandboxPlan;

/// Exit status of the child when the sandbox could not be applied.
pub const EXIT_SANDBOX_FAILED: i32 = 125;
/// Exit status of the child when `execve` failed.
pub const EXIT_EXEC_FAILED: i32 = 127;
/// Exit status `symbi-slm sandbox exec` gives a program killed at its time
/// limit (as `timeout(1)` does).
pub const EXIT_TIMED_OUT: i32 = 124;

/// How a confined program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Its exit status (killed by SIGKILL when `timed_out`).
    pub status: ExitStatus,
    /// It outlived the wall-clock limit and its process group was killed.
    pub timed_out: bool,
    /// The caller was asked to stop (SIGINT, SIGTERM, SIGHUP or SIGQUIT, held while
    /// the program ran): the program was killed, and this is the signal.
    pub interrupted: Option<i32>,
}

/// How often the caller looks whether the program has ended while a time
/// limit runs.
const POLL: Duration = Duration::from_millis(5);

/// Forks; the child starts a session of its own, applies `plan`, reports
/// the layers that are not in force on stderr, and `execve`s `program`
/// with `args` (`args[0]` is the program's name) and `env`. When
/// `time_limit` passes before the program ends, its whole process group is
/// killed. Returns how it ended.
///
/// The calling process must be single-threaded (`fork` of a threaded
/// process may leave locks held in the child).
pub fn run_confined(
    plan: &SandboxPlan,
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    time_limit: Option<Duration>,
) -> io::Result<Ended> {
    spawn_confined(plan, program, args, env)?.wait(time_limit)
}

/// A confined program started by [`spawn_confined`].
#[derive(Debug)]
#[must_use = "a confined child must be waited for"]
pub struct Confined {
    pid: libc::pid_t,
}

/// [`run_confined`] without the wait: the caller may start threads (an
/// egress proxy) once this returns, then [`Confined::wait`].
pub fn spawn_confined(
    plan: &SandboxPlan,
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> io::Result<Confined> {
    let threads = thread_count();
    if threads > 1 {
        return Err(io::Error::other(format!(
            "sandbox exec must start from a single-threaded process, this one runs {threads}"
        )));
    }
    let cstr = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an argument"))
    };
    let path = cstr(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<io::Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    if plan.pid_namespace {
        // The program's PID namespace has an init of ours below the child;
        // if the child is killed first, the init comes back to this
        // process, which then waits until the namespace is gone (`wait`).
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process is single-threaded (checked above), so the child
    // is a full copy with no lock held by another thread; it may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // A session of its own: the program loses the caller's controlling
        // terminal (no /dev/tty, no job-control signals to the caller's
        // group), so TIOCSTI on an inherited terminal descriptor is refused
        // by the kernel as well as by the filter. It also dies with the
        // caller, which no longer shares its process group.
        // SAFETY: setsid and prctl with integer arguments; the forked child
        // is not a process group leader, so setsid succeeds.
        let detached = unsafe {
            libc::setsid() >= 0 && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == 0
        };
        // The program starts with default signal handling and nothing
        // blocked, whatever the caller had (Rust ignores SIGPIPE; an
        // ignored SIGCHLD would make the PID namespace's init lose the
        // program's status).
        // SAFETY: resets dispositions and the mask of this process only.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        // SAFETY: getppid has no preconditions.
        if !detached || unsafe { libc::getppid() } != parent {
            eprintln!(
                "symbi-slm sandbox: cannot start a session tied to the caller: {}",
                io::Error::last_os_error()
            );
            // SAFETY: as below.
            unsafe { libc::_exit(EXIT_SANDBOX_FAILED) };
        }
        let code = match apply(plan) {
            Ok(applied) => {
                for gap in applied.gaps() {
                    if let Err(why) = &gap.enforced {
                        eprintln!("symbi-slm sandbox: NOT ENFORCED: {}: {why}", gap.kind);
                    }
                }
                warn_unreachable(plan);
                // SAFETY: path, argv and envp are NUL-terminated strings
                // kept alive by this frame; both arrays end with a null.
                unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
                eprintln!(
                    "symbi-slm sandbox: execve {}: {}",
                    program.display(),
                    io::Error::last_os_error()
                );
                EXIT_EXEC_FAILED
            }
            Err(e) => {
                eprintln!("symbi-slm sandbox: cannot apply the sandbox: {e}");
                EXIT_SANDBOX_FAILED
            }
        };
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or flushing its copied stdio buffers twice.
        unsafe { libc::_exit(code) };
    }
    // Until the program has ended, a request to stop this process kills
    // the program first (`wait`), so that what it wrote can still be
    // handed back and its scratch removed.
    // SAFETY: a sigset built on the stack; blocks three signals for the
    // calling thread (and the threads it starts later).
    unsafe {
        let set = stop_signals();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    Ok(Confined { pid })
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls only touch `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// A stop signal pending for this process, taken.
fn take_stop_signal() -> Option<i32> {
    let set = stop_signals();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; no siginfo wanted.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
    (sig > 0).then_some(sig)
}

impl Confined {
    /// The child's process id (the leader of its process group).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the program; kills its process group at `time_limit`.
    pub fn wait(self, time_limit: Option<Duration>) -> io::Result<Ended> {
        wait_for(self.pid, time_limit)
    }
}

/// Says on stderr which of the plan's paths the program's identity (now in
/// force: Landlock does not answer `access`, the file modes do) cannot
/// use: started by root, the program is an unprivileged id, and a path
/// only root may open fails later with a bare "Permission denied".
fn warn_unreachable(plan: &SandboxPlan) {
    let groups = [
        (&plan.read_paths, libc::R_OK, "read"),
        (&plan.write_paths, libc::W_OK, "write to"),
        (&plan.exec_paths, libc::X_OK, "execute (or search)"),
    ];
    for (paths, mode, what) in groups {
        for path in paths.iter() {
            let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: a valid C string and integer flags; reads nothing else.
            if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) } != 0 {
                let e = io::Error::last_os_error();
                // SAFETY: geteuid/getegid have no preconditions.
                let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
                eprintln!(
                    "symbi-slm sandbox: warning: the program runs as uid {uid}, gid {gid} and cannot {what} {}: {e} (make it open to that group or to others)",
                    path.display()
                );
            }
        }
    }
}

/// Reaps whatever else came back to this process (a PID namespace's init
/// whose waiter was killed): the init's own end waits until every process
/// of its namespace is gone, so once this returns, none runs. Gives up
/// after 10 s (a process the kernel cannot kill).
fn reap_the_rest() {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let mut st = 0;
        // SAFETY: reaps any child of ours without blocking.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
        if Instant::now() >= give_up {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// How deep [`hand_back`] descends below a write path.
const HAND_BACK_DEPTH: u32 = 64;

/// After a program that ran as `from_uid` has ended: gives every file,
/// directory and link below `path` (and `path` itself) that `from_uid`
/// owns to `to` (uid, gid), so that what a program started by root wrote
/// belongs to the caller again. Never follows a link, never leaves the
/// file system of `path`, descends at most [`HAND_BACK_DEPTH`] levels, and
/// works on descriptors (`O_PATH`, `AT_EMPTY_PATH`), so a name swapped
/// while it walks is never resolved again. The kernel clears set-user-ID
/// (and group-executable set-group-ID) bits on a change of owner. An entry
/// that fails is passed over and the walk goes on; the first failure is
/// returned at the end. Returns how many entries changed owner.
pub fn hand_back(path: &Path, from_uid: u32, to: (u32, u32)) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))?;
    // SAFETY: a valid C string; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let st = fstat(fd.as_raw_fd())?;
    let mut count = 0;
    let mut failed = None;
    if let Err(e) = give(&fd, &st, from_uid, to, &mut count) {
        failed = Some(e);
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        walk(&fd, st.st_dev, from_uid, to, 0, &mut count, &mut failed);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn fstat(fd: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a bad descriptor is an error return.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Changes the owner of the entry `fd` (an `O_PATH` descriptor) refers to
/// when `from_uid` owns it.
fn give(
    fd: &OwnedFd,
    st: &libc::stat,
    from_uid: u32,
    to: (u32, u32),
    count: &mut u64,
) -> io::Result<()> {
    if st.st_uid != from_uid {
        return Ok(());
    }
    // SAFETY: an open descriptor, an empty C string and integer ids; with
    // AT_EMPTY_PATH the call acts on the descriptor's own inode (a link
    // itself, when it is one).
    let rc = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            to.0,
            to.1,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    *count += 1;
    Ok(())
}

/// Keeps the first failure of a walk.
fn note(failed: &mut Option<io::Error>, e: io::Error) {
    failed.get_or_insert(e);
}

fn walk(
    dir: &OwnedFd,
    dev: u64,
    from_uid: u32,
    to: (u32, u32),
    depth: u32,
    count: &mut u64,
    failed: &mut Option<io::Error>,
) {
    if depth >= HAND_BACK_DEPTH {
        return;
    }
    // A readable descriptor of the same directory for listing it.
    // SAFETY: a valid directory descriptor (an O_PATH one serves as the
    // base of openat) and a C string.
    let list = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if list < 0 {
        return note(failed, io::Error::last_os_error());
    }
    // SAFETY: `list` is ours; fdopendir takes it over (closedir closes it).
    let dirp = unsafe { libc::fdopendir(list) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `list` is still ours to close.
        unsafe { libc::close(list) };
        return note(failed, e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `dirp` is a valid stream until closedir below; the entry
        // it returns is read before the next call.
        let ent = unsafe { libc::readdir(dirp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: closes the stream opened above, once.
    unsafe { libc::closedir(dirp) };
    for name in names {
        // SAFETY: a valid directory descriptor and C string; the result
        // is owned below.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            note(failed, io::Error::last_os_error());
            continue;
        }
        // SAFETY: just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = match fstat(fd.as_raw_fd()) {
            Ok(st) => st,
            Err(e) => {
                note(failed, e);
                continue;
            }
        };
        if st.st_dev != dev {
            continue;
        }
        if let Err(e) = give(&fd, &st, from_uid, to, count) {
            note(failed, e);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            walk(&fd, dev, from_uid, to, depth + 1, count, failed);
        }
    }
}

fn wait_for(pid: libc::pid_t, time_limit: Option<Duration>) -> io::Result<Ended> {
    let deadline = time_limit.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut interrupted = None;
    let mut status = 0;
    loop {
        let waiting = !timed_out && interrupted.is_none();
        let flags = if waiting { libc::WNOHANG } else { 0 };
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, flags) };
        if rc == pid {
            reap_the_rest();
            return Ok(Ended {
                status: ExitStatus::from_raw(status),
                timed_out,
                interrupted,
            });
        }
        if rc == 0 {
            // Still running.
            let stop = take_stop_signal();
            if stop.is_some() {
                interrupted = stop;
            }
            if stop.is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
                // The child leads its own session and process group: the
                // group holds the program and anything it started.
                // The child itself too, in case the deadline came before
                // it had made its group (then the group does not exist).
                // SAFETY: signals our own child and its process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
                timed_out = stop.is_none();
            } else {
                std::thread::sleep(POLL);
            }
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
