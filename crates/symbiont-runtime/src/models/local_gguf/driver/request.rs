//! A request the worker runs, as the driver follows it: how far it is,
//! whether and why it was cancelled.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::queue::SlotPermit;
use super::{tell_end, Audit, Event};

/// A request the worker runs.
pub(super) struct Active {
    pub(super) events: mpsc::Sender<Event>,
    pub(super) permit: SlotPermit,
    pub(super) deadline: Instant,
    pub(super) max_tokens: usize,
    /// How far the worker's frames show it.
    pub(super) progress: Progress,
    /// The cancel sent, if one was.
    pub(super) cancelled: Option<Cancelled>,
    pub(super) frames: usize,
    pub(super) bytes: usize,
    /// Whether anything reached the caller.
    pub(super) received: bool,
    /// An embedding request: one `Embedding`, no text.
    pub(super) embed: bool,
    /// The functions it offers the model.
    pub(super) tools: Vec<String>,
    /// Whether several calls may come.
    pub(super) parallel: bool,
    /// Tool calls begun.
    pub(super) calls: u32,
    pub(super) caller: super::Caller,
    /// Its share of the worker's cache, from `PromptRead` on.
    pub(super) cache: Option<super::super::metrics::CacheHold>,
}

/// How far a running request is, as the worker's frames show it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Progress {
    /// Sent; its prompt is being read.
    Sent,
    /// The prompt is read (`PromptRead`): when, and the tokens decoded
    /// (those not found in the cache).
    PromptRead { at: Instant, decoded: u32 },
    /// Generating: the last token's time.
    Generating { last_token_at: Instant },
}

/// A cancel the driver sent for a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cancelled {
    /// When.
    pub(super) at: Instant,
    /// How long the worker has to answer.
    pub(super) grace: Duration,
    pub(super) why: CancelWhy,
}

/// Why the driver cancelled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelWhy {
    /// Its caller went away (the stream dropped).
    Caller,
    /// Its deadline passed.
    Deadline,
    /// Its reader left [`REQUEST_EVENTS`](crate::models::stream::REQUEST_EVENTS) events unread.
    ReaderBehind,
}

impl Active {
    /// Why it was cancelled, if it was.
    pub(super) fn cancelled_for(&self) -> Option<CancelWhy> {
        self.cancelled.map(|c| c.why)
    }

    /// Whether its deadline stopped it.
    pub(super) fn timed_out(&self) -> bool {
        self.cancelled_for() == Some(CancelWhy::Deadline)
    }

    /// Tells the request how it ended (see [`tell_end`]).
    pub(super) fn end(&self, audit: &Audit, end: Event) {
        tell_end(audit, &self.caller, &self.events, end);
    }
}
