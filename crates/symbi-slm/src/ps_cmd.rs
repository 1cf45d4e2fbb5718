//! `symbi-slm ps`: what a running `serve` has loaded, from its `/v1/ps`.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use serde::Deserialize;

use crate::catalog_cmds;
use crate::output::out;
use crate::Failure;

/// The variable `ps` reads the operator's token from.
pub const TOKEN_ENV: &str = "SYMBI_SLM_OPERATOR_TOKEN";

/// `symbi-slm ps`
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The service's base URL (default: http:// and the config's
    /// slm.service.listen).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A file holding the operator's token (default:
    /// $SYMBI_SLM_OPERATOR_TOKEN; none: the service must have no agent
    /// tokens).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the service's answer as it is (JSON).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct Ps {
    models: Vec<PsModel>,
}

#[derive(Debug, Deserialize)]
struct PsModel {
    model: String,
    profile: String,
    provider: String,
    slots: usize,
    busy: usize,
    queued: usize,
    #[serde(default)]
    cache_tokens: u64,
    #[serde(default)]
    cache_tokens_reserved: u64,
    workers: Vec<Worker>,
}

#[derive(Debug, Deserialize)]
struct Worker {
    agent: Option<String>,
    pid: u32,
    slots: u32,
    busy: usize,
    queued: usize,
    memory_mb: Option<f64>,
    estimate_mb: u64,
    loaded_seconds: f64,
    keep_alive_left_seconds: Option<f64>,
    pinned: bool,
}

pub fn ps(args: PsArgs, config: Option<&Path>) -> Result<(), Failure> {
    let url = match args.url {
        Some(u) => u,
        None => {
            let (_, c) = catalog_cmds::catalog(config)?;
            format!("http://{}", c.config().service.listen)
        }
    };
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Failure::Input(anyhow!("--token-file {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
    };
    let endpoint = format!("{}/v1/ps", url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    let (status, body) = rt
        .block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?;
            let mut request = client.get(&endpoint);
            if let Some(t) = &token {
                request = request.bearer_auth(t);
            }
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        })
        .map_err(|e| Failure::Runtime(anyhow!("{endpoint}: {e}")))?;
    if !status.is_success() {
        let said = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        let hint = if status.as_u16() == 401 && token.is_none() {
            format!(" (no token given: set ${TOKEN_ENV} or --token-file)")
        } else {
            String::new()
        };
        return Err(Failure::Runtime(anyhow!(
            "{endpoint}: {status}: {said}{hint}"
        )));
    }
    if args.json {
        out!("{}", body.trim_end());
        return Ok(());
    }
    let ps: Ps = serde_json::from_str(&body)
        .map_err(|e| Failure::Runtime(anyhow!("{endpoint}: not a /v1/ps answer: {e}")))?;
    out!(
        "{:<24} {:<10} {:<10} {:>8} {:>6} {:>6} {:>13} {:>15} {:>10} {:>8}",
        "MODEL",
        "PROFILE",
        "AGENT",
        "PID",
        "SLOTS",
        "QUEUE",
        "KV CACHE",
        "MEMORY/EST MB",
        "UNLOAD IN",
        "LOADED"
    );
    for m in &ps.models {
        if m.workers.is_empty() {
            let what = if m.provider == "LocalFile" {
                "not loaded"
            } else {
                "remote"
            };
            out!(
                "{:<24} {:<10} {:<10} {:>8} {:>6} {:>6} {:>13} {:>15} {:>10} {:>8}",
                m.model,
                m.profile,
                "-",
                "-",
                format!("{}/{}", m.busy, m.slots),
                m.queued,
                "-",
                what,
                "-",
                "-"
            );
        }
        for w in &m.workers {
            let memory = match w.memory_mb {
                Some(mb) => format!("{mb:.0}/{}", w.estimate_mb),
                None => format!("?/{}", w.estimate_mb),
            };
            let unload = if w.pinned {
                "pinned".to_string()
            } else {
                w.keep_alive_left_seconds
                    .map_or_else(|| "busy".to_string(), duration)
            };
            out!(
                "{:<24} {:<10} {:<10} {:>8} {:>6} {:>6} {:>13} {:>15} {:>10} {:>8}",
                m.model,
                m.profile,
                w.agent.as_deref().unwrap_or("(shared)"),
                w.pid,
                format!("{}/{}", w.busy, w.slots),
                w.queued,
                // Tokens held by running requests / the cache (per model:
                // over its workers).
                format!(
                    "{}/{}",
                    m.cache_tokens_reserved,
                    m.cache_tokens.saturating_mul(m.workers.len() as u64)
                ),
                memory,
                unload,
                duration(w.loaded_seconds)
            );
        }
    }
    if ps.models.is_empty() {
        eprintln!("nothing loaded yet: a model's runner is built at its first request (pinned models at the start)");
    }
    Ok(())
}

/// `4m58s`, `12s`, `2h05m`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
