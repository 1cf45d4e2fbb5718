//! Several requests in one llama.cpp context (continuous batching).
//!
//! Each request runs in a slot: a sequence of the context, at most
//! `context_size` tokens long. The sequences share one KV cache of
//! `cache_tokens` tokens (llama.cpp's unified cache; a KV stream each when
//! the cache holds a context per slot, see `Engine::shared_cache`): a
//! request reserves
//! `min(prompt + max_tokens, context_size)` tokens of it when it starts,
//! so it never runs out mid-answer, and many short requests fit where few
//! long ones do. A request that does not fit beside the running ones
//! waits in the worker until they end (the next to start is the oldest
//! request of the agent that runs the fewest); the cached
//! prefixes of idle slots are dropped for it first, least recently used
//! first. Every decode step carries one token for
//! each generating slot plus a chunk of the prompts still being read, so a
//! request joins at the next step and a long prompt does not stall the
//! others (while any slot generates, a step reads at most
//! [`PREFILL_CHUNK_WHILE_GENERATING`] tokens of each prompt: prompts that
//! arrive together are read together). A finished, cancelled
//! or failed request frees its slot at once.
//!
//! A slot keeps the tokens of its last request in its cache. A new request
//! goes to the free slot whose cache shares the longest prefix with its
//! prompt (the least recently used one on a tie), and only the rest of the
//! prompt is decoded: the same instructions in front of every prompt, or a
//! growing chat, are read once. With a KV stream per slot, the requests
//! that start together take the lowest free slots instead (llama.cpp
//! decodes in one pass only sequences of consecutive ids; slots that hold
//! no other agent's prefix first), each the one of those that holds the
//! longest prefix of its prompt, and a longer prefix held by another idle
//! slot is copied into it, stream to stream ([`choice`]). Only a request of the same agent (its
//! `cache_key`) reuses a slot's cache: another agent's prompt is never
//! served from it, so neither `cached_tokens` nor the time to the first
//! token tells one agent what another asked.
//!
//! Sampling, stop sequences, limits and the deadline stay per request: each
//! slot has its own sampler chain (and seed).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use symbiont_slm_protocol::{
    Constraint, Finish, FromWorker, GenerateRequest, GenerationStats, RequestError, ToWorker,
    MAX_EMBED_TOKENS,
};

use crate::constraint::Guided;
use crate::engine::{sample_constrained, Engine, Sink};
use crate::output::{Output, Pushed};

mod choice;
use choice::Free;

/// Most tokens of one prompt a decode step carries while a slot is
/// generating: a generated token then waits for at most this many tokens
/// of each prompt being read (about 0.15 s for one prompt, with the
/// default model on 2 cores) instead of a whole batch.
pub const PREFILL_CHUNK_WHILE_GENERATING: usize = 64;

/// One sequence of the context.
struct Slot {
    /// The sequence id.
    seq: i32,
    /// The tokens whose keys and values are in this sequence's cache, at
    /// positions `0..cache.len()`.
    cache: Vec<LlamaToken>,
    /// When the slot was last freed (a counter), for the least recently used
    /// choice.
    freed_at: u64,
    /// The cache key of the request whose tokens `cache` holds: only a
    /// request of the same key reuses them.
    owner: u64,
    active: Option<Active>,
}

/// The request a slot runs.
struct Active {
    id: u64,
    max_tokens: u32,
    /// Tokens of the shared cache this request may fill (its prompt and
    /// answer, at most the context), held until it ends.
    reserved: usize,
    started: Instant,
    deadline: Instant,
    /// The whole prompt; `cache.len() < prompt.len()` while it is read.
    prompt: Vec<LlamaToken>,
    cached_tokens: u32,
    sampler: LlamaSampler,
    /// The output constraint's matcher, if the request has one (with
    /// `auto` tools, from a call's opening marker on).
    grammar: Option<Guided>,
    output: Output,
    output_tokens: u32,
    prompt_done_at: Option<Instant>,
    first_token_at: Option<Instant>,
    /// The last sampled token, decoded in the next step.
    next: Option<LlamaToken>,
    /// Where this slot's logits are in the batch just decoded.
    logits: Option<i32>,
}

/// A request tokenized and waiting for room in the cache (or a slot).
struct Waiting {
    req: GenerateRequest,
    tokens: Vec<LlamaToken>,
    grammar: Option<Matcher>,
    started: Instant,
}

