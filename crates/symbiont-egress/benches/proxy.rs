//! What the egress proxy costs, on loopback, in one run: the time of one
//! short HTTP exchange on a new connection (the proxy's per-connection
//! latency: accept, head parse, policy check, connect onwards), plain
//! `http://` through the proxy and a `CONNECT` tunnel against a direct
//! connection; and bulk throughput through a tunnel against direct.
//! Alternating rounds; medians. Not run by the tests.
//!
//!   cargo bench -p symbiont-egress --bench proxy [-- ROUNDS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use symbiont_egress::{Policy, Proxy, Rule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK: usize = 256 * 1024 * 1024;

async fn origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                if got.starts_with(b"GET /bulk") {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {BULK}\r\nConnection: close\r\n\r\n"
                    );
                    s.write_all(head.as_bytes()).await.unwrap();
                    let chunk = vec![b'x'; 1 << 20];
                    for _ in 0..BULK >> 20 {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// One exchange on a new connection: `how` 0 direct, 1 plain through the
/// proxy, 2 tunnel through the proxy. Returns the bytes of the answer.
async fn exchange(how: u8, origin: u16, proxy: u16, path: &str) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", if how == 0 { origin } else { proxy }))
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let req = match how {
        0 => format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        1 => format!("GET http://127.0.0.1:{origin}{path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        _ => format!(
            "CONNECT 127.0.0.1:{origin} HTTP/1.1\r\n\r\nGET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
    };
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            return n;
        }
        n += k;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let origin = origin().await;
    let proxy = Arc::new(Proxy::new(Policy::new(
        "bench",
        vec![Rule::new("127.0.0.1", Some(origin), None).unwrap()],
    )));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = l.local_addr().unwrap().port();
    tokio::spawn(proxy.clone().serve(l));

    let names = ["direct", "plain HTTP via proxy", "CONNECT tunnel via proxy"];
    let mut latency: [Vec<f64>; 3] = Default::default();
    let mut bulk: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for how in order {
            let mut per = Vec::new();
            for _ in 0..500 {
                let t = Instant::now();
                assert!(exchange(how, origin, proxy_port, "/small").await > 0);
                per.push(t.elapsed().as_secs_f64() * 1e6);
            }
            latency[how as usize].push(median(&mut per));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            let n = exchange(how, origin, proxy_port, "/bulk").await;
            assert!(n >= BULK, "{n}");
            bulk[how as usize].push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    println!("egress proxy on loopback, {rounds} alternating rounds (medians)");
    let base_lat = median(&mut latency[0].clone());
    let base_bulk = median(&mut bulk[0].clone());
    for i in 0..3 {
        let lat = median(&mut latency[i]);
        let mb = median(&mut bulk[i]);
        println!(
            "{:<26} one exchange on a new connection {lat:7.1} µs (+{:5.1} µs)   bulk {mb:7.0} MB/s (ratio {:.2})",
            names[i],
            lat - base_lat,
            mb / base_bulk
        );
    }
}
