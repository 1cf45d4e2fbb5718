//! A request as a stream that owns it.
//!
//! Every runner answers with a stream that ends with `Done` or an error,
//! and dropping it cancels the request; [`collect`] is `execute`: the same
//! stream, read to its end. Every producer of a request's events hands
//! them on without waiting for the reader, and cancels a request whose
//! reader is [`REQUEST_EVENTS`] behind.
//!
//! A local request ([`RequestStream`]): the stream holds the request's
//! future and polls it from its own `poll_next`, on the caller's task (the
//! worker's driver, a task of the runner, enforces the deadline and the
//! slot); the text waits in the stream until the caller takes it, and
//! dropping the stream drops the request, which tells its worker within
//! one decode step. A remote request runs in a task of its own instead
//! (`RemoteRunner`), which hands its text on through a bounded channel:
//! its deadline and its connection slot must not wait for a reader that
//! stopped reading; dropping the stream closes its connection. An
//! embedder's runner in a pool ([`owned`]) is read the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::{
    ExecutionOptions, ExecutionResult, ResourceLimit, SlmRunner, SlmRunnerError, StreamEvent,
};

/// Events a request's reader may leave unread. Past that the request is
/// cancelled (a reader that far behind must not keep a slot that other
/// requests need, nor the request past its deadline) and ends with
/// [`ResourceLimit::StreamBuffer`]: whoever produces a request's events
/// (a local worker's driver, a remote request's task) never waits for its
/// reader. One more place is kept for the request's last event.
pub(crate) const REQUEST_EVENTS: usize = 256;

/// What a reader that fell too far behind gets.
pub(crate) fn reader_behind() -> SlmRunnerError {
    SlmRunnerError::ResourceLimitExceeded {
        limit: ResourceLimit::StreamBuffer,
        detail: format!(
            "the reader left {REQUEST_EVENTS} events unread; the request was cancelled"
        ),
    }
}

type Request = Pin<Box<dyn Future<Output = Result<ExecutionResult, SlmRunnerError>> + Send>>;

/// Where a running request leaves its text for the stream's reader.
#[derive(Debug, Clone, Default)]
pub(crate) struct TextSink(Arc<Mutex<VecDeque<StreamEvent>>>);

impl TextSink {
    /// Hands a piece of text on.
    #[cfg(test)]
    pub(crate) fn push(&self, text: String) {
        self.push_event(StreamEvent::Token(text));
    }

    /// Hands an event on (text, or a piece of a tool call).
    pub(crate) fn push_event(&self, event: StreamEvent) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(event);
    }

    fn pop(&self) -> Option<StreamEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

/// A request and the text it produced that was not read yet. The request
/// is polled only when that text has all been read, so what waits here is
/// at most what one poll of it brings (for a local runner, no more than
/// its bounded event channel holds); a reader that stops reading stops
/// the request's progress, and the runner's own limits take over (a local
/// runner cancels a request whose events its reader leaves unread).
pub(crate) struct RequestStream {
    request: Option<Request>,
    text: TextSink,
    end: Option<Result<ExecutionResult, SlmRunnerError>>,
}

impl std::fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream")
            .field("running", &self.request.is_some())
            .finish_non_exhaustive()
    }
}

impl RequestStream {
    /// The stream of the request `start` makes, given the sink its text
    /// goes to.
    pub(crate) fn new<F, Fut>(start: F) -> Self
    where
        F: FnOnce(TextSink) -> Fut,
        Fut: Future<Output = Result<ExecutionResult, SlmRunnerError>> + Send + 'static,
    {
        let text = TextSink::default();
        Self {
            request: Some(Box::pin(start(text.clone()))),
            text,
            end: None,
        }
    }
}

