//! Standard output, where a reader that has what it wanted and closed
//! the pipe (`symbi-slm … | head -1`) ends the command quietly with exit
//! 0, as the documented exit codes promise, instead of a panic (exit
//! 101). Any other failure to write is said, and exit 1.

use std::io::Write;

/// Writes `args` to stdout and flushes.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        gone(&e);
    }
}

/// Ends the process for a failed write to stdout.
pub fn gone(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("symbi-slm: writing to stdout: {e}");
    std::process::exit(1);
}

/// `println!` to stdout through [`write`].
macro_rules! out {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout through [`write`].
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, out_raw};

/// Whether the log is JSON (`--log-format json`): then what the service
/// says on stderr goes through the log too, so that every line of stderr
/// is one JSON object.
static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the log's format (once, in `main`).
pub fn set_log_json(on: bool) {
    LOG_JSON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A line for the operator on stderr: as it is, or with a JSON log as a
/// log event (`warn` when `warning`), never both.
pub fn note(warning: bool, line: &str) {
    if LOG_JSON.load(std::sync::atomic::Ordering::Relaxed) {
        if warning {
            tracing::warn!(target: "symbi_slm", "{line}");
        } else {
            tracing::info!(target: "symbi_slm", "{line}");
        }
    } else {
        eprintln!("{line}");
    }
}
