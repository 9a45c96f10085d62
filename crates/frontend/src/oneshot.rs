//! `mlx-harmony-generate`: one prompt in, one completion out, streamed (the
//! answer to standard output, GPT-OSS reasoning dimmed to standard error)
//! or as one JSON object.

use std::io::{IsTerminal, Read, Write};

use mlx_harmony_config::settings;
use mlx_harmony_core::device;
use mlx_harmony_core::generate::GenerateOptions;
use mlx_harmony_core::reply::{self, ReplyEvent};

use crate::args::{ModelArgs, SamplingArgs};
use crate::{byte_model, report, setup};

/// The flags of `mlx-harmony-generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The prompt text (the user's message); - or no --prompt reads standard input.
    #[arg(long)]
    pub prompt: Option<String>,

    /// Print one JSON object (text, reasoning, tokens, statistics) instead of streaming.
    #[arg(long)]
    pub json: bool,

    /// Print the exact rendered prompt (special tokens included) and the raw completion to stderr.
    #[arg(long)]
    pub debug: bool,

    /// Instructions for the model (the system message; for GPT-OSS, the developer message).
    #[arg(long)]
    pub system: Option<String>,

    /// GPT-OSS: do not print the reasoning (analysis channel) to stderr.
    #[arg(long)]
    pub hide_reasoning: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub output: crate::args::OutputArgs,

    /// Print loading notes and prompt/generation statistics to stderr.
    #[arg(long)]
    pub verbose: bool,
}

fn run_byte_model(
    args: &GenerateArgs,
    model: &std::path::Path,
    prompt: &str,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let max_tokens = args.sampling.max_tokens.unwrap_or(32) as usize;
    let result = byte_model::run(model, prompt, max_tokens, |token| {
        // Each token is one byte of the demo vocabulary; show it as text where
        // it is printable ASCII and as its id otherwise, so nothing is hidden.
        match token {
            0x20..=0x7e => write!(stdout, "{}", token as u8 as char),
            _ => write!(stdout, "<{token}>"),
        }
        .and_then(|_| stdout.flush())
        .map_err(anyhow::Error::from)
    })?;
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens, {} generated tokens, {:.1} tokens/s",
        result.prompt_tokens, result.generated_tokens, result.tokens_per_second
    );
    Ok(())
}

/// The prompt: `--prompt`, or standard input for `-` or none.
fn prompt_text(args: &GenerateArgs) -> anyhow::Result<String> {
    Ok(match args.prompt.as_deref() {
        Some(text) if text != "-" => text.to_string(),
        _ => {
            if std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "no prompt: give --prompt TEXT, or pipe the prompt into standard input"
                );
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text.trim_end_matches('\n').to_string()
        }
    })
}

