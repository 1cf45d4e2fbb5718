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
//!
//! An event made while a request is handled carries its id
//! (`"request_id"`, the service's `x-request-id`): the service runs each
//! request's future in [`in_request`] and its answer's stream in
//! [`stream_in_request`], and [`AuditEvent::new`] reads the id from there,
//! so that no layer between (pool, runner, queue) has to carry it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod request;
pub use request::{
    current_request_id, in_request, spawn_in_request, stream_in_request, with_request_id,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A request to the service whose token proves no agent (missing,
    /// malformed or unknown; the token itself is never recorded).
    AuthenticationFailed,
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
    /// For a summary of events not written one by one (see
    /// [`AUDIT_BURST`]): how many there were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The request it happened in (the service's `x-request-id`), when it
    /// happened in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Events of one kind, agent, profile and control written one by one in
/// each [`AUDIT_WINDOW`]; past that they are counted, and one summary
/// event with the count (and the last one's detail) follows when the
/// window is over (or when the log is flushed or dropped). A process that
/// loops on a refused call thus writes a few lines, not millions.
pub const AUDIT_BURST: u32 = 10;
/// See [`AUDIT_BURST`].
pub const AUDIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest detail (or name) an event carries, in characters; the rest is
/// cut, with a mark.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// `text` fit for a log line: at most `max` characters, control characters
/// (but newline and tab), bidirectional marks and overrides, invisible
/// characters (zero-width, line and paragraph separators, byte-order mark,
/// tag characters) replaced with U+FFFD, so that a name chosen by an
/// attacker (a host name with U+202E, an escape sequence) cannot disguise
/// a line or a terminal. (Newlines stay: the JSON file escapes them, and
/// the log line of an event writes them as U+23CE.)
pub fn clean_text(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| {
            if (c.is_control() && c != '\n' && c != '\t')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || c == '\u{200e}'
                || c == '\u{200f}'
                || c == '\u{061c}'
                || ('\u{200b}'..='\u{200d}').contains(&c)
                || c == '\u{2028}'
                || c == '\u{2029}'
                || c == '\u{feff}'
                || ('\u{e0000}'..='\u{e007f}').contains(&c)
            {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
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
            control: clean_text(&control.into(), MAX_DETAIL_CHARS),
            detail: clean_text(&detail.into(), MAX_DETAIL_CHARS),
            count: None,
            request_id: current_request_id().map(|id| clean_text(&id, 64)),
        }
    }

    /// Sets who and what the event concerns.
    pub fn about(
        mut self,
        agent: Option<&str>,
        model: Option<&str>,
        profile: Option<&str>,
    ) -> Self {
        let name = |s: Option<&str>| s.map(|s| clean_text(s, 256));
        self.agent = name(agent);
        self.model = name(model);
        self.profile = name(profile);
        self
    }
}

/// `slm.audit_log_path` for standard output.
pub const STDOUT: &str = "-";

/// The audit file: its path and the open file.
type SharedFile = Arc<(PathBuf, Mutex<File>)>;

/// Where audit events go. Cheap to clone; clones share the file and the
/// count of repeated events ([`AUDIT_BURST`]).
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    file: Option<SharedFile>,
    repeats: Arc<Repeats>,
}

/// Who an event is about, for counting repeats: kind, agent, model,
/// profile, control.
type RepeatKey = (
    AuditKind,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// Per key: when its window started, how many were written, and the
/// events counted instead (the last kept for the summary).
#[derive(Debug, Default)]
struct Repeats {
    windows: Mutex<std::collections::HashMap<RepeatKey, Window>>,
    /// Where summaries go when the last clone of the log is dropped.
    sink: Mutex<Option<(Option<SharedFile>, bool)>>,
    /// Whether a thread writes the summaries of windows that ended (set
    /// and cleared under `windows`' lock).
    flusher: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Window {
    started: std::time::Instant,
    written: u32,
    counted: u64,
    first_counted: String,
    last: Option<AuditEvent>,
}

impl Window {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            written: 0,
            counted: 0,
            first_counted: String::new(),
            last: None,
        }
    }

    /// The summary of what was counted, if anything.
    fn summary(&mut self) -> Option<AuditEvent> {
        let mut last = self.last.take()?;
        let n = std::mem::take(&mut self.counted);
        last.detail = format!(
            "{n} more like this from {} to {} (at most {AUDIT_BURST} a kind, agent and control in {} s are written one by one); the last: {}",
            self.first_counted,
            last.time,
            AUDIT_WINDOW.as_secs(),
            last.detail
        );
        last.count = Some(n);
        Some(last)
    }
}

impl Drop for Repeats {
    fn drop(&mut self) {
        let sink = self.sink.get_mut().map(|s| s.take()).unwrap_or(None);
        let windows = std::mem::take(self.windows.get_mut().unwrap_or_else(|p| p.into_inner()));
        if let Some((file, to_file)) = sink {
            let log = AuditLog {
                file,
                repeats: Arc::default(),
            };
            for (_, mut w) in windows {
                if let Some(s) = w.summary() {
                    log.write(&s, to_file);
                }
            }
        }
    }
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
        // A link as the last component is refused (ELOOP): in a directory
        // others may write, it would redirect root's appends elsewhere.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)?;
        Ok(Self {
            file: Some(Arc::new((path, Mutex::new(file)))),
            repeats: Arc::default(),
        })
    }

    /// Events also go where `slm.audit_log_path` says: [`STDOUT`] or a
    /// file ([`AuditLog::to_file`]).
    pub fn at(path: &str) -> std::io::Result<Self> {
        if path == STDOUT {
            Self::to_stdout()
        } else {
            Self::to_file(path)
        }
    }

    /// Events also go to standard output, one JSON object per line, for
    /// a log collector (`slm.audit_log_path = "-"`): the same lines a
    /// file gets, each in one write.
    pub fn to_stdout() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let out = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Self {
            file: Some(Arc::new((
                PathBuf::from(STDOUT),
                Mutex::new(File::from(out)),
            ))),
            repeats: Arc::default(),
        })
    }

    /// Events also go to standard error, one JSON object per line: where
    /// a command whose standard output is its answer (`run`, `chat`,
    /// `sandbox report`) sends what `slm.audit_log_path = "-"` asks for.
    pub fn to_stderr() -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let err = std::io::stderr().as_fd().try_clone_to_owned()?;
        Ok(Self {
            file: Some(Arc::new((
                PathBuf::from("/dev/stderr"),
                Mutex::new(File::from(err)),
            ))),
            repeats: Arc::default(),
        })
    }

    /// The file events are appended to, if any (`-` for standard output,
    /// `/dev/stderr` for standard error).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.0.as_path())
    }

    /// Records `event`: always to `tracing`, and to the file when
    /// `to_file` is true (the profile's `enable_audit_logging`), unless
    /// [`AUDIT_BURST`] events of its kind, agent, profile and control were
    /// written in this window already: then it is counted, and a summary
    /// follows.
    pub fn record(&self, event: &AuditEvent, to_file: bool) {
        let key: RepeatKey = (
            event.kind,
            event.agent.clone(),
            event.model.clone(),
            event.profile.clone(),
            event.control.clone(),
        );
        let (summary, write) = {
            let mut windows = self
                .repeats
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Keys come from the config and a few controls; forget quiet
            // ones if there are ever many.
            if windows.len() > 4096 {
                windows.retain(|_, w| w.counted > 0 || w.started.elapsed() < AUDIT_WINDOW);
            }
            let w = windows.entry(key).or_insert_with(Window::new);
            let mut summary = None;
            if w.started.elapsed() >= AUDIT_WINDOW {
                summary = w.summary();
                *w = Window::new();
            }
            let write = if w.written < AUDIT_BURST {
                w.written += 1;
                true
            } else {
                if w.counted == 0 {
                    w.first_counted = event.time.clone();
                }
                w.counted += 1;
                w.last = Some(event.clone());
                if !self.repeats.flusher.swap(true, Ordering::SeqCst) {
                    self.start_flusher(to_file);
                }
                false
            };
            (summary, write)
        };
        if let Ok(mut sink) = self.repeats.sink.lock() {
            if sink.is_none() || to_file {
                *sink = Some((self.file.clone(), to_file));
            }
        }
        if let Some(s) = summary {
            self.write(&s, to_file);
        }
        if write {
            self.write(event, to_file);
        }
    }

    /// A thread that writes each summary once its window has ended, so that
    /// a burst followed by silence is not left uncounted until the process
    /// ends; it stops when nothing is counted (or the log is gone).
    fn start_flusher(&self, to_file: bool) {
        let repeats = Arc::downgrade(&self.repeats);
        let file = self.file.clone();
        let spawned = std::thread::Builder::new()
            .name("audit-summaries".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let Some(repeats) = repeats.upgrade() else {
                    return;
                };
                let (summaries, more) = {
                    let mut windows = repeats.windows.lock().unwrap_or_else(|p| p.into_inner());
                    let summaries: Vec<AuditEvent> = windows
                        .values_mut()
                        .filter(|w| w.counted > 0 && w.started.elapsed() >= AUDIT_WINDOW)
                        .filter_map(|w| {
                            let s = w.summary();
                            *w = Window::new();
                            s
                        })
                        .collect();
                    let more = windows.values().any(|w| w.counted > 0);
                    if !more {
                        repeats.flusher.store(false, Ordering::SeqCst);
                    }
                    (summaries, more)
                };
                let log = AuditLog {
                    file: file.clone(),
                    repeats: Arc::default(),
                };
                for s in summaries {
                    log.write(&s, to_file);
                }
                if !more {
                    return;
                }
            });
        if spawned.is_err() {
            // No thread: the summaries come with the next event of their
            // key, a flush, or the log's end.
            self.repeats.flusher.store(false, Ordering::SeqCst);
        }
    }

    /// Writes the summaries of every event counted so far (at the end of a
    /// process that exits without dropping its log).
    pub fn flush(&self, to_file: bool) {
        let summaries: Vec<AuditEvent> = self
            .repeats
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
            .filter_map(Window::summary)
            .collect();
        for s in summaries {
            self.write(&s, to_file);
        }
    }

    fn write(&self, event: &AuditEvent, to_file: bool) {
        tracing::warn!(
            target: "symbi_slm_audit",
            kind = ?event.kind,
            agent = event.agent.as_deref().unwrap_or("-"),
            model = event.model.as_deref().unwrap_or("-"),
            profile = event.profile.as_deref().unwrap_or("-"),
            control = %event.control,
            request_id = event.request_id.as_deref().unwrap_or("-"),
            "{}",
            event.detail.replace('\n', "⏎")
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

    /// An event made in a request's future, a stream of it polled later
    /// elsewhere, or a task it spawned carries the request's id; one made
    /// outside carries none.
    #[tokio::test]
    async fn events_carry_the_id_of_the_request_they_happen_in() {
        use futures::StreamExt;
        let made = || AuditEvent::new(AuditKind::LimitHit, "c", "d").request_id;
        assert_eq!(made(), None);
        let inside = in_request("req-1".into(), async { made() }).await;
        assert_eq!(inside.as_deref(), Some("req-1"));
        let events = futures::stream::repeat_with(made).take(2);
        let polled: Vec<_> = stream_in_request("req-2".into(), events).collect().await;
        assert_eq!(
            polled,
            [Some("req-2".to_string()), Some("req-2".to_string())]
        );
        let spawned = in_request("req-3".into(), async {
            spawn_in_request(async move { made() }).await.unwrap()
        })
        .await;
        assert_eq!(spawned.as_deref(), Some("req-3"));
        assert_eq!(spawn_in_request(async move { made() }).await.unwrap(), None);
    }

    #[test]
    fn time_is_rfc3339_utc() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        let year: i32 = t[..4].parse().unwrap();
        assert!((2024..2200).contains(&year), "{t}");
    }

    /// Row 5 of issue 18: 16,872 refusals in 5 s made 256 MB of audit
    /// log. Repeats of one kind, agent and control are written
    /// [`AUDIT_BURST`] at a time, then counted into one summary (on flush
    /// here; at the end of the window in a long-lived process); another
    /// agent's events are written meanwhile, and the twin with a burst's
    /// worth of events writes them all.
    #[test]
    fn repeated_events_are_counted_not_written_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::to_file(&path).unwrap();
        let ev = |agent: &str, n: usize| {
            AuditEvent::new(
                AuditKind::EgressRefused,
                "network.allowed_destinations",
                format!("refused evil.example:{n}"),
            )
            .about(Some(agent), None, Some("tools"))
        };
        for n in 0..20_000 {
            log.record(&ev("a1", n), true);
        }
        for n in 0..AUDIT_BURST as usize {
            log.record(&ev("a2", n), true);
        }
        let lines = |p: &Path| -> Vec<AuditEvent> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let written = lines(&path);
        let of =
            |a: &str, w: &[AuditEvent]| w.iter().filter(|e| e.agent.as_deref() == Some(a)).count();
        assert_eq!(of("a1", &written), AUDIT_BURST as usize);
        assert_eq!(
            of("a2", &written),
            AUDIT_BURST as usize,
            "the other agent's own"
        );
        log.flush(true);
        let written = lines(&path);
        let summary = written.last().unwrap();
        assert_eq!(summary.count, Some(20_000 - u64::from(AUDIT_BURST)));
        assert_eq!(summary.agent.as_deref(), Some("a1"));
        assert!(
            summary.detail.contains("evil.example:19999"),
            "{}",
            summary.detail
        );
        assert!(std::fs::metadata(&path).unwrap().len() < 16 << 10);
    }

    /// A burst followed by silence: its summary is written once its window
    /// ends, without a flush and without another event (a long-lived
    /// service would otherwise hold the count until it exits).
    #[test]
    fn a_burst_s_summary_is_written_when_its_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::to_file(&path).unwrap();
        let started = std::time::Instant::now();
        for n in 0..AUDIT_BURST + 5 {
            let ev = AuditEvent::new(AuditKind::LimitHit, "limits", format!("n {n}")).about(
                Some("a1"),
                None,
                None,
            );
            log.record(&ev, true);
        }
        let counts = || -> Vec<Option<u64>> {
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().count)
                .collect()
        };
        assert_eq!(
            counts().len(),
            AUDIT_BURST as usize,
            "before the window ends"
        );
        while counts().len() == AUDIT_BURST as usize {
            assert!(
                started.elapsed() < AUDIT_WINDOW + std::time::Duration::from_secs(5),
                "no summary after the window"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(started.elapsed() >= AUDIT_WINDOW);
        assert_eq!(counts().last().copied().flatten(), Some(5));
        drop(log);
        assert_eq!(counts().len(), AUDIT_BURST as usize + 1, "written once");
    }

    /// Row 12: a name holding a right-to-left override or an escape
    /// sequence is written with them replaced, and long details are cut.
    #[test]
    fn events_carry_no_control_or_direction_characters() {
        let e = AuditEvent::new(
            AuditKind::EgressRefused,
            "network.allowed_destinations",
            "refused evil\u{202e}moc.example:443 \u{1b}[31mred",
        )
        .about(Some("a\u{2066}1"), None, None);
        assert!(!e.detail.contains('\u{202e}') && !e.detail.contains('\u{1b}'));
        assert!(e.detail.contains("evil\u{fffd}moc.example"), "{}", e.detail);
        assert_eq!(e.agent.as_deref(), Some("a\u{fffd}1"));
        let hidden = clean_text("a\u{200b}b\u{2028}c\u{e0041}d\u{feff}", 100);
        assert_eq!(hidden, "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}");
        let long = AuditEvent::new(AuditKind::Kill, "x", "y".repeat(5000));
        assert_eq!(long.detail.chars().count(), MAX_DETAIL_CHARS + 1);
    }

    /// A link where the log should be is refused, not followed (it could
    /// point root's appends at any file); the twin: the same path as a
    /// plain file opens.
    #[test]
    fn the_log_path_is_not_followed_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = AuditLog::to_file(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
        std::fs::remove_file(&link).unwrap();
        assert!(AuditLog::to_file(&link).is_ok());
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
