//! The model and its decode loop: one request at a time, streaming tokens,
//! checking for a cancel between decode steps.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use symbiont_slm_protocol::{
    Applied, Finish, FromWorker, GenerateRequest, GenerationStats, LaunchSpec, LoadStage,
    ModelFacts, RequestError, ToWorker, PROTOCOL_VERSION,
};

use crate::template::render_chat;
use crate::text::{Matched, StopMatcher, Utf8Stream};

/// Where the engine's messages go: the protocol pipe in the worker, or a
/// closure in an in-process benchmark.
pub trait Sink {
    /// Delivers one message.
    fn send(&mut self, msg: &FromWorker);
}

impl<F: FnMut(&FromWorker)> Sink for F {
    fn send(&mut self, msg: &FromWorker) {
        self(msg)
    }
}

/// The loaded model; contexts borrow it.
#[allow(missing_debug_implementations)] // llama-cpp-2's handles have no Debug
pub struct Engine {
    backend: LlamaBackend,
    model: LlamaModel,
    facts: ModelFacts,
    spec: LaunchSpec,
    chat_template: Option<String>,
}

/// Which load step failed, and what it said.
pub type LoadError = (LoadStage, String);

impl Engine {
    /// Initializes llama.cpp, loads the model from `model_file` (memory-mapped;
    /// the worker passes `/proc/self/fd/3`, the descriptor the supervisor
    /// opened and checked, and the in-process benchmark the model's path)
    /// and checks that a context can be created.
    pub fn load(
        spec: &LaunchSpec,
        model_file: &std::path::Path,
        sandbox: Applied,
    ) -> Result<Self, LoadError> {
        let started = Instant::now();
        let backend = LlamaBackend::init().map_err(|e| (LoadStage::Backend, e.to_string()))?;
        // Memory-mapped (the default): the weights are shared, read-only
        // pages of the file.
        let params = LlamaModelParams::default();
        let model = LlamaModel::load_from_file(&backend, model_file, &params)
            .map_err(|e| (LoadStage::Model, e.to_string()))?;
        let trained = model.n_ctx_train();
        let chat_template = model
            .meta_val_str("tokenizer.chat_template")
            .ok()
            .filter(|t| !t.trim().is_empty());
        let facts = ModelFacts {
            protocol_version: PROTOCOL_VERSION,
            worker_version: env!("CARGO_PKG_VERSION").to_string(),
            architecture: model.meta_val_str("general.architecture").ok(),
            name: model.meta_val_str("general.name").ok(),
            parameters: model.n_params(),
            size_bytes: model.size(),
            trained_context: trained,
            context_size: spec.context_size.min(trained.max(1)),
            vocab_size: u32::try_from(model.n_vocab()).unwrap_or(0),
            chat_template: chat_template.is_some(),
            threads: spec.threads,
            load_ms: 0.0,
            sandbox,
        };
        let mut engine = Self {
            backend,
            model,
            facts,
            spec: spec.clone(),
            chat_template,
        };
        // Create the context once now so that a context that cannot be
        // allocated fails the load, not the first request.
        engine.new_context()?;
        engine.facts.load_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(engine)
    }

