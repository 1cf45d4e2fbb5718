//! `symbi-slm models verify`, `models rm` and `models gc`: the bytes of
//! local models rechecked, and the Hugging Face cache freed without
//! breaking what another tool pulled.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use symbiont_runtime::config::{Model, ModelProvider};
use symbiont_runtime::models::{digest, hub};

use crate::output::out;
use crate::Failure;

/// `symbi-slm models verify`
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The models (default: every local and Hugging Face model).
    ids: Vec<String>,
    /// One JSON object per model.
    #[arg(long)]
    json: bool,
}

/// `symbi-slm models rm`
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The Hugging Face models to remove from the cache.
    #[arg(required = true)]
    ids: Vec<String>,
    /// Say what would go, remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `symbi-slm models gc`
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Say what would go, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove interrupted downloads (`.incomplete`) that no pull is
    /// writing (they are kept by default: a pull resumes them).
    #[arg(long)]
    incomplete: bool,
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// A model's bytes on this host and the digest they must have.
fn local_file(
    m: &Model,
    cache: &hub::HfCache,
) -> Option<Result<(PathBuf, Option<String>), String>> {
    match &m.provider {
        ModelProvider::LocalFile { file_path, sha256 } => Some(Ok((
            file_path.clone(),
            sha256.as_ref().map(|h| h.to_ascii_lowercase()),
        ))),
        ModelProvider::HuggingFace { .. } => {
            let h = hub::HubModel::of(&m.id, &m.provider)?;
            Some(
                hub::locate(cache, &h)
                    .map(|l| (l.blob, l.sha256))
                    .map_err(|e| e.to_string()),
            )
        }
        _ => None,
    }
}

pub fn verify(args: VerifyArgs, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = crate::catalog_cmds::catalog(config)?;
    let cache = hub::HfCache::from_env();
    let models: Vec<&Model> = if args.ids.is_empty() {
        c.list_models()
            .iter()
            .filter(|m| local_file(m, &cache).is_some())
            .collect()
    } else {
        args.ids
            .iter()
            .map(|id| {
                c.get_model(id)
                    .ok_or_else(|| Failure::Input(anyhow!("unknown model `{id}`")))
            })
            .collect::<Result<_, _>>()?
    };
    let mut bad = 0;
    for m in models {
        let Some(found) = local_file(m, &cache) else {
            return Err(Failure::Input(anyhow!(
                "model `{}` has provider {}: it has no file here to verify",
                m.id,
                m.provider.kind()
            )));
        };
        let (status, detail, path) = match found {
            Err(e) => ("missing", e, None),
            Ok((path, expected)) => {
                let got = std::fs::File::open(&path).and_then(|f| digest::rehash(&f));
                match (got, expected) {
                    (Err(e), _) => ("missing", format!("{}: {e}", path.display()), Some(path)),
                    (Ok(h), Some(want)) if h == want => ("ok", h, Some(path)),
                    (Ok(h), Some(want)) => (
                        "MISMATCH",
                        format!("SHA-256 {h}, but it must be {want}"),
                        Some(path),
                    ),
                    (Ok(h), None) => ("unpinned", h, Some(path)),
                }
            }
        };
        if matches!(status, "missing" | "MISMATCH") {
            bad += 1;
        }
        if args.json {
            out!(
                "{}",
                serde_json::json!({"model": m.id, "status": status, "detail": detail, "path": path})
            );
        } else {
            out!("{:<28} {:<9} {detail}", m.id, status);
        }
    }
    if bad > 0 {
        return Err(Failure::Runtime(anyhow!(
            "{bad} model(s) missing or not the bytes they must be"
        )));
    }
    Ok(())
}

fn report(c: &hub::Collected, dry_run: bool) {
    let verb = if dry_run { "would remove" } else { "removed" };
    for l in &c.unlinked {
        out!("{verb} link {}", l.display());
    }
    for (p, size) in &c.removed {
        out!("{verb} {} ({})", p.display(), mb(*size));
    }
    for p in &c.busy {
        out!("kept {} (a pull holds its lock)", p.display());
    }
    if !c.incomplete.is_empty() {
        let bytes: u64 = c.incomplete.iter().map(|i| i.1).sum();
        out!(
            "kept {} interrupted download(s), {} (a pull resumes them; --incomplete removes them)",
            c.incomplete.len(),
            mb(bytes)
        );
    }
    out!(
        "{} {}",
        if dry_run { "would free" } else { "freed" },
        mb(c.freed())
    );
}

pub fn rm(args: RmArgs, config: Option<&Path>) -> Result<(), Failure> {
    let (_, c) = crate::catalog_cmds::catalog(config)?;
    let cache = hub::HfCache::from_env();
    for id in &args.ids {
        let m = c
            .get_model(id)
            .ok_or_else(|| Failure::Input(anyhow!("unknown model `{id}`")))?;
        let h = hub::HubModel::of(&m.id, &m.provider).ok_or_else(|| {
            Failure::Input(anyhow!(
                "model `{id}` has provider {}: only a HuggingFace model's files are in the cache `models rm` manages",
                m.provider.kind()
            ))
        })?;
        let done = hub::remove(&cache, &h, args.dry_run).map_err(|e| Failure::Input(e.into()))?;
        report(&done, args.dry_run);
    }
    Ok(())
}

pub fn gc(args: GcArgs, _config: Option<&Path>) -> Result<(), Failure> {
    let cache = hub::HfCache::from_env();
    let done = hub::collect(&cache, args.dry_run, args.incomplete)
        .map_err(|e| Failure::Runtime(e.into()))?;
    out!("cache {}", cache.root().display());
    report(&done, args.dry_run);
    Ok(())
}