/// What [`Slots::commands`] says the loop should do.
enum Control {
    Go,
    Exit,
}

/// The slots of one context and the decode loop over them.
#[allow(missing_debug_implementations)] // llama-cpp-2's handles have no Debug
pub struct Slots<'e, 'm> {
    engine: &'e Engine,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Tokens one sequence may hold.
    per_slot: usize,
    /// Tokens the sequences hold together.
    cache_tokens: usize,
    /// Requests waiting for room, oldest first.
    waiting: VecDeque<Waiting>,
    clock: u64,
    /// The embedding context, made on the first embedding request.
    embed_ctx: Option<LlamaContext<'m>>,
    /// Why it could not be made, if it could not.
    embed_failed: Option<String>,
}

impl<'e, 'm> Slots<'e, 'm>
where
    'e: 'm,
{
    /// `count` slots over `ctx`, each sequence at most `per_slot` tokens,
    /// all of them together at most `cache_tokens` (at least `per_slot`).
    pub fn new(
        engine: &'e Engine,
        ctx: LlamaContext<'m>,
        count: u32,
        per_slot: u32,
        cache_tokens: u32,
    ) -> Self {
        let n_batch = (ctx.n_batch() as usize).max(1);
        let count = count.max(1);
        Self {
            engine,
            ctx,
            slots: (0..count as i32)
                .map(|seq| Slot {
                    seq,
                    cache: Vec::new(),
                    freed_at: 0,
                    owner: 0,
                    active: None,
                })
                .collect(),
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            per_slot: per_slot as usize,
            cache_tokens: cache_tokens.max(per_slot) as usize,
            waiting: VecDeque::new(),
            clock: 0,
            embed_ctx: None,
            embed_failed: None,
        }
    }

    /// Serves requests until `Shutdown` or the supervisor hangs up.
    pub fn serve(&mut self, rx: &Receiver<ToWorker>, out: &mut impl Sink) {
        loop {
            if let Control::Exit = self.commands(rx, out) {
                return;
            }
            self.step(out);
        }
    }

    fn busy(&self) -> bool {
        self.slots.iter().any(|s| s.active.is_some()) || !self.waiting.is_empty()
    }

    /// Takes the commands that arrived: waits for one while no slot is
    /// busy, else only drains what is there.
    fn commands(&mut self, rx: &Receiver<ToWorker>, out: &mut impl Sink) -> Control {
        let mut first = None;
        if !self.busy() {
            match rx.recv() {
                Ok(m) => first = Some(m),
                Err(_) => return Control::Exit,
            }
        }
        // New requests are admitted (tokenized, their constraints compiled)
        // after every message waiting now was read: a cancel or a ping is
        // never held up behind another request's compile.
        let mut arrived: Vec<GenerateRequest> = Vec::new();
        loop {
            let msg = match first.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => {
                        for req in arrived {
                            self.queue(&req, out);
                        }
                        // Started together: with a KV stream per slot,
                        // requests arriving together each find their own
                        // stream among the slots they take.
                        self.admit_waiting(out);
                        return Control::Go;
                    }
                    // The supervisor is gone: nobody to answer.
                    Err(TryRecvError::Disconnected) => return Control::Exit,
                },
            };
            match msg {
                ToWorker::Generate(req) => arrived.push(req),
                ToWorker::Cancel { id } => {
                    if let Some(k) = arrived.iter().position(|r| r.id == id) {
                        let req = arrived.remove(k);
                        end_unstarted(
                            out,
                            &Waiting {
                                req,
                                tokens: Vec::new(),
                                grammar: None,
                                started: Instant::now(),
                            },
                            Finish::Cancelled,
                        );
                    } else if let Some(i) = self.slot_of(id) {
                        self.finish(i, Finish::Cancelled, None, out);
                        self.admit_waiting(out);
                    } else if let Some(w) = self.waiting.iter().position(|w| w.req.id == id) {
                        if let Some(w) = self.waiting.remove(w) {
                            end_unstarted(out, &w, Finish::Cancelled);
                        }
                    }
                }
                ToWorker::Ping { nonce } => out.send(&FromWorker::Pong { nonce }),
                ToWorker::Shutdown => {
                    for req in std::mem::take(&mut arrived) {
                        let w = Waiting {
                            req,
                            tokens: Vec::new(),
                            grammar: None,
                            started: Instant::now(),
                        };
                        end_unstarted(out, &w, Finish::Cancelled);
                    }
                    for w in std::mem::take(&mut self.waiting) {
                        end_unstarted(out, &w, Finish::Cancelled);
                    }
                    for i in 0..self.slots.len() {
                        if self.slots[i].active.is_some() {
                            self.finish(i, Finish::Cancelled, None, out);
                        }
                    }
                    return Control::Exit;
                }
                ToWorker::Launch(_) => {
                    eprintln!("symbi-slm-worker: ignoring a launch after start-up")
                }
                #[cfg(feature = "probe")]
                ToWorker::Probe { .. } => {
                    eprintln!("symbi-slm-worker: ignoring a probe after start-up")
                }
            }
        }
    }

    fn slot_of(&self, id: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.active.as_ref().is_some_and(|a| a.id == id))
    }

    /// Tokenizes a request (refusing one that cannot fit a context) and
    /// queues it behind those already waiting ([`Self::admit_waiting`]
    /// starts it when it fits).
    fn queue(&mut self, req: &GenerateRequest, out: &mut impl Sink) {
        if req.embed {
            return self.embed(req, out);
        }
        let started = Instant::now();
        let fail = |out: &mut dyn FnMut(&FromWorker), error| {
            out(&FromWorker::Failed { id: req.id, error })
        };
        let mut send = |m: &FromWorker| out.send(m);
        let tokens = match self.engine.prompt_tokens(req) {
            Ok(t) => t,
            Err(error) => return fail(&mut send, error),
        };
        let input_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        let refusal = if tokens.is_empty() {
            Some(RequestError::BadRequest {
                detail: "the prompt has no tokens".into(),
            })
        } else if tokens.len() >= self.per_slot {
            Some(RequestError::PromptTooLong {
                tokens: input_tokens,
                context_size: self.per_slot as u32,
            })
        } else if self.waiting.len() + self.slots.iter().filter(|s| s.active.is_some()).count()
            >= self.slots.len()
        {
            // The supervisor sends at most one request per slot.
            Some(RequestError::SlotsFull {
                slots: self.slots.len() as u32,
            })
        } else {
            None
        };
        if let Some(error) = refusal {
            return fail(&mut send, error);
        }
        // Compiled now, between two decode steps, before the request waits
        // or starts: a constraint that cannot be compiled costs no token.
        let constraint = match crate::tools::constraint(req, self.engine.tool_format()) {
            Ok(c) => c,
            Err(error) => return fail(&mut send, error),
        };
        let grammar = match constraint.as_ref().map(|c| self.engine.compile(c)) {
            None => None,
            Some(Ok(m)) => Some(m),
            Some(Err(error)) => return fail(&mut send, error),
        };
        self.waiting.push_back(Waiting {
            req: req.clone(),
            tokens,
            grammar,
            started,
        });
    }

    /// Starts the waiting requests that fit now, fairly between agents:
    /// the next is the oldest request of the agent (`cache_key`) that runs
    /// the fewest now. When it does not fit, those behind it wait too (a
    /// long request is not passed over for ever by short ones).
    fn admit_waiting(&mut self, out: &mut impl Sink) {
        while self.start_next(out) {}
    }

    /// The waiting request to start next (see [`Self::admit_waiting`]).
    fn next_waiting(&self) -> Option<usize> {
        let running = |key: u64| {
            self.slots
                .iter()
                .filter(|s| s.owner == key && s.active.is_some())
                .count()
        };
        (0..self.waiting.len()).min_by_key(|&i| (running(self.waiting[i].req.cache_key), i))
    }

    /// Gives the next waiting request the free slot that already holds
    /// the longest prefix of its prompt (else an empty one, else the least
    /// recently used), if its reservation fits the cache (dropping idle
    /// slots' prefixes, least recently used first, to make room); whether
    /// it started.
    fn start_next(&mut self, out: &mut impl Sink) -> bool {
        let Some(next) = self.next_waiting() else {
            return false;
        };
        let w = &self.waiting[next];
        let tokens = &w.tokens;
        let key = w.req.cache_key;
        let shared = self.engine.shared_cache();
        let free: Vec<Free> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_none())
            .map(|i| {
                let s = &self.slots[i];
                Free {
                    index: i,
                    prefix: own_prefix(s, key, tokens),
                    foreign: s.owner != key && !s.cache.is_empty(),
                    empty: s.cache.is_empty(),
                    freed_at: s.freed_at,
                }
            })
            .collect();
        let free = if shared {
            choice::shared_slot(&free)
        } else {
            // In stream mode every slot's reservation fits the cache: all
            // the waiting requests that find a free slot start now.
            choice::stream_slot(&free, self.waiting.len())
        };
        let Some(index) = free else {
            return false;
        };
        let need = tokens
            .len()
            .saturating_add(w.req.max_tokens as usize)
            .min(self.per_slot);
        let running: usize = self
            .slots
            .iter()
            .filter_map(|s| s.active.as_ref().map(|a| a.reserved))
            .sum();
        if running + need > self.cache_tokens {
            return false;
        }
        // Room from the idle slots' prefixes, least recently used first.
        let mut idle: Vec<usize> = (0..self.slots.len())
            .filter(|&i| i != index && self.slots[i].active.is_none())
            .filter(|&i| !self.slots[i].cache.is_empty())
            .collect();
        idle.sort_by_key(|&i| self.slots[i].freed_at);
        let mut held: usize = running
            + idle
                .iter()
                .map(|&i| self.slots[i].cache.len())
                .sum::<usize>();
        for i in idle {
            if held + need <= self.cache_tokens {
                break;
            }
            let seq = self.slots[i].seq as u32;
            let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
            held -= self.slots[i].cache.len();
            self.slots[i].cache.clear();
        }
        if !shared {
            self.copy_prefix(index, next);
        }
        let tokens = &self.waiting[next].tokens;
        let slot = &mut self.slots[index];
        // At least the prompt's last token is decoded again: its logits
        // give the first generated token.
        let mut reuse = own_prefix(slot, key, tokens).min(tokens.len() - 1);
        slot.owner = key;
        // A cache that no longer holds the sequence from position 0 (a
        // sliding-window model drops what falls out of its window) cannot
        // serve a prefix: start over.
        if reuse > 0 && self.ctx.kv_cache_seq_pos_min(slot.seq) > 0 {
            reuse = 0;
        }
        if reuse < slot.cache.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq as u32), Some(reuse as u32), None)
                .unwrap_or(false);
            if !removed {
                // A model whose cache cannot drop a suffix starts over.
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                reuse = 0;
            }
            slot.cache.truncate(reuse);
        }
        let Some(Waiting {
            req,
            tokens,
            mut grammar,
            started,
        }) = self.waiting.remove(next)
        else {
            return false;
        };
        let output = Output::new(
            req.id,
            &req.stop,
            req.tools.as_ref(),
            self.engine.tool_format(),
            &mut grammar,
        );
        out.send(&FromWorker::PromptRead {
            id: req.id,
            input_tokens: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            cached_tokens: reuse as u32,
        });
        slot.active = Some(Active {
            id: req.id,
            max_tokens: req.max_tokens,
            reserved: need,
            started,
            deadline: started + Duration::from_millis(req.timeout_ms),
            prompt: tokens,
            cached_tokens: reuse as u32,
            sampler: self.engine.sampler(&req),
            grammar: grammar.map(|m| {
                let json = req.tools.is_some()
                    || matches!(
                        req.constraint,
                        Some(Constraint::JsonObject | Constraint::JsonSchema { .. })
                    );
                Guided::new(m, json).with_unique_items(req.constraint.as_ref())
            }),
            output,
            output_tokens: 0,
            prompt_done_at: None,
            first_token_at: None,
            next: None,
            logits: None,
        });
        true
    }

    /// An embedding request, answered at once between two decode steps
    /// (the input is read in one batch of at most [`MAX_EMBED_TOKENS`]):
    /// `Embedding`, then `Done`; generation in the slots waits that long.
    fn embed(&mut self, req: &GenerateRequest, out: &mut impl Sink) {
        let started = Instant::now();
        let fail = |out: &mut dyn FnMut(&FromWorker), error| {
            out(&FromWorker::Failed { id: req.id, error })
        };
        let mut send = |m: &FromWorker| out.send(m);
        let tokens = match self.engine.prompt_tokens(req) {
            Ok(t) => t,
            Err(error) => return fail(&mut send, error),
        };
        let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if tokens.is_empty() {
            let detail = "the input has no tokens".into();
            return fail(&mut send, RequestError::BadRequest { detail });
        }
        if n > MAX_EMBED_TOKENS {
            return fail(
                &mut send,
                RequestError::PromptTooLong {
                    tokens: n,
                    context_size: MAX_EMBED_TOKENS,
                },
            );
        }
        if let Some(detail) = &self.embed_failed {
            // Not tried again: each try is a large allocation.
            let detail = detail.clone();
            return fail(&mut send, RequestError::Decode { detail });
        }
        if self.embed_ctx.is_none() {
            match self.engine.new_embedding_context() {
                Ok(c) => self.embed_ctx = Some(c),
                Err((_, detail)) => {
                    let detail = format!("creating the embedding context: {detail}");
                    self.embed_failed = Some(detail.clone());
                    return fail(&mut send, RequestError::Decode { detail });
                }
            }
        }
        let Some(ctx) = self.embed_ctx.as_mut() else {
            return;
        };
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        for (pos, &t) in tokens.iter().enumerate() {
            if batch.add(t, pos as i32, &[0], true).is_err() {
                let detail = "the input does not fit its batch".into();
                return fail(&mut send, RequestError::Decode { detail });
            }
        }
        if let Err(e) = ctx.decode(&mut batch) {
            let detail = format!("decoding the input: {e}");
            return fail(&mut send, RequestError::Decode { detail });
        }
        let mut vector = match ctx.embeddings_seq_ith(0) {
            Ok(v) => v.to_vec(),
            Err(e) => {
                let detail = format!("reading the embedding: {e}");
                return fail(&mut send, RequestError::Decode { detail });
            }
        };
        ctx.clear_kv_cache();
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            // An input that overflows the model's arithmetic: this request
            // fails, the worker goes on.
            let detail = format!("the embedding has no finite direction (norm {norm})");
            return fail(&mut send, RequestError::Decode { detail });
        }
        vector.iter_mut().for_each(|x| *x /= norm);
        send(&FromWorker::Embedding { id: req.id, vector });
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        let stats = GenerationStats {
            input_tokens: n,
            output_tokens: 0,
            prompt_ms: total_ms,
            generation_ms: 0.0,
            total_ms,
            cached_tokens: 0,
            finish: Finish::EndOfText,
            stop_sequence: None,
            steered_tokens: None,
        };
        send(&FromWorker::Done { id: req.id, stats });
    }

    /// With a KV stream per slot: when an idle slot holds a longer prefix
    /// of waiting request `next`'s prompt (for its agent) than slot `dst`
    /// does (by at least [`choice::STREAM_COPY_MIN`] tokens), copies that slot's stream into `dst`
    /// (llama.cpp copies the whole stream's buffers before the next
    /// decode).
    fn copy_prefix(&mut self, dst: usize, next: usize) {
        let (key, tokens) = (self.waiting[next].req.cache_key, &self.waiting[next].tokens);
        let here = own_prefix(&self.slots[dst], key, tokens);
        let idle = (0..self.slots.len())
            .filter(|&i| i != dst && self.slots[i].active.is_none())
            .map(|i| (i, own_prefix(&self.slots[i], key, tokens)));
        let Some(src) = choice::copy_source(here, idle) else {
            return;
        };
        let (s, d) = (self.slots[src].seq, self.slots[dst].seq);
        let _ = self.ctx.clear_kv_cache_seq(Some(d as u32), None, None);
        self.slots[dst].cache.clear();
        // Whole streams only (llama.cpp asserts so for a copy between
        // streams). A memory that does not copy (a layer sharing another's
        // cells) leaves the destination empty: checked, then read again.
        let copied = self.ctx.copy_kv_cache_seq(s, d, None, None).is_ok()
            && self.ctx.kv_cache_seq_pos_max(d) + 1 == self.slots[src].cache.len() as i32;
        if copied {
            self.slots[dst].cache = self.slots[src].cache.clone();
            self.slots[dst].owner = key;
        } else {
            let _ = self.ctx.clear_kv_cache_seq(Some(d as u32), None, None);
        }
    }

    /// One decode step over every busy slot.
    fn step(&mut self, out: &mut impl Sink) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| now >= a.deadline)
            {
                self.finish(i, Finish::Timeout, None, out);
            }
        }
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now >= w.started + Duration::from_millis(w.req.timeout_ms));
        self.waiting = waiting.into();
        for w in &expired {
            end_unstarted(out, w, Finish::Timeout);
        }
        self.admit_waiting(out);
        self.batch.clear();
        // One token for each generating slot, then a chunk of the prompts
        // being read, oldest request first.
        let generating = self
            .slots
            .iter()
            .filter(|s| s.active.as_ref().is_some_and(|a| a.next.is_some()))
            .count();
        let mut budget = self.n_batch.saturating_sub(generating);
        // While any slot generates, each prompt adds at most a chunk per
        // step: a long one does not stall the others, and many short ones
        // (requests arriving together) are all read in one step.
        let per_prompt = if generating > 0 {
            PREFILL_CHUNK_WHILE_GENERATING
        } else {
            usize::MAX
        };
        let mut reading: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.active
                    .as_ref()
                    .is_some_and(|a| s.cache.len() < a.prompt.len())
            })
            .collect();
        reading.sort_by_key(|&i| self.slots[i].active.as_ref().map(|a| a.started));
        let mut chunk = vec![0usize; self.slots.len()];
        for i in reading {
            let s = &self.slots[i];
            let left = s.active.as_ref().map_or(0, |a| a.prompt.len()) - s.cache.len();
            chunk[i] = left.min(budget).min(per_prompt);
            budget -= chunk[i];
        }
        // Into the batch in sequence order: llama.cpp splits a batch over
        // KV streams into passes of consecutive sequence ids, taken in the
        // batch's order.
        let mut in_batch: Vec<usize> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if let Some(token) = a.next.take() {
                let pos = slot.cache.len() as i32;
                if self.batch.add(token, pos, &[slot.seq], true).is_err() {
                    // The batch holds n_batch tokens and there are fewer
                    // slots; not reached.
                    a.next = Some(token);
                    continue;
                }
                slot.cache.push(token);
                a.logits = Some(self.batch.n_tokens() - 1);
                in_batch.push(i);
                continue;
            }
            if chunk[i] == 0 {
                continue;
            }
            let from = slot.cache.len();
            for pos in from..from + chunk[i] {
                let last = pos + 1 == a.prompt.len();
                if self
                    .batch
                    .add(a.prompt[pos], pos as i32, &[slot.seq], last)
                    .is_err()
                {
                    break;
                }
                slot.cache.push(a.prompt[pos]);
                if last {
                    a.logits = Some(self.batch.n_tokens() - 1);
                }
            }
            in_batch.push(i);
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            let detail = e.to_string();
            for i in in_batch {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(self.slots[i].seq as u32), None, None);
                self.slots[i].cache.clear();
                self.fail(
                    i,
                    RequestError::Decode {
                        detail: detail.clone(),
                    },
                    out,
                );
            }
            return;
        }
        for i in in_batch {
            self.sample(i, out);
        }
    }

    /// Samples the next token of slot `i` if its logits are in the batch
    /// just decoded, and streams it.
    fn sample(&mut self, i: usize, out: &mut impl Sink) {
        let per_slot = self.per_slot;
        let engine = self.engine;
        let vocab = engine.model().vocab();
        let slot = &mut self.slots[i];
        let cache_len = slot.cache.len();
        let Some(a) = slot.active.as_mut() else {
            return;
        };
        let Some(index) = a.logits.take() else {
            return;
        };
        a.prompt_done_at.get_or_insert_with(Instant::now);
        if a.output_tokens >= a.max_tokens {
            let finish = budget_spent(a);
            return self.finish(i, finish, None, out);
        }
        if cache_len >= per_slot {
            return self.finish(i, Finish::ContextFull, None, out);
        }
        // `sample` accepts the token into the chain itself (llama.cpp's
        // `llama_sampler_sample`): accepting it again would count it twice
        // in the penalties' window (and, for a grammar, advance it twice).
        let token = match a.grammar.as_mut() {
            None => a.sampler.sample(&self.ctx, index),
            Some(g) => match sample_constrained(
                engine,
                &self.ctx,
                index,
                &mut a.sampler,
                g,
                // Tokens left: the budget, or the context if it ends first.
                (a.max_tokens - a.output_tokens)
                    .min(u32::try_from(per_slot.saturating_sub(cache_len)).unwrap_or(u32::MAX)),
            ) {
                Ok(token) => token,
                Err(error) => return self.fail(i, error, out),
            },
        };
        if vocab.is_eog(token) {
            return self.finish(i, Finish::EndOfText, None, out);
        }
        a.output_tokens += 1;
        a.first_token_at.get_or_insert_with(Instant::now);
        // A control token's text is shown only for the call marker.
        let special = self.engine.tool_marker() == Some(token);
        match a
            .output
            .push(&vocab.token_to_piece(token, special, None), out)
        {
            Pushed::Go => {}
            Pushed::Stop(stop) => return self.finish(i, Finish::StopSequence, Some(stop), out),
            // The call grammar from the marker on; what the token wrote
            // after it is the call's first text.
            Pushed::Armed { matcher, rest } => {
                match crate::tools::arm(matcher, self.engine.tool_format(), &rest) {
                    Ok(g) => a.grammar = Some(g),
                    Err(error) => return self.fail(i, error, out),
                }
            }
        }
        // A constraint that is complete allows only the end: no step is
        // spent on sampling it.
        if a.grammar.as_ref().is_some_and(|g| g.matcher.is_stopped()) {
            return self.finish(i, Finish::EndOfText, None, out);
        }
        if a.output_tokens >= a.max_tokens {
            let finish = budget_spent(a);
            return self.finish(i, finish, None, out);
        }
        a.next = Some(token);
    }

    /// Ends the request in slot `i` with `Done`; the slot keeps its cache.
    fn finish(&mut self, i: usize, finish: Finish, stop: Option<String>, out: &mut impl Sink) {
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.freed_at = self.clock;
        let Some(mut a) = slot.active.take() else {
            return;
        };
        // A token sampled but never decoded is not in the cache.
        let mut stop_sequence = stop;
        if stop_sequence.is_none() {
            stop_sequence = a.output.finish(out);
        }
        // Whole calls end the answer as calls (the grammar ended them, the
        // model did, or the budget came right after).
        let finish = match finish {
            Finish::EndOfText | Finish::MaxTokens if a.output.calls_whole() => Finish::ToolCalls,
            f => f,
        };
        let now = Instant::now();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total_ms = ms(now - a.started);
        let stats = GenerationStats {
            input_tokens: a.prompt.len() as u32,
            output_tokens: a.output_tokens,
            prompt_ms: a.prompt_done_at.map_or(total_ms, |t| ms(t - a.started)),
            generation_ms: a.first_token_at.map_or(0.0, |t| ms(now - t)),
            total_ms,
            finish: if stop_sequence.is_some() {
                Finish::StopSequence
            } else {
                finish
            },
            stop_sequence,
            cached_tokens: a.cached_tokens,
            steered_tokens: a.grammar.as_ref().map(Guided::steered),
        };
        out.send(&FromWorker::Done { id: a.id, stats });
    }

    /// Ends the request in slot `i` with `Failed`.
    fn fail(&mut self, i: usize, error: RequestError, out: &mut impl Sink) {
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.freed_at = self.clock;
        if let Some(a) = slot.active.take() {
            out.send(&FromWorker::Failed { id: a.id, error });
        }
    }
}

