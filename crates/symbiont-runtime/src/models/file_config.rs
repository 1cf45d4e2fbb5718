//! A config for one GGUF file and nothing else: what `symbi-slm run
//! FILE.gguf` and `symbi-slm serve --model FILE.gguf` use when no config
//! names the model, so that trying a model takes one command (as
//! `llama-server -m` and `ollama run` do), under the same sandbox.
//!
//! The model runs under the `secure` profile's controls (no network, no
//! child processes, strict syscall filtering, audit logging), with its
//! memory and cores sized to fit: `max_memory_mb` what the model and the
//! shared KV cache of `slots` requests need (at most four contexts), by
//! the same estimate the runner checks;
//! `max_cpu_cores` this host's cores.

use std::path::Path;

use crate::config::{
    Model, ModelCapability, ModelProvider, ModelResourceRequirements, SandboxProfile, Slm,
};
use crate::models::local_gguf::{defaults, gguf, memory_need_mb};
use crate::models::SlmRunnerError;

/// The profile's name in a file's config.
pub const FILE_PROFILE: &str = "secure";

/// A config for one model file.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The config: the file as its only model, the sized `secure` profile
    /// as the default.
    pub slm: Slm,
    /// The model's id (the file's name without `.gguf`, in the characters
    /// an id may hold).
    pub model_id: String,
    /// What was sized, for the caller to print: one line.
    pub summary: String,
}

/// The config for `path`, sized for `slots` requests at once. Reads the
/// file's header (not the weights): a file that is missing, unreadable or
/// not a GGUF file is an `InvalidInput` naming it.
pub fn config_for_file(path: &Path, slots: u32) -> Result<FileConfig, SlmRunnerError> {
    let bad = |reason: String| SlmRunnerError::InvalidInput {
        field: "model",
        reason,
    };
    let path = std::fs::canonicalize(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let summary = gguf::read_summary(&path).map_err(|e| {
        bad(format!(
            "{}: not a model file this runtime reads: {e}",
            path.display()
        ))
    })?;
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .trim_end_matches(".gguf");
    let model_id = id_from(stem);
    let context = defaults::CONTEXT_SIZE.min(
        summary
            .context_length
            .map_or(u32::MAX, |c| u32::try_from(c.max(16)).unwrap_or(u32::MAX)),
    );
    let slots = slots.max(1);
    let mut profile = SandboxProfile::secure();
    // What the runner will check against, rounded up to 64 MB.
    let cache = context.saturating_mul(slots.min(defaults::CACHE_CONTEXTS));
    let need_mb = memory_need_mb(&summary, cache).div_ceil(64) * 64;
    profile.resources.max_memory_mb = profile.resources.max_memory_mb.max(need_mb);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    profile.resources.max_cpu_cores = cores as f32;
    let mut slm = Slm::builtin();
    slm.model_allow_lists.global_models = vec![Model {
        id: model_id.clone(),
        name: summary.name.clone().unwrap_or_else(|| stem.to_string()),
        provider: ModelProvider::LocalFile {
            file_path: path.clone(),
            sha256: None,
        },
        capabilities: vec![ModelCapability::TextGeneration],
        resource_requirements: ModelResourceRequirements::default(),
        settings: Default::default(),
    }];
    slm.sandbox_profiles
        .insert(FILE_PROFILE.to_string(), profile.clone());
    slm.default_sandbox_profile = FILE_PROFILE.to_string();
    slm.validate()
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let summary = format!(
        "model `{model_id}` from {} ({} MB{}), no config: profile `{FILE_PROFILE}` sized to fit {slots} request(s) at once sharing a KV cache of {cache} tokens (at most {context} each): max_memory_mb = {}, max_cpu_cores = {}",
        path.display(),
        summary.file_size.div_ceil(1024 * 1024),
        summary
            .architecture
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default(),
        profile.resources.max_memory_mb,
        profile.resources.max_cpu_cores,
    );
    Ok(FileConfig {
        slm,
        model_id,
        summary,
    })
}

/// The config for a Hugging Face model in the cache (`run hf:org/repo`):
/// sized as [`config_for_file`] sizes its blob, the model's id the
/// repository's name, its provider the repository, file and revision,
/// pinned to the digest it was pulled against.
pub fn config_for_hub(
    found: &crate::models::hub::Located,
    model: &crate::models::hub::HubModel,
    slots: u32,
) -> Result<FileConfig, SlmRunnerError> {
    let mut fc = config_for_file(&found.blob, slots)?;
    let id = id_from(model.repo.rsplit('/').next().unwrap_or(&model.repo));
    let m = &mut fc.slm.model_allow_lists.global_models[0];
    m.id = id.clone();
    m.provider = ModelProvider::HuggingFace {
        model_path: model.repo.clone(),
        file: Some(found.file.clone()),
        revision: Some(found.commit.clone()),
        sha256: found.sha256.clone(),
    };
    // "model `x` from PATH (94 MB, …": the repository in place of PATH.
    let rest = fc.summary.find(" (").map_or("", |at| &fc.summary[at..]);
    fc.summary = format!(
        "model `{id}` from {}/{} at {}{rest}",
        model.repo, found.file, found.commit
    );
    fc.model_id = id;
    fc.slm
        .validate()
        .map_err(|e| SlmRunnerError::InvalidInput {
            field: "model",
            reason: format!("{}: {e}", model.describe()),
        })?;
    Ok(fc)
}

/// An id from a file name: letters, digits, `.`, `_` and `-` kept, the
/// rest `-`.
fn id_from(stem: &str) -> String {
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if id.is_empty() {
        "model".into()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_only_what_an_id_may_hold() {
        assert_eq!(
            id_from("SmolLM2-135M-Instruct.Q4_1"),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        assert_eq!(id_from("my model (v2)"), "my-model--v2-");
        assert_eq!(id_from(""), "model");
    }

    #[test]
    fn a_file_that_is_not_a_model_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("notes.gguf");
        std::fs::write(&f, b"hello").unwrap();
        match config_for_file(&f, 1) {
            Err(SlmRunnerError::InvalidInput { field, reason }) => {
                assert_eq!(field, "model");
                assert!(reason.contains("notes.gguf"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match config_for_file(&dir.path().join("absent.gguf"), 1) {
            Err(SlmRunnerError::InvalidInput { reason, .. }) => {
                assert!(reason.contains("absent.gguf"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
