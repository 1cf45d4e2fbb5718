//! `symbi-slm config check`: every problem of a config in one run.
//!
//! First the file's own rules: every wrong type, unknown key and missing
//! field (read on past each), then every rule of the schema. Then, unless
//! `--schema-only`, what `run` and `serve` would refuse on this host, by
//! the same code they run: each local model's file present and a GGUF
//! file, and its runner built (nothing loaded) under the profiles it may
//! run under (`default_sandbox_profile` for `run`, `slm.service.sandbox_profile`
//! for `serve`): the memory estimate, threads, context and sandbox plan;
//! each remote model's URL, key variable and network policy; a HuggingFace
//! model pulled into the Hugging Face cache (and the pin to write when it
//! has none); each pinned model under the service's
//! profile; the listen address against the tokens. A problem is an error
//! when `run` and `serve` would both refuse, a warning when only one of
//! them would. Errors exit 2.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;
use symbiont_runtime::config::{locate_key, ConfigIssue, ModelProvider, Slm};
use symbiont_runtime::models::{digest, gguf, hub, ModelCatalog, ModelPool};

use crate::config_source::{self, Source};
use crate::output::out;
use crate::Failure;

/// `symbi-slm config check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The file (default: --config, $SYMBI_SLM_CONFIG, or the built-in).
    file: Option<PathBuf>,
    /// Print the findings as one JSON object.
    #[arg(long)]
    json: bool,
    /// Check only the file's own rules, not what this host would refuse
    /// (model files, the fit of models in their profiles, keys in the
    /// environment): for a config written on one machine for another.
    #[arg(long)]
    schema_only: bool,
    /// Worker executable for the host checks (default: $SYMBI_SLM_WORKER,
    /// else beside symbi-slm).
    #[arg(long, value_name = "PATH")]
    worker: Option<PathBuf>,
}

/// One finding: where and what.
#[derive(Debug, Serialize)]
struct Finding {
    /// `error` or `warning`.
    severity: &'static str,
    /// The key path (empty: the whole document or the host).
    key_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    message: String,
}

/// The findings of a check, and what the text is for locating keys.
struct Findings<'t> {
    text: Option<&'t str>,
    list: Vec<Finding>,
}

impl Findings<'_> {
    fn push(&mut self, severity: &'static str, key_path: String, message: String) {
        let at = self.text.and_then(|t| locate_key(t, &key_path));
        self.list.push(Finding {
            severity,
            line: at.map(|l| l.line),
            column: at.map(|l| l.column),
            key_path,
            message,
        });
    }
    fn issue(&mut self, i: ConfigIssue) {
        self.list.push(Finding {
            severity: "error",
            line: i.location.map(|l| l.line),
            column: i.location.map(|l| l.column),
            key_path: i.key_path,
            message: i.problem.to_string(),
        });
    }
    fn errors(&self) -> usize {
        self.list.iter().filter(|f| f.severity == "error").count()
    }
}

