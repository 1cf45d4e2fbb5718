//! `test-fake-worker`: test equipment (`probe` feature). A worker
//! that speaks the protocol over its pipes like the real one, under the
//! real sandbox, but loads no model and misbehaves on purpose, so that the
//! tests can show what the supervisor does with a hostile or broken
//! worker.
//!
//! Its mode is the file name it is started as (a test links it as
//! `DIR/MODE`): the first start of a name behaves as `MODE`, every later
//! one honestly (a marker `DIR/MODE.started`, written before the sandbox
//! closes the file system, remembers), so that "the next request works"
//! can be seen. An honest answer is the text `ok`, one token; an
//! embedding is four times 0.5.
//!
//! Modes that lie about the sandbox, to be refused before any request:
//! `no-sandbox` (claims every layer, applies none), `no-filter` (no
//! system call filter), `no-namespace` (no namespace of its own),
//! `silent` (confined, but says nothing of it before `Ready`).
//!
//! Modes that break the protocol or their limits: `huge` (a 1 MiB
//! frame), `flood` (text far past `max_tokens`), `forged` (text for
//! another request), `overcount` (a token count past `max_tokens`),
//! `embed_for_generate`, `bad_embedding` (five numbers), `embed_twice`,
//! `text_for_embed`, `done_without_embedding`, `after_done` (text after
//! `Done`), `deaf` (reads nothing after the launch), `stderr` (a flood of
//! terminal escapes on stderr), `chatty` (an answer of `max_tokens` ≥ 300
//! tokens sent at once, then waits for its cancel while answering others).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use symbiont_sandbox::{NetworkMode, SyscallPolicy};
use symbiont_slm_protocol::{
    read_message, write_message, Applied, Finish, FromWorker, GenerateRequest, GenerationStats,
    LaunchSpec, Layer, LayerKind, ModelFacts, SandboxPlan, ToWorker,
};

struct Out(BufWriter<io::Stdout>);

impl Out {
    fn send(&mut self, msg: &FromWorker) {
        if write_message(&mut self.0, msg).is_err() {
            std::process::exit(3);
        }
    }

    /// One frame of any bytes, past every limit the encoder would keep.
    fn raw(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).expect("a frame under 4 GiB");
        let ok = self.0.write_all(&len.to_le_bytes()).is_ok()
            && self.0.write_all(body).is_ok()
            && self.0.flush().is_ok();
        if !ok {
            std::process::exit(3);
        }
    }

    fn token(&mut self, id: u64, text: &str) {
        self.send(&FromWorker::Token {
            id,
            text: text.into(),
        });
    }

    fn done(&mut self, id: u64, output_tokens: u32, finish: Finish) {
        self.send(&FromWorker::Done {
            id,
            stats: GenerationStats {
                input_tokens: 3,
                output_tokens,
                prompt_ms: 1.0,
                generation_ms: 1.0,
                total_ms: 2.0,
                cached_tokens: 0,
                finish,
                stop_sequence: None,
                steered_tokens: None,
            },
        });
    }
}

/// Every layer a worker under the default plan reports.
fn every_layer() -> Applied {
    Applied {
        layers: [
            LayerKind::InheritedDescriptorsClosed,
            LayerKind::UserNamespace,
            LayerKind::NetworkNamespace,
            LayerKind::IpcNamespace,
            LayerKind::NoNewPrivs,
            LayerKind::Landlock,
            LayerKind::SeccompDenyList,
        ]
        .into_iter()
        .map(|kind| Layer {
            kind,
            enforced: Ok(()),
        })
        .collect(),
        setup_micros: 1,
    }
}

fn facts(sandbox: Applied) -> ModelFacts {
    ModelFacts {
        protocol_version: symbiont_slm_protocol::PROTOCOL_VERSION,
        worker_version: "fake".into(),
        architecture: Some("llama".into()),
        name: None,
        parameters: 1,
        size_bytes: 1,
        trained_context: 2048,
        context_size: 2048,
        vocab_size: 1,
        chat_template: false,
        embedding_size: 4,
        threads: 1,
        load_ms: 1.0,
        sandbox,
    }
}

/// The plan's sandbox, with the layers `mode` leaves out: what it
/// reports, and what the kernel will show.
fn confine(mode: &str, plan: &SandboxPlan) -> (Option<Applied>, Applied) {
    let mut plan = plan.clone();
    match mode {
        "no-sandbox" => return (Some(every_layer()), every_layer()),
        "no-filter" => plan.syscalls = SyscallPolicy::Off,
        "no-namespace" => {
            plan.user_namespace = false;
            plan.ipc_namespace = false;
            plan.pid_namespace = false;
            plan.network = NetworkMode::Full;
            plan.scratch = None;
            plan.no_child_processes = true;
        }
        _ => {}
    }
    let applied = match symbiont_sandbox::apply(&plan) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake worker: sandbox: {e}");
            std::process::exit(2);
        }
    };
    match mode {
        "silent" => (None, applied),
        "no-filter" | "no-namespace" => (Some(every_layer()), applied),
        _ => (Some(applied.clone()), applied),
    }
}

