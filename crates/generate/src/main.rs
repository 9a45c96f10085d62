//! `mlx-harmony-generate`: one prompt in, one completion out.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mlx_harmony_config::profiles::{ModelRef, Profiles};
use mlx_harmony_config::prompt_config::PromptConfig;
use mlx_harmony_config::settings::{self, Hyperparameters};
use mlx_harmony_core::chat::{PromptSetup, ReplyEvent};
use mlx_harmony_core::device::{self, DeviceChoice};
use mlx_harmony_core::generate::TokenGenerator;
use mlx_harmony_core::generate_demo;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};

/// Generate text once from a prompt.
///
/// This build runs GGUF models of the Llama family (e.g. SmolLM2-135M-Instruct)
/// and Hugging Face / mlx-community folders (Llama, Mistral, Qwen2, Qwen3) with
/// their own tokenizer and chat template, and the random-weights demo
/// checkpoint. GPT-OSS models get their prompt in the Harmony format; their
/// answer (the final channel) goes to stdout and their reasoning to stderr.
///
/// Sampling settings come from, in order: these flags, the prompt config,
/// then the built-in defaults (temperature 0.8, top_p 0.9, max_tokens 512).
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-generate", version)]
struct Args {
    /// Model: a .gguf file (or a folder holding one), a model folder with
    /// config.json and tokenizer.json, or the demo checkpoint folder.
    #[arg(long, required_unless_present = "profile")]
    model: Option<PathBuf>,

    /// A profile (model and prompt config) from the profiles file.
    #[arg(long, conflicts_with = "model")]
    profile: Option<String>,

    /// The profiles file for --profile.
    #[arg(long, default_value = "profiles.json")]
    profiles_file: PathBuf,

    /// The prompt text (the user's message); - or no --prompt reads standard input.
    #[arg(long)]
    prompt: Option<String>,

    /// Print one JSON object (text, reasoning, tokens, statistics) instead of streaming.
    #[arg(long)]
    json: bool,

    /// Print the exact rendered prompt (special tokens included) and the raw completion to stderr.
    #[arg(long)]
    debug: bool,

    /// Instructions for the model (the system message; for GPT-OSS, the developer message).
    #[arg(long)]
    system: Option<String>,

    /// GPT-OSS: do not print the reasoning (analysis channel) to stderr.
    #[arg(long)]
    hide_reasoning: bool,

    /// JSON prompt config (identity, instructions, reasoning effort, sampling
    /// defaults; see docs/PROMPT_CONFIG_REFERENCE.md).
    #[arg(long)]
    prompt_config: Option<PathBuf>,

    /// Maximum number of tokens to generate [default: 512].
    #[arg(long)]
    max_tokens: Option<u32>,

    /// Sampling temperature, 0 to 2; 0 is greedy [default: 0.8].
    #[arg(long)]
    temperature: Option<f64>,

    /// Nucleus sampling mass, 0 to 1 [default: 0.9].
    #[arg(long)]
    top_p: Option<f64>,

    /// Keep only the k most likely tokens; 0 is off [default: 0].
    #[arg(long)]
    top_k: Option<u32>,

    /// Drop tokens below min_p times the top probability; 0 is off [default: 0].
    #[arg(long)]
    min_p: Option<f64>,

    /// top_p and min_p keep at least this many tokens [default: 1].
    #[arg(long)]
    min_tokens_to_keep: Option<u32>,

    /// Penalty for recently generated tokens; 1 is off [default: 1].
    #[arg(long)]
    repetition_penalty: Option<f64>,

    /// How many recent tokens the repetition penalty considers [default: 20].
    #[arg(long)]
    repetition_context_size: Option<u32>,

    /// XTC: chance per token of excluding the top choices [default: 0].
    #[arg(long)]
    xtc_probability: Option<f64>,

    /// XTC: probability threshold, 0 to 0.5 [default: 0.1].
    #[arg(long)]
    xtc_threshold: Option<f64>,

    /// Stop when the model writes this text (not shown); repeat for several.
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,

    /// Random seed; -1 is a fresh one [default: -1].
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<i64>,

    /// Where to run: gpu (Metal or CUDA), cpu, or auto (the GPU when MLX has one).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,

    /// Print prompt/generation statistics to stderr.
    #[arg(long)]
    verbose: bool,
}

