//! Loading the `[slm]` config: the reference example, defaults, and broken or
//! hostile documents that must each give their own error.

use symbiont_runtime::config::{
    ConfigError, GpuAccess, ModelCapability, ModelProvider, NetworkAccessMode, Problem,
    SandboxProfile, Slm, UnmappedAgentAccess,
};

pub const REFERENCE_TOML: &str = r#"
[slm]
enabled = true
default_sandbox_profile = "secure"

# Global model definitions
[[slm.model_allow_lists.global_models]]
id = "llama2-7b"
name = "Llama 2 7B"
provider = { LocalFile = { file_path = "/models/llama2-7b.gguf" } }
capabilities = ["TextGeneration", "Reasoning"]

[slm.model_allow_lists.global_models.resource_requirements]
min_memory_mb = 8192
preferred_cpu_cores = 4.0

# Agent-specific model mappings
[slm.model_allow_lists.agent_model_maps]
"security_scanner" = ["llama2-7b"]
"code_generator" = ["codellama-7b"]

# Sandbox profiles
[slm.sandbox_profiles.secure]
[slm.sandbox_profiles.secure.resources]
max_memory_mb = 4096
max_cpu_cores = 2.0
"#;

/// The reference's TOML plus the `codellama-7b` model its agent map names
/// (the reference text maps an agent to a model it never defines, which is
/// exactly the dangling reference validation must catch).
pub fn reference_with_codellama() -> String {
    REFERENCE_TOML.replace(
        "# Agent-specific model mappings",
        r#"[[slm.model_allow_lists.global_models]]
id = "codellama-7b"
name = "Code Llama 7B"
provider = { LocalFile = { file_path = "/models/codellama-7b.gguf" } }
capabilities = ["CodeGeneration", "TextGeneration"]

[slm.model_allow_lists.global_models.resource_requirements]
min_memory_mb = 6144
preferred_cpu_cores = 4.0

# Agent-specific model mappings"#,
    )
}

#[test]
fn reference_toml_as_written_reports_its_dangling_agent_map() {
    let err = Slm::from_toml_str(REFERENCE_TOML).unwrap_err();
    let issues = err.issues();
    assert_eq!(issues.len(), 1, "{err}");
    assert_eq!(
        issues[0].key_path,
        "slm.model_allow_lists.agent_model_maps.code_generator[0]"
    );
    assert!(matches!(
        &issues[0].problem,
        Problem::UnknownModelInAgentMap { model, .. } if model == "codellama-7b"
    ));
    assert_eq!(issues[0].location.unwrap().line, 20, "{err}");
}

#[test]
fn reference_toml_parses_with_defaults_and_partial_profile_override() {
    let slm = Slm::from_toml_str(&reference_with_codellama()).unwrap();
    assert!(slm.enabled);
    assert_eq!(slm.default_sandbox_profile, "secure");
    let m = &slm.model_allow_lists.global_models[0];
    assert_eq!(m.id, "llama2-7b");
    assert_eq!(
        m.provider,
        ModelProvider::LocalFile {
            file_path: "/models/llama2-7b.gguf".into(),
            sha256: None,
        }
    );
    assert_eq!(
        m.capabilities,
        [ModelCapability::TextGeneration, ModelCapability::Reasoning]
    );
    assert_eq!(m.resource_requirements.min_memory_mb, 8192);
    assert_eq!(m.resource_requirements.preferred_cpu_cores, 4.0);
    assert_eq!(m.resource_requirements.gpu_requirements, None);

    // Only the two named fields of `secure` change; the rest stays built-in.
    let secure = &slm.sandbox_profiles["secure"];
    let mut expected = SandboxProfile::secure();
    expected.resources.max_memory_mb = 4096;
    expected.resources.max_cpu_cores = 2.0;
    assert_eq!(secure, &expected);
    assert_eq!(slm.sandbox_profiles["standard"], SandboxProfile::standard());
    assert_eq!(
        slm.model_allow_lists.unmapped_agent_access,
        UnmappedAgentAccess::Deny
    );
}

#[test]
fn new_profile_is_completed_from_secure() {
    let slm = Slm::from_toml_str(
        "[slm]\n[slm.sandbox_profiles.batch.process_limits]\nmax_execution_time_seconds = 30\n",
    )
    .unwrap();
    let mut expected = SandboxProfile::secure();
    expected.process_limits.max_execution_time_seconds = 30;
    assert_eq!(slm.sandbox_profiles["batch"], expected);
    assert!(!slm.enabled, "enabled defaults to false");
}

