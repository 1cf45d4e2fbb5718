//! The `symbi-slm` binary: exit codes, config discovery and output.

use std::process::{Command, Output};

fn symbi(args: &[&str], env_config: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_symbi-slm"));
    // The built-in config's audit log goes below $XDG_STATE_HOME: keep the
    // tests' events out of the user's own log.
    cmd.args(args).env_remove("SYMBI_SLM_CONFIG").env(
        "XDG_STATE_HOME",
        std::env::temp_dir().join("symbi-slm-cli-tests"),
    );
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
    // Its model files are not on this machine: only the schema is checked.
    let out = symbi(
        &["config", "check", "--schema-only", good.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("models: 2"));
    assert!(text(&out.stdout).contains("schema only"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[slm]\ndefault_sandbox_profile = \"x\"\n[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 0\n",
    )
    .unwrap();
    let out = symbi(&["config", "check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stdout);
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
    // An agent the allow-lists do not know (a typo, most likely) is an
    // error that names the known ones, not an empty list.
    let out = symbi(&["models", "list", "--agent", "wirter"], g);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("`wirter`") && err.contains("writer"), "{err}");
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
    // The file, read from its header without loading it: here missing,
    // in the list too.
    assert_eq!(v["file"]["present"], false, "{v}");
    let out = symbi(&["models", "list"], g);
    assert!(
        text(&out.stdout).contains("missing"),
        "{}",
        text(&out.stdout)
    );
    // The default model's file is there: its size and header facts.
    let out = symbi(&["models", "show", "smollm2-135m-instruct"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["file"];
    assert_eq!(f["present"], true, "{v}");
    assert_eq!(f["architecture"], "llama", "{v}");
    assert!(f["trained_context"].as_u64().unwrap() >= 2048, "{v}");
    assert!(f["size_bytes"].as_u64().unwrap() > 90 << 20, "{v}");
    assert_eq!(f["chat_template"], true, "{v}");
    assert_eq!(f["quantization"], "Q4_1", "{v}");
    // SmolLM2-135M: 134.5 million parameters, counted from the tensors.
    assert_eq!(f["parameters"], 134_515_008, "{v}");
    assert_eq!(f["template_uses_tools"], false, "{v}");
    let out = symbi(&["models", "list"], None);
    assert!(text(&out.stdout).contains(" MB "), "{}", text(&out.stdout));
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
    assert!(m["worker_peak_memory_mb"].as_f64().unwrap() > 10.0);
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

#[test]
fn access_refusal_is_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        GOOD.replacen(
            "enabled = true\n",
            &format!("enabled = true\naudit_log_path = \"{}\"\n", log.display()),
            1,
        ),
    )
    .unwrap();
    // Allowed agent, denied model: refused before anything loads, and
    // recorded with who, what and which rule.
    let refused = || {
        symbi(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "run",
                "--agent",
                "writer",
                "--model",
                "coder",
                "--worker",
                "/nonexistent",
                "hi",
            ],
            None,
        )
    };
    let out = refused();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["kind"], "access_refused");
    assert_eq!(lines[0]["agent"], "writer");
    assert_eq!(lines[0]["model"], "coder");
    assert_eq!(lines[0]["profile"], "secure");
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));

    // With audit logging off in the profile, the same refusal is the same
    // error, and nothing is written.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap()
            + "[slm.sandbox_profiles.secure.security]\nenable_audit_logging = false\n",
    )
    .unwrap();
    let again = refused();
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(text(&again.stderr), text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

#[test]
fn sandbox_report_has_a_row_per_control() {
    let out = symbi(
        &["sandbox", "report", "--profile", "secure", "--json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["controls"].as_array().unwrap();
    let controls: Vec<&str> = rows
        .iter()
        .map(|r| r["control"].as_str().unwrap())
        .collect();
    for want in [
        "resources.max_memory_mb",
        "resources.max_cpu_cores",
        "resources.max_disk_mb",
        "resources.gpu_access",
        "filesystem.read_paths",
        "filesystem.write_paths",
        "filesystem.denied_paths",
        "filesystem.allow_temp_files",
        "filesystem.max_file_size_mb",
        "process_limits.max_execution_time_seconds",
        "process_limits.max_child_processes",
        "process_limits.allowed_syscalls",
        "process_limits.process_priority",
        "network.access_mode",
        "security.strict_syscall_filtering",
        "security.disable_debugging",
        "security.enable_audit_logging",
        "(always) other processes",
        "(always) syscall hardening",
        "(always) sockets",
        "(always) identity",
        "(always) identity of sandbox exec",
        "(always) System V IPC",
        "(always) file metadata",
    ] {
        assert!(controls.contains(&want), "{want} missing from {controls:?}");
    }
    // This host (see the brief) has Landlock and seccomp: the exit code
    // says whether every row is enforced, and agrees with the rows.
    assert!(v["host"]["landlock_abi"].as_i64().unwrap() >= 6, "{v}");
    let all_yes = rows.iter().all(|r| r["enforced"] == "yes");
    assert_eq!(out.status.success(), all_yes, "{}", text(&out.stderr));
    assert!(all_yes, "{v:#}");
    // A fractional core budget is reported as partial, not as enforced.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[slm.sandbox_profiles.half.resources]\nmax_cpu_cores = 1.5\n",
    )
    .unwrap();
    let out = symbi(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "sandbox",
            "report",
            "--profile",
            "half",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("resources.max_cpu_cores"))
        .unwrap();
    assert!(row.contains("PARTIAL") && row.contains("cpu.max"), "{row}");
}

/// `sandbox exec` runs a program through the worker's own confinement
/// code. Each denial is paired with the allowed case.
#[test]
fn sandbox_exec_confines_any_program() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let s = secret.to_str().unwrap();
    let exec = |extra: &[&str], cmd: &[&str]| {
        let mut a = vec!["sandbox", "exec", "--profile", "secure"];
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(cmd);
        symbi(&a, None)
    };
    // Reading: only what --read names.
    let denied = exec(&[], &["/bin/cat", s]);
    assert_ne!(denied.status.code(), Some(0));
    assert!(
        text(&denied.stderr).contains("Permission denied"),
        "{}",
        text(&denied.stderr)
    );
    let allowed = exec(&["--read", s], &["/bin/cat", s]);
    assert_eq!(text(&allowed.stdout), "s3cret", "{}", text(&allowed.stderr));
    // Writing: the scratch dir ($TMPDIR) yes, the test's dir no.
    let w = exec(
        &[],
        &[
            "/bin/sh",
            "-c",
            &format!(
                "echo x > \"$TMPDIR/f\" && echo scratch-ok; echo y > {s}.new && echo outside-ok"
            ),
        ],
    );
    let out = text(&w.stdout);
    assert!(
        out.contains("scratch-ok") && !out.contains("outside-ok"),
        "{out} {}",
        text(&w.stderr)
    );
    assert!(!dir.path().join("secret.txt.new").exists());
    // Processes: a shell builtin runs, a command needs fork and is refused.
    let f = exec(
        &[],
        &[
            "/bin/sh",
            "-c",
            "echo builtin-ok; /bin/true && echo fork-ok",
        ],
    );
    let out = text(&f.stdout);
    assert!(
        out.contains("builtin-ok") && !out.contains("fork-ok"),
        "{out}"
    );
    assert!(text(&f.stderr).contains("fork"), "{}", text(&f.stderr));
    // Exit status passes through.
    assert_eq!(
        exec(&[], &["/bin/sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    // A program that does not exist: bad input (2), found before forking.
    assert_eq!(exec(&[], &["/nonexistent-program"]).status.code(), Some(2));
    // One that exists but whose execve fails (its `#!` interpreter is
    // missing): 127, from the confined child. Run directly, the same
    // script fails to start too (the allowed twin of "the probe works").
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let failed = exec(&[], &[script.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(127), "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("execve"),
        "{}",
        text(&failed.stderr)
    );
    assert!(std::process::Command::new(&script).status().is_err());
    // The program leads a session of its own (no controlling terminal of
    // the caller's to push keystrokes into, no signal to the caller's
    // process group). Unconfined, the same program stays in this test's
    // session. (Under `standard`: Python's start-up needs more than the
    // allow-list of `secure` grants.)
    let own_session = [
        "-I",
        "-S",
        "-c",
        "import os; print(os.getsid(0) == os.getpid())",
    ];
    let mut cmd = vec![
        "sandbox",
        "exec",
        "--profile",
        "standard",
        "--",
        "/usr/bin/python3",
    ];
    cmd.extend(own_session);
    let confined = symbi(&cmd, None);
    assert_eq!(
        text(&confined.stdout).trim(),
        "True",
        "{}",
        text(&confined.stderr)
    );
    let plain = std::process::Command::new("/usr/bin/python3")
        .args(own_session)
        .output()
        .unwrap();
    assert_eq!(text(&plain.stdout).trim(), "False");
}

/// `symbi-slm chat` (greedy, `max_tokens` per answer) on the built-in
/// config with `input` on its stdin, to its end.
fn chat_stdin(max_tokens: u32, input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_symbi-slm"))
        .args(["chat", "--temperature", "0", "--max-tokens"])
        .arg(max_tokens.to_string())
        .arg("--worker")
        .arg(worker_beside_cli())
        .env_remove("SYMBI_SLM_CONFIG")
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("symbi-slm-cli-tests"),
        )
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
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `chat`: one answer line per user line, the conversation kept between
/// turns (the second turn's answer depends on the first), `/reset` and
/// `/exit` understood.
#[test]
fn chat_answers_each_line_and_keeps_the_conversation() {
    let chat = |input: &str| {
        let out = chat_stdin(12, input);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let both = chat("My name is Zed.\nWhat is my name?\n/exit\nnever read\n");
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.iter().all(|l| !l.trim().is_empty()), "{both:?}");
    // The same question alone (after a reset) gets a different answer:
    // the first turn was part of the prompt.
    let alone = chat("My name is Zed.\n/reset\nWhat is my name?\n");
    assert_eq!(alone.len(), 2, "{alone:?}");
    assert_eq!(alone[0], both[0], "greedy: same first answer");
    assert_ne!(alone[1], both[1], "the history changed nothing");
}

/// A prompt longer than the context, counted by the tokenizer: `run`
/// exits 2 (the caller's to fix) naming both counts; in `chat` the turn is
/// refused and the conversation goes on (the next line is answered).
#[test]
fn a_prompt_longer_than_the_context_is_the_caller_s_to_fix() {
    let worker = worker_beside_cli();
    let long = "word ".repeat(5000);
    let out = symbi(
        &[
            "run",
            "--max-tokens",
            "4",
            "--worker",
            worker.to_str().unwrap(),
            &long,
        ],
        None,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("longer than the context of 2048 tokens"),
        "{err}"
    );
    let out = chat_stdin(4, &format!("{long}\nSay yes.\n"));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("/reset starts a new conversation"), "{err}");
    let answers: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), 1, "the turn after the refusal: {answers:?}");
}

/// `sandbox exec` kills the program's process group at the profile's
/// `max_execution_time_seconds`, whether it spins or sleeps, exits 124 and
/// records the kill in the audit log, which every config has by default
/// (here a config that names no `audit_log_path`). A program that ends in
/// time keeps its own status and leaves no event.
#[test]
fn sandbox_exec_kills_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[slm.sandbox_profiles.quick.process_limits]\nmax_execution_time_seconds = 2\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let log = state.join("symbiont").join("slm-audit.jsonl");
    let exec = |cmd: &[&str]| {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_symbi-slm"))
            .args(["--config", cfg.to_str().unwrap()])
            .args(["sandbox", "exec", "--profile", "quick", "--"])
            .args(cmd)
            .env_remove("SYMBI_SLM_CONFIG")
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (out, _) = exec(&["/bin/sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(events().is_empty(), "{:?}", events());
    let limit = std::time::Duration::from_secs(2);
    for (what, cmd) in [
        ("spinning", &["/bin/sh", "-c", "while :; do :; done"][..]),
        ("sleeping", &["/bin/sleep", "600"][..]),
    ] {
        let (out, took) = exec(cmd);
        assert_eq!(
            out.status.code(),
            Some(124),
            "{what}: {}",
            text(&out.stderr)
        );
        assert!(took >= limit, "{what}: killed early, after {took:?}");
        // The kill comes at the deadline; the slack is for a busy host.
        assert!(
            took < limit + std::time::Duration::from_secs(20),
            "{what}: {took:?}"
        );
        assert!(
            text(&out.stderr).contains("max_execution_time_seconds = 2"),
            "{}",
            text(&out.stderr)
        );
    }
    let ev = events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    for e in &ev {
        assert_eq!(e["kind"], "limit_hit");
        assert_eq!(e["control"], "process_limits.max_execution_time_seconds");
        assert_eq!(e["profile"], "quick");
    }
}

/// `run FILE.gguf PROMPT` needs no config: the model runs under the secure
/// profile sized to fit it, said on stderr. A file that is no model, a
/// missing one, and a file with --config are refused naming what is
/// wrong (exit 2), before anything loads.
#[test]
fn run_takes_a_model_file_without_a_config() {
    let worker = worker_beside_cli();
    let model = symbiont_runtime::config::default_model_path().unwrap();
    let out = symbi(
        &[
            "run",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--worker",
            worker.to_str().unwrap(),
            model.to_str().unwrap(),
            "Name a fruit.",
        ],
        Some(std::path::Path::new("/nonexistent/ignored.toml")),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!text(&out.stdout).trim().is_empty(), "{err}");
    assert!(
        err.contains("no config: profile `secure` sized to fit 1 request(s)"),
        "{err}"
    );
    assert!(err.contains("generated tokens"), "{err}");
    // The same file through --model.
    let out = symbi(
        &[
            "run",
            "-m",
            model.to_str().unwrap(),
            "--max-tokens",
            "2",
            "--worker",
            worker.to_str().unwrap(),
            "Hi",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.gguf");
    std::fs::write(&notes, "not a model").unwrap();
    for (file, why) in [
        (notes.to_str().unwrap(), "not a model file"),
        ("/nonexistent/absent.gguf", "absent.gguf"),
    ] {
        let out = symbi(&["run", "--worker", "/nonexistent", file, "Hi"], None);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }
    let out = symbi(
        &[
            "--config",
            "/nonexistent/c.toml",
            "run",
            model.to_str().unwrap(),
            "Hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("runs without a config"),
        "{}",
        text(&out.stderr)
    );
}

/// A reader that closes the pipe early (`symbi-slm … | head -1`) ends the
/// command quietly with exit 0, not a panic (101): the write end of a
/// pipe whose read end is already closed fails every write. The twin: the
/// same commands into an open pipe print and exit 0.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    for args in [
        &["profiles", "show", "secure"][..],
        &["models", "list"],
        &["config", "check"],
        &["agents", "token", "somebody"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_symbi-slm"))
            .args(args)
            .env_remove("SYMBI_SLM_CONFIG")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let open = symbi(args, None);
        assert!(open.status.success(), "{args:?}: {}", text(&open.stderr));
        assert!(!open.stdout.is_empty(), "{args:?}");
    }
}

/// The default model under `secure` with the settings of the given TOML
/// lines, as a config file in `dir`.
fn settings_config(dir: &std::path::Path, settings: &str, more: &str) -> std::path::PathBuf {
    let model = symbiont_runtime::config::default_model_path().unwrap();
    let path = dir.join("settings.toml");
    std::fs::write(
        &path,
        format!(
            "[slm]\nenabled = true\n[[slm.model_allow_lists.global_models]]\nid = \"smol\"\nname = \"SmolLM2\"\nprovider = {{ LocalFile = {{ file_path = \"{}\" }} }}\ncapabilities = [\"TextGeneration\"]\n[slm.model_allow_lists.global_models.settings]\n{settings}\n{more}",
            model.display()
        ),
    )
    .unwrap();
    path
}

/// "First contact", done when: a model that a built-in profile refuses
/// runs after the one config change that the error names. The default
/// model with two slots of its whole trained context (8,192 tokens) needs
/// more than `secure`'s 512 MB: refused before any worker starts, the
/// error naming the key and a value; with exactly that line added, it
/// runs. The other settings are refused at their own key with the value
/// that fits (a context beyond the trained one, more threads than the
/// profile gives), and the ones that apply reach the runner (a 64-token
/// context refuses a longer prompt; `sampling.max_tokens` bounds an answer
/// that sets none).
#[test]
fn a_refused_model_runs_after_the_one_change_its_error_names() {
    let worker = worker_beside_cli();
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "run",
            "--json",
            "--temperature",
            "0",
            "--worker",
            worker.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        symbi(&args, None)
    };
    let big = "slots = 2\ncontext_size = 8192\n[slm.model_allow_lists.global_models.settings.sampling]\nmax_tokens = 3";
    let config = settings_config(dir.path(), big, "");
    let out = run(&config, &["Name a fruit."]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let key = "`slm.sandbox_profiles.secure.resources.max_memory_mb` = 512; set it to ";
    let at = err.find(key).unwrap_or_else(|| panic!("{err}")) + key.len();
    let value: u64 = err[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // `run` holds one request: one context of cache, whatever `slots` says.
    assert!(
        err.contains("a KV cache of 8192 tokens (1 slot(s)"),
        "{err}"
    );
    assert!(
        err.contains("or lower `settings.context_size` of model `smol` to "),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it ran: {}", text(&out.stdout));
    // The one change.
    let config = settings_config(
        dir.path(),
        big,
        &format!("[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = {value}\n"),
    );
    let out = run(&config, &["Name a fruit."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No --max-tokens: the model's default applies.
    assert_eq!(v["metadata"]["output_tokens"], 3, "{v}");
    assert_eq!(v["metadata"]["finish_reason"], "length", "{v}");

    for (settings, needle) in [
        (
            "context_size = 16384",
            "`settings.context_size` of model `smol` = 16384 is more than the model's trained context of 8192 tokens; set it to 8192 or less",
        ),
        (
            "threads = 64",
            "`settings.threads` of model `smol` = 64 is more than `slm.sandbox_profiles.secure.resources.max_cpu_cores` = 1 allows",
        ),
        ("slots = 4\nbatch_size = 2", "slots"),
    ] {
        let config = settings_config(dir.path(), settings, "");
        let out = run(&config, &["Hi"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{settings}: {err}");
        assert!(err.contains(needle), "{settings}: {err}");
    }
    let config = settings_config(dir.path(), "context_size = 64", "");
    let out = run(&config, &["--max-tokens", "2", &"word ".repeat(100)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("longer than the context of 64 tokens"),
        "{err}"
    );
    let out = run(&config, &["--max-tokens", "2", "Hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `config check` finds every mistake in one run (the issue's user needed
/// six runs for eight): each misspelt key, wrong type and bad value with
/// its line; then what `run` and `serve` would refuse on this host, by
/// their own code: a model file that is not there, a model that fits no
/// profile it may run under (naming the change), a public listen address
/// without tokens. `--json` gives the same findings; a config that `run`
/// and `serve` accept is OK, with a warning for what only one refuses.
#[test]
fn config_check_reports_every_problem_in_one_run() {
    let worker = worker_beside_cli();
    let model = symbiont_runtime::config::default_model_path().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eight.toml");
    let eight = format!(
        "[slm]\nenabeld = true\n[[slm.model_allow_lists.global_models]]\nid = \"a\"\nname = \"A\"\nprovider = {{ LocalFile = {{ file_path = \"/nonexistent/a.gguf\" }} }}\ncapabilities = [\"TextGeneration\", \"Telepathy\"]\n[slm.model_allow_lists.global_models.settings]\ncontext_size = \"big\"\nthreds = 2\n[[slm.model_allow_lists.global_models]]\nid = \"b\"\nname = \"B\"\nprovider = {{ LocalFile = {{ file_path = \"{}\" }} }}\n[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = -1\nmax_cpu_cores = 0\n[slm.pool]\ncores = 100000\n[slm.service]\nlisten = \"0.0.0.0:8080\"\n",
        model.display()
    );
    std::fs::write(&path, &eight).unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec!["config", "check", "--worker", worker.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        symbi(&args, None)
    };
    let out = check(&[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    for (key, line) in [
        ("slm.enabeld", 2),
        ("slm.model_allow_lists.global_models[0].capabilities[1]", 7),
        (
            "slm.model_allow_lists.global_models[0].settings.context_size",
            9,
        ),
        ("slm.model_allow_lists.global_models[0].settings.threds", 10),
        ("slm.sandbox_profiles.secure.resources.max_memory_mb", 16),
        ("slm.sandbox_profiles.secure.resources.max_cpu_cores", 17),
        ("slm.pool.cores", 19),
        (
            "slm.model_allow_lists.global_models[0].provider.LocalFile.file_path",
            6,
        ),
    ] {
        assert!(
            said.contains(&format!("error: `{key}` (line {line},")),
            "{key} at line {line}: {said}"
        );
    }
    assert!(said.contains("8 error(s)"), "{said}");

    // Fixed the schema's way, the host's problems show: the file, a model
    // that fits no profile, a public address without tokens.
    let fixed = eight
        .replace("enabeld", "enabled")
        .replace(", \"Telepathy\"", "")
        .replace("\"big\"", "2048")
        .replace("threds = 2", "threads = 1")
        .replace("max_memory_mb = -1", "max_memory_mb = 200")
        .replace("max_cpu_cores = 0", "max_cpu_cores = 1")
        .replace("cores = 100000", "cores = 1");
    std::fs::write(&path, &fixed).unwrap();
    let out = check(&["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["errors"], 3, "{v}");
    let findings = v["findings"].as_array().unwrap();
    let at = |key: &str| {
        findings
            .iter()
            .find(|f| f["key_path"] == key)
            .unwrap_or_else(|| panic!("no finding at {key}: {v}"))
    };
    assert!(
        at("slm.model_allow_lists.global_models[0].provider.LocalFile.file_path")["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/a.gguf")
    );
    let fit = at("slm.model_allow_lists.global_models[1]");
    assert_eq!(fit["line"], 11, "{fit}");
    assert!(
        fit["message"]
            .as_str()
            .unwrap()
            .contains("`slm.sandbox_profiles.secure.resources.max_memory_mb` = 200; set it to"),
        "{fit}"
    );
    assert!(
        at("slm.service.listen")["message"]
            .as_str()
            .unwrap()
            .contains("no agent token"),
        "{v}"
    );

    // A config `run` and `serve` accept: OK, exit 0, and a warning for
    // the 401s nobody would otherwise explain.
    let ok = fixed
        .replace("/nonexistent/a.gguf", model.to_str().unwrap())
        .replace("max_memory_mb = 200", "max_memory_mb = 512")
        .replace("0.0.0.0:8080", "127.0.0.1:8080");
    std::fs::write(&path, &ok).unwrap();
    let out = check(&[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("config OK"), "{said}");
    assert!(
        said.contains("warning: `slm.service.agent_tokens`") && said.contains("401"),
        "{said}"
    );
    // Without a worker no local model runs: said once.
    let out = symbi(
        &[
            "config",
            "check",
            "--worker",
            "/nonexistent/worker",
            path.to_str().unwrap(),
        ],
        None,
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert_eq!(said.matches("no local model can run").count(), 1, "{said}");
}

/// The chat REPL at a terminal (a pseudo-terminal driven by pexpect, from
/// the pinned Python environment): /help, an answer, Ctrl-C in the middle
/// of a long answer stops only it (the next turn is answered by the same
/// worker), a message of several lines, an unknown command kept from the
/// model, Ctrl-C at the prompt, /bye, and the history kept (0600) and
/// recalled with Up in the next session. `tests/python/chat_repl.py` says
/// each check.
#[test]
fn the_chat_repl_works_at_a_terminal() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = std::process::Command::new(root.join("scripts/python-env"))
        .output()
        .expect("run scripts/python-env");
    assert!(
        env.status.success(),
        "scripts/python-env failed (it installs the pinned pexpect from PyPI):\n{}",
        text(&env.stderr)
    );
    let python = text(&env.stdout).trim().to_string();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python)
        .arg(root.join("tests/python/chat_repl.py"))
        .arg(env!("CARGO_BIN_EXE_symbi-slm"))
        .arg(worker_beside_cli())
        .arg(state.path())
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", text(&out.stderr));
    assert_eq!(said.matches("ok: ").count(), 9, "{said}");
}

/// The systemd unit in `deploy/` passes `systemd-analyze verify` without
/// a single warning (its executables pointed at this build); the twin: a
/// misspelt directive is a warning the check sees.
#[test]
fn the_systemd_unit_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("deploy/symbi-slm.service")).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    let unit = unit.replace("/usr/local/bin/symbi-slm", env!("CARGO_BIN_EXE_symbi-slm"));
    let dir = tempfile::tempdir().unwrap();
    let verify = |unit: &str| {
        let path = dir.path().join("symbi-slm.service");
        std::fs::write(&path, unit).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package; scripts/setup.sh installs it)");
        (out.status.success(), text(&out.stderr))
    };
    let (ok, said) = verify(&unit);
    assert!(ok && said.trim().is_empty(), "{said}");
    let (_, said) = verify(&unit.replace("NoNewPrivileges=", "NoNewPrivilegs="));
    assert!(said.contains("Unknown key 'NoNewPrivilegs'"), "{said}");
}

/// The unit's hardening leaves the worker's own sandbox intact, proved
/// under systemd itself: `deploy/check-unit.sh` boots Debian 12 under
/// systemd-nspawn (this host's PID 1 is not systemd) and runs, as units
/// with every directive of the shipped unit's [Service] section
/// (DynamicUser, ProtectSystem=strict, NoNewPrivileges,
/// RestrictAddressFamilies, …), `sandbox report --profile secure` (every
/// row enforced) and a `run` of the default model (an answer, every layer
/// in force). Needs root (as CI runs); the Debian root is made once and
/// kept beside the build cache. The twin: a directive that takes the
/// worker's sandbox away (RestrictNamespaces=yes) makes the same check
/// fail, so it can.
#[test]
fn the_unit_s_hardening_leaves_the_worker_s_sandbox_intact() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this check boots a system under systemd-nspawn and needs root (CI runs as root)"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let worker = worker_beside_cli();
    let model = symbiont_runtime::config::default_model_path().unwrap();
    let check = |unit: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(root.join("deploy/check-unit.sh"));
        cmd.arg(env!("CARGO_BIN_EXE_symbi-slm"))
            .arg(&worker)
            .arg(&model);
        if let Some(u) = unit {
            cmd.env("UNIT_FILE", u);
        }
        cmd.output().expect("run deploy/check-unit.sh")
    };
    let out = check(None);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", text(&out.stderr));
    assert!(said.contains("network.access_mode"), "{said}");
    assert!(said.contains("sandbox layers]"), "{said}");
    assert!(!said.contains("NOT ENFORCED"), "{said}");
    // The digest cache works under DynamicUser (its CacheDirectory= is a
    // link of root's): pinned files are not hashed at every start.
    assert!(!said.contains("is not this user's alone"), "{said}");

    let dir = tempfile::tempdir().unwrap();
    let weakened = dir.path().join("symbi-slm.service");
    std::fs::write(
        &weakened,
        std::fs::read_to_string(root.join("deploy/symbi-slm.service"))
            .unwrap()
            .replace(
                "NoNewPrivileges=yes",
                "NoNewPrivileges=yes\nRestrictNamespaces=yes",
            ),
    )
    .unwrap();
    let out = check(Some(&weakened));
    let said = text(&out.stdout);
    assert!(!out.status.success(), "{said}");
    // And `sandbox report` says so (it tries the namespaces for real).
    assert!(
        said.contains("this process may not make namespaces"),
        "{said}"
    );
}

/// A model pinned by its SHA-256 runs only with those bytes: the right pin
/// runs; a wrong one is refused before anything loads, both digests named
/// (exit 2); a copy changed in place, same size (the header check alone
/// would pass it), is refused at the next start. The digest is kept in a
/// cache only this user can write (0700, 0600), keyed by the file's
/// version, so a later start does not hash again.
#[test]
fn a_pinned_model_runs_only_with_its_bytes() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let worker = worker_beside_cli();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("m.gguf");
    std::fs::copy(
        symbiont_runtime::config::default_model_path().unwrap(),
        &copy,
    )
    .unwrap();
    let pin = symbiont_runtime::config::DEFAULT_MODEL_SHA256;
    let cache = dir.path().join("cache");
    let run = |sha: &str| {
        let config = dir.path().join("pinned.toml");
        std::fs::write(
            &config,
            format!(
                "[slm]\nenabled = true\n[[slm.model_allow_lists.global_models]]\nid = \"m\"\nname = \"M\"\nprovider = {{ LocalFile = {{ file_path = \"{}\", sha256 = \"{sha}\" }} }}\ncapabilities = [\"TextGeneration\"]\n",
                copy.display()
            ),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_symbi-slm"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--max-tokens", "2", "--worker"])
            .arg(&worker)
            .arg("Hi")
            .env("XDG_CACHE_HOME", &cache)
            .env("XDG_STATE_HOME", dir.path())
            .output()
            .unwrap()
    };
    let out = run(pin);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digests = cache.join("symbiont/digests");
    let mode = std::fs::metadata(&digests).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let entries: Vec<_> = std::fs::read_dir(&digests).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mode = entries[0].metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    assert_eq!(std::fs::read_to_string(entries[0].path()).unwrap(), pin);

    let wrong = format!("0{}", &pin[1..]);
    let wrong = if wrong == pin {
        format!("1{}", &pin[1..])
    } else {
        wrong
    };
    let out = run(&wrong);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(pin) && err.contains(&wrong), "{err}");

    // One byte in the middle of the weights, the size unchanged.
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    let middle = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    std::fs::File::open(&copy)
        .unwrap()
        .read_at(&mut b, middle)
        .unwrap();
    f.write_at(&[b[0] ^ 0xff], middle).unwrap();
    drop(f);
    let now =
        symbiont_runtime::models::digest::sha256_hex(&std::fs::File::open(&copy).unwrap()).unwrap();
    let out = run(pin);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("its SHA-256 is {now}")) && err.contains(pin),
        "{err}"
    );
}
