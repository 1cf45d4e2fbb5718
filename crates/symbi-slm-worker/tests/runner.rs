//! LocalGgufRunner end to end: the real worker binary and the default model.
//!
//! These tests need the default model (`scripts/setup.sh` fetches it). When
//! it is missing they fail and say so; they are never skipped.

// Each test runs on its own runtime and holds the SERIAL guard for its whole
// body on purpose: that serializes tests, it cannot deadlock a runtime.
#![allow(clippy::await_holding_lock)]

mod common;

use common::{long_answer, model_path, profile, serial, worker};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile};
use symbiont_runtime::models::{
    defaults, ExecutionOptions, FinishReason, LocalGgufRunner, PromptMode, ResourceLimit,
    SlmRunner, SlmRunnerError, StreamEvent, WorkerLoss,
};

async fn runner() -> LocalGgufRunner {
    runner_with(profile()).await
}

async fn runner_with(profile: SandboxProfile) -> LocalGgufRunner {
    LocalGgufRunner::builder(model_path(), profile, ModelResourceRequirements::default())
        .worker_path(worker())
        .build()
        .await
        .expect("runner")
}

/// A runner whose audit events go to a file in `dir`.
async fn audited_runner(dir: &tempfile::TempDir) -> LocalGgufRunner {
    LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .audit_log(symbiont_runtime::audit::AuditLog::to_file(dir.path().join("audit.jsonl")).unwrap())
    .labels("smol", "standard")
    .build()
    .await
    .expect("runner")
}

/// The audit events written to `dir` so far.
fn audit_events(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn greedy(max_tokens: u32) -> ExecutionOptions {
    ExecutionOptions {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

type EventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<StreamEvent, SlmRunnerError>> + Send>>;

/// Starts a streamed request and waits for its first piece of text: the
/// worker is then generating (an event, not a guess at how long a load or
/// a prompt takes on this host). Returns the rest of the stream.
async fn generating(r: &LocalGgufRunner, prompt: &str, options: ExecutionOptions) -> EventStream {
    let mut stream: EventStream = Box::pin(r.execute_stream(prompt, Some(options)));
    match stream.next().await {
        Some(Ok(StreamEvent::Token(_))) => stream,
        other => panic!("expected a first token, got {other:?}"),
    }
}

/// The error a stream ends with (its text is skipped).
async fn stream_error(mut stream: EventStream) -> SlmRunnerError {
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(StreamEvent::Token(_)) => {}
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => return e,
        }
    }
    panic!("the stream ended without a result")
}

#[tokio::test]
async fn generates_text_with_measured_metadata() {
    let _serial = serial();
    let r = runner().await;
    let res = r
        .execute("What is the capital of France?", Some(greedy(24)))
        .await
        .unwrap();
    assert!(!res.response.trim().is_empty());
    let m = &res.metadata;
    // SmolLM2's template adds a default system prompt: far more tokens than
    // the seven words of the question.
    assert!(m.input_tokens.unwrap() > 20, "{m:?}");
    let out = m.output_tokens.unwrap();
    assert!((1..=24).contains(&out), "{m:?}");
    assert!(m.time_to_first_token_ms.unwrap() > 0.0);
    assert!(m.execution_time_ms >= m.time_to_first_token_ms.unwrap());
    assert!(m.model_load_ms.is_some(), "first request loads the model");
    let peak = m.worker_peak_memory_mb.unwrap();
    assert!((50.0..2048.0).contains(&peak), "peak {peak} MB");
    assert!(m.finish_reason.is_some());
    if out > 2 {
        assert!(m.generation_tokens_per_second.unwrap() > 1.0);
    }
    // The second request reuses the loaded worker.
    let pid = r.worker_pid().await.unwrap();
    let res2 = r.execute("Say hi.", Some(greedy(4))).await.unwrap();
    assert!(res2.metadata.model_load_ms.is_none());
    assert_eq!(r.worker_pid().await, Some(pid));
    let info = r.get_info();
    assert_eq!(info.runner_type, "LocalGgufRunner");
    assert_eq!(
        info.model.get("architecture").map(String::as_str),
        Some("llama")
    );
    assert_eq!(
        info.worker_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn same_seed_same_text_and_raw_mode() {
    let _serial = serial();
    let r = runner().await;
    let opts = ExecutionOptions {
        temperature: Some(0.9),
        seed: Some(42),
        max_tokens: Some(20),
        ..Default::default()
    };
    let a = r
        .execute("Write a word.", Some(opts.clone()))
        .await
        .unwrap();
    let b = r
        .execute("Write a word.", Some(opts.clone()))
        .await
        .unwrap();
    assert_eq!(a.response, b.response);
    let other: Vec<String> = futures::future::join_all((43..46).map(|seed| {
        let r = r.clone();
        let o = ExecutionOptions {
            seed: Some(seed),
            ..opts.clone()
        };
        async move { r.execute("Write a word.", Some(o)).await.unwrap().response }
    }))
    .await;
    assert!(
        other.iter().any(|t| t != &a.response),
        "different seeds, all the same text"
    );

    let raw = r
        .execute(
            "The capital of France is",
            Some(ExecutionOptions {
                prompt_mode: PromptMode::Raw,
                ..greedy(8)
            }),
        )
        .await
        .unwrap();
    // No template: the prompt is a handful of tokens.
    assert!(
        raw.metadata.input_tokens.unwrap() < 10,
        "{:?}",
        raw.metadata
    );
}

#[tokio::test]
async fn stop_sequences_and_max_tokens_set_the_finish_reason() {
    let _serial = serial();
    let r = runner().await;
    let res = r
        .execute("Count from 1 to 20, separated by commas.", Some(greedy(8)))
        .await
        .unwrap();
    assert_eq!(res.metadata.finish_reason, Some(FinishReason::Length));
    assert_eq!(res.metadata.output_tokens, Some(8));

    let full = r
        .execute("Count from 1 to 20, separated by commas.", Some(greedy(40)))
        .await
        .unwrap();
    // Stop at the first "5" the model writes.
    let cut = full.response.find('5').expect("the model counts past 5");
    let res = r
        .execute(
            "Count from 1 to 20, separated by commas.",
            Some(ExecutionOptions {
                stop: vec!["5".into()],
                ..greedy(40)
            }),
        )
        .await
        .unwrap();
    assert_eq!(res.metadata.finish_reason, Some(FinishReason::Stop));
    assert_eq!(res.metadata.stop_sequence.as_deref(), Some("5"));
    assert_eq!(res.response, full.response[..cut]);
}

#[tokio::test]
async fn streaming_yields_the_same_text_as_execute() {
    let _serial = serial();
    let r = runner().await;
    let whole = r
        .execute("Name three colors.", Some(greedy(24)))
        .await
        .unwrap();
    let mut stream = Box::pin(r.execute_stream("Name three colors.", Some(greedy(24))));
    let mut pieces = Vec::new();
    let mut done = None;
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            StreamEvent::Token(t) => pieces.push(t),
            StreamEvent::Done(res) => done = Some(res),
            _ => unreachable!(),
        }
    }
    let done = done.expect("a Done event");
    assert!(pieces.len() > 1, "streamed in pieces");
    assert_eq!(pieces.concat(), whole.response);
    assert_eq!(done.response, whole.response);
}

#[tokio::test]
async fn timeout_stops_the_generation_and_the_next_request_works() {
    let _serial = serial();
    let audit = tempfile::tempdir().unwrap();
    let r = audited_runner(&audit).await;
    r.preload().await.unwrap();
    let started = Instant::now();
    let err = r
        .execute(
            "Write a very long story about the sea.",
            Some(ExecutionOptions {
                timeout: Some(Duration::from_millis(700)),
                max_tokens: Some(100_000),
                response_format: long_answer(),
                ..greedy(0)
            }),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, SlmRunnerError::ExecutionTimeout { seconds } if (seconds - 0.7).abs() < 1e-6),
        "{err}"
    );
    // The worker answers the cancel within one decode step; the bound is
    // the deadline plus the longest grace, so a loaded host passes too.
    let bound = Duration::from_millis(700) + defaults::CANCEL_GRACE_MAX;
    assert!(took < bound, "returned after {took:?}");
    // The same worker serves the next request: it answered the cancel and
    // was not killed.
    let pid = r.worker_pid().await.expect("the worker is still loaded");
    let ok = r.execute("Say yes.", Some(greedy(4))).await.unwrap();
    assert!(ok.metadata.output_tokens.unwrap() >= 1);
    assert!(
        ok.metadata.model_load_ms.is_none(),
        "the worker was replaced"
    );
    assert_eq!(r.worker_pid().await, Some(pid));
    // One audit event: the time limit, named by its config key.
    let events = audit_events(&audit);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "limit_hit");
    assert_eq!(
        events[0]["control"],
        "process_limits.max_execution_time_seconds"
    );
}

