//! The security audit log: every denial, limit hit, kill, worker crash,
//! access refusal and sandbox gap as one structured event.
//!
//! Every event goes to `tracing` (target `symbi_slm_audit`, level WARN).
//! With a file ([`AuditLog::to_file`], the config's `slm.audit_log_path`),
//! events of profiles with `enable_audit_logging = true` are also appended
//! to it as JSON lines, one object per line:
//!
//! ```json
//! {"time":"2026-11-29T22:30:01.123Z","kind":"limit_hit","agent":"a1","model":"smollm2-135m-instruct","profile":"secure","control":"resources.max_memory_mb","detail":"…"}
//! ```
//!
//! Turning the file off never changes what the caller sees: the error of a
//! refused or failed request is the same either way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// An agent asked for a model it may not use.
    AccessRefused,
    /// The sandbox refused something (a profile it cannot enforce, a set-up
    /// that failed closed).
    Denial,
    /// A resource limit stopped a request (memory, time, CPU, disk).
    LimitHit,
    /// The supervisor killed a worker (it ignored cancellation, or hit a
    /// backstop).
    Kill,
    /// A worker died on its own (signal, abort, exit).
    WorkerCrash,
    /// A sandbox layer is not in force on this host.
    SandboxGap,
    /// The egress policy refused a network destination.
    EgressRefused,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// What happened.
    pub kind: AuditKind,
    /// The agent the request ran for, when known.
    pub agent: Option<String>,
    /// The model id (or file) concerned.
    pub model: Option<String>,
    /// The sandbox profile in force.
    pub profile: Option<String>,
    /// The control or config key concerned, such as
    /// `resources.max_memory_mb`.
    pub control: String,
    /// What exactly.
    pub detail: String,
}

impl AuditEvent {
    /// An event stamped now.
    pub fn new(kind: AuditKind, control: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            time: rfc3339_now(),
            kind,
            agent: None,
            model: None,
            profile: None,
            control: control.into(),
            detail: detail.into(),
        }
    }

    /// Sets who and what the event concerns.
    pub fn about(
        mut self,
        agent: Option<&str>,
        model: Option<&str>,
        profile: Option<&str>,
    ) -> Self {
        self.agent = agent.map(str::to_string);
        self.model = model.map(str::to_string);
        self.profile = profile.map(str::to_string);
        self
    }
}

/// Where audit events go. Cheap to clone; clones share the file.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    file: Option<Arc<(PathBuf, Mutex<File>)>>,
}

impl AuditLog {
    /// Events go to `tracing` only.
    pub fn tracing_only() -> Self {
        Self::default()
    }

    /// Events also go to `path`, appended as JSON lines (created with mode
    /// 0600 if missing).
    pub fn to_file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            file: Some(Arc::new((path, Mutex::new(file)))),
        })
    }

    /// The file events are appended to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.0.as_path())
    }

    /// Records `event`: always to `tracing`, and to the file when
    /// `to_file` is true (the profile's `enable_audit_logging`).
    pub fn record(&self, event: &AuditEvent, to_file: bool) {
        tracing::warn!(
            target: "symbi_slm_audit",
            kind = ?event.kind,
            agent = event.agent.as_deref().unwrap_or("-"),
            model = event.model.as_deref().unwrap_or("-"),
            profile = event.profile.as_deref().unwrap_or("-"),
            control = %event.control,
            "{}",
            event.detail
        );
        let Some(file) = self.file.as_ref().filter(|_| to_file) else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        // One write per event on an O_APPEND file: lines from several
        // processes do not interleave.
        let written = file.1.lock().map(|mut f| f.write_all(&line));
        if let Ok(Err(e)) | Err(e) = written.map_err(|_| std::io::Error::other("lock poisoned")) {
            tracing::error!(target: "symbi_slm_audit", path = %file.0.display(), "cannot write the audit log: {e}");
        }
    }
}

/// Now, as `YYYY-MM-DDThh:mm:ss.mmmZ`.
fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_rfc3339_utc() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        let year: i32 = t[..4].parse().unwrap();
        assert!((2024..2200).contains(&year), "{t}");
    }

    #[test]
    fn file_gets_json_lines_only_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::to_file(&path).unwrap();
        let e = AuditEvent::new(AuditKind::LimitHit, "resources.max_memory_mb", "too big").about(
            Some("a1"),
            Some("m"),
            Some("secure"),
        );
        log.record(&e, true);
        log.record(&e, false);
        log.record(&AuditEvent::new(AuditKind::Kill, "x", "y"), true);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], e);
        assert_eq!(lines[1].kind, AuditKind::Kill);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
