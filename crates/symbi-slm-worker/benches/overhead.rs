//! Overhead of the supervised worker against the same decode loop run
//! in-process, on the default model, alternating the two sides in one run.
//!
//! In-process: the worker's engine serving on a thread of this process,
//! fed through a channel (no worker process, no pipes, no supervisor, no
//! sandbox). Runner: `LocalGgufRunner::execute` (supervisor, queue,
//! driver, pipes, worker). Same prompt, greedy, 64 tokens, same thread
//! count, one slot each. Every time is taken by the caller, here: from
//! handing the request over to the first token and to the end, so the
//! supervisor's cost shows in the difference.
//!
//! Prints medians, spread (min–max) and ratios. Targets (issue 3):
//! generation tokens/s ≥ 0.97 × in-process; warm request overhead < 2 ms.
//!
//! With `STREAMS` above 1, both sides get that many slots and that many
//! requests at once (different prompts), and each round's figure is the
//! total generated tokens over the round's wall time: the batched decode
//! loop with the driver's fan-out of tokens to many readers, as a ratio
//! that the machine's drift between minutes cancels.
//!
//! `cargo bench -p symbi-slm-worker --bench overhead [-- ROUNDS THREADS [STREAMS]]`

mod common;

use common::{median, spread, PROMPT, PROMPTS, TOKENS};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use symbi_slm_worker::engine::Engine;
use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile};
use symbiont_runtime::models::{ExecutionOptions, LocalGgufRunner, StreamEvent};
use symbiont_slm_protocol::{FromWorker, LaunchSpec, ToWorker};

#[derive(Default)]
struct Side {
    gen_tps: Vec<f64>,
    ttft_ms: Vec<f64>,
    wall_ms: Vec<f64>,
}

fn line(name: &str, unit: &str, a: &[f64], b: &[f64]) {
    let (ma, mb) = (median(a), median(b));
    let (a0, a1) = spread(a);
    let (b0, b1) = spread(b);
    println!(
        "{name:<26} in-process {ma:>8.2} {unit} [{a0:.2}–{a1:.2}]   runner {mb:>8.2} {unit} [{b0:.2}–{b1:.2}]   ratio {:.3}",
        mb / ma
    );
}

