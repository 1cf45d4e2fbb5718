//! The `[slm]` configuration: models, agent allow-lists and sandbox profiles.
//!
//! This module owns the schema and its validation. It never runs anything and
//! never touches the filesystem except to read a config file in [`Slm::load`].
//!
//! Two layers (see `raw.rs`): serde structs as close to the TOML as possible,
//! every field optional and unknown keys rejected, then these validated types
//! with every default filled in. The field names follow the public Symbiont
//! runtime's `[slm]` schema so existing configs keep loading.
//!
//! # Defaults
//! - `slm.enabled`: `false` (the built-in default config sets it to `true`).
//! - `slm.default_sandbox_profile`: `"secure"`.
//! - `slm.audit_log_path`: `$XDG_STATE_HOME/symbiont/slm-audit.jsonl`, else
//!   `$HOME/.local/state/symbiont/slm-audit.jsonl` (none when neither is
//!   set: events then go to `tracing` only), for every config.
//! - `slm.model_allow_lists.unmapped_agent_access`: `"deny"`: an agent with no
//!   entry in `agent_model_maps` may use no model. `"all_global_models"` lets
//!   such agents use every global model.
//! - `slm.sandbox_profiles`: the built-in profiles [`SandboxProfile::secure`]
//!   and [`SandboxProfile::standard`] always exist. A table written for a
//!   built-in name overrides only the fields it names. A table with a new
//!   name is completed field by field from `secure`, the least-privileged
//!   profile, so that a forgotten field never widens anything.
//! - Sizes written `_mb` are mebibytes (1 MB = 1,048,576 bytes).
//!
//! # Filesystem paths
//! `read_paths`, `write_paths` and `denied_paths` take absolute paths. A
//! trailing `/*` or `/**` names the directory and everything below it (the
//! same as the bare directory); any other glob character is rejected.

mod builtin;
mod error;
mod locate;
mod profile;
pub mod provider;
mod raw;
mod settings;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use builtin::{
    default_audit_log_path, default_model_path, model_cache_dir, DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_ID, DEFAULT_MODEL_SHA256,
};
pub use error::{ConfigError, ConfigIssue, Location, Problem};
pub use profile::*;
pub use settings::{
    ModelSettings, SamplingDefaults, MAX_BATCH_SIZE, MAX_CONTEXT_SIZE, MAX_SLOTS, MIN_CONTEXT_SIZE,
};
pub use validate::{
    check_sandbox_profile, normalize_path, MAX_CHILD_PROCESSES, MAX_CPU_CORES,
    MAX_EXECUTION_SECONDS, MAX_SIZE_MB,
};

/// Where a key path (`slm.pool.cores`, `…global_models[1].id`) is in a
/// config's text, or the deepest part of it that is there.
pub fn locate_key(text: &str, key_path: &str) -> Option<Location> {
    locate::locate(text, key_path)
}

/// Largest config file [`Slm::load`] and [`Slm::from_toml_str`] accept.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// The `[slm]` table: everything this module is configured with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slm {
    /// Whether small language models may run at all.
    pub enabled: bool,
    /// Models and which agents may use them.
    pub model_allow_lists: ModelAllowListConfig,
    /// Named sandbox profiles, always including `secure` and `standard`.
    pub sandbox_profiles: BTreeMap<String, SandboxProfile>,
    /// The profile used when a caller names none.
    pub default_sandbox_profile: String,
    /// The security audit log: JSON lines appended to this absolute path
    /// for profiles with `enable_audit_logging = true` (a loaded config
    /// that names none gets [`default_audit_log_path`]); `-`: to standard
    /// output, for a log collector (`symbi-slm serve` then writes nothing
    /// else there; commands whose standard output is their answer write
    /// the events to standard error). `None`: events go to `tracing`
    /// (target `symbi_slm_audit`) only.
    pub audit_log_path: Option<String>,
    /// The host budget and keep-alive of the model pool (`[slm.pool]`).
    pub pool: PoolSettings,
    /// The HTTP service, `symbi-slm serve` (`[slm.service]`).
    pub service: ServiceSettings,
}

