//! What several test binaries share: the repository's root and the
//! pinned Python clients' interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python of the pinned client environment (made by scripts/python-env
/// if it is missing: the `openai`, `anthropic`, `schemathesis` and
/// `huggingface_hub` packages of tests/python/requirements.txt).
pub fn python() -> String {
    let out = Command::new(root().join("scripts/python-env"))
        .output()
        .expect("run scripts/python-env");
    assert!(
        out.status.success(),
        "scripts/python-env failed (it installs the pinned Python clients from PyPI):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
