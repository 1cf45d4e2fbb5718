//! Models from a Hugging Face hub, as pinned, verified files in the
//! Hugging Face cache that `huggingface_hub` shares: `client.rs` speaks
//! the hub's protocol (every redirect judged, the token only to the hub),
//! `cache.rs` the cache's layout and locks, `select.rs` which files a
//! model's `file` means, `pull.rs` a verified, resumable download,
//! `locate.rs` the file a run loads.
//!
//! Why not the `hf-hub` crate: a pull here must judge every redirect's
//! address against the egress rules before it connects, send the token
//! only to the hub, verify a pin while the bytes stream, resume under
//! `huggingface_hub`'s own `.locks`/`.incomplete` conventions and bound
//! what a hostile hub can send; `hf-hub` owns its HTTP client and its
//! redirects, and offers none of these hooks.

mod cache;
mod client;
mod gc;
mod locate;
#[cfg(any(test, feature = "test-hub"))]
pub mod loopback;
mod pull;
mod select;
#[cfg(test)]
mod tests;

pub use cache::{BlobLock, HfCache};
pub use client::{HubClient, HubEnv, Lfs, RepoInfo, Sibling};
pub use gc::{collect, remove, Collected};
pub use locate::{locate, Artifact, Located};
pub use pull::{pull, PullEvent, PullPlan, Pulled};
pub use select::{select, Selected, DEFAULT_QUANTS};

use std::path::PathBuf;

use crate::config::provider::HubFile;
use crate::config::ModelProvider;

/// A Hugging Face model of the config: which repository, file, revision
/// and pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// The catalog id.
    pub id: String,
    /// `org/name`.
    pub repo: String,
    /// The file, quantisation, or neither.
    pub file: HubFile,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
    /// The pinned SHA-256, lowercase.
    pub sha256: Option<String>,
}

impl HubModel {
    /// The model of a `HuggingFace` provider (`None` for other providers
    /// or a `file` the config's rules refuse).
    pub fn of(id: &str, provider: &ModelProvider) -> Option<Self> {
        let ModelProvider::HuggingFace {
            model_path,
            file,
            revision,
            sha256,
        } = provider
        else {
            return None;
        };
        Some(Self {
            id: id.to_string(),
            repo: model_path.clone(),
            file: HubFile::parse(file.as_deref())?,
            revision: revision.clone().unwrap_or_else(|| "main".into()),
            sha256: sha256.as_ref().map(|h| h.to_ascii_lowercase()),
        })
    }

    /// `org/name@revision`.
    pub fn describe(&self) -> String {
        format!("{}@{}", self.repo, self.revision)
    }
}

/// Why a model could not be pulled or located.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// `HF_HUB_OFFLINE` is set and the step needs the hub.
    #[error("HF_HUB_OFFLINE is set: {0} needs the hub")]
    Offline(String),
    /// An environment variable is unusable.
    #[error("{name}: {reason}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A destination the rules refuse.
    #[error("{url}: refused: {reason}")]
    Refused {
        /// The URL (300 characters at most).
        url: String,
        /// Why.
        reason: String,
    },
    /// No connection, or it broke.
    #[error("{url}: {reason}")]
    Network {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The hub answered with an error status.
    #[error("{url}: the hub answered {status}{hint}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// What it likely means.
        hint: String,
    },
    /// The hub's answer breaks the protocol (a listing that does not
    /// parse, a body longer than announced, a range not asked for).
    #[error("{url}: {what}")]
    Answer {
        /// The URL.
        url: String,
        /// What was wrong.
        what: String,
    },
    /// The repository holds no file that the config's `file` picks.
    #[error("{repo}: {reason}")]
    Select {
        /// The repository.
        repo: String,
        /// Why, with the candidates.
        reason: String,
    },
    /// The bytes are not the ones expected: nothing of them is kept.
    #[error("{file}: SHA-256 {actual}, but {expected_from} says {expected}; nothing of the download was kept")]
    Digest {
        /// The file.
        file: String,
        /// What was expected.
        expected: String,
        /// Where the expectation comes from.
        expected_from: &'static str,
        /// What the bytes hash to.
        actual: String,
    },
    /// A download ended early; what arrived is kept to resume from.
    #[error("{file}: the download stopped after {done} of {total} bytes ({reason}); `symbi-slm models pull` again resumes it")]
    Interrupted {
        /// The file.
        file: String,
        /// Bytes kept.
        done: u64,
        /// Bytes in all.
        total: u64,
        /// Why it stopped.
        reason: String,
    },
    /// The model is not in the cache (a run never downloads it).
    #[error("model `{model}` ({what}) is not in the Hugging Face cache {cache}: run `symbi-slm models pull {model}`")]
    Missing {
        /// The catalog id.
        model: String,
        /// Repository, revision and file.
        what: String,
        /// The cache directory.
        cache: PathBuf,
    },
    /// A file or directory of the cache.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
