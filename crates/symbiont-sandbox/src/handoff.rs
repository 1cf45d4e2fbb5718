//! The egress proxy's listener, made inside a confined process's own
//! network namespace and handed to the caller, which serves it from
//! outside: the namespace's single way out.
//!
//! A socket belongs to the namespace it was created in, whoever holds its
//! descriptor later. So the confined process (still privileged in its new
//! namespace) brings its loopback up, listens on `127.0.0.1:port` there,
//! and sends the listener over a `socketpair` with `SCM_RIGHTS`; the caller
//! accepts on it in its own namespace and connects onwards after asking the
//! egress policy. No helper process, no bridge inside the sandbox.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::apply::SandboxError;

/// A connected pair of UNIX sockets: the caller keeps the first, the
/// confined child gets the second as `SandboxPlan::proxy_handoff_fd`
/// (close-on-exec: `fork` keeps it, the program never sees it).
pub fn proxy_handoff() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The caller's side: waits up to `timeout` for the listener. An error when
/// the child ended (or failed to apply its plan) without sending one.
pub fn receive_listener(from: &OwnedFd, timeout: Duration) -> io::Result<TcpListener> {
    let mut pfd = libc::pollfd {
        fd: from.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll on one pollfd we own.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the confined process sent no proxy listener in time",
        ));
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is a valid empty header; its pointers are set
    // below to buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg writes into the buffers msg points to.
    let n = unsafe { libc::recvmsg(from.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the confined process ended before it sent its proxy listener",
        ));
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR reads within it.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: cmsg is null or points into `control`.
    let fd = unsafe {
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("no descriptor in the proxy hand-off"));
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>())
    };
    // SAFETY: the kernel just installed this descriptor for us.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "the proxy hand-off carried more than one descriptor",
        ));
    }
    let listener = TcpListener::from(owned);
    // It must be what was promised: a listening TCP socket on loopback.
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(io::Error::other(format!(
            "the proxy hand-off is not a loopback listener: {addr}"
        )));
    }
    Ok(listener)
}

/// The child's side, right after its network namespace is made: loopback
/// up, a listener on `127.0.0.1:port`, sent over `handoff`, then both
/// closed here.
pub(crate) fn hand_proxy_listener_over(
    port: u16,
    handoff: Option<i32>,
) -> Result<(), SandboxError> {
    let call = |call: &'static str| SandboxError::Call {
        call,
        source: io::Error::last_os_error(),
    };
    let Some(handoff) = handoff else {
        return Err(SandboxError::Call {
            call: "proxy hand-off",
            source: io::Error::other("a proxied network needs a hand-off socket"),
        });
    };
    // SAFETY: `close_inherited` checked that this is an open socket the
    // process inherited for exactly this; nothing else owns it.
    let handoff = unsafe { OwnedFd::from_raw_fd(handoff) };
    loopback_up().map_err(|_| call("ioctl(SIOCSIFFLAGS, lo up)"))?;
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| SandboxError::Call {
        call: "bind(127.0.0.1, proxy port)",
        source: e,
    })?;
    let mut byte = [1u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE computes a size; no memory is touched.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: a zeroed msghdr is a valid empty header; its pointers are set
    // below to buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer holds `space` bytes (≤ 64), so the first
    // header and its data lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener.as_raw_fd());
    }
    // SAFETY: sendmsg reads the buffers msg points to.
    if unsafe { libc::sendmsg(handoff.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } != 1 {
        return Err(call("sendmsg(proxy listener)"));
    }
    Ok(())
}

/// Sets `lo` up in the current network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only to carry the ioctls below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned here.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: a zeroed ifreq is valid; the name is set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface in ifr.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's flags member was just written by the kernel.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads ifr.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