#[tokio::test]
async fn killed_worker_is_reported_and_replaced() {
    let _serial = serial();
    let audit = tempfile::tempdir().unwrap();
    let r = audited_runner(&audit).await;
    r.preload().await.unwrap();
    let pid = r.worker_pid().await.unwrap();
    let stream = generating(&r, "Write a long essay about mountains.", greedy(2000)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = stream_error(stream).await;
    match &err {
        SlmRunnerError::WorkerCrashed {
            cause: WorkerLoss::Signalled { signal },
            ..
        } => assert_eq!(*signal, nix::sys::signal::Signal::SIGKILL as i32, "{err}"),
        other => panic!("expected WorkerCrashed, got {other}"),
    }
    let ok = r.execute("Say yes.", Some(greedy(4))).await.unwrap();
    assert!(
        ok.metadata.model_load_ms.is_some(),
        "a fresh worker loaded the model"
    );
    assert_ne!(r.worker_pid().await, Some(pid));
    let events = audit_events(&audit);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "worker_crash");
    assert!(
        events[0]["detail"].as_str().unwrap().contains("SIGKILL"),
        "{events:?}"
    );
}

#[tokio::test]
async fn sixteen_concurrent_requests_each_get_their_own_text() {
    let _serial = serial();
    let r = Arc::new(runner().await);
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("Repeat exactly this number: {i}"))
        .collect();
    // Expected answers, one by one.
    let mut expected = Vec::new();
    for p in &prompts {
        expected.push(r.execute(p, Some(greedy(6))).await.unwrap().response);
    }
    let results = futures::future::join_all(prompts.iter().map(|p| {
        let r = r.clone();
        let p = p.clone();
        async move { r.execute(&p, Some(greedy(6))).await.unwrap().response }
    }))
    .await;
    assert_eq!(results, expected);
}

#[tokio::test]
async fn queue_capacity_is_enforced() {
    let _serial = serial();
    let r = LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .queue_capacity(2)
    .build()
    .await
    .unwrap();
    r.preload().await.unwrap();
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.execute("Tell a story.", Some(greedy(30))).await })
        })
        .collect();
    let mut overloaded = 0;
    for j in jobs {
        if let Err(SlmRunnerError::Overloaded { capacity: 2, .. }) = j.await.unwrap() {
            overloaded += 1;
        }
    }
    assert_eq!(overloaded, 2);
}

