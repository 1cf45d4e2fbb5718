//! `symbi-slm-worker`: runs one GGUF model through llama.cpp for a
//! supervisor (`symbiont-runtime`'s `LocalGgufRunner`).
//!
//! It speaks the `symbiont-slm-protocol` on stdin/stdout; llama.cpp's log
//! goes to stderr, which the supervisor forwards to `tracing`. It never
//! takes a prompt from its command line or environment, and it must never
//! outlive its supervisor.
//!
//! Start-up, in this order:
//! 1. Read the launch spec (the first frame on stdin).
//! 2. Tie our life to the supervisor's (parent-death signal, parent check).
//! 3. Sandbox: `symbiont_sandbox::apply` with the plan from the launch spec,
//!    while the process is still single-threaded and before the model file
//!    is parsed, so that a hostile GGUF meets it. What must come first: the
//!    launch spec is read from stdin (a pipe, already open), and the
//!    parent-death signal is set. The model file is opened by llama.cpp only
//!    after, through the Landlock rule that allows reading it.
//!    Report the layers in force (`Confined`) at once: the supervisor
//!    checks them against the kernel's view of this process.
//! 4. Start the stdin reader thread (commands, cancel, ping).
//! 5. Initialize llama.cpp's backend, load the model (memory-mapped), create
//!    the context.
//! 6. Report `Ready` with the model's facts.
//! 7. Serve requests until `Shutdown` or stdin closes.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc;

use symbi_slm_worker::engine::{self, Sink};
use symbiont_slm_protocol::{
    read_message, write_message, FrameError, FromWorker, LaunchSpec, LoadStage, ToWorker, MODEL_FD,
    PROTOCOL_VERSION,
};

/// Where protocol messages go: stdout, flushed per message.
pub(crate) struct Out {
    w: BufWriter<io::Stdout>,
}

impl Sink for Out {
    /// Sends one message. A broken pipe means the supervisor is gone: exit.
    fn send(&mut self, msg: &FromWorker) {
        if let Err(e) = write_message(&mut self.w, msg) {
            eprintln!("symbi-slm-worker: cannot write to supervisor ({e}); exiting");
            std::process::exit(3);
        }
    }
}

fn main() {
    let mut out = Out {
        w: BufWriter::new(io::stdout()),
    };

    // 1. Launch spec.
    let mut stdin = io::stdin().lock();
    let spec: LaunchSpec = match read_message(&mut stdin) {
        Ok(ToWorker::Launch(spec)) => spec,
        #[cfg(feature = "probe")]
        Ok(ToWorker::Probe { plan, action }) => probe(&mut out, &plan, &action),
        Ok(other) => fail(
            &mut out,
            LoadStage::Launch,
            format!("expected launch, got {other:?}"),
        ),
        Err(e) => fail(
            &mut out,
            LoadStage::Launch,
            format!("reading launch spec: {e}"),
        ),
    };
    drop(stdin);
    if spec.protocol_version != PROTOCOL_VERSION {
        fail(
            &mut out,
            LoadStage::Launch,
            format!(
                "protocol version {} requested, this worker speaks {PROTOCOL_VERSION}",
                spec.protocol_version
            ),
        );
    }

    // 2. Die with the supervisor: SIGKILL when the parent thread exits, and
    // exit now if the parent already changed (it died before prctl ran).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail(
            &mut out,
            LoadStage::Launch,
            format!("PR_SET_PDEATHSIG: {e}"),
        );
    }
    if nix::unistd::getppid().as_raw() as u32 != spec.supervisor_pid {
        std::process::exit(4);
    }

    // 3. Sandbox, before any thread and before the model is parsed.
    let applied = match symbiont_sandbox::apply(&spec.sandbox) {
        Ok(applied) => applied,
        Err(e) => fail(&mut out, LoadStage::Sandbox, e.to_string()),
    };
    // Report the confinement now, before anything untrusted is parsed.
    out.send(&FromWorker::Confined {
        sandbox: applied.clone(),
    });

    // 4. Commands arrive on their own thread so that a cancel is seen
    // between two decode steps.
    let (tx, rx) = mpsc::channel::<ToWorker>();
    let reader = std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                match read_message::<_, ToWorker>(&mut stdin) {
                    Ok(msg) => {
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Err(FrameError::Closed) => return,
                    Err(e) => {
                        eprintln!("symbi-slm-worker: bad frame from supervisor: {e}");
                        return;
                    }
                }
            }
        });
    if let Err(e) = reader {
        fail(
            &mut out,
            LoadStage::Launch,
            format!("spawning reader thread: {e}"),
        );
    }

    // 5-6. Load and report.
    // The model is the descriptor the supervisor opened and checked; the
    // sandbox allows reading it and nothing else of the model's directory.
    let model_file = std::path::PathBuf::from(format!("/proc/self/fd/{MODEL_FD}"));
    let engine = match engine::Engine::load(&spec, &model_file, applied) {
        Ok(engine) => engine,
        Err((stage, detail)) => fail(&mut out, stage, detail),
    };
    out.send(&FromWorker::Ready(engine.facts().clone()));

    // 7. Serve.
    engine.serve(&rx, &mut out);
    let _ = out.w.flush();
}

/// Probe mode (test equipment, `probe` feature): the same sandbox as a
/// launch (after the same parent-death signal), then one action, reported.
#[cfg(feature = "probe")]
fn probe(
    out: &mut Out,
    plan: &symbiont_slm_protocol::SandboxPlan,
    action: &symbiont_slm_protocol::ProbeAction,
) -> ! {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail(out, LoadStage::Launch, format!("PR_SET_PDEATHSIG: {e}"));
    }
    let applied = match symbiont_sandbox::apply(plan) {
        Ok(applied) => applied,
        Err(e) => fail(out, LoadStage::Sandbox, e.to_string()),
    };
    let outcome = symbiont_sandbox_probe::run(action);
    out.send(&FromWorker::ProbeResult { applied, outcome });
    let _ = out.w.flush();
    std::process::exit(0);
}

fn fail(out: &mut Out, stage: LoadStage, detail: String) -> ! {
    eprintln!("symbi-slm-worker: {stage:?} failed: {detail}");
    out.send(&FromWorker::LoadFailed { stage, detail });
    std::process::exit(2);
}
