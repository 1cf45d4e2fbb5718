//! Many requests in one worker: continuous batching, prefix reuse and
//! cancellation that follows the caller, with the real worker and the
//! default model (`scripts/setup.sh` fetches it; without it these tests
//! fail and say so).

// Each test holds the SERIAL guard for its whole body on purpose: that
// serializes tests, it cannot deadlock a runtime.
#![allow(clippy::await_holding_lock)]

mod common;

use common::{long_answer, model_path, profile, serial, until, worker};
use std::time::{Duration, Instant};

use futures::StreamExt;
use symbiont_runtime::config::ModelResourceRequirements;
use symbiont_runtime::models::{
    ExecutionOptions, ExecutionResult, FinishReason, LocalGgufRunner, LocalGgufRunnerBuilder,
    SlmRunnerError, StreamEvent,
};

/// A builder of the default model's runner under the test profile.
fn builder() -> LocalGgufRunnerBuilder {
    LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
}

/// The default context size, tokens.
const CONTEXT: u32 = 2048;

async fn runner(slots: u32) -> LocalGgufRunner {
    builder().slots(slots).build().await.expect("runner")
}

fn options(max_tokens: u32, temperature: f32, seed: u32) -> ExecutionOptions {
    ExecutionOptions {
        temperature: Some(temperature),
        seed: Some(seed),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// `options` held to an answer that cannot end before `max_tokens`.
fn long_options(max_tokens: u32) -> ExecutionOptions {
    ExecutionOptions {
        response_format: long_answer(),
        ..options(max_tokens, 0.0, 1)
    }
}

const PROMPTS: [&str; 4] = [
    "Name three colours.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Count from one to five.",
];

/// Runs the four prompts at once, streamed; returns their results and the
/// order in which their pieces of text arrived (request indices).
async fn all_at_once(
    r: &LocalGgufRunner,
    o: &ExecutionOptions,
) -> (Vec<ExecutionResult>, Vec<usize>) {
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let jobs: Vec<_> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (r, o, order) = (r.clone(), o.clone(), order.clone());
            tokio::spawn(async move {
                let mut stream = Box::pin(r.execute_stream(p, Some(o)));
                while let Some(event) = stream.next().await {
                    match event.unwrap() {
                        StreamEvent::Token(_) => order.lock().unwrap().push(i),
                        StreamEvent::Done(result) => return *result,
                        other => panic!("{other:?}"),
                    }
                }
                panic!("the stream ended without a result")
            })
        })
        .collect();
    let mut out = Vec::new();
    for j in jobs {
        out.push(j.await.unwrap());
    }
    let order = order.lock().unwrap().clone();
    (out, order)
}

/// Four requests batched in a shared cache (four slots in two contexts'
/// tokens) really run together (their pieces arrive interleaved), each
/// within its own limits. Their text may differ from the text each gives
/// alone where the model's top two tokens nearly tie: the shared cache
/// puts other sequences' cells between a request's own, which changes the
/// order of llama.cpp's floating-point sums (as llama-server's
/// `--kv-unified` does; see docs/library.md). A cache of a context per
/// slot, or one slot, is reproducible: see the next tests.
#[tokio::test]
async fn batched_requests_run_together() {
    let _serial = serial();
    let r = builder()
        .slots(4)
        .cache_tokens(2 * CONTEXT)
        .build()
        .await
        .expect("runner");
    assert_eq!(r.slots(), 4);
    r.preload().await.unwrap();
    for o in [options(24, 0.0, 1), options(24, 0.9, 1234)] {
        let (batched, order) = all_at_once(&r, &o).await;
        for b in &batched {
            assert!(!b.response.is_empty());
            assert!(b
                .metadata
                .output_tokens
                .is_some_and(|n| (1..=24).contains(&n)));
        }
        assert_interleaved(&order);
    }
}

/// Decoded together, not one after another: their pieces arrive
/// interleaved (one after another would switch requests 3 times).
fn assert_interleaved(order: &[usize]) {
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches >= 20,
        "not interleaved ({switches} switches): {order:?}"
    );
}

/// A cache of a whole context per slot gives each sequence a KV stream of
/// its own (as `llama-server -np` does): each request's text is the same
/// alone and batched with three others, greedy and sampled with a fixed
/// seed, and the batched ones really ran together.
#[tokio::test]
async fn a_stream_per_slot_gives_batched_requests_the_text_they_give_alone() {
    let _serial = serial();
    let r = builder()
        .slots(4)
        .cache_tokens(4 * CONTEXT)
        .build()
        .await
        .expect("runner");
    r.preload().await.unwrap();
    for o in [options(24, 0.0, 1), options(24, 0.9, 1234)] {
        let mut alone = Vec::new();
        for p in PROMPTS {
            alone.push(r.execute(p, Some(o.clone())).await.unwrap().response);
        }
        let (batched, order) = all_at_once(&r, &o).await;
        let texts: Vec<&str> = batched.iter().map(|b| b.response.as_str()).collect();
        assert_eq!(texts, alone, "temperature {:?}", o.temperature);
        assert_interleaved(&order);
    }
}