#[tokio::test]
async fn bad_input_is_invalid_input() {
    let _serial = serial();
    let r = runner().await;
    let bad = [
        ExecutionOptions {
            temperature: Some(-1.0),
            ..Default::default()
        },
        ExecutionOptions {
            top_p: Some(0.0),
            ..Default::default()
        },
        ExecutionOptions {
            timeout: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
        ExecutionOptions {
            custom_parameters: [("--model".to_string(), "/etc/passwd".to_string())].into(),
            ..Default::default()
        },
    ];
    for o in bad {
        assert!(
            matches!(
                r.execute("hi", Some(o.clone())).await,
                Err(SlmRunnerError::InvalidInput { .. })
            ),
            "{o:?}"
        );
    }
    assert!(matches!(
        r.execute("", None).await,
        Err(SlmRunnerError::InvalidInput { .. })
    ));
    // None of this started a worker.
    assert!(r.worker_pid().await.is_none());
    // Too long for the context: found by the tokenizer, in the worker.
    let long = "word ".repeat(5000);
    match r.execute(&long, Some(greedy(4))).await {
        Err(SlmRunnerError::ContextLengthExceeded {
            prompt_tokens,
            context_size,
        }) => {
            assert_eq!(context_size, 2048);
            assert!(prompt_tokens >= 5000, "{prompt_tokens}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_unloads_an_idle_worker() {
    let _serial = serial();
    let r = LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .keep_alive(Duration::from_millis(300))
    .build()
    .await
    .unwrap();
    r.health_check().await.unwrap();
    assert!(r.worker_pid().await.is_some());
    // Wait for the unload (polling, with a generous cap for a busy host).
    let give_up = Instant::now() + Duration::from_secs(30);
    while r.worker_pid().await.is_some() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.worker_pid().await.is_none(), "idle worker still loaded");

    let once = LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .keep_alive(Duration::ZERO)
    .build()
    .await
    .unwrap();
    once.execute("Hi", Some(greedy(2))).await.unwrap();
    assert!(
        once.worker_pid().await.is_none(),
        "keep_alive 0 unloads after the request"
    );
}

#[tokio::test]
async fn broken_model_files_are_invalid_model_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(model_path()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.gguf", vec![]),
        ("truncated.gguf", real[..real.len() / 2].to_vec()),
        ("header-only.gguf", real[..4096].to_vec()),
        ("wrong-magic.gguf", {
            let mut v = real[..1 << 20].to_vec();
            v[..4].copy_from_slice(b"GGML");
            v
        }),
        ("absurd-count.gguf", {
            let mut v = real[..1 << 20].to_vec();
            v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            v
        }),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        match LocalGgufRunner::new(&p, profile(), ModelResourceRequirements::default()).await {
            Err(SlmRunnerError::InvalidModelFile { path, reason }) => {
                assert_eq!(path, p);
                assert!(!reason.is_empty());
            }
            other => panic!("{name}: expected InvalidModelFile, got {other:?}"),
        }
    }
    assert!(matches!(
        LocalGgufRunner::new(
            dir.path().join("none.gguf"),
            profile(),
            ModelResourceRequirements::default()
        )
        .await,
        Err(SlmRunnerError::ModelFileNotFound { .. })
    ));
    assert!(matches!(
        LocalGgufRunner::new(dir.path(), profile(), ModelResourceRequirements::default()).await,
        Err(SlmRunnerError::InvalidModelFile { .. })
    ));
    let mut tiny = profile();
    tiny.resources.max_memory_mb = 50;
    assert!(matches!(
        LocalGgufRunner::new(model_path(), tiny, ModelResourceRequirements::default()).await,
        Err(SlmRunnerError::ResourceLimitExceeded { .. })
    ));
}

/// The model is opened by the supervisor for every worker, without
/// following a link and only if it is a regular file, and the worker gets
/// that descriptor: a model path swapped for a link or a fifo after the
/// runner was built loads nothing (and does not hang), while a link given
/// at build time is resolved once and works.
#[tokio::test]
async fn a_swapped_model_path_loads_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    let place = |file: &Path| {
        let _ = std::fs::remove_file(file);
        if std::fs::hard_link(model_path(), file).is_err() {
            std::fs::copy(model_path(), file).unwrap();
        }
    };
    place(&file);
    let link = dir.path().join("link.gguf");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let r = LocalGgufRunner::builder(&link, profile(), ModelResourceRequirements::default())
        .worker_path(worker())
        .keep_alive(Duration::ZERO)
        .build()
        .await
        .expect("a link given at build time is resolved");
    // The allowed twin: the resolved file loads (and, keep-alive 0,
    // unloads: every preload below starts a worker afresh).
    r.preload().await.expect("the resolved model loads");
    assert!(r.worker_pid().await.is_none());

    // Now a link to a readable file that is not the model.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
    match r.preload().await {
        Err(SlmRunnerError::InvalidModelFile { reason, .. }) => {
            assert!(reason.contains("symbolic link"), "{reason}")
        }
        other => panic!("a link swapped in must be refused, got {other:?}"),
    }
    // A fifo: opening it must neither block nor pass.
    std::fs::remove_file(&file).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&file)
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    match r.preload().await {
        Err(SlmRunnerError::InvalidModelFile { reason, .. }) => {
            assert!(reason.contains("not a regular file"), "{reason}")
        }
        other => panic!("a fifo swapped in must be refused, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "opening a fifo hung"
    );
    // The model back in place: it loads again.
    place(&file);
    r.preload().await.expect("the model back in place loads");
}

/// The worker dies with its supervisor's process, not with the thread that
/// happened to start it: a load driven from a short-lived thread (here
/// `Handle::block_on` on a thread that then ends) leaves a worker that
/// lives on and serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_outlives_the_thread_that_started_it() {
    let _serial = serial();
    let r = runner().await;
    let handle = tokio::runtime::Handle::current();
    let r2 = r.clone();
    std::thread::spawn(move || handle.block_on(r2.preload()))
        .join()
        .unwrap()
        .expect("preload");
    let pid = r.worker_pid().await.expect("a loaded worker");
    // A parent-death signal tied to that thread would have killed it by
    // now; give it time to be delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or("").chars().next();
    assert!(
        matches!(state, Some('R' | 'S' | 'D')),
        "worker {pid} is not alive (state {state:?})"
    );
    let out = r
        .execute("Say hi.", Some(greedy(4)))
        .await
        .expect("request");
    assert!(out.metadata.output_tokens.unwrap_or(0) > 0);
    assert_eq!(r.worker_pid().await, Some(pid), "the same worker served it");
}

