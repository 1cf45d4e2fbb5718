//! Helpers shared by the worker's integration tests.

use std::path::PathBuf;

use symbiont_runtime::config::default_model_path;
use symbiont_runtime::models::ResponseFormat;

/// The worker under test: the one cargo built, or `$SYMBI_SLM_WORKER`
/// (scripts/test-unprivileged copies both to a place an unprivileged user
/// can run).
pub fn worker() -> String {
    std::env::var("SYMBI_SLM_WORKER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_symbi-slm-worker").to_string())
}

/// The default model, which scripts/setup.sh fetches and verifies.
pub fn model_path() -> PathBuf {
    let p = default_model_path().expect("HOME or XDG_CACHE_HOME must be set");
    assert!(
        p.is_file(),
        "the default model is missing at {}: run scripts/setup.sh first",
        p.display()
    );
    p
}

/// One test at a time: each test's worker uses both cores, and OpenMP
/// threads of several workers spinning against each other collapse
/// throughput (measured: two workers of 2 threads each on 2 cores fall far
/// below one), which would turn timing into noise.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the one-test-at-a-time guard (a test that panicked does not
/// poison it for the others).
#[allow(dead_code)] // not every test binary runs models
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `standard` with a generous time limit: on a busy host two llama.cpp
/// threads beside other work can fall to a few tokens per second, and
/// queued requests wait their turn inside the same
/// limit. Tests that are about the limit set their own timeouts.
#[allow(dead_code)] // not every test binary runs models
pub fn profile() -> symbiont_runtime::config::SandboxProfile {
    let mut p = symbiont_runtime::config::SandboxProfile::standard();
    p.process_limits.max_execution_time_seconds = 600;
    p
}

/// Waits until `ready()` holds, looking every 5 ms; fails naming `what`
/// when it does not within `within` (a bound for a broken build, never a
/// claim about this host's speed).
#[allow(dead_code)] // not every test binary polls
pub async fn until(what: &str, within: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An answer that cannot end early: 4000 letters or spaces, more than any
/// test's context or token limit lets through. Unconstrained, the model
/// may answer "a long story" or "count to a thousand" in a dozen tokens
/// (it did once on CI); a test that needs a request to keep running, to
/// fill the cache or outlast a deadline, holds it to this.
#[allow(dead_code)] // not every test binary needs a long answer
pub fn long_answer() -> Option<ResponseFormat> {
    Some(ResponseFormat::Regex {
        pattern: "[a-z ]{4000}".into(),
    })
}