/// One request at a time (`run`, `chat`, `slots = 1`): the same prompt
/// and seed give the same text, greedy and sampled, and a fresh worker
/// gives it too.
#[tokio::test]
async fn a_one_slot_worker_gives_the_same_text_for_the_same_seed() {
    let _serial = serial();
    let one = || async {
        LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(worker())
        .one_at_a_time(true)
        .build()
        .await
        .expect("runner")
    };
    let texts = |r: LocalGgufRunner, o: ExecutionOptions| async move {
        let mut t = Vec::new();
        for p in PROMPTS {
            t.push(r.execute(p, Some(o.clone())).await.unwrap().response);
        }
        t
    };
    for o in [options(24, 0.0, 1), options(24, 0.9, 1234)] {
        let r = one().await;
        let first = texts(r.clone(), o.clone()).await;
        assert_eq!(texts(r, o.clone()).await, first, "{:?}", o.temperature);
        assert_eq!(texts(one().await, o.clone()).await, first, "fresh worker");
    }
}

/// A long shared prefix (the same instructions before every question) is
/// read once: the next requests find it in the cache, count it in
/// `cached_tokens`, and generate the same text as a fresh worker that read
/// it all. (Greedy text can differ where the model's top two tokens are
/// nearly tied: llama.cpp's logits are not bit-identical between a prompt
/// read in one batch and one read in two; see README "Prefix reuse".
/// These chat prompts are not such cases, on this model.)
#[tokio::test]
async fn a_shared_prefix_is_read_once() {
    use symbiont_runtime::models::{ChatMessage, ChatRole};
    let _serial = serial();
    let rules =
        "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(25);
    let o = ExecutionOptions {
        history: vec![ChatMessage::new(ChatRole::System, rules)],
        ..options(12, 0.0, 1)
    };
    let r = runner(1).await;
    let first = r.execute("Say hello.", Some(o.clone())).await.unwrap();
    assert_eq!(first.metadata.cached_tokens, Some(0));
    for q in ["What is a pallet?", "What is a truck?", "Who wrote Hamlet?"] {
        let cached = r.execute(q, Some(o.clone())).await.unwrap();
        let n = cached.metadata.cached_tokens.unwrap();
        let input = cached.metadata.input_tokens.unwrap();
        assert!(n >= 400 && n < input, "{q}: {n} of {input} tokens cached");
        let fresh = runner(1).await.execute(q, Some(o.clone())).await.unwrap();
        assert_eq!(fresh.metadata.cached_tokens, Some(0));
        assert_eq!(cached.response, fresh.response, "{q}");
    }
}

/// With a KV stream per slot a new request takes the lowest free slot
/// (busy sequence ids stay consecutive, decoded in one pass), and the
/// prefix another idle slot holds for the same agent is copied there,
/// stream to stream: counted in `cached_tokens`, and the text is the one
/// a fresh worker gives after reading it all (so the copy carried the
/// keys and values, not only the cells' positions).
#[tokio::test]
async fn a_stream_per_slot_copies_a_prefix_into_the_lowest_free_slot() {
    use symbiont_runtime::models::{ChatMessage, ChatRole};
    let _serial = serial();
    let rules =
        "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(25);
    let o = ExecutionOptions {
        history: vec![ChatMessage::new(ChatRole::System, rules)],
        ..options(12, 0.0, 1)
    };
    let r = builder()
        .slots(2)
        .cache_tokens(2 * CONTEXT)
        .build()
        .await
        .expect("runner");
    r.preload().await.unwrap();
    // A plain request on slot 0, generating; the rules go to slot 1.
    let mut plain =
        Box::pin(r.execute_stream("Count from one to fifty.", Some(options(48, 0.0, 1))));
    match plain.next().await {
        Some(Ok(StreamEvent::Token(_))) => {}
        other => panic!("{other:?}"),
    }
    let first = r.execute("Say hello.", Some(o.clone())).await.unwrap();
    assert_eq!(first.metadata.cached_tokens, Some(0));
    while let Some(event) = plain.next().await {
        event.unwrap();
    }
    // Alone now: slot 0, the lowest, whose cache holds the plain prompt;
    // the rules come from slot 1.
    let q = "What is a pallet?";
    let copied = r.execute(q, Some(o.clone())).await.unwrap();
    let n = copied.metadata.cached_tokens.unwrap();
    let input = copied.metadata.input_tokens.unwrap();
    assert!(n >= 400 && n < input, "{n} of {input} tokens cached");
    let fresh = runner(1).await.execute(q, Some(o.clone())).await.unwrap();
    assert_eq!(fresh.metadata.cached_tokens, Some(0));
    assert_eq!(copied.response, fresh.response);
}

