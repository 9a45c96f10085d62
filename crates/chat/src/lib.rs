//! The interactive chat behind `mlx-harmony-chat`: a conversation with a
//! model, its in-chat commands, and its conversation file.
//!
//! [`Session`] holds the model (a [`TokenGenerator`], whose prompt cache makes
//! each turn prefill only what is new), the conversation in its saved form,
//! and the settings the user changed; [`Command::parse`] reads `\` and `/`
//! commands. The binary only parses flags and runs the line editor.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mlx_harmony_config::conversation::{Conversation, Message, timestamp_now};
use mlx_harmony_config::prompt_config::{PromptConfig, ReasoningEffort as ConfigEffort};
use mlx_harmony_config::settings::{self, Hyperparameters, SETTINGS};
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::{FinishReason, GenerateOptions, TokenGenerator};
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::reply::ReplyEvent;
use mlx_harmony_core::sampling::{Sampler, TokenConstraint};
use mlx_harmony_core::turn::{self, ToolRunner, TurnEvent, TurnOptions};
use mlx_harmony_frontend::setup::{self as frontend_setup, effort_from_config};
use mlx_harmony_frontend::{report, tools as frontend_tools};
use mlx_harmony_tools::ToolBox;

pub mod repl;

/// One in-chat command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Quit,
    Help,
    /// Show the current settings and where each comes from.
    Show,
    Set {
        name: String,
        value: String,
    },
    Save(Option<PathBuf>),
    Load(PathBuf),
    Clear,
    Retry,
    Reasoning(ReasoningCommand),
    Debug(bool),
    Models,
    /// `\python reset`: a fresh Python session for the python tool.
    PythonReset,
    /// `\tools`: the enabled tools and what they can reach.
    Tools,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReasoningCommand {
    Effort(ConfigEffort),
    Show(bool),
}

/// The help text for `\help`.
pub const HELP: &str = "\
Commands (start with \\ or /):
  \\help                      this list
  \\show, \\list               current settings and where each comes from
  \\set NAME VALUE            change a setting for the following turns (also NAME=VALUE)
  \\save [FILE]               save the conversation (default: --save-conversation's file)
  \\load FILE                 continue a saved conversation
  \\clear                     start the conversation afresh
  \\retry                     generate the last answer again
  \\reasoning low|medium|high GPT-OSS reasoning effort for the following turns
  \\reasoning show|hide       show or hide the model's reasoning
  \\debug on|off              print the rendered prompt and the raw completion
  \\models                    models in the profiles file
  \\tools                     the enabled tools (--browser, --python, --apply-patch)
  \\python reset              restart the python tool's session (its variables are lost)
  \\quit, q, Ctrl-D           leave
Ctrl-C stops the answer being generated. End a line with \\ to continue it on
the next, or enclose several lines in \"\"\".";

impl Command {
    /// Reads a command from an input line; `None` when the line is a message.
    pub fn parse(line: &str) -> Option<Result<Command, String>> {
        let line = line.trim();
        if line == "q" {
            return Some(Ok(Command::Quit));
        }
        let body = line.strip_prefix('\\').or_else(|| line.strip_prefix('/'))?;
        // "/usr/bin is..." is a message, not a command: commands are one word first.
        let (name, rest) = body
            .split_once(char::is_whitespace)
            .map(|(n, r)| (n, r.trim()))
            .unwrap_or((body, ""));
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            return None;
        }
        let on_off = |rest: &str| match rest {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(format!("\\{name} takes on or off")),
        };
        Some(match name {
            "quit" | "exit" | "q" => Ok(Command::Quit),
            "help" | "h" | "?" => Ok(Command::Help),
            "show" | "list" | "settings" => Ok(Command::Show),
            "set" => {
                let (n, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(char::is_whitespace))
                    .map(|(n, v)| (n.trim(), v.trim()))
                    .unwrap_or((rest, ""));
                if n.is_empty() || v.is_empty() {
                    Err("usage: \\set NAME VALUE (or NAME=VALUE); \\show lists the settings".into())
                } else {
                    Ok(Command::Set {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                }
            }
            "save" => Ok(Command::Save(
                (!rest.is_empty()).then(|| PathBuf::from(rest)),
            )),
            "load" if !rest.is_empty() => Ok(Command::Load(PathBuf::from(rest))),
            "load" => Err("usage: \\load FILE".into()),
            "clear" | "reset" => Ok(Command::Clear),
            "retry" | "regenerate" => Ok(Command::Retry),
            "reasoning" => match rest {
                "show" | "on" => Ok(Command::Reasoning(ReasoningCommand::Show(true))),
                "hide" | "off" => Ok(Command::Reasoning(ReasoningCommand::Show(false))),
                effort => ConfigEffort::parse(effort)
                    .map(|e| Command::Reasoning(ReasoningCommand::Effort(e)))
                    .ok_or_else(|| "usage: \\reasoning low|medium|high|show|hide".to_string()),
            },
            "debug" => on_off(rest).map(Command::Debug),
            "models" => Ok(Command::Models),
            "tools" => Ok(Command::Tools),
            "python" if rest == "reset" => Ok(Command::PythonReset),
            "python" => Err("usage: \\python reset".into()),
            other => Err(format!("unknown command \\{other}; \\help lists them")),
        })
    }
}

/// The saved messages as the engine's history: an analysis message joins
/// the assistant message after it as its reasoning.
pub fn to_chat_history(messages: &[Message]) -> Vec<ChatMessage> {
    let mut history: Vec<ChatMessage> = Vec::new();
    let mut reasoning: Option<String> = None;
    for m in messages {
        if m.role == "assistant"
            && m.channel.as_deref() == Some("analysis")
            && m.recipient.is_none()
        {
            reasoning = Some(match reasoning.take() {
                Some(r) => format!("{r}\n{}", m.content),
                None => m.content.clone(),
            });
            continue;
        }
        // What the file records about the message is not the model's to see.
        let mut message = ChatMessage {
            timestamp: None,
            hyperparameters: None,
            extra: Default::default(),
            ..m.clone()
        };
        if m.role == "assistant" {
            message.reasoning_content = reasoning.take();
        }
        history.push(message);
    }
    history
}

/// Terminal styling: dim text only where the output is a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn dim(&self) -> &'static str {
        if self.color { "\x1b[2m" } else { "" }
    }
    fn reset(&self) -> &'static str {
        if self.color { "\x1b[0m" } else { "" }
    }
}

