//! The HTTP proxy: `CONNECT host:port` tunnels and plain `http://`
//! requests, each connection to one destination the policy allowed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::bucket::Bucket;
use crate::head::{forward_head, parse_head, Target};
use crate::policy::{Kind, Policy, Refusal};

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection to an allowed destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one proxy serves at once once they have passed the
/// credential check (the proxy runs in the unconfined host process: a
/// confined program must not exhaust its descriptors); more are answered
/// 503 and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections still sending their request head (not yet past the
/// credential check); more are closed at accept. Kept apart from
/// [`MAX_CONNECTIONS`], so that clients without the credential cannot hold
/// the slots of those with it.
pub const MAX_PENDING: usize = 64;

/// Told of every refusal (the runtime writes an audit event).
pub trait Observer: Send + Sync + fmt::Debug {
    /// `policy` refused `refusal`.
    fn refused(&self, policy: &Policy, refusal: &Refusal);
}

/// What one proxy has done, counted as it happens.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections made to an allowed destination.
    pub allowed: AtomicU64,
    /// Requests refused by the policy.
    pub refused: AtomicU64,
    /// Bytes sent from the client to destinations.
    pub bytes_out: AtomicU64,
    /// Bytes sent from destinations to the client.
    pub bytes_in: AtomicU64,
}

/// An egress proxy for one policy (one sandboxed process, or one host
/// process's remote models).
#[derive(Debug)]
pub struct Proxy {
    policy: Policy,
    out: Option<Bucket>,
    into: Option<Bucket>,
    observer: Option<Arc<dyn Observer>>,
    credential: Option<String>,
    /// Accept only connections whose socket belongs to this uid.
    owner: Option<u32>,
    stats: Arc<ProxyStats>,
    connections: Arc<tokio::sync::Semaphore>,
    pending: Arc<tokio::sync::Semaphore>,
}