/// Dropping a request's future cancels it in the worker: its slot is free
/// within a few decode steps (the slot is released only when the worker
/// says the request ended), the worker is not replaced, and a request
/// batched beside it generates exactly what it generates alone.
#[tokio::test]
async fn a_dropped_request_stops_and_leaves_the_others_intact() {
    let _serial = serial();
    let r = runner(2).await;
    r.preload().await.unwrap();
    let pid = r.worker_pid().await;
    let beside = "Name three colours.";
    let alone = r
        .execute(beside, Some(options(40, 0.0, 1)))
        .await
        .unwrap()
        .response;

    // The allowed twin first: a request that is not dropped holds its
    // slot while it generates.
    let long = long_options(2000);
    let mut stream = Box::pin(r.execute_stream("Write a long story about the sea.", Some(long)));
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::Token(_)))
    ));
    let other = {
        let r = r.clone();
        tokio::spawn(async move { r.execute(beside, Some(options(40, 0.0, 1))).await })
    };
    until("both requests running", Duration::from_secs(120), || {
        r.load().busy >= 2
    })
    .await;
    // It generates beside the other (ten more of its pieces come).
    for _ in 0..10 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Token(_)))
        ));
    }
    // Now drop it: its slot comes free long before 2,000 tokens could be
    // generated (about 20 s here), and the worker says it stopped it for
    // the cancel (not at an end of text: `requests_cancelled` counts only
    // a `Cancelled` finish of a request whose caller went away).
    drop(stream);
    let dropped_at = Instant::now();
    while r.load().busy > 0 && dropped_at.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = other.await.unwrap().unwrap();
    assert_eq!(other.response, alone, "the request beside it changed");
    let freed = dropped_at.elapsed();
    assert_eq!(r.load().busy, 0, "the dropped request still runs");
    assert!(freed < Duration::from_secs(10), "freed after {freed:?}");
    assert_eq!(r.metrics().requests_cancelled, 1, "{:?}", r.metrics());
    assert_eq!(r.worker_pid().await, pid, "the worker was replaced");

    // The same with `execute`'s future dropped by a timeout around it.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(1500),
        r.execute(
            "Write a long story about the sea.",
            Some(long_options(2000)),
        ),
    )
    .await;
    assert!(gave_up.is_err(), "finished 2,000 tokens in 1.5 s");
    let dropped_at = Instant::now();
    while r.load().busy > 0 && dropped_at.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.load().busy, 0, "the dropped request still runs");
    assert_eq!(r.metrics().requests_cancelled, 2, "{:?}", r.metrics());
    let next = r
        .execute("Say yes.", Some(options(4, 0.0, 1)))
        .await
        .unwrap();
    assert_eq!(next.metadata.finish_reason, Some(FinishReason::Length));
    assert_eq!(r.worker_pid().await, pid, "the worker was replaced");
}

