//! `symbi-slm run`: one prompt through the model's runner, streamed.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use futures::StreamExt;
use symbiont_runtime::config::ModelCapability;
use symbiont_runtime::models::{
    config_for_file, config_for_hub, AgentRunner, ExecutionMetadata, ExecutionOptions, FileConfig,
    ModelCatalog, ModelPool, PromptMode, SlmRunnerError, StreamEvent,
};

use crate::config_source;
use crate::Failure;

/// What `run` and `chat` share: which model, for whom, under which
/// profile, how to sample.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model id (default: the best TextGeneration model, for --agent if
    /// given), or a GGUF file to run without a config (under the secure
    /// profile's controls, sized to fit it).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Run on behalf of this agent: its allow-list is checked before
    /// anything loads.
    #[arg(long)]
    agent: Option<String>,
    /// Sandbox profile (default: the config's default_sandbox_profile).
    #[arg(long)]
    profile: Option<String>,
    /// Most tokens to generate (default 512).
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy (default 0.8).
    #[arg(long)]
    temperature: Option<f32>,
    /// Random seed: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u32>,
    /// Worker executable (default: $SYMBI_SLM_WORKER, else beside symbi-slm).
    #[arg(long, value_name = "PATH")]
    worker: Option<PathBuf>,
}

/// `symbi-slm run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// `[MODEL.gguf] [PROMPT]`: a GGUF file to run without a config (as
    /// `--model` takes it), then the prompt; the prompt is read from stdin
    /// when absent or `-`.
    #[arg(value_name = "ARGS", num_args = 0..=2)]
    words: Vec<String>,
    #[command(flatten)]
    common: ModelArgs,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Wall-clock limit in seconds (default and maximum: the profile's
    /// max_execution_time_seconds).
    #[arg(long)]
    timeout: Option<f64>,
    /// Send the prompt as it is, without the model's chat template.
    #[arg(long)]
    raw: bool,
    /// Print the ExecutionResult as JSON instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// A model resolved from the config, ready to run through the pool.
pub(crate) struct Prepared {
    pub model_id: String,
    pub profile_name: String,
    pool: ModelPool,
}

impl Prepared {
    /// The model's runner from the pool; for `--agent`, after the pool has
    /// checked the agent's access (a refusal is audited there). Nothing
    /// starts until the first request.
    pub(crate) async fn runner(&self, args: &ModelArgs) -> Result<AgentRunner, Failure> {
        let profile = Some(self.profile_name.as_str());
        let models = match &args.agent {
            Some(agent) => self.pool.for_agent(agent),
            None => self.pool.for_operator(),
        };
        models
            .runner(&self.model_id, profile)
            .await
            .map_err(classify)
    }

    pub(crate) fn options(&self, args: &ModelArgs) -> ExecutionOptions {
        ExecutionOptions {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..Default::default()
        }
    }
}

/// Whether `word` names a model file rather than a model id or a prompt:
/// a name ending in `.gguf` (present or not: a missing one is an error
/// that names it), or a path to a file that exists.
pub(crate) fn is_model_file(word: &str) -> bool {
    word.ends_with(".gguf")
        || (word.contains('/') && Path::new(word).is_file())
        || crate::pull_cmd::parse_spec(word).is_some()
}

/// The config for a model file, or for a hub model (`hf:org/repo…`,
/// pulled first when the cache lacks it), sized for `slots`.
pub(crate) fn config_for(word: &str, slots: u32) -> Result<FileConfig, Failure> {
    match crate::pull_cmd::parse_spec(word) {
        Some(m) => {
            let m = m?;
            let found = crate::pull_cmd::fetch_for_run(&m)?;
            config_for_hub(&found, &m, slots).map_err(|e| Failure::Input(e.into()))
        }
        None => config_for_file(Path::new(word), slots).map_err(|e| Failure::Input(e.into())),
    }
}

/// Loads the config (or makes one for a model file), picks the model and
/// the profile, and makes the pool that checks access and runs it.
pub(crate) fn prepare(args: &ModelArgs, config: Option<&Path>) -> Result<Prepared, Failure> {
    let mut file = args.model.as_deref().filter(|m| is_model_file(m));
    if let Some(f) = file {
        // A config that names a model so (ids may end in `.gguf`) keeps it.
        let source = config_source::pick(config);
        let configured = !matches!(source, config_source::Source::Builtin)
            && config_source::load(&source).is_ok_and(|slm| {
                slm.model_allow_lists
                    .global_models
                    .iter()
                    .any(|m| m.id == f)
            });
        if configured {
            file = None;
        } else if let Some(c) = config {
            return Err(Failure::Input(anyhow!(
                "{f} runs without a config, and --config {} was given: name a model id of the config, or leave --config out",
                c.display()
            )));
        } else if let config_source::Source::Env(p) = &source {
            eprintln!(
                "symbi-slm: {f} is no model of {} (${}): running the file without a config",
                p.display(),
                config_source::CONFIG_ENV
            );
        }
    }
    let (source, slm, model) = match file {
        Some(file) => {
            // One request at a time: sized for one slot.
            let fc = config_for(file, 1)?;
            eprintln!("symbi-slm: {}", fc.summary);
            (
                format!("no config (model file {file})"),
                fc.slm,
                Some(fc.model_id),
            )
        }
        None => {
            let source = config_source::pick(config);
            let slm = config_source::load(&source)
                .map_err(|e| Failure::Input(anyhow!("{source}: {e}")))?;
            (source.to_string(), slm, args.model.clone())
        }
    };
    if !slm.enabled {
        return Err(Failure::Input(anyhow!(
            "small language models are disabled: set `slm.enabled = true` in {source}"
        )));
    }
    let catalog = ModelCatalog::new(slm).map_err(|e| Failure::Input(e.into()))?;
    let model_id = match &model {
        Some(id) => id.clone(),
        // The best TextGeneration model the agent may use; when it may use
        // none, the best overall, so that the pool's access check names
        // the rule that denies it.
        None => catalog
            .find_best_model_for_requirements(
                &[ModelCapability::TextGeneration],
                None,
                args.agent.as_deref(),
            )
            .or_else(|| {
                catalog.find_best_model_for_requirements(
                    &[ModelCapability::TextGeneration],
                    None,
                    None,
                )
            })
            .ok_or_else(|| Failure::Input(anyhow!("no TextGeneration model in {source}")))?
            .id
            .clone(),
    };
    let (profile_name, _) = crate::catalog_cmds::profile(&catalog, args.profile.as_deref())?;
    let audit = crate::catalog_cmds::audit_log(&catalog)?;
    // `run` and `chat` send one request at a time: one slot, a cache of
    // one context (a one-shot holds no memory it cannot use).
    let mut pool = ModelPool::builder(catalog)
        .audit_log(audit)
        .one_request_at_a_time(true);
    if let Some(w) = &args.worker {
        pool = pool.worker_path(w);
    }
    let pool = pool.build().map_err(classify)?;
    Ok(Prepared {
        model_id,
        profile_name,
        pool,
    })
}

pub fn run(mut args: RunArgs, config: Option<&Path>) -> Result<(), Failure> {
    // `run FILE.gguf [PROMPT]`: the model first, as `--model` takes it.
    let prompt = match args.words.as_slice() {
        [model, prompt] => {
            if args.common.model.is_some() {
                return Err(Failure::Input(anyhow!(
                    "two models: `{model}` and --model; give one"
                )));
            }
            args.common.model = Some(model.clone());
            Some(prompt.clone())
        }
        [one] if is_model_file(one) && args.common.model.is_none() => {
            args.common.model = Some(one.clone());
            None
        }
        [prompt] => Some(prompt.clone()),
        _ => None,
    };
    let prep = prepare(&args.common, config)?;
    if prompt.is_none() && std::io::stdin().is_terminal() {
        eprintln!("symbi-slm: reading the prompt from stdin (end it with Ctrl-D)");
    }
    let prompt = match prompt.as_deref() {
        Some(p) if p != "-" => p.to_string(),
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::Input(anyhow!("reading the prompt from stdin: {e}")))?;
            s
        }
    };
    let timeout = args
        .timeout
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|e| Failure::Input(anyhow!("--timeout {s}: {e}")))
        })
        .transpose()?;
    let options = ExecutionOptions {
        timeout,
        stop: args.stop.clone(),
        prompt_mode: if args.raw {
            PromptMode::Raw
        } else {
            PromptMode::Chat
        },
        ..prep.options(&args.common)
    };

    let rt = runtime()?;
    rt.block_on(async {
        let runner = prep.runner(&args.common).await?;
        let mut stream = Box::pin(runner.execute_stream(&prompt, Some(options)));
        let mut stdout = std::io::stdout().lock();
        while let Some(event) = stream.next().await {
            match event.map_err(classify)? {
                StreamEvent::Token(t) if !args.json => {
                    if let Err(e) = stdout.write_all(t.as_bytes()).and_then(|()| stdout.flush()) {
                        crate::output::gone(&e);
                    }
                }
                StreamEvent::Token(_) => {}
                StreamEvent::Done(result) => {
                    if args.json {
                        let s = serde_json::to_string_pretty(&result)
                            .map_err(|e| Failure::Runtime(e.into()))?;
                        if let Err(e) = writeln!(stdout, "{s}") {
                            crate::output::gone(&e);
                        }
                    } else {
                        if let Err(e) = writeln!(stdout) {
                            crate::output::gone(&e);
                        }
                    }
                    eprintln!(
                        "{}",
                        summary(&prep.model_id, &prep.profile_name, &result.metadata)
                    );
                }
                _ => {}
            }
        }
        Ok(())
    })
}

