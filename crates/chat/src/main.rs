//! `mlx-harmony-chat`: chat with a model in the terminal.

use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_chat::repl::{self, ChatArgs};
use mlx_harmony_frontend::report;

/// Chat with a model in the terminal.
///
/// Type a message and press Enter; \help lists the in-chat commands
/// (\set, \save, \load, \retry, ...). Ctrl-C stops an answer, Ctrl-D or
/// \quit leaves. GPT-OSS models speak Harmony; their reasoning is shown
/// dimmed (\reasoning hide to hide it). Settings come from, in order: these
/// flags and \set, the prompt config, a resumed conversation, the model's
/// generation_config.json, the built-in defaults.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-chat", version)]
struct Args {
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() -> ExitCode {
    report::exit_code(repl::run(mlx_harmony_frontend::args::parse::<Args>().chat))
}
