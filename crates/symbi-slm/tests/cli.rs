//! The `symbi-slm` binary: exit codes, config discovery and output.

use std::process::{Command, Output};

fn symbi(args: &[&str], env_config: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_symbi-slm"));
    cmd.args(args).env_remove("SYMBI_SLM_CONFIG");
    if let Some(p) = env_config {
        cmd.env("SYMBI_SLM_CONFIG", p);
    }
    cmd.output().expect("spawn symbi-slm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = r#"
[slm]
enabled = true
[[slm.model_allow_lists.global_models]]
id = "coder"
name = "Coder"
provider = { LocalFile = { file_path = "/models/coder.gguf" } }
capabilities = ["CodeGeneration", "TextGeneration"]
[slm.model_allow_lists.global_models.resource_requirements]
min_memory_mb = 2048
[[slm.model_allow_lists.global_models]]
id = "tiny"
name = "Tiny"
provider = { LocalFile = { file_path = "/models/tiny.gguf" } }
capabilities = ["TextGeneration"]
[slm.model_allow_lists.agent_model_maps]
writer = ["tiny"]
"#;

#[test]
fn builtin_config_has_the_default_model() {
    let out = symbi(&["models", "list", "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], "smollm2-135m-instruct");
    let path = v[0]["provider"]["LocalFile"]["file_path"].as_str().unwrap();
    assert!(
        path.ends_with("symbiont/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{path}"
    );
}

#[test]
fn config_check_reports_ok_and_errors_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let out = symbi(&["config", "check", good.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("models: 2"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[slm]\ndefault_sandbox_profile = \"x\"\n[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 0\n",
    )
    .unwrap();
    let out = symbi(&["config", "check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("slm.default_sandbox_profile` (line 2"),
        "{err}"
    );
    assert!(
        err.contains("slm.sandbox_profiles.secure.resources.max_memory_mb` (line 4"),
        "{err}"
    );
}

#[test]
fn env_var_then_flag_select_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let out = symbi(&["models", "list"], Some(&good));
    assert!(text(&out.stdout).contains("coder"));
    // --config wins over the variable.
    let missing = dir.path().join("missing.toml");
    let out = symbi(
        &["--config", missing.to_str().unwrap(), "models", "list"],
        Some(&good),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml"));
}

#[test]
fn models_filters_select_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let g = Some(good.as_path());
    let out = symbi(&["models", "list", "--agent", "writer"], g);
    let s = text(&out.stdout);
    assert!(s.contains("tiny") && !s.contains("coder"), "{s}");
    let out = symbi(&["models", "list", "--capability", "CodeGeneration"], g);
    let s = text(&out.stdout);
    assert!(s.contains("coder") && !s.contains("tiny"), "{s}");
    let out = symbi(&["models", "select", "--capability", "TextGeneration"], g);
    assert_eq!(text(&out.stdout).trim(), "tiny");
    let out = symbi(
        &[
            "models",
            "select",
            "--capability",
            "CodeGeneration",
            "--max-memory",
            "1024",
        ],
        g,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = symbi(&["models", "show", "coder"], g);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["resource_requirements"]["min_memory_mb"], 2048);
    let out = symbi(&["models", "show", "ghost"], g);
    assert_eq!(out.status.code(), Some(2));
    let out = symbi(&["models", "select", "--capability", "Telepathy"], g);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn profiles_show_prints_the_merged_profile() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 4096\n",
    )
    .unwrap();
    let out = symbi(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "profiles",
            "show",
            "secure",
        ],
        None,
    );
    let s = text(&out.stdout);
    assert!(s.contains("max_memory_mb = 4096"), "{s}");
    assert!(s.contains("max_execution_time_seconds = 300"), "{s}");
    let out = symbi(&["profiles", "show", "nope"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// The worker beside the CLI binary (built by `cargo test --workspace`).
fn worker_beside_cli() -> std::path::PathBuf {
    let w =
        std::path::Path::new(env!("CARGO_BIN_EXE_symbi-slm")).with_file_name("symbi-slm-worker");
    assert!(
        w.is_file(),
        "{} is missing: run the workspace's tests (scripts/test) so that it is built",
        w.display()
    );
    w
}

#[test]
fn run_checks_the_agent_before_loading_anything() {
    let out = symbi(
        &[
            "run",
            "--agent",
            "stranger",
            "--worker",
            "/nonexistent",
            "hello",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("slm.model_allow_lists.unmapped_agent_access"),
        "{err}"
    );
}

#[test]
fn run_streams_text_and_prints_json() {
    let worker = worker_beside_cli();
    let out = symbi(
        &[
            "run",
            "--json",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--profile",
            "standard",
            "--worker",
            worker.to_str().unwrap(),
            "Say hello.",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["response"].as_str().unwrap().is_empty());
    let m = &v["metadata"];
    assert!(m["input_tokens"].as_u64().unwrap() > 10);
    assert!(m["output_tokens"].as_u64().unwrap() <= 8);
    assert!(m["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
    assert!(m["peak_memory_mb"].as_f64().unwrap() > 10.0);
    assert!(["length", "stop"].contains(&m["finish_reason"].as_str().unwrap()));

    // Prompt on stdin, text streamed to stdout, summary on stderr.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_symbi-slm"))
        .args(["run", "--max-tokens", "6", "--temperature", "0", "--worker"])
        .arg(&worker)
        .env_remove("SYMBI_SLM_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Name a fruit.")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).trim().is_empty());
    assert!(
        text(&out.stderr).contains("generated tokens"),
        "{}",
        text(&out.stderr)
    );
}