/// More requests than slots: the rest wait in the queue, and a request
/// whose deadline passes while it waits fails with `ExecutionTimeout` and
/// never runs (the worker's slot is not taken by it).
#[tokio::test]
async fn a_request_that_times_out_in_the_queue_never_runs() {
    let _serial = serial();
    let r = runner(1).await;
    r.preload().await.unwrap();
    let busy = {
        let r = r.clone();
        tokio::spawn(async move {
            r.execute("Tell a long story.", Some(long_options(200)))
                .await
        })
    };
    until("the long story running", Duration::from_secs(120), || {
        r.load().busy > 0
    })
    .await;
    let late = ExecutionOptions {
        timeout: Some(Duration::from_millis(300)),
        ..options(4, 0.0, 1)
    };
    let started = Instant::now();
    match r.execute("Say yes.", Some(late)).await {
        Err(SlmRunnerError::ExecutionTimeout { .. }) => {}
        other => panic!("expected a timeout in the queue, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.load().queued, 0);
    let m = r.metrics();
    assert_eq!(m.requests_expired_in_queue, 1);
    // Only the busy request took a slot.
    assert_eq!(m.admitted, 1, "the late request took a slot: {m:?}");
    // The request in the slot was not disturbed.
    let done = busy.await.unwrap().unwrap();
    assert!(done.metadata.output_tokens.unwrap() >= 1);
}

/// `isolate_agents` (on in `secure`): requests of different agents run in
/// different workers and never find each other's prompts in the cache;
/// off (`standard`), they share one worker, but its prefix cache is keyed
/// by agent (issue 18, row 6: agent B read agent A's PIN from
/// `cached_tokens`): Bob's request finds nothing of Alice's prompt, the
/// same system prompt and all, while Alice's next request finds hers.
#[tokio::test]
async fn isolated_agents_share_no_worker_and_no_cache() {
    use symbiont_runtime::models::{ChatMessage, ChatRole};
    let _serial = serial();
    let rules =
        "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(20);
    // A runner built directly: its embedder names the agent (the
    // deprecated option; a pool's runners are bound to theirs).
    #[allow(deprecated)]
    let asking = |agent: &str| ExecutionOptions {
        agent_id: Some(agent.into()),
        history: vec![ChatMessage::new(ChatRole::System, rules.clone())],
        ..options(4, 0.0, 1)
    };
    for isolate in [false, true] {
        let mut p = profile();
        p.security.isolate_agents = isolate;
        p.resources.max_cpu_cores = 1.0;
        let r = LocalGgufRunner::builder(model_path(), p, ModelResourceRequirements::default())
            .worker_path(worker())
            // Shared: a slot for each agent, so Alice's stays hers.
            .slots(if isolate { 1 } else { 2 })
            .build()
            .await
            .unwrap();
        assert_eq!(r.isolates_agents(), isolate);
        let a = r
            .execute("What is a pallet?", Some(asking("alice")))
            .await
            .unwrap();
        assert_eq!(a.metadata.cached_tokens, Some(0));
        let b = r
            .execute("What is a truck?", Some(asking("bob")))
            .await
            .unwrap();
        let again = r
            .execute("What is a crate?", Some(asking("alice")))
            .await
            .unwrap();
        let (b_cached, again_cached) = (
            b.metadata.cached_tokens.unwrap(),
            again.metadata.cached_tokens.unwrap(),
        );
        // Alice's own prefix is cached in her worker either way.
        assert!(again_cached > 300, "isolate {isolate}: {again_cached}");
        if isolate {
            assert_eq!(r.load().workers, 2);
            // One core each, and not the same one: their leases hold
            // different CPUs, which the sandbox makes their affinity.
            let cpus: Vec<String> = r
                .worker_pids()
                .await
                .iter()
                .map(|pid| {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                        .unwrap()
                        .trim()
                        .to_string()
                })
                .collect();
            assert_eq!(cpus.len(), 2);
            assert_ne!(cpus[0], cpus[1], "two workers share a CPU: {cpus:?}");
            assert_eq!(b_cached, 0, "bob found alice's prompt in his worker");
            assert!(
                b.metadata.model_load_ms.is_some(),
                "bob's worker was not his own"
            );
        } else {
            assert_eq!(r.load().workers, 1);
            assert_eq!(
                b_cached, 0,
                "bob's request was served from alice's cached prompt"
            );
        }
    }
}

/// Runners sharing a host budget that holds one worker: the idle worker
/// of one runner is evicted when the other needs room, a busy one is not
/// (the other waits for it to finish), and every request completes.
#[tokio::test]
async fn a_shared_budget_evicts_only_idle_workers() {
    use symbiont_runtime::models::{Budget, HostBudget};
    let _serial = serial();
    let budget = Budget::new(HostBudget {
        memory_mb: 4096,
        cores: 2,
        max_workers: 1,
    });
    let make = || {
        LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(worker())
        .slots(1)
        .budget(budget.clone())
        .build()
    };
    let (one, two) = (make().await.unwrap(), make().await.unwrap());
    one.execute("Say yes.", Some(options(2, 0.0, 1)))
        .await
        .unwrap();
    assert_eq!(one.load().workers, 1);
    // Two needs the room: one's idle worker goes.
    let r2 = two
        .execute("Say yes.", Some(options(2, 0.0, 1)))
        .await
        .unwrap();
    assert!(r2.metadata.model_load_ms.is_some());
    assert_eq!(one.load().workers, 0, "the idle worker was not evicted");
    assert_eq!(budget.in_use().0, 1);
    // Two busy with a long request: one waits for it instead of evicting.
    let long = {
        let two = two.clone();
        tokio::spawn(async move {
            two.execute("Tell a long story.", Some(long_options(150)))
                .await
        })
    };
    until("the long story running", Duration::from_secs(120), || {
        two.load().busy > 0
    })
    .await;
    let started = Instant::now();
    let r1 = one
        .execute("Say yes.", Some(options(2, 0.0, 1)))
        .await
        .unwrap();
    let waited = started.elapsed();
    let long = long.await.unwrap().unwrap();
    assert!(
        matches!(
            long.metadata.finish_reason,
            Some(FinishReason::Stop | FinishReason::Length)
        ),
        "the busy request was cut: {:?}",
        long.metadata.finish_reason
    );
    // Each was evicted once, when idle, for the other.
    assert_eq!(two.metrics().evictions, 1);
    assert_eq!(one.metrics().evictions, 1);
    assert!(r1.metadata.model_load_ms.is_some());
    assert!(
        waited.as_secs_f64() * 1e3 >= long.metadata.worker_time_ms.unwrap() * 0.5,
        "it did not wait for the busy worker ({waited:?})"
    );
    assert_eq!(budget.in_use().0, 1);
}

/// The pool: three models (the default model under three ids) under a
/// budget of two workers, one of them pinned. Every request completes, the
/// pinned model stays loaded, the others take turns (the idle one is
/// evicted), at most two workers are ever loaded; an agent outside a
/// model's allow-list is refused (and audited), an unknown model is named.
#[tokio::test]
async fn a_pool_runs_three_models_under_a_budget_of_two() {
    use symbiont_runtime::config::Slm;
    use symbiont_runtime::models::{ModelCatalog, ModelPool};
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = model_path();
    let models: String = ["pinned", "second", "third"]
        .iter()
        .map(|id| {
            format!(
                "[[slm.model_allow_lists.global_models]]\nid = \"{id}\"\nname = \"{id}\"\nprovider = {{ LocalFile = {{ file_path = {:?} }} }}\ncapabilities = [\"TextGeneration\"]\n",
                model.display().to_string()
            )
        })
        .collect();
    let toml = format!(
        "[slm]\nenabled = true\ndefault_sandbox_profile = \"standard\"\naudit_log_path = {:?}\n{models}\n[slm.model_allow_lists.agent_model_maps]\nalice = [\"pinned\", \"second\", \"third\"]\nbob = [\"second\"]\n[slm.pool]\nmax_loaded_workers = 2\ncores = 2\npinned_models = [\"pinned\"]\n[slm.sandbox_profiles.standard.resources]\nmax_cpu_cores = 1.0\n",
        dir.path().join("audit.jsonl").display().to_string()
    );
    let catalog = ModelCatalog::new(Slm::from_toml_str(&toml).unwrap()).unwrap();
    let pool = ModelPool::builder(catalog)
        .worker_path(worker())
        .build()
        .unwrap();
    pool.preload_pinned().await.unwrap();
    assert_eq!(pool.budget().in_use().0, 1);
    let o = options(2, 0.0, 1);
    for id in ["second", "third", "second", "pinned", "third"] {
        let r = pool
            .execute("alice", id, None, "Say yes.", Some(o.clone()))
            .await
            .unwrap();
        assert!(r.metadata.output_tokens.unwrap() >= 1, "{id}");
        assert!(pool.budget().in_use().0 <= 2);
        let loads = pool.loads().await;
        let loaded = |m: &str| loads.iter().any(|(id, _, l)| id == m && l.workers == 1);
        assert!(loaded("pinned"), "the pinned model was unloaded");
        assert!(loaded(id), "{id} is not loaded after its request");
    }
    // "second" and "third" took turns beside the pinned one: each was
    // evicted, idle, for the other; the pinned one never.
    let mut evicted = 0;
    for id in ["second", "third"] {
        evicted += pool.runner(id, None).await.unwrap().metrics().evictions;
    }
    assert!(evicted >= 2, "{evicted} evictions");
    assert_eq!(
        pool.runner("pinned", None)
            .await
            .unwrap()
            .metrics()
            .evictions,
        0
    );
    match pool
        .execute("bob", "third", None, "Hi", Some(o.clone()))
        .await
    {
        Err(SlmRunnerError::AccessDenied {
            agent_id, model_id, ..
        }) => {
            assert_eq!((agent_id.as_str(), model_id.as_str()), ("bob", "third"))
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("access_refused") && audit.contains("\"bob\""),
        "{audit}"
    );
    assert!(pool
        .execute("bob", "second", None, "Say yes.", Some(o.clone()))
        .await
        .is_ok());
    assert!(matches!(
        pool.execute("alice", "fourth", None, "Hi", Some(o)).await,
        Err(SlmRunnerError::UnknownModel { .. })
    ));
    // Identity by construction: a runner from `for_agent` runs every
    // request for its agent. Alice's second request finds her cached
    // prefix (the probe works); Bob's, which names Alice in the deprecated
    // option, still runs as Bob and finds none of it.
    use symbiont_runtime::models::{ChatMessage, ChatRole};
    let rules =
        "You are a careful assistant for a logistics company. Answer in one short sentence. "
            .repeat(20);
    #[allow(deprecated)]
    let with_rules = |named: Option<&str>| ExecutionOptions {
        agent_id: named.map(str::to_string),
        history: vec![ChatMessage::new(ChatRole::System, rules.clone())],
        ..options(2, 0.0, 1)
    };
    let alice = pool
        .for_agent("alice")
        .runner("second", None)
        .await
        .unwrap();
    let bob = pool.for_agent("bob").runner("second", None).await.unwrap();
    assert_eq!(
        (alice.agent_id(), bob.agent_id()),
        (Some("alice"), Some("bob"))
    );
    alice
        .execute("What is a pallet?", Some(with_rules(None)))
        .await
        .unwrap();
    let again = alice
        .execute("What is a crate?", Some(with_rules(None)))
        .await
        .unwrap();
    assert!(again.metadata.cached_tokens.unwrap() > 300, "{again:?}");
    let spoofed = bob
        .execute("What is a crate?", Some(with_rules(Some("alice"))))
        .await
        .unwrap();
    // (A few tokens of the chat template's opening may be Bob's own, from
    // his request above; Alice's 300-token prefix is not.)
    let cached = spoofed.metadata.cached_tokens.unwrap();
    assert!(cached < 50, "Bob ran as Alice: {cached} cached tokens");
    assert!(matches!(
        pool.for_agent("bob").runner("third", None).await,
        Err(SlmRunnerError::AccessDenied { .. })
    ));
}

/// A runner's workers end with it (nothing keeps them alive: not the
/// budget, not a pending keep-alive), and its metrics count what happened.
#[tokio::test]
async fn workers_end_with_their_runner_and_metrics_count() {
    let _serial = serial();
    let r = runner(2).await;
    r.execute("Say yes.", Some(options(3, 0.0, 1)))
        .await
        .unwrap();
    r.execute("Say no.", Some(options(3, 0.0, 1)))
        .await
        .unwrap();
    let m = r.metrics();
    assert_eq!(
        (m.requests_ok, m.requests_failed, m.loads),
        (2, 0, 1),
        "{m:?}"
    );
    assert!(m.input_tokens > 10 && m.output_tokens >= 2, "{m:?}");
    assert!(
        m.cached_tokens > 0,
        "the template's prefix was not reused: {m:?}"
    );
    assert_eq!((m.slots, m.workers, m.slots_busy), (2, 1, 0));
    // The estimate (model + KV caches + compute buffers) against the
    // kernel's figure: within a quarter.
    let peak = m.memory_peak_mb.expect("a measured peak");
    let estimate = m.memory_estimate_mb as f64;
    assert!((peak - estimate).abs() < 0.25 * estimate, "{m:?}");
    let pid = r.worker_pid().await.expect("loaded");
    drop(r);
    let gone = Instant::now();
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    while alive() && gone.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(), "worker {pid} outlived its runner");
}

/// A pinned model keeps one shared worker: a profile that isolates agents
/// (a worker per agent) cannot pin it, and says why.
#[tokio::test]
async fn a_pinned_model_needs_a_shared_worker() {
    let _serial = serial();
    let mut p = profile();
    p.security.isolate_agents = true;
    let refused = LocalGgufRunner::builder(model_path(), p, ModelResourceRequirements::default())
        .worker_path(worker())
        .pinned(true)
        .build()
        .await;
    match refused {
        Err(SlmRunnerError::InvalidInput { field, reason }) => {
            assert_eq!(field, "pinned");
            assert!(reason.contains("isolate_agents"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The allowed twin: shared, pinned, keep-alive 0 (ignored when pinned).
    let r = builder()
        .pinned(true)
        .keep_alive(Duration::ZERO)
        .build()
        .await
        .unwrap();
    r.preload().await.unwrap();
    r.execute("Say yes.", Some(options(2, 0.0, 1)))
        .await
        .unwrap();
    assert_eq!(r.load().workers, 1, "the pinned worker was unloaded");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Embeddings through the same worker: the same text gives the same unit
/// vector of the model's size, a different text a different one, an input
/// past the limit is refused, a generation beside them is unchanged, and a
/// runner built without embeddings refuses them.
#[tokio::test]
async fn embeddings_are_unit_vectors_of_the_text_and_leave_generation_alone() {
    let _serial = serial();
    let plain = runner(2).await;
    let e = plain.embed("hello", None).await.unwrap_err();
    assert!(
        matches!(e, SlmRunnerError::InvalidInput { field: "model", .. }),
        "{e}"
    );
    let r = builder().slots(2).embeddings(true).build().await.unwrap();
    // `secure`'s 512 MB cannot hold a 2048-token slot beside the embedding
    // context: refused at build, with the numbers, not at the first embed.
    let refused = LocalGgufRunner::builder(
        model_path(),
        symbiont_runtime::config::SandboxProfile::secure(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .embeddings(true)
    .build()
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, SlmRunnerError::ResourceLimitExceeded { detail, .. } if detail.contains("embedding context")),
        "{refused}"
    );
    // Its lease counts the embedding context.
    assert!(r.worker_memory_estimate_mb() > plain.worker_memory_estimate_mb() + 40);
    let greedy = options(24, 0.0, 1);
    let alone = r
        .execute(PROMPTS[1], Some(greedy.clone()))
        .await
        .unwrap()
        .response;
    let cat = "The cat sat on the mat.";
    let (generated, a) = tokio::join!(
        r.execute(PROMPTS[1], Some(greedy.clone())),
        r.embed(cat, None)
    );
    assert_eq!(
        generated.unwrap().response,
        alone,
        "a generation beside an embedding changed"
    );
    let a = a.unwrap();
    assert_eq!(a.embedding.len(), 576, "SmolLM2-135M's n_embd");
    let norm: f32 = cosine(&a.embedding, &a.embedding).sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    assert!(a.metadata.input_tokens.unwrap() >= 6, "{:?}", a.metadata);
    assert_eq!(a.metadata.output_tokens, Some(0));
    let again = r.embed(cat, None).await.unwrap();
    assert!(
        cosine(&a.embedding, &again.embedding) > 0.9999,
        "not deterministic"
    );
    let kitten = r.embed("A kitten rested on the rug.", None).await.unwrap();
    let stocks = r
        .embed("Quarterly revenue fell by four percent.", None)
        .await
        .unwrap();
    let (near, far) = (
        cosine(&a.embedding, &kitten.embedding),
        cosine(&a.embedding, &stocks.embedding),
    );
    assert!(near < 0.9999 && far < 0.9999, "{near} {far}");
    // Meaning shows: a kitten on a rug is nearer the cat than revenue is.
    assert!(near > far, "{near} {far}");
    eprintln!("cosine: cat/kitten {near:.3}, cat/revenue {far:.3}");
    let long = "word ".repeat(400);
    let e = r.embed(&long, None).await.unwrap_err();
    // Counted by the tokenizer: more than the embedding batch holds.
    assert!(
        matches!(
            e,
            SlmRunnerError::ContextLengthExceeded {
                prompt_tokens,
                context_size,
            } if prompt_tokens > context_size
        ),
        "{e}"
    );
    // The worker is still the same one and still serves.
    assert_eq!(r.metrics().worker_failures, 0);
    assert!(r.embed("still here", None).await.is_ok());
}

/// The memory estimate holds what the kernel measures: a worker's resident
/// peak (VmHWM) after a 250-word embedding stays within the lease the
/// runner takes for it, with embeddings and without.
#[tokio::test]
async fn the_embedding_context_is_within_the_memory_estimate() {
    let _serial = serial();
    for embeddings in [false, true] {
        let r = LocalGgufRunner::builder(
            model_path(),
            profile(),
            ModelResourceRequirements::default(),
        )
        .worker_path(worker())
        .slots(1)
        .embeddings(embeddings)
        .build()
        .await
        .unwrap();
        r.execute("Hi", Some(options(4, 0.0, 1))).await.unwrap();
        if embeddings {
            let text = "word ".repeat(250);
            r.embed(&text, None).await.unwrap();
        }
        let pid = r.worker_pid().await.unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let pick = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .unwrap()
                .to_string()
        };
        eprintln!(
            "embeddings {embeddings}: estimate {} MB; {} {} {}",
            r.worker_memory_estimate_mb(),
            pick("VmPeak"),
            pick("VmHWM"),
            pick("VmRSS")
        );
        let hwm_mb = pick("VmHWM")
            .split_whitespace()
            .nth(1)
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap()
            / 1024;
        assert!(
            hwm_mb <= r.worker_memory_estimate_mb(),
            "embeddings {embeddings}: VmHWM {hwm_mb} MB above the estimate {} MB",
            r.worker_memory_estimate_mb()
        );
    }
}

/// Polls the runner's reserved cache every few milliseconds until `done`,
/// and returns the most it saw.
async fn most_reserved(r: &LocalGgufRunner, done: impl Fn() -> bool) -> u64 {
    let mut most = 0;
    while !done() {
        most = most.max(r.metrics().cache_tokens_reserved);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    most
}

#[tokio::test]
async fn a_shared_cache_runs_short_requests_together_and_makes_long_ones_wait() {
    let _g = serial();
    // Four slots of at most 256 tokens sharing a cache of 512.
    let r = builder()
        .slots(4)
        .context_size(256)
        .cache_tokens(512)
        .build()
        .await
        .expect("runner");
    assert_eq!((r.metrics().slots, r.metrics().cache_tokens), (4, 512));
    let run = |max_tokens: u32| {
        let r = r.clone();
        async move {
            let o = ExecutionOptions {
                max_tokens: Some(max_tokens),
                temperature: Some(0.0),
                ..Default::default()
            };
            let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(PROMPTS.len()));
            let jobs: Vec<_> = PROMPTS
                .iter()
                .map(|p| {
                    let (r, o, left) = (r.clone(), o.clone(), left.clone());
                    tokio::spawn(async move {
                        let out = r.execute(p, Some(o)).await;
                        left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        out
                    })
                })
                .collect();
            let most =
                most_reserved(&r, || left.load(std::sync::atomic::Ordering::SeqCst) == 0).await;
            let mut results = Vec::new();
            for j in jobs {
                results.push(j.await.unwrap().expect("every request is answered"));
            }
            (most, results)
        }
    };
    // Short answers: prompt + 24 tokens each, all four in the cache at once.
    let (most, results) = run(24).await;
    let reserved: u64 = results
        .iter()
        .map(|x| u64::from(x.metadata.input_tokens.expect("counted")) + 24)
        .sum();
    assert!(reserved <= 512, "{reserved}");
    assert_eq!(most, reserved, "the four short requests ran together");
    // Long answers reserve a whole context (256) each: two at a time, the
    // other two wait in the worker and run when the first end, none fails.
    let (most, results) = run(1000).await;
    assert_eq!(most, 512, "two long requests at a time, never more");
    assert_eq!(results.len(), 4);
    assert_eq!(r.metrics().cache_tokens_reserved, 0, "released at the end");
    // While two long requests fill the cache, a third waits in the worker:
    // past its deadline it ends as a timeout without running, a fourth
    // dropped while it waits is cancelled, and the two go on. The two are
    // held to a long answer, so they cannot end early and free the cache
    // before the third's deadline: they end at the context's end.
    let long = |r: LocalGgufRunner, timeout: Option<Duration>| async move {
        let o = ExecutionOptions {
            max_tokens: Some(1000),
            temperature: Some(0.0),
            timeout,
            response_format: long_answer(),
            ..Default::default()
        };
        r.execute("Count from one to a thousand, in words.", Some(o))
            .await
    };
    let a = tokio::spawn(long(r.clone(), None));
    let b = tokio::spawn(long(r.clone(), None));
    until("two requests to start", Duration::from_secs(60), || {
        r.metrics().cache_tokens_reserved == 512
    })
    .await;
    let late = tokio::spawn(long(r.clone(), Some(Duration::from_millis(600))));
    let dropped = tokio::spawn(long(r.clone(), None));
    until(
        "four requests in the worker",
        Duration::from_secs(10),
        || r.metrics().slots_busy == 4,
    )
    .await;
    let waited = r.metrics();
    assert_eq!(
        (waited.requests_started, waited.cache_tokens_reserved),
        (2, 512)
    );
    let cancelled = waited.requests_cancelled;
    dropped.abort();
    match late.await.unwrap() {
        Err(SlmRunnerError::ExecutionTimeout { .. }) => {}
        other => panic!("the waiting request past its deadline: {other:?}"),
    }
    until(
        "the dropped request to be cancelled",
        Duration::from_secs(10),
        || {
            let m = r.metrics();
            m.requests_cancelled == cancelled + 1 && m.slots_busy <= 2
        },
    )
    .await;
    for j in [a, b] {
        let done = j.await.unwrap().expect("the long requests finish");
        let n = done.metadata.output_tokens.expect("counted");
        assert!(n >= 150, "held to the context's end, ran {n} tokens");
    }
    let m = r.metrics();
    assert_eq!(
        (m.slots_busy, m.cache_tokens_reserved, m.requests_started),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn one_at_a_time_holds_one_context() {
    let _g = serial();
    let r = builder()
        .slots(4)
        .cache_tokens(8192)
        .one_at_a_time(true)
        .build()
        .await
        .expect("runner");
    let m = r.metrics();
    assert_eq!((m.slots, m.cache_tokens), (1, 2048));
    // Its estimate is the model and one context's cache: below the default
    // runner's, which holds four contexts for eight slots.
    let d = runner(8).await.metrics();
    assert_eq!((d.slots, d.cache_tokens), (8, 8192));
    assert!(m.memory_estimate_mb < d.memory_estimate_mb);
}

/// Issue 22, item 3: the estimate a worker leases (model + shared cache +
/// buffers) against the kernel's `VmHWM` of a fresh worker after 1, 4 and
/// 8 concurrent requests of short and of long prompts: within 10 % each
/// time (llama.cpp makes the whole cache resident when the context is
/// made, so the peak follows the cache's size, not what the requests hold).
#[tokio::test]
async fn the_memory_estimate_holds_for_1_4_and_8_requests_short_and_long() {
    let _g = serial();
    let long = "Summarise this text. ".to_string()
        + &"The quick brown fox jumps over the lazy dog near the river bank. ".repeat(24);
    for (n, prompt, cache) in [
        (1, "Name a colour.", 8192),
        (4, "Name a colour.", 8192),
        (8, "Name a colour.", 8192),
        (1, long.as_str(), 8192),
        (4, long.as_str(), 8192),
        (8, long.as_str(), 8192),
        // A cache four times larger: the estimate follows it.
        (8, long.as_str(), 32768),
    ] {
        let mut roomy = profile();
        roomy.resources.max_memory_mb = 2048;
        let r = LocalGgufRunner::builder(model_path(), roomy, ModelResourceRequirements::default())
            .worker_path(worker())
            .slots((cache / 2048).max(8))
            .cache_tokens(cache)
            .build()
            .await
            .expect("runner");
        let jobs: Vec<_> = (0..n)
            .map(|i| {
                let (r, p) = (r.clone(), format!("{prompt} ({i})"));
                tokio::spawn(async move { r.execute(&p, Some(options(8, 0.0, 1))).await })
            })
            .collect();
        let mut input = 0;
        for j in jobs {
            input = j
                .await
                .unwrap()
                .expect("answered")
                .metadata
                .input_tokens
                .unwrap();
        }
        let m = r.metrics();
        let peak = m.memory_peak_mb.expect("the kernel's VmHWM");
        let estimate = m.memory_estimate_mb as f64;
        let off = (peak - estimate).abs() / estimate;
        eprintln!("{n} request(s) of {input} prompt tokens, cache {cache}: VmHWM {peak:.1} MB, estimate {estimate} MB ({:+.1} %)", (peak / estimate - 1.0) * 100.0);
        assert!(
            off <= 0.10,
            "{n} request(s) of {input} tokens: VmHWM {peak:.1} MB against an estimate of {estimate} MB"
        );
    }
}

/// Requests waiting in the worker for room in the cache start fairly
/// between agents: when a long request of alice's ends, bob's waiting one
/// starts before alice's older one (alice already runs one, bob none).
#[tokio::test]
#[allow(deprecated)] // a runner built alone: the agent comes with the options
async fn waiting_requests_start_fairly_between_agents() {
    let _g = serial();
    let r = builder()
        .slots(4)
        .context_size(128)
        .cache_tokens(256)
        .build()
        .await
        .expect("runner");
    r.preload().await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let long = |agent: &'static str, n: u32, max_tokens: u32| {
        let (r, order) = (r.clone(), order.clone());
        async move {
            let o = ExecutionOptions {
                agent_id: Some(agent.into()),
                max_tokens: Some(max_tokens),
                temperature: Some(0.0),
                response_format: long_answer(),
                ..Default::default()
            };
            // A request of 1000 tokens fills its context (128 tokens):
            // of two such, the one that starts first ends first.
            let done = r
                .execute("Count from one to a thousand, in words.", Some(o))
                .await
                .expect("answered");
            order.lock().unwrap().push((agent, n));
            done
        }
    };
    let mut jobs = Vec::new();
    // Alice's first is short (it ends first, leaving room for one long
    // request), her second and third fill their context: the third waits.
    for n in 1..=3 {
        jobs.push(tokio::spawn(long(
            "alice",
            n,
            if n == 1 { 40 } else { 1000 },
        )));
        let want = n.min(2) as u64;
        until(
            "alice's requests to reach the worker",
            Duration::from_secs(60),
            || {
                let m = r.metrics();
                m.requests_started == want && m.slots_busy == n as usize
            },
        )
        .await;
    }
    jobs.push(tokio::spawn(long("bob", 1, 1000)));
    until(
        "bob's request to reach the worker",
        Duration::from_secs(10),
        || r.metrics().slots_busy == 4,
    )
    .await;
    for j in jobs {
        let done = j.await.unwrap();
        assert_eq!(
            done.metadata.finish_reason,
            Some(FinishReason::Length),
            "{done:?}"
        );
    }
    // When alice's first ended, bob's request started, not her older
    // third (FIFO would have started hers, and it would have ended first).
    let order = order.lock().unwrap().clone();
    let at = |who: (&str, u32)| order.iter().position(|&o| o == who).unwrap();
    assert!(
        at(("bob", 1)) < at(("alice", 3)),
        "bob's request waited behind alice's third: {order:?}"
    );
}
