//! `symbi-slm models pull` and runs of Hugging Face models, against a hub
//! on loopback that speaks the real protocol (`LoopbackHub`, serving the
//! default model), and the cache shared with `huggingface_hub`.

mod common;
use common::{python, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use symbiont_runtime::config::{default_model_path, DEFAULT_MODEL_SHA256};
use symbiont_runtime::models::hub::loopback::{LoopbackHub, Misbehaviour};

const REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
const FILE: &str = "smollm2-135m-instruct-q4_1.gguf";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn worker() -> PathBuf {
    let w = Path::new(env!("CARGO_BIN_EXE_symbi-slm")).with_file_name("symbi-slm-worker");
    assert!(
        w.is_file(),
        "{} is missing: run the workspace's tests (scripts/test) so that it is built",
        w.display()
    );
    w
}

/// A hub serving the default model, a cache and a config in a new
/// directory.
struct Setup {
    hub: LoopbackHub,
    dir: tempfile::TempDir,
    config: PathBuf,
    commit: String,
}

impl Setup {
    fn new(pin: bool) -> Self {
        let path = default_model_path().expect("a home for the default model");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/setup.sh fetches the default model)",
                path.display()
            )
        });
        let hub = LoopbackHub::spawn().unwrap();
        let commit = hub.publish(
            REPO,
            "main",
            vec![
                (FILE.into(), Arc::new(bytes)),
                ("README.md".into(), Arc::new(b"# SmolLM2".to_vec())),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hub.toml");
        let pin = if pin {
            format!(", sha256 = \"{DEFAULT_MODEL_SHA256}\"")
        } else {
            String::new()
        };
        std::fs::write(
            &config,
            format!(
                "[slm]\nenabled = true\n[[slm.model_allow_lists.global_models]]\nid = \"smol\"\nname = \"SmolLM2\"\nprovider = {{ HuggingFace = {{ model_path = \"{REPO}\", file = \"Q4_1\"{pin} }} }}\ncapabilities = [\"TextGeneration\"]\n"
            ),
        )
        .unwrap();
        Self {
            hub,
            dir,
            config,
            commit,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("hf/hub")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("HF_ENDPOINT", &self.hub.endpoint)
            .env("HF_HUB_CACHE", self.cache())
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("HF_TOKEN")
            .env_remove("HF_HOME")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("SYMBI_SLM_CONFIG")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy");
    }

    /// The setup's config with `extra` appended, as `name` in its
    /// directory.
    fn config_plus(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            std::fs::read_to_string(&self.config).unwrap() + extra,
        )
        .unwrap();
        path
    }

    /// `symbi-slm --config CONFIG ARGS…` in this setup's environment.
    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_symbi-slm"));
        cmd.arg("--config").arg(config).args(args);
        self.env(&mut cmd);
        cmd
    }

    fn symbi(&self, args: &[&str]) -> Output {
        self.command(&self.config, args)
            .output()
            .expect("spawn symbi-slm")
    }

    /// Without a config (`run hf:…`).
    fn bare(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_symbi-slm"));
        cmd.args(args);
        self.env(&mut cmd);
        cmd.output().expect("spawn symbi-slm")
    }

    fn run(&self, model: &str) -> Output {
        let w = worker();
        self.symbi(&[
            "run",
            "--model",
            model,
            "--worker",
            w.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            "4",
            "Name a fruit.",
        ])
    }

    fn blob(&self) -> PathBuf {
        self.cache()
            .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF/blobs")
            .join(DEFAULT_MODEL_SHA256)
    }

    fn lfs_gets(&self) -> usize {
        self.hub
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /lfs/"))
            .count()
    }
}

