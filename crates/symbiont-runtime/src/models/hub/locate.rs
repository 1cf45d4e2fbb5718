//! The file a run of a Hugging Face model loads, found in the cache
//! without the network: the revision's commit (itself, or `refs/`), the
//! snapshot's files picked by the config's `file`, the link followed to
//! its blob. The bytes are checked when a worker opens them: against the
//! pin, or else against the blob's own name when it is a SHA-256 (an LFS
//! file's etag), so a changed blob is refused either way.

use std::path::PathBuf;

use super::{select, HfCache, HubError, HubModel};
use crate::config::provider::is_sha256;

/// Where a model's bytes are and what they must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The blob (a regular file in the repository's `blobs`).
    pub blob: PathBuf,
    /// The file in the repository.
    pub file: String,
    /// The commit.
    pub commit: String,
    /// The SHA-256 the bytes must have, if one is known.
    pub sha256: Option<String>,
}

/// Finds `model` in `cache`.
pub fn locate(cache: &HfCache, model: &HubModel) -> Result<Located, HubError> {
    let missing = |what: String| HubError::Missing {
        model: model.id.clone(),
        what,
        cache: cache.root().to_path_buf(),
    };
    let commit = cache
        .commit_of(&model.repo, &model.revision)
        .ok_or_else(|| missing(format!("{}: revision never pulled", model.describe())))?;
    let files = cache.snapshot_files(&model.repo, &commit);
    let chosen = select(&files, &model.file)
        .map_err(|reason| missing(format!("{} at {commit}: {reason}", model.repo)))?;
    if chosen.files.len() > 1 {
        return Err(HubError::Select {
            repo: model.describe(),
            reason: format!(
                "`{}` is split into {} files; a split model is pulled whole but cannot run yet (the sandbox lets a worker read one file): merge it with llama.cpp's `llama-gguf-split --merge`, or pick a file that is not split",
                chosen.first(),
                chosen.files.len()
            ),
        });
    }
    let file = chosen.first().to_string();
    let (blob, etag) = cache.blob_of(&model.repo, &commit, &file).ok_or_else(|| {
        missing(format!(
            "{}/{file} at {commit}: no blob behind the snapshot's link",
            model.repo
        ))
    })?;
    let sha256 = model
        .sha256
        .clone()
        .or_else(|| is_sha256(&etag).then(|| etag.to_ascii_lowercase()));
    Ok(Located {
        blob,
        file,
        commit,
        sha256,
    })
}