fn run_demo(args: &Args, model: &std::path::Path, prompt: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let max_tokens = args.max_tokens.unwrap_or(32) as usize;
    let result = generate_demo::run(model, prompt, max_tokens, |token| {
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

fn run(args: Args) -> anyhow::Result<()> {
    // The model and prompt config: from --profile, or the flags.
    let (model, profile_config) = match &args.profile {
        Some(name) => {
            let profiles = Profiles::load(&args.profiles_file)?;
            let profile = profiles.get(name)?;
            let model = match &profile.model {
                ModelRef::Path(path) => path.clone(),
                ModelRef::HubId(id) => anyhow::bail!(
                    "profile {name:?} names the Hugging Face model {id:?}; downloading from the hub is not in this build yet: give a local path"
                ),
            };
            (model, profile.prompt_config.clone())
        }
        None => (
            args.model
                .clone()
                .expect("clap requires --model without --profile"),
            None,
        ),
    };
    let prompt_text = match args.prompt.as_deref() {
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
    };
    let selected = device::select(args.device)?;
    eprintln!("device: {selected}");
    if mlx_harmony_core::generate_demo::is_demo_checkpoint(&model) {
        return run_demo(&args, &model, &prompt_text);
    }
    // Flags, then the prompt config, then the built-in defaults.
    let flags = Hyperparameters {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        min_tokens_to_keep: args.min_tokens_to_keep,
        max_tokens: args.max_tokens,
        repetition_penalty: args.repetition_penalty,
        repetition_context_size: args.repetition_context_size,
        xtc_probability: args.xtc_probability,
        xtc_threshold: args.xtc_threshold,
        seed: args.seed,
        stop: (!args.stop.is_empty()).then(|| args.stop.clone()),
    };
    let flags =
        Hyperparameters::from_json_map(&flags.to_json_map(), std::path::Path::new("command line"))?;
    let prompt_config = args
        .prompt_config
        .clone()
        .or(profile_config)
        .as_deref()
        .map(PromptConfig::load)
        .transpose()?;
    let resolved = settings::resolve(
        Some(&flags),
        prompt_config.as_ref().map(|c| &c.sampling),
        None,
        None,
        false,
    )
    .settings;
    let mut generator = TokenGenerator::load(&model)?;
    let loaded = &generator.loaded;
    let mut sampler = Sampler::new(SamplingSettings {
        temperature: resolved.temperature as f32,
        top_p: resolved.top_p as f32,
        top_k: resolved.top_k,
        min_p: resolved.min_p as f32,
        min_tokens_to_keep: resolved.min_tokens_to_keep,
        xtc_probability: resolved.xtc_probability as f32,
        xtc_threshold: resolved.xtc_threshold as f32,
        xtc_special_tokens: loaded.eos_token_ids.clone(),
        repetition_penalty: resolved.repetition_penalty as f32,
        repetition_context_size: resolved.repetition_context_size,
        logit_bias: Vec::new(),
        seed: resolved.seed,
    })?;
    if let (true, Some(config)) = (args.debug, prompt_config.as_ref()) {
        let unknown = config.expanded(&config.clock()).unknown_placeholders;
        if !unknown.is_empty() {
            eprintln!(
                "prompt config: placeholders left as written (nothing defines them): {}",
                unknown.join(" ")
            );
        }
    }
    let setup = PromptSetup::from_prompt_config(
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
    let reply = generator.reply(
        &prompt,
        &mut sampler,
        resolved.max_tokens as usize,
        &resolved.stop,
        |event| {
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
        },
    )?;
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
        let finish = if result.finished_by_eos {
            "stop"
        } else if result.finished_by_stop {
            "stop_string"
        } else if result.cancelled {
            "cancelled"
        } else {
            "length"
        };
        let json = serde_json::json!({
            "text": if reply.tool_call().is_some() { String::new() } else { answer },
            "tool_call": reply.tool_call().map(|recipient| serde_json::json!({
                "recipient": recipient,
                "arguments": reply.message.content,
            })),
            "reasoning": if loaded_is_harmony { Some(reasoning) } else { None },
            "tokens": result.tokens,
            "finish_reason": finish,
            "stats": {
                "prompt_tokens": result.prompt_tokens,
                "cached_tokens": result.cached_tokens,
                "generated_tokens": result.tokens.len(),
                "time_to_first_token_seconds": result.time_to_first_token_seconds,
                "prefill_tokens_per_second": result.prefill_tokens_per_second,
                "decode_tokens_per_second": result.decode_tokens_per_second,
                "peak_memory_bytes": result.peak_memory_bytes,
            },
        });
        writeln!(stdout, "{json}")?;
        return Ok(());
    }
    writeln!(stdout)?;
    if args.verbose {
        eprintln!(
            "{} prompt tokens ({} cached, {:.1} tokens/s, first token after {:.2} s), {} generated tokens ({:.1} tokens/s), peak memory {:.1} MB{}",
            result.prompt_tokens,
            result.cached_tokens,
            result.prefill_tokens_per_second,
            result.time_to_first_token_seconds,
            result.tokens.len(),
            result.decode_tokens_per_second,
            result.peak_memory_bytes as f64 / 1e6,
            if result.finished_by_eos {
                ""
            } else if result.finished_by_stop {
                ", ended at a stop string"
            } else {
                ", stopped at --max-tokens"
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
