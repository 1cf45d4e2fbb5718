//! `symbi-slm chat`: a conversation with a model, the worker kept loaded
//! between turns.
//!
//! At a terminal it is a REPL: line editing and a history kept between
//! sessions (rustyline), `/help`, `/bye`, `/reset`, a message over several
//! lines between `"""` marks or with a line ending in `\`, and Ctrl-C
//! that stops the answer being written (the conversation goes on) or
//! clears the line being typed. Otherwise (a pipe, a file) each line of
//! stdin is a turn, as it is, and nothing is printed but the answers.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Args;
use futures::StreamExt;
use rustyline::error::ReadlineError;
use symbiont_runtime::models::{
    AgentRunner, ChatMessage, ChatRole, ExecutionOptions, SlmRunnerError, StreamEvent,
};

use crate::run_cmd::{classify, prepare, runtime, summary, ModelArgs, Prepared};
use crate::Failure;

/// `symbi-slm chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// A system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Keep no history file (at a terminal; default:
    /// $XDG_STATE_HOME/symbiont/chat_history, else
    /// ~/.local/state/symbiont/chat_history, only this user can read it).
    #[arg(long)]
    no_history: bool,
}

const HELP: &str = "\
/help          this list
/bye, /exit    end the conversation (so does Ctrl-D on an empty line)
/reset         start a new conversation (the system message stays)
\"\"\"            begin or end a message of several lines
TEXT\\          a line ending in \\ goes on in the next one
Ctrl-C         stop the answer being written, or clear the line being typed
Up, Down       earlier messages (kept between sessions)";

/// What the user entered.
enum Turn {
    Message(String),
    Help,
    Reset,
    Bye,
    Unknown(String),
}

/// Where turns come from: a terminal (line editor) or lines of stdin.
enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Lines(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    /// The next turn; `None` at the end of input.
    fn next(&mut self) -> Result<Option<Turn>, Failure> {
        let mut text = String::new();
        let mut block = false;
        // `"""` and a trailing `\` are the terminal's: piped text is one
        // turn per line, as it is.
        let editing = matches!(self, Input::Editor { .. });
        loop {
            let prompt = if block || !text.is_empty() {
                "... "
            } else {
                ">>> "
            };
            let line = match self {
                Input::Editor { editor, .. } => match editor.readline(prompt) {
                    Ok(l) => l,
                    Err(ReadlineError::Interrupted) => {
                        // Ctrl-C at the prompt: the line is dropped.
                        if !text.is_empty() || block {
                            eprintln!("(message dropped)");
                        }
                        text.clear();
                        block = false;
                        continue;
                    }
                    // Ctrl-D: what was typed of a message of several
                    // lines is sent; on an empty line, the end.
                    Err(ReadlineError::Eof) if text.trim().is_empty() => return Ok(None),
                    Err(ReadlineError::Eof) => break,
                    Err(e) => return Err(Failure::Runtime(anyhow!("reading the terminal: {e}"))),
                },
                Input::Lines(lines) => match lines.next() {
                    Some(l) => l.map_err(|e| Failure::Input(anyhow!("reading stdin: {e}")))?,
                    None => return Ok(None),
                },
            };
            if !editing {
                text.push_str(&line);
                break;
            }
            if block {
                if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
                    text.push_str(last);
                    break;
                }
                text.push_str(&line);
                text.push('\n');
                continue;
            }
            if text.is_empty() {
                if let Some(first) = line.trim_start().strip_prefix("\"\"\"") {
                    // `"""text"""` on one line is a message too.
                    if let Some(whole) = first.trim_end().strip_suffix("\"\"\"") {
                        text.push_str(whole);
                        break;
                    }
                    block = true;
                    if !first.is_empty() {
                        text.push_str(first);
                        text.push('\n');
                    }
                    continue;
                }
            }
            if let Some(more) = line.strip_suffix('\\') {
                text.push_str(more);
                text.push('\n');
                continue;
            }
            text.push_str(&line);
            break;
        }
        let trimmed = text.trim();
        if let Input::Editor { editor, .. } = self {
            if !trimmed.is_empty() {
                let _ = editor.add_history_entry(text.as_str());
            }
        }
        Ok(Some(match trimmed {
            "" => Turn::Message(String::new()),
            "/help" | "/?" => Turn::Help,
            "/bye" | "/exit" | "/quit" => Turn::Bye,
            "/reset" | "/clear" => Turn::Reset,
            t if t.starts_with('/') && !t.contains(char::is_whitespace) => {
                Turn::Unknown(t.to_string())
            }
            t => Turn::Message(t.to_string()),
        }))
    }

    /// Writes the history file (this user only).
    fn save(&mut self) {
        if let Input::Editor {
            editor,
            history: Some(path),
        } = self
        {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = editor.save_history(path) {
                eprintln!("symbi-slm: history {}: {e}", path.display());
            }
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// The history file: `$XDG_STATE_HOME/symbiont/chat_history`, else
/// `~/.local/state/symbiont/chat_history`.
fn history_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("symbiont").join("chat_history"))
}

