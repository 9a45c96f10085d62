//! `mlx-harmony-server`: serve a model over OpenAI's and Anthropic's HTTP APIs.

use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_frontend::report;
use mlx_harmony_server::serve::{self, ServeArgs};

/// Serve a model over OpenAI's and Anthropic's HTTP APIs.
///
/// Endpoints: POST /v1/chat/completions (streaming, tools, reasoning_content
/// for GPT-OSS), POST /v1/completions, POST /v1/responses (OpenAI's
/// Responses API, as Codex speaks it), POST /v1/messages and
/// /v1/messages/count_tokens (Anthropic's Messages API, as Claude Code
/// speaks it), GET /v1/models, GET /health (also /v1/health), GET /metrics
/// (Prometheus). Up to --max-concurrency requests decode together
/// (continuous batching); others wait in a bounded queue (429 when it is
/// full). See docs/SERVER.md.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-server", version)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    report::exit_code(serve::run(
        mlx_harmony_frontend::args::parse::<Args>().serve,
    ))
}