/// A chat in progress.
pub struct Session {
    pub generator: TokenGenerator,
    pub model_spec: String,
    pub prompt_config: Option<PromptConfig>,
    pub prompt_config_path: Option<PathBuf>,
    /// `--system`, replacing the prompt config's instructions.
    pub instructions: Option<String>,
    /// Flags and `\set`: the top settings layer.
    pub overrides: Hyperparameters,
    /// The model's generation_config.json defaults.
    pub generation_config: Option<Hyperparameters>,
    /// Settings restored from a loaded conversation (below the prompt config).
    pub restored: Hyperparameters,
    pub conversation: Conversation,
    /// Where the conversation is saved after every exchange.
    pub save_path: Option<PathBuf>,
    pub effort: Option<ConfigEffort>,
    pub show_reasoning: bool,
    pub debug: bool,
    pub verbose: bool,
    pub profiles_file: PathBuf,
    pub style: Style,
    /// The GPT-OSS tools enabled for this chat.
    pub tools: Option<ToolBox>,
    /// Most tool calls per turn.
    pub max_tool_calls: usize,
    /// What holds every answer to a format (`--json-schema`, `--grammar`).
    pub output: Option<Box<dyn TokenConstraint>>,
    /// `--prompt-lookup N`: drafted tokens checked per step (0: off).
    pub prompt_lookup: usize,
}

impl Session {
    fn harmony(&self) -> bool {
        self.generator.loaded.harmony.is_some()
    }

    /// The settings for the next turn, and where each comes from.
    pub fn settings(&self) -> settings::Resolved {
        settings::resolve(
            Some(&self.overrides),
            self.prompt_config.as_ref().map(|c| &c.sampling),
            Some(&self.restored),
            self.generation_config.as_ref(),
            self.harmony(),
        )
    }

