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
//! 4. Three models (the default model under three ids) in a `ModelPool`
//!    whose budget holds two workers, three agents asking at once: every
//!    request completes, evictions, and the largest sum of the workers'
//!    resident memory (`VmRSS`, sampled every 20 ms) against the budget.
//!
//! `cargo bench -p symbi-slm-worker --bench throughput --profile dev [-- ROUNDS THREADS [concurrency]]`
//! (`concurrency`: part 1 only, as `bench/server-compare.sh` uses it).

#[allow(dead_code)] // each bench uses a part of it
mod common;

use std::time::{Duration, Instant};

use common::{median, spread, PROMPTS, TOKENS};
use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile, Slm};
use symbiont_runtime::models::{
    Budget, ChatMessage, ChatRole, ExecutionOptions, HostBudget, LocalGgufRunner, ModelCatalog,
    ModelPool,
};

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
    let only_concurrency = std::env::args().any(|a| a == "concurrency");
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
        if only_concurrency {
            return;
        }

        // 2. Shared prefix.
        let rules = "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(25);
        let o = ExecutionOptions {
            history: vec![ChatMessage::new(ChatRole::System, rules)],
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

        // 4. Three models under a budget of two workers.
        let mut profile = SandboxProfile::standard();
        profile.resources.max_cpu_cores = 1.0;
        let estimate = LocalGgufRunner::builder(&model, profile, ModelResourceRequirements::default())
            .worker_path(env!("CARGO_BIN_EXE_symbi-slm-worker"))
            .build()
            .await
            .unwrap()
            .worker_memory_estimate_mb();
        let budget_mb = 2 * estimate + estimate / 2;
        let ids = ["model-a", "model-b", "model-c"];
        let models: String = ids
            .iter()
            .map(|id| {
                format!(
                    "[[slm.model_allow_lists.global_models]]\nid = \"{id}\"\nname = \"{id}\"\nprovider = {{ LocalFile = {{ file_path = {:?} }} }}\n",
                    model.display().to_string()
                )
            })
            .collect();
        let toml = format!(
            "[slm]\nenabled = true\ndefault_sandbox_profile = \"standard\"\n{models}[slm.model_allow_lists]\nunmapped_agent_access = \"all_global_models\"\n[slm.sandbox_profiles.standard.resources]\nmax_cpu_cores = 1.0\n"
        );
        let catalog = ModelCatalog::new(Slm::from_toml_str(&toml).unwrap()).unwrap();
        let pool = ModelPool::builder(catalog)
            .worker_path(env!("CARGO_BIN_EXE_symbi-slm-worker"))
            .budget(Budget::new(HostBudget {
                memory_mb: budget_mb,
                cores: 2,
                max_workers: 3,
            }))
            .build()
            .unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                let mut max_rss = 0.0f64;
                let mut max_leased = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let mut rss = 0.0;
                    for id in ids {
                        if let Some(pid) = pool.runner(id, None).await.unwrap().worker_pid().await {
                            rss += vm_rss_mb(pid);
                        }
                    }
                    max_rss = max_rss.max(rss);
                    max_leased = max_leased.max(pool.budget().in_use().1);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (max_rss, max_leased)
            })
        };
        let started = Instant::now();
        let jobs: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(agent, _)| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut finished = 0;
                    for round in 0..4 {
                        let id = ids[(agent + round) % ids.len()];
                        let r = pool
                            .execute(&format!("agent-{agent}"), id, None, PROMPTS[round], Some(greedy(16)))
                            .await
                            .expect("request");
                        assert!(r.metadata.output_tokens.unwrap() >= 1);
                        finished += 1;
                    }
                    finished
                })
            })
            .collect();
        let mut finished = 0;
        for j in jobs {
            finished += j.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let (max_rss, max_leased) = sampler.await.unwrap();
        let mut evictions = 0;
        for id in ids {
            evictions += pool.runner(id, None).await.unwrap().metrics().evictions;
        }
        println!(
            "3 models, budget {budget_mb} MB (2.5 workers of {estimate} MB)   {finished}/12 requests in {:.1} s, {evictions} idle workers evicted   largest sum of leases {max_leased} MB, of measured VmRSS {max_rss:.0} MB",
            started.elapsed().as_secs_f64()
        );
    });
}

/// `VmRSS` of a process, MB (0 once it is gone).
fn vm_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