fn main() {
    let (rounds, threads, model) = common::setup(15);
    let streams: u32 = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let worker = std::path::Path::new(env!("CARGO_BIN_EXE_symbi-slm-worker"));

    let spec = LaunchSpec {
        protocol_version: symbiont_slm_protocol::PROTOCOL_VERSION,
        model_path: model.clone(),
        threads,
        context_size: 2048,
        cache_tokens: 2048 * streams.min(4),
        batch_size: 512,
        slots: streams,
        supervisor_pid: std::process::id(),
        sandbox: symbiont_slm_protocol::SandboxPlan::unconfined(),
    };
    // The engine serves on its own thread, as in the worker.
    let (to_engine, rx) = mpsc::channel::<ToWorker>();
    let (events_tx, events) = mpsc::channel::<FromWorker>();
    let engine_model = model.clone();
    std::thread::spawn(move || {
        let engine = Engine::load(
            &spec,
            &engine_model,
            symbiont_slm_protocol::Applied {
                layers: vec![],
                setup_micros: 0,
            },
        )
        .expect("in-process load");
        engine.serve(&rx, &mut |m: &FromWorker| {
            let _ = events_tx.send(m.clone());
        });
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut profile = SandboxProfile::standard();
    profile.resources.max_cpu_cores = threads as f32;
    let runner = rt
        .block_on(
            LocalGgufRunner::builder(&model, profile, ModelResourceRequirements::default())
                .worker_path(worker)
                .threads(threads)
                .slots(streams)
                .build(),
        )
        .expect("runner");
    rt.block_on(runner.preload()).expect("preload");
    let worker_pid = rt.block_on(runner.worker_pid()).expect("a worker");

    let options = ExecutionOptions {
        temperature: Some(0.0),
        max_tokens: Some(TOKENS),
        ..Default::default()
    };
    if streams > 1 {
        return many(
            rounds, threads, streams, &to_engine, &events, &rt, &runner, &options,
        );
    }
    let mut inproc = Side::default();
    let mut supervised = Side::default();
    let mut texts = (String::new(), String::new());
    let mut overhead = Vec::new();
    let mut wall_delta = Vec::new();
    let (mut supervisor_cpu, mut worker_cpu, mut worker_preempted) = (vec![], vec![], vec![]);
    // OpenMP threads spin for a while after each request; let them settle so
    // one side never competes with the other's spinning threads.
    let settle = Duration::from_millis(400);
    for round in 0..rounds + 1 {
        // Round 0 warms both sides and is not counted.
        std::thread::sleep(settle);
        let req = common::greedy_request(round as u64);
        let started = Instant::now();
        let mut first: Option<f64> = None;
        let mut text = String::new();
        to_engine.send(ToWorker::Generate(req)).expect("engine");
        let stats = loop {
            match events.recv().expect("engine") {
                FromWorker::Token { text: t, .. } => {
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                    text.push_str(&t);
                }
                FromWorker::Done { stats, .. } => break stats,
                FromWorker::Failed { error, .. } => panic!("in-process: {error}"),
                _ => {}
            }
        };
        let wall = started.elapsed().as_secs_f64() * 1e3;

        std::thread::sleep(settle);
        let cpu_before = thread_cpu_ns();
        let worker_before = worker_figures(worker_pid);
        let started = Instant::now();
        let (res, runner_first) = rt.block_on(async {
            let mut stream = Box::pin(runner.execute_stream(PROMPT, Some(options.clone())));
            let mut first = None;
            loop {
                match stream.next().await.expect("a result").expect("runner") {
                    StreamEvent::Token(_) => {
                        first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                    }
                    StreamEvent::Done(r) => break (*r, first),
                    _ => {}
                }
            }
        });
        let runner_wall = started.elapsed().as_secs_f64() * 1e3;
        let cpu = thread_cpu_ns().saturating_sub(cpu_before);
        let worker_after = worker_figures(worker_pid);
        if round == 0 {
            texts = (text, res.response.clone());
            continue;
        }
        inproc
            .gen_tps
            .push((stats.output_tokens - 1) as f64 * 1e3 / stats.generation_ms);
        inproc.ttft_ms.push(first.unwrap_or(f64::NAN));
        inproc.wall_ms.push(wall);
        let m = &res.metadata;
        supervised
            .gen_tps
            .push(m.generation_tokens_per_second.unwrap());
        supervised.ttft_ms.push(runner_first.unwrap_or(f64::NAN));
        supervised.wall_ms.push(runner_wall);
        // The request's path to its first token, both timed by the caller:
        // the supervisor's cost (queue, driver, pipes, process hop) without
        // the generation's own round-to-round noise, which the walls carry.
        overhead.push(runner_first.unwrap_or(f64::NAN) - first.unwrap_or(f64::NAN));
        wall_delta.push(runner_wall - wall);
        let tokens = m.output_tokens.unwrap_or(1).max(1) as f64;
        supervisor_cpu.push(cpu as f64 / 1e3 / tokens);
        // The same worker throughout (a replaced one would make these
        // differences meaningless).
        assert_eq!(
            rt.block_on(runner.worker_pid()),
            Some(worker_pid),
            "the worker was replaced"
        );
        worker_cpu.push(worker_after.0.saturating_sub(worker_before.0) as f64 / 1e3 / tokens);
        worker_preempted.push(worker_after.1.saturating_sub(worker_before.1) as f64 / tokens);
    }
    assert_eq!(texts.0, texts.1, "both sides must generate the same text");
    println!(
        "default model, {threads} threads, {TOKENS} tokens greedy, {rounds} alternated rounds (medians [min–max])"
    );
    line(
        "generation tokens/s",
        "tok/s",
        &inproc.gen_tps,
        &supervised.gen_tps,
    );
    line(
        "time to first token",
        "ms",
        &inproc.ttft_ms,
        &supervised.ttft_ms,
    );
    line(
        "request wall time",
        "ms",
        &inproc.wall_ms,
        &supervised.wall_ms,
    );
    let (o0, o1) = spread(&overhead);
    println!(
        "warm request overhead      median {:.3} ms [{o0:.3}–{o1:.3}] (runner − in-process time to first token of the same round, both timed by the caller: supervisor + queue + driver + pipes + process hop)",
        median(&overhead)
    );
    let (c0, c1) = spread(&supervisor_cpu);
    println!(
        "supervisor CPU per token   median {:.1} µs [{c0:.1}–{c1:.1}] (the thread of the runner's runtime, which runs its driver and the caller, from the scheduler's accounting)",
        median(&supervisor_cpu),
    );
    println!(
        "worker per token           CPU median {:.1} µs, involuntary context switches median {:.2} (its threads, from the kernel's accounting)",
        median(&worker_cpu),
        median(&worker_preempted)
    );
    let (w0, w1) = spread(&wall_delta);
    println!(
        "wall time difference       median {:.3} ms [{w0:.3}–{w1:.3}] (the same, whole requests: carries the generation's noise)",
        median(&wall_delta)
    );
}

/// `streams` requests at once on each side, alternated, `rounds` times.
#[allow(clippy::too_many_arguments)]
fn many(
    rounds: usize,
    threads: u32,
    streams: u32,
    to_engine: &mpsc::Sender<ToWorker>,
    events: &mpsc::Receiver<FromWorker>,
    rt: &tokio::runtime::Runtime,
    runner: &LocalGgufRunner,
    options: &ExecutionOptions,
) {
    let n = streams as usize;
    let settle = Duration::from_millis(400);
    let (mut inproc, mut supervised, mut ratios) = (vec![], vec![], vec![]);
    let (mut first_in, mut first_sup) = (vec![], vec![]);
    let mut next_id = 1_000u64;
    for round in 0..rounds + 1 {
        std::thread::sleep(settle);
        let started = Instant::now();
        let mut firsts = std::collections::HashMap::new();
        let mut tokens = 0u32;
        for i in 0..n {
            let mut req = common::greedy_request(next_id);
            req.prompt = PROMPTS[i % PROMPTS.len()].into();
            next_id += 1;
            to_engine.send(ToWorker::Generate(req)).expect("engine");
        }
        let mut done = 0;
        while done < n {
            match events.recv().expect("engine") {
                FromWorker::Token { id, .. } => {
                    firsts
                        .entry(id)
                        .or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                }
                FromWorker::Done { stats, .. } => {
                    tokens += stats.output_tokens;
                    done += 1;
                }
                FromWorker::Failed { error, .. } => panic!("in-process: {error}"),
                _ => {}
            }
        }
        let a = tokens as f64 / started.elapsed().as_secs_f64();
        let ttft_a = median(&firsts.into_values().collect::<Vec<_>>());

        std::thread::sleep(settle);
        let started = Instant::now();
        let results = rt.block_on(futures::future::join_all((0..n).map(|i| {
            let options = options.clone();
            async move {
                let mut stream =
                    Box::pin(runner.execute_stream(PROMPTS[i % PROMPTS.len()], Some(options)));
                let mut first = None;
                loop {
                    match stream.next().await.expect("a result").expect("runner") {
                        StreamEvent::Token(_) => {
                            first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                        }
                        StreamEvent::Done(r) => {
                            break (r.metadata.output_tokens.unwrap(), first.unwrap())
                        }
                        _ => {}
                    }
                }
            }
        })));
        let b = results.iter().map(|r| r.0).sum::<u32>() as f64 / started.elapsed().as_secs_f64();
        let ttft_b = median(&results.iter().map(|r| r.1).collect::<Vec<_>>());
        if round == 0 {
            continue;
        }
        inproc.push(a);
        supervised.push(b);
        ratios.push(b / a);
        first_in.push(ttft_a);
        first_sup.push(ttft_b);
    }
    println!(
        "default model, {threads} threads, {streams} streams × {TOKENS} tokens greedy, {rounds} alternated rounds (medians [min–max])"
    );
    line("total tokens/s", "tok/s", &inproc, &supervised);
    line("time to first token", "ms", &first_in, &first_sup);
    let (r0, r1) = spread(&ratios);
    println!(
        "round ratio runner/in-process  median {:.3} [{r0:.3}–{r1:.3}]",
        median(&ratios)
    );
}

/// CPU time this thread has run so far, ns, from the scheduler's own
/// accounting (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process's threads: CPU time run, ns, and involuntary context
/// switches (preemptions), summed, from the kernel's accounting.
fn worker_figures(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut sum = (0, 0);
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        sum.0 += read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        sum.1 += read("status")
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    sum
}