/// `[slm.service]`: the HTTP service. Agents prove who they are with a
/// bearer token; the config holds only each token's SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSettings {
    /// Address and port to listen on (default `127.0.0.1:8080`). A
    /// non-loopback address is refused while no agent token is configured.
    pub listen: String,
    /// Agent id → `sha256:<lowercase hex SHA-256 of the token's UTF-8
    /// bytes>` (`symbi-slm agents token AGENT` makes one).
    pub agent_tokens: BTreeMap<String, String>,
    /// Requests without a token act as this agent (its allow-list
    /// applies). `None` (the default): a request without a token is 401.
    /// For local development only.
    pub anonymous_agent: Option<String>,
    /// The sandbox profile models run under (default: the config's
    /// `default_sandbox_profile`).
    pub sandbox_profile: Option<String>,
    /// Largest request body, bytes (default 4 MiB).
    pub max_body_bytes: u64,
    /// Largest prompt (every message's text together), bytes (default
    /// 256 KiB).
    pub max_prompt_bytes: u64,
    /// Requests in progress at once over every agent (default 64); more
    /// are refused with 429.
    pub max_concurrent_requests: usize,
    /// Requests in progress at once per agent (default 16).
    pub max_concurrent_per_agent: usize,
    /// On SIGTERM or SIGINT, how long requests in progress may take to
    /// finish before the service stops anyway, seconds (default 30).
    pub shutdown_grace_seconds: u64,
    /// On SIGTERM, how long the service drains before it stops accepting,
    /// seconds (default 5): `/ready` answers 503 at once, so that a load
    /// balancer or Kubernetes takes the replica out, while new requests
    /// are still served (each answer then closes its connection). Set it
    /// to at least the balancer's health-check interval times its fall
    /// count; 0 stops accepting at once. SIGINT never drains.
    pub drain_seconds: u64,
    /// Client connections open at once (default 256); one more is
    /// answered 503 with `Retry-After` and closed at once, so that slow or
    /// idle clients cannot use up the process's descriptors.
    pub max_connections: usize,
    /// Client connections open at once from one address (default 64), so
    /// that one client cannot take every connection; one more is answered
    /// 503 like the global cap. Behind a load balancer every client has
    /// the balancer's address: raise it to `max_connections` there and
    /// limit clients at the balancer.
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request's headers, and how
    /// long a kept-alive connection may sit idle before its next request,
    /// seconds (default 10); then the connection is closed.
    pub header_timeout_seconds: u64,
    /// How long a client may take to send a request's body once its
    /// headers are in, seconds (default 30); then 408.
    pub body_timeout_seconds: u64,
    /// How long a client may go without taking any byte of a response
    /// the service has ready (a stalled reader), seconds (default 30);
    /// then the connection is closed and its request cancelled.
    pub send_timeout_seconds: u64,
    /// `sha256:<hex>` of the token a scraper sends for `GET /metrics`
    /// (`Authorization: Bearer`). `None` (the default): `/metrics` answers
    /// loopback clients only, since its counts per agent tell one agent
    /// how the others use the service.
    pub metrics_token: Option<String>,
    /// `sha256:<hex>` of the operator's token for `GET /v1/ps` (what is
    /// loaded, for whom, its memory; `symbi-slm ps`). `None` (the
    /// default): `/v1/ps` answers only while no agent has a token.
    pub operator_token: Option<String>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            agent_tokens: BTreeMap::new(),
            anonymous_agent: None,
            sandbox_profile: None,
            max_body_bytes: 4 << 20,
            max_prompt_bytes: 256 << 10,
            max_concurrent_requests: 64,
            max_concurrent_per_agent: 16,
            shutdown_grace_seconds: 30,
            drain_seconds: 5,
            max_connections: 256,
            max_connections_per_client: 64,
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            send_timeout_seconds: 30,
            metrics_token: None,
            operator_token: None,
        }
    }
}

