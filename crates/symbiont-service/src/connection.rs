//! One client connection: a deadline on writes that make no progress, and
//! the answer past the connection cap.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose writes must make progress: a write that stays
/// pending (the client takes no byte, its window and our send buffer are
/// full) for `limit` fails, so hyper closes the connection and drops the
/// response, which cancels its generation. Time spent waiting for the
/// model is not counted: only a write the client does not take.
pub(crate) struct SendDeadline<T> {
    io: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> SendDeadline<T> {
    pub(crate) fn new(io: T, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// After a write returned `poll`: forget the stall on progress, else
    /// start (or check) its clock.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let clock = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if clock.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took no byte of the response for {} s (slm.service.send_timeout_seconds)",
                            limit.as_secs()
                        ),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Connections open at once per client address, for
/// `slm.service.max_connections_per_client`.
#[derive(Debug, Default)]
pub(crate) struct PerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection of a client, counted until dropped.
pub(crate) struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    /// A slot for a connection from `ip`, unless it has `cap` open.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection past a connection cap (`key`, the setting, holds
/// `cap`) with a 503 in the OpenAI error shape and closes it, without
/// reading what it sent (bounded: a client that does not take the answer
/// within a second is dropped).
pub(crate) async fn refuse(
    mut tcp: tokio::net::TcpStream,
    what: &'static str,
    key: &'static str,
    cap: usize,
) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({ "error": {
        "message": format!("too many connections: the service holds {cap} at once {what} (slm.service.{key}); retry shortly"),
        "type": "overloaded_error",
        "param": null,
        "code": "too_many_connections",
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_client_gets_cap_connections_and_its_slots_come_back() {
        let clients = Arc::new(PerClient::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = clients.admit(a, 2).unwrap();
        let second = clients.admit(mapped, 2).unwrap();
        assert!(
            clients.admit(a, 2).is_none(),
            "a third connection of one client"
        );
        assert!(clients.admit(b, 2).is_some(), "another client is refused");
        drop(first);
        let third = clients.admit(a, 2).unwrap();
        drop((second, third));
        assert!(clients.open.lock().unwrap().is_empty());
    }

    /// A reader that takes nothing: the write fails at the limit. The
    /// twin: a reader that takes the bytes within the limit never trips it.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_at_the_limit_and_one_taken_in_time_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = SendDeadline::new(a, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = w.write_all(&[7u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("send_timeout_seconds"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let (a, mut b2) = tokio::io::duplex(64);
        let mut w = SendDeadline::new(a, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let n = b2.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got.len()
        });
        // 16 stalls of 4 s each: 64 s in all, none as long as the limit.
        w.write_all(&[7u8; 1024]).await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 1024);
        let _ = b.shutdown().await;
    }
}
