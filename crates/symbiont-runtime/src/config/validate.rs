//! Rules a config must satisfy beyond its types. Every problem found is
//! collected with its key path; nothing stops at the first.

use std::collections::HashMap;

use super::{
    ConfigIssue, GpuAccess, NetworkAccessMode, NetworkProtocol, Problem, SandboxProfile, Slm,
};

/// Largest memory or disk size accepted, in MB (16 TiB).
pub const MAX_SIZE_MB: u64 = 16 * 1024 * 1024;
/// Most CPU cores a model or profile may name.
pub const MAX_CPU_CORES: f32 = 1024.0;
/// Longest execution time accepted, in seconds (one week).
pub const MAX_EXECUTION_SECONDS: u64 = 7 * 24 * 3600;
/// Most child processes a profile may allow.
pub const MAX_CHILD_PROCESSES: u32 = 4096;

pub(super) type Issues = Vec<(String, Problem)>;

pub(super) fn check(slm: &Slm) -> Issues {
    let mut out = Issues::new();
    check_models(slm, &mut out);
    check_agent_maps(slm, &mut out);
    if slm.model_allow_lists.allow_runtime_overrides {
        out.push((
            "slm.model_allow_lists.allow_runtime_overrides".into(),
            Problem::NotSupportedYet {
                what: "allow_runtime_overrides = true".into(),
                why: "allow-lists are fixed when the catalog is built; remove the key or set it to false",
            },
        ));
    }
    for (name, profile) in &slm.sandbox_profiles {
        let base = format!("slm.sandbox_profiles.{name}");
        if !is_identifier(name) {
            out.push((
                base.clone(),
                Problem::InvalidName {
                    what: "profile name (letters, digits, `_` and `-`)",
                    value: name.clone(),
                },
            ));
        }
        check_profile(&base, profile, &mut out);
    }
    check_pool(slm, &mut out);
    check_service(slm, &mut out);
    if let Some(path) = &slm.audit_log_path {
        if !path.starts_with('/') && path != crate::audit::STDOUT {
            out.push((
                "slm.audit_log_path".into(),
                Problem::RelativePath { path: path.clone() },
            ));
        }
    }
    if !slm
        .sandbox_profiles
        .contains_key(&slm.default_sandbox_profile)
    {
        out.push((
            "slm.default_sandbox_profile".into(),
            Problem::UnknownDefaultProfile {
                name: slm.default_sandbox_profile.clone(),
                available: slm.sandbox_profiles.keys().cloned().collect(),
            },
        ));
    }
    out
}

fn check_models(slm: &Slm, out: &mut Issues) {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (i, m) in slm.model_allow_lists.global_models.iter().enumerate() {
        let base = format!("slm.model_allow_lists.global_models[{i}]");
        if m.id.is_empty() {
            out.push((format!("{base}.id"), Problem::Empty));
        } else if m.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push((
                format!("{base}.id"),
                Problem::InvalidName {
                    what: "model id (no spaces or control characters)",
                    value: m.id.clone(),
                },
            ));
        } else if let Some(&first) = first_seen.get(m.id.as_str()) {
            out.push((
                format!("{base}.id"),
                Problem::DuplicateModelId {
                    id: m.id.clone(),
                    first_index: first,
                },
            ));
        } else {
            first_seen.insert(&m.id, i);
        }
        if m.name.trim().is_empty() {
            out.push((format!("{base}.name"), Problem::Empty));
        }
        super::provider::check(&format!("{base}.provider"), &m.provider, out);
        super::settings::check(slm, &format!("{base}.settings"), m, out);
        let req = &m.resource_requirements;
        let rbase = format!("{base}.resource_requirements");
        size_mb(&format!("{rbase}.min_memory_mb"), req.min_memory_mb, out);
        cores(
            &format!("{rbase}.preferred_cpu_cores"),
            req.preferred_cpu_cores,
            out,
        );
        if let Some(gpu) = &req.gpu_requirements {
            let g = format!("{rbase}.gpu_requirements");
            size_mb(&format!("{g}.min_vram_mb"), gpu.min_vram_mb, out);
            if gpu.compute_capability.trim().is_empty() {
                out.push((format!("{g}.compute_capability"), Problem::Empty));
            }
        }
    }
}

