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

/// What a local model's bytes are, as `/v1/models` and `models list` say
/// it: present or not, size, the SHA-256 they must have, and for a Hugging
/// Face model its revision and the commit the cache holds. Read from the
/// file system only (no hashing, no network).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    /// The file is there (for a Hugging Face model: pulled).
    pub present: bool,
    /// Its size in bytes, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The SHA-256 the bytes must have (the pin; for an unpinned Hugging
    /// Face model the hub's LFS digest it was pulled against).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The configured revision (Hugging Face models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit the cache holds for it (Hugging Face models, pulled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Artifact {
    /// The artifact of a model of the config; `None` for a remote one.
    pub fn of(model: &crate::config::Model, cache: &HfCache) -> Option<Self> {
        use crate::config::ModelProvider;
        let size = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        match &model.provider {
            ModelProvider::LocalFile { file_path, sha256 } => {
                let size_bytes = size(file_path);
                Some(Self {
                    present: size_bytes.is_some(),
                    size_bytes,
                    sha256: sha256.as_ref().map(|h| h.to_ascii_lowercase()),
                    revision: None,
                    commit: None,
                })
            }
            ModelProvider::HuggingFace { .. } => {
                let h = HubModel::of(&model.id, &model.provider)?;
                Some(match locate(cache, &h) {
                    Ok(found) => Self {
                        present: true,
                        size_bytes: size(&found.blob),
                        sha256: found.sha256,
                        revision: Some(h.revision),
                        commit: Some(found.commit),
                    },
                    Err(_) => Self {
                        present: false,
                        size_bytes: None,
                        sha256: h.sha256,
                        revision: Some(h.revision),
                        commit: None,
                    },
                })
            }
            _ => None,
        }
    }
}