/// The async runtime of one command: one worker thread is plenty, the
/// work happens in the model's worker process.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))
}

/// Bad input and bad model files are the caller's to fix (exit 2); the
/// rest happened while running (exit 1).
pub(crate) fn classify(e: SlmRunnerError) -> Failure {
    match e {
        SlmRunnerError::InvalidInput { .. }
        | SlmRunnerError::ContextLengthExceeded { .. }
        | SlmRunnerError::UnknownModel { .. }
        | SlmRunnerError::AccessDenied { .. }
        | SlmRunnerError::ModelFileNotFound { .. }
        | SlmRunnerError::ModelNotPulled { .. }
        | SlmRunnerError::InvalidModelFile { .. } => Failure::Input(e.into()),
        _ => Failure::Runtime(e.into()),
    }
}

pub(crate) fn summary(model: &str, profile: &str, m: &ExecutionMetadata) -> String {
    let opt = |v: Option<f64>, unit: &str| {
        v.map(|v| format!("{v:.1}{unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let sandbox = if m.sandbox_gaps.is_empty() {
        format!("{} sandbox layers", m.sandbox_layers.len())
    } else {
        format!(
            "{} sandbox layers, NOT ENFORCED here: {}",
            m.sandbox_layers.len(),
            m.sandbox_gaps.join("; ")
        )
    };
    format!(
        "[{model} · profile {profile} · {sandbox}] {} prompt + {} generated tokens · {} · first token {} · {:.0} ms total · worker peak {} · finish {}",
        m.input_tokens.map_or("?".into(), |n| n.to_string()),
        m.output_tokens.map_or("?".into(), |n| n.to_string()),
        opt(m.generation_tokens_per_second, " tok/s"),
        opt(m.time_to_first_token_ms, " ms"),
        m.execution_time_ms,
        opt(m.worker_peak_memory_mb, " MB"),
        m.finish_reason
            .map(|f| format!("{f:?}").to_lowercase())
            .unwrap_or_else(|| "?".into()),
    )
}