fn check_agent_maps(slm: &Slm, out: &mut Issues) {
    let lists = &slm.model_allow_lists;
    let ids: std::collections::HashSet<&str> =
        lists.global_models.iter().map(|m| m.id.as_str()).collect();
    for (agent, models) in &lists.agent_model_maps {
        let base = format!("slm.model_allow_lists.agent_model_maps.{agent}");
        if agent.trim().is_empty() {
            out.push((base.clone(), Problem::Empty));
        }
        for (i, model) in models.iter().enumerate() {
            if !ids.contains(model.as_str()) {
                out.push((
                    format!("{base}[{i}]"),
                    Problem::UnknownModelInAgentMap {
                        agent: agent.clone(),
                        model: model.clone(),
                    },
                ));
            }
        }
    }
}

/// The rules of one sandbox profile, wherever it comes from: the config
/// loader runs them on every profile of a config, and
/// `LocalGgufRunnerBuilder::build` on a profile built in code. Key paths
/// start with `base` (for example `slm.sandbox_profiles.secure`).
pub fn check_sandbox_profile(base: &str, p: &SandboxProfile) -> Vec<ConfigIssue> {
    let mut out = Issues::new();
    check_profile(base, p, &mut out);
    out.into_iter()
        .map(|(key_path, problem)| ConfigIssue {
            key_path,
            location: None,
            problem,
        })
        .collect()
}

fn check_profile(base: &str, p: &SandboxProfile, out: &mut Issues) {
    let r = &p.resources;
    let rb = format!("{base}.resources");
    size_mb(&format!("{rb}.max_memory_mb"), r.max_memory_mb, out);
    cores(&format!("{rb}.max_cpu_cores"), r.max_cpu_cores, out);
    size_mb(&format!("{rb}.max_disk_mb"), r.max_disk_mb, out);
    if r.gpu_access != GpuAccess::None {
        out.push((
            format!("{rb}.gpu_access"),
            Problem::NotSupportedYet {
                what: format!("gpu_access = {:?}", r.gpu_access),
                why: "the worker is a CPU build and no GPU device rules exist yet; use \"None\"",
            },
        ));
    }
    if r.max_io_bandwidth_mbps.is_some() {
        out.push((
            format!("{rb}.max_io_bandwidth_mbps"),
            Problem::NotSupportedYet {
                what: "max_io_bandwidth_mbps".into(),
                why: "disk bandwidth needs a cgroup io controller, which is not used; remove the key",
            },
        ));
    }

    let f = &p.filesystem;
    let fb = format!("{base}.filesystem");
    for (key, paths) in [
        ("read_paths", &f.read_paths),
        ("write_paths", &f.write_paths),
        ("denied_paths", &f.denied_paths),
    ] {
        for (i, path) in paths.iter().enumerate() {
            if let Some(problem) = path_problem(path) {
                out.push((format!("{fb}.{key}[{i}]"), problem));
            }
        }
    }
    size_mb(&format!("{fb}.max_file_size_mb"), f.max_file_size_mb, out);

    let l = &p.process_limits;
    let lb = format!("{base}.process_limits");
    if l.max_child_processes > MAX_CHILD_PROCESSES {
        out.push((
            format!("{lb}.max_child_processes"),
            Problem::TooLarge {
                value: l.max_child_processes.into(),
                max: MAX_CHILD_PROCESSES.into(),
            },
        ));
    }
    let t = l.max_execution_time_seconds;
    let tk = format!("{lb}.max_execution_time_seconds");
    if t == 0 {
        out.push((tk, Problem::NotPositive));
    } else if t > MAX_EXECUTION_SECONDS {
        out.push((
            tk,
            Problem::TooLarge {
                value: t,
                max: MAX_EXECUTION_SECONDS,
            },
        ));
    }
    for (i, name) in l.allowed_syscalls.iter().enumerate() {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok && symbiont_sandbox::never_allowed(name) {
            out.push((
                format!("{lb}.allowed_syscalls[{i}]"),
                Problem::InvalidName {
                    what: "entry: this call is refused under every profile (kernel attack surface, other processes or new processes)",
                    value: name.clone(),
                },
            ));
        } else if ok && symbiont_sandbox::syscall_number(name).is_none() {
            out.push((
                format!("{lb}.allowed_syscalls[{i}]"),
                Problem::InvalidName {
                    what: "syscall (not a system call of this architecture)",
                    value: name.clone(),
                },
            ));
        } else if !ok {
            out.push((
                format!("{lb}.allowed_syscalls[{i}]"),
                Problem::InvalidName {
                    what: "syscall name (lower-case letters, digits and `_`)",
                    value: name.clone(),
                },
            ));
        }
    }

    let n = &p.network;
    let nb = format!("{base}.network");
    if n.access_mode == NetworkAccessMode::Restricted {
        if n.allowed_destinations.is_empty() {
            out.push((
                format!("{nb}.allowed_destinations"),
                Problem::Conflict(
                    "access_mode = \"Restricted\" with no allowed_destinations reaches nothing; list destinations or use \"None\"",
                ),
            ));
        }
        for (i, d) in n.allowed_destinations.iter().enumerate() {
            let key = format!("{nb}.allowed_destinations[{i}]");
            if matches!(
                crate::egress::rule(d),
                Err(symbiont_egress::PolicyError::BadHost(_))
            ) {
                out.push((
                    format!("{key}.host"),
                    Problem::InvalidName {
                        what: "host name or IP address",
                        value: d.host.clone(),
                    },
                ));
            }
            if d.port == Some(0) {
                out.push((format!("{key}.port"), Problem::NotPositive));
            }
            if d.protocol == Some(NetworkProtocol::UDP) {
                out.push((
                    format!("{key}.protocol"),
                    Problem::NotSupportedYet {
                        what: "protocol = \"UDP\"".into(),
                        why: "the egress proxy carries TCP (HTTP and CONNECT tunnels) only; a restricted process has no other way out",
                    },
                ));
            }
        }
    } else if !n.allowed_destinations.is_empty() {
        out.push((
            format!("{nb}.allowed_destinations"),
            Problem::Conflict(
                "allowed_destinations only has a meaning with access_mode = \"Restricted\"",
            ),
        ));
    }
    match n.max_bandwidth_mbps {
        Some(0) => out.push((format!("{nb}.max_bandwidth_mbps"), Problem::NotPositive)),
        Some(_) if n.access_mode != NetworkAccessMode::Restricted => out.push((
            format!("{nb}.max_bandwidth_mbps"),
            Problem::Conflict(
                "max_bandwidth_mbps is enforced by the egress proxy, which only access_mode = \"Restricted\" uses",
            ),
        )),
        _ => {}
    }
    if p.security.require_encryption {
        out.push((
            format!("{base}.security.require_encryption"),
            Problem::NotSupportedYet {
                what: "require_encryption = true".into(),
                why: "the worker has no network and no encrypted channel to offer; set it to false",
            },
        ));
    }
}