impl Stream for RequestStream {
    type Item = Result<StreamEvent, SlmRunnerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // The request moves on only when its text has been read: what
        // waits here is at most what one poll of it produced.
        if let Some(event) = this.text.pop() {
            return Poll::Ready(Some(Ok(event)));
        }
        if let Some(request) = this.request.as_mut() {
            if let Poll::Ready(end) = request.as_mut().poll(cx) {
                this.request = None;
                this.end = Some(end);
            }
        }
        // Text first, then the end: the result comes after every piece.
        if let Some(event) = this.text.pop() {
            return Poll::Ready(Some(Ok(event)));
        }
        match this.end.take() {
            Some(end) => Poll::Ready(Some(end.map(|r| StreamEvent::Done(Box::new(r))))),
            None if this.request.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// The stream of a runner that the stream must not borrow (an embedder's
/// `Arc<dyn SlmRunner>`): read in a task of its own that hands its events
/// over a bounded channel. A reader [`REQUEST_EVENTS`] behind ends the
/// request with [`reader_behind`]; a reader gone drops the runner's
/// stream, which cancels its request. Past `time_limit` the request ends
/// with `ExecutionTimeout`; a stream that ends without a result, or a
/// runner that panics, with `ExecutionFailed`: the reader always hears
/// how it ended.
pub(crate) fn owned(
    runner: Arc<dyn SlmRunner>,
    prompt: &str,
    options: Option<ExecutionOptions>,
    time_limit: std::time::Duration,
) -> BoxStream<'static, Result<StreamEvent, SlmRunnerError>> {
    use futures::FutureExt;
    let (tx, rx) = tokio::sync::mpsc::channel(REQUEST_EVENTS + 1);
    let prompt = prompt.to_string();
    crate::audit::spawn_in_request(async move {
        // What to tell the reader at the end, if the runner did not.
        let run = async {
            let mut events = runner.execute_stream(&prompt, options);
            loop {
                tokio::select! {
                    event = events.next() => {
                        let Some(event) = event else {
                            return Some(SlmRunnerError::ExecutionFailed {
                                reason: "the runner's stream ended without a result".into(),
                            });
                        };
                        let last = !matches!(event, Ok(StreamEvent::Token(_)));
                        // One place stays free for the end.
                        if !last && tx.capacity() <= 1 {
                            return Some(reader_behind());
                        }
                        if tx.try_send(event).is_err() || last {
                            return None;
                        }
                    }
                    () = tx.closed() => return None,
                }
            }
        };
        let end = match tokio::time::timeout(
            time_limit,
            std::panic::AssertUnwindSafe(run).catch_unwind(),
        )
        .await
        {
            Ok(Ok(end)) => end,
            Ok(Err(_)) => Some(SlmRunnerError::ExecutionFailed {
                reason: "the runner panicked".into(),
            }),
            Err(_) => Some(SlmRunnerError::ExecutionTimeout {
                seconds: time_limit.as_secs_f64(),
            }),
        };
        if let Some(e) = end {
            let _ = tx.try_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Reads a request's stream to its end: the result, or the error.
pub(crate) async fn collect(
    mut events: impl Stream<Item = Result<StreamEvent, SlmRunnerError>> + Unpin,
) -> Result<ExecutionResult, SlmRunnerError> {
    while let Some(event) = events.next().await {
        if let StreamEvent::Done(r) = event? {
            return Ok(*r);
        }
    }
    Err(SlmRunnerError::ExecutionFailed {
        reason: "the answer ended without a result".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn done(text: &str) -> ExecutionResult {
        ExecutionResult {
            response: text.into(),
            tool_calls: vec![],
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn text_comes_in_order_then_the_result() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(4);
        let events = RequestStream::new(|sink| async move {
            let mut all = String::new();
            while let Some(t) = rx.recv().await {
                sink.push(t.to_string());
                all.push_str(t);
            }
            Ok(done(&all))
        });
        let reader = tokio::spawn(events.collect::<Vec<_>>());
        for t in ["a", "b", "c"] {
            tx.send(t).await.unwrap();
        }
        drop(tx);
        let got: Vec<_> = reader
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            [
                StreamEvent::Token("a".into()),
                StreamEvent::Token("b".into()),
                StreamEvent::Token("c".into()),
                StreamEvent::Done(Box::new(done("abc"))),
            ]
        );
    }

    /// Dropping the stream drops the request (its guards run) at once.
    #[tokio::test]
    async fn dropping_the_stream_drops_the_request() {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let mut events = RequestStream::new(|sink| async move {
            let _guard = Guard(flag);
            sink.push("first".into());
            std::future::pending::<()>().await;
            Ok(done(""))
        });
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            StreamEvent::Token("first".into())
        );
        assert!(!dropped.load(Ordering::SeqCst));
        drop(events);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_and_collect_returns_it() {
        let events = RequestStream::new(|sink| async move {
            sink.push("partial".into());
            Err(SlmRunnerError::ExecutionTimeout { seconds: 1.0 })
        });
        let mut events = events;
        assert_eq!(
            events.next().await.unwrap().unwrap(),
            StreamEvent::Token("partial".into()),
            "the text comes before the error"
        );
        let e = events.next().await.unwrap().unwrap_err();
        assert!(matches!(e, SlmRunnerError::ExecutionTimeout { .. }), "{e}");
        assert!(events.next().await.is_none(), "the stream ends after it");
        let failing = RequestStream::new(|sink| async move {
            sink.push("partial".into());
            Err(SlmRunnerError::ExecutionTimeout { seconds: 1.0 })
        });
        let e = collect(failing).await.unwrap_err();
        assert!(matches!(e, SlmRunnerError::ExecutionTimeout { .. }), "{e}");
        let ok = collect(RequestStream::new(|_| async { Ok(done("x")) })).await;
        assert_eq!(ok.unwrap().response, "x");
    }

    /// A runner for `owned`: `n` pieces of text at once, then (`end`) a
    /// result, nothing, a panic, or a wait that never ends.
    struct Scripted {
        n: usize,
        end: &'static str,
    }

    #[async_trait::async_trait]
    impl SlmRunner for Scripted {
        async fn execute(
            &self,
            _prompt: &str,
            _options: Option<ExecutionOptions>,
        ) -> Result<ExecutionResult, SlmRunnerError> {
            unreachable!("owned reads the stream")
        }

        fn execute_stream<'a>(
            &'a self,
            _prompt: &'a str,
            _options: Option<ExecutionOptions>,
        ) -> BoxStream<'a, Result<StreamEvent, SlmRunnerError>> {
            let text =
                futures::stream::iter((0..self.n).map(|_| Ok(StreamEvent::Token("x".into()))));
            let end = self.end;
            let end = futures::stream::once(async move {
                match end {
                    "result" => Some(Ok(StreamEvent::Done(Box::new(done("x"))))),
                    "panic" => panic!("a runner that panics"),
                    "hang" => std::future::pending().await,
                    _ => None,
                }
            })
            .filter_map(std::future::ready);
            text.chain(end).boxed()
        }

        fn get_sandbox_profile(&self) -> &crate::config::SandboxProfile {
            unreachable!()
        }

        fn get_resource_requirements(&self) -> &crate::config::ModelResourceRequirements {
            unreachable!()
        }

        async fn health_check(&self) -> Result<(), SlmRunnerError> {
            Ok(())
        }

        fn get_info(&self) -> crate::models::RunnerInfo {
            unreachable!()
        }
    }

    /// What the reader of `owned` gets, read only once the runner's task
    /// is idle (paused time advances only then).
    async fn owned_events(n: usize, end: &'static str) -> Vec<Result<StreamEvent, SlmRunnerError>> {
        let events = owned(
            Arc::new(Scripted { n, end }),
            "hi",
            None,
            std::time::Duration::from_secs(30),
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        events.collect().await
    }

    #[tokio::test(start_paused = true)]
    async fn an_owned_stream_always_tells_how_it_ended() {
        let all = owned_events(3, "result").await;
        assert_eq!(all.len(), 4);
        assert!(matches!(all[3], Ok(StreamEvent::Done(_))), "{all:?}");
        for (end, what) in [("nothing", "ended without a result"), ("panic", "panicked")] {
            let all = owned_events(3, end).await;
            assert_eq!(all.len(), 4, "{end}");
            match &all[3] {
                Err(SlmRunnerError::ExecutionFailed { reason }) => {
                    assert!(reason.contains(what), "{end}: {reason}")
                }
                other => panic!("{end}: {other:?}"),
            }
        }
        // Past its time limit: stopped, and said so.
        let all = owned_events(1, "hang").await;
        assert!(
            matches!(all[..], [Ok(StreamEvent::Token(_)), Err(SlmRunnerError::ExecutionTimeout { seconds })] if seconds == 30.0),
            "{all:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_owned_stream_whose_reader_falls_behind_ends() {
        // Read nothing while the runner makes 1,000 pieces: the reader
        // gets the 256 that fit, then the limit.
        let all = owned_events(1000, "result").await;
        assert_eq!(all.len(), REQUEST_EVENTS + 1, "{:?}", all.last());
        assert!(all[..REQUEST_EVENTS]
            .iter()
            .all(|e| matches!(e, Ok(StreamEvent::Token(_)))));
        assert!(matches!(
            all[REQUEST_EVENTS],
            Err(SlmRunnerError::ResourceLimitExceeded {
                limit: ResourceLimit::StreamBuffer,
                ..
            })
        ));
        // The twin: an answer that fits in the buffer arrives whole.
        let all = owned_events(200, "result").await;
        assert_eq!(all.len(), 201);
        assert!(matches!(all[200], Ok(StreamEvent::Done(_))));
    }
}
