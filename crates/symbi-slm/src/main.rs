//! `symbi-slm`: the command-line face of symbiont-runtime.
//!
//! Parses arguments, calls one command, maps failures to exit codes:
//! 0 success, 1 runtime failure, 2 bad input or config (clap's usage errors
//! are 2 as well).

mod catalog_cmds;
mod config_source;
mod run_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run and inspect small language models under symbiont-runtime's sandbox.
///
/// Config: --config FILE, else $SYMBI_SLM_CONFIG, else the built-in default
/// config (SmolLM2-135M-Instruct in ~/.cache/symbiont/models).
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad input or config.
#[derive(Debug, Parser)]
#[command(name = "symbi-slm", version, about, long_about)]
struct Cli {
    /// Config file holding an [slm] table (overrides $SYMBI_SLM_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
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
}

/// A failure, classified by whose fault it is.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or config: exit 2.
    Input(anyhow::Error),
    /// Something failed while running: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(cmd) => catalog_cmds::config(cmd, cli.config.as_deref()),
        Command::Models(cmd) => catalog_cmds::models(cmd, cli.config.as_deref()),
        Command::Profiles(cmd) => catalog_cmds::profiles(cmd, cli.config.as_deref()),
        Command::Run(args) => run_cmd::run(args, cli.config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (Failure::Input(e) | Failure::Runtime(e)) = &f;
            eprintln!("symbi-slm: {e:#}");
            ExitCode::from(f.exit_code())
        }
    }
}
