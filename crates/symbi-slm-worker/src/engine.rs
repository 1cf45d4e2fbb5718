//! The model: loading it, its context, its tokenizer and samplers. The
//! decode loop over several requests at once is [`crate::slots`].

use std::num::NonZeroU32;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use symbiont_slm_protocol::{
    Applied, FromWorker, GenerateRequest, LaunchSpec, LoadStage, ModelFacts, RequestError,
    ToWorker, MAX_EMBED_TOKENS, PROTOCOL_VERSION,
};

use crate::slots::Slots;
use crate::template::render_chat;

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
            embedding_size: u32::try_from(model.n_embd_out()).unwrap_or(0),
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

    /// The model.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// Requests served at once (the launch spec's slots, at least one).
    pub fn slots(&self) -> u32 {
        self.spec.slots.max(1)
    }

    /// A fresh inference context: one sequence per slot, each with
    /// `context_size` tokens of KV cache.
    pub fn new_context(&self) -> Result<LlamaContext<'_>, LoadError> {
        let threads = i32::try_from(self.spec.threads.max(1)).unwrap_or(1);
        let n_ctx = self.facts.context_size.saturating_mul(self.slots());
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_seq_max(self.slots())
            .with_n_batch(self.spec.batch_size.max(1))
            .with_n_ubatch(self.spec.batch_size.max(1))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        self.model
            .new_context(&self.backend, params)
            .map_err(|e| (LoadStage::Context, e.to_string()))
    }

    /// The context of embedding requests (made on the first one): one
    /// sequence of [`MAX_EMBED_TOKENS`] tokens, embeddings on, mean
    /// pooling. A context of its own because llama-cpp-2 cannot switch the
    /// generation context's embedding mode, and because every token of a
    /// pooled input is an output row (vocabulary-sized logits included):
    /// the generation context stays as small as it is.
    pub fn new_embedding_context(&self) -> Result<LlamaContext<'_>, LoadError> {
        let threads = i32::try_from(self.spec.threads.max(1)).unwrap_or(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(MAX_EMBED_TOKENS))
            .with_n_seq_max(1)
            .with_n_batch(MAX_EMBED_TOKENS)
            .with_n_ubatch(MAX_EMBED_TOKENS)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        self.model
            .new_context(&self.backend, params)
            .map_err(|e| (LoadStage::Context, e.to_string()))
    }

    /// Serves requests until `Shutdown` or the supervisor hangs up, up to
    /// [`Self::slots`] at once (see [`crate::slots`]).
    pub fn serve(&self, rx: &Receiver<ToWorker>, out: &mut impl Sink) {
        let ctx = match self.new_context() {
            Ok(ctx) => ctx,
            Err((_, detail)) => {
                eprintln!("symbi-slm-worker: context: {detail}");
                std::process::exit(2);
            }
        };
        // Each sequence holds what the context gives it, never more than
        // the context size the supervisor was told.
        let per_slot = (ctx.n_ctx() / self.slots()).min(self.facts.context_size);
        Slots::new(self, ctx, self.slots(), per_slot).serve(rx, out);
    }

    /// The prompt's tokens: the chat template rendered over the history and
    /// the prompt, or the raw prompt.
    pub(crate) fn prompt_tokens(
        &self,
        req: &GenerateRequest,
    ) -> Result<Vec<LlamaToken>, RequestError> {
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

    /// The request's sampler chain (its own seed).
    pub(crate) fn sampler(&self, req: &GenerateRequest) -> LlamaSampler {
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