/// The "done when", but for sharing with `huggingface_hub`: a
/// pinned model is missing until pulled (the run names the command); an
/// interrupted pull keeps its bytes and the next one resumes with a range,
/// with progress; the pulled model runs; a second pull fetches nothing; a
/// tampered blob is refused at the next run with both digests named.
#[test]
fn a_pinned_model_is_pulled_resumed_run_and_refused_once_tampered() {
    let s = Setup::new(true);
    let out = s.run("smol");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("symbi-slm models pull smol"), "{err}");
    let out = s.symbi(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("symbi-slm models pull smol"),
        "{}",
        text(&out.stdout)
    );
    let out = s.symbi(&["models", "show", "smol"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["file"]["present"], false, "{v}");

    s.hub.misbehave(Misbehaviour {
        cut_after: Some(40_000_000),
        ..Misbehaviour::default()
    });
    let out = s.symbi(&["models", "pull", "smol"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped after 40000000 of 98"),
        "the bytes kept are said: {err}"
    );
    assert!(err.contains("again resumes it"), "{err}");

    s.hub.misbehave(Misbehaviour::default());
    let out = s.symbi(&["models", "pull", "smol"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("is commit {}", s.commit)),
        "the revision resolved: {err}"
    );
    assert!(err.contains("resuming at 40.0 MB of 98"), "{err}");
    // Plain progress lines (not a terminal): bytes, percent, rate, ETA.
    assert!(
        err.lines()
            .any(|l| l.contains(" / 98") && l.contains("%) · ") && l.contains("ETA")),
        "{err}"
    );
    assert!(
        err.contains(&format!("sha256 {DEFAULT_MODEL_SHA256} verified")),
        "{err}"
    );
    assert!(s
        .hub
        .requests()
        .iter()
        .any(|r| r.ends_with("range=40000000-")));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("smol: {REPO} at {}", s.commit)),
        "{stdout}"
    );

    let before = s.lfs_gets();
    let out = s.symbi(&["models", "pull", "--all", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "pulled", "{events:?}");
    assert_eq!(last["downloaded_bytes"], 0, "{events:?}");
    assert_eq!(last["files"][0]["checked_against"], "the config's pin");
    assert!(events
        .iter()
        .any(|e| e["event"] == "done" && e["present"] == true));
    assert_eq!(s.lfs_gets(), before, "nothing fetched again");

    let out = s.run("smol");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
    // What the cache holds, offline.
    let out = s.symbi(&["models", "show", "smol"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["file"];
    assert_eq!(f["present"], true, "{v}");
    assert_eq!(f["commit"], s.commit.as_str());
    assert_eq!(f["revision"], "main");
    assert_eq!(f["file"], FILE);
    assert_eq!(f["sha256"], DEFAULT_MODEL_SHA256);
    assert_eq!(
        f["quantization"], "Q4_1",
        "read from the blob's header: {v}"
    );

    // Tampered: one byte of the blob changed in place.
    let blob = s.blob();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[50_000_000] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    let out = s.run("smol");
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(DEFAULT_MODEL_SHA256), "the pin: {err}");
    use sha2::Digest;
    let actual: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(err.contains(&actual), "what the file holds: {err}");
    assert!(out.stdout.is_empty());
    let out = s.symbi(&["models", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("MISMATCH") && said.contains(&actual) && said.contains(DEFAULT_MODEL_SHA256),
        "{said}"
    );
}

/// Files pulled by `symbi-slm` are cached for `huggingface_hub` (found
/// offline, by `try_to_load_from_cache` and `scan_cache_dir`, same bytes),
/// and a file `huggingface_hub` pulled is used by `symbi-slm` without a
/// download: `models pull` finds it there, and it runs.
#[test]
fn the_cache_is_shared_both_ways_with_huggingface_hub() {
    let s = Setup::new(false);
    let py = python();
    let script = root().join("tests/python/hf_cache.py");
    let out = s.symbi(&["models", "pull", "smol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("verified"),
        "unpinned: checked against the hub's LFS digest"
    );
    // Pulled, unpinned: the pin to write, from what the cache holds.
    let out = s.symbi(&["config", "check"]);
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "write `revision = \"{}\", sha256 = \"{DEFAULT_MODEL_SHA256}\"`",
            s.commit
        )),
        "{said}"
    );
    let snapshot = s
        .cache()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF/snapshots")
        .join(&s.commit)
        .join(FILE);
    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .args(["sees", REPO, FILE, DEFAULT_MODEL_SHA256])
        .arg(&snapshot);
    s.env(&mut cmd);
    let out = cmd.env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"checks\": 5"));

    // The other way: huggingface_hub pulls a second repository.
    let other = "someone/smol-copy";
    let bytes = std::fs::read(default_model_path().unwrap()).unwrap();
    s.hub
        .publish(other, "main", vec![(FILE.into(), Arc::new(bytes))]);
    let mut cmd = Command::new(&py);
    cmd.arg(&script).args(["pulls", other, FILE]);
    s.env(&mut cmd);
    let before = s.lfs_gets();
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.lfs_gets(), before + 1, "huggingface_hub downloaded it");
    std::fs::write(
        &s.config,
        std::fs::read_to_string(&s.config).unwrap()
            + &format!("[[slm.model_allow_lists.global_models]]\nid = \"copy\"\nname = \"Copy\"\nprovider = {{ HuggingFace = {{ model_path = \"{other}\" }} }}\ncapabilities = [\"TextGeneration\"]\n"),
    )
    .unwrap();
    let out = s.symbi(&["models", "pull", "copy"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("already in the cache"), "{err}");
    assert!(text(&out.stdout).contains("nothing to download"));
    assert_eq!(s.lfs_gets(), before + 1, "symbi-slm downloaded nothing");
    let out = s.run("copy");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.symbi(&["models", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout).matches(" ok ").count(),
        2,
        "{}",
        text(&out.stdout)
    );

    // Without a config, as `llama-server -hf` and `ollama run hf.co/…`:
    // from the cache (nothing downloaded), or pulled first.
    let w = worker();
    let worker_arg = w.to_str().unwrap();
    let run_spec = |spec: &str| {
        s.bare(&[
            "run",
            "--worker",
            worker_arg,
            "--max-tokens",
            "2",
            spec,
            "Hi",
        ])
    };
    let before = s.lfs_gets();
    let out = run_spec("hf:someone/smol-copy:Q4_1");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("model `smol-copy` from someone/smol-copy/"),
        "{err}"
    );
    assert_eq!(s.lfs_gets(), before, "from the cache");
    let third = "third/smol";
    s.hub.publish(
        third,
        "main",
        vec![(
            FILE.into(),
            Arc::new(std::fs::read(default_model_path().unwrap()).unwrap()),
        )],
    );
    let out = run_spec("hf.co/third/smol");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("downloading 98"),
        "pulled first, with progress: {err}"
    );
    assert_eq!(s.lfs_gets(), before + 1);
    let out = s.bare(&["run", "hf:nobody/nothing", "Hi"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    let out = s.bare(&["run", "hf:../../etc:Q4", "Hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("hf:org/repo"),
        "{}",
        text(&out.stderr)
    );

    // Removed: its blob goes, the other repository's stay.
    let out = s.symbi(&["models", "rm", "smol", "--dry-run"]);
    assert!(
        text(&out.stdout).contains("would remove"),
        "{}",
        text(&out.stdout)
    );
    assert!(snapshot.exists());
    let out = s.symbi(&["models", "rm", "smol"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("freed 98"), "{said}");
    assert!(!snapshot.exists());
    let out = s.run("copy");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.symbi(&["models", "gc"]);
    assert!(
        text(&out.stdout).contains("freed 0.0 MB"),
        "{}",
        text(&out.stdout)
    );
}

/// The knobs and failures of a pull: `HF_HUB_OFFLINE`, a file that no
/// profile could hold (refused before download), a full disk (the bytes
/// kept and resumed, never a model), `HF_TOKEN` only to the hub and never
/// printed, and `pull_on_first_use`.
#[test]
fn offline_too_large_disk_full_token_and_pull_on_first_use() {
    let s = Setup::new(true);
    let mut cmd = s.command(&s.config, &["models", "pull", "smol"]);
    let out = cmd.env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HF_HUB_OFFLINE is set"),
        "{}",
        text(&out.stderr)
    );

    // Every profile smaller than the file: nothing is downloaded.
    let small = s.config_plus("small.toml", "[slm.sandbox_profiles.secure.resources]\nmax_memory_mb = 64\n[slm.sandbox_profiles.standard.resources]\nmax_memory_mb = 64\n");
    let before = s.lfs_gets();
    let mut cmd = s.command(&small, &["models", "pull", "smol"]);
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("more than the memory of every sandbox profile"),
        "{err}"
    );
    assert_eq!(s.lfs_gets(), before);

    // A full disk, as a file size limit (ulimit -f, in KiB): the bytes
    // written are kept as .incomplete, the next pull resumes them.
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "trap '' XFSZ; ulimit -f 30000; exec \"$@\"", "bash"])
        .arg(env!("CARGO_BIN_EXE_symbi-slm"))
        .arg("--config")
        .arg(&s.config)
        .args(["models", "pull", "smol"]);
    s.env(&mut cmd);
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("File too large") && err.contains("again resumes it"),
        "{err}"
    );
    let part = s.blob().with_extension("incomplete");
    let kept = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept <= 30000 * 1024, "{kept}");
    assert!(!s.blob().exists());
    assert_eq!(
        s.run("smol").status.code(),
        Some(2),
        "a partial file never runs"
    );

    // The token: to the hub, never to the CDN, never printed.
    let secret = "hf_ThisIsNotARealToken0123456789";
    let mut cmd = s.command(&s.config, &["models", "pull", "smol"]);
    let out = cmd.env("HF_TOKEN", secret).output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("resuming at {:.1} MB", kept as f64 / 1e6)),
        "{err}"
    );
    assert!(!err.contains(secret) && !text(&out.stdout).contains(secret));
    let requests = s.hub.requests();
    let bearer = format!("authorization=Bearer {secret}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/models/") && r.ends_with(&bearer)),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/lfs/"))
            .all(|r| !r.contains("authorization")),
        "{requests:?}"
    );

    // pull_on_first_use: a run of a model not pulled downloads it first.
    let _ = std::fs::remove_dir_all(s.cache());
    let eager = s.config_plus("eager.toml", "[slm.pool]\npull_on_first_use = true\n");
    let before = s.lfs_gets();
    let w = worker();
    let mut cmd = s.command(
        &eager,
        &[
            "run",
            "--model",
            "smol",
            "--worker",
            w.to_str().unwrap(),
            "--max-tokens",
            "2",
            "Hi",
        ],
    );
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.lfs_gets(), before + 1);
    assert!(s.blob().is_file());

    // A file that is neither pinned nor an LFS file (its blob named by a
    // git id, as for a small file) does not run unchecked.
    let unpinned = s.dir.path().join("unpinned.toml");
    std::fs::write(
        &unpinned,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&format!(", sha256 = \"{DEFAULT_MODEL_SHA256}\""), ""),
    )
    .unwrap();
    let blobs = s.blob().parent().unwrap().to_path_buf();
    std::fs::rename(s.blob(), blobs.join("0123abcd")).unwrap();
    let commit_dir = blobs.parent().unwrap().join("snapshots").join(&s.commit);
    std::fs::remove_file(commit_dir.join(FILE)).unwrap();
    std::os::unix::fs::symlink("../../blobs/0123abcd", commit_dir.join(FILE)).unwrap();
    let mut cmd = s.command(
        &unpinned,
        &[
            "run",
            "--model",
            "smol",
            "--worker",
            w.to_str().unwrap(),
            "Hi",
        ],
    );
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not an LFS file") && err.contains("pin it"),
        "{err}"
    );
}

