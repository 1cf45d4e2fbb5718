//! The worker's output, read frame by frame by whoever waits for its next
//! event: no task and no channel in between.

use symbiont_slm_protocol::{decode, frame_len, FrameError, FromWorker};
use tokio::io::AsyncReadExt;

use super::worker::MAX_FRAME_FROM_WORKER;

/// Why the worker's output stopped yielding messages.
#[derive(Debug, Clone)]
pub(super) enum OutputEnd {
    /// Closed, or a read failed: the worker is dead or dying.
    Lost(String),
    /// It sent what the protocol refuses (a frame too large or
    /// malformed): its own doing, whatever it exits with.
    Violation(String),
}

/// Reads the worker's frames. Cancel-safe: a wait for the next frame
/// that is dropped (a deadline, a command first) loses nothing, since
/// bytes are kept here as they arrive and only whole frames leave.
#[derive(Debug)]
pub(super) struct FrameReader {
    out: tokio::process::ChildStdout,
    buf: Vec<u8>,
    /// Where the unread bytes start in `buf` (frames are taken from the
    /// front without moving the rest; the buffer is compacted before a
    /// read).
    at: usize,
    /// The output ended or broke the protocol: said once, then again.
    ended: Option<OutputEnd>,
}

impl FrameReader {
    pub(super) fn new(out: tokio::process::ChildStdout) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(64 * 1024),
            at: 0,
            ended: None,
        }
    }

    /// The next whole frame, decoded.
    pub(super) async fn next(&mut self) -> Result<FromWorker, OutputEnd> {
        loop {
            if let Some(end) = &self.ended {
                return Err(end.clone());
            }
            match self.frame() {
                Ok(Some(msg)) => return Ok(msg),
                Ok(None) => {}
                Err(end) => {
                    self.ended = Some(end.clone());
                    return Err(end);
                }
            }
            // What was taken goes; room for one read more.
            self.buf.drain(..self.at);
            self.at = 0;
            self.buf.reserve(16 * 1024);
            match self.out.read_buf(&mut self.buf).await {
                // The end, even inside a frame: a worker killed while it
                // wrote (the OOM killer, SIGKILL) is a loss that its exit
                // status explains, not a violation.
                Ok(0) => {
                    self.ended = Some(OutputEnd::Lost("worker output closed".into()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.ended = Some(OutputEnd::Lost(format!("reading from the worker: {e}")));
                }
            }
        }
    }

    /// A whole frame from the front of the buffer, if one is there.
    fn frame(&mut self) -> Result<Option<FromWorker>, OutputEnd> {
        let unread = &self.buf[self.at..];
        let Some(prefix) = unread.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = match frame_len(*prefix) {
            Ok(len) => len,
            Err(FrameError::TooLarge(n)) => n as usize,
            Err(e) => return Err(OutputEnd::Violation(e.to_string())),
        };
        if len > MAX_FRAME_FROM_WORKER {
            return Err(OutputEnd::Violation(format!(
                "a frame of {len} bytes, more than the {MAX_FRAME_FROM_WORKER} a worker may send"
            )));
        }
        if unread.len() < 4 + len {
            return Ok(None);
        }
        let msg = decode::<FromWorker>(&unread[4..4 + len])
            .map_err(|e| OutputEnd::Violation(e.to_string()));
        self.at += 4 + len;
        msg.map(Some)
    }
}
