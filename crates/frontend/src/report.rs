//! What the programs print about a generation, and how they exit.

use std::process::ExitCode;

use mlx_harmony_core::generate::{FinishReason, Generation};

/// Runs a program's body: exit status 0, or the error on one line of
/// standard error (`error: ...`, its causes after colons) and status 1.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    // Nothing MLX still computes may outlive the return from `main`.
    mlx_harmony_core::device::finish_queued_work();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::tensor_parallel::report_error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `mlx-harmony-generate --verbose`'s closing line: prompt and cache,
/// speeds, memory, and why it ended when it was not the model's choice.
pub fn summary_line(generation: &Generation) -> String {
    format!(
        "{} prompt tokens ({} cached, {:.1} tokens/s, first token after {:.2} s), {} generated tokens ({:.1} tokens/s{}), peak memory {:.1} MB{}",
        generation.prompt_tokens,
        generation.cached_tokens,
        generation.prefill_tokens_per_second,
        generation.time_to_first_token_seconds,
        generation.tokens.len(),
        generation.decode_tokens_per_second,
        speculative_note(generation),
        generation.peak_memory_bytes as f64 / 1e6,
        match generation.finish_reason {
            FinishReason::Stop | FinishReason::ToolCalls => "",
            FinishReason::StopString => ", ended at a stop string",
            FinishReason::Length | FinishReason::Cancelled => ", stopped at --max-tokens",
        }
    )
}

/// Speculative decoding's share (prompt lookup or a draft model): drafted
/// tokens kept, and tokens per checking step; empty without it.
fn speculative_note(generation: &Generation) -> String {
    if generation.drafted_tokens == 0 {
        return String::new();
    }
    format!(
        "; speculative: {} of {} drafted tokens kept ({:.0}%), {:.2} tokens per step",
        generation.accepted_draft_tokens,
        generation.drafted_tokens,
        100.0 * generation.accepted_draft_tokens as f64 / generation.drafted_tokens as f64,
        generation.tokens.len() as f64 / generation.speculative_steps.max(1) as f64
    )
}

/// The chat's statistics after each reply (`--verbose`), without styling.
pub fn turn_line(generation: &Generation) -> String {
    format!(
        "[{} prompt tokens, {} cached; first token after {:.2} s; {} tokens at {:.1} tokens/s{}; peak memory {:.1} MB]",
        generation.prompt_tokens,
        generation.cached_tokens,
        generation.time_to_first_token_seconds,
        generation.tokens.len(),
        generation.decode_tokens_per_second,
        speculative_note(generation),
        generation.peak_memory_bytes as f64 / 1e6,
    )
}
