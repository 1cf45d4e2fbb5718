//! `symbi-slm run`: one prompt through the model's runner, streamed.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use futures::StreamExt;
use symbiont_runtime::audit::{AuditEvent, AuditKind, AuditLog};
use symbiont_runtime::config::{
    ModelCapability, ModelProvider, ModelResourceRequirements, SandboxProfile,
};
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionMetadata, ExecutionOptions, LocalGgufRunner, ModelCatalog,
    PromptMode, SlmRunnerError, StreamEvent,
};

use crate::config_source;
use crate::Failure;

/// What `run` and `chat` share: which model, for whom, under which
/// profile, how to sample.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model id (default: the best TextGeneration model, for --agent if given).
    #[arg(long)]
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
    /// The prompt; read from stdin when absent or `-`.
    prompt: Option<String>,
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

/// `symbi-slm chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// A system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
}

/// A model resolved from the config, its access checked, ready to run.
struct Prepared {
    model_id: String,
    profile_name: String,
    profile: SandboxProfile,
    file_path: PathBuf,
    requirements: ModelResourceRequirements,
    audit: AuditLog,
}

impl Prepared {
    /// Builds the runner (nothing starts until the first request).
    async fn runner(
        &self,
        args: &ModelArgs,
        keep_alive: Duration,
    ) -> Result<LocalGgufRunner, Failure> {
        let mut builder = LocalGgufRunner::builder(
            &self.file_path,
            self.profile.clone(),
            self.requirements.clone(),
        )
        .keep_alive(keep_alive)
        .audit_log(self.audit.clone())
        .labels(&self.model_id, &self.profile_name);
        if let Some(w) = &args.worker {
            builder = builder.worker_path(w);
        }
        builder.build().await.map_err(classify)
    }

    fn options(&self, args: &ModelArgs) -> ExecutionOptions {
        ExecutionOptions {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            seed: args.seed,
            agent_id: args.agent.clone(),
            ..Default::default()
        }
    }
}

/// Loads the config, picks the model, checks the agent's access (recording
/// a refusal in the audit log) and the profile.
fn prepare(args: &ModelArgs, config: Option<&Path>) -> Result<Prepared, Failure> {
    let source = config_source::pick(config);
    let slm = config_source::load(&source).map_err(|e| Failure::Input(anyhow!("{source}: {e}")))?;
    if !slm.enabled {
        return Err(Failure::Input(anyhow!(
            "small language models are disabled: set `slm.enabled = true` in {source}"
        )));
    }
    let catalog = ModelCatalog::new(slm).map_err(|e| Failure::Input(e.into()))?;
    let model = match &args.model {
        Some(id) => catalog
            .get_model(id)
            .ok_or_else(|| Failure::Input(anyhow!("unknown model `{id}`")))?,
        // The best TextGeneration model the agent may use; when it may use
        // none, the best overall, so that the access check below names the
        // rule that denies it.
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
            .ok_or_else(|| Failure::Input(anyhow!("no TextGeneration model in {source}")))?,
    };
    let (profile_name, profile) = crate::catalog_cmds::profile(&catalog, args.profile.as_deref())?;
    let audit = crate::catalog_cmds::audit_log(&catalog)?;
    if let Some(agent) = &args.agent {
        if let Err(e) = catalog.validate_model_access(&model.id, agent) {
            let event =
                AuditEvent::new(AuditKind::AccessRefused, "model_allow_lists", e.to_string())
                    .about(Some(agent), Some(&model.id), Some(&profile_name));
            audit.record(&event, profile.security.enable_audit_logging);
            return Err(Failure::Input(e.into()));
        }
    }
    let ModelProvider::LocalFile { file_path } = &model.provider else {
        return Err(Failure::Input(anyhow!(
            "model `{}` has provider {}; only LocalFile models can run here",
            model.id,
            model.provider.kind()
        )));
    };
    Ok(Prepared {
        model_id: model.id.clone(),
        profile_name,
        profile: profile.clone(),
        file_path: file_path.clone(),
        requirements: model.resource_requirements.clone(),
        audit,
    })
}