fn main() {
    let me = PathBuf::from(std::env::args().next().expect("argv[0]"));
    let name = me
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a name")
        .to_string();
    let marker = me.with_file_name(format!("{name}.started"));
    let mode = if marker.exists() {
        "honest".to_string()
    } else {
        name
    };
    std::fs::write(&marker, b"").expect("the marker");

    let mut out = Out(BufWriter::new(io::stdout()));
    let mut input = io::stdin().lock();
    let spec: LaunchSpec = match read_message(&mut input) {
        Ok(ToWorker::Launch(spec)) => spec,
        other => panic!("expected a launch, got {other:?}"),
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        panic!("PR_SET_PDEATHSIG: {e}");
    }
    let (claim, applied) = confine(&mode, &spec.sandbox);
    if let Some(sandbox) = claim.clone() {
        out.send(&FromWorker::Confined { sandbox });
    }
    out.send(&FromWorker::Ready(facts(claim.unwrap_or(applied))));
    if mode == "deaf" {
        std::thread::sleep(Duration::from_secs(3600));
    }
    loop {
        let request = match read_message(&mut input) {
            Ok(ToWorker::Generate(r)) => r,
            Ok(ToWorker::Shutdown) | Err(_) => std::process::exit(0),
            Ok(ToWorker::Ping { nonce }) => {
                out.send(&FromWorker::Pong { nonce });
                continue;
            }
            Ok(_) => continue,
        };
        if request.embed {
            embed(&mut out, &mode, request.id);
        } else {
            generate(&mut out, &mut input, &mode, &request);
        }
    }
}

fn embed(out: &mut Out, mode: &str, id: u64) {
    let vector = vec![0.5; if mode == "bad_embedding" { 5 } else { 4 }];
    if mode == "text_for_embed" {
        out.token(id, "x");
    }
    if mode != "done_without_embedding" {
        out.send(&FromWorker::Embedding {
            id,
            vector: vector.clone(),
        });
    }
    if mode == "embed_twice" {
        out.send(&FromWorker::Embedding { id, vector });
    }
    out.done(id, 0, Finish::EndOfText);
}

fn generate(out: &mut Out, input: &mut impl io::Read, mode: &str, r: &GenerateRequest) {
    let id = r.id;
    out.send(&FromWorker::PromptRead {
        id,
        input_tokens: 3,
        cached_tokens: 0,
    });
    match mode {
        "huge" => {
            let text = "x".repeat(1 << 20);
            out.raw(format!(r#"{{"type":"token","id":{id},"text":"{text}"}}"#).as_bytes());
        }
        "flood" => (0..100_000).for_each(|_| out.token(id, "x")),
        "forged" => out.token(id + 1, "x"),
        "embed_for_generate" => out.send(&FromWorker::Embedding {
            id,
            vector: vec![0.5; 4],
        }),
        "overcount" => {
            out.token(id, "ok");
            out.done(id, 1_000_000, Finish::EndOfText);
        }
        "chatty" if r.max_tokens >= 300 => {
            // Every token at once; then it stops only when told to.
            (0..r.max_tokens).for_each(|_| out.token(id, "x"));
            loop {
                match read_message(input) {
                    Ok(ToWorker::Cancel { id: c }) if c == id => break,
                    Ok(ToWorker::Generate(beside)) => {
                        // A request beside it, answered at once.
                        out.send(&FromWorker::PromptRead {
                            id: beside.id,
                            input_tokens: 3,
                            cached_tokens: 0,
                        });
                        out.token(beside.id, "ok");
                        out.done(beside.id, 1, Finish::EndOfText);
                    }
                    Ok(_) => {}
                    Err(_) => std::process::exit(0),
                }
            }
            out.done(id, r.max_tokens, Finish::Cancelled);
        }
        _ => {
            if mode == "stderr" {
                let mut e = io::stderr().lock();
                for n in 0..100_000 {
                    let _ = writeln!(e, "\x1b[2J\x1b]0;pwned\x07 line {n}");
                }
            }
            out.token(id, "ok");
            out.done(id, 1, Finish::EndOfText);
            if mode == "after_done" {
                out.token(id, "late");
            }
        }
    }
}
