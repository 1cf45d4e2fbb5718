//! The service's router in this process (`tower::ServiceExt::oneshot`),
//! over a pool whose model is a fake runner: every status the APIs
//! answer, each limit, and the metrics that count them, without a worker,
//! a socket or a sleep.
//!
//! The fake answers by the prompt: `fail:KIND` ends with that runner
//! error, `late:KIND` with that error after a first piece of text,
//! `text-then-hold` holds after a first piece of text, `hold` waits until the test releases it (and says when it
//! started and when its stream was dropped), anything else is echoed in
//! three pieces.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use symbiont_runtime::config::{ModelResourceRequirements, SandboxProfile, Slm};
use symbiont_runtime::models::{
    ExecutionMetadata, ExecutionOptions, ExecutionResult, FinishReason, ModelCatalog, ModelPool,
    ResourceLimit, RunnerInfo, SlmRunner, SlmRunnerError, StreamEvent, WorkerLoss,
};
use symbiont_service::Service;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

const A1: &str = "symbi_test_token_of_agent_a1";
const A2: &str = "symbi_test_token_of_agent_a2";
const A3: &str = "symbi_test_token_of_agent_a3";
const SCRAPER: &str = "symbi_test_token_of_the_scraper";
/// How long a test waits for an event before it fails.
const WITHIN: Duration = Duration::from_secs(10);

fn hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// What the fake runner's `hold` requests wait on and report.
#[derive(Debug)]
struct Gate {
    /// A permit lets one held request go on.
    open: Semaphore,
    /// Notified when a held request starts.
    started: Notify,
    /// Held requests whose stream was dropped before they ended.
    dropped: AtomicUsize,
    dropped_note: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            open: Semaphore::new(0),
            started: Notify::new(),
            dropped: AtomicUsize::new(0),
            dropped_note: Notify::new(),
        }
    }
}

#[derive(Debug)]
struct Fake {
    profile: SandboxProfile,
    needs: ModelResourceRequirements,
    gate: Arc<Gate>,
}

/// Counts a held request's stream dropped before its end.
struct DropGuard(Arc<Gate>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
            self.0.dropped_note.notify_one();
        }
    }
}

fn failure(kind: &str) -> SlmRunnerError {
    match kind {
        "context" => SlmRunnerError::ContextLengthExceeded {
            prompt_tokens: 5000,
            context_size: 2048,
        },
        "overloaded" => SlmRunnerError::Overloaded {
            capacity: 4,
            queued: 4,
            retry_after: Duration::from_millis(6500),
        },
        "timeout" => SlmRunnerError::ExecutionTimeout { seconds: 30.0 },
        "memory" => SlmRunnerError::ResourceLimitExceeded {
            limit: ResourceLimit::Memory,
            detail: "the worker used 600 MB of 512 MB".into(),
        },
        "sandbox" => SlmRunnerError::SandboxViolation {
            control: "process_limits.max_processes".into(),
            detail: "the worker tried to start a process".into(),
        },
        "crash" => SlmRunnerError::WorkerCrashed {
            cause: WorkerLoss::Signalled { signal: 11 },
            stderr_tail: "segfault".into(),
        },
        "upstream" => SlmRunnerError::Remote {
            status: 500,
            endpoint: "https://provider.example/v1".into(),
            detail: "secret provider details".into(),
        },
        "upstream-key" => SlmRunnerError::Remote {
            status: 401,
            endpoint: "https://provider.example/v1".into(),
            detail: "bad key".into(),
        },
        "upstream-busy" => SlmRunnerError::Remote {
            status: 429,
            endpoint: "https://provider.example/v1".into(),
            detail: "slow down".into(),
        },
        "unavailable" => SlmRunnerError::InitializationFailed {
            reason: "the worker could not start".into(),
        },
        other => panic!("the fake knows no failure `{other}`"),
    }
}

