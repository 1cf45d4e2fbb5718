//! The proxy against real sockets on loopback: what it lets through, what
//! it refuses, and that a refusal reaches the observer and the counters.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use symbiont_egress::{Observer, Policy, Proxy, Refusal, Rule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin server: answers every request with the head it received
/// (so a test sees what the proxy forwarded), or a redirect for `/redirect`.
async fn origin(redirect_to: Option<String>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let redirect_to = redirect_to.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let resp = match (&redirect_to, head.starts_with("GET /redirect")) {
                    (Some(to), true) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    _ => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                        head.len()
                    ),
                };
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[derive(Debug, Default)]
struct Seen(Mutex<Vec<String>>);

impl Observer for Seen {
    fn refused(&self, policy: &Policy, refusal: &Refusal) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", policy.profile, refusal.destination));
    }
}

async fn proxy(rules: Vec<Rule>, credential: Option<(&str, &str)>) -> (u16, Arc<Proxy>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let mut p = Proxy::new(Policy::new("tools", rules)).observed_by(seen.clone());
    if let Some((user, password)) = credential {
        p = p.require_credential(user, password);
    }
    let p = Arc::new(p);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(p.clone().serve(l));
    (port, p, seen)
}

async fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).to_string()
}

fn rule(host: &str, port: u16) -> Rule {
    Rule::new(host, Some(port), None).unwrap()
}

