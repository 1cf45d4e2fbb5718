//! Beyond one host (issue 23): replicas of `symbi-slm serve` behind the
//! HAProxy configuration of `deploy/`, scraped by the Prometheus
//! configuration of `deploy/`, on loopback; and the Kubernetes manifests of
//! `deploy/kubernetes`, validated offline against Kubernetes' schemas.
//! The fleet itself is driven by `tests/python/fleet.py` (real HAProxy,
//! real Prometheus, the `openai` client), which says what it checks.

mod common;
use common::{python, root};
use std::path::Path;
use std::process::Command;

fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_symbi-slm"))
        .parent()
        .expect("the executable's directory")
}

/// Three replicas (one thread each, `OMP_WAIT_POLICY=PASSIVE`), HAProxy
/// with agent affinity and a second one round robin, Prometheus; a load
/// over eight agents; one replica drained and another SIGKILLed under
/// load. Counts are asserted, never speed (two cores for three replicas).
#[test]
fn a_fleet_behind_haproxy_drains_survives_a_kill_and_is_scraped_by_prometheus() {
    for tool in ["haproxy", "prometheus", "promtool"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool} >/dev/null")])
            .status()
            .unwrap()
            .success();
        assert!(
            found,
            "{tool} is not installed: scripts/setup.sh installs Debian's haproxy and prometheus"
        );
    }
    let worker = bin_dir().join("symbi-slm-worker");
    assert!(
        worker.is_file(),
        "{} is missing: run the workspace's tests (scripts/test) so that it is built",
        worker.display()
    );
    let stdout = run_script("fleet.py", 35);
    assert!(
        stdout.lines().any(|l| l.starts_with("report {")),
        "{stdout}"
    );
}

/// `deploy/kubernetes` against Kubernetes' schemas, offline, and what must
/// agree between its files and the replicas' config
/// (`tests/python/k8s_manifests.py` says each check).
#[test]
fn the_kubernetes_manifests_validate_and_agree_with_the_config() {
    run_script("k8s_manifests.py", 25);
}

/// Runs `tests/python/SCRIPT --bin DIR --model FILE` (the default model,
/// which must be there), prints its output (the figures), and asserts it
/// passed with at least `checks` checks.
fn run_script(script: &str, checks: usize) -> String {
    let model = symbiont_runtime::config::default_model_path().expect("HOME must be set");
    assert!(
        model.is_file(),
        "the default model is missing at {}: run scripts/setup.sh",
        model.display()
    );
    let out = Command::new(python())
        .arg(root().join("tests/python").join(script))
        .arg("--bin")
        .arg(bin_dir())
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(ran >= checks, "only {ran} checks ran:\n{stdout}");
    stdout
}