    fn setup(&self) -> PromptSetup {
        let mut setup = frontend_setup::prompt_setup(
            self.prompt_config.as_ref(),
            self.instructions.as_deref(),
            self.harmony(),
        );
        if let Some(effort) = self.effort {
            setup.reasoning_effort = Some(effort_from_config(effort));
        }
        if let Some(tools) = self.tools.as_ref().filter(|_| self.harmony()) {
            frontend_tools::declare(&mut setup, tools);
        }
        setup
    }

    /// Starts a conversation: the greeting of the prompt config, if any, is
    /// shown and becomes the assistant's first message.
    pub fn start(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        if !self.conversation.messages.is_empty() {
            return Ok(());
        }
        if let Some(greeting) = self
            .prompt_config
            .as_ref()
            .and_then(frontend_setup::greeting)
        {
            writeln!(out, "{greeting}")?;
            let mut message = Message::now("assistant", greeting);
            message.channel = self.harmony().then(|| "final".to_string());
            self.conversation.messages.push(message);
        }
        Ok(())
    }

    /// Runs one in-chat command; returns false to leave.
    pub fn command(&mut self, command: Command, out: &mut impl Write) -> anyhow::Result<bool> {
        match command {
            Command::Quit => return Ok(false),
            Command::Help => writeln!(out, "{HELP}")?,
            Command::Show => {
                let resolved = self.settings();
                let values = serde_json::to_value(SettingsView(&resolved.settings))?;
                for (name, source) in &resolved.sources {
                    writeln!(out, "  {name} = {}  ({source})", values[name])?;
                }
                writeln!(
                    out,
                    "  reasoning: {}{}",
                    if self.show_reasoning {
                        "shown"
                    } else {
                        "hidden"
                    },
                    self.effort
                        .map(|e| format!(", effort {}", e))
                        .unwrap_or_default()
                )?;
            }
            Command::Set { name, value } => match self.overrides.set(&name, &value) {
                Ok(()) => writeln!(out, "{name} = {value}")?,
                Err(e) => writeln!(out, "error: {e}")?,
            },
            Command::Save(path) => {
                let Some(path) = path.or_else(|| self.save_path.clone()) else {
                    writeln!(
                        out,
                        "error: no file: \\save FILE (or start with --save-conversation FILE)"
                    )?;
                    return Ok(true);
                };
                match self.save(&path) {
                    Ok(()) => {
                        writeln!(out, "saved to {}", path.display())?;
                        self.save_path = Some(path);
                    }
                    Err(e) => writeln!(out, "error: {e:#}")?,
                }
            }
            Command::Load(path) => match self.load(&path) {
                Ok(()) => {
                    writeln!(
                        out,
                        "loaded {} ({} messages)",
                        path.display(),
                        self.conversation.messages.len()
                    )?;
                }
                Err(e) => writeln!(out, "error: {e:#}")?,
            },
            Command::Clear => {
                self.conversation.messages.clear();
                writeln!(out, "conversation cleared")?;
                self.start(out)?;
            }
            Command::Retry => {
                let Some(last_user) = self
                    .conversation
                    .messages
                    .iter()
                    .rposition(|m| m.role == "user")
                else {
                    writeln!(out, "error: nothing to retry yet")?;
                    return Ok(true);
                };
                self.conversation.messages.truncate(last_user + 1);
                self.reply(out)?;
            }
            Command::Reasoning(ReasoningCommand::Show(show)) => {
                self.show_reasoning = show;
                writeln!(out, "reasoning {}", if show { "shown" } else { "hidden" })?;
            }
            Command::Reasoning(ReasoningCommand::Effort(effort)) => {
                self.effort = Some(effort);
                if !self.harmony() {
                    writeln!(out, "note: only GPT-OSS models take a reasoning effort")?;
                }
                writeln!(out, "reasoning effort {}", effort)?;
            }
            Command::Debug(on) => {
                self.debug = on;
                writeln!(out, "debug {}", if on { "on" } else { "off" })?;
            }
            Command::Tools => match &self.tools {
                Some(tools) => {
                    for note in tools.notes() {
                        writeln!(out, "  {note}")?;
                    }
                    if !self.harmony() {
                        writeln!(out, "  (tools are used by GPT-OSS models only)")?;
                    }
                }
                None => writeln!(out, "no tools enabled (--browser, --python, --apply-patch)")?,
            },
            Command::PythonReset => match self.tools.as_mut().map(|t| t.reset_python()) {
                Some(true) => writeln!(out, "python session restarted")?,
                _ => writeln!(out, "error: the python tool is not enabled (--python)")?,
            },
            Command::Models => {
                match mlx_harmony_config::profiles::Profiles::load(&self.profiles_file) {
                    Ok(profiles) => {
                        for (name, profile) in &profiles.profiles {
                            writeln!(out, "  {name}: {:?}", profile.model)?;
                        }
                    }
                    Err(e) => writeln!(out, "error: {e}")?,
                }
            }
        }
        Ok(true)
    }

