//! The built-in default config: one model, the default SmolLM2 model in the
//! user's cache, used when no config file is given.

use std::path::PathBuf;

use super::{Model, ModelCapability, ModelProvider, ModelResourceRequirements, Slm};

/// Id of the default model.
pub const DEFAULT_MODEL_ID: &str = "smollm2-135m-instruct";

/// File name of the default model inside the model cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SHA-256 of the default model file.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$<var>` when it is an absolute path, else `$HOME/<under_home>`
/// (the XDG base-directory rule); `None` when neither is usable.
fn xdg_dir(var: &str, under_home: &[&str]) -> Option<PathBuf> {
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os(var).and_then(abs).or_else(|| {
        std::env::var_os("HOME")
            .and_then(abs)
            .map(|h| under_home.iter().fold(h, |p, part| p.join(part)))
    })
}

/// The model cache: `$XDG_CACHE_HOME/symbiont/models`, else
/// `$HOME/.cache/symbiont/models` (where `scripts/setup.sh` puts the default
/// model). `None` when neither variable is set to an absolute path.
pub fn model_cache_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", &[".cache"]).map(|c| c.join("symbiont").join("models"))
}

/// The built-in config's audit log: `$XDG_STATE_HOME/symbiont/slm-audit.jsonl`,
/// else `$HOME/.local/state/symbiont/slm-audit.jsonl`.
pub fn default_audit_log_path() -> Option<PathBuf> {
    xdg_dir("XDG_STATE_HOME", &[".local", "state"])
        .map(|s| s.join("symbiont").join("slm-audit.jsonl"))
}

/// Where the default model is expected.
pub fn default_model_path() -> Option<PathBuf> {
    model_cache_dir().map(|d| d.join(DEFAULT_MODEL_FILE))
}

impl Slm {
    /// The built-in config: enabled, one model (SmolLM2-135M-Instruct Q4_1
    /// at [`default_model_path`]), the built-in profiles, `secure` by
    /// default, no agent maps (agents get nothing unless a config maps them),
    /// the audit log at [`default_audit_log_path`].
    ///
    /// Falls back to `/nonexistent` for the model path when no cache
    /// directory can be found, so that running it fails with a clear
    /// "model file not found" instead of guessing a place.
    pub fn builtin() -> Self {
        let mut slm = Slm {
            enabled: true,
            audit_log_path: default_audit_log_path().map(|p| p.to_string_lossy().into_owned()),
            ..Slm::default()
        };
        slm.model_allow_lists.global_models.push(Model {
            id: DEFAULT_MODEL_ID.into(),
            name: "SmolLM2 135M Instruct (Q4_1)".into(),
            provider: ModelProvider::LocalFile {
                file_path: default_model_path()
                    .unwrap_or_else(|| PathBuf::from("/nonexistent").join(DEFAULT_MODEL_FILE)),
                // The file scripts/setup.sh fetches and checks.
                sha256: Some(DEFAULT_MODEL_SHA256.into()),
            },
            // Tool calls in the generic format (the model's template has
            // no tool format), constrained to the functions' parameters.
            capabilities: vec![
                ModelCapability::TextGeneration,
                ModelCapability::ToolUse,
                ModelCapability::FunctionCalling,
            ],
            resource_requirements: ModelResourceRequirements {
                min_memory_mb: 256,
                preferred_cpu_cores: 1.0,
                gpu_requirements: None,
            },
            settings: Default::default(),
        });
        slm
    }
}