fn result(text: &str, pieces: u32) -> ExecutionResult {
    ExecutionResult {
        response: text.to_string(),
        tool_calls: vec![],
        metadata: ExecutionMetadata {
            input_tokens: Some(7),
            output_tokens: Some(pieces),
            execution_time_ms: 1.0,
            finish_reason: Some(FinishReason::Stop),
            ..Default::default()
        },
    }
}

#[async_trait::async_trait]
impl SlmRunner for Fake {
    async fn execute(
        &self,
        prompt: &str,
        options: Option<ExecutionOptions>,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let mut text = String::new();
        let mut events = self.execute_stream(prompt, options);
        while let Some(e) = events.next().await {
            match e? {
                StreamEvent::Token(t) => text.push_str(&t),
                StreamEvent::Done(r) => return Ok(*r),
                _ => {}
            }
        }
        panic!("the fake's stream ended without a result ({text})");
    }

    fn execute_stream<'a>(
        &'a self,
        prompt: &'a str,
        _options: Option<ExecutionOptions>,
    ) -> BoxStream<'a, Result<StreamEvent, SlmRunnerError>> {
        let gate = self.gate.clone();
        if prompt == "text-then-hold" {
            // One piece now; the rest once the test lets it go.
            let first = futures::stream::iter([Ok(StreamEvent::Token("echo".into()))]);
            let rest = futures::stream::once(async move {
                let mut guard = DropGuard(gate.clone(), false);
                gate.started.notify_one();
                gate.open.acquire().await.unwrap().forget();
                guard.1 = true;
                futures::stream::iter([
                    Ok(StreamEvent::Token(" after".into())),
                    Ok(StreamEvent::Done(Box::new(result("echo after", 2)))),
                ])
            })
            .flatten();
            return first.chain(rest).boxed();
        }
        futures::stream::once(async move {
            if let Some(kind) = prompt.strip_prefix("fail:") {
                return vec![Err(failure(kind))];
            }
            if let Some(kind) = prompt.strip_prefix("late:") {
                return vec![Ok(StreamEvent::Token("echo".into())), Err(failure(kind))];
            }
            if prompt == "whoami" {
                // The request id the runner runs under.
                let id = symbiont_runtime::audit::current_request_id()
                    .map_or("none".to_string(), |id| id.to_string());
                return vec![
                    Ok(StreamEvent::Token(id.clone())),
                    Ok(StreamEvent::Done(Box::new(result(&id, 1)))),
                ];
            }
            if prompt == "hold" {
                let mut guard = DropGuard(gate.clone(), false);
                gate.started.notify_one();
                gate.open.acquire().await.unwrap().forget();
                guard.1 = true;
            }

            let pieces = ["echo", ": ", prompt];
            let mut events: Vec<_> = pieces
                .iter()
                .map(|p| Ok(StreamEvent::Token(p.to_string())))
                .collect();
            events.push(Ok(StreamEvent::Done(Box::new(result(&pieces.concat(), 3)))));
            events
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    fn get_sandbox_profile(&self) -> &SandboxProfile {
        &self.profile
    }

    fn get_resource_requirements(&self) -> &ModelResourceRequirements {
        &self.needs
    }

    async fn health_check(&self) -> Result<(), SlmRunnerError> {
        Ok(())
    }

    fn get_info(&self) -> RunnerInfo {
        RunnerInfo {
            runner_type: "Fake".into(),
            model_path: None,
            model: Default::default(),
            worker_version: None,
            loaded: true,
            sandbox_layers: vec![],
            sandbox_gaps: vec![],
        }
    }
}

/// A service whose models `fake` (agents a1, a2, a3) and `other` (a2
/// only) are fakes sharing `gate`; one request per agent at a time, two
/// in all.
fn service(gate: Arc<Gate>) -> Service {
    service_with(gate, None)
}

/// [`service`], its pool's audit events to `audit`.
fn service_with(gate: Arc<Gate>, audit: Option<symbiont_runtime::audit::AuditLog>) -> Service {
    let config = format!(
        r#"[slm]
enabled = true
[[slm.model_allow_lists.global_models]]
id = "fake"
name = "Fake"
provider = {{ LocalFile = {{ file_path = "/nonexistent/fake.gguf" }} }}
capabilities = ["TextGeneration"]
[[slm.model_allow_lists.global_models]]
id = "other"
name = "Other"
provider = {{ LocalFile = {{ file_path = "/nonexistent/other.gguf" }} }}
capabilities = ["TextGeneration"]
[slm.model_allow_lists.agent_model_maps]
a1 = ["fake"]
a2 = ["fake", "other"]
a3 = ["fake"]
[slm.service]
max_body_bytes = 4096
max_prompt_bytes = 1024
max_concurrent_per_agent = 1
max_concurrent_requests = 2
metrics_token = "{scraper}"
[slm.service.agent_tokens]
a1 = "{a1}"
a2 = "{a2}"
a3 = "{a3}"
"#,
        scraper = hash(SCRAPER),
        a1 = hash(A1),
        a2 = hash(A2),
        a3 = hash(A3),
    );
    let slm = Slm::from_toml_str(&config).expect("config");
    let fake = |gate: &Arc<Gate>| -> Arc<dyn SlmRunner> {
        Arc::new(Fake {
            profile: SandboxProfile::standard(),
            needs: ModelResourceRequirements::default(),
            gate: gate.clone(),
        })
    };
    let mut pool = ModelPool::builder(ModelCatalog::new(slm).expect("catalog"))
        .runner("fake", fake(&gate))
        .runner("other", fake(&gate));
    if let Some(a) = audit {
        pool = pool.audit_log(a);
    }
    Service::new(pool.build().expect("pool"))
}

fn post(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn chat(model: &str, prompt: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    })
    .to_string()
}

