//! `mlx-harmony-server`: serve a model over an OpenAI-compatible HTTP API.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use mlx_harmony_core::chat::PromptSetup;
use mlx_harmony_core::cli::{ModelArgs, SamplingArgs, ToolArgs};
use mlx_harmony_server::worker::{self, Stats};
use mlx_harmony_server::{AppState, router};

/// Serve a model over an OpenAI-compatible HTTP API.
///
/// Endpoints: POST /v1/chat/completions (streaming, tools, reasoning_content
/// for GPT-OSS), POST /v1/completions, GET /v1/models, GET /health (also
/// /v1/health). One generation runs at a time; other requests wait in a
/// bounded queue (429 when it is full). See docs/SERVER.md.
#[derive(Parser, Debug)]
#[command(name = "mlx-harmony-server", version)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,

    /// Require `Authorization: Bearer KEY` on /v1 endpoints.
    #[arg(
        long,
        value_name = "KEY",
        env = "MLX_HARMONY_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,

    /// The model's name in the API [default: the --model or profile value].
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,

    /// Instructions put before every conversation (system message; GPT-OSS: developer message).
    #[arg(long)]
    system: Option<String>,

    /// Requests that may wait for the model; more get 429.
    #[arg(long, value_name = "N", default_value_t = 16)]
    queue_size: usize,

    /// Largest request body, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    max_body_mb: usize,

    /// Print loading notes.
    #[arg(long)]
    verbose: bool,

    /// Testing clients without trained weights: a JSON list of reply texts
    /// (Harmony with special tokens, for GPT-OSS) played back in turn
    /// instead of sampling; the model still runs.
    #[arg(long, value_name = "FILE", hide = true)]
    scripted_replies: Option<std::path::PathBuf>,

    #[command(flatten)]
    sampling: SamplingArgs,

    #[command(flatten)]
    tools: ToolArgs,
}

async fn shutdown_signal(state: Arc<AppState>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    eprintln!("shutting down: finishing the answer in progress, refusing new requests");
    state.stats.shutting_down.store(true, Ordering::SeqCst);
    // The answer being generated ends now, cleanly (finish_reason "stop").
    state.cancel.cancel();
}

fn run(args: Args) -> anyhow::Result<()> {
    let Some(choice) = args.model.choice(None)? else {
        anyhow::bail!("no model: give --model ID|PATH or --profile NAME");
    };
    let cli_settings = args.sampling.hyperparameters()?;
    if args.tools.any() {
        // Fail on bad tool flags before loading the model.
        args.tools.toolbox()?;
    }
    let model_id = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.profile.clone().unwrap_or(choice.spec.clone()));
    let address = format!("{}:{}", args.host, args.port);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&address))
        .with_context(|| format!("cannot listen on {address}"))?;

    // The model lives on its own thread, which loads it and then serves jobs.
    let (jobs, queue) = tokio::sync::mpsc::channel(args.queue_size.max(1));
    let (ready, loaded) = std::sync::mpsc::channel();
    let stats = Arc::new(Stats::default());
    let model_args = args.model.clone();
    let verbose = args.verbose;
    let tools = args.tools.any().then(|| args.tools.clone());
    let max_tool_calls = args.tools.max_tool_calls;
    let worker_stats = stats.clone();
    let script_texts: Option<Vec<String>> = match &args.scripted_replies {
        Some(path) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("--scripted-replies {}", path.display()))?,
            )
            .with_context(|| {
                format!(
                    "--scripted-replies {}: expected a JSON list of strings",
                    path.display()
                )
            })?,
        ),
        None => None,
    };
    std::thread::Builder::new()
        .name("model".into())
        .spawn(move || match model_args.open(&choice, verbose) {
            Ok(opened) => {
                let info = (
                    opened.device.to_string(),
                    opened.generator.loaded.harmony.is_some(),
                    opened.prompt_config,
                    opened.generation_config,
                    opened.generator.cancel_handle(),
                );
                let script = match script_texts {
                    Some(texts) => {
                        let loaded = &opened.generator.loaded;
                        // Each reply ends with an end token, as a model's would.
                        let replies: Result<Vec<Vec<u32>>, _> = texts
                            .iter()
                            .map(|t| {
                                let mut ids = loaded.encode(t)?;
                                if let Some(&eos) = loaded.eos_token_ids.first()
                                    && !ids.last().is_some_and(|l| loaded.eos_token_ids.contains(l))
                                {
                                    ids.push(eos);
                                }
                                Ok::<_, mlx_harmony_core::Error>(ids)
                            })
                            .collect();
                        match replies {
                            Ok(replies) if !replies.is_empty() => {
                                Some(worker::Script { replies, next: 0 })
                            }
                            Ok(_) => {
                                let _ = ready.send(Err(anyhow::anyhow!(
                                    "--scripted-replies: the list is empty"
                                )));
                                return;
                            }
                            Err(e) => {
                                let _ = ready.send(Err(anyhow::anyhow!("--scripted-replies: {e}")));
                                return;
                            }
                        }
                    }
                    None => None,
                };
                let _ = ready.send(Ok(info));
                worker::run(
                    opened.generator,
                    queue,
                    worker_stats,
                    tools,
                    max_tool_calls,
                    script,
                );
            }
            Err(e) => {
                let _ = ready.send(Err(e.into()));
            }
        })
        .context("cannot start the model thread")?;
    let (device, harmony, prompt_config, generation_config, cancel) = loaded
        .recv()
        .context("the model thread stopped while loading")??;
    eprintln!("device: {device}");
    let setup =
        PromptSetup::from_prompt_config(prompt_config.as_ref(), args.system.as_deref(), harmony);
    let state = Arc::new(AppState {
        model_id: model_id.clone(),
        api_key: args.api_key.clone(),
        jobs,
        queue_size: args.queue_size.max(1),
        stats,
        cancel,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        harmony,
        setup,
        cli_settings,
        prompt_config_settings: prompt_config.map(|c| c.sampling),
        generation_config,
    });
    let app = router(state.clone(), args.max_body_mb.max(1) << 20);
    eprintln!(
        "serving {model_id} on http://{address}/v1 (chat/completions, completions, models; health at /health){}",
        if args.api_key.is_some() {
            "; API key required"
        } else {
            ""
        }
    );
    runtime.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(state))
            .await
    })?;
    eprintln!("stopped");
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
