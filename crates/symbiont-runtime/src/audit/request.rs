//! The request an audit event belongs to: a task-local id, set by the
//! service around each request's future and its answer's stream, read by
//! [`super::AuditEvent::new`] wherever in the pool the event is made.

use std::sync::Arc;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `fut` as the request `id`: audit events made while it runs carry
/// the id.
pub async fn in_request<F: std::future::Future>(id: Arc<str>, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// `stream`, each poll of it as the request `id` (a response's stream is
/// polled after its handler's future has returned, outside
/// [`in_request`]).
pub fn stream_in_request<S>(id: Arc<str>, stream: S) -> impl futures::Stream<Item = S::Item> + Send
where
    S: futures::Stream + Send + 'static,
{
    let mut stream = Box::pin(stream);
    futures::stream::poll_fn(move |cx| {
        REQUEST_ID.sync_scope(id.clone(), || stream.as_mut().poll_next(cx))
    })
}

/// `tokio::spawn(fut)`, the task under the current request's id (if
/// any): a task does not inherit it otherwise.
pub fn spawn_in_request<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current_request_id() {
        Some(id) => tokio::spawn(REQUEST_ID.scope(id, fut)),
        None => tokio::spawn(fut),
    }
}

/// Runs `f` as the request `id` (when there is one): for code that
/// learns the id from the request it handles rather than from the task
/// it runs in (a worker's driver serves many requests).
pub fn with_request_id<R>(id: Option<Arc<str>>, f: impl FnOnce() -> R) -> R {
    match id {
        Some(id) => REQUEST_ID.sync_scope(id, f),
        None => f(),
    }
}

/// The id of the request being handled here, if any.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}