async fn send(s: &Service, request: Request<Body>) -> Response {
    tokio::time::timeout(WITHIN, s.router().oneshot(request))
        .await
        .expect("an answer in time")
        .unwrap()
}

async fn body_of(r: Response) -> String {
    let bytes = tokio::time::timeout(WITHIN, r.into_body().collect())
        .await
        .expect("the whole body in time")
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Status, `Retry-After` and the JSON body of an answer.
async fn answer(s: &Service, request: Request<Body>) -> (u16, Option<String>, serde_json::Value) {
    let r = send(s, request).await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let text = body_of(r).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, retry, json)
}

/// `symbi_slm_requests_total` for these labels in `/metrics`.
async fn requests(s: &Service, labels: &[&str]) -> f64 {
    let r = send(
        s,
        Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {SCRAPER}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = body_of(r).await;
    text.lines()
        .filter(|l| l.starts_with("symbi_slm_requests_total{"))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn every_refusal_has_its_status_code_and_name() {
    let s = service(Arc::default());
    let chat_path = "/v1/chat/completions";
    let cases: Vec<(&str, Request<Body>, u16, &str)> = vec![
        (
            "no token",
            post(chat_path, None, &chat("fake", "hi", false)),
            401,
            "missing_api_key",
        ),
        (
            "a wrong token",
            post(chat_path, Some("symbi_wrong"), &chat("fake", "hi", false)),
            401,
            "invalid_api_key",
        ),
        (
            "a model the agent may not use",
            post(chat_path, Some(A1), &chat("other", "hi", false)),
            403,
            "model_access_denied",
        ),
        (
            "an unknown model",
            post(chat_path, Some(A1), &chat("nope", "hi", false)),
            404,
            "model_not_found",
        ),
        (
            "an unknown route",
            post("/v1/nothing", Some(A1), "{}"),
            404,
            "unknown_url",
        ),
        (
            "not JSON",
            Request::post(chat_path)
                .header(header::AUTHORIZATION, format!("Bearer {A1}"))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("hi"))
                .unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            "a body past max_body_bytes",
            post(chat_path, Some(A1), &chat("fake", &"x".repeat(5000), false)),
            413,
            "body_too_large",
        ),
        (
            "a prompt past max_prompt_bytes",
            post(chat_path, Some(A1), &chat("fake", &"x".repeat(2000), false)),
            400,
            "prompt_too_large",
        ),
        (
            "a field of the wrong type",
            post(chat_path, Some(A1), r#"{"model": "fake", "messages": 3}"#),
            400,
            "invalid_request",
        ),
        (
            "two choices",
            post(
                chat_path,
                Some(A1),
                r#"{"model": "fake", "n": 2, "messages": [{"role": "user", "content": "hi"}]}"#,
            ),
            400,
            "unsupported_parameter",
        ),
        (
            "a prompt longer than the context",
            post(chat_path, Some(A1), &chat("fake", "fail:context", false)),
            400,
            "context_length_exceeded",
        ),
        (
            "a full queue",
            post(chat_path, Some(A1), &chat("fake", "fail:overloaded", false)),
            429,
            "model_overloaded",
        ),
        (
            "a provider that rate-limits",
            post(
                chat_path,
                Some(A1),
                &chat("fake", "fail:upstream-busy", false),
            ),
            429,
            "model_overloaded",
        ),
        (
            "a memory limit",
            post(chat_path, Some(A1), &chat("fake", "fail:memory", false)),
            500,
            "resource_limit",
        ),
        (
            "a sandbox violation",
            post(chat_path, Some(A1), &chat("fake", "fail:sandbox", false)),
            500,
            "sandbox_violation",
        ),
        (
            "a crashed worker",
            post(chat_path, Some(A1), &chat("fake", "fail:crash", false)),
            500,
            "worker_crashed",
        ),
        (
            "a provider's error",
            post(chat_path, Some(A1), &chat("fake", "fail:upstream", false)),
            502,
            "upstream_error",
        ),
        (
            "a provider that refuses the key",
            post(
                chat_path,
                Some(A1),
                &chat("fake", "fail:upstream-key", false),
            ),
            502,
            "upstream_authentication",
        ),
        (
            "a model that cannot run",
            post(
                chat_path,
                Some(A1),
                &chat("fake", "fail:unavailable", false),
            ),
            503,
            "model_unavailable",
        ),
        (
            "a request out of time",
            post(chat_path, Some(A1), &chat("fake", "fail:timeout", false)),
            504,
            "timeout",
        ),
    ];
    let mut by_status = std::collections::BTreeMap::<u16, f64>::new();
    for (what, request, status, code) in cases {
        let (got, retry, body) = answer(&s, request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{what}: {body}");
        assert!(
            !message.contains("secret provider details"),
            "{what}: a provider's words reach the client: {body}"
        );
        match status {
            429 => assert!(retry.is_some(), "{what}: no Retry-After"),
            _ => assert_eq!(retry, None, "{what}"),
        }
        // A path that is no endpoint is answered, not counted: label
        // values come only from the routes.
        if what != "an unknown route" {
            *by_status.entry(status).or_default() += 1.0;
        }
    }
    // The runner's own wait, rounded up to whole seconds.
    let (_, retry, _) = answer(
        &s,
        post(chat_path, Some(A1), &chat("fake", "fail:overloaded", false)),
    )
    .await;
    assert_eq!(retry.as_deref(), Some("7"));
    *by_status.entry(429).or_default() += 1.0;
    // The allowed twin: the same agent, model and route answer, with the
    // request's id in `x-request-id` as in the body.
    let r = send(&s, post(chat_path, Some(A1), &chat("fake", "hi", false))).await;
    let got = r.status().as_u16();
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = serde_json::from_str(&body_of(r).await).unwrap();
    assert_eq!(got, 200, "{body}");
    assert_eq!(body["id"], request_id.as_str());
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    *by_status.entry(200).or_default() += 1.0;
    // Each answer counted once, under its status.
    for (status, n) in by_status {
        let label = format!("status=\"{status}\"");
        assert_eq!(requests(&s, &[&label]).await, n, "status {status}");
    }
}

#[tokio::test]
async fn the_three_apis_refuse_alike() {
    let s = service(Arc::default());
    let anthropic = |prompt: &str| {
        serde_json::json!({
            "model": "fake",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string()
    };
    let native = |prompt: &str| serde_json::json!({"model": "fake", "prompt": prompt}).to_string();
    for (path, body) in [
        ("/v1/messages", &anthropic as &dyn Fn(&str) -> String),
        ("/v1/execute", &native),
        ("/v1/chat/completions", &|p: &str| chat("fake", p, false)),
    ] {
        // Anthropic's API says "overloaded" with its own 529.
        let overloaded = if path == "/v1/messages" { 529 } else { 429 };
        for (prompt, status) in [
            ("hi", 200),
            ("fail:context", 400),
            ("fail:overloaded", overloaded),
            ("fail:crash", 500),
            ("fail:upstream", 502),
            ("fail:timeout", 504),
        ] {
            let r = send(&s, post(path, Some(A1), &body(prompt))).await;
            assert_eq!(r.status().as_u16(), status, "{path} {prompt}");
            assert_eq!(
                r.headers().contains_key(header::RETRY_AFTER),
                status == overloaded,
                "{path} {prompt}"
            );
            let text = body_of(r).await;
            if status == 200 {
                assert!(text.contains("echo: hi"), "{path}: {text}");
            }
        }
        let (got, _, _) = answer(&s, post(path, None, &body("hi"))).await;
        assert_eq!(got, 401, "{path}");
        // A prompt past max_prompt_bytes: a 400 naming the field it came in.
        let r = send(&s, post(path, Some(A1), &body(&"x".repeat(2000)))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let v: serde_json::Value = serde_json::from_str(&body_of(r).await).unwrap();
        let (field, what) = match path {
            "/v1/execute" => ("prompt", "the prompt and its history"),
            "/v1/messages" => ("messages", "the system text and messages"),
            _ => ("messages", "the messages"),
        };
        // (Anthropic's message leads with the code in brackets.)
        let message = v["error"]["message"].as_str().unwrap();
        let message = message
            .strip_prefix("[prompt_too_large] ")
            .unwrap_or(message);
        assert!(message.starts_with(what), "{path}: {v}");
        if path != "/v1/messages" {
            // (Anthropic's error shape has no `param`.)
            assert_eq!(v["error"]["param"], field, "{path}: {v}");
        }
    }
}

#[tokio::test]
async fn past_its_limit_an_agent_or_the_service_answers_429_and_others_go_on() {
    let gate = Arc::new(Gate::default());
    let s = service(gate.clone());
    let path = "/v1/chat/completions";
    // a1's first request holds its only place.
    let held = tokio::spawn({
        let s = s.clone();
        async move { answer(&s, post(path, Some(A1), &chat("fake", "hold", false))).await }
    });
    tokio::time::timeout(WITHIN, gate.started.notified())
        .await
        .expect("the held request starts");
    let (status, retry, body) = answer(&s, post(path, Some(A1), &chat("fake", "hi", false))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "agent_concurrency_limit");
    assert_eq!(retry.as_deref(), Some("1"));
    // Another agent is not held back by a1's limit.
    let (status, _, body) = answer(&s, post(path, Some(A2), &chat("fake", "hi", false))).await;
    assert_eq!(status, 200, "{body}");
    // a2 holds the service's second place: a3, with none of its own in
    // progress, meets the service's limit.
    let held2 = tokio::spawn({
        let s = s.clone();
        async move { answer(&s, post(path, Some(A2), &chat("fake", "hold", false))).await }
    });
    tokio::time::timeout(WITHIN, gate.started.notified())
        .await
        .expect("the second held request starts");
    let (status, retry, body) = answer(&s, post(path, Some(A3), &chat("fake", "hi", false))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "concurrency_limit");
    assert_eq!(retry.as_deref(), Some("1"));
    // Released, the held requests end well and their places are free
    // again.
    gate.open.add_permits(2);
    for held in [held, held2] {
        let (status, _, body) = held.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "echo: hold");
    }
    let (status, _, _) = answer(&s, post(path, Some(A3), &chat("fake", "hi", false))).await;
    assert_eq!(status, 200);
    let (status, _, _) = answer(&s, post(path, Some(A1), &chat("fake", "hi", false))).await;
    assert_eq!(status, 200);
    assert_eq!(requests(&s, &["agent=\"a1\"", "status=\"429\""]).await, 1.0);
    assert_eq!(requests(&s, &["agent=\"a1\"", "status=\"200\""]).await, 2.0);
    assert_eq!(requests(&s, &["agent=\"a2\"", "status=\"200\""]).await, 2.0);
    assert_eq!(requests(&s, &["agent=\"a3\"", "status=\"429\""]).await, 1.0);
}

#[tokio::test]
async fn a_stream_ends_with_done_and_a_client_that_leaves_cancels_its_request() {
    let gate = Arc::new(Gate::default());
    let s = service(gate.clone());
    let path = "/v1/chat/completions";
    let r = send(&s, post(path, Some(A1), &chat("fake", "hi", true))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "text/event-stream"
    );
    let text = body_of(r).await;
    let pieces: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(pieces, "echo: hi");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // A refusal before the first event is still an HTTP status.
    let (status, retry, body) = answer(
        &s,
        post(path, Some(A1), &chat("fake", "fail:overloaded", true)),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (429, Some("7")), "{body}");
    // An error after the first event ends the stream with an error event
    // (no `[DONE]`), counted with the status it would have had.
    let r = send(&s, post(path, Some(A1), &chat("fake", "late:crash", true))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = body_of(r).await;
    let last: serde_json::Value = serde_json::from_str(
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["error"]["code"], "worker_crashed", "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(requests(&s, &["agent=\"a1\"", "status=\"500\""]).await, 1.0);
    // A client that goes away while its request runs: the handler's
    // future is dropped, the fake's stream with it, and the request is
    // counted as 499.
    let handler = tokio::spawn({
        let s = s.clone();
        async move { send(&s, post(path, Some(A1), &chat("fake", "hold", true))).await }
    });
    tokio::time::timeout(WITHIN, gate.started.notified())
        .await
        .expect("the held request starts");
    handler.abort();
    tokio::time::timeout(WITHIN, gate.dropped_note.notified())
        .await
        .expect("the request's stream is dropped");
    assert_eq!(gate.dropped.load(Ordering::SeqCst), 1);
    // The place the request held is free again.
    let (status, _, body) = answer(&s, post(path, Some(A1), &chat("fake", "hi", false))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(requests(&s, &["agent=\"a1\"", "status=\"499\""]).await, 1.0);
    // The same once the stream has begun (its 200 sent, the request and
    // its place moved into the body): a client that drops the body after
    // the first text stops the request and frees the place.
    let r = send(
        &s,
        post(path, Some(A1), &chat("fake", "text-then-hold", true)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"echo\"") {
        let frame = tokio::time::timeout(WITHIN, body.frame())
            .await
            .expect("a chunk in time")
            .expect("more of the stream")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    tokio::time::timeout(WITHIN, gate.started.notified())
        .await
        .expect("the request holds after its first text");
    drop(body);
    tokio::time::timeout(WITHIN, gate.dropped_note.notified())
        .await
        .expect("the request's stream is dropped");
    assert_eq!(gate.dropped.load(Ordering::SeqCst), 2);
    let (status, _, body) = answer(&s, post(path, Some(A1), &chat("fake", "hi", false))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(requests(&s, &["agent=\"a1\"", "status=\"499\""]).await, 2.0);
}

#[test]
fn a_runner_for_a_model_the_catalog_lacks_is_refused() {
    let slm = Slm::from_toml_str(
        "[slm]\nenabled = true\n[[slm.model_allow_lists.global_models]]\nid = \"fake\"\nname = \"Fake\"\nprovider = { LocalFile = { file_path = \"/nonexistent/fake.gguf\" } }\ncapabilities = [\"TextGeneration\"]\n",
    )
    .unwrap();
    let fake = || -> Arc<dyn SlmRunner> {
        Arc::new(Fake {
            profile: SandboxProfile::standard(),
            needs: ModelResourceRequirements::default(),
            gate: Arc::default(),
        })
    };
    let catalog = || ModelCatalog::new(slm.clone()).unwrap();
    match ModelPool::builder(catalog()).runner("nope", fake()).build() {
        Err(SlmRunnerError::UnknownModel { model_id }) => assert_eq!(model_id, "nope"),
        other => panic!("{other:?}"),
    }
    assert!(ModelPool::builder(catalog())
        .runner("fake", fake())
        .build()
        .is_ok());
}

#[tokio::test]
async fn health_ready_and_models_answer_without_a_worker() {
    let s = service(Arc::default());
    let get = |path: &str, token: Option<&str>| {
        let mut r = Request::get(path);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(
        send(&s, get("/health", None)).await.status(),
        StatusCode::OK
    );
    let r = send(&s, get("/ready", None)).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", body_of(r).await);
    // Each agent sees the models it may use.
    let (status, _, body) = answer(&s, get("/v1/models", Some(A1))).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["fake"]);
    let (_, _, body) = answer(&s, get("/v1/models", Some(A2))).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    // One model: the agent's own; another's is not told apart from none.
    let (status, _, body) = answer(&s, get("/v1/models/fake", Some(A1))).await;
    assert_eq!((status, body["id"].as_str()), (200, Some("fake")), "{body}");
    for ghost in ["other", "ghost", "org/ghost"] {
        let r = send(&s, get(&format!("/v1/models/{ghost}"), Some(A1))).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{ghost}");
        assert!(r.headers().contains_key("x-request-id"), "{ghost}");
        let v: serde_json::Value = serde_json::from_str(&body_of(r).await).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{ghost}: {v}");
    }
    let (status, _, body) = answer(&s, get("/v1/models/other", Some(A2))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        send(&s, get("/v1/models/fake", None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The metrics need the scraper's token, not an agent's.
    assert_eq!(
        send(&s, get("/metrics", Some(A1))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&s, get("/metrics", Some(SCRAPER))).await.status(),
        StatusCode::OK
    );
}

/// An answer's `x-request-id` is the id its audit events carry and its
/// runner's request runs under: a refused token (401, audited without the
/// token), a refused model (403), a whole answer, and a stream that the
/// connection reads after the handler has returned.
#[tokio::test]
async fn the_request_id_links_an_answer_to_its_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let audit = symbiont_runtime::audit::AuditLog::to_file(&log).unwrap();
    let s = service_with(Arc::new(Gate::default()), Some(audit));
    let id_of = |r: &Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    let forged = "symbi_forged_token_0123456789";
    let r = send(
        &s,
        post(
            "/v1/chat/completions",
            Some(forged),
            &chat("fake", "hi", false),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let refused_token = id_of(&r);
    let r = send(
        &s,
        post("/v1/chat/completions", None, &chat("fake", "hi", false)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let no_token = id_of(&r);
    let r = send(
        &s,
        post(
            "/v1/chat/completions",
            Some(A1),
            &chat("other", "hi", false),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let refused_model = id_of(&r);
    for stream in [false, true] {
        let r = send(
            &s,
            post(
                "/v1/chat/completions",
                Some(A1),
                &chat("fake", "whoami", stream),
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let id = id_of(&r);
        assert!(id.starts_with("chatcmpl-"), "{id}");
        let body = body_of(r).await;
        assert!(
            body.contains(&id),
            "stream {stream}: the runner ran under another id: {body}"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(forged),
        "the token reached the audit log: {text}"
    );
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let event = |id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no event of request {id}: {text}"))
    };
    assert_eq!(event(&refused_token)["kind"], "authentication_failed");
    assert!(event(&refused_token)["detail"]
        .as_str()
        .unwrap()
        .contains("invalid_api_key"));
    assert_eq!(event(&no_token)["kind"], "authentication_failed");
    assert_eq!(event(&refused_model)["kind"], "access_refused");
    assert_eq!(event(&refused_model)["agent"], "a1");
}
