//! What a supervisor arranges for a child between `fork` and `execve`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `file` the child's descriptor `target` (without close-on-exec),
/// whatever number it has here. The parent's copy stays open as long as
/// `cmd` lives and is closed with it; other children never see it (it stays
/// close-on-exec here).
///
/// `target` should be 3 or above and not a descriptor the child needs
/// between `fork` and `execve` (std's exec-error pipe sits at the lowest
/// free number, which is rarely 3 in a process that has opened anything).
pub fn inherit_fd(cmd: &mut Command, file: OwnedFd, target: RawFd) {
    let closure = move || -> io::Result<()> {
        let fd = file.as_raw_fd();
        if fd == target {
            // SAFETY: fcntl on a descriptor this closure owns; clearing
            // FD_CLOEXEC is async-signal-safe and touches no memory.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        // SAFETY: dup2 is async-signal-safe; `fd` is open (owned here) and
        // the new descriptor `target` has close-on-exec cleared.
        } else if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (dup2, fcntl); it allocates nothing.
    unsafe {
        cmd.pre_exec(closure);
    }
}
