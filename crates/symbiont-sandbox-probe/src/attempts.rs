//! The probes that take more than one call: executable memory, file
//! metadata, System V shared memory, queued signals.

use super::run::errno;

/// One route to executable memory (see [`ProbeAction::ExecutableMemory`]).
pub(crate) fn executable_memory(how: &str) -> Result<String, String> {
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
pub(crate) fn metadata(path: &std::path::Path, how: &str, create: bool) -> Result<String, String> {
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
pub(crate) fn sysv_shm(key: i32, create: bool) -> Result<String, String> {
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
pub(crate) fn queue_signals(n: u32) -> Result<String, String> {
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