/// Runs `mlx-harmony-generate`.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let Some(choice) = args.model.choice(None)? else {
        anyhow::bail!("no model: give --model ID|PATH or --profile NAME");
    };
    let prompt_text = prompt_text(args)?;
    let flags = args.sampling.hyperparameters()?;
    let format = args.output.format()?;
    let demo = std::path::Path::new(&choice.spec);
    if byte_model::is_demo_checkpoint(demo) {
        eprintln!("device: {}", device::select(args.model.device.into())?);
        return run_byte_model(args, demo, &prompt_text);
    }
    let opened = args.model.open(&choice, args.verbose)?;
    eprintln!("device: {}", opened.device);
    let prompt_config = opened.prompt_config;
    let mut generator = opened.generator;
    let loaded = &generator.loaded;
    // Flags, then the prompt config, then the model's generation_config.json, then the built-in defaults.
    let resolved = settings::resolve(
        Some(&flags),
        prompt_config.as_ref().map(|c| &c.sampling),
        None,
        opened.generation_config.as_ref(),
        loaded.harmony.is_some(),
    )
    .settings;
    let mut sampler = setup::sampler(&resolved, loaded)?;
    if let Some(format) = &format {
        sampler.set_constraint(setup::output_constraint(format, loaded)?);
    }
    if let (true, Some(config)) = (args.debug, prompt_config.as_ref()) {
        let unknown = config.expanded(&config.clock()).unknown_placeholders;
        if !unknown.is_empty() {
            eprintln!(
                "prompt config: placeholders left as written (nothing defines them): {}",
                unknown.join(" ")
            );
        }
    }
    let setup = setup::prompt_setup(
        prompt_config.as_ref(),
        args.system.as_deref(),
        loaded.harmony.is_some(),
    );
    let prompt = loaded.prompt_tokens(&setup, &prompt_text)?;
    if args.debug {
        let rendered = loaded.tokenizer.decode(&prompt, false).unwrap_or_default();
        eprintln!(
            "--- prompt ({} tokens) ---\n{rendered}\n--- end of prompt ---",
            prompt.len()
        );
    }
    let tokenizer = loaded.tokenizer.clone();
    let loaded_is_harmony = loaded.harmony.is_some();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut write_error = None;
    let mut last_channel = None::<String>;
    let mut options = GenerateOptions::new(resolved.max_tokens as usize).with_stop(&resolved.stop);
    options.prompt_lookup = args.model.prompt_lookup.unwrap_or(0) as usize;
    let reply = reply::reply(&mut generator, &prompt, &mut sampler, &options, |event| {
        if args.json {
            return;
        }
        let written = match event {
            ReplyEvent::Answer(text) => stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush()),
            _ if args.hide_reasoning => Ok(()),
            ReplyEvent::Reasoning { channel, text }
            | ReplyEvent::ToolCall {
                recipient: channel,
                text,
            } => {
                // Reasoning, preambles and tool calls, dimmed, on stderr.
                let heading = if Some(channel) != last_channel.as_deref() {
                    last_channel = Some(channel.to_string());
                    format!("\x1b[2m[{channel}] ")
                } else {
                    "\x1b[2m".to_string()
                };
                write!(stderr, "{heading}{text}\x1b[0m")
            }
        };
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
    })?;
    let result = &reply.generation;
    let answer = reply.message.content.clone();
    let reasoning = reply.message.reasoning_content.clone().unwrap_or_default();
    if let Some(tool) = reply.tool_call() {
        eprintln!(
            "note: the model called the tool {tool:?}; mlx-harmony-generate runs no tools (mlx-harmony-chat does)"
        );
    }
    if let Some(e) = write_error {
        return Err(anyhow::anyhow!("cannot write the output: {e}"));
    }
    if args.debug {
        let raw = tokenizer.decode(&result.tokens, false).unwrap_or_default();
        eprintln!(
            "--- raw completion ({} tokens) ---\n{raw}\n--- end of completion ---",
            result.tokens.len()
        );
    }
    if args.json {
        let json = serde_json::json!({
            "text": if reply.tool_call().is_some() { String::new() } else { answer },
            "tool_call": reply.tool_call().map(|recipient| serde_json::json!({
                "recipient": recipient,
                "arguments": reply.message.content,
            })),
            "reasoning": if loaded_is_harmony { Some(reasoning) } else { None },
            "tokens": result.tokens,
            "finish_reason": result.finish_reason.as_str(),
            "stats": {
                "prompt_tokens": result.prompt_tokens,
                "cached_tokens": result.cached_tokens,
                "generated_tokens": result.tokens.len(),
                "time_to_first_token_seconds": result.time_to_first_token_seconds,
                "prefill_tokens_per_second": result.prefill_tokens_per_second,
                "decode_tokens_per_second": result.decode_tokens_per_second,
                "peak_memory_bytes": result.peak_memory_bytes,
                "drafted_tokens": result.drafted_tokens,
                "accepted_draft_tokens": result.accepted_draft_tokens,
                "speculative_steps": result.speculative_steps,
            },
        });
        writeln!(stdout, "{json}")?;
        return Ok(());
    }
    writeln!(stdout)?;
    if args.verbose {
        eprintln!("{}", report::summary_line(result));
    }
    Ok(())
}
