//! The tool loop of one user turn: the model replies; while the reply calls
//! a tool that the caller's [`ToolRunner`] runs, the tool's answer is added
//! and the model goes on from exactly where it stopped. How a tool runs is
//! not this crate's business: the programs pass a runner (the
//! `mlx-harmony-tools` executors, through the front end).

use mlx_harmony_format::Special;

use crate::chat_template::ChatMessage;
use crate::generate::{FinishReason, GenerateOptions, Generation, TokenGenerator};
use crate::prompt::{PromptSetup, to_harmony, tool_message};
use crate::reply::{ReplyEvent, reply};
use crate::sampling::Sampler;
use crate::{Error, Result};

/// What a tool answered: its author (the tool, e.g. `python`,
/// `browser.search`) and the text the model is shown.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    pub author: String,
    pub content: String,
}

/// Runs the tool calls of a turn.
pub trait ToolRunner {
    /// Whether this runner runs calls to `recipient` (`python`,
    /// `browser.open`, `functions.apply_patch`, ...). Calls it does not run
    /// end the turn, for the caller to answer.
    fn handles(&self, recipient: &str) -> bool;

    /// Runs one call; failures are answers too (the model is told).
    fn run(&mut self, recipient: &str, arguments: &str) -> ToolOutput;
}

/// How a turn runs: each reply's generation options, and how many tool
/// calls the model may make before it must answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnOptions {
    pub generation: GenerateOptions,
    pub max_tool_calls: usize,
}

/// A piece of a turn as it happens: the model's reply streaming, or a tool's
/// answer once it has run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TurnEvent<'a> {
    Reply(ReplyEvent<'a>),
    /// A tool ran; `author` is the tool (`python`, `browser.search`, ...).
    ToolResult {
        author: &'a str,
        content: &'a str,
    },
}

/// Everything one user turn added: the assistant's messages (tool calls and
/// the answer) and the tools' answers, in order.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    pub messages: Vec<ChatMessage>,
    /// One per model reply.
    pub generations: Vec<Generation>,
    /// The turn ended on a tool call that was not run: a tool that is not
    /// enabled here (the caller's to answer), or the call limit.
    pub pending_call: Option<String>,
    pub hit_call_limit: bool,
}

impl Turn {
    /// The last reply's generation (its stats and how it ended).
    pub fn last_generation(&self) -> Option<&Generation> {
        self.generations.last()
    }
}

/// One user turn: replies, and while a reply calls a tool that `tools`
/// runs, runs it, adds its answer and lets the model go on, at most
/// `options.max_tool_calls` times. Each new prompt extends the previous one,
/// so the prompt cache makes the continuation cheap.
pub fn turn(
    generator: &mut TokenGenerator,
    setup: &PromptSetup,
    history: &[ChatMessage],
    sampler: &mut Sampler,
    options: &TurnOptions,
    mut tools: Option<&mut dyn ToolRunner>,
    mut on_event: impl FnMut(TurnEvent),
) -> Result<Turn> {
    let mut turn = Turn::default();
    let mut conversation = history.to_vec();
    let mut calls = 0;
    let mut prompt = generator.loaded.conversation_tokens(setup, &conversation)?;
    let forced = generator.loaded.forced_call_tokens(setup)?;
    prompt.extend(&forced);
    // Only the first reply is forced; the prompts after it extend this one.
    let mut reply_options = GenerateOptions {
        opened: forced.len(),
        ..options.generation.clone()
    };
    loop {
        let reply = reply(generator, &prompt, sampler, &reply_options, |event| {
            on_event(TurnEvent::Reply(event))
        })?;
        reply_options.opened = 0;
        let cancelled = reply.generation.finish_reason == FinishReason::Cancelled;
        let call = reply.tool_call().map(str::to_string);
        conversation.push(reply.message.clone());
        turn.messages.push(reply.message.clone());
        turn.generations.push(reply.generation);
        let Some(recipient) = call else { break };
        let runnable = tools.as_deref().is_some_and(|t| t.handles(&recipient));
        if cancelled || !runnable {
            turn.pending_call = Some(recipient);
            break;
        }
        if calls == options.max_tool_calls {
            turn.pending_call = Some(recipient);
            turn.hit_call_limit = true;
            break;
        }
        calls += 1;
        let runner = tools.as_deref_mut().expect("checked above");
        let output = runner.run(&recipient, &reply.message.content);
        on_event(TurnEvent::ToolResult {
            author: &output.author,
            content: &output.content,
        });
        let answer = tool_message(&output.author, &output.content);
        prompt = match &generator.loaded.harmony {
            // Go on from exactly the tokens the model wrote (a re-render
            // would place the call's recipient differently and lose the
            // prompt cache, which sliding-window layers cannot trim).
            Some(encoding) => {
                let mut next = prompt;
                next.extend(&turn.generations.last().expect("pushed").tokens);
                next.push(encoding.special(Special::Call));
                let tool = to_harmony(&answer, &conversation)?;
                for message in &tool {
                    next.extend(
                        encoding
                            .render_message(message, !setup.functions.is_empty())
                            .map_err(|e| Error::Invalid(format!("Harmony: {e}")))?,
                    );
                }
                next.push(encoding.special(Special::Start));
                next.extend(generator.loaded.encode("assistant")?);
                next
            }
            None => {
                let mut with_answer = conversation.clone();
                with_answer.push(answer.clone());
                generator.loaded.conversation_tokens(setup, &with_answer)?
            }
        };
        conversation.push(answer.clone());
        turn.messages.push(answer);
    }
    Ok(turn)
}