/// The reference README's "Basic Model Execution", with the only changes
/// needed to run here: the config comes from TOML (not `Slm::default()`,
/// which defines no model), and the model id and file are the default
/// model's. The calls, types and imports are the reference's.
#[tokio::test]
async fn reference_basic_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    let _serial = serial();
    use std::time::Duration;
    use symbiont_runtime::config::Slm;
    use symbiont_runtime::models::{ExecutionOptions, LocalGgufRunner, ModelCatalog};

    let model_file = model_path();
    std::env::set_var("SYMBI_SLM_WORKER", worker());
    let toml = format!(
        "[slm]\nenabled = true\ndefault_sandbox_profile = \"secure\"\n\
         [[slm.model_allow_lists.global_models]]\nid = \"llama2-7b\"\nname = \"Llama 2 7B\"\n\
         provider = {{ LocalFile = {{ file_path = \"{}\" }} }}\n\
         capabilities = [\"TextGeneration\", \"Reasoning\"]\n\
         [slm.model_allow_lists.global_models.resource_requirements]\nmin_memory_mb = 256\n\
         [slm.sandbox_profiles.secure.process_limits]\nprocess_priority = 0\n",
        model_file.display()
    );
    // The only change to the built-in `secure` profile: its nice 19 would
    // leave the worker a sliver of a core on a busy host (by design, see
    // the README), and 256 tokens would not fit the example's 30 s. The
    // example's calls are what this test is about, not the scheduler.

    // Initialize catalog from configuration
    let slm_config = Slm::from_toml_str(&toml)?;
    let catalog = ModelCatalog::new(slm_config)?;

    // Get model and create runner
    let model = catalog.get_model("llama2-7b").unwrap();
    let sandbox_profile = catalog.get_default_sandbox_profile().unwrap();

    let runner = LocalGgufRunner::new(
        &model_file,
        sandbox_profile.clone(),
        model.resource_requirements.clone(),
    )
    .await?;

    // Execute with custom options
    let options = ExecutionOptions {
        timeout: Some(Duration::from_secs(30)),
        temperature: Some(0.7),
        max_tokens: Some(256),
        ..Default::default()
    };

    let result = runner
        .execute("Explain quantum computing", Some(options))
        .await?;
    println!("Response: {}", result.response);
    assert!(!result.response.is_empty());
    Ok(())
}

#[tokio::test]
async fn generation_works_under_the_secure_profile() {
    let _serial = serial();
    let r = runner_with(SandboxProfile::secure()).await;
    let res = r.execute("Name a color.", Some(greedy(8))).await.unwrap();
    assert!(!res.response.is_empty());
    let layers = &res.metadata.sandbox_layers;
    for want in [
        "landlock",
        "seccomp allow-list",
        "network namespace",
        "memory: RLIMIT_AS",
    ] {
        assert!(
            layers.iter().any(|l| l == want),
            "{want} not in force: {layers:?}"
        );
    }
    assert!(
        res.metadata.sandbox_gaps.is_empty(),
        "{:?}",
        res.metadata.sandbox_gaps
    );
    assert_eq!(r.get_info().sandbox_layers, *layers);
}

