//! One remote request: a slot, the streamed HTTP request (retried before
//! the answer starts), its server-sent events read into the result.

use super::*;
use crate::models::{FinishReason, ToolCallDelta};

/// Most tool calls one answer may make.
const MAX_CALLS: usize = crate::models::MAX_TOOLS;

impl Inner {
    pub(super) fn count(&self, f: impl FnOnce(&mut RunnerMetrics)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) async fn run(
        &self,
        prompt: &str,
        options: ExecutionOptions,
        mut on_event: impl FnMut(StreamEvent) -> bool,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let started = Instant::now();
        let mut result = self
            .run_inner(prompt, options, &mut on_event, started)
            .await;
        self.count(|m| match &result {
            Ok(r) => {
                m.requests_ok += 1;
                m.input_tokens += u64::from(r.metadata.input_tokens.unwrap_or(0));
                m.cached_tokens += u64::from(r.metadata.cached_tokens.unwrap_or(0));
                m.output_tokens += u64::from(r.metadata.output_tokens.unwrap_or(0));
            }
            Err(SlmRunnerError::Overloaded { .. }) => m.requests_overloaded += 1,
            Err(_) => m.requests_failed += 1,
        });
        // The provider's prompt cache is shared by every agent that uses
        // this runner's key: its count would tell one agent what another
        // sent (issue 18, row 6). Dropped (after the runner's own count).
        if let Ok(r) = &mut result {
            r.metadata.cached_tokens = None;
        }
        result
    }

    pub(super) async fn run_inner(
        &self,
        prompt: &str,
        options: ExecutionOptions,
        on_event: &mut impl FnMut(StreamEvent) -> bool,
        started: Instant,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        options.validate()?;
        if options.prompt_mode != crate::models::PromptMode::Chat {
            return Err(SlmRunnerError::InvalidInput {
                field: "prompt_mode",
                reason: "a remote model answers chat messages only (no raw completion)".into(),
            });
        }
        let max = Duration::from_secs(self.profile.process_limits.max_execution_time_seconds);
        let limit = options.timeout.unwrap_or(max).min(max);
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = || SlmRunnerError::ExecutionTimeout {
            seconds: limit.as_secs_f64(),
        };
        let body = wire::body(self.api, &self.model_name, prompt, &options)?;
        let offered: Vec<String> = options
            .offered_tools()
            .iter()
            .map(|t| t.name.clone())
            .collect();

        // A slot, or a place in the bounded queue.
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
        if queued >= REMOTE_QUEUE && self.slots.available_permits() == 0 {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(SlmRunnerError::Overloaded {
                capacity: REMOTE_CONCURRENCY + REMOTE_QUEUE,
                queued,
                retry_after: Duration::from_secs(1),
            });
        }
        let waited = Instant::now();
        let permit = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = match permit {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(SlmRunnerError::ExecutionFailed {
                    reason: "the runner is closing".into(),
                })
            }
            Err(_) => return Err(timed_out()),
        };
        let wait_ms = waited.elapsed().as_secs_f64() * 1000.0;
        self.count(|m| {
            m.admitted += 1;
            m.queue_wait_ms_total += wait_ms;
            m.queue_wait_ms_max = m.queue_wait_ms_max.max(wait_ms);
        });

