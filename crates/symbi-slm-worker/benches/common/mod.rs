//! Helpers shared by the worker's benchmarks.

use std::path::PathBuf;

use symbiont_runtime::config::default_model_path;
use symbiont_slm_protocol::{GenerateRequest, Sampling};

/// The prompt every benchmark generates from.
pub const PROMPT: &str = "Explain quantum computing in simple words.";
/// Different prompts, for requests at once (one each).
#[allow(dead_code)] // not every bench runs many requests
pub const PROMPTS: [&str; 8] = [
    "Explain quantum computing in simple words.",
    "Write a short story about a lighthouse keeper.",
    "Describe how a bicycle works.",
    "What are the benefits of drinking water?",
    "Explain why the sky is blue.",
    "Describe a walk through a forest in autumn.",
    "How do airplanes stay in the air?",
    "Write a letter to a friend about a trip to the sea.",
];

/// Tokens generated per request.
pub const TOKENS: u32 = 64;

/// `[ROUNDS THREADS]` from the command line (cargo's own `--bench` flags
/// skipped), and the default model's path.
pub fn setup(default_rounds: usize) -> (usize, u32, PathBuf) {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rounds = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_rounds);
    let threads = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let model = default_model_path().expect("HOME must be set");
    assert!(
        model.is_file(),
        "default model missing at {}: run scripts/setup.sh",
        model.display()
    );
    (rounds, threads, model)
}

/// The median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The smallest and largest of `v`.
pub fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// `median [min–max]` of `v`, scaled by `k`.
#[allow(dead_code)] // used by sandbox_cost, not by overhead
pub fn summary(v: &[f64], k: f64) -> String {
    let (lo, hi) = spread(v);
    format!("{:.3} [{:.3}–{:.3}]", median(v) * k, lo * k, hi * k)
}

/// A greedy chat request for [`PROMPT`], [`TOKENS`] tokens.
#[allow(dead_code)] // not every bench sends protocol requests itself
pub fn greedy_request(id: u64) -> GenerateRequest {
    GenerateRequest {
        id,
        prompt: PROMPT.into(),
        chat: true,
        history: vec![],
        max_tokens: TOKENS,
        sampling: Sampling {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 1,
        },
        stop: vec![],
        timeout_ms: 60_000,
        embed: false,
        cache_key: 0,
        constraint: None,
        tools: None,
    }
}