pub fn run(args: RunArgs, config: Option<&Path>) -> Result<(), Failure> {
    let prep = prepare(&args.common, config)?;
    let prompt = match args.prompt.as_deref() {
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
        let runner = prep.runner(&args.common, Duration::ZERO).await?;
        let mut stream = Box::pin(runner.execute_stream(&prompt, Some(options)));
        let mut stdout = std::io::stdout().lock();
        while let Some(event) = stream.next().await {
            match event.map_err(classify)? {
                StreamEvent::Token(t) if !args.json => {
                    let _ = stdout.write_all(t.as_bytes());
                    let _ = stdout.flush();
                }
                StreamEvent::Token(_) => {}
                StreamEvent::Done(result) => {
                    if args.json {
                        let s = serde_json::to_string_pretty(&result)
                            .map_err(|e| Failure::Runtime(e.into()))?;
                        let _ = writeln!(stdout, "{s}");
                    } else {
                        let _ = writeln!(stdout);
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

/// `symbi-slm chat`: one line per user turn; the model's answers stream
/// back and stay in the conversation. `/reset` starts over, `/exit` or end
/// of input ends. The worker stays loaded between turns.
pub fn chat(args: ChatArgs, config: Option<&Path>) -> Result<(), Failure> {
    let prep = prepare(&args.common, config)?;
    let interactive = std::io::stdin().is_terminal();
    let rt = runtime()?;
    rt.block_on(async {
        let runner = prep.runner(&args.common, Duration::from_secs(300)).await?;
        let opening: Vec<ChatMessage> = args
            .system
            .iter()
            .map(|s| ChatMessage::new(ChatRole::System, s.clone()))
            .collect();
        let mut history = opening.clone();
        if interactive {
            eprintln!(
                "[{} · profile {}] type a message; /reset starts over, /exit ends",
                prep.model_id, prep.profile_name
            );
        }
        let mut lines = std::io::stdin().lock().lines();
        loop {
            if interactive {
                eprint!("> ");
            }
            let Some(line) = lines.next() else { break };
            let line = line.map_err(|e| Failure::Input(anyhow!("reading stdin: {e}")))?;
            let line = line.trim();
            match line {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    history = opening.clone();
                    eprintln!("(conversation reset)");
                    continue;
                }
                _ => {}
            }
            let options = ExecutionOptions {
                history: history.clone(),
                ..prep.options(&args.common)
            };
            let mut stream = Box::pin(runner.execute_stream(line, Some(options)));
            let mut stdout = std::io::stdout().lock();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(StreamEvent::Token(t)) => {
                        let _ = stdout.write_all(t.as_bytes());
                        let _ = stdout.flush();
                    }
                    Ok(StreamEvent::Done(result)) => {
                        let _ = writeln!(stdout);
                        if interactive {
                            eprintln!(
                                "{}",
                                summary(&prep.model_id, &prep.profile_name, &result.metadata)
                            );
                        }
                        history.push(ChatMessage::new(ChatRole::User, line));
                        history.push(ChatMessage::new(ChatRole::Assistant, result.response));
                    }
                    Ok(_) => {}
                    // A turn that fails (too long for the context, a
                    // timeout) is reported; the conversation goes on.
                    Err(e @ SlmRunnerError::InvalidInput { .. }) => {
                        eprintln!("symbi-slm: {e} (/reset starts a new conversation)");
                    }
                    Err(e @ SlmRunnerError::ExecutionTimeout { .. }) => {
                        eprintln!("symbi-slm: {e}");
                    }
                    Err(e) => return Err(classify(e)),
                }
            }
        }
        Ok(())
    })
}

/// The async runtime of one command: one worker thread is plenty, the
/// work happens in the model's worker process.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))
}

/// Bad input and bad model files are the caller's to fix (exit 2); the
/// rest happened while running (exit 1).
fn classify(e: SlmRunnerError) -> Failure {
    match e {
        SlmRunnerError::InvalidInput { .. }
        | SlmRunnerError::ModelFileNotFound { .. }
        | SlmRunnerError::InvalidModelFile { .. } => Failure::Input(e.into()),
        _ => Failure::Runtime(e.into()),
    }
}

fn summary(model: &str, profile: &str, m: &ExecutionMetadata) -> String {
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