/// `[slm.pool]`: what the workers of every model may use together, and
/// how long they stay loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSettings {
    /// Memory for all workers, MB; `None`: half of the physical memory.
    pub memory_budget_mb: Option<u64>,
    /// CPUs granted to the runtime's workers; `None`: every CPU.
    pub cores: Option<u32>,
    /// Workers loaded at once; `None`: one per granted core.
    pub max_loaded_workers: Option<usize>,
    /// Idle time before a worker is unloaded, seconds.
    pub keep_alive_seconds: u64,
    /// Idle time per model id, seconds, where it differs.
    pub keep_alive_by_model: BTreeMap<String, u64>,
    /// Models loaded when the pool starts, never unloaded or evicted.
    pub pinned_models: Vec<String>,
    /// Whether a HuggingFace model missing from the Hugging Face cache is
    /// pulled when it is first asked for (its request waits for the
    /// download; `HF_ENDPOINT`, `HF_TOKEN` and the pin apply as to
    /// `symbi-slm models pull`). Default `false`: a run never downloads,
    /// and a missing model is refused with the command that pulls it.
    pub pull_on_first_use: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            memory_budget_mb: None,
            cores: None,
            max_loaded_workers: None,
            keep_alive_seconds: 300,
            keep_alive_by_model: BTreeMap::new(),
            pinned_models: Vec::new(),
            pull_on_first_use: false,
        }
    }
}

/// Models and the agents allowed to use them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelAllowListConfig {
    /// Every model the runtime knows, in config order.
    pub global_models: Vec<Model>,
    /// Agent id to the ids of the models it may use.
    pub agent_model_maps: BTreeMap<String, Vec<String>>,
    /// Whether the allow-lists may be changed at run time. Only `false` is
    /// supported; `true` is rejected by validation.
    pub allow_runtime_overrides: bool,
    /// What an agent with no entry in `agent_model_maps` may use.
    pub unmapped_agent_access: UnmappedAgentAccess,
}

/// What an agent without an entry in `agent_model_maps` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnmappedAgentAccess {
    /// No model at all (least privilege, the default).
    #[default]
    Deny,
    /// Every model in `global_models`.
    AllGlobalModels,
}

/// One model the runtime may run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    /// Unique id, used by agent maps and callers.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Where the model comes from.
    pub provider: ModelProvider,
    /// What the model can do.
    pub capabilities: Vec<ModelCapability>,
    /// What running it needs.
    pub resource_requirements: ModelResourceRequirements,
    /// How its workers are sized and how it samples by default
    /// (`settings`; see [`ModelSettings`]).
    #[serde(skip_serializing_if = "is_default")]
    pub settings: ModelSettings,
}

fn is_default(s: &ModelSettings) -> bool {
    s == &ModelSettings::default()
}

