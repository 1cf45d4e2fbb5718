//! `symbi-slm`: the command-line face of symbiont-runtime.
//!
//! Parses arguments, calls one command, maps failures to exit codes:
//! 0 success, 1 runtime failure, 2 bad input or config (clap's usage errors
//! are 2 as well).

mod catalog_cmds;
mod chat_cmd;
mod check_cmd;
mod config_source;
mod output;
mod ps_cmd;
mod pull_cmd;
mod run_cmd;
mod sandbox_cmd;
mod serve_cmd;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run and inspect small language models under symbiont-runtime's sandbox.
///
/// Config: --config FILE, else $SYMBI_SLM_CONFIG, else the built-in default
/// config (SmolLM2-135M-Instruct in ~/.cache/symbiont/models).
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad input or config.
///
/// Logging: warnings on stderr; set SYMBI_SLM_LOG (e.g. `debug`) for more.
#[derive(Debug, Parser)]
#[command(name = "symbi-slm", version, about, long_about)]
struct Cli {
    /// Config file holding an [slm] table (overrides $SYMBI_SLM_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The log's format on stderr: `text` (default) or `json`, one object
    /// per line (`timestamp`, `level`, `target`, `fields`) for a
    /// collector.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate and summarize configs.
    #[command(subcommand)]
    Config(catalog_cmds::ConfigCmd),
    /// List, show and select models.
    #[command(subcommand)]
    Models(catalog_cmds::ModelsCmd),
    /// Show sandbox profiles.
    #[command(subcommand)]
    Profiles(catalog_cmds::ProfilesCmd),
    /// Run one prompt on a model, streaming the answer to stdout and a
    /// one-line summary (tokens, tokens/s, first token, peak memory) to
    /// stderr.
    Run(run_cmd::RunArgs),
    /// A conversation: at a terminal a REPL (line editing, history,
    /// /help, /bye, multiline with """, Ctrl-C stops an answer); from a
    /// pipe one line per turn. The worker stays loaded between turns.
    Chat(chat_cmd::ChatArgs),
    /// What a sandbox profile enforces on this host; run a program under it.
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCmd),
    /// The HTTP service: OpenAI-compatible API, native API, metrics; every
    /// agent proves itself with a token and gets only its allowed models.
    /// On SIGTERM drains (/ready fails, requests still served for
    /// slm.service.drain_seconds), then stops accepting; on SIGINT stops
    /// accepting at once; either way requests in progress finish
    /// (slm.service.shutdown_grace_seconds).
    Serve(serve_cmd::ServeArgs),
    /// Agent tokens for the service.
    #[command(subcommand)]
    Agents(serve_cmd::AgentsCmd),
    /// What a running `serve` has loaded: each model's workers, the agent
    /// each serves, slots, queue, memory against the estimate, keep-alive
    /// left (GET /v1/ps with the operator's token).
    Ps(ps_cmd::PsArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// A failure, classified by whose fault it is.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or config: exit 2.
    Input(anyhow::Error),
    /// Something failed while running: exit 1.
    Runtime(anyhow::Error),
    /// Bad input or config, already reported on stdout: exit 2, nothing
    /// more printed.
    Reported,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Input(e) | Failure::Runtime(e) => write!(f, "{e:#}"),
            Failure::Reported => f.write_str("reported above"),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) | Failure::Reported => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics on stderr: warnings by default, without the audit events
    // (they repeat the error printed below and go to the audit file);
    // $SYMBI_SLM_LOG takes a filter such as `debug`, `symbi_slm_audit=warn`
    // or `symbi_slm_worker=debug` (llama.cpp's own log).
    // The service logs what it does (info); commands only what went wrong.
    let default = match cli.command {
        Command::Serve(_) => "info,symbi_slm_audit=off",
        _ => "warn,symbi_slm_audit=off",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYMBI_SLM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    output::set_log_json(matches!(cli.log_format, LogFormat::Json));
    match cli.log_format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    let result = match cli.command {
        Command::Config(cmd) => catalog_cmds::config(cmd, cli.config.as_deref()),
        Command::Models(cmd) => catalog_cmds::models(cmd, cli.config.as_deref()),
        Command::Profiles(cmd) => catalog_cmds::profiles(cmd, cli.config.as_deref()),
        Command::Run(args) => run_cmd::run(args, cli.config.as_deref()),
        Command::Chat(args) => chat_cmd::chat(args, cli.config.as_deref()),
        Command::Sandbox(cmd) => sandbox_cmd::sandbox(cmd, cli.config.as_deref()),
        Command::Serve(args) => serve_cmd::serve(args, cli.config.as_deref()),
        Command::Agents(cmd) => serve_cmd::agents(cmd, cli.config.as_deref()),
        Command::Ps(args) => ps_cmd::ps(args, cli.config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Failure::Input(e) | Failure::Runtime(e) = &f {
                output::note(true, &format!("symbi-slm: {e:#}"));
            }
            ExitCode::from(f.exit_code())
        }
    }
}
