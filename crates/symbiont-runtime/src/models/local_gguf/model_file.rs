//! The model file as the supervisor sees it: resolved once when a runner
//! is built, opened and checked for every worker start, and handed to the
//! worker as that very descriptor (see `worker.rs`, `MODEL_FD`).

use std::path::{Path, PathBuf};

use super::gguf::{self, GgufError, GgufSummary};
use super::sandbox_plan;
use crate::models::SlmRunnerError;

/// Resolves the model path once, when the runner is built: absolute, every
/// symbolic link followed (the operator's choice, taken at configuration
/// time). Every worker start then opens exactly this path without following
/// a link ([`open_model_file`]).
pub(super) fn resolve_model_path(path: &Path) -> Result<PathBuf, SlmRunnerError> {
    if !path.is_absolute() {
        return Err(SlmRunnerError::InvalidInput {
            field: "model_path",
            reason: format!("{} is not an absolute path", path.display()),
        });
    }
    std::fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SlmRunnerError::ModelFileNotFound {
            path: path.to_path_buf(),
        },
        _ => SlmRunnerError::InvalidModelFile {
            path: path.to_path_buf(),
            reason: format!("cannot resolve: {e}"),
        },
    })
}

/// [`open_model_file`] on the blocking pool (it reads the header).
pub(super) async fn open_model_file_blocking(
    path: &Path,
    pin: Option<String>,
) -> Result<(std::fs::File, GgufSummary), SlmRunnerError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let opened = open_model_file(&path)?;
        // The pin is checked on this very descriptor: the bytes checked
        // are the bytes the worker loads.
        if let Some(hex) = &pin {
            super::digest::check_pin(&opened.0, &path, hex)?;
        }
        Ok(opened)
    })
    .await
    .map_err(|e| SlmRunnerError::InitializationFailed {
        reason: format!("model check task: {e}"),
    })?
}

/// Opens the model file for a worker and checks it on that descriptor: not
/// a symbolic link (`O_NOFOLLOW`), not a fifo or device (`O_NONBLOCK`, then
/// `fstat`: regular files only), a sane GGUF header. The worker inherits
/// this very descriptor, so what it loads is what was checked, whatever the
/// path names by then.
fn open_model_file(path: &Path) -> Result<(std::fs::File, GgufSummary), SlmRunnerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |reason: String| SlmRunnerError::InvalidModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match (e.kind(), e.raw_os_error()) {
            (std::io::ErrorKind::NotFound, _) => SlmRunnerError::ModelFileNotFound {
                path: path.to_path_buf(),
            },
            (_, Some(nix::libc::ELOOP)) => invalid(
                "is now a symbolic link (links are resolved once, when the runner is built)".into(),
            ),
            _ => invalid(format!("cannot open: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| invalid(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    // Started by root, the worker is an unprivileged id outside its user
    // namespace and opens the model (through its descriptor) with that
    // id's rights.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let id = sandbox_plan::WORKER_UNPRIVILEGED_ID;
        let mode = meta.mode();
        // The kernel looks at the group's bits (the worker's uid is its
        // own: no file is owned by it), else the others' (ACLs aside).
        let readable = if meta.gid() == id {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        };
        if !readable {
            return Err(invalid(format!(
                "mode {:o}, owner {}:{}: the worker runs as a uid of its own and gid {id} outside its sandbox and could not read it; make it readable by others (chmod o+r), or by group {id} (chgrp {id}, chmod g+r)",
                mode & 0o7777,
                meta.uid(),
                meta.gid()
            )));
        }
    }
    let summary = gguf::read_summary_of(&file).map_err(|e| match e {
        GgufError::Io(io) => invalid(format!("not readable: {io}")),
        other => invalid(other.to_string()),
    })?;
    Ok((file, summary))
}
