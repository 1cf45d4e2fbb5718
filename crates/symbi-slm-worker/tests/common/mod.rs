//! Helpers shared by the worker's integration tests.

use std::path::PathBuf;

use symbiont_runtime::config::default_model_path;

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