pub fn check(args: CheckArgs, config: Option<&Path>) -> Result<(), Failure> {
    let source = config_source::pick(args.file.as_deref().or(config));
    let text = match &source {
        Source::Flag(p) | Source::Env(p) => Some(read(p)?),
        Source::Builtin => None,
    };
    let (slm, issues) = match &text {
        Some(t) => Slm::diagnose_toml_str(t),
        None => {
            let slm = Slm::builtin();
            let issues = match slm.validate() {
                Ok(()) => Vec::new(),
                Err(e) => e.issues().to_vec(),
            };
            (Some(slm), issues)
        }
    };
    let mut f = Findings {
        text: text.as_deref(),
        list: Vec::new(),
    };
    let schema_clean = issues.is_empty();
    for i in issues {
        f.issue(i);
    }
    if let Some(slm) = &slm {
        if !args.schema_only {
            model_files(slm, &mut f);
            if schema_clean {
                host(slm, args.worker.as_deref(), &mut f)?;
            }
        }
    }
    let errors = f.errors();
    let warnings = f.list.len() - errors;
    if args.json {
        let v = serde_json::json!({
            "source": source.to_string(),
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "host_checked": !args.schema_only && schema_clean,
            "findings": f.list,
        });
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for x in &f.list {
            let at = match (x.line, x.column) {
                (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                _ => String::new(),
            };
            let key = if x.key_path.is_empty() {
                String::new()
            } else {
                format!("`{}`{at}: ", x.key_path)
            };
            out!("{}: {key}{}", x.severity, x.message);
        }
        match (&slm, errors) {
            (Some(slm), 0) => summary(&source, slm, warnings, args.schema_only),
            _ => out!("{source}: {errors} error(s), {warnings} warning(s)"),
        }
    }
    if errors > 0 {
        // Already printed, one line each: the exit code says the rest.
        return Err(Failure::Reported);
    }
    Ok(())
}

/// The file's text (a file that cannot be read as text is one error).
fn read(p: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(p).map_err(|e| Failure::Input(anyhow!("{}: {e}", p.display())))?;
    if !meta.is_file() {
        return Err(Failure::Input(anyhow!(
            "{}: not a regular file",
            p.display()
        )));
    }
    if meta.len() > symbiont_runtime::config::MAX_CONFIG_BYTES as u64 {
        return Err(Failure::Input(anyhow!(
            "{}: {} bytes, more than the {} a config may have",
            p.display(),
            meta.len(),
            symbiont_runtime::config::MAX_CONFIG_BYTES
        )));
    }
    let bytes = std::fs::read(p).map_err(|e| Failure::Input(anyhow!("{}: {e}", p.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        Failure::Input(anyhow!(
            "{}: not UTF-8 (invalid byte at offset {})",
            p.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Each local model's file: present, a regular file, a GGUF header.
fn model_files(slm: &Slm, f: &mut Findings<'_>) {
    let cache = hub::HfCache::from_env();
    for (i, m) in slm.model_allow_lists.global_models.iter().enumerate() {
        if let Some(h) = hub::HubModel::of(&m.id, &m.provider) {
            // Not pulled: the runner's own refusal says so (below). Pulled
            // but unpinned: the pin to write, from what the cache holds.
            if let (Ok(found), None) = (hub::locate(&cache, &h), &h.sha256) {
                // The pin offered is what the bytes hash to (cached per
                // file version), never only the blob's name.
                let Ok(hex) = std::fs::File::open(&found.blob).and_then(|f| digest::digest_of(&f))
                else {
                    continue;
                };
                if found.sha256.as_ref().is_some_and(|named| named != &hex) {
                    f.push(
                        "error",
                        format!("slm.model_allow_lists.global_models[{i}].provider.HuggingFace"),
                        format!(
                            "model `{}`: {} hashes to {hex}, not the {} its name says: remove it and pull again",
                            m.id,
                            found.blob.display(),
                            found.sha256.as_deref().unwrap_or_default()
                        ),
                    );
                    continue;
                }
                let pin = format!(", sha256 = \"{hex}\"");
                f.push(
                    "warning",
                    format!("slm.model_allow_lists.global_models[{i}].provider.HuggingFace"),
                    format!(
                        "model `{}` is not pinned: revision `{}` may move, and a later pull would run other bytes; to pin what the cache holds, write `revision = \"{}\"{pin}`",
                        m.id, h.revision, found.commit
                    ),
                );
            }
            continue;
        }
        let ModelProvider::LocalFile { file_path, sha256 } = &m.provider else {
            continue;
        };
        let key = format!("slm.model_allow_lists.global_models[{i}].provider.LocalFile.file_path");
        let problem = match std::fs::metadata(file_path) {
            Err(e) => Some(format!("model `{}`: {}: {e}", m.id, file_path.display())),
            Ok(meta) if !meta.is_file() => Some(format!(
                "model `{}`: {} is not a regular file",
                m.id,
                file_path.display()
            )),
            Ok(_) => gguf::read_summary(file_path).err().map(|e| {
                format!(
                    "model `{}`: {} is not a model file this runtime reads: {e}",
                    m.id,
                    file_path.display()
                )
            }),
        };
        if let Some(p) = problem {
            f.push("error", key, p);
            continue;
        }
        // The bytes: against the pin, or the pin to write (the digest is
        // computed once per version of the file and kept).
        let Ok(file) = std::fs::File::open(file_path) else {
            continue;
        };
        match sha256 {
            Some(hex) => {
                if let Err(e) = digest::check_pin(&file, file_path, hex) {
                    f.push(
                        "error",
                        format!(
                            "slm.model_allow_lists.global_models[{i}].provider.LocalFile.sha256"
                        ),
                        format!("model `{}`: {e}", m.id),
                    );
                }
            }
            None => {
                if let Ok(hex) = digest::digest_of(&file) {
                    f.push(
                        "warning",
                        format!("slm.model_allow_lists.global_models[{i}].provider.LocalFile"),
                        format!(
                            "model `{}` is not pinned: any bytes at its path would run; to pin these, write `sha256 = \"{hex}\"` beside file_path",
                            m.id
                        ),
                    );
                }
            }
        }
    }
}

/// What `run` and `serve` would refuse, by their own code: runners built
/// (nothing loaded) under each profile a model may run under.
fn host(slm: &Slm, worker: Option<&Path>, f: &mut Findings<'_>) -> Result<(), Failure> {
    if !slm.enabled {
        f.push(
            "warning",
            "slm.enabled".into(),
            "small language models are disabled: `run` and `serve` refuse to start".into(),
        );
    }
    let catalog = ModelCatalog::new(slm.clone()).map_err(|e| Failure::Input(e.into()))?;
    let mut pool = ModelPool::builder(catalog);
    if let Some(w) = worker {
        pool = pool.worker_path(w);
    }
    let pool = pool.build().map_err(|e| Failure::Input(e.into()))?;
    let run_profile = slm.default_sandbox_profile.clone();
    let serve_profile = slm
        .service
        .sandbox_profile
        .clone()
        .unwrap_or_else(|| run_profile.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    let files_missing: BTreeSet<usize> = f
        .list
        .iter()
        .filter(|x| x.severity == "error")
        .filter_map(|x| {
            x.key_path
                .strip_prefix("slm.model_allow_lists.global_models[")
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.parse().ok())
        })
        .collect();
    // Without a worker no local model runs: said once, not per model.
    let worker_missing = match symbiont_runtime::models::find_worker(worker) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    rt.block_on(async {
        for (i, m) in slm.model_allow_lists.global_models.iter().enumerate() {
            let local = matches!(m.provider, ModelProvider::LocalFile { .. });
            if files_missing.contains(&i) || (local && worker_missing.is_some()) {
                continue;
            }
            let key = format!("slm.model_allow_lists.global_models[{i}]");
            let by_run = pool.check(&m.id, Some(&run_profile)).await;
            let by_serve = if serve_profile == run_profile {
                None
            } else {
                Some(pool.check(&m.id, Some(&serve_profile)).await)
            };
            match (by_run, by_serve) {
                (Err(e), None) => f.push(
                    "error",
                    key,
                    format!(
                        "model `{}` cannot run under profile `{run_profile}` (`run` and `serve` use it): {e}",
                        m.id
                    ),
                ),
                (Err(a), Some(Err(b))) => f.push(
                    "error",
                    key,
                    format!(
                        "model `{}` cannot run under profile `{run_profile}` (default_sandbox_profile, for `run`): {a}; nor under `{serve_profile}` (slm.service.sandbox_profile, for `serve`): {b}",
                        m.id
                    ),
                ),
                (Err(e), Some(Ok(()))) => f.push(
                    "warning",
                    key,
                    format!(
                        "model `{}` runs under `serve`'s profile `{serve_profile}` but not under profile `{run_profile}` (default_sandbox_profile, for `run` without --profile): {e}",
                        m.id
                    ),
                ),
                (Ok(()), Some(Err(e))) => f.push(
                    "error",
                    key,
                    format!(
                        "model `{}` cannot run under `serve`'s profile `{serve_profile}` (slm.service.sandbox_profile): {e}",
                        m.id
                    ),
                ),
                _ => {}
            }
        }
    });
    let has_local = slm
        .model_allow_lists
        .global_models
        .iter()
        .any(|m| matches!(m.provider, ModelProvider::LocalFile { .. }));
    if let (Some(e), true) = (worker_missing, has_local) {
        f.push(
            "error",
            String::new(),
            format!("no local model can run: {e}"),
        );
    }
    // The listen address against the tokens, as `serve` checks it.
    if let Ok(addr) = slm.service.listen.parse::<std::net::SocketAddr>() {
        let service = symbiont_service::Service::new(pool);
        if let Err(e) = service.check_listen(addr) {
            f.push(
                "error",
                "slm.service.listen".into(),
                format!("`serve` would refuse: {e}"),
            );
        } else if slm.service.agent_tokens.is_empty() && slm.service.anonymous_agent.is_none() {
            f.push(
                "warning",
                "slm.service.agent_tokens".into(),
                "no agent can authenticate (no agent_tokens, no anonymous_agent): `serve` would answer every request 401; `symbi-slm agents token AGENT` makes a token".into(),
            );
        }
    }
    Ok(())
}

/// What an OK config holds, as before: models, agents, profiles.
fn summary(source: &Source, slm: &Slm, warnings: usize, schema_only: bool) {
    out!(
        "config OK: {source}{}{}",
        if schema_only {
            " (schema only: this host not checked)"
        } else {
            ""
        },
        if warnings > 0 {
            format!(", {warnings} warning(s)")
        } else {
            String::new()
        }
    );
    out!("  enabled: {}", slm.enabled);
    let models = &slm.model_allow_lists.global_models;
    out!("  models: {}", models.len());
    for m in models {
        let caps: Vec<&str> = m.capabilities.iter().map(|c| c.as_str()).collect();
        out!(
            "    {} ({}, {})",
            m.id,
            m.provider.kind(),
            if caps.is_empty() {
                "no capabilities".into()
            } else {
                caps.join(", ")
            }
        );
    }
    let maps = &slm.model_allow_lists.agent_model_maps;
    out!("  agents with allow-lists: {}", maps.len());
    for (agent, ids) in maps {
        out!("    {agent}: {}", ids.join(", "));
    }
    out!(
        "  unmapped agents may use: {}",
        match slm.model_allow_lists.unmapped_agent_access {
            symbiont_runtime::config::UnmappedAgentAccess::Deny => "nothing",
            _ => "every global model",
        }
    );
    out!(
        "  sandbox profiles: {} (default: {})",
        slm.sandbox_profiles
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        slm.default_sandbox_profile
    );
}
