//! `Restricted` network under `symbi-slm sandbox exec`: real programs
//! (`curl`, Python's `urllib`) reach allowed destinations only through the
//! egress proxy; everything else is refused, and refusals are audited.
//! Loopback only: every destination is a server of this test.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIG: usize = 3_000_000;

/// An HTTP origin on loopback: `/big` sends 3 MB, `/redirect?to=URL`
/// answers 302 to URL, anything else a short text naming the server.
fn origin(name: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                if target == "/big" {
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&vec![b'x'; BIG]);
                } else if let Some(to) = target.strip_prefix("/redirect?to=") {
                    let _ = s.write_all(
                        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                } else {
                    let body = format!("hello from {name}\n");
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    );
                }
            });
        }
    });
    port
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
}

/// A config with profile `tools` (strict, the secure profile's defaults)
/// whose network is `network` (TOML lines of the network table).
fn setup(network: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let log = dir.path().join("audit.jsonl");
    std::fs::write(
        &config,
        format!(
            "[slm]\naudit_log_path = \"{}\"\n[slm.sandbox_profiles.tools.network]\naccess_mode = \"Restricted\"\n{network}\n",
            log.display()
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        config,
        log,
    }
}

/// The CLI: `$SYMBI_SLM_BIN` (scripts/test-unprivileged runs these tests
/// as `nobody` with a copy), else the one cargo built.
fn bin() -> String {
    std::env::var("SYMBI_SLM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_symbi-slm").into())
}

fn exec(s: &Setup, cmd: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["--config", s.config.to_str().unwrap()])
        .args(["sandbox", "exec", "--profile", "tools", "--"])
        .args(cmd)
        .env_remove("SYMBI_SLM_CONFIG")
        .output()
        .expect("spawn symbi-slm");
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn curl(s: &Setup, args: &[&str]) -> (Output, Duration) {
    let mut cmd = vec!["/usr/bin/curl", "-sS", "--max-time", "20"];
    cmd.extend_from_slice(args);
    exec(s, &cmd)
}

fn events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn need_curl() {
    assert!(
        Path::new("/usr/bin/curl").exists(),
        "curl is missing: scripts/setup.sh installs it (Debian package curl)"
    );
}

#[test]
fn curl_reaches_allowed_destinations_only_through_the_proxy() {
    need_curl();
    let allowed = origin("allowed");
    let denied = origin("denied");
    let s = setup(&format!(
        "allowed_destinations = [{{ host = \"127.0.0.1\", port = {allowed} }}]"
    ));
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");

    // Allowed, as plain HTTP through the proxy and as a CONNECT tunnel.
    for tunnel in [false, true] {
        let u = url(allowed, "/");
        let mut args = vec![u.as_str()];
        if tunnel {
            args.insert(0, "--proxytunnel");
        }
        let (out, _) = curl(&s, &args);
        assert_eq!(
            text(&out.stdout),
            "hello from allowed\n",
            "tunnel {tunnel}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
    }
    assert!(events(&s.log).is_empty(), "{:?}", events(&s.log));

    // Another port: refused by the proxy (403), audited with the profile
    // and the destination; through a tunnel too.
    let (out, _) = curl(&s, &["-w", "%{http_code}", &url(denied, "/")]);
    let got = text(&out.stdout);
    assert!(
        got.ends_with("403") && !got.contains("hello from denied"),
        "{got}"
    );
    assert!(
        got.contains(&format!("refused 127.0.0.1:{denied}")),
        "{got}"
    );
    let (out, _) = curl(&s, &["--proxytunnel", &url(denied, "/")]);
    assert_eq!(out.status.code(), Some(56), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let ev = events(&s.log);
    assert_eq!(ev.len(), 2, "{ev:?}");
    for e in &ev {
        assert_eq!(e["kind"], "egress_refused");
        assert_eq!(e["profile"], "tools");
        assert_eq!(e["control"], "network.allowed_destinations");
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("127.0.0.1:{denied}")),
            "{e}"
        );
    }

    // Around the proxy: a direct connection, to the allowed port or any
    // other, fails inside the sandbox (own namespace, Landlock).
    for port in [allowed, denied] {
        let (out, _) = curl(&s, &["--noproxy", "*", &url(port, "/")]);
        assert_eq!(
            out.status.code(),
            Some(7),
            "direct to {port}: {}",
            text(&out.stdout)
        );
        assert!(
            !text(&out.stdout).contains("hello"),
            "{}",
            text(&out.stdout)
        );
    }

    // A redirect to a denied destination: passed back, and the follow-up
    // is judged afresh and refused.
    let (out, _) = curl(
        &s,
        &[
            "-L",
            "-w",
            "%{http_code}",
            &url(allowed, &format!("/redirect?to={}", url(denied, "/"))),
        ],
    );
    let got = text(&out.stdout);
    assert!(
        got.ends_with("403") && !got.contains("hello from denied"),
        "{got}"
    );
    assert_eq!(events(&s.log).len(), 3);
}