#[tokio::test]
async fn memory_limit_is_reported_as_such() {
    let _serial = serial();
    // The file (93 MB) fits, the model with its context does not.
    let mut p = SandboxProfile::secure();
    p.resources.max_memory_mb = 120;
    let reqs = ModelResourceRequirements {
        min_memory_mb: 100,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let r = LocalGgufRunner::builder(model_path(), p, reqs)
        .worker_path(worker())
        .audit_log(symbiont_runtime::audit::AuditLog::to_file(&log).unwrap())
        .labels("smol", "tight")
        .check_memory_estimate(false)
        .build()
        .await
        .unwrap();
    // A runner built directly: its embedder names the agent.
    #[allow(deprecated)]
    let options = ExecutionOptions {
        agent_id: Some("agent-7".into()),
        ..greedy(4)
    };
    match r.execute("Hi", Some(options)).await {
        Err(SlmRunnerError::ResourceLimitExceeded { limit, detail }) => {
            assert_eq!(
                limit,
                symbiont_runtime::models::ResourceLimit::Memory,
                "{detail}"
            );
            assert!(detail.contains("max_memory_mb = 120"), "{detail}");
        }
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    // The audit log names the limit, the agent, the model and the profile.
    let text = std::fs::read_to_string(&log).unwrap();
    let ev: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(ev["kind"], "limit_hit", "{text}");
    assert_eq!(ev["control"], "resources.max_memory_mb");
    assert_eq!(ev["agent"], "agent-7");
    assert_eq!(ev["model"], "smol");
    assert_eq!(ev["profile"], "tight");
}

/// Under RLIMIT_AS the default model needs about 385 MB of address space
/// (VmPeak, one thread) for a peak resident 170 MB. Limits below that fail
/// at different points (the weights' mapping, a compute buffer that
/// llama.cpp asserts on): each is a memory limit, never a plain crash.
#[tokio::test]
async fn every_memory_shortfall_is_a_memory_limit() {
    let _serial = serial();
    for mb in [150, 250, 350] {
        let mut p = SandboxProfile::secure();
        p.resources.max_memory_mb = mb;
        let r = LocalGgufRunner::builder(
            model_path(),
            p,
            ModelResourceRequirements {
                min_memory_mb: 100,
                ..Default::default()
            },
        )
        .worker_path(worker())
        .check_memory_estimate(false)
        .build()
        .await
        .unwrap();
        match r.execute("Hi", Some(greedy(4))).await {
            Err(SlmRunnerError::ResourceLimitExceeded { limit, detail }) => {
                assert_eq!(
                    limit,
                    symbiont_runtime::models::ResourceLimit::Memory,
                    "{mb}: {detail}"
                );
            }
            other => panic!("{mb} MB: expected a memory limit error, got {other:?}"),
        }
    }
    // The allowed case: the secure profile's 512 MB is enough.
    let r = runner_with(SandboxProfile::secure()).await;
    assert!(r.execute("Hi", Some(greedy(4))).await.is_ok());
}

/// A conversation's earlier turns go through the chat template into the
/// prompt (measured in tokens); misuse is `InvalidInput`.
#[tokio::test]
async fn chat_history_is_part_of_the_prompt() {
    use symbiont_runtime::models::{ChatMessage, ChatRole, PromptMode};
    let _serial = serial();
    let r = runner().await;
    let alone = r
        .execute("What is my name?", Some(greedy(4)))
        .await
        .unwrap();
    let history = vec![
        ChatMessage::new(ChatRole::System, "You are terse."),
        ChatMessage::new(ChatRole::User, "My name is Zed."),
        ChatMessage::new(ChatRole::Assistant, "Hello, Zed."),
    ];
    let with = r
        .execute(
            "What is my name?",
            Some(ExecutionOptions {
                history: history.clone(),
                ..greedy(4)
            }),
        )
        .await
        .unwrap();
    let (a, w) = (
        alone.metadata.input_tokens.unwrap(),
        with.metadata.input_tokens.unwrap(),
    );
    // The two turns and their template markup; the custom system prompt
    // replaces the template's default one, so compare with a margin.
    assert!(w > a + 5, "with history {w} tokens, alone {a}");
    for (opts, what) in [
        (
            ExecutionOptions {
                history: history.clone(),
                prompt_mode: PromptMode::Raw,
                ..greedy(4)
            },
            "raw with history",
        ),
        (
            ExecutionOptions {
                history: vec![
                    ChatMessage::new(ChatRole::User, "Hi"),
                    ChatMessage::new(ChatRole::System, "late"),
                ],
                ..greedy(4)
            },
            "system turn after the first",
        ),
    ] {
        match r.execute("Hi", Some(opts)).await {
            Err(SlmRunnerError::InvalidInput { field, .. }) => {
                assert_eq!(field, "history", "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A worker that does not answer a cancel (here: stopped with SIGSTOP) is
/// killed with its process group after the grace period; the caller gets
/// the timeout, the audit log the kill, and the next request a new worker.
#[tokio::test]
async fn unresponsive_worker_is_killed_at_the_deadline() {
    let _serial = serial();
    let audit = tempfile::tempdir().unwrap();
    let r = audited_runner(&audit).await;
    r.preload().await.unwrap();
    let pid = r.worker_pid().await.unwrap();
    let started = Instant::now();
    let timeout = Duration::from_secs(5);
    let stream = generating(
        &r,
        "Write a very long story about the sea.",
        ExecutionOptions {
            timeout: Some(timeout),
            max_tokens: Some(100_000),
            response_format: long_answer(),
            ..greedy(0)
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let err = stream_error(stream).await;
    let took = started.elapsed();
    assert!(
        matches!(err, SlmRunnerError::ExecutionTimeout { .. }),
        "{err}"
    );
    // The stopped worker is gone (killed, reaped), not left behind.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "worker {pid} still exists"
    );
    let events = audit_events(&audit);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["kill", "limit_hit"], "{kinds:?}");
    // Killed at the deadline plus the grace the kill event names (measured
    // from this worker's decode steps), with slack for reaping on a busy
    // host; never left running.
    let detail = events[0]["detail"].as_str().unwrap();
    let grace_ms: u64 = detail
        .split("within ")
        .nth(1)
        .and_then(|t| t.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no grace in {detail}"));
    let grace = Duration::from_millis(grace_ms);
    assert!(
        (defaults::CANCEL_GRACE_MIN..=defaults::CANCEL_GRACE_MAX).contains(&grace),
        "{detail}"
    );
    assert!(
        took >= timeout + grace,
        "killed early, after {took:?}: {detail}"
    );
    assert!(
        took < timeout + grace + Duration::from_secs(3),
        "returned after {took:?}: {detail}"
    );
    let ok = r.execute("Say yes.", Some(greedy(4))).await.unwrap();
    assert!(ok.metadata.model_load_ms.is_some(), "a fresh worker");
}

/// A control the host cannot give a lenient profile is a gap: the request
/// runs, and the gap is in the metadata, the runner's info and the audit
/// log; a strict profile refuses to start instead. A negative nice value
/// is such a control for an unprivileged user (scripts/test-unprivileged
/// runs this as `nobody`); as root, the allowed half: no gap.
#[tokio::test]
async fn host_gaps_are_reported_or_refused() {
    let _serial = serial();
    let root = nix::unistd::geteuid().is_root();
    let audit = tempfile::tempdir().unwrap();
    let mut lenient = profile(); // standard: deny-list, not strict
    lenient.process_limits.process_priority = -5;
    let r = LocalGgufRunner::builder(model_path(), lenient, ModelResourceRequirements::default())
        .worker_path(worker())
        .audit_log(
            symbiont_runtime::audit::AuditLog::to_file(audit.path().join("audit.jsonl")).unwrap(),
        )
        .build()
        .await
        .unwrap();
    let res = r.execute("Hi", Some(greedy(2))).await.unwrap();
    let gap = "priority: setpriority";
    let events = audit_events(&audit);
    if root {
        assert!(
            res.metadata.sandbox_gaps.is_empty(),
            "{:?}",
            res.metadata.sandbox_gaps
        );
        assert!(res.metadata.sandbox_layers.iter().any(|l| l == gap));
        assert!(events.is_empty(), "{events:?}");
    } else {
        assert!(
            res.metadata.sandbox_gaps.iter().any(|g| g.starts_with(gap)),
            "{:?}",
            res.metadata.sandbox_gaps
        );
        assert_eq!(r.get_info().sandbox_gaps, res.metadata.sandbox_gaps);
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "sandbox_gap" && e["control"] == gap),
            "{events:?}"
        );
        let mut strict = SandboxProfile::secure();
        strict.process_limits.process_priority = -5;
        let s = runner_with(strict).await;
        match s.execute("Hi", Some(greedy(2))).await {
            Err(SlmRunnerError::SandboxViolation { detail, .. }) => {
                assert!(detail.contains("setpriority"), "{detail}")
            }
            other => panic!("a strict profile must refuse: {other:?}"),
        }
    }
}

/// A model file that passes the supervisor's header check but that
/// llama.cpp cannot load (here: an unknown architecture name, same length
/// as the real one) is a load failure naming the stage, not a memory limit,
/// even under an address-space limit; the audit log records no limit hit.
#[tokio::test]
async fn a_broken_model_is_not_a_memory_limit() {
    let _serial = serial();
    let mut bytes = std::fs::read(model_path()).unwrap();
    // general.architecture = "llama": key, type 8 (string), length 5, value.
    let key = b"general.architecture";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("general.architecture in the header");
    let value = at + key.len() + 4 + 8;
    assert_eq!(&bytes[value..value + 5], b"llama");
    bytes[value..value + 5].copy_from_slice(b"llamx");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, &bytes).unwrap();
    let audit = tempfile::tempdir().unwrap();
    let r = LocalGgufRunner::builder(&broken, profile(), ModelResourceRequirements::default())
        .worker_path(worker())
        .audit_log(
            symbiont_runtime::audit::AuditLog::to_file(audit.path().join("audit.jsonl")).unwrap(),
        )
        .build()
        .await
        .expect("the header check passes");
    match r.execute("Hi", Some(greedy(2))).await {
        Err(SlmRunnerError::InitializationFailed { reason }) => {
            assert!(reason.contains("Model"), "{reason}")
        }
        other => panic!("expected a load failure, got {other:?}"),
    }
    assert!(
        audit_events(&audit)
            .iter()
            .all(|e| e["kind"] != "limit_hit"),
        "{:?}",
        audit_events(&audit)
    );
    // The allowed twin: the real file loads under the same profile.
    assert!(runner().await.execute("Hi", Some(greedy(2))).await.is_ok());
}

/// Every path into a runner fails closed: a profile built in code meets
/// the config loader's rules (the same function), a thread count cannot
/// exceed the profile's cores, and a fraction of a core below one is
/// refused by a strict profile and reported as a gap by a lenient one.
#[tokio::test]
async fn profiles_built_in_code_are_validated() {
    use symbiont_runtime::config::{NetworkAccessMode, NetworkDestination};
    let _serial = serial();
    let build = |p: SandboxProfile, threads: Option<u32>| {
        let mut b = LocalGgufRunner::builder(model_path(), p, ModelResourceRequirements::default())
            .worker_path(worker());
        if let Some(n) = threads {
            b = b.threads(n);
        }
        b.build()
    };
    // The allowed twins.
    assert!(build(profile(), None).await.is_ok());
    assert!(build(profile(), Some(1)).await.is_ok());
    // Children are for programs under `sandbox exec`: the worker starts
    // none whatever the profile says (its plan keeps fork refused).
    let mut forks = profile();
    forks.process_limits.max_child_processes = 4;
    assert!(build(forks, None).await.is_ok());
    // Restricted: the worker gets no network at all (it needs none).
    let mut restricted = profile();
    restricted.network.access_mode = NetworkAccessMode::Restricted;
    restricted.network.allowed_destinations = vec![NetworkDestination {
        host: "127.0.0.1".into(),
        port: Some(9),
        protocol: None,
    }];
    assert!(build(restricted, None).await.is_ok());
    let mut huge = profile();
    huge.resources.max_memory_mb = u64::MAX;
    for (p, key) in [(huge, "max_memory_mb")] {
        match build(p, None).await {
            Err(SlmRunnerError::InvalidInput { field, reason }) => {
                assert_eq!(field, "sandbox_profile");
                assert!(reason.contains(key), "{key}: {reason}");
            }
            other => panic!("{key}: expected a refusal, got {other:?}"),
        }
    }
    match build(profile(), Some(64)).await {
        Err(SlmRunnerError::InvalidInput { field, .. }) => assert_eq!(field, "threads"),
        other => panic!("64 threads: {other:?}"),
    }
    let mut half = SandboxProfile::secure();
    half.resources.max_cpu_cores = 0.5;
    match build(half.clone(), None).await {
        Err(SlmRunnerError::SandboxViolation { control, .. }) => {
            assert_eq!(control, "resources.max_cpu_cores")
        }
        other => panic!("strict half core: {other:?}"),
    }
    let mut lenient_half = profile();
    lenient_half.resources.max_cpu_cores = 0.5;
    let r = build(lenient_half, None).await.unwrap();
    let res = r.execute("Hi", Some(greedy(2))).await.unwrap();
    assert!(
        res.metadata
            .sandbox_gaps
            .iter()
            .any(|g| g.contains("max_cpu_cores = 0.5")),
        "{:?}",
        res.metadata.sandbox_gaps
    );
}

/// The sandbox report is checked, not trusted: a fake worker (speaking
/// the protocol) that claims every layer without applying one is refused
/// before it is sent anything, so is one under the real sandbox without
/// its system call filter, one without the namespaces it claims (every
/// other layer applied, so `/proc/<pid>/status` shows what it can), and
/// one that reports ready without reporting its confinement. The twin:
/// the same fake under the whole sandbox is accepted and answers, as the
/// real worker does in every other test here.
#[tokio::test]
async fn a_worker_that_lies_about_its_sandbox_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for (mode, why) in [
        ("no-sandbox", "NoNewPrivs"),
        ("no-filter", "Seccomp"),
        ("no-namespace", "shares the supervisor's user namespace"),
        ("silent", "without reporting its confinement"),
    ] {
        let r = LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(fake_worker(dir.path(), mode))
        .build()
        .await
        .unwrap();
        match r.execute("Hi", Some(greedy(2))).await {
            Err(SlmRunnerError::SandboxViolation { detail, .. }) => {
                assert!(detail.contains(why), "{mode}: {detail}")
            }
            other => panic!("{mode}: expected a refusal, got {other:?}"),
        }
        assert!(
            r.worker_pid().await.is_none(),
            "{mode}: the fake still runs"
        );
    }
    let r = LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(fake_worker(dir.path(), "normal"))
    .build()
    .await
    .unwrap();
    assert_eq!(
        r.execute("Hi", Some(greedy(2))).await.unwrap().response,
        "ok"
    );
}

/// The fake worker (`src/bin/fake_worker.rs`, a Rust program speaking the
/// protocol under the real sandbox) started as `mode`: its first start
/// in `dir` behaves as `mode`, later ones answer honestly (`ok`).
fn fake_worker(dir: &std::path::Path, mode: &str) -> std::path::PathBuf {
    let link = dir.join(mode);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_test-fake-worker"), &link).unwrap();
    link
}

/// A reader that stops reading stalls no one: the driver hands events on
/// without waiting for it, and a request whose reader leaves 256 events
/// unread is cancelled and ends with the `StreamBuffer` limit, after the
/// events it had. The request beside it finishes meanwhile, on the same
/// worker (the fake sends a long answer at once, then waits for the
/// cancel).
#[tokio::test]
async fn a_reader_that_stops_reading_is_cancelled_and_stalls_no_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let r = LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(fake_worker(dir.path(), "chatty"))
    .build()
    .await
    .unwrap();
    let mut slow = Box::pin(r.execute_stream("Hi", Some(greedy(400))));
    assert!(matches!(slow.next().await, Some(Ok(StreamEvent::Token(_)))));
    let pid = r.worker_pid().await;
    // Left unread from here on; another request runs and finishes.
    let beside = tokio::time::timeout(Duration::from_secs(60), r.execute("Hi", Some(greedy(4))))
        .await
        .expect("a request waited behind a reader that stopped reading")
        .unwrap();
    assert_eq!(beside.response, "ok");
    assert_eq!(r.worker_pid().await, pid, "not the same worker");
    let mut tokens = 1;
    let end = loop {
        match slow.next().await {
            Some(Ok(StreamEvent::Token(_))) => tokens += 1,
            other => break other,
        }
    };
    assert!(
        matches!(
            end,
            Some(Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::StreamBuffer,
                ..
            }))
        ),
        "{end:?}"
    );
    // All it had been handed, and not the whole answer: 256 places, one
    // of them taken by the prompt's event, and whatever the first poll
    // had moved on before the reader stopped.
    assert!((255..400).contains(&tokens), "{tokens}");
    assert!(slow.next().await.is_none());
}

/// A hostile worker cannot hurt the supervisor: a huge frame, a flood of
/// text past `max_tokens`, an answer forged for another request, a token
/// count past `max_tokens`, each fails that request with a `WorkerCrashed`
/// naming the protocol violation, the worker is killed, and the next
/// request works on a fresh worker. A message sent between requests gets
/// the worker replaced before the next request (which works, audited as a
/// kill); a stderr flood with terminal escapes does not disturb a request.
#[tokio::test]
async fn a_hostile_worker_cannot_hurt_the_supervisor() {
    let _serial = serial();
    let runner_for = |mode: &str, dir: &tempfile::TempDir| {
        let fake = fake_worker(dir.path(), mode);
        LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(fake)
        .audit_log(
            symbiont_runtime::audit::AuditLog::to_file(dir.path().join("audit.jsonl")).unwrap(),
        )
        .build()
    };
    for (mode, why) in [
        ("huge", "a frame of"),
        ("flood", "more text than max_tokens = 4"),
        ("forged", "a message for no running request"),
        ("overcount", "1000000 tokens reported for max_tokens = 4"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = runner_for(mode, &dir).await.unwrap();
        match r.execute("Hi", Some(greedy(4))).await {
            Err(SlmRunnerError::WorkerCrashed {
                cause: WorkerLoss::ProtocolViolation { detail },
                ..
            }) => assert!(detail.contains(why), "{mode}: {detail}"),
            other => panic!("{mode}: expected a protocol violation, got {other:?}"),
        }
        assert!(
            r.worker_pid().await.is_none(),
            "{mode}: the worker still runs"
        );
        let ok = r.execute("Hi", Some(greedy(4))).await.unwrap();
        assert_eq!(ok.response, "ok", "{mode}");
        let kinds: Vec<String> = audit_events(&dir)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["worker_crash"], "{mode}");
    }
    // A message after Done: the request it follows is complete and fine;
    // the next one finds it waiting, and runs on a fresh worker.
    let dir = tempfile::tempdir().unwrap();
    let r = runner_for("after_done", &dir).await.unwrap();
    assert_eq!(
        r.execute("Hi", Some(greedy(4))).await.unwrap().response,
        "ok"
    );
    // The driver reads the late frame as it comes and kills the worker
    // (it may be gone already). Whether the frame is read before the next
    // request starts or during it, that request runs on a fresh worker:
    // it paid a load, and the kill is audited.
    let next = r.execute("Hi", Some(greedy(4))).await.unwrap();
    assert_eq!(next.response, "ok");
    assert!(next.metadata.model_load_ms.is_some(), "not a fresh worker");
    let events = audit_events(&dir);
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "kill" && e["control"] == "worker protocol"),
        "{events:?}"
    );
    // Embeddings: one, of the model's size, for an embedding request only,
    // before its Done; anything else is a violation like the others, and
    // the honest case (4 numbers, the fake's size) goes through.
    for (mode, why) in [
        ("bad_embedding", Some("an embedding of 5 numbers")),
        ("embed_twice", Some("an embedding of 4 numbers")),
        ("text_for_embed", Some("text for embedding request")),
        ("done_without_embedding", Some("without an embedding")),
        ("normal", None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(fake_worker(dir.path(), mode))
        .embeddings(true)
        .build()
        .await
        .unwrap();
        match (r.embed("Hi", None).await, why) {
            (Ok(e), None) => assert_eq!(e.embedding, [0.5; 4]),
            (
                Err(SlmRunnerError::WorkerCrashed {
                    cause: WorkerLoss::ProtocolViolation { detail },
                    ..
                }),
                Some(why),
            ) => assert!(detail.contains(why), "{mode}: {detail}"),
            (other, _) => panic!("{mode}: {other:?}"),
        }
        assert_eq!(
            r.execute("Hi", Some(greedy(4))).await.unwrap().response,
            "ok",
            "{mode}"
        );
    }
    // An embedding sent for a generation.
    let dir = tempfile::tempdir().unwrap();
    let r = runner_for("embed_for_generate", &dir).await.unwrap();
    match r.execute("Hi", Some(greedy(4))).await {
        Err(SlmRunnerError::WorkerCrashed {
            cause: WorkerLoss::ProtocolViolation { detail },
            ..
        }) => assert!(detail.contains("an embedding of 4 numbers"), "{detail}"),
        other => panic!("embed_for_generate: {other:?}"),
    }
    // A worker that stops reading its input: a write that blocks (a prompt
    // larger than the pipe) is bounded; the worker is killed, the request
    // fails naming it, and the next one works.
    let dir = tempfile::tempdir().unwrap();
    let r = runner_for("deaf", &dir).await.unwrap();
    let big = "word ".repeat(60_000);
    let started = Instant::now();
    match r.execute(&big, Some(greedy(4))).await {
        Err(SlmRunnerError::WorkerCrashed {
            cause: WorkerLoss::StoppedReading { .. },
            ..
        }) => {}
        other => panic!("deaf: expected WorkerCrashed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        r.execute("Hi", Some(greedy(4))).await.unwrap().response,
        "ok"
    );
    // A stderr flood with terminal escapes: the request is unaffected.
    let dir = tempfile::tempdir().unwrap();
    let r = runner_for("stderr", &dir).await.unwrap();
    assert_eq!(
        r.execute("Hi", Some(greedy(4))).await.unwrap().response,
        "ok"
    );
}

/// A caller that gives up (its future dropped, here by a timeout around
/// the call) leaves the worker generating for nobody; the next request
/// cancels that leftover and runs on the same worker: no kill, no
/// violation, no audit event.
#[tokio::test]
async fn an_abandoned_request_does_not_cost_the_worker() {
    let _serial = serial();
    let audit = tempfile::tempdir().unwrap();
    let r = audited_runner(&audit).await;
    r.preload().await.unwrap();
    let pid = r.worker_pid().await.unwrap();
    // Give up on a long request (2,000 tokens take far longer than this).
    // On a very slow host the request may not have reached the worker yet;
    // then there is nothing left over, and the rest holds all the same.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1500),
        r.execute(
            "Write a long story about the sea.",
            Some(ExecutionOptions {
                response_format: long_answer(),
                ..greedy(2000)
            }),
        ),
    )
    .await;
    assert!(gave_up.is_err(), "finished 2,000 tokens in 1.5 s");
    let ok = r.execute("Say yes.", Some(greedy(4))).await.unwrap();
    assert!(ok.metadata.output_tokens.unwrap() >= 1);
    assert_eq!(r.worker_pid().await, Some(pid), "the worker was replaced");
    assert!(
        audit_events(&audit).is_empty(),
        "{:?}",
        audit_events(&audit)
    );
}
