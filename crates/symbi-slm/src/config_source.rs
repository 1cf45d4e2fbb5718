//! Finds the config: `--config FILE`, then `$SYMBI_SLM_CONFIG`, then the
//! built-in default.

use std::fmt;
use std::path::{Path, PathBuf};

use symbiont_runtime::config::{ConfigError, Slm};

/// Environment variable naming a config file.
pub const CONFIG_ENV: &str = "SYMBI_SLM_CONFIG";

/// Where the config came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--config`.
    Flag(PathBuf),
    /// `$SYMBI_SLM_CONFIG`.
    Env(PathBuf),
    /// The built-in default.
    Builtin,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "{} (--config)", p.display()),
            Source::Env(p) => write!(f, "{} (${CONFIG_ENV})", p.display()),
            Source::Builtin => f.write_str("built-in default config"),
        }
    }
}

/// Picks the source without reading it.
pub fn pick(flag: Option<&Path>) -> Source {
    if let Some(p) = flag {
        return Source::Flag(p.to_path_buf());
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(v) if !v.is_empty() => Source::Env(PathBuf::from(v)),
        _ => Source::Builtin,
    }
}

/// Loads the config from its source.
pub fn load(source: &Source) -> Result<Slm, ConfigError> {
    match source {
        Source::Flag(p) | Source::Env(p) => Slm::load(p),
        Source::Builtin => {
            let slm = Slm::builtin();
            slm.validate()?;
            Ok(slm)
        }
    }
}