#[test]
fn python_urllib_and_raw_sockets_under_restricted() {
    let allowed = origin("allowed");
    let denied = origin("denied");
    let s = setup(&format!(
        "allowed_destinations = [{{ host = \"127.0.0.1\", port = {allowed} }}]"
    ));
    let script = format!(
        r#"
import os, socket, urllib.request, urllib.error
print("proxy", os.environ.get("http_proxy"), os.environ.get("HTTPS_PROXY"), os.environ.get("ALL_PROXY"))
print("allowed", urllib.request.urlopen("http://127.0.0.1:{allowed}/").read().decode().strip())
try:
    urllib.request.urlopen("http://127.0.0.1:{denied}/")
    print("denied reached")
except urllib.error.HTTPError as e:
    print("denied", e.code)
for port in (3128, {allowed}, {denied}):
    c = socket.socket()
    try:
        c.connect(("127.0.0.1", port))
        print("connect", port, "ok")
    except OSError as e:
        print("connect", port, e.errno)
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    print("unix ok")
except OSError as e:
    print("unix", e.errno)
a, b = socket.socketpair()
print("pair ok")
# A datagram pair could send to any socket path (/dev/log): refused.
try:
    socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    print("dgram pair ok")
except OSError as e:
    print("dgram pair", e.errno)
"#
    );
    let (out, _) = exec(&s, &["/usr/bin/python3", "-c", &script]);
    let got = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{got}{}", text(&out.stderr));
    let want = format!(
        "proxy http://127.0.0.1:3128 http://127.0.0.1:3128 http://127.0.0.1:3128\n\
         allowed hello from allowed\n\
         denied 403\n\
         connect 3128 ok\n\
         connect {allowed} {eacces}\n\
         connect {denied} {eacces}\n\
         unix {eperm}\n\
         pair ok\n\
         dgram pair {eperm}\n",
        eacces = 13,
        eperm = 1,
    );
    assert_eq!(got, want, "{}", text(&out.stderr));
}

#[test]
fn a_name_must_lead_to_an_address_the_profile_names() {
    need_curl();
    let port = origin("named");
    let only_name = setup(&format!(
        "allowed_destinations = [{{ host = \"localhost\", port = {port} }}]"
    ));
    let (out, _) = curl(
        &only_name,
        &["-w", "%{http_code}", &format!("http://localhost:{port}/")],
    );
    let got = text(&out.stdout);
    assert!(got.ends_with("403") && got.contains("loopback"), "{got}");
    let with_address = setup(&format!(
        "allowed_destinations = [{{ host = \"localhost\", port = {port} }}, {{ host = \"127.0.0.1\", port = {port} }}]"
    ));
    let (out, _) = curl(&with_address, &[&format!("http://localhost:{port}/")]);
    assert_eq!(
        text(&out.stdout),
        "hello from named\n",
        "{}",
        text(&out.stderr)
    );
}

/// 3 MB at 8 Mbit/s (1 MB/s) takes about 3 s; the same download without a
/// cap, through the same proxy, takes well under one.
#[test]
fn bandwidth_is_capped_by_the_profile() {
    need_curl();
    let port = origin("bulk");
    let dest = format!("allowed_destinations = [{{ host = \"127.0.0.1\", port = {port} }}]");
    let capped = setup(&format!("{dest}\nmax_bandwidth_mbps = 8"));
    let free = setup(&dest);
    let url = format!("http://127.0.0.1:{port}/big");
    let fetch = |s: &Setup| {
        let (out, took) = curl(s, &[&url]);
        assert_eq!(out.stdout.len(), BIG, "{}", text(&out.stderr));
        took
    };
    let fast = fetch(&free);
    let slow = fetch(&capped);
    eprintln!("3 MB: {fast:?} uncapped, {slow:?} at 8 Mbit/s");
    assert!(fast < Duration::from_millis(1500), "uncapped took {fast:?}");
    assert!(
        slow >= Duration::from_millis(2700) && slow < Duration::from_secs(6),
        "capped took {slow:?}"
    );
}

#[test]
fn a_restricted_profile_without_destinations_is_refused() {
    let s = setup("allowed_destinations = []");
    let out = Command::new(bin())
        .args(["--config", s.config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("slm.sandbox_profiles.tools.network.allowed_destinations"),
        "{}",
        text(&out.stdout)
    );
}

/// Row 5 of issue 18: a program looping on refused connections wrote
/// 16,872 audit events (256 MB) in 5 s. Now 500 refused requests (curl's
/// URL range, through the proxy) make at most the burst of events one by
/// one plus one summary counting the rest; the twin: a request to the
/// allowed destination beside them is answered.
#[test]
fn repeated_refusals_are_counted_not_written_one_by_one() {
    need_curl();
    let port = origin("counted");
    let s = setup(&format!(
        "allowed_destinations = [{{ host = \"127.0.0.1\", port = {port} }}]"
    ));
    let (out, _) = curl(
        &s,
        &[
            "http://10.255.255.1:81/[1-500]",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    assert!(
        text(&out.stdout).ends_with("hello from counted\n"),
        "{}",
        text(&out.stderr)
    );
    let refused: Vec<_> = events(&s.log)
        .into_iter()
        .filter(|e| e["kind"] == "egress_refused")
        .collect();
    let burst = symbiont_runtime::audit::AUDIT_BURST as usize;
    assert_eq!(refused.len(), burst + 1, "{refused:?}");
    let summary = refused.last().unwrap();
    assert_eq!(summary["count"], 500 - burst as u64, "{summary}");
    assert!(std::fs::metadata(&s.log).unwrap().len() < 16 << 10);
}
