//! The first config layer: serde structs shaped like the TOML, every field
//! optional, unknown keys rejected. `into_slm` fills the documented defaults;
//! `validate.rs` then checks the result.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    locate, ConfigError, GpuAccess, GpuRequirements, Model, ModelAllowListConfig, ModelCapability,
    ModelProvider, ModelResourceRequirements, ModelSettings, NetworkAccessMode, NetworkDestination,
    SamplingDefaults, SandboxProfile, Slm, UnmappedAgentAccess,
};

/// A whole runtime config document: only `[slm]` is ours.
#[derive(Deserialize)]
struct RawDocument {
    slm: Option<RawSlm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlm {
    enabled: Option<bool>,
    model_allow_lists: Option<RawAllowLists>,
    sandbox_profiles: Option<BTreeMap<String, RawProfile>>,
    default_sandbox_profile: Option<String>,
    audit_log_path: Option<String>,
    pool: Option<RawPool>,
    service: Option<RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    listen: Option<String>,
    agent_tokens: Option<BTreeMap<String, String>>,
    anonymous_agent: Option<String>,
    sandbox_profile: Option<String>,
    max_body_bytes: Option<NonNeg>,
    max_prompt_bytes: Option<NonNeg>,
    max_concurrent_requests: Option<NonNeg>,
    max_concurrent_per_agent: Option<NonNeg>,
    shutdown_grace_seconds: Option<NonNeg>,
    drain_seconds: Option<NonNeg>,
    max_connections: Option<NonNeg>,
    max_connections_per_client: Option<NonNeg>,
    header_timeout_seconds: Option<NonNeg>,
    body_timeout_seconds: Option<NonNeg>,
    send_timeout_seconds: Option<NonNeg>,
    metrics_token: Option<String>,
    operator_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPool {
    memory_budget_mb: Option<NonNeg>,
    cores: Option<NonNeg>,
    max_loaded_workers: Option<NonNeg>,
    keep_alive_seconds: Option<NonNeg>,
    keep_alive_by_model: Option<BTreeMap<String, NonNeg>>,
    pinned_models: Option<Vec<String>>,
    pull_on_first_use: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowLists {
    global_models: Option<Vec<RawModel>>,
    agent_model_maps: Option<BTreeMap<String, Vec<String>>>,
    allow_runtime_overrides: Option<bool>,
    unmapped_agent_access: Option<UnmappedAgentAccess>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    name: String,
    provider: ModelProvider,
    capabilities: Option<Vec<ModelCapability>>,
    resource_requirements: Option<RawRequirements>,
    settings: Option<RawSettings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    context_size: Option<NonNeg>,
    threads: Option<NonNeg>,
    slots: Option<NonNeg>,
    cache_tokens: Option<NonNeg>,
    batch_size: Option<NonNeg>,
    keep_alive_seconds: Option<NonNeg>,
    sampling: Option<RawSampling>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<NonNeg>,
    min_p: Option<f64>,
    repeat_penalty: Option<f64>,
    max_tokens: Option<NonNeg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    min_memory_mb: Option<NonNeg>,
    preferred_cpu_cores: Option<f64>,
    gpu_requirements: Option<RawGpuRequirements>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpuRequirements {
    min_vram_mb: u64,
    compute_capability: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    resources: Option<RawResources>,
    filesystem: Option<RawFilesystem>,
    process_limits: Option<RawProcessLimits>,
    network: Option<RawNetwork>,
    security: Option<RawSecurity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    max_memory_mb: Option<NonNeg>,
    max_cpu_cores: Option<f64>,
    max_disk_mb: Option<NonNeg>,
    gpu_access: Option<GpuAccess>,
    max_io_bandwidth_mbps: Option<NonNeg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    read_paths: Option<Vec<String>>,
    write_paths: Option<Vec<String>>,
    denied_paths: Option<Vec<String>>,
    allow_temp_files: Option<bool>,
    max_file_size_mb: Option<NonNeg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessLimits {
    max_child_processes: Option<NonNeg>,
    max_execution_time_seconds: Option<NonNeg>,
    allowed_syscalls: Option<Vec<String>>,
    process_priority: Option<Nice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    access_mode: Option<NetworkAccessMode>,
    allowed_destinations: Option<Vec<NetworkDestination>>,
    max_bandwidth_mbps: Option<NonNeg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    strict_syscall_filtering: Option<bool>,
    disable_debugging: Option<bool>,
    enable_audit_logging: Option<bool>,
    require_encryption: Option<bool>,
    isolate_agents: Option<bool>,
}

/// Parses the document; a syntax, type or unknown-key error names its key
/// path and, where the parser knows it, its line and column.
pub(super) fn parse_document(text: &str) -> Result<RawSlm, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(text, String::new(), &e))?;
    let doc: RawDocument = serde_path_to_error::deserialize(de).map_err(|e| {
        let key_path = e.path().to_string();
        parse_error(text, key_path, e.inner())
    })?;
    doc.slm.ok_or(ConfigError::MissingSlmTable)
}

/// Every parse error of the document (a wrong type, an unknown key, a
/// bad value), each with its key path and line, and the document read
/// without the values they name; `None` when it cannot be read on (a
/// syntax error, or a required field missing: what follows would be
/// guesses). The first error is [`parse_document`]'s; each further one is
/// found by removing the value of the last and reading again (at most
/// 100).
pub(super) fn parse_document_all(text: &str) -> (Option<RawSlm>, Vec<ConfigError>) {
    let first = match parse_document(text) {
        Ok(raw) => return (Some(raw), Vec::new()),
        Err(e) => e,
    };
    let readable = matches!(&first, ConfigError::Parse { key_path, message, .. }
        if !key_path.is_empty() && !message.starts_with("missing field"));
    let mut errors = vec![first];
    if !readable {
        return (None, errors);
    }
    let Ok(mut doc) = toml::from_str::<toml::Table>(text) else {
        return (None, errors);
    };
    // The path of the first error, as segments (a key may hold dots).
    let mut path =
        match serde_path_to_error::deserialize::<_, RawDocument>(toml::Value::Table(doc.clone())) {
            Err(e) => segments(e.path()),
            Ok(d) => return (d.slm, errors),
        };
    while errors.len() < 100 && remove(&mut doc, &path) {
        let read: Result<RawDocument, _> =
            serde_path_to_error::deserialize(toml::Value::Table(doc.clone()));
        match read {
            Ok(d) => return (d.slm, errors),
            Err(e) => {
                let key = e.path().to_string();
                let message = e.inner().message().trim().to_string();
                let stop = message.starts_with("missing field");
                errors.push(ConfigError::Parse {
                    file: None,
                    location: locate::locate(text, &key),
                    message,
                    key_path: key,
                });
                if stop {
                    break;
                }
                path = segments(e.path());
            }
        }
    }
    (None, errors)
}

/// One step of a key path: a table's key or an array's index.
enum Step {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// Removes the value at `path` from a table; false when there is none.
fn remove(table: &mut toml::Table, path: &[Step]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut here: Option<&mut toml::Value> = None;
    for step in parents {
        let next = match (here, step) {
            (None, Step::Key(k)) => table.get_mut(k),
            (Some(toml::Value::Table(t)), Step::Key(k)) => t.get_mut(k),
            (Some(toml::Value::Array(a)), Step::Index(i)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => here = Some(v),
            None => return false,
        }
    }
    match (here, last) {
        (None, Step::Key(k)) => table.remove(k).is_some(),
        (Some(toml::Value::Table(t)), Step::Key(k)) => t.remove(k).is_some(),
        (Some(toml::Value::Array(a)), Step::Index(i)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

fn parse_error(text: &str, key_path: String, e: &toml::de::Error) -> ConfigError {
    let key_path = if key_path == "." {
        String::new()
    } else {
        key_path
    };
    let location = e
        .span()
        .map(|span| locate::offset_to_location(text, span.start))
        .or_else(|| locate::locate(text, &key_path));
    ConfigError::Parse {
        file: None,
        key_path,
        location,
        message: e.message().trim().to_string(),
    }
}

/// A count or size that must not be negative. The check happens while
/// parsing so that the error carries the key path and line of the value.
#[derive(Clone, Copy)]
struct NonNeg(u64);

impl<'de> Deserialize<'de> for NonNeg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u64::try_from(v)
            .map(NonNeg)
            .map_err(|_| serde::de::Error::custom(format!("must not be negative, got {v}")))
    }
}

/// A nice value: -20 (highest priority) to 19 (lowest).
#[derive(Clone, Copy)]
struct Nice(i8);

impl<'de> Deserialize<'de> for Nice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        match i8::try_from(v) {
            Ok(n) if (-20..=19).contains(&n) => Ok(Nice(n)),
            _ => Err(serde::de::Error::custom(format!(
                "must be a nice value from -20 to 19, got {v}"
            ))),
        }
    }
}

impl RawSlm {
    pub(super) fn into_slm(self) -> Slm {
        let defaults = Slm::default();
        let lists = self.model_allow_lists;
        let (models, maps, overrides, unmapped) = match lists {
            Some(l) => (
                l.global_models.unwrap_or_default(),
                l.agent_model_maps.unwrap_or_default(),
                l.allow_runtime_overrides.unwrap_or(false),
                l.unmapped_agent_access.unwrap_or_default(),
            ),
            None => (
                Vec::new(),
                BTreeMap::new(),
                false,
                UnmappedAgentAccess::Deny,
            ),
        };
        let mut profiles = defaults.sandbox_profiles;
        for (name, raw) in self.sandbox_profiles.unwrap_or_default() {
            let base = profiles
                .get(&name)
                .cloned()
                .unwrap_or_else(SandboxProfile::secure);
            profiles.insert(name, raw.merge_onto(base));
        }
        Slm {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            model_allow_lists: ModelAllowListConfig {
                global_models: models.into_iter().map(RawModel::into_model).collect(),
                agent_model_maps: maps,
                allow_runtime_overrides: overrides,
                unmapped_agent_access: unmapped,
            },
            sandbox_profiles: profiles,
            default_sandbox_profile: self
                .default_sandbox_profile
                .unwrap_or(defaults.default_sandbox_profile),
            // Every config logs to the same place unless it names one: a
            // profile's `enable_audit_logging = true` must not depend on
            // whether the operator also found this key.
            audit_log_path: self.audit_log_path.or_else(|| {
                super::default_audit_log_path().map(|p| p.to_string_lossy().into_owned())
            }),
            pool: {
                let raw = self.pool.unwrap_or_default();
                let d = super::PoolSettings::default();
                super::PoolSettings {
                    memory_budget_mb: raw.memory_budget_mb.map(|v| v.0),
                    cores: raw.cores.map(|v| u32::try_from(v.0).unwrap_or(u32::MAX)),
                    max_loaded_workers: raw
                        .max_loaded_workers
                        .map(|v| usize::try_from(v.0).unwrap_or(usize::MAX)),
                    keep_alive_seconds: raw
                        .keep_alive_seconds
                        .map_or(d.keep_alive_seconds, |v| v.0),
                    keep_alive_by_model: raw
                        .keep_alive_by_model
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                    pinned_models: raw.pinned_models.unwrap_or_default(),
                    pull_on_first_use: raw.pull_on_first_use.unwrap_or(d.pull_on_first_use),
                }
            },
            service: {
                let raw = self.service.unwrap_or_default();
                let d = super::ServiceSettings::default();
                let size =
                    |v: Option<NonNeg>| v.map(|v| usize::try_from(v.0).unwrap_or(usize::MAX));
                super::ServiceSettings {
                    listen: raw.listen.unwrap_or(d.listen),
                    agent_tokens: raw.agent_tokens.unwrap_or_default(),
                    anonymous_agent: raw.anonymous_agent,
                    sandbox_profile: raw.sandbox_profile,
                    max_body_bytes: raw.max_body_bytes.map_or(d.max_body_bytes, |v| v.0),
                    max_prompt_bytes: raw.max_prompt_bytes.map_or(d.max_prompt_bytes, |v| v.0),
                    max_concurrent_requests: size(raw.max_concurrent_requests)
                        .unwrap_or(d.max_concurrent_requests),
                    max_concurrent_per_agent: size(raw.max_concurrent_per_agent)
                        .unwrap_or(d.max_concurrent_per_agent),
                    shutdown_grace_seconds: raw
                        .shutdown_grace_seconds
                        .map_or(d.shutdown_grace_seconds, |v| v.0),
                    drain_seconds: raw.drain_seconds.map_or(d.drain_seconds, |v| v.0),
                    max_connections: size(raw.max_connections).unwrap_or(d.max_connections),
                    max_connections_per_client: size(raw.max_connections_per_client)
                        .unwrap_or(d.max_connections_per_client),
                    header_timeout_seconds: raw
                        .header_timeout_seconds
                        .map_or(d.header_timeout_seconds, |v| v.0),
                    body_timeout_seconds: raw
                        .body_timeout_seconds
                        .map_or(d.body_timeout_seconds, |v| v.0),
                    send_timeout_seconds: raw
                        .send_timeout_seconds
                        .map_or(d.send_timeout_seconds, |v| v.0),
                    metrics_token: raw.metrics_token,
                    operator_token: raw.operator_token,
                }
            },
        }
    }
}

impl RawModel {
    fn into_model(self) -> Model {
        let d = ModelResourceRequirements::default();
        let r = self.resource_requirements;
        let (mem, cores, gpu) = match r {
            Some(r) => (
                r.min_memory_mb.map_or(d.min_memory_mb, |v| v.0),
                r.preferred_cpu_cores
                    .unwrap_or(d.preferred_cpu_cores as f64),
                r.gpu_requirements.map(|g| GpuRequirements {
                    min_vram_mb: g.min_vram_mb,
                    compute_capability: g.compute_capability,
                }),
            ),
            None => (d.min_memory_mb, d.preferred_cpu_cores as f64, None),
        };
        Model {
            id: self.id,
            name: self.name,
            provider: self.provider,
            capabilities: self.capabilities.unwrap_or_default(),
            resource_requirements: ModelResourceRequirements {
                min_memory_mb: mem,
                preferred_cpu_cores: cores as f32,
                gpu_requirements: gpu,
            },
            settings: self.settings.unwrap_or_default().into_settings(),
        }
    }
}

impl RawSettings {
    fn into_settings(self) -> ModelSettings {
        // Out-of-range counts saturate, and validation names them.
        let count = |v: Option<NonNeg>| v.map(|v| u32::try_from(v.0).unwrap_or(u32::MAX));
        let s = self.sampling.unwrap_or_default();
        ModelSettings {
            context_size: count(self.context_size),
            threads: count(self.threads),
            slots: count(self.slots),
            cache_tokens: count(self.cache_tokens),
            batch_size: count(self.batch_size),
            keep_alive_seconds: self.keep_alive_seconds.map(|v| v.0),
            sampling: SamplingDefaults {
                temperature: s.temperature.map(|v| v as f32),
                top_p: s.top_p.map(|v| v as f32),
                top_k: count(s.top_k),
                min_p: s.min_p.map(|v| v as f32),
                repeat_penalty: s.repeat_penalty.map(|v| v as f32),
                max_tokens: count(s.max_tokens),
            },
        }
    }
}

impl RawProfile {
    fn merge_onto(self, mut p: SandboxProfile) -> SandboxProfile {
        if let Some(r) = self.resources {
            set_u64(&mut p.resources.max_memory_mb, r.max_memory_mb);
            if let Some(v) = r.max_cpu_cores {
                p.resources.max_cpu_cores = v as f32;
            }
            set_u64(&mut p.resources.max_disk_mb, r.max_disk_mb);
            if let Some(v) = r.gpu_access {
                p.resources.gpu_access = v;
            }
            if let Some(v) = r.max_io_bandwidth_mbps {
                p.resources.max_io_bandwidth_mbps = Some(v.0);
            }
        }
        if let Some(f) = self.filesystem {
            replace(&mut p.filesystem.read_paths, f.read_paths);
            replace(&mut p.filesystem.write_paths, f.write_paths);
            replace(&mut p.filesystem.denied_paths, f.denied_paths);
            if let Some(v) = f.allow_temp_files {
                p.filesystem.allow_temp_files = v;
            }
            set_u64(&mut p.filesystem.max_file_size_mb, f.max_file_size_mb);
        }
        if let Some(l) = self.process_limits {
            if let Some(v) = l.max_child_processes {
                p.process_limits.max_child_processes = u32::try_from(v.0).unwrap_or(u32::MAX);
            }
            set_u64(
                &mut p.process_limits.max_execution_time_seconds,
                l.max_execution_time_seconds,
            );
            replace(&mut p.process_limits.allowed_syscalls, l.allowed_syscalls);
            if let Some(v) = l.process_priority {
                p.process_limits.process_priority = v.0;
            }
        }
        if let Some(n) = self.network {
            if let Some(v) = n.access_mode {
                p.network.access_mode = v;
            }
            replace(&mut p.network.allowed_destinations, n.allowed_destinations);
            if let Some(v) = n.max_bandwidth_mbps {
                p.network.max_bandwidth_mbps = Some(v.0);
            }
        }
        if let Some(s) = self.security {
            let sec = &mut p.security;
            for (slot, v) in [
                (
                    &mut sec.strict_syscall_filtering,
                    s.strict_syscall_filtering,
                ),
                (&mut sec.disable_debugging, s.disable_debugging),
                (&mut sec.enable_audit_logging, s.enable_audit_logging),
                (&mut sec.require_encryption, s.require_encryption),
                (&mut sec.isolate_agents, s.isolate_agents),
            ] {
                if let Some(v) = v {
                    *slot = v;
                }
            }
        }
        p
    }
}

fn set_u64(slot: &mut u64, v: Option<NonNeg>) {
    if let Some(v) = v {
        *slot = v.0;
    }
}

fn replace<T>(slot: &mut Vec<T>, v: Option<Vec<T>>) {
    if let Some(v) = v {
        *slot = v;
    }
}