    /// Saves the conversation with the current model, prompt config and settings.
    pub fn save(&mut self, path: &Path) -> anyhow::Result<()> {
        let metadata = &mut self.conversation.metadata;
        metadata.model_path = Some(self.model_spec.clone());
        metadata.prompt_config_path = self
            .prompt_config_path
            .as_ref()
            .map(|p| p.display().to_string());
        let mut saved = self.restored.to_json_map();
        saved.extend(self.overrides.to_json_map());
        metadata.hyperparameters = saved;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if !mlx_harmony_frontend::tensor_parallel::is_follower() {
            // Under tensor parallelism rank 0 alone writes the file.
            self.conversation.save(path)?;
        }
        Ok(())
    }

    /// Replaces the conversation with a saved one; its settings come back
    /// below the ones set in this session.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let loaded = Conversation::load(path)?;
        self.restored = loaded.conversation.hyperparameters()?;
        self.conversation = loaded.conversation;
        Ok(())
    }

    /// Adds the user's message and generates the answer.
    pub fn turn(&mut self, text: &str, out: &mut impl Write) -> anyhow::Result<()> {
        self.conversation.messages.push(Message::now("user", text));
        self.reply(out)
    }

    /// Generates the assistant's answer to the conversation so far,
    /// streaming it to `out`, and records it (then autosaves). Tool calls to
    /// the enabled tools are run and shown, and the model goes on with their
    /// results. The generator's cancel handle stops it early (Ctrl-C); what
    /// was generated until then is kept.
    pub fn reply(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        let resolved = self.settings();
        let mut sampler = frontend_setup::sampler(&resolved.settings, &self.generator.loaded)?;
        if let Some(output) = &self.output {
            sampler.set_constraint(output.fresh());
        }
        self.reply_with(sampler, out)
    }

    /// [`Session::turn`] with a given sampler (e.g. [`Sampler::scripted`]
    /// to show the tool loop without trained weights).
    pub fn turn_with(
        &mut self,
        text: &str,
        sampler: Sampler,
        out: &mut impl Write,
    ) -> anyhow::Result<()> {
        self.conversation.messages.push(Message::now("user", text));
        self.reply_with(sampler, out)
    }

    fn reply_with(&mut self, mut sampler: Sampler, out: &mut impl Write) -> anyhow::Result<()> {
        let resolved = self.settings();
        let history = to_chat_history(&self.conversation.messages);
        let setup = self.setup();
        if self.debug {
            let prompt = self
                .generator
                .loaded
                .conversation_tokens(&setup, &history)?;
            let text = self
                .generator
                .loaded
                .tokenizer
                .decode(&prompt, false)
                .unwrap_or_default();
            writeln!(
                out,
                "--- prompt ({} tokens) ---\n{text}\n--- end of prompt ---",
                prompt.len()
            )?;
        }
        let style = self.style;
        let show_reasoning = self.show_reasoning;
        // What is being printed: the answer, reasoning, or a tool call.
        let mut printing: Option<String> = None;
        let mut write_error = None;
        let tools = if self.harmony() {
            self.tools.as_mut()
        } else {
            None
        };
        let mut runner = tools.map(frontend_tools::Runner);
        let mut generation = GenerateOptions::new(resolved.settings.max_tokens as usize)
            .with_stop(&resolved.settings.stop);
        generation.prompt_lookup = self.prompt_lookup;
        let options = TurnOptions {
            generation,
            max_tool_calls: self.max_tool_calls,
        };
        let turn = turn::turn(
            &mut self.generator,
            &setup,
            &history,
            &mut sampler,
            &options,
            runner.as_mut().map(|r| r as &mut dyn ToolRunner),
            |event| {
                let written = print_event(event, &mut printing, show_reasoning, style, out)
                    .and_then(|_| out.flush());
                if let Err(e) = written {
                    write_error.get_or_insert(e);
                }
            },
        )?;
        if printing.as_deref().is_some_and(|p| p != "answer") {
            write!(out, "{}", style.reset())?;
        }
        if let Some(e) = write_error {
            bail!("cannot write the answer: {e}");
        }
        let cancelled = turn
            .generations
            .iter()
            .any(|g| g.finish_reason == FinishReason::Cancelled);
        if cancelled {
            write!(out, " [stopped]")?;
        }
        writeln!(out)?;
        for generation in &turn.generations {
            if self.debug {
                let raw = self
                    .generator
                    .loaded
                    .tokenizer
                    .decode(&generation.tokens, false)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "--- raw completion ({} tokens) ---\n{raw}\n--- end of completion ---",
                    generation.tokens.len()
                )?;
            }
            if self.verbose {
                writeln!(
                    out,
                    "{}{}{}",
                    style.dim(),
                    report::turn_line(generation),
                    style.reset()
                )?;
            }
        }
        match (&turn.pending_call, turn.hit_call_limit) {
            (Some(tool), true) => writeln!(
                out,
                "note: stopped at the limit of {} tool calls in one turn (--max-tool-calls); the \
                 last call, to {tool}, was not run. Say \"go on\" to let the model continue.",
                self.max_tool_calls
            )?,
            (Some(tool), false) if !cancelled => writeln!(
                out,
                "note: the model called {tool}, which is not enabled here (tools: --browser, \
                 --python, --apply-patch)"
            )?,
            _ => {}
        }
        // Record the turn with the settings that made it.
        let used = serde_json::to_value(SettingsView(&resolved.settings))?;
        let used = used.as_object().cloned().unwrap_or_default();
        for message in &turn.messages {
            if let Some(reasoning) = &message.reasoning_content {
                let mut analysis = Message::now("assistant", reasoning.clone());
                analysis.channel = Some("analysis".into());
                analysis.hyperparameters = Some(used.clone());
                self.conversation.messages.push(analysis);
            }
            let mut recorded = Message {
                reasoning_content: None,
                ..message.clone()
            };
            recorded.timestamp = Some(timestamp_now());
            recorded.channel = message.channel.clone().or_else(|| {
                (self.harmony() && message.role == "assistant").then(|| "final".to_string())
            });
            recorded.hyperparameters = Some(used.clone());
            self.conversation.messages.push(recorded);
        }
        if let Some(path) = self.save_path.clone() {
            self.save(&path)
                .with_context(|| format!("autosave to {}", path.display()))?;
        }
        Ok(())
    }
}