/// `symbi-slm serve` of `config` on a loopback port: the child and its
/// URL (from the "listening" line on stdout).
fn serve(s: &Setup, config: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let w = worker();
    let mut cmd = s.command(
        config,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--worker",
            w.to_str().unwrap(),
        ],
    );
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve said nothing").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    (child, url)
}

/// `GET /ready`: the body, a newline, the status.
fn ready(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{url}/ready"))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// `/ready` names a Hugging Face model not pulled yet (a probe never
/// pulls), and is ready once it is; under `pull_on_first_use` a model not
/// pulled is no fault (the first request pulls it).
#[test]
fn ready_names_a_model_not_pulled_until_it_is() {
    let s = Setup::new(true);
    let (mut child, url) = serve(&s, &s.config);
    let before = s.lfs_gets();
    let said = ready(&url);
    assert!(said.ends_with("503"), "{said}");
    assert!(
        said.contains(
            "model `smol` is not in the Hugging Face cache yet (`symbi-slm models pull smol`)"
        ),
        "{said}"
    );
    assert_eq!(s.lfs_gets(), before, "a probe never pulls");
    let out = s.symbi(&["models", "pull", "smol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = ready(&url);
    let _ = child.kill();
    let _ = child.wait();
    assert!(said.ends_with("200"), "{said}");

    let _ = std::fs::remove_dir_all(s.cache());
    let eager = s.config_plus("eager.toml", "[slm.pool]\npull_on_first_use = true\n");
    let (mut child, url) = serve(&s, &eager);
    let before = s.lfs_gets();
    let said = ready(&url);
    let _ = child.kill();
    let _ = child.wait();
    assert!(said.ends_with("200"), "{said}");
    assert_eq!(s.lfs_gets(), before, "a probe never pulls");
}

/// `HTTP_PROXY` (here the project's own egress proxy, allowing the hub's
/// host) carries every request of a pull: the hub and its CDN see the
/// proxy, and the proxy counts the bytes of the model.
#[test]
fn a_pull_goes_through_the_proxy_the_environment_names() {
    use std::sync::atomic::Ordering;
    use symbiont_egress::{Policy, Proxy, Rule};
    let s = Setup::new(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let policy = Policy::new("test", vec![Rule::new("127.0.0.1", None, None).unwrap()]);
    let proxy = Arc::new(Proxy::new(policy));
    let stats = proxy.stats();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(proxy.serve(listener));
    let mut cmd = s.command(&s.config, &["models", "pull", "smol"]);
    // The proxy by a name that leads to loopback: trusted, the
    // operator's choice.
    let proxy_url = format!("http://localhost:{}", addr.port());
    let out = cmd
        .env("HTTP_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stats.allowed.load(Ordering::Relaxed) >= 2,
        "listing and file"
    );
    assert!(
        stats.bytes_in.load(Ordering::Relaxed) > 98_000_000,
        "the model came through the proxy"
    );
    // Through the proxy, a redirect to a name that leads to loopback is
    // judged here first (the proxy would resolve it itself).
    let _ = std::fs::remove_dir_all(s.cache());
    s.hub.misbehave(Misbehaviour {
        redirect_to: Some("http://localhost:1/blob".into()),
        ..Misbehaviour::default()
    });
    let mut cmd = s.command(&s.config, &["models", "pull", "smol"]);
    let out = cmd.env("HTTP_PROXY", &proxy_url).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("localhost") && err.contains("loopback"),
        "{err}"
    );
}