/// How much of `tokens` the slot's cache holds for a request of `key`:
/// nothing when its tokens are another agent's.
fn own_prefix(slot: &Slot, key: u64, tokens: &[LlamaToken]) -> usize {
    if slot.owner == key {
        common_prefix(&slot.cache, tokens)
    } else {
        0
    }
}

/// How an answer that spent its `max_tokens` ends: as a whole text when
/// its constraint accepts it (the closing policy ended it in time), else
/// cut.
fn budget_spent(a: &mut Active) -> Finish {
    let Some(g) = a.grammar.as_mut() else {
        return Finish::MaxTokens;
    };
    // Whole: nothing more may follow, or the policy closed it (a regex or
    // a number that merely could end here was cut).
    let whole =
        g.matcher.is_stopped() || (g.was_steered() && g.matcher.is_accepting().unwrap_or(false));
    if whole {
        Finish::EndOfText
    } else {
        Finish::MaxTokens
    }
}

/// How many tokens two sequences share at their start.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Ends a request that never started (cancelled or past its deadline
/// while it waited for room): `Done` with no tokens.
fn end_unstarted(out: &mut impl Sink, w: &Waiting, finish: Finish) {
    let total_ms = w.started.elapsed().as_secs_f64() * 1e3;
    let stats = GenerationStats {
        // None of them was read.
        input_tokens: 0,
        output_tokens: 0,
        prompt_ms: total_ms,
        generation_ms: 0.0,
        total_ms,
        cached_tokens: 0,
        finish,
        stop_sequence: None,
        steered_tokens: None,
    };
    out.send(&FromWorker::Done {
        id: w.req.id,
        stats,
    });
}