/// Starts printing `what` (with `header`, dimmed, unless it is the answer)
/// unless it is already being printed.
fn switch_to(
    printing: &mut Option<String>,
    what: String,
    header: &str,
    style: Style,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if printing.as_deref() == Some(what.as_str()) {
        return Ok(());
    }
    let was_dim = printing.as_deref().is_some_and(|p| p != "answer");
    let opened = printing.is_some();
    *printing = Some(what.clone());
    if was_dim {
        write!(out, "{}", style.reset())?;
    }
    if opened {
        writeln!(out)?;
    }
    if what == "answer" {
        Ok(())
    } else {
        write!(out, "{}{header}", style.dim())
    }
}

/// How much of a tool's output the transcript shows (the model gets all).
const SHOWN_TOOL_LINES: usize = 20;

/// Prints one event of a turn. `printing` is what is being printed (the
/// answer, a reasoning channel, or a tool call), so that a header is written
/// when that changes.
fn print_event(
    event: TurnEvent,
    printing: &mut Option<String>,
    show_reasoning: bool,
    style: Style,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match event {
        TurnEvent::Reply(ReplyEvent::Answer(text)) => {
            switch_to(printing, "answer".into(), "", style, out)?;
            write!(out, "{text}")
        }
        TurnEvent::Reply(ReplyEvent::Reasoning { channel, text }) => {
            if !show_reasoning {
                return Ok(());
            }
            switch_to(
                printing,
                format!("reasoning:{channel}"),
                &format!("[{channel}] "),
                style,
                out,
            )?;
            write!(out, "{text}")
        }
        TurnEvent::Reply(ReplyEvent::ToolCall { recipient, text }) => {
            switch_to(
                printing,
                format!("call:{recipient}"),
                &format!("[call {recipient}]\n"),
                style,
                out,
            )?;
            write!(out, "{text}")
        }
        TurnEvent::ToolResult { author, content } => {
            // Always a new block, even after another result of the same tool.
            *printing = Some(String::new());
            switch_to(
                printing,
                format!("result:{author}"),
                &format!("[{author} answered]\n"),
                style,
                out,
            )?;
            let lines: Vec<&str> = content.lines().collect();
            let shown = lines.len().min(SHOWN_TOOL_LINES);
            write!(out, "{}", lines[..shown].join("\n"))?;
            if lines.len() > shown {
                write!(out, "\n[... {} more lines]", lines.len() - shown)?;
            }
            Ok(())
        }
    }
}