        let response = self.send(&body, deadline, &timed_out).await?;
        self.read(response, deadline, on_event, &offered, started, &timed_out)
            .await
    }

    /// Sends the request; retries what failed before an answer started
    /// (nothing of an answer was read, so nothing is repeated that was
    /// generated for this caller). A wait that would pass the deadline
    /// gives the failure that caused it, not a timeout.
    pub(super) async fn send(
        &self,
        body: &serde_json::Value,
        deadline: tokio::time::Instant,
        timed_out: &impl Fn() -> SlmRunnerError,
    ) -> Result<reqwest::Response, SlmRunnerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.client.post(self.url.clone()).json(body);
            for (k, v) in &self.headers {
                req = req.header(k, v.clone());
            }
            let last = attempt >= ATTEMPTS;
            let refused_before = self.refusals();
            let (error, wait) = match tokio::time::timeout_at(deadline, req.send()).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    let text = self.redact(&error_chain(&e));
                    // A CONNECT the egress proxy refused (the client sees
                    // only that the tunnel failed; the proxy counted it).
                    if e.is_connect() && self.refusals() > refused_before {
                        return Err(self.refused_by_proxy(&text));
                    }
                    let error = SlmRunnerError::ExecutionFailed {
                        reason: format!(
                            "model `{}`: cannot reach {}: {text}",
                            self.model_id, self.destination
                        ),
                    };
                    if last || !(e.is_connect() || e.is_timeout()) {
                        return Err(error);
                    }
                    (error, backoff(attempt, None))
                }
                Ok(Ok(r)) if r.status().is_success() => return Ok(r),
                Ok(Ok(r)) => {
                    let status = r.status().as_u16();
                    let egress = r
                        .headers()
                        .get("x-symbiont-egress")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(MAX_BACKOFF.as_secs_f64())));
                    let text = self.redact(&read_capped(r, deadline).await);
                    // Only the runner's own proxy says this (a destination
                    // reached without one could send the header too).
                    let egress = egress.filter(|_| self.egress.is_some());
                    let short: String = text.trim().chars().take(300).collect();
                    match egress.as_deref() {
                        // Our proxy refused (plain http://): a policy
                        // decision, not repeated.
                        Some("refused") => return Err(self.refused_by_proxy(&short)),
                        // Our proxy could not connect onwards: as a
                        // connection failure.
                        Some(_) if status == 502 => {
                            let error = SlmRunnerError::ExecutionFailed {
                                reason: format!(
                                    "model `{}`: cannot reach {}: {short}",
                                    self.model_id, self.destination
                                ),
                            };
                            if last {
                                return Err(error);
                            }
                            (error, backoff(attempt, None))
                        }
                        _ => {
                            let error = self.failure(status, &text);
                            let retryable =
                                matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529);
                            if last || !retryable {
                                return Err(error);
                            }
                            (error, backoff(attempt, after))
                        }
                    }
                }
            };
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Refusals the runner's egress proxy has made so far.
    pub(super) fn refusals(&self) -> u64 {
        self.egress
            .as_ref()
            .map_or(0, |e| e.stats.refused.load(Ordering::Relaxed))
    }

    /// `text` without the key, should a provider or a library quote it.
    pub(super) fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) if !k.0.is_empty() => text.replace(k.0.as_str(), "[key]"),
            _ => text.to_string(),
        }
    }

    pub(super) fn refused_by_proxy(&self, text: &str) -> SlmRunnerError {
        SlmRunnerError::SandboxViolation {
            control: "network.allowed_destinations".into(),
            detail: format!(
                "the egress proxy of profile `{}` refused model `{}`'s connection to {}: {text}",
                self.profile_name, self.model_id, self.destination
            ),
        }
    }

    /// The error an unsuccessful answer (`status`, its body `text`)
    /// becomes. A refused key is named by its variable only: the
    /// provider's words about it may quote the key, masked or not.
    pub(super) fn failure(&self, status: u16, text: &str) -> SlmRunnerError {
        let detail = match (status, &self.key_var) {
            (401 | 403, Some(var)) => format!("the endpoint refused the key in ${var}"),
            (401 | 403, None) => "the endpoint wants a key (set api_key_env)".to_string(),
            _ => self.redact(
                &serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("error").map(wire::error_text))
                    .unwrap_or_else(|| {
                        text.chars()
                            .take(300)
                            .collect::<String>()
                            .trim()
                            .to_string()
                    }),
            ),
        };
        SlmRunnerError::Remote {
            endpoint: self.url.to_string(),
            status,
            detail,
        }
    }

    pub(super) async fn read(
        &self,
        response: reqwest::Response,
        deadline: tokio::time::Instant,
        on_event: &mut impl FnMut(StreamEvent) -> bool,
        offered: &[String],
        started: Instant,
        timed_out: &impl Fn() -> SlmRunnerError,
    ) -> Result<ExecutionResult, SlmRunnerError> {
        let failed = |reason: String| SlmRunnerError::ExecutionFailed {
            reason: format!("model `{}` ({}): {reason}", self.model_id, self.destination),
        };
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut text = String::new();
        // The calls, and the provider's index of each (Anthropic's is its
        // content block's, after any text block): ours count the calls.
        let mut calls = Calls::default();
        let mut meta = ExecutionMetadata::default();
        let mut first: Option<Instant> = None;
        let mut bytes = 0usize;
        let mut done = false;
        let mut eof = false;
        while !done && !eof {
            let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
                Err(_) => return Err(timed_out()),
                // The end: a last event without its blank line still counts.
                Ok(None) => {
                    eof = true;
                    bytes::Bytes::from_static(b"\n\n")
                }
                Ok(Some(Err(e))) => {
                    return Err(failed(format!(
                        "the answer broke off: {}",
                        self.redact(&error_chain(&e))
                    )))
                }
                Ok(Some(Ok(c))) => c,
            };
            bytes += chunk.len();
            if bytes > MAX_STREAM_BYTES {
                return Err(failed(format!(
                    "the answer is longer than {MAX_STREAM_BYTES} bytes"
                )));
            }
            for (event, data) in parser.feed(&chunk).map_err(&failed)? {
                let d = wire::delta(self.api, event.as_deref(), &data)
                    .map_err(|e| failed(self.redact(&e)))?;
                let mut events = Vec::new();
                if let Some(t) = d.text {
                    text.push_str(&t);
                    events.push(StreamEvent::Token(t));
                }
                for c in d.calls {
                    events.push(StreamEvent::ToolCall(calls.take(c).map_err(&failed)?));
                }
                for e in events {
                    first.get_or_insert_with(Instant::now);
                    if !on_event(e) {
                        // The reader fell too far behind (or left):
                        // dropping the body closes the connection.
                        return Err(crate::models::stream::reader_behind());
                    }
                }
                if d.input_tokens.is_some() {
                    meta.input_tokens = d.input_tokens;
                }
                if d.cached_tokens.is_some() {
                    meta.cached_tokens = d.cached_tokens;
                }
                if d.output_tokens.is_some() {
                    meta.output_tokens = d.output_tokens;
                }
                if d.finish.is_some() {
                    meta.finish_reason = d.finish;
                }
                if d.stop_sequence.is_some() {
                    meta.stop_sequence = d.stop_sequence;
                }
                done |= d.done;
            }
        }
        if meta.finish_reason.is_none() && !done {
            return Err(failed("the answer ended before its end was sent".into()));
        }
        let end = Instant::now();
        meta.execution_time_ms = (end - started).as_secs_f64() * 1000.0;
        meta.time_to_first_token_ms = first.map(|f| (f - started).as_secs_f64() * 1000.0);
        if let (Some(f), Some(n)) = (first, meta.output_tokens) {
            let secs = (end - f).as_secs_f64();
            if n > 1 && secs > 0.0 {
                meta.generation_tokens_per_second = Some(f64::from(n - 1) / secs);
            }
        }
        meta.sandbox_layers = vec![match &self.egress {
            Some(_) => format!(
                "remote ({}): {} only through the egress proxy of profile `{}`",
                self.provider, self.destination, self.profile_name
            ),
            None => format!(
                "remote ({}): {} without restriction (access_mode = Full)",
                self.provider, self.destination
            ),
        }];
        let calls = calls.finish(offered).map_err(failed)?;
        // Calls are what the answer ends in, whatever the provider said.
        if !calls.is_empty() && meta.finish_reason == Some(FinishReason::Stop) {
            meta.finish_reason = Some(FinishReason::ToolCalls);
        }
        Ok(ExecutionResult {
            response: text,
            tool_calls: calls,
            metadata: meta,
        })
    }
}

