//! Config errors: each names the key path and, where known, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// A line and column in the config text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The path is a directory or a device, not a file.
    #[error("config path {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`super::MAX_CONFIG_BYTES`].
    #[error("config is {size} bytes, more than the {max} bytes allowed")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not UTF-8 text.
    #[error("config file {} is not UTF-8: invalid byte at offset {byte_offset} (line {line})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first invalid byte.
        byte_offset: usize,
        /// Line of that byte, from 1.
        line: usize,
    },
    /// The document has no `[slm]` table.
    #[error("the config has no [slm] table")]
    MissingSlmTable,
    /// A syntax error, a value of the wrong type, or an unknown key.
    #[error(
        "{}{}{}: {message}",
        file_prefix(file),
        key_display(key_path),
        loc_display(location)
    )]
    Parse {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// Dotted key path, such as `slm.sandbox_profiles.secure.resources`;
        /// empty for a syntax error outside any key.
        key_path: String,
        /// Where in the text, if the parser knows.
        location: Option<Location>,
        /// The parser's message.
        message: String,
    },
    /// The document parsed but breaks one or more rules; every problem found
    /// is listed.
    #[error("{}{} problem(s) in the [slm] config:{}", file_prefix(file), issues.len(), list(issues))]
    Invalid {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// Every problem, in document order.
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    pub(super) fn with_file(self, path: &Path) -> Self {
        match self {
            Self::Parse {
                key_path,
                location,
                message,
                ..
            } => Self::Parse {
                file: Some(path.to_path_buf()),
                key_path,
                location,
                message,
            },
            Self::Invalid { issues, .. } => Self::Invalid {
                file: Some(path.to_path_buf()),
                issues,
            },
            other => other,
        }
    }

    /// The issues of an `Invalid` error, or none.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            Self::Invalid { issues, .. } => issues,
            _ => &[],
        }
    }
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

fn key_display(key: &str) -> String {
    if key.is_empty() {
        "syntax error".into()
    } else {
        format!("`{key}`")
    }
}

fn loc_display(loc: &Option<Location>) -> String {
    loc.map(|l| format!(" ({l})")).unwrap_or_default()
}

fn list(issues: &[ConfigIssue]) -> String {
    issues.iter().map(|i| format!("\n  - {i}")).collect()
}

/// One broken rule, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    /// Dotted key path of the offending value.
    pub key_path: String,
    /// Where in the text, when the config came from text.
    pub location: Option<Location>,
    /// What is wrong.
    pub problem: Problem,
}

impl ConfigIssue {
    /// A problem of the whole document (no key).
    pub(super) fn whole(message: String) -> Self {
        Self {
            key_path: String::new(),
            location: None,
            problem: Problem::Parse(message),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            f.write_str("the document")?;
        } else {
            write!(f, "`{}`", self.key_path)?;
        }
        if let Some(l) = self.location {
            write!(f, " ({l})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// Two models share an id.
    #[error("duplicate model id `{id}` (first defined at global_models[{first_index}])")]
    DuplicateModelId {
        /// The id.
        id: String,
        /// Index of the first model with it.
        first_index: usize,
    },
    /// An agent map names a model that is not in `global_models`.
    #[error("agent `{agent}` names model `{model}`, which is not defined in slm.model_allow_lists.global_models")]
    UnknownModelInAgentMap {
        /// The agent.
        agent: String,
        /// The missing model id.
        model: String,
    },
    /// A setting names a model that is not in `global_models`.
    #[error("model `{model}` is not defined in slm.model_allow_lists.global_models")]
    UnknownModel {
        /// The missing model id.
        model: String,
    },
    /// `default_sandbox_profile` names no profile.
    #[error("no sandbox profile is named `{name}` (profiles: {})", available.join(", "))]
    UnknownDefaultProfile {
        /// The name given.
        name: String,
        /// The profiles that exist.
        available: Vec<String>,
    },
    /// A limit is zero where it must be positive.
    #[error("must be greater than 0")]
    NotPositive,
    /// A number is not finite or not positive.
    #[error("must be a finite number greater than 0, got {value}")]
    NotPositiveNumber {
        /// The value.
        value: f64,
    },
    /// A number is larger than the documented maximum.
    #[error("{value} is larger than the maximum of {max}")]
    TooLarge {
        /// The value.
        value: u64,
        /// The maximum.
        max: u64,
    },
    /// A path must be absolute.
    #[error("path `{path}` must be absolute")]
    RelativePath {
        /// The path.
        path: String,
    },
    /// A path holds a glob other than a trailing `/*` or `/**`.
    #[error("path `{path}` uses a glob pattern; only a trailing `/*` or `/**` (the whole directory) is supported")]
    UnsupportedGlob {
        /// The path.
        path: String,
    },
    /// A string that must not be empty is empty.
    #[error("must not be empty")]
    Empty,
    /// A name holds characters it must not.
    #[error("`{value}` is not a valid {what}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A value the schema allows but this project cannot honour yet.
    #[error("{what} is not supported yet: {why}")]
    NotSupportedYet {
        /// The value.
        what: String,
        /// Why, and what to write instead.
        why: &'static str,
    },
    /// Two values contradict each other.
    #[error("{0}")]
    Conflict(&'static str),
    /// The value could not be read: a syntax error, a wrong type, an
    /// unknown key or a missing field (the parser's words).
    #[error("{0}")]
    Parse(String),
    /// A number outside its range.
    #[error("must be {range}, got {value}")]
    OutOfRange {
        /// The value as written.
        value: String,
        /// The range, in words (`from 16 to 1048576`).
        range: String,
    },
    /// A key that means nothing for the model's provider.
    #[error("`{key}` sizes a local worker; a {provider} model runs elsewhere: remove it")]
    NotForProvider {
        /// The key.
        key: &'static str,
        /// The provider.
        provider: &'static str,
    },
    /// An agent token's hash is not in the accepted form (the value is
    /// not repeated: it may be a token pasted by mistake).
    #[error("must be `sha256:` followed by the 64 lowercase hex digits of the token's SHA-256 (`symbi-slm agents token AGENT` prints the line); the config never holds a token itself")]
    BadTokenHash,
    /// Two agents have the same token.
    #[error("the same token hash as agent `{first}`: one token would prove two agents; make a token per agent")]
    DuplicateTokenHash {
        /// The agent that has it first.
        first: String,
    },
    /// The metrics token is also an agent's.
    #[error("the same token hash as agent `{agent}`: whoever scrapes the metrics could also act as that agent; make a token of its own (`symbi-slm agents token metrics`)")]
    MetricsTokenIsAgents {
        /// The agent whose token it is.
        agent: String,
    },
    /// The operator's token is also an agent's.
    #[error("the same token hash as agent `{agent}`: the operator could act as that agent and that agent could see every worker; make a token of its own (`symbi-slm agents operator-token`)")]
    OperatorTokenIsAgents {
        /// The agent whose token it is.
        agent: String,
    },
}