/// Resolved settings as the JSON a conversation records.
struct SettingsView<'a>(&'a settings::GenerationSettings);

impl serde::Serialize for SettingsView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let h = Hyperparameters {
            temperature: Some(s.temperature),
            top_p: Some(s.top_p),
            top_k: Some(s.top_k),
            min_p: Some(s.min_p),
            min_tokens_to_keep: Some(s.min_tokens_to_keep),
            max_tokens: Some(s.max_tokens),
            repetition_penalty: Some(s.repetition_penalty),
            repetition_context_size: Some(s.repetition_context_size),
            xtc_probability: Some(s.xtc_probability),
            xtc_threshold: Some(s.xtc_threshold),
            seed: Some(s.seed.map(|s| s as i64).unwrap_or(-1)),
            stop: Some(s.stop.clone()),
        };
        let map = h.to_json_map();
        // In the order of SETTINGS, as \show lists them.
        let ordered: serde_json::Map<String, serde_json::Value> = SETTINGS
            .iter()
            .filter_map(|(n, _)| map.get(*n).map(|v| (n.to_string(), v.clone())))
            .collect();
        ordered.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<Result<Command, String>> {
        Command::parse(line)
    }

    #[test]
    fn commands_parse_with_either_prefix_and_both_set_forms() {
        let set = Command::Set {
            name: "temperature".into(),
            value: "0.7".into(),
        };
        assert_eq!(parse("\\set temperature 0.7"), Some(Ok(set.clone())));
        assert_eq!(parse("/set temperature=0.7"), Some(Ok(set)));
        assert_eq!(parse("q"), Some(Ok(Command::Quit)));
        assert_eq!(parse("\\quit"), Some(Ok(Command::Quit)));
        assert_eq!(parse("/list"), Some(Ok(Command::Show)));
        assert_eq!(parse("\\save"), Some(Ok(Command::Save(None))));
        assert_eq!(
            parse("\\load a b.json"),
            Some(Ok(Command::Load("a b.json".into())))
        );
        assert_eq!(
            parse("\\reasoning HIGH"),
            Some(Ok(Command::Reasoning(ReasoningCommand::Effort(
                ConfigEffort::High
            ))))
        );
        assert_eq!(parse("\\debug on"), Some(Ok(Command::Debug(true))));
        assert!(matches!(parse("\\debug maybe"), Some(Err(_))));
        assert!(matches!(parse("\\set temperature"), Some(Err(_))));
        assert!(matches!(parse("\\frobnicate"), Some(Err(e)) if e.contains("\\help")));
        // Messages that merely start with a slash are messages.
        assert_eq!(parse("/usr/bin/env is a path"), None);
        assert_eq!(parse("hello"), None);
    }

    #[test]
    fn saved_analysis_messages_become_the_next_answers_reasoning() {
        let mut analysis = Message::new("assistant", "think");
        analysis.channel = Some("analysis".into());
        let mut answer = Message::new("assistant", "done");
        answer.channel = Some("final".into());
        let mut tool = Message::new("tool", "42");
        tool.name = Some("python".into());
        let history = to_chat_history(&[Message::new("user", "q"), analysis, answer, tool]);
        assert_eq!(history.len(), 3);
        assert_eq!(history[1].reasoning_content.as_deref(), Some("think"));
        assert_eq!(history[1].content, "done");
        assert_eq!(history[2].name.as_deref(), Some("python"));
    }
}