/// How a turn's answer ended.
enum Answered {
    /// With its text (kept in the conversation).
    Done(String),
    /// Stopped by Ctrl-C (nothing kept).
    Stopped,
    /// Refused or failed in a way the conversation survives.
    Failed,
}

pub fn chat(args: ChatArgs, config: Option<&Path>) -> Result<(), Failure> {
    let prep = prepare(&args.common, config)?;
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        let editor = rustyline::DefaultEditor::new()
            .map_err(|e| Failure::Runtime(anyhow!("the line editor: {e}")))?;
        let history = (!args.no_history).then(history_path).flatten();
        let mut input = Input::Editor {
            editor: Box::new(editor),
            history,
        };
        if let Input::Editor {
            editor,
            history: Some(path),
        } = &mut input
        {
            // A first session has none yet.
            let _ = editor.load_history(path);
        }
        input
    } else {
        Input::Lines(std::io::stdin().lock().lines())
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let runner = prep.runner(&args.common).await?;
        let opening: Vec<ChatMessage> = args
            .system
            .iter()
            .map(|s| ChatMessage::new(ChatRole::System, s.clone()))
            .collect();
        let mut history = opening.clone();
        if interactive {
            eprintln!(
                "[{} · profile {}] type a message; /help lists the commands, /bye ends",
                prep.model_id, prep.profile_name
            );
        }
        loop {
            let Some(turn) = input.next()? else { break };
            let line = match turn {
                Turn::Message(m) if m.is_empty() => continue,
                Turn::Message(m) => m,
                Turn::Help => {
                    eprintln!("{HELP}");
                    continue;
                }
                Turn::Bye => break,
                Turn::Reset => {
                    history = opening.clone();
                    eprintln!("(conversation reset)");
                    continue;
                }
                Turn::Unknown(c) => {
                    eprintln!("unknown command {c}: /help lists them (the model did not see it)");
                    continue;
                }
            };
            let options = ExecutionOptions {
                history: history.clone(),
                ..prep.options(&args.common)
            };
            match answer(&runner, &prep, &line, options, interactive).await? {
                Answered::Done(text) => {
                    history.push(ChatMessage::new(ChatRole::User, line));
                    history.push(ChatMessage::new(ChatRole::Assistant, text));
                }
                Answered::Stopped | Answered::Failed => {}
            }
        }
        Ok(())
    });
    input.save();
    result
}

/// Streams one answer to stdout. At a terminal, Ctrl-C stops it: the
/// stream is dropped, which cancels the request in the worker within one
/// decode step, and the turn is left out of the conversation.
async fn answer(
    runner: &AgentRunner,
    prep: &Prepared,
    line: &str,
    options: ExecutionOptions,
    interactive: bool,
) -> Result<Answered, Failure> {
    let mut stream = runner.execute_stream(line, Some(options));
    // Only at a terminal: a pipe's reader keeps Ctrl-C's usual meaning.
    let interrupt = async {
        if interactive {
            let _ = tokio::signal::ctrl_c().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupt);
    let mut stdout = std::io::stdout().lock();
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = &mut interrupt => {
                drop(stream);
                let _ = writeln!(stdout);
                eprintln!("(answer stopped)");
                return Ok(Answered::Stopped);
            }
        };
        let Some(event) = event else {
            return Ok(Answered::Failed);
        };
        match event {
            Ok(StreamEvent::Token(t)) => {
                if let Err(e) = stdout.write_all(t.as_bytes()).and_then(|()| stdout.flush()) {
                    crate::output::gone(&e);
                }
            }
            Ok(StreamEvent::Done(result)) => {
                if let Err(e) = writeln!(stdout) {
                    crate::output::gone(&e);
                }
                if interactive {
                    eprintln!(
                        "{}",
                        summary(&prep.model_id, &prep.profile_name, &result.metadata)
                    );
                }
                return Ok(Answered::Done(result.response));
            }
            Ok(_) => {}
            // A turn that fails (too long for the context, a timeout) is
            // reported; the conversation goes on.
            Err(
                e @ (SlmRunnerError::InvalidInput { .. }
                | SlmRunnerError::ContextLengthExceeded { .. }),
            ) => {
                eprintln!("symbi-slm: {e} (/reset starts a new conversation)");
                return Ok(Answered::Failed);
            }
            Err(e @ SlmRunnerError::ExecutionTimeout { .. }) => {
                eprintln!("symbi-slm: {e}");
                return Ok(Answered::Failed);
            }
            Err(e) => return Err(classify(e)),
        }
    }
}