impl Proxy {
    /// A proxy enforcing `policy` (its allow-list and bandwidth).
    pub fn new(policy: Policy) -> Self {
        let bucket = policy.bytes_per_second.map(Bucket::new);
        Self {
            out: policy.bytes_per_second.map(Bucket::new),
            into: bucket,
            policy,
            observer: None,
            credential: None,
            owner: None,
            stats: Arc::default(),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            pending: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING)),
        }
    }

    /// Reports refusals to `observer`.
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves only clients that send `Proxy-Authorization: Basic` with
    /// this user and password: a proxy on the host's loopback is then no
    /// open door for other local processes.
    pub fn require_credential(mut self, user: &str, password: &str) -> Self {
        self.credential = Some(base64(format!("{user}:{password}").as_bytes()));
        self
    }

    /// Serves only loopback connections whose client socket belongs to
    /// `uid` (its owner in `/proc/net/tcp`, as identd reads it): another
    /// user's process is closed at accept, before it holds anything.
    pub fn only_for_user(mut self, uid: u32) -> Self {
        self.owner = Some(uid);
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ProxyStats> {
        self.stats.clone()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Serves `listener` until the task is dropped; each client in a task
    /// of its own.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (client, _) = match listener.accept().await {
                Ok(c) => c,
                // Out of descriptors or a client gone before accept: the
                // listener itself is fine.
                Err(e) if e.raw_os_error().is_some() && e.kind() != io::ErrorKind::InvalidInput => {
                    tracing::warn!(target: "symbi_slm_egress", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(uid) = self.owner {
                // Reading the socket table is file I/O: off the runtime's
                // threads, which serve the host process's other work.
                let owner = match (client.peer_addr(), client.local_addr()) {
                    (Ok(peer), Ok(local)) => {
                        tokio::task::spawn_blocking(move || socket_owner(peer, local))
                            .await
                            .unwrap_or(None)
                    }
                    _ => None,
                };
                if owner != Some(uid) {
                    tracing::debug!(target: "symbi_slm_egress", "a connection of uid {owner:?} closed (the proxy serves uid {uid})");
                    drop(client);
                    continue;
                }
            }
            let Ok(pending) = self.pending.clone().try_acquire_owned() else {
                static LOGGED: crate::Throttle = crate::Throttle::new();
                if let Some(more) = LOGGED.admit() {
                    tracing::warn!(target: "symbi_slm_egress", "{MAX_PENDING} connections still sending their request: one more closed ({more} more since the last line)");
                }
                drop(client);
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.handle(client, pending).await {
                    tracing::debug!(target: "symbi_slm_egress", "connection ended: {e}");
                }
            });
        }
    }

    /// Serves one connection: holds `pending` until its credential is
    /// checked, then a slot of [`MAX_CONNECTIONS`] until it ends.
    async fn handle(
        &self,
        mut client: TcpStream,
        pending: tokio::sync::OwnedSemaphorePermit,
    ) -> io::Result<()> {
        let _ = client.set_nodelay(true);
        let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
            Ok(Ok(Some(h))) => h,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return reply(&mut client, 408, "request head not sent in time").await,
        };
        let head = match parse_head(&head) {
            Ok(h) => h,
            Err((code, why)) => return reply(&mut client, code, why).await,
        };
        if let Some(want) = &self.credential {
            let matches = head
                .credential
                .as_deref()
                .is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes()));
            if !matches {
                return reply(&mut client, 407, "proxy credential missing or wrong").await;
            }
        }
        drop(pending);
        let Ok(_slot) = self.connections.clone().try_acquire_owned() else {
            static LOGGED: crate::Throttle = crate::Throttle::new();
            if let Some(more) = LOGGED.admit() {
                tracing::warn!(target: "symbi_slm_egress", "{MAX_CONNECTIONS} connections open: one more refused ({more} more since the last line)");
            }
            return reply(&mut client, 503, "too many connections through this proxy").await;
        };
        let target = match head.target() {
            Ok(t) => t,
            Err((code, why)) => return reply(&mut client, code, why).await,
        };
        let Target {
            kind,
            ref host,
            port,
            body,
            ..
        } = target;
        let addrs = match self.policy.resolve(host, port, kind).await {
            Ok(a) => a,
            Err(refusal) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                // The observer's audit event is the record (counted when a
                // client repeats itself); this is for debugging.
                tracing::debug!(
                    target: "symbi_slm_egress",
                    profile = %self.policy.profile,
                    agent = self.policy.agent.as_deref().unwrap_or("-"),
                    "egress refused: {refusal}"
                );
                if let Some(o) = &self.observer {
                    o.refused(&self.policy, &refusal);
                }
                return reply(&mut client, 403, &format!("refused {refusal}")).await;
            }
        };
        let Some(mut upstream) = connect_any(&addrs).await else {
            return reply(
                &mut client,
                502,
                &format!("cannot connect to {host}:{port}"),
            )
            .await;
        };
        self.stats.allowed.fetch_add(1, Ordering::Relaxed);
        let _ = upstream.set_nodelay(true);
        match kind {
            Kind::Tunnel => {
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await?;
                if !rest.is_empty() {
                    self.send(&mut upstream, &rest, &self.out, &self.stats.bytes_out)
                        .await?;
                }
                self.relay(client, upstream).await
            }
            Kind::Http => {
                let mut fwd = forward_head(&head, &target);
                let body = body.unwrap_or(0);
                // The body, exactly as long as declared; nothing after it
                // (a pipelined request could name another host).
                let first = rest.len().min(usize::try_from(body).unwrap_or(usize::MAX));
                fwd.extend_from_slice(&rest[..first]);
                self.send(&mut upstream, &fwd, &self.out, &self.stats.bytes_out)
                    .await?;
                self.relay_request(client, upstream, body - first as u64)
                    .await
            }
        }
    }

    async fn send(
        &self,
        to: &mut (impl AsyncWrite + Unpin),
        bytes: &[u8],
        bucket: &Option<Bucket>,
        count: &AtomicU64,
    ) -> io::Result<()> {
        if let Some(b) = bucket {
            b.spend(bytes.len()).await;
        }
        to.write_all(bytes).await?;
        count.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A tunnel: copies both ways until both are done.
    async fn relay(&self, client: TcpStream, upstream: TcpStream) -> io::Result<()> {
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let out = self.pump(&mut cr, &mut uw, &self.out, &self.stats.bytes_out, u64::MAX);
        let back = self.pump(&mut ur, &mut cw, &self.into, &self.stats.bytes_in, u64::MAX);
        let (a, b) = tokio::join!(out, back);
        a.and(b)
    }

    /// One plain request: the rest of its body (`body` bytes) to the
    /// destination, then nothing more from the client; its answer back,
    /// which ends the exchange.
    async fn relay_request(
        &self,
        client: TcpStream,
        upstream: TcpStream,
        body: u64,
    ) -> io::Result<()> {
        // The halves live until the answer is through: dropping the
        // destination's write half would half-close it, and a server may
        // take that for a client that left.
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let out = self.pump(&mut cr, &mut uw, &self.out, &self.stats.bytes_out, body);
        let back = self.pump(&mut ur, &mut cw, &self.into, &self.stats.bytes_in, u64::MAX);
        let out = async move {
            let _ = out.await;
            std::future::pending::<io::Result<()>>().await
        };
        tokio::select! {
            r = back => r,
            r = out => r,
        }
    }

    /// Copies at most `limit` bytes, then half-closes `to`.
    async fn pump(
        &self,
        from: &mut (impl AsyncRead + Unpin),
        to: &mut (impl AsyncWrite + Unpin),
        bucket: &Option<Bucket>,
        count: &AtomicU64,
        mut limit: u64,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while limit > 0 {
            let want = buf.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
            let n = from.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            self.send(to, &buf[..n], bucket, count).await?;
            limit -= n as u64;
        }
        if limit == 0 {
            // The declared body is sent: half-close nothing (the answer
            // still comes on this connection).
            return Ok(());
        }
        to.shutdown().await
    }
}

