//! Probes: actions tried inside an applied sandbox, to prove each denial
//! (and, run without the sandbox, that the probe itself works).
//!
//! Every action reports the kernel's answer; none of them panics.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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
    /// Burn CPU for this many seconds.
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
    /// Write to an inherited file descriptor.
    UseFd(i32),
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
        ProbeAction::Fork => std::process::Command::new("/bin/true")
            .spawn()
            .and_then(|mut c| c.wait())
            .map(|s| format!("child ran: {s}"))
            .map_err(|e| e.to_string()),
        ProbeAction::Allocate(n) => {
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve_exact(*n as usize)
                .map_err(|e| e.to_string())?;
            v.resize(*n as usize, 1);
            Ok(format!("allocated and touched {} bytes", v.len()))
        }
        ProbeAction::Spin(secs) => {
            let until = Instant::now() + Duration::from_secs(*secs);
            let mut x = 0u64;
            while Instant::now() < until {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            Ok(format!("spun {secs} s ({x})"))
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