/// Where a model comes from. Externally tagged, as in the Symbiont schema:
/// `provider = { LocalFile = { file_path = "/models/x.gguf" } }`.
///
/// All providers may be listed in the catalog; `LocalFile` models run in
/// sandboxed workers, `OpenAI`, `Anthropic` and `Custom` ones through
/// `RemoteRunner`; `HuggingFace` ones run from the Hugging Face cache in
/// sandboxed workers, once pulled. A key is never
/// part of the config (unknown fields such as `api_key` are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub enum ModelProvider {
    /// A GGUF file of a repository on a Hugging Face hub, run from the
    /// Hugging Face cache (`symbi-slm models pull` puts it there; files
    /// another tool pulled count too).
    HuggingFace {
        /// The repository, `org/name`.
        model_path: String,
        /// The file (`name.gguf`, or `dir/name.gguf`), or a quantisation
        /// such as `Q4_K_M` as `llama-server -hf repo:quant` takes it;
        /// omitted when the repository holds one GGUF model. A split GGUF
        /// (`-00001-of-0000N.gguf`) is pulled whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// A branch, tag or commit (default `main`); a branch or tag is
        /// resolved to a commit when pulled, and runs use that commit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        /// The file's SHA-256 (64 hex digits): other bytes are refused
        /// when pulled and when run, both digests named. Without it the
        /// hub's own LFS digest is checked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// A GGUF file on the local filesystem.
    LocalFile {
        /// Absolute path of the file.
        file_path: PathBuf,
        /// The file's SHA-256 (64 hex digits): a file with other bytes is
        /// refused, both digests named. Checked on the descriptor the
        /// worker loads, once per version of the file (a digest cache).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// A model of OpenAI's API (Chat Completions), run by `RemoteRunner`.
    /// The key comes from the environment: `$OPENAI_API_KEY`, or the
    /// variable `api_key_env` names.
    OpenAI {
        /// The API's model name.
        model_name: String,
        /// The API's base URL (default `https://api.openai.com/v1`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// The environment variable holding the key (default
        /// `OPENAI_API_KEY`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
    },
    /// A model of Anthropic's Messages API, run by `RemoteRunner`. The key
    /// comes from `$ANTHROPIC_API_KEY`, or the variable `api_key_env` names.
    Anthropic {
        /// The API's model name.
        model_name: String,
        /// The API's base URL (default `https://api.anthropic.com`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// The environment variable holding the key (default
        /// `ANTHROPIC_API_KEY`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
    },
    /// Any OpenAI-compatible endpoint (vLLM, llama.cpp's server, another
    /// symbi-slm serve), run by `RemoteRunner`.
    Custom {
        /// The endpoint's base URL, such as `http://10.0.0.5:8000/v1`
        /// (`/chat/completions` is added).
        endpoint_url: String,
        /// The model to ask the endpoint for (default: the catalog id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_name: Option<String>,
        /// The environment variable holding a bearer key, if the endpoint
        /// wants one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key_env: Option<String>,
    },
}

impl ModelProvider {
    /// The provider's name as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HuggingFace { .. } => "HuggingFace",
            Self::LocalFile { .. } => "LocalFile",
            Self::OpenAI { .. } => "OpenAI",
            Self::Anthropic { .. } => "Anthropic",
            Self::Custom { .. } => "Custom",
        }
    }
}

/// What a model can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ModelCapability {
    /// Free text generation.
    TextGeneration,
    /// Writing code.
    CodeGeneration,
    /// Multi-step reasoning.
    Reasoning,
    /// Choosing and calling tools.
    ToolUse,
    /// Structured function calls.
    FunctionCalling,
    /// Producing embeddings.
    Embeddings,
}

impl ModelCapability {
    /// Every capability, in declaration order.
    pub const ALL: [ModelCapability; 6] = [
        Self::TextGeneration,
        Self::CodeGeneration,
        Self::Reasoning,
        Self::ToolUse,
        Self::FunctionCalling,
        Self::Embeddings,
    ];

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TextGeneration => "TextGeneration",
            Self::CodeGeneration => "CodeGeneration",
            Self::Reasoning => "Reasoning",
            Self::ToolUse => "ToolUse",
            Self::FunctionCalling => "FunctionCalling",
            Self::Embeddings => "Embeddings",
        }
    }
}