fn size_mb(key: &str, value: u64, out: &mut Issues) {
    if value == 0 {
        out.push((key.into(), Problem::NotPositive));
    } else if value > MAX_SIZE_MB {
        out.push((
            key.into(),
            Problem::TooLarge {
                value,
                max: MAX_SIZE_MB,
            },
        ));
    }
}

fn cores(key: &str, value: f32, out: &mut Issues) {
    if !value.is_finite() || value <= 0.0 {
        out.push((
            key.into(),
            Problem::NotPositiveNumber {
                value: value.into(),
            },
        ));
    } else if value > MAX_CPU_CORES {
        out.push((
            key.into(),
            Problem::TooLarge {
                value: value.ceil() as u64,
                max: MAX_CPU_CORES as u64,
            },
        ));
    }
}

/// Paths must be absolute; a trailing `/*` or `/**` means the directory.
fn path_problem(path: &str) -> Option<Problem> {
    if !path.starts_with('/') {
        return Some(Problem::RelativePath { path: path.into() });
    }
    let stem = normalize_path(path);
    if stem.contains(['*', '?', '[', ']', '{', '}']) {
        return Some(Problem::UnsupportedGlob { path: path.into() });
    }
    None
}

/// The directory a configured path names: a trailing `/*` or `/**` removed.
pub fn normalize_path(path: &str) -> &str {
    let stem = path
        .strip_suffix("/**")
        .or_else(|| path.strip_suffix("/*"))
        .unwrap_or(path);
    if stem.is_empty() {
        "/"
    } else {
        stem
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[slm.pool]`: positive budgets, no more cores than this host has, and
/// model ids that exist.
fn check_pool(slm: &Slm, out: &mut Issues) {
    let pool = &slm.pool;
    let positive = [
        ("memory_budget_mb", pool.memory_budget_mb),
        ("cores", pool.cores.map(u64::from)),
        (
            "max_loaded_workers",
            pool.max_loaded_workers.map(|v| v as u64),
        ),
    ];
    for (key, value) in positive {
        if value == Some(0) {
            out.push((format!("slm.pool.{key}"), Problem::NotPositive));
        }
    }
    let host = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    if let Some(cores) = pool.cores.filter(|&c| u64::from(c) > host) {
        out.push((
            "slm.pool.cores".into(),
            Problem::TooLarge {
                value: u64::from(cores),
                max: host,
            },
        ));
    }
    let known = |id: &str| {
        slm.model_allow_lists
            .global_models
            .iter()
            .any(|m| m.id == id)
    };
    for (i, id) in pool.pinned_models.iter().enumerate() {
        if !known(id) {
            out.push((
                format!("slm.pool.pinned_models[{i}]"),
                Problem::UnknownModel { model: id.clone() },
            ));
        }
    }
    for id in pool.keep_alive_by_model.keys() {
        if !known(id) {
            out.push((
                format!("slm.pool.keep_alive_by_model.{id}"),
                Problem::UnknownModel { model: id.clone() },
            ));
        }
    }
}

/// `[slm.service]`: an address that parses, token hashes in the one
/// accepted form (never echoed: a raw token pasted there by mistake must
/// not reach a log), agent names, a profile that exists, positive limits.
fn check_service(slm: &Slm, out: &mut Issues) {
    let svc = &slm.service;
    if svc.listen.parse::<std::net::SocketAddr>().is_err() {
        out.push((
            "slm.service.listen".into(),
            Problem::InvalidName {
                what: "socket address (such as `127.0.0.1:8080` or `[::1]:8080`)",
                value: svc.listen.clone(),
            },
        ));
    }
    for (agent, hash) in &svc.agent_tokens {
        let key = format!("slm.service.agent_tokens.{agent}");
        if !is_identifier(agent) {
            out.push((
                key.clone(),
                Problem::InvalidName {
                    what: "agent id (letters, digits, `_` and `-`)",
                    value: agent.clone(),
                },
            ));
        }
        if !is_token_hash(hash) {
            out.push((key, Problem::BadTokenHash));
        } else if let Some((first, _)) = svc
            .agent_tokens
            .iter()
            .find(|(a, h)| *h == hash && a.as_str() < agent.as_str())
        {
            // One token would prove two agents: whichever matched last.
            out.push((
                key,
                Problem::DuplicateTokenHash {
                    first: first.clone(),
                },
            ));
        }
    }
    if let Some(hash) = &svc.metrics_token {
        if !is_token_hash(hash) {
            out.push(("slm.service.metrics_token".into(), Problem::BadTokenHash));
        } else if let Some((agent, _)) = svc.agent_tokens.iter().find(|(_, h)| *h == hash) {
            // The scraper's token would also prove an agent.
            out.push((
                "slm.service.metrics_token".into(),
                Problem::MetricsTokenIsAgents {
                    agent: agent.clone(),
                },
            ));
        }
    }
    if let Some(hash) = &svc.operator_token {
        if !is_token_hash(hash) {
            out.push(("slm.service.operator_token".into(), Problem::BadTokenHash));
        } else if let Some((agent, _)) = svc.agent_tokens.iter().find(|(_, h)| *h == hash) {
            // The operator's token would also prove an agent.
            out.push((
                "slm.service.operator_token".into(),
                Problem::OperatorTokenIsAgents {
                    agent: agent.clone(),
                },
            ));
        }
    }
    if svc.operator_token.is_some() && svc.operator_token == svc.metrics_token {
        out.push((
            "slm.service.operator_token".into(),
            Problem::Conflict(
                "the same token hash as metrics_token: whoever scrapes the metrics could see every worker; make a token of its own (`symbi-slm agents operator-token`)",
            ),
        ));
    }
    if let Some(agent) = svc.anonymous_agent.as_ref().filter(|a| !is_identifier(a)) {
        out.push((
            "slm.service.anonymous_agent".into(),
            Problem::InvalidName {
                what: "agent id (letters, digits, `_` and `-`)",
                value: agent.clone(),
            },
        ));
    }
    if let Some(name) = &svc.sandbox_profile {
        if !slm.sandbox_profiles.contains_key(name) {
            out.push((
                "slm.service.sandbox_profile".into(),
                Problem::UnknownDefaultProfile {
                    name: name.clone(),
                    available: slm.sandbox_profiles.keys().cloned().collect(),
                },
            ));
        }
    }
    let positive = [
        ("max_body_bytes", svc.max_body_bytes),
        ("max_prompt_bytes", svc.max_prompt_bytes),
        (
            "max_concurrent_requests",
            svc.max_concurrent_requests as u64,
        ),
        (
            "max_concurrent_per_agent",
            svc.max_concurrent_per_agent as u64,
        ),
        ("max_connections", svc.max_connections as u64),
        (
            "max_connections_per_client",
            svc.max_connections_per_client as u64,
        ),
        ("header_timeout_seconds", svc.header_timeout_seconds),
        ("body_timeout_seconds", svc.body_timeout_seconds),
        ("send_timeout_seconds", svc.send_timeout_seconds),
    ];
    for (key, value) in positive {
        if value == 0 {
            out.push((format!("slm.service.{key}"), Problem::NotPositive));
        }
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_token_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
