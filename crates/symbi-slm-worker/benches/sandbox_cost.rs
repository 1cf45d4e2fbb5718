//! What the sandbox costs: the same worker binary, the same protocol, the
//! same model and threads, with the sandbox plan `LocalGgufRunner` applies
//! and with an unconfined plan, measured in one run.
//!
//! 1. Set-up: spawn → sandbox applied. Spawns the worker in probe mode
//!    (a cheap probe) many times per plan; prints the worker's own measure
//!    of `symbiont_sandbox::apply` and the wall time from spawn to the
//!    answer, sandboxed and unconfined.
//! 2. Generation: two loaded workers, one sandboxed (the `secure` profile's
//!    strict seccomp allow-list, Landlock, namespaces, rlimits, with the
//!    thread count and nice value of the unconfined side) and one
//!    unconfined; requests alternate between them; prints generation
//!    tokens/s of each and the ratio.
//!
//! Targets (issue 4): set-up < 10 ms; tokens/s ratio ≥ 0.98.
//!
//! `cargo bench -p symbi-slm-worker --bench sandbox_cost [-- ROUNDS THREADS]`

mod common;

use common::{median, summary, TOKENS};
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use symbiont_runtime::config::SandboxProfile;
use symbiont_runtime::models::sandbox_plan_for;
use symbiont_slm_protocol::{
    read_message, write_message, FromWorker, LaunchSpec, ProbeAction, SandboxPlan, ToWorker,
    MODEL_FD,
};

const WORKER: &str = env!("CARGO_BIN_EXE_symbi-slm-worker");

/// Starts a worker with the model as its descriptor `MODEL_FD`, as the
/// runner starts it (both sides, so that only the plan differs).
fn spawn(model: &Path) -> (Child, ChildStdin, ChildStdout) {
    let mut cmd = Command::new(WORKER);
    let file = std::fs::File::open(model).expect("open the model");
    symbiont_sandbox::spawn::inherit_fd(&mut cmd, file.into(), MODEL_FD);
    let mut child = cmd
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdin, stdout)
}

/// Spawn → probe answered; returns (wall ms, worker's apply µs).
fn setup_once(plan: &SandboxPlan, model: &Path, scratch: &Path) -> (f64, f64) {
    let started = Instant::now();
    let (mut child, mut stdin, mut stdout) = spawn(model);
    write_message(
        &mut stdin,
        &ToWorker::Probe {
            plan: plan.clone(),
            action: ProbeAction::ListDir(scratch.to_path_buf()),
        },
    )
    .unwrap();
    stdin.flush().unwrap();
    let msg: FromWorker = read_message(&mut stdout).expect("probe result");
    let wall = started.elapsed().as_secs_f64() * 1e3;
    drop(stdin);
    child.wait().unwrap();
    match msg {
        FromWorker::ProbeResult { applied, outcome } => {
            outcome.expect("the probe lists its own scratch dir");
            assert!(
                applied.gaps().next().is_none(),
                "gaps: {:?}",
                applied.layers
            );
            (wall, applied.setup_micros as f64)
        }
        other => panic!("unexpected {other:?}"),
    }
}

struct Loaded {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

fn load(model: &Path, threads: u32, plan: SandboxPlan) -> Loaded {
    let (child, mut stdin, mut stdout) = spawn(model);
    let spec = LaunchSpec {
        protocol_version: symbiont_slm_protocol::PROTOCOL_VERSION,
        model_path: model.to_path_buf(),
        threads,
        context_size: 2048,
        cache_tokens: 2048,
        batch_size: 512,
        slots: 1,
        supervisor_pid: std::process::id(),
        sandbox: plan,
    };
    write_message(&mut stdin, &ToWorker::Launch(spec)).unwrap();
    stdin.flush().unwrap();
    match read_message::<_, FromWorker>(&mut stdout).expect("confined") {
        FromWorker::Confined { .. } => {}
        other => panic!("worker did not report its sandbox: {other:?}"),
    }
    match read_message::<_, FromWorker>(&mut stdout).expect("ready") {
        FromWorker::Ready(_) => {}
        other => panic!("worker did not load: {other:?}"),
    }
    Loaded {
        child,
        stdin,
        stdout,
    }
}

/// One greedy request; returns (generation tok/s, text).
fn generate(w: &mut Loaded, id: u64) -> (f64, String) {
    let req = common::greedy_request(id);
    write_message(&mut w.stdin, &ToWorker::Generate(req)).unwrap();
    w.stdin.flush().unwrap();
    let mut text = String::new();
    loop {
        match read_message::<_, FromWorker>(&mut w.stdout).expect("event") {
            FromWorker::Token { text: t, .. } => text.push_str(&t),
            FromWorker::Done { stats, .. } => {
                let tps = (stats.output_tokens - 1) as f64 * 1e3 / stats.generation_ms;
                return (tps, text);
            }
            FromWorker::Failed { error, .. } => panic!("generation failed: {error:?}"),
            _ => {}
        }
    }
}

fn main() {
    let (rounds, threads, model) = common::setup(12);
    let scratch = tempfile::tempdir().unwrap();
    // The secure profile, with the unconfined side's threads and priority
    // so that only the confinement differs.
    let mut profile = SandboxProfile::secure();
    profile.resources.max_cpu_cores = threads as f32;
    profile.process_limits.process_priority = 0;
    let confined = sandbox_plan_for(&profile, &model, Some(scratch.path()), threads).unwrap();
    // Unconfined but for keeping the model's descriptor, which the worker
    // loads in both cases.
    let mut unconfined = SandboxPlan::unconfined();
    unconfined.read_fds = vec![MODEL_FD];

    // 1. Set-up.
    let spawns = 40;
    let (mut wall_c, mut apply_c, mut wall_u) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..spawns {
        let (w, a) = setup_once(&confined, &model, scratch.path());
        wall_c.push(w);
        apply_c.push(a);
        wall_u.push(setup_once(&unconfined, &model, scratch.path()).0);
    }
    println!("sandbox set-up, {spawns} spawns per plan (median [min–max], ms):");
    println!(
        "  apply() inside the worker        {}",
        summary(&apply_c, 1e-3)
    );
    println!(
        "  spawn → probe answered, secure   {}",
        summary(&wall_c, 1.0)
    );
    println!(
        "  spawn → probe answered, none     {}",
        summary(&wall_u, 1.0)
    );
    println!(
        "  difference of medians            {:.3}",
        median(&wall_c) - median(&wall_u)
    );

    // 2. Generation.
    let mut c = load(&model, threads, confined);
    let mut u = load(&model, threads, unconfined);
    let settle = Duration::from_millis(400);
    let (mut tps_c, mut tps_u) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        std::thread::sleep(settle);
        let (a, ta) = generate(&mut u, round as u64);
        std::thread::sleep(settle);
        let (b, tb) = generate(&mut c, round as u64);
        assert_eq!(ta, tb, "both sides must generate the same text");
        if round > 0 {
            tps_u.push(a);
            tps_c.push(b);
        }
    }
    let (mu, mc) = (median(&tps_u), median(&tps_c));
    println!(
        "generation, default model, {threads} threads, {TOKENS} tokens greedy, {rounds} alternated rounds (median [min–max], tok/s):"
    );
    println!("  unconfined          {}", summary(&tps_u, 1.0));
    println!("  sandboxed (secure)  {}", summary(&tps_c, 1.0));
    println!("  ratio of medians    {:.3}", mc / mu);
    for w in [&mut c, &mut u] {
        let _ = write_message(&mut w.stdin, &ToWorker::Shutdown);
        let _ = w.stdin.flush();
        let _ = w.child.wait();
    }
}