/// The calls of an answer as their pieces come: the provider's index of
/// each (Anthropic's is its content block's, after any text block; some
/// OpenAI-compatible servers send none) mapped to ours, which count the
/// calls.
#[derive(Debug, Default)]
struct Calls {
    calls: Vec<ToolCall>,
    keys: std::collections::HashMap<u32, usize>,
}

impl Calls {
    /// Takes a piece; the piece with our index.
    fn take(&mut self, mut c: ToolCallDelta) -> Result<ToolCallDelta, String> {
        let known = match c.index {
            wire::NO_INDEX if c.name.is_none() && c.id.is_none() => self.calls.len().checked_sub(1),
            wire::NO_INDEX => None,
            k => self.keys.get(&k).copied(),
        };
        let index = match known {
            Some(i) => i,
            None => {
                if self.calls.len() >= MAX_CALLS {
                    return Err(format!("the answer makes more than {MAX_CALLS} tool calls"));
                }
                if c.index != wire::NO_INDEX {
                    self.keys.insert(c.index, self.calls.len());
                }
                self.calls.push(ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[index];
        if call.name.is_empty() {
            call.name = c.name.clone().unwrap_or_default();
        }
        if call.id.is_empty() {
            call.id = c.id.clone().unwrap_or_default();
        }
        call.arguments.push_str(&c.arguments);
        c.index = index as u32;
        Ok(c)
    }

    /// The whole calls: each to a function `offered`, each with an id
    /// (`call_N` where the provider gave none).
    fn finish(mut self, offered: &[String]) -> Result<Vec<ToolCall>, String> {
        for (i, c) in self.calls.iter_mut().enumerate() {
            if !offered.contains(&c.name) {
                return Err(format!(
                    "the answer calls {:?}, which is not one of the tools offered",
                    c.name
                ));
            }
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
        }
        Ok(self.calls)
    }
}

/// A reqwest error with its causes (never the request's headers).
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// At most [`MAX_ERROR_BYTES`] of an error answer, read until `deadline`
/// at the latest.
async fn read_capped(mut r: reqwest::Response, deadline: tokio::time::Instant) -> String {
    let mut out = Vec::new();
    while let Ok(Ok(Some(c))) = tokio::time::timeout_at(deadline, r.chunk()).await {
        out.extend_from_slice(&c);
        if out.len() >= MAX_ERROR_BYTES {
            out.truncate(MAX_ERROR_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn backoff(attempt: u32, after: Option<Duration>) -> Duration {
    after
        .unwrap_or_else(|| Duration::from_millis(500) * 2u32.pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(String::from),
            name: name.map(String::from),
            arguments: args.into(),
        }
    }

    /// Anthropic's block indexes after a text block, interleaved pieces, a
    /// server that sends no index, an id that comes late: each piece goes
    /// to its call, counted from 0.
    #[test]
    fn pieces_go_to_their_calls() {
        let offered = vec!["a".to_string(), "b".to_string()];
        let mut c = Calls::default();
        assert_eq!(
            c.take(piece(1, Some("t1"), Some("a"), "")).unwrap().index,
            0
        );
        assert_eq!(c.take(piece(2, None, Some("b"), "{")).unwrap().index, 1);
        assert_eq!(c.take(piece(1, None, None, "{}")).unwrap().index, 0);
        assert_eq!(c.take(piece(2, Some("t2"), None, "}")).unwrap().index, 1);
        assert_eq!(
            c.take(piece(wire::NO_INDEX, None, Some("a"), "{"))
                .unwrap()
                .index,
            2
        );
        assert_eq!(
            c.take(piece(wire::NO_INDEX, None, None, "}"))
                .unwrap()
                .index,
            2
        );
        let calls = c.finish(&offered).unwrap();
        let got: Vec<(&str, &str, &str)> = calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            got,
            [("t1", "a", "{}"), ("t2", "b", "{}"), ("call_2", "a", "{}")]
        );
        // A function not offered, and too many calls: refused.
        let mut c = Calls::default();
        c.take(piece(0, None, Some("rm_rf"), "{}")).unwrap();
        assert!(c.finish(&offered).unwrap_err().contains("rm_rf"));
        let mut c = Calls::default();
        for i in 0..MAX_CALLS as u32 {
            c.take(piece(i, None, Some("a"), "")).unwrap();
        }
        assert!(c
            .take(piece(MAX_CALLS as u32, None, Some("a"), ""))
            .is_err());
    }
}
