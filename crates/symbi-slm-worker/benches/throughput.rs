//! Many requests through one runner, on the default model, each figure
//! measured in this run:
//!
//! 1. 1, 4 and 8 concurrent requests of 64 tokens (greedy, different
//!    prompts): total generated tokens per second, and the ratio to one
//!    stream (target for 4: ≥ 1.4×).
//! 2. A shared 400-token prefix (the same instructions in front of two
//!    questions): time to first token of the second request against the
//!    first (target ≤ 25 %).
//! 3. 20 sequential short requests through a warm runner against a fresh
//!    worker process per request (keep-alive 0: the reference design's
//!    one-process-per-request, with our sandbox): end-to-end ratio
//!    (target ≥ 5×).
//!
//! `cargo bench -p symbi-slm-worker --bench throughput --profile dev [-- ROUNDS THREADS]`

#[allow(dead_code)] // each bench uses a part of it
mod common;

use std::time::{Duration, Instant};

use common::{median, spread, TOKENS};
use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile};
use symbiont_runtime::models::{ChatMessage, ChatRole, ExecutionOptions, LocalGgufRunner};

const PROMPTS: [&str; 8] = [
    "Explain quantum computing in simple words.",
    "Write a short story about a lighthouse keeper.",
    "Describe how a bicycle works.",
    "What are the benefits of drinking water?",
    "Explain why the sky is blue.",
    "Describe a walk through a forest in autumn.",
    "How do airplanes stay in the air?",
    "Write a letter to a friend about a trip to the sea.",
];

fn greedy(max_tokens: u32) -> ExecutionOptions {
    ExecutionOptions {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

async fn runner(
    model: &std::path::Path,
    threads: u32,
    slots: u32,
    keep_alive: Duration,
) -> LocalGgufRunner {
    let mut profile = SandboxProfile::standard();
    profile.resources.max_cpu_cores = threads as f32;
    LocalGgufRunner::builder(model, profile, ModelResourceRequirements::default())
        .worker_path(env!("CARGO_BIN_EXE_symbi-slm-worker"))
        .threads(threads)
        .slots(slots)
        .keep_alive(keep_alive)
        .build()
        .await
        .expect("runner")
}

/// Total generated tokens per second with `n` requests at once.
async fn concurrent(r: &LocalGgufRunner, n: usize) -> f64 {
    let started = Instant::now();
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.execute(PROMPTS[i % PROMPTS.len()], Some(greedy(TOKENS)))
                    .await
                    .expect("request")
            })
        })
        .collect();
    let mut tokens = 0;
    for j in jobs {
        tokens += j.await.unwrap().metadata.output_tokens.unwrap();
    }
    tokens as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let (rounds, threads, model) = common::setup(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(400));
        println!("default model, {threads} threads, {rounds} rounds (medians [min–max])");

        // 1. Concurrency.
        let r = runner(&model, threads, 8, Duration::from_secs(300)).await;
        r.preload().await.unwrap();
        concurrent(&r, 8).await; // warm-up
        let mut by_n = Vec::new();
        for n in [1usize, 4, 8] {
            let mut v = Vec::new();
            for _ in 0..rounds {
                settle().await;
                v.push(concurrent(&r, n).await);
            }
            by_n.push((n, v));
        }
        let single = median(&by_n[0].1);
        for (n, v) in &by_n {
            let (lo, hi) = spread(v);
            println!(
                "{n} concurrent × {TOKENS} tokens   {:>7.1} tok/s total [{lo:.1}–{hi:.1}]   ×{:.2} one stream",
                median(v),
                median(v) / single
            );
        }
        drop(r);

        // 2. Shared prefix.
        let rules = "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(25);
        let o = ExecutionOptions {
            history: vec![ChatMessage {
                role: ChatRole::System,
                content: rules,
            }],
            ..greedy(8)
        };
        let mut ratios = Vec::new();
        let mut firsts = Vec::new();
        let mut seconds = Vec::new();
        let mut cached = 0;
        for round in 0..rounds {
            // A fresh runner: the first request finds nothing cached.
            let r = runner(&model, threads, 1, Duration::from_secs(300)).await;
            r.preload().await.unwrap();
            settle().await;
            let a = r
                .execute(&format!("What is a pallet? ({round})"), Some(o.clone()))
                .await
                .unwrap();
            settle().await;
            let b = r
                .execute(&format!("What is a truck? ({round})"), Some(o.clone()))
                .await
                .unwrap();
            let (ta, tb) = (
                a.metadata.time_to_first_token_ms.unwrap(),
                b.metadata.time_to_first_token_ms.unwrap(),
            );
            cached = b.metadata.cached_tokens.unwrap();
            firsts.push(ta);
            seconds.push(tb);
            ratios.push(tb / ta);
        }
        println!(
            "shared prefix ({cached} tokens cached)   first request {:.1} ms to first token, second {:.1} ms   ratio {:.3}",
            median(&firsts),
            median(&seconds),
            median(&ratios)
        );

        // 3. Warm runner against a fresh worker per request.
        let n = 20;
        let short = greedy(8);
        let warm = runner(&model, threads, 4, Duration::from_secs(300)).await;
        warm.preload().await.unwrap();
        settle().await;
        let started = Instant::now();
        for i in 0..n {
            warm.execute(PROMPTS[i % PROMPTS.len()], Some(short.clone()))
                .await
                .unwrap();
        }
        let warm_s = started.elapsed().as_secs_f64();
        let cold = runner(&model, threads, 1, Duration::ZERO).await;
        settle().await;
        let started = Instant::now();
        for i in 0..n {
            let res = cold
                .execute(PROMPTS[i % PROMPTS.len()], Some(short.clone()))
                .await
                .unwrap();
            assert!(res.metadata.model_load_ms.is_some(), "not a fresh worker");
        }
        let cold_s = started.elapsed().as_secs_f64();
        println!(
            "{n} sequential 8-token requests   warm runner {warm_s:.2} s, fresh worker per request {cold_s:.2} s   ×{:.1}",
            cold_s / warm_s
        );
    });
}
