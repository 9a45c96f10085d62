//! The terminal program: flags, opening the model and the tools, the line
//! editor (history, multi-line input, Ctrl-C) and the loop that hands each
//! line to the [`Session`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use mlx_harmony_config::conversation::Conversation;
use mlx_harmony_frontend::args::{ModelArgs, ModelChoice, SamplingArgs, ToolArgs};
use rustyline::error::ReadlineError;

use crate::{Command, Session, Style};

/// The flags of `mlx-harmony-chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Instructions for the model (the system message; for GPT-OSS, the developer message).
    #[arg(long)]
    pub system: Option<String>,

    /// Save the conversation to this JSON file after every exchange.
    #[arg(long, value_name = "FILE")]
    pub save_conversation: Option<PathBuf>,

    /// Resume a saved conversation: its model, prompt config and settings
    /// are used unless flags say otherwise (the model may differ).
    #[arg(long, value_name = "FILE")]
    pub load_conversation: Option<PathBuf>,

    /// Print the exact rendered prompt (special tokens included) and the raw completion.
    #[arg(long)]
    pub debug: bool,

    /// GPT-OSS: do not show the reasoning (\reasoning show turns it back on).
    #[arg(long)]
    pub hide_reasoning: bool,

    /// Print loading notes and per-turn statistics (prompt/cached tokens, time to first token, tokens/s).
    #[arg(long)]
    pub verbose: bool,

    /// The line-editor history file [default: $XDG_STATE_HOME/mlx-harmony/chat_history,
    /// or ~/.local/state/mlx-harmony/chat_history].
    #[arg(long, value_name = "FILE", env = "MLX_HARMONY_CHAT_HISTORY")]
    pub history_file: Option<PathBuf>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub output: mlx_harmony_frontend::args::OutputArgs,

    #[command(flatten)]
    pub tools: ToolArgs,
}

fn history_file(args: &ChatArgs) -> Option<PathBuf> {
    args.history_file.clone().or_else(|| {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
        Some(state.join("mlx-harmony/chat_history"))
    })
}

/// Reads one message: a line, lines joined by a trailing backslash, or a
/// block between lines of `"""`. `None` at end of input.
fn read_message(editor: &mut rustyline::DefaultEditor) -> Result<Option<String>, ReadlineError> {
    let mut text = String::new();
    let mut block = false;
    loop {
        let prompt = if text.is_empty() && !block {
            ">>> "
        } else {
            "... "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Eof) if text.is_empty() && !block => return Ok(None),
            Err(ReadlineError::Eof) => return Ok(Some(text)),
            Err(e) => return Err(e),
        };
        if line.trim() == "\"\"\"" {
            if block {
                return Ok(Some(text));
            }
            block = true;
            continue;
        }
        if block {
            text.push_str(&line);
            text.push('\n');
            continue;
        }
        if let Some(start) = line.strip_suffix('\\').filter(|l| !l.ends_with('\\')) {
            text.push_str(start);
            text.push('\n');
            continue;
        }
        text.push_str(&line);
        return Ok(Some(text));
    }
}

/// Runs `mlx-harmony-chat`: opens the model, then reads messages and
/// commands until the end of input.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let loaded = args
        .load_conversation
        .as_deref()
        .map(|path| {
            Conversation::load(path)
                .with_context(|| format!("--load-conversation {}", path.display()))
        })
        .transpose()?;
    let fallback = loaded.as_ref().and_then(|l| {
        Some(ModelChoice {
            spec: l.conversation.metadata.model_path.clone()?,
            prompt_config_path: l
                .conversation
                .metadata
                .prompt_config_path
                .as_ref()
                .map(PathBuf::from),
        })
    });
    let Some(choice) = args.model.choice(fallback)? else {
        anyhow::bail!(
            "no model: give --model ID|PATH, --profile NAME, or --load-conversation FILE of a conversation that names its model"
        );
    };
    let overrides = args.sampling.hyperparameters()?;
    let format = args.output.format()?;
    // Tools are set up before the model loads: a bad tool flag fails fast.
    let tools = args.tools.toolbox()?;
    let opened = args.model.open(&choice, args.verbose)?;
    eprintln!("device: {}", opened.device);
    let output = format
        .as_ref()
        .map(|f| mlx_harmony_frontend::setup::output_constraint(f, &opened.generator.loaded))
        .transpose()?;
    let mut session = Session {
        generator: opened.generator,
        model_spec: choice.spec.clone(),
        prompt_config: opened.prompt_config,
        prompt_config_path: choice.prompt_config_path.clone(),
        instructions: args.system.clone(),
        overrides,
        generation_config: opened.generation_config,
        restored: Default::default(),
        conversation: Conversation::new(
            Some(choice.spec.clone()),
            choice
                .prompt_config_path
                .as_ref()
                .map(|p| p.display().to_string()),
        ),
        save_path: args.save_conversation.clone(),
        effort: None,
        show_reasoning: !args.hide_reasoning,
        debug: args.debug,
        verbose: args.verbose,
        profiles_file: args.model.profiles_file.clone(),
        style: Style {
            color: std::io::stdout().is_terminal(),
        },
        output,
        prompt_lookup: args.model.prompt_lookup.unwrap_or(0) as usize,
        tools,
        max_tool_calls: args.tools.max_tool_calls,
    };
    if let Some(tools) = &session.tools {
        if session.generator.loaded.harmony.is_none() {
            eprintln!(
                "note: tools are used by GPT-OSS (Harmony) models only; this model will not call them"
            );
        }
        for note in tools.notes() {
            eprintln!("tool {note}");
        }
    }
    if let Some(loaded) = loaded {
        session.restored = loaded.conversation.hyperparameters()?;
        session.conversation = loaded.conversation;
        if session.save_path.is_none() {
            // Resuming keeps writing to the same file.
            session.save_path = args.load_conversation.clone();
        }
        eprintln!(
            "resumed {} messages from {}",
            session.conversation.messages.len(),
            args.load_conversation.as_ref().unwrap().display()
        );
    }
    session.conversation.metadata.tools = session
        .tools
        .as_ref()
        .map(|t| t.names())
        .unwrap_or_default();
    // Ctrl-C while an answer is generated stops it; at the prompt the line
    // editor reads it as a key.
    let cancel = session.generator.cancel_handle();
    ctrlc::set_handler(move || cancel.cancel()).context("cannot install the Ctrl-C handler")?;

    let mut editor = rustyline::DefaultEditor::new()?;
    let history = history_file(&args);
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut out = std::io::stdout();
    eprintln!("Type a message; \\help lists commands, Ctrl-D or \\quit leaves.");
    session.start(&mut out)?;
    loop {
        let text = match read_message(&mut editor) {
            Ok(Some(text)) => text,
            Ok(None) => break,
            Err(ReadlineError::Interrupted) => {
                eprintln!("(Ctrl-D or \\quit leaves)");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if text.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(text.as_str());
        let keep_going = match Command::parse(&text) {
            Some(Ok(command)) => session.command(command, &mut out),
            Some(Err(message)) => {
                writeln!(out, "error: {message}")?;
                Ok(true)
            }
            None => session.turn(&text, &mut out).map(|()| true),
        };
        match keep_going {
            Ok(true) => {}
            Ok(false) => break,
            // A failed turn (e.g. the prompt is over the context) leaves the chat running.
            Err(e) => writeln!(out, "error: {e:#}")?,
        }
    }
    if let Some(path) = history
        .as_ref()
        .filter(|_| !mlx_harmony_frontend::tensor_parallel::is_follower())
    {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}