#[test]
fn whole_runtime_config_with_other_tables_loads() {
    let text = format!(
        "[api]\nport = 8080\n[database]\nurl = \"x\"\n{}",
        reference_with_codellama()
    );
    let slm = Slm::from_toml_str(&text).unwrap();
    assert_eq!(slm.model_allow_lists.global_models.len(), 2);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, reference_with_codellama()).unwrap();
    assert!(Slm::load(&good).is_ok());

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[slm]\nenabeld = true\n").unwrap();
    let msg = Slm::load(&bad).unwrap_err().to_string();
    assert!(msg.contains("bad.toml"), "{msg}");
    assert!(msg.contains("enabeld"), "{msg}");

    let missing = Slm::load(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Io { .. }), "{missing}");
    let dir_err = Slm::load(dir.path()).unwrap_err();
    assert!(matches!(dir_err, ConfigError::NotAFile { .. }), "{dir_err}");
}

/// Asserts a parse error at `key_path` whose message contains `needle`, with
/// a line number.
fn parse_err(text: &str, key_path: &str, needle: &str) {
    match Slm::from_toml_str(text) {
        Err(ConfigError::Parse {
            key_path: k,
            location,
            message,
            ..
        }) => {
            assert_eq!(k, key_path, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert!(location.is_some(), "no location for {message}");
        }
        other => panic!("expected a parse error at {key_path}, got {other:?}"),
    }
}

/// Asserts exactly one validation issue at `key_path` matching `pred`.
fn invalid(text: &str, key_path: &str, pred: impl Fn(&Problem) -> bool) {
    let err = Slm::from_toml_str(text).unwrap_err();
    let issues = err.issues();
    assert_eq!(issues.len(), 1, "expected one issue, got: {err}");
    assert_eq!(issues[0].key_path, key_path, "{err}");
    assert!(pred(&issues[0].problem), "unexpected problem: {err}");
    assert!(issues[0].location.is_some(), "no line for {err}");
}

const MODEL: &str = "[[slm.model_allow_lists.global_models]]\nid = \"m\"\nname = \"M\"\nprovider = { LocalFile = { file_path = \"/m.gguf\" } }\n";

#[test]
fn misspelt_key_is_an_error_naming_its_path() {
    parse_err(
        "[slm.sandbox_profiles.secure.resources]\nmax_memroy_mb = 4096\n",
        "slm.sandbox_profiles.secure.resources.max_memroy_mb",
        "max_memroy_mb",
    );
    parse_err("[slm]\nenabeld = true\n", "slm.enabeld", "enabeld");
    parse_err(
        &format!("[slm]\n{MODEL}capabilites = []\n"),
        "slm.model_allow_lists.global_models[0].capabilites",
        "capabilites",
    );
}

#[test]
fn wrong_types_are_errors_naming_their_path() {
    parse_err(
        "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = \"lots\"\n",
        "slm.sandbox_profiles.secure.resources.max_memory_mb",
        "",
    );
    parse_err("[slm]\nenabled = \"yes\"\n", "slm.enabled", "");
    parse_err(
        &format!("[slm]\n{MODEL}capabilities = [\"Telepathy\"]\n"),
        "slm.model_allow_lists.global_models[0].capabilities[0]",
        "Telepathy",
    );
    parse_err(
        "[slm.sandbox_profiles.secure.network]\naccess_mode = \"Some\"\n",
        "slm.sandbox_profiles.secure.network.access_mode",
        "Some",
    );
}

#[test]
fn negative_and_out_of_range_integers() {
    parse_err(
        "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = -5\n",
        "slm.sandbox_profiles.secure.resources.max_memory_mb",
        "must not be negative, got -5",
    );
    parse_err(
        "[slm.sandbox_profiles.secure.process_limits]\nprocess_priority = 40\n",
        "slm.sandbox_profiles.secure.process_limits.process_priority",
        "-20 to 19",
    );
    invalid(
        "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 0\n",
        "slm.sandbox_profiles.secure.resources.max_memory_mb",
        |p| matches!(p, Problem::NotPositive),
    );
    invalid(
        "[slm.sandbox_profiles.secure.resources]\nmax_disk_mb = 9223372036854775807\n",
        "slm.sandbox_profiles.secure.resources.max_disk_mb",
        |p| matches!(p, Problem::TooLarge { .. }),
    );
    invalid(
        "[slm.sandbox_profiles.secure.resources]\nmax_cpu_cores = -1.5\n",
        "slm.sandbox_profiles.secure.resources.max_cpu_cores",
        |p| matches!(p, Problem::NotPositiveNumber { .. }),
    );
    invalid(
        "[slm.sandbox_profiles.secure.resources]\nmax_cpu_cores = nan\n",
        "slm.sandbox_profiles.secure.resources.max_cpu_cores",
        |p| matches!(p, Problem::NotPositiveNumber { .. }),
    );
    invalid(
        "[slm.sandbox_profiles.secure.process_limits]\nmax_execution_time_seconds = 0\n",
        "slm.sandbox_profiles.secure.process_limits.max_execution_time_seconds",
        |p| matches!(p, Problem::NotPositive),
    );
    parse_err(
        "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 99999999999999999999999\n",
        "slm.sandbox_profiles.secure.resources.max_memory_mb",
        "99999999999999999999999",
    );
}

#[test]
fn dangling_and_duplicate_references() {
    invalid(
        &format!("[slm]\n{MODEL}{}", MODEL),
        "slm.model_allow_lists.global_models[1].id",
        |p| matches!(p, Problem::DuplicateModelId { id, first_index: 0 } if id == "m"),
    );
    invalid(
        "[slm]\ndefault_sandbox_profile = \"paranoid\"\n",
        "slm.default_sandbox_profile",
        |p| matches!(p, Problem::UnknownDefaultProfile { name, .. } if name == "paranoid"),
    );
    invalid(
        &format!(
            "[slm]\n{MODEL}[slm.model_allow_lists.agent_model_maps]\nbot = [\"m\", \"ghost\"]\n"
        ),
        "slm.model_allow_lists.agent_model_maps.bot[1]",
        |p| matches!(p, Problem::UnknownModelInAgentMap { model, .. } if model == "ghost"),
    );
}

#[test]
fn empty_ids_and_relative_paths() {
    invalid(
        &format!("[slm]\n{}", MODEL.replace("id = \"m\"", "id = \"\"")),
        "slm.model_allow_lists.global_models[0].id",
        |p| matches!(p, Problem::Empty),
    );
    invalid(
        &format!("[slm]\n{}", MODEL.replace("name = \"M\"", "name = \"  \"")),
        "slm.model_allow_lists.global_models[0].name",
        |p| matches!(p, Problem::Empty),
    );
    invalid(
        &format!("[slm]\n{}", MODEL.replace("/m.gguf", "models/m.gguf")),
        "slm.model_allow_lists.global_models[0].provider.LocalFile.file_path",
        |p| matches!(p, Problem::RelativePath { .. }),
    );
    invalid(
        "[slm.sandbox_profiles.secure.filesystem]\nread_paths = [\"/data\", \"data/x\"]\n",
        "slm.sandbox_profiles.secure.filesystem.read_paths[1]",
        |p| matches!(p, Problem::RelativePath { .. }),
    );
    invalid(
        "[slm.sandbox_profiles.secure.filesystem]\nwrite_paths = [\"/out/*.txt\"]\n",
        "slm.sandbox_profiles.secure.filesystem.write_paths[0]",
        |p| matches!(p, Problem::UnsupportedGlob { .. }),
    );
    // A trailing /* names the directory and is accepted.
    Slm::from_toml_str("[slm.sandbox_profiles.secure.filesystem]\nread_paths = [\"/data/*\"]\n")
        .unwrap();
}

#[test]
fn values_not_supported_yet_are_rejected_not_ignored() {
    let cases = [
        (
            "[slm.sandbox_profiles.secure.network]\naccess_mode = \"Restricted\"\nallowed_destinations = [{ host = \"10.0.0.1\", protocol = \"UDP\" }]\n",
            "slm.sandbox_profiles.secure.network.allowed_destinations[0].protocol",
        ),
        (
            "[slm.sandbox_profiles.secure.resources]\ngpu_access = \"Exclusive\"\n",
            "slm.sandbox_profiles.secure.resources.gpu_access",
        ),
        (
            "[slm.sandbox_profiles.secure.resources]\nmax_io_bandwidth_mbps = 10\n",
            "slm.sandbox_profiles.secure.resources.max_io_bandwidth_mbps",
        ),
        (
            "[slm.sandbox_profiles.secure.security]\nrequire_encryption = true\n",
            "slm.sandbox_profiles.secure.security.require_encryption",
        ),
        (
            "[slm.model_allow_lists]\nallow_runtime_overrides = true\n",
            "slm.model_allow_lists.allow_runtime_overrides",
        ),
    ];
    // Child processes are for `sandbox exec` (the worker starts none),
    // up to a bound.
    let c = Slm::from_toml_str(
        "[slm]\n[slm.sandbox_profiles.secure.process_limits]\nmax_child_processes = 2\n",
    )
    .unwrap();
    assert_eq!(
        c.sandbox_profiles["secure"]
            .process_limits
            .max_child_processes,
        2
    );
    invalid(
        "[slm]\n[slm.sandbox_profiles.secure.process_limits]\nmax_child_processes = 5000\n",
        "slm.sandbox_profiles.secure.process_limits.max_child_processes",
        |p| matches!(p, Problem::TooLarge { .. }),
    );
    for (text, key) in cases {
        invalid(text, key, |p| matches!(p, Problem::NotSupportedYet { .. }));
        let msg = Slm::from_toml_str(text).unwrap_err().to_string();
        assert!(msg.contains("not supported yet"), "{msg}");
    }
    // Shared GPU access parses (externally tagged) and is refused the same way.
    invalid(
        "[slm.sandbox_profiles.secure.resources]\ngpu_access = { Shared = { max_memory_mb = 100 } }\n",
        "slm.sandbox_profiles.secure.resources.gpu_access",
        |p| matches!(p, Problem::NotSupportedYet { .. }),
    );
    let slm = Slm::from_toml_str("[slm.sandbox_profiles.open.network]\naccess_mode = \"Full\"\n")
        .unwrap();
    assert_eq!(
        slm.sandbox_profiles["open"].network.access_mode,
        NetworkAccessMode::Full
    );
    assert_eq!(
        slm.sandbox_profiles["open"].resources.gpu_access,
        GpuAccess::None
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let text = "[slm]\ndefault_sandbox_profile = \"x\"\n[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 0\nmax_disk_mb = 0\n";
    let err = Slm::from_toml_str(text).unwrap_err();
    assert_eq!(err.issues().len(), 3, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("3 problem(s)"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
}

#[test]
fn hostile_documents_give_specific_errors() {
    // Syntax error: line and column.
    match Slm::from_toml_str("[slm\nenabled = true\n") {
        Err(ConfigError::Parse {
            location: Some(l), ..
        }) => assert_eq!(l.line, 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Slm::from_toml_str("[other]\nx = 1\n"),
        Err(ConfigError::MissingSlmTable)
    ));
    assert!(matches!(
        Slm::from_toml_str(""),
        Err(ConfigError::MissingSlmTable)
    ));
    // `slm` must be a table.
    parse_err("slm = 3\n", "slm", "");
    // 10 MB document: refused by size before parsing.
    let huge = format!("[slm]\n#{}\n", "x".repeat(10 * 1024 * 1024));
    assert!(matches!(
        Slm::from_toml_str(&huge),
        Err(ConfigError::TooLarge { .. })
    ));
    // Deep nesting does not overflow the stack.
    let deep = format!(
        "[slm]\nenabled = {}1{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(Slm::from_toml_str(&deep).is_err());
    // Duplicate keys are a TOML error.
    assert!(matches!(
        Slm::from_toml_str("[slm]\nenabled = true\nenabled = false\n"),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn non_utf8_file_names_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[slm]\n# caf\xe9\nenabled = true\n").unwrap();
    match Slm::load(&path) {
        Err(ConfigError::NotUtf8 {
            byte_offset, line, ..
        }) => {
            assert_eq!(byte_offset, 11);
            assert_eq!(line, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_file_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(&path, vec![b'#'; 10 * 1024 * 1024]).unwrap();
    assert!(matches!(
        Slm::load(&path),
        Err(ConfigError::TooLarge { .. })
    ));
}

#[test]
fn programmatic_config_is_validated_too() {
    let mut slm = Slm::default();
    slm.sandbox_profiles
        .get_mut("secure")
        .unwrap()
        .resources
        .max_memory_mb = 0;
    let err = slm.validate().unwrap_err();
    assert_eq!(
        err.issues()[0].key_path,
        "slm.sandbox_profiles.secure.resources.max_memory_mb"
    );
    assert!(err.issues()[0].location.is_none());
}

#[test]
fn allowed_syscalls_must_be_real_system_calls() {
    invalid(
        "[slm.sandbox_profiles.secure.process_limits]\nallowed_syscalls = [\"getpid\", \"frobnicate\"]\n",
        "slm.sandbox_profiles.secure.process_limits.allowed_syscalls[1]",
        |p| matches!(p, Problem::InvalidName { value, .. } if value == "frobnicate"),
    );
    let slm = Slm::from_toml_str(
        "[slm.sandbox_profiles.secure.process_limits]\nallowed_syscalls = [\"uname\"]\n",
    )
    .unwrap();
    assert_eq!(
        slm.sandbox_profiles["secure"]
            .process_limits
            .allowed_syscalls,
        ["uname"]
    );
}

#[test]
fn the_pool_table_is_checked() {
    let ok = Slm::from_toml_str(&format!(
        "[slm]\n{MODEL}[slm.pool]\nmemory_budget_mb = 2048\ncores = 1\nmax_loaded_workers = 3\nkeep_alive_seconds = 0\npinned_models = [\"m\"]\n[slm.pool.keep_alive_by_model]\nm = 60\n"
    ))
    .unwrap();
    assert_eq!(ok.pool.memory_budget_mb, Some(2048));
    assert_eq!(ok.pool.cores, Some(1));
    assert_eq!(ok.pool.max_loaded_workers, Some(3));
    assert_eq!(ok.pool.keep_alive_seconds, 0);
    assert_eq!(ok.pool.pinned_models, ["m"]);
    assert_eq!(ok.pool.keep_alive_by_model.get("m"), Some(&60));
    // Defaults: the host's, five minutes.
    let d = Slm::from_toml_str("[slm]\n").unwrap();
    assert_eq!(d.pool.memory_budget_mb, None);
    assert_eq!(d.pool.keep_alive_seconds, 300);
    invalid(
        &format!("[slm]\n{MODEL}[slm.pool]\npinned_models = [\"m\", \"ghost\"]\n"),
        "slm.pool.pinned_models[1]",
        |p| matches!(p, Problem::UnknownModel { model } if model == "ghost"),
    );
    invalid(
        "[slm]\n[slm.pool]\nmax_loaded_workers = 0\n",
        "slm.pool.max_loaded_workers",
        |p| matches!(p, Problem::NotPositive),
    );
    invalid(
        "[slm]\n[slm.pool]\ncores = 100000\n",
        "slm.pool.cores",
        |p| matches!(p, Problem::TooLarge { value: 100000, .. }),
    );
    parse_err(
        "[slm]\n[slm.pool]\nmemory_budget = 1\n",
        "slm.pool.memory_budget",
        "unknown field",
    );
}

#[test]
fn the_service_table_is_checked_and_never_echoes_a_token() {
    let hash = format!("sha256:{}", "ab".repeat(32));
    let ok = Slm::from_toml_str(&format!(
        "[slm]\n[slm.service]\nlisten = \"0.0.0.0:9000\"\nmax_concurrent_per_agent = 2\nshutdown_grace_seconds = 0\n[slm.service.agent_tokens]\nscanner = \"{hash}\"\n"
    ))
    .unwrap();
    assert_eq!(ok.service.listen, "0.0.0.0:9000");
    assert_eq!(ok.service.agent_tokens.get("scanner"), Some(&hash));
    assert_eq!(ok.service.max_concurrent_per_agent, 2);
    assert_eq!(ok.service.shutdown_grace_seconds, 0);
    let d = Slm::from_toml_str("[slm]\n").unwrap();
    assert_eq!(d.service.listen, "127.0.0.1:8080");
    assert_eq!(d.service.anonymous_agent, None);
    // A raw token pasted where its hash belongs: refused, and not repeated.
    let text = "[slm]\n[slm.service.agent_tokens]\nscanner = \"symbi_0123456789secret\"\n";
    let err = Slm::from_toml_str(text).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    invalid(text, "slm.service.agent_tokens.scanner", |p| {
        matches!(p, Problem::BadTokenHash)
    });
    invalid(
        &format!(
            "[slm]\n[slm.service.agent_tokens]\nscanner = \"{}\"\n",
            hash.to_uppercase().replace("SHA256", "sha256")
        ),
        "slm.service.agent_tokens.scanner",
        |p| matches!(p, Problem::BadTokenHash),
    );
    invalid(
        &format!("[slm]\n[slm.service.agent_tokens]\na1 = \"{hash}\"\na2 = \"{hash}\"\n"),
        "slm.service.agent_tokens.a2",
        |p| matches!(p, Problem::DuplicateTokenHash { first } if first == "a1"),
    );
    // The scraper's token: a hash, and not an agent's.
    let m = Slm::from_toml_str(&format!(
        "[slm]\n[slm.service]\nmetrics_token = \"{hash}\"\n"
    ))
    .unwrap();
    assert_eq!(m.service.metrics_token.as_deref(), Some(hash.as_str()));
    assert_eq!(d.service.metrics_token, None);
    assert_eq!(d.service.send_timeout_seconds, 30);
    let text = "[slm]\n[slm.service]\nmetrics_token = \"symbi_0123456789secret\"\n";
    assert!(!Slm::from_toml_str(text)
        .unwrap_err()
        .to_string()
        .contains("secret"));
    invalid(text, "slm.service.metrics_token", |p| {
        matches!(p, Problem::BadTokenHash)
    });
    invalid(
        &format!("[slm]\n[slm.service]\nmetrics_token = \"{hash}\"\n[slm.service.agent_tokens]\na1 = \"{hash}\"\n"),
        "slm.service.metrics_token",
        |p| matches!(p, Problem::MetricsTokenIsAgents { agent } if agent == "a1"),
    );
    // The operator's token (`symbi-slm ps`): the same rules.
    let o = Slm::from_toml_str(&format!(
        "[slm]\n[slm.service]\noperator_token = \"{hash}\"\n"
    ))
    .unwrap();
    assert_eq!(o.service.operator_token.as_deref(), Some(hash.as_str()));
    invalid(
        "[slm]\n[slm.service]\noperator_token = \"symbi_0123456789secret\"\n",
        "slm.service.operator_token",
        |p| matches!(p, Problem::BadTokenHash),
    );
    invalid(
        &format!("[slm]\n[slm.service]\noperator_token = \"{hash}\"\n[slm.service.agent_tokens]\na1 = \"{hash}\"\n"),
        "slm.service.operator_token",
        |p| matches!(p, Problem::OperatorTokenIsAgents { agent } if agent == "a1"),
    );
    invalid(
        "[slm]\n[slm.service]\nsend_timeout_seconds = 0\n",
        "slm.service.send_timeout_seconds",
        |p| matches!(p, Problem::NotPositive),
    );
    invalid(
        "[slm]\n[slm.service]\nlisten = \"localhost\"\n",
        "slm.service.listen",
        |p| matches!(p, Problem::InvalidName { .. }),
    );
    invalid(
        "[slm]\n[slm.service]\nsandbox_profile = \"ghost\"\n",
        "slm.service.sandbox_profile",
        |p| matches!(p, Problem::UnknownDefaultProfile { .. }),
    );
    invalid(
        "[slm]\n[slm.service]\nmax_concurrent_requests = 0\n",
        "slm.service.max_concurrent_requests",
        |p| matches!(p, Problem::NotPositive),
    );
    parse_err(
        "[slm]\n[slm.service]\ntokens = 1\n",
        "slm.service.tokens",
        "unknown field",
    );
}

#[test]
fn restricted_network_rules_are_checked() {
    let ok = Slm::from_toml_str(
        "[slm.sandbox_profiles.tools.network]\naccess_mode = \"Restricted\"\nallowed_destinations = [{ host = \"api.example.com\", port = 443, protocol = \"HTTPS\" }, { host = \"127.0.0.1\", port = 9000 }, { host = \"[::1]\" }]\nmax_bandwidth_mbps = 8\n",
    )
    .unwrap();
    assert_eq!(
        ok.sandbox_profiles["tools"].network.max_bandwidth_mbps,
        Some(8)
    );
    for (toml, key) in [
        (
            "access_mode = \"Restricted\"\n",
            "slm.sandbox_profiles.tools.network.allowed_destinations",
        ),
        (
            "access_mode = \"Restricted\"\nallowed_destinations = [{ host = \"not a host\" }]\n",
            "slm.sandbox_profiles.tools.network.allowed_destinations[0].host",
        ),
        (
            "access_mode = \"Restricted\"\nallowed_destinations = [{ host = \"a.example\", port = 0 }]\n",
            "slm.sandbox_profiles.tools.network.allowed_destinations[0].port",
        ),
        (
            "access_mode = \"Restricted\"\nallowed_destinations = [{ host = \"a.example\" }]\nmax_bandwidth_mbps = 0\n",
            "slm.sandbox_profiles.tools.network.max_bandwidth_mbps",
        ),
        (
            "access_mode = \"Full\"\nmax_bandwidth_mbps = 8\n",
            "slm.sandbox_profiles.tools.network.max_bandwidth_mbps",
        ),
        (
            "access_mode = \"None\"\nallowed_destinations = [{ host = \"a.example\" }]\n",
            "slm.sandbox_profiles.tools.network.allowed_destinations",
        ),
    ] {
        let err = Slm::from_toml_str(&format!("[slm.sandbox_profiles.tools.network]\n{toml}"))
            .unwrap_err();
        assert!(
            err.issues().iter().any(|i| i.key_path == key),
            "{key}: {err}"
        );
    }
}

/// A model's `settings`: the keys a user of llama-server (`-c -t -np -b`)
/// or Ollama (`num_ctx`, `keep_alive`, `PARAMETER`) looks for, read into
/// `ModelSettings`; each out of range, misspelt, contradicted or
/// meaningless for the provider is an error at its own key and line.
#[test]
fn model_settings_are_read_and_checked_key_by_key() {
    let settings = "[slm.model_allow_lists.global_models.settings]\ncontext_size = 4096\nthreads = 2\nslots = 3\nbatch_size = 256\nkeep_alive_seconds = 60\n[slm.model_allow_lists.global_models.settings.sampling]\ntemperature = 0\ntop_p = 0.9\ntop_k = 40\nmin_p = 0.05\nrepeat_penalty = 1.1\nmax_tokens = 128\n";
    let slm = Slm::from_toml_str(&format!("[slm]\n{MODEL}{settings}")).unwrap();
    let s = &slm.model_allow_lists.global_models[0].settings;
    assert_eq!(
        (s.context_size, s.threads, s.slots, s.batch_size),
        (Some(4096), Some(2), Some(3), Some(256))
    );
    assert_eq!(s.keep_alive_seconds, Some(60));
    assert_eq!(s.sampling.temperature, Some(0.0));
    assert_eq!(s.sampling.top_k, Some(40));
    assert_eq!(s.sampling.max_tokens, Some(128));
    // Without the table, nothing is set and nothing is shown.
    let plain = Slm::from_toml_str(&format!("[slm]\n{MODEL}")).unwrap();
    assert_eq!(
        plain.model_allow_lists.global_models[0].settings,
        Default::default()
    );
    let json = serde_json::to_value(&plain.model_allow_lists.global_models[0]).unwrap();
    assert!(json.get("settings").is_none(), "{json}");

    let table = "[slm.model_allow_lists.global_models.settings]\n";
    let base = "slm.model_allow_lists.global_models[0].settings";
    parse_err(
        &format!("[slm]\n{MODEL}{table}num_ctx = 4096\n"),
        &format!("{base}.num_ctx"),
        "num_ctx",
    );
    parse_err(
        &format!("[slm]\n{MODEL}{table}threads = -1\n"),
        &format!("{base}.threads"),
        "must not be negative",
    );
    for (line, key) in [
        ("context_size = 8", "context_size"),
        ("context_size = 2000000", "context_size"),
        ("threads = 0", "threads"),
        ("slots = 0", "slots"),
        ("slots = 257", "slots"),
        ("batch_size = 0", "batch_size"),
        ("slots = 8\nbatch_size = 4", "slots"),
        ("cache_tokens = 8", "cache_tokens"),
        ("context_size = 4096\ncache_tokens = 2048", "cache_tokens"),
    ] {
        invalid(
            &format!("[slm]\n{MODEL}{table}{line}\n"),
            &format!("{base}.{key}"),
            |p| matches!(p, Problem::OutOfRange { .. }),
        );
    }
    invalid(
        &format!("[slm]\n{MODEL}{table}[slm.model_allow_lists.global_models.settings.sampling]\ntop_p = 0\n"),
        &format!("{base}.sampling.top_p"),
        |p| matches!(p, Problem::OutOfRange { .. }),
    );
    // One keep-alive per model.
    invalid(
        &format!("[slm]\n{MODEL}{table}keep_alive_seconds = 5\n[slm.pool]\nkeep_alive_by_model = {{ m = 9 }}\n"),
        &format!("{base}.keep_alive_seconds"),
        |p| matches!(p, Problem::Conflict(_)),
    );
    // A remote model has no worker to size; its sampling defaults apply.
    let remote = "[[slm.model_allow_lists.global_models]]\nid = \"r\"\nname = \"R\"\nprovider = { Custom = { endpoint_url = \"http://10.0.0.5:8000/v1\" } }\n";
    invalid(
        &format!("[slm]\n{remote}{table}context_size = 4096\n"),
        &format!("{base}.context_size"),
        |p| {
            matches!(
                p,
                Problem::NotForProvider {
                    key: "context_size",
                    provider: "Custom"
                }
            )
        },
    );
    Slm::from_toml_str(&format!(
        "[slm]\n{remote}[slm.model_allow_lists.global_models.settings.sampling]\ntemperature = 0.3\n"
    ))
    .unwrap();
    // Every problem at once, each at its line.
    let err = Slm::from_toml_str(&format!(
        "[slm]\n{MODEL}{table}context_size = 1\nthreads = 0\nslots = 999\n"
    ))
    .unwrap_err();
    assert_eq!(err.issues().len(), 3, "{err}");
}

/// `diagnose_toml_str` reads on past each parse error (unknown key, wrong
/// type, bad enum value), then applies the rules to what it read: every
/// problem at once, each at its line; a syntax error ends the reading.
#[test]
fn diagnose_lists_every_problem_and_stops_only_at_syntax() {
    let text = format!(
        "[slm]\nenabeld = true\n{MODEL}capabilities = [\"Telepathy\"]\n[slm.pool]\nkeep_alive_seconds = \"long\"\nmax_loaded_workers = 0\n"
    );
    let (slm, issues) = Slm::diagnose_toml_str(&text);
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "slm.enabeld",
            "slm.model_allow_lists.global_models[0].capabilities[0]",
            "slm.pool.keep_alive_seconds",
            "slm.pool.max_loaded_workers",
        ],
        "{issues:?}"
    );
    assert!(issues.iter().all(|i| i.location.is_some()), "{issues:?}");
    // What could be read is there; the bad values are not.
    let slm = slm.unwrap();
    assert_eq!(slm.model_allow_lists.global_models[0].id, "m");
    assert_eq!(slm.pool.keep_alive_seconds, 300);
    // The first is what from_toml_str says.
    let first = Slm::from_toml_str(&text).unwrap_err().to_string();
    assert!(first.contains("enabeld"), "{first}");
    // A clean document: no issue.
    let (ok, none) = Slm::diagnose_toml_str(&format!("[slm]\n{MODEL}"));
    assert!(ok.is_some() && none.is_empty(), "{none:?}");
    // A syntax error: one issue, nothing read.
    let (none, issues) = Slm::diagnose_toml_str("[slm\nenabled = true\n");
    assert!(none.is_none());
    assert_eq!(issues.len(), 1, "{issues:?}");
    // A key with dots in it is one key: reading goes on past it.
    let dotted = format!(
        "[slm]\n{MODEL}[slm.pool]\nkeep_alive_by_model = {{ \"qwen2.5-1.5b\" = \"long\" }}\nmax_loaded_workers = \"two\"\n"
    );
    let (_, issues) = Slm::diagnose_toml_str(&dotted);
    let keys: Vec<&str> = issues.iter().map(|i| i.key_path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "slm.pool.keep_alive_by_model.qwen2.5-1.5b",
            "slm.pool.max_loaded_workers"
        ],
        "{issues:?}"
    );
    // A required field gone (a misspelt provider): said, and reading
    // stops there rather than guess (no index shifted, no model missing
    // from an agent map reported).
    let text = "[slm]\n[[slm.model_allow_lists.global_models]]\nid = \"a\"\nname = \"A\"\nprovider = { LocalFlie = { file_path = \"/a.gguf\" } }\n[[slm.model_allow_lists.global_models]]\nid = \"b\"\nname = \"B\"\nprovider = { LocalFile = { file_path = \"/b.gguf\" } }\n[slm.model_allow_lists.agent_model_maps]\nx = [\"a\"]\n";
    let (slm, issues) = Slm::diagnose_toml_str(text);
    assert!(slm.is_none());
    assert!(
        issues.iter().all(|i| i
            .key_path
            .starts_with("slm.model_allow_lists.global_models[0]")),
        "{issues:?}"
    );
    assert!(issues[0].to_string().contains("LocalFlie"), "{issues:?}");
}