#[tokio::test]
async fn allowed_destinations_are_reached_and_others_refused() {
    let allowed = origin(None).await;
    let other = origin(None).await;
    let (px, proxy, seen) = proxy(vec![rule("127.0.0.1", allowed)], None).await;

    // Plain HTTP: forwarded in origin form, proxy headers dropped, one
    // request per connection.
    // `Host` is the host that was judged (a shared host routes by it), and
    // a request pipelined behind the first never leaves.
    let got = exchange(
        px,
        &format!(
            "GET http://127.0.0.1:{allowed}/v1/x?q=1 HTTP/1.1\r\nHost: evil.example\r\nProxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive\r\n\r\nGET /second HTTP/1.1\r\nHost: evil.example\r\n\r\n"
        ),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    // What the origin received, echoed as the body.
    let forwarded = got.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
    assert!(
        forwarded.starts_with("get /v1/x?q=1 http/1.1\r\n"),
        "{forwarded}"
    );
    assert!(
        forwarded.contains(&format!("host: 127.0.0.1:{allowed}\r\n")),
        "{forwarded}"
    );
    assert!(forwarded.contains("connection: close\r\n"), "{forwarded}");
    for gone in [
        "evil.example",
        "keep-alive",
        "proxy-authorization",
        "/second",
    ] {
        assert!(
            !forwarded.contains(gone),
            "{gone} was forwarded: {forwarded}"
        );
    }
    // A body goes as long as declared; a chunked one is refused.
    let got = exchange(
        px,
        &format!("POST http://127.0.0.1:{allowed}/p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && !got.contains("smuggled"),
        "{got}"
    );
    let got = exchange(
        px,
        &format!("POST http://127.0.0.1:{allowed}/p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 411"), "{got}");
    // Two lengths, or one a parser could read otherwise: refused.
    for cl in [
        "Content-Length: 0\r\nContent-Length: 40",
        "Content-Length: +5",
        "Content-Length: 5 5",
    ] {
        let got = exchange(
            px,
            &format!("POST http://127.0.0.1:{allowed}/p HTTP/1.1\r\n{cl}\r\n\r\nhello"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400"), "{cl}: {got}");
    }
    // Bytes past ASCII where the scheme is looked for: a 400, not a panic.
    let got = exchange(px, "GET http:/\u{e9}x HTTP/1.1\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");

    // A CONNECT tunnel, then a request inside it.
    let mut s = TcpStream::connect(("127.0.0.1", px)).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{allowed} HTTP/1.1\r\n\r\nGET /in HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let got = String::from_utf8_lossy(&out);
    assert!(
        got.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK"),
        "{got}"
    );
    assert!(got.contains("GET /in HTTP/1.1"), "{got}");
    assert_eq!(proxy.stats().allowed.load(Ordering::Relaxed), 3);
    assert!(proxy.stats().bytes_in.load(Ordering::Relaxed) > 100);

    // Refused: another port, another address, a name not listed, a name
    // that leads to an address not listed literally.
    for (req, dest) in [
        (
            format!("CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n"),
            format!("127.0.0.1:{other}"),
        ),
        (
            format!("GET http://127.0.0.2:{allowed}/ HTTP/1.1\r\n\r\n"),
            format!("127.0.0.2:{allowed}"),
        ),
        (
            format!("CONNECT example.com:{allowed} HTTP/1.1\r\n\r\n"),
            format!("example.com:{allowed}"),
        ),
        (
            format!("GET http://[::ffff:127.0.0.1]:{other}/ HTTP/1.1\r\n\r\n"),
            format!("[::ffff:127.0.0.1]:{other}"),
        ),
    ] {
        let got = exchange(px, &req).await;
        assert!(got.starts_with("HTTP/1.1 403 Forbidden"), "{req}: {got}");
        assert!(got.contains("X-Symbiont-Egress: refused"), "{got}");
        assert!(
            got.contains("not in allowed_destinations of profile `tools`"),
            "{got}"
        );
        assert!(!got.contains("Connection Established"));
        let last = seen.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last, format!("tools {dest}"));
    }
    assert_eq!(proxy.stats().refused.load(Ordering::Relaxed), 4);
    assert_eq!(proxy.stats().allowed.load(Ordering::Relaxed), 3);

    // Not a proxy request at all.
    let got = exchange(px, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    let got = exchange(
        px,
        &format!("GET http://user@127.0.0.1:{allowed}/ HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
}

#[tokio::test]
async fn a_name_leading_to_loopback_is_refused_unless_the_address_is_listed() {
    let allowed = origin(None).await;
    let (px, _, seen) = proxy(vec![rule("localhost", allowed)], None).await;
    let got = exchange(px, &format!("CONNECT localhost:{allowed} HTTP/1.1\r\n\r\n")).await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    assert!(got.contains("loopback"), "{got}");
    assert_eq!(seen.0.lock().unwrap().len(), 1);

    let (px, _, _) = proxy(
        vec![rule("localhost", allowed), rule("127.0.0.1", allowed)],
        None,
    )
    .await;
    let got = exchange(
        px,
        &format!("GET http://localhost:{allowed}/ HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn a_redirect_is_passed_back_never_followed() {
    let denied = origin(None).await;
    let allowed = origin(Some(format!("http://127.0.0.1:{denied}/secret"))).await;
    let (px, proxy, _) = proxy(vec![rule("127.0.0.1", allowed)], None).await;
    let got = exchange(
        px,
        &format!("GET http://127.0.0.1:{allowed}/redirect HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 302"), "{got}");
    assert_eq!(proxy.stats().allowed.load(Ordering::Relaxed), 1);
    // The client's own follow-up is a new request, judged afresh.
    let got = exchange(
        px,
        &format!("GET http://127.0.0.1:{denied}/secret HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
}

#[tokio::test]
async fn a_credential_is_required_when_set() {
    let allowed = origin(None).await;
    let (px, proxy, _) = proxy(vec![rule("127.0.0.1", allowed)], Some(("u", "pass"))).await;
    let req = |auth: &str| format!("GET http://127.0.0.1:{allowed}/ HTTP/1.1\r\n{auth}\r\n");
    let got = exchange(px, &req("")).await;
    assert!(got.starts_with("HTTP/1.1 407"), "{got}");
    let got = exchange(px, &req("Proxy-Authorization: Basic d3Jvbmc=\r\n")).await;
    assert!(got.starts_with("HTTP/1.1 407"), "{got}");
    let got = exchange(px, &req("Proxy-Authorization: Basic dTpwYXNz\r\n")).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(proxy.stats().allowed.load(Ordering::Relaxed), 1);
}

/// Holds `n` connections to `port` from a Python process (as `uid` when
/// given), sending nothing, until dropped.
struct Holder(std::process::Child);
impl Holder {
    fn start(port: u16, n: usize, uid: Option<u32>) -> Holder {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let script = format!(
            "import socket, sys, time\nheld = []\nfor _ in range({n}):\n    s = socket.create_connection(('127.0.0.1', {port}))\n    held.append(s)\nprint('held', flush=True)\ntime.sleep(60)"
        );
        let mut cmd = std::process::Command::new("/usr/bin/python3");
        cmd.args(["-c", &script])
            .stdout(std::process::Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        Holder(child)
    }
}
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Row 8 of issue 18: connections that never send the credential held
/// every slot of a runner's private proxy, so the remote model answered
/// 503. Now a proxy bound to its user closes another user's connections
/// at accept (the twin: the same holder, as the proxy's own user, does
/// fill the slots for clients still sending their request), and clients
/// that have not passed the credential check never hold the slots of
/// those that have.
#[tokio::test(flavor = "multi_thread")]
async fn clients_without_the_credential_cannot_crowd_out_those_with_it() {
    let allowed = origin(None).await;
    let me = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let me = me.unwrap();
    let seen = Arc::new(Seen::default());
    let p = Arc::new(
        Proxy::new(Policy::new("tools", vec![rule("127.0.0.1", allowed)]))
            .observed_by(seen)
            .require_credential("u", "pass")
            .only_for_user(me),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let px = l.local_addr().unwrap().port();
    tokio::spawn(p.clone().serve(l));
    let authed = format!(
        "GET http://127.0.0.1:{allowed}/ HTTP/1.1\r\nProxy-Authorization: Basic dTpwYXNz\r\n\r\n"
    );
    // Fewer holders than the pending slots, of our own uid: an
    // authenticated client still gets through.
    {
        let _few = Holder::start(px, symbiont_egress::MAX_PENDING - 4, None);
        let got = exchange(px, &authed).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    if me != 0 {
        eprintln!("not root: no other user to hold connections as; the other-user half needs root");
        return;
    }
    // Another user's holders, more than every slot: closed at accept.
    let _theirs = Holder::start(px, symbiont_egress::MAX_CONNECTIONS + 50, Some(65534));
    let got = exchange(px, &authed).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The twin: the same many holders as our own uid fill what a client
    // needs before its credential is read.
    drop(_theirs);
    let _ours = Holder::start(px, symbiont_egress::MAX_PENDING + 10, None);
    let mut s = TcpStream::connect(("127.0.0.1", px)).await.unwrap();
    let _ = s.write_all(authed.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