/// Reads up to the end of the head; returns it and what followed it.
async fn read_head(client: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match httparse::Request::new(&mut headers).parse(&buf) {
            Ok(httparse::Status::Complete(end)) => {
                let rest = buf.split_off(end);
                return Ok(Some((buf, rest)));
            }
            Ok(httparse::Status::Partial) => {}
            // Malformed: `handle` answers 400 when it parses it again.
            Err(_) => return Ok(Some((buf, Vec::new()))),
        }
        if buf.len() > MAX_HEAD {
            let _ = reply(client, 431, "request head too large").await;
            return Ok(None);
        }
    }
}

/// Equal, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The uid that owns the client socket of a loopback TCP connection seen
/// from the server as `peer` → `local`: its line in `/proc/net/tcp` (or
/// `tcp6`) whose local address is `peer` and remote address `local`.
fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let hex = |a: SocketAddr| -> String {
        match a {
            SocketAddr::V4(v4) => format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(v4.ip().octets()),
                v4.port()
            ),
            SocketAddr::V6(v6) => {
                let o = v6.ip().octets();
                let words: String = o
                    .chunks(4)
                    .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                    .collect();
                format!("{words}:{:04X}", v6.port())
            }
        }
    };
    let file = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let (want_local, want_remote) = (hex(peer), hex(local));
    let table = std::fs::read_to_string(file).ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid …
        (f.len() > 7 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// Standard base64 with padding (RFC 4648), as `Basic` credentials use.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(A[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn connect_any(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for a in addrs {
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            return Some(s);
        }
    }
    None
}

async fn reply(client: &mut TcpStream, status: u16, text: &str) -> io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        411 => "Length Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = format!("symbiont egress: {text}\n");
    let auth = if status == 407 {
        "Proxy-Authenticate: Basic realm=\"symbiont-egress\"\r\n"
    } else {
        ""
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Symbiont-Egress: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len(),
        if status == 403 { "refused" } else { "error" },
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_standard_base64() {
        assert_eq!(base64(b"u:pass"), "dTpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }
}
