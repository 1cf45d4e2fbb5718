//! What HTTP costs: the same load through `symbi-slm serve`'s service
//! (axum, on loopback, in this process) and through the library
//! (`ModelPool::for_agent` + `execute_stream`), alternating the two
//! sides in one run. 1 and 4 concurrent streamed chat requests of 64
//! tokens, greedy, the same four prompts on both sides, so that both find
//! them in the prefix cache after the warm-up: the time to first token is
//! then one decode step plus what each path adds, not the prompt's
//! reading, whose noise would hide a millisecond.
//!
//! The caller takes every time: time to first token is from sending the
//! request to the first generated text (the first SSE chunk with content,
//! over a plain TCP socket, or the first `Token` event); tokens/s is the
//! tokens generated (the usage chunk / the metadata) over the round's wall
//! time.
//!
//! Targets (issue 8): HTTP adds < 1 ms to the median time to first token
//! and costs < 3 % of total tokens/s.
//!
//! `cargo bench -p symbi-slm-worker --bench service --profile dev [-- ROUNDS]`

mod common;

use std::time::Instant;

use common::{median, spread, TOKENS};
use futures::StreamExt;
use symbiont_runtime::config::Slm;
use symbiont_runtime::models::{ExecutionOptions, ModelCatalog, ModelPool, StreamEvent};
use symbiont_service::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOPICS: [&str; 4] = [
    "quantum computing",
    "a lighthouse keeper",
    "how a bicycle works",
    "why the sky is blue",
];

#[derive(Default)]
struct Side {
    ttft_ms: Vec<f64>,
    tps: Vec<f64>,
}

fn prompt(i: usize) -> String {
    format!("Explain {} in simple words.", TOPICS[i % TOPICS.len()])
}

async fn library(pool: &ModelPool, prompt: String) -> (f64, u32) {
    let started = Instant::now();
    let runner = pool
        .for_agent("bench")
        .runner("smollm2", None)
        .await
        .unwrap();
    let options = ExecutionOptions {
        temperature: Some(0.0),
        max_tokens: Some(TOKENS),
        ..Default::default()
    };
    let mut stream = Box::pin(runner.execute_stream(&prompt, Some(options)));
    let mut ttft = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Token(_) => {
                ttft.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
            }
            StreamEvent::Done(r) => return (ttft.unwrap(), r.metadata.output_tokens.unwrap()),
            _ => {}
        }
    }
    panic!("the stream ended without a result");
}

/// One streamed chat completion over a plain socket.
async fn http(addr: std::net::SocketAddr, token: &str, prompt: String) -> (f64, u32) {
    let body = serde_json::json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut ttft = None;
    let mut scanned = 0;
    // A content delta with text: `{"content":"` followed by anything but
    // the closing quote (the role chunk's content is empty).
    let marker = br#"{"content":""#;
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if ttft.is_none() {
            while let Some(pos) = find(&got[scanned..], marker) {
                let at = scanned + pos + marker.len();
                if at >= got.len() {
                    break;
                }
                scanned = at;
                if got[at] != b'"' {
                    ttft = Some(started.elapsed().as_secs_f64() * 1e3);
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let tokens = text
        .split(r#""completion_tokens":"#)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no usage in {text}"));
    (ttft.expect("no token"), tokens)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn line(name: &str, unit: &str, a: &[f64], b: &[f64]) {
    let (ma, mb) = (median(a), median(b));
    let (a0, a1) = spread(a);
    let (b0, b1) = spread(b);
    println!(
        "{name:<30} library {ma:>8.2} {unit} [{a0:.2}–{a1:.2}]   HTTP {mb:>8.2} {unit} [{b0:.2}–{b1:.2}]   HTTP − library {:+.2} {unit}   ratio {:.3}",
        mb - ma,
        mb / ma
    );
}

fn main() {
    let (rounds, _threads, model) = common::setup(10);
    let worker = std::path::Path::new(env!("CARGO_BIN_EXE_symbi-slm-worker"));
    let token = "symbi_bench_token";
    let config = format!(
        r#"[slm]
enabled = true
default_sandbox_profile = "standard"
[[slm.model_allow_lists.global_models]]
id = "smollm2"
name = "SmolLM2"
provider = {{ LocalFile = {{ file_path = "{}" }} }}
capabilities = ["TextGeneration"]
[slm.model_allow_lists.agent_model_maps]
bench = ["smollm2"]
[slm.service.agent_tokens]
bench = "{}"
"#,
        model.display(),
        symbiont_service::auth::token_hash(token)
    );
    let catalog = ModelCatalog::new(Slm::from_toml_str(&config).unwrap()).unwrap();
    let pool = ModelPool::builder(catalog)
        .worker_path(worker)
        .audit_log(symbiont_runtime::audit::AuditLog::tracing_only())
        .build()
        .unwrap();
    let service = Service::new(pool.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(service.serve(listener, std::future::pending()));
        let slots = pool.runner("smollm2", None).await.unwrap().slots();
        println!("default model, profile standard, {slots} slots, {TOKENS}-token greedy chat streams, {rounds} rounds (medians [min–max])");
        // Warm-up: the worker loaded, both paths exercised.
        for i in 0..4 {
            library(&pool, prompt(i)).await;
            http(addr, token, prompt(i)).await;
        }
        for concurrency in [1usize, 4] {
            let (mut lib, mut web) = (Side::default(), Side::default());
            for round in 0..rounds {
                // Alternate which side goes first.
                for side in [round % 2, 1 - round % 2] {
                    let started = Instant::now();
                    let results: Vec<(f64, u32)> = if side == 0 {
                        futures::future::join_all(
                            (0..concurrency).map(|i| library(&pool, prompt(i))),
                        )
                        .await
                    } else {
                        futures::future::join_all(
                            (0..concurrency).map(|i| http(addr, token, prompt(i))),
                        )
                        .await
                    };
                    let wall = started.elapsed().as_secs_f64();
                    let tokens: u32 = results.iter().map(|r| r.1).sum();
                    let s = if side == 0 { &mut lib } else { &mut web };
                    s.ttft_ms.extend(results.iter().map(|r| r.0));
                    s.tps.push(f64::from(tokens) / wall);
                }
            }
            line(&format!("{concurrency} concurrent: first token"), "ms", &lib.ttft_ms, &web.ttft_ms);
            line(&format!("{concurrency} concurrent: total tok/s"), "tok/s", &lib.tps, &web.tps);
        }
    });
}