    /// What was loaded.
    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// A fresh inference context.
    pub fn new_context(&self) -> Result<LlamaContext<'_>, LoadError> {
        let threads = i32::try_from(self.spec.threads.max(1)).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.facts.context_size))
            .with_n_batch(self.spec.batch_size.max(1))
            .with_n_ubatch(self.spec.batch_size.max(1))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        self.model
            .new_context(&self.backend, params)
            .map_err(|e| (LoadStage::Context, e.to_string()))
    }

    /// Serves requests until `Shutdown` or the supervisor hangs up.
    pub fn serve(&self, rx: &Receiver<ToWorker>, out: &mut impl Sink) {
        let mut ctx = match self.new_context() {
            Ok(ctx) => ctx,
            Err((_, detail)) => {
                eprintln!("symbi-slm-worker: context: {detail}");
                std::process::exit(2);
            }
        };
        let mut queued: VecDeque<ToWorker> = VecDeque::new();
        loop {
            let msg = match queued.pop_front() {
                Some(m) => m,
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            match msg {
                ToWorker::Generate(req) => {
                    let id = req.id;
                    match self.generate(&mut ctx, &req, rx, out, &mut queued) {
                        Ok(stats) => out.send(&FromWorker::Done { id, stats }),
                        Err(error) => out.send(&FromWorker::Failed { id, error }),
                    }
                    ctx.clear_kv_cache();
                }
                ToWorker::Ping { nonce } => out.send(&FromWorker::Pong { nonce }),
                ToWorker::Shutdown => return,
                // A cancel for a request that already ended.
                ToWorker::Cancel { .. } => {}
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

    fn prompt_tokens(&self, req: &GenerateRequest) -> Result<Vec<LlamaToken>, RequestError> {
        let vocab = self.model.vocab();
        let text = match (&self.chat_template, req.chat) {
            (Some(template), true) => {
                let piece = |t: LlamaToken| {
                    String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
                };
                let messages: Vec<(&str, &str)> = req
                    .history
                    .iter()
                    .map(|m| (m.role.as_str(), m.content.as_str()))
                    .chain(std::iter::once(("user", req.prompt.as_str())))
                    .collect();
                render_chat(
                    template,
                    &messages,
                    &piece(vocab.bos()),
                    &piece(vocab.eos()),
                )
                .map_err(|detail| RequestError::Template { detail })?
            }
            _ => req.prompt.clone(),
        };
        // add_special: BOS only if the model's vocabulary asks for it;
        // parse_special: the template's control tokens are real tokens, but a
        // raw prompt's text stays text.
        Ok(vocab.tokenize(
            text.as_bytes(),
            true,
            req.chat && self.chat_template.is_some(),
        ))
    }

    /// Runs one request on `ctx`, streaming through `out`; commands that
    /// arrive meanwhile are handled (ping, cancel) or queued.
    pub fn generate(
        &self,
        ctx: &mut LlamaContext<'_>,
        req: &GenerateRequest,
        rx: &Receiver<ToWorker>,
        out: &mut impl Sink,
        queued: &mut VecDeque<ToWorker>,
    ) -> Result<GenerationStats, RequestError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(req.timeout_ms);
        let tokens = self.prompt_tokens(req)?;
        let n_ctx = ctx.n_ctx();
        let input_tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if tokens.is_empty() {
            return Err(RequestError::BadRequest {
                detail: "the prompt has no tokens".into(),
            });
        }
        if input_tokens >= n_ctx {
            return Err(RequestError::PromptTooLong {
                tokens: input_tokens,
                context_size: n_ctx,
            });
        }
        out.send(&FromWorker::PromptRead {
            id: req.id,
            input_tokens,
        });

        // Read the prompt in batches; only the last token needs logits. A
        // cancel or the deadline is looked for between two batches, as
        // between two generated tokens.
        let n_batch = ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(n_batch.max(1), 1);
        let last = tokens.len() - 1;
        for (chunk_index, chunk) in tokens.chunks(n_batch.max(1)).enumerate() {
            let stop = check_commands(req.id, rx, out, queued)
                .or_else(|| (Instant::now() >= deadline).then_some(Finish::Timeout));
            if let Some(finish) = stop {
                let total_ms = started.elapsed().as_secs_f64() * 1e3;
                return Ok(GenerationStats {
                    input_tokens,
                    output_tokens: 0,
                    prompt_ms: total_ms,
                    generation_ms: 0.0,
                    total_ms,
                    finish,
                    stop_sequence: None,
                });
            }
            batch.clear();
            for (j, &tok) in chunk.iter().enumerate() {
                let pos = chunk_index * n_batch + j;
                batch.add(tok, pos as i32, &[0], pos == last).map_err(|e| {
                    RequestError::Decode {
                        detail: e.to_string(),
                    }
                })?;
            }
            ctx.decode(&mut batch).map_err(|e| RequestError::Decode {
                detail: e.to_string(),
            })?;
        }
        let prompt_ms = started.elapsed().as_secs_f64() * 1e3;

        let mut sampler = self.sampler(req);
        let vocab = self.model.vocab();
        let mut utf8 = Utf8Stream::default();
        let mut stops = StopMatcher::new(&req.stop);
        let mut pos = tokens.len();
        let mut output_tokens = 0u32;
        let mut first_token_at: Option<Instant> = None;
        let mut stop_sequence = None;
        let mut logits_index = batch.n_tokens() - 1;
        let finish = loop {
            if let Some(f) = check_commands(req.id, rx, out, queued) {
                break f;
            }
            if Instant::now() >= deadline {
                break Finish::Timeout;
            }
            if output_tokens >= req.max_tokens {
                break Finish::MaxTokens;
            }
            if pos as u32 >= n_ctx {
                break Finish::ContextFull;
            }
            let token = sampler.sample(ctx, logits_index);
            sampler.accept(token);
            if vocab.is_eog(token) {
                break Finish::EndOfText;
            }
            output_tokens += 1;
            first_token_at.get_or_insert_with(Instant::now);
            let text = utf8.push(&vocab.token_to_piece(token, false, None));
            match stops.push(&text) {
                Matched::Continue(t) => emit(out, req.id, t),
                Matched::Stop { text, stop } => {
                    emit(out, req.id, text);
                    stop_sequence = Some(stop);
                    break Finish::StopSequence;
                }
            }
            if output_tokens >= req.max_tokens {
                break Finish::MaxTokens;
            }
            batch.clear();
            batch
                .add(token, pos as i32, &[0], true)
                .map_err(|e| RequestError::Decode {
                    detail: e.to_string(),
                })?;
            ctx.decode(&mut batch).map_err(|e| RequestError::Decode {
                detail: e.to_string(),
            })?;
            logits_index = 0;
            pos += 1;
        };
        if stop_sequence.is_none() {
            let tail = utf8.finish();
            let mut rest = match stops.push(&tail) {
                Matched::Continue(t) => t,
                Matched::Stop { text, stop } => {
                    stop_sequence = Some(stop);
                    text
                }
            };
            if stop_sequence.is_none() {
                rest.push_str(&stops.finish());
            }
            emit(out, req.id, rest);
        }
        let generation_ms = first_token_at
            .map(|t| t.elapsed().as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        Ok(GenerationStats {
            input_tokens,
            output_tokens,
            prompt_ms,
            generation_ms,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            finish: if stop_sequence.is_some() {
                Finish::StopSequence
            } else {
                finish
            },
            stop_sequence,
        })
    }

    fn sampler(&self, req: &GenerateRequest) -> LlamaSampler {
        let s = &req.sampling;
        let mut chain = Vec::new();
        if s.repeat_penalty != 1.0 {
            chain.push(LlamaSampler::penalties(
                self.model.n_vocab(),
                s.repeat_last_n as i32,
                s.repeat_penalty,
                0.0,
                0.0,
            ));
        }
        if s.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
            return LlamaSampler::chain_simple(chain);
        }
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k as i32));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
        LlamaSampler::chain_simple(chain)
    }
}

fn emit(out: &mut impl Sink, id: u64, text: String) {
    if !text.is_empty() {
        out.send(&FromWorker::Token { id, text });
    }
}

/// Drains pending commands without blocking: answers pings, notes a cancel
/// of this request, queues anything else for after it.
fn check_commands(
    id: u64,
    rx: &Receiver<ToWorker>,
    out: &mut impl Sink,
    queued: &mut VecDeque<ToWorker>,
) -> Option<Finish> {
    loop {
        match rx.try_recv() {
            Ok(ToWorker::Cancel { id: c }) if c == id => return Some(Finish::Cancelled),
            Ok(ToWorker::Cancel { .. }) => {}
            Ok(ToWorker::Ping { nonce }) => out.send(&FromWorker::Pong { nonce }),
            Ok(ToWorker::Shutdown) => {
                queued.push_back(ToWorker::Shutdown);
                return Some(Finish::Cancelled);
            }
            Ok(other) => queued.push_back(other),
            Err(TryRecvError::Empty) => return None,
            // Supervisor gone: stop now; serve() will see the hang-up.
            Err(TryRecvError::Disconnected) => return Some(Finish::Cancelled),
        }
    }
}
