//! The worker's events, checked against what the protocol allows for the
//! requests it runs, and handed on to them.

use super::*;

impl Driver {
    pub(super) async fn event(&mut self, next: Next) -> Result<(), End> {
        let msg = match next {
            Next::Event(msg) => msg,
            Next::Lost(why) => return Err(End::Lost(why)),
            // A frame the reader refused (too large, malformed) is the
            // worker's doing: named so, whatever it exits with.
            Next::Violation(why) => {
                return Err(End::Violation { why, culprit: None });
            }
            Next::Deadline => return self.deadlines().await,
        };
        let violation = |why: String, culprit: Option<u64>| Err(End::Violation { why, culprit });
        match msg {
            FromWorker::PromptRead {
                id,
                input_tokens,
                cached_tokens,
            } => {
                let Some(a) = self.active.get_mut(&id) else {
                    return violation(stray(&msg), None);
                };
                if !matches!(a.progress, Progress::Sent) || a.frames > 0 {
                    return violation(format!("a second prompt_read for request {id}"), Some(id));
                }
                // The tokens it decodes: those not found in the cache.
                let decoded = input_tokens.saturating_sub(cached_tokens);
                a.progress = Progress::PromptRead {
                    at: Instant::now(),
                    decoded,
                };
                a.received = true;
                // What the worker reserved for it in the shared cache.
                let context = self.settings.context_size.min(self.w.facts.context_size) as usize;
                let reserved = (input_tokens as usize)
                    .saturating_add(a.max_tokens)
                    .min(context);
                a.cache = Some(self.settings.counters.hold_cache(reserved as u64));
                let _ = a.events.try_send(Event::PromptRead);
                // An honest worker never starts more than its cache holds.
                let held: u64 = self
                    .active
                    .values()
                    .filter_map(|a| a.cache.as_ref().map(|c| c.tokens()))
                    .sum();
                if held > u64::from(self.settings.cache_tokens) {
                    let why = format!(
                        "requests started holding {held} tokens of a cache of {}",
                        self.settings.cache_tokens
                    );
                    return violation(why, Some(id));
                }
                Ok(())
            }
            FromWorker::Token { id, .. } | FromWorker::ToolCall { id, .. } => {
                let Some(a) = self.active.get_mut(&id) else {
                    return violation(stray(&msg), None);
                };
                if a.embed {
                    return violation(format!("text for embedding request {id}"), Some(id));
                }
                let (text, event) = match msg {
                    // Text never follows a call (the calls end the answer).
                    FromWorker::Token { .. } if a.calls > 0 => {
                        return violation(
                            format!("text after a tool call of request {id}"),
                            Some(id),
                        );
                    }
                    FromWorker::Token { text, .. } => (text.clone(), Event::Token(text)),
                    FromWorker::ToolCall {
                        index,
                        name,
                        arguments,
                        ..
                    } => {
                        // A named piece opens the next call, to a function
                        // offered; the others extend the last call.
                        let ok = match &name {
                            Some(n) => {
                                index == a.calls
                                    && a.tools.contains(n)
                                    && (a.parallel || a.calls == 0)
                            }
                            None => a.calls > 0 && index + 1 == a.calls,
                        };
                        if !ok {
                            let why = format!(
                                "a tool call piece out of order or to a function not offered (call {index}, {} begun, name {name:?})",
                                a.calls
                            );
                            return violation(why, Some(id));
                        }
                        if name.is_some() {
                            a.calls += 1;
                        }
                        let text = format!("{}{arguments}", name.as_deref().unwrap_or(""));
                        (
                            text,
                            Event::ToolCall {
                                index,
                                name,
                                arguments,
                            },
                        )
                    }
                    _ => unreachable!("matched above"),
                };
                // What an honest worker can send for a request, at most: no
                // more pieces than it or the context allows, each small.
                // A token may end one call's arguments and open the next
                // call (a named piece and an argument piece): at most three
                // pieces a token.
                let tokens = a.max_tokens.min(self.settings.context_size as usize);
                let frame_cap = if a.tools.is_empty() {
                    tokens + 2
                } else {
                    3 * tokens + 2
                };
                a.frames += 1;
                a.bytes += text.len();
                if a.frames > frame_cap
                    || text.len() > worker::MAX_PIECE_BYTES
                    || a.bytes > frame_cap * worker::MAX_PIECE_BYTES
                {
                    let why = format!(
                        "more text than max_tokens = {} allows ({} pieces, {} bytes)",
                        a.max_tokens, a.frames, a.bytes
                    );
                    return violation(why, Some(id));
                }
                let now = Instant::now();
                match a.progress {
                    Progress::Generating { last_token_at } => {
                        self.w.observe_token(now - last_token_at)
                    }
                    // The first token: the whole prompt (and one sampling
                    // step, counted with it).
                    Progress::PromptRead { at, decoded } => {
                        self.w.observe_prompt(now - at, decoded)
                    }
                    Progress::Sent => {}
                }
                a.progress = Progress::Generating { last_token_at: now };
                a.received = true;
                if a.cancelled.is_some() {
                    // Text the worker made before it read the cancel.
                    return Ok(());
                }
                // One place stays free for the request's last event.
                if a.events.capacity() <= 1 {
                    return self.cancel(id, CancelWhy::ReaderBehind).await;
                }
                if a.events.try_send(event).is_err() {
                    // Nobody follows it any more.
                    return self.cancel(id, CancelWhy::Caller).await;
                }
                Ok(())
            }
            FromWorker::Embedding { id, vector } => {
                let size = self.w.facts.embedding_size as usize;
                let Some(a) = self.active.get_mut(&id) else {
                    return violation(
                        format!("an embedding for request {id}, which is not running"),
                        None,
                    );
                };
                // Exactly one, of the model's size, finite, for a request
                // that asked for it.
                if !a.embed
                    || a.frames > 0
                    || vector.len() != size
                    || vector.iter().any(|x| !x.is_finite())
                {
                    let why = format!(
                        "an embedding of {} numbers for request {id} (expected one of {size} finite numbers, for an embedding request)",
                        vector.len()
                    );
                    return violation(why, Some(id));
                }
                a.frames += 1;
                a.received = true;
                let _ = a.events.try_send(Event::Embedding(vector));
                Ok(())
            }
            FromWorker::Done { id, stats } => {
                let Some(a) = self.active.remove(&id) else {
                    return violation(format!("done for request {id}, which is not running"), None);
                };
                if a.embed && a.frames == 0 && a.cancelled.is_none() {
                    self.active.insert(id, a);
                    return violation(
                        format!("done without an embedding for request {id}"),
                        Some(id),
                    );
                }
                if stats.output_tokens as usize > a.max_tokens {
                    let why = format!(
                        "{} tokens reported for max_tokens = {}",
                        stats.output_tokens, a.max_tokens
                    );
                    self.active.insert(id, a);
                    return violation(why, Some(id));
                }
                if stats.finish == Finish::ToolCalls && a.calls == 0 {
                    self.active.insert(id, a);
                    return violation(
                        format!("tool_calls reported without a call for request {id}"),
                        Some(id),
                    );
                }
                self.settings.crashes.reset();
                // Stopped for a caller that went away (or fell behind).
                let for_caller = a.cancelled.is_some() && !a.timed_out();
                if for_caller && stats.finish == Finish::Cancelled {
                    self.settings.counters.cancelled();
                }
                let peak_rss = self.w.peak_rss_bytes();
                if let Some(bytes) = peak_rss {
                    self.settings.counters.peak(bytes);
                }
                let event = match a.cancelled_for() {
                    Some(CancelWhy::Deadline) => Event::Timeout,
                    Some(CancelWhy::ReaderBehind) => Event::Failed(reader_behind()),
                    Some(CancelWhy::Caller) | None => Event::Done { stats, peak_rss },
                };
                // The slot is free before the caller hears of the end.
                drop(a.permit);
                tell_end(&self.settings.audit, &a.caller, &a.events, event);
                Ok(())
            }
            FromWorker::Failed { id, error } => {
                let Some(a) = self.active.remove(&id) else {
                    return violation(
                        format!("failed for request {id}, which is not running"),
                        None,
                    );
                };
                let why = a.cancelled_for();
                drop(a.permit);
                let end = match why {
                    Some(CancelWhy::Deadline) => Event::Timeout,
                    Some(CancelWhy::ReaderBehind) => Event::Failed(reader_behind()),
                    Some(CancelWhy::Caller) | None => {
                        Event::Failed(super::super::metadata::map_request_error(error))
                    }
                };
                tell_end(&self.settings.audit, &a.caller, &a.events, end);
                Ok(())
            }
            FromWorker::Pong { nonce } => {
                let Some(at) = self.pings.iter().position(|p| p.0 == nonce) else {
                    return violation(format!("a pong for nonce {nonce}, never sent"), None);
                };
                let (_, _, reply) = self.pings.swap_remove(at);
                let _ = reply.send(Ok(()));
                Ok(())
            }
            other => violation(stray(&other), None),
        }
    }
}

/// A message for no running request, described.
fn stray(msg: &FromWorker) -> String {
    format!(
        "a message for no running request: {}",
        worker::describe(msg)
    )
}