impl std::fmt::Display for ModelCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelCapability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown capability `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What running a model needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelResourceRequirements {
    /// Memory the model needs to run, in MB. Default 512.
    pub min_memory_mb: u64,
    /// CPU cores the model runs best with. Default 1.0.
    pub preferred_cpu_cores: f32,
    /// GPU the model needs, if any.
    pub gpu_requirements: Option<GpuRequirements>,
}

impl Default for ModelResourceRequirements {
    fn default() -> Self {
        Self {
            min_memory_mb: 512,
            preferred_cpu_cores: 1.0,
            gpu_requirements: None,
        }
    }
}

/// A model's GPU needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequirements {
    /// Video memory needed, in MB.
    pub min_vram_mb: u64,
    /// Minimum compute capability, such as `"8.0"`.
    pub compute_capability: String,
}

impl Default for Slm {
    /// No models, the built-in profiles, `secure` as default, disabled.
    fn default() -> Self {
        Self {
            enabled: false,
            model_allow_lists: ModelAllowListConfig {
                global_models: Vec::new(),
                agent_model_maps: BTreeMap::new(),
                allow_runtime_overrides: false,
                unmapped_agent_access: UnmappedAgentAccess::Deny,
            },
            sandbox_profiles: BUILTIN_PROFILES
                .iter()
                .filter_map(|n| SandboxProfile::builtin(n).map(|p| (n.to_string(), p)))
                .collect(),
            default_sandbox_profile: "secure".into(),
            audit_log_path: None,
            pool: PoolSettings::default(),
            service: ServiceSettings::default(),
        }
    }
}

impl Slm {
    /// Parses and validates a TOML document whose `[slm]` table holds the
    /// config. Other top-level tables (the rest of a runtime config) are
    /// ignored; unknown keys inside `[slm]` are errors.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                size: text.len() as u64,
                max: MAX_CONFIG_BYTES as u64,
            });
        }
        let raw = raw::parse_document(text)?;
        let slm = raw.into_slm();
        slm.validate_with_source(Some(text))?;
        Ok(slm)
    }

    /// Every problem of a document at once, for `symbi-slm config check`:
    /// each wrong type, unknown key and missing field (found by reading
    /// on without the value of the one before; a syntax error ends the
    /// reading), then every rule of the schema on what could be read. The
    /// config comes back as read (without the values that were wrong)
    /// unless the document could not be read at all; it is valid only when
    /// the list is empty.
    pub fn diagnose_toml_str(text: &str) -> (Option<Self>, Vec<ConfigIssue>) {
        if text.len() > MAX_CONFIG_BYTES {
            let e = ConfigError::TooLarge {
                size: text.len() as u64,
                max: MAX_CONFIG_BYTES as u64,
            };
            return (None, vec![ConfigIssue::whole(e.to_string())]);
        }
        let (raw, errors) = raw::parse_document_all(text);
        let mut issues: Vec<ConfigIssue> = errors
            .into_iter()
            .map(|e| match e {
                ConfigError::Parse {
                    key_path,
                    location,
                    message,
                    ..
                } => ConfigIssue {
                    key_path,
                    location,
                    problem: Problem::Parse(message),
                },
                other => ConfigIssue::whole(other.to_string()),
            })
            .collect();
        let slm = raw.map(raw::RawSlm::into_slm);
        if let Some(slm) = &slm {
            issues.extend(validate::check(slm).into_iter().map(|(key_path, problem)| {
                ConfigIssue {
                    location: locate::locate(text, &key_path),
                    key_path,
                    problem,
                }
            }));
        }
        (slm, issues)
    }

    /// Reads, parses and validates a config file (see [`Slm::from_toml_str`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = Self::read_text(path)?;
        Self::from_toml_str(&text).map_err(|e| e.with_file(path))
    }

    /// [`Slm::diagnose_toml_str`] of a file; an error when the file cannot
    /// be read as text at all (missing, not a file, too large, not UTF-8).
    pub fn diagnose_file(
        path: impl AsRef<Path>,
    ) -> Result<(Option<Self>, Vec<ConfigIssue>), ConfigError> {
        Ok(Self::diagnose_toml_str(&Self::read_text(path.as_ref())?))
    }

    /// The text of a config file, after the checks every reader makes.
    fn read_text(path: &Path) -> Result<String, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(ConfigError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > MAX_CONFIG_BYTES as u64 {
            return Err(ConfigError::TooLarge {
                size: meta.len(),
                max: MAX_CONFIG_BYTES as u64,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::NotUtf8 {
                path: path.to_path_buf(),
                byte_offset: valid.len(),
                line: valid.iter().filter(|b| **b == b'\n').count() + 1,
            }
        })?;
        Ok(text)
    }

    /// Checks every rule of the schema on an `Slm` built in code. Errors carry
    /// key paths but no line numbers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with_source(None)
    }

    fn validate_with_source(&self, source: Option<&str>) -> Result<(), ConfigError> {
        let issues = validate::check(self);
        if issues.is_empty() {
            return Ok(());
        }
        let issues = issues
            .into_iter()
            .map(|(key_path, problem)| ConfigIssue {
                location: source.and_then(|s| locate::locate(s, &key_path)),
                key_path,
                problem,
            })
            .collect();
        Err(ConfigError::Invalid { file: None, issues })
    }

    /// The profile `default_sandbox_profile` names.
    pub fn default_profile(&self) -> Option<&SandboxProfile> {
        self.sandbox_profiles.get(&self.default_sandbox_profile)
    }
}
