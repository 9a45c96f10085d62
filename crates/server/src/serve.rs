//! The server program: its flags, loading the model on the model thread,
//! and serving the API until a shutdown signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use mlx_harmony_config::prompt_config::PromptConfig;
use mlx_harmony_config::settings::Hyperparameters;
use mlx_harmony_core::generate::Cancel;
#[cfg(feature = "scripted-replies")]
use mlx_harmony_core::generate::LoadedModel;
use mlx_harmony_frontend::args::{ModelArgs, ModelChoice, SamplingArgs, ToolArgs};
use mlx_harmony_frontend::setup as frontend_setup;

use crate::metrics::Stats;
use crate::worker::{self, WorkerConfig};
use crate::{AppState, router};

/// The flags of `mlx-harmony-server`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Require `Authorization: Bearer KEY` on /v1 endpoints.
    #[arg(
        long,
        value_name = "KEY",
        env = "MLX_HARMONY_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// The model's name in the API [default: the --model or profile value].
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// Instructions put before every conversation (system message; GPT-OSS: developer message).
    #[arg(long)]
    pub system: Option<String>,

    /// Requests decoded together (continuous batching); more wait in the queue.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_concurrency: usize,

    /// Bytes of finished requests' KV caches kept, so that a prompt that
    /// starts like an earlier one (the next turn, a shared system prompt)
    /// runs only its new tokens; 0 turns it off.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub prompt_cache_bytes: usize,

    /// Keep the prompt cache across restarts in this file (safetensors):
    /// loaded at start when it exists and was written for the same --model,
    /// written at shutdown. Agents that resend a long system prompt then find
    /// it cached after a restart.
    #[arg(long, value_name = "PATH")]
    pub prompt_cache_file: Option<std::path::PathBuf>,

    /// Requests that may wait for the model; more get 429.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub queue_size: usize,

    /// Largest request body, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub max_body_mb: usize,

    /// After SIGTERM or Ctrl-C: seconds to wait for open connections (a
    /// client still sending its request, say) before closing them.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Print loading notes.
    #[arg(long)]
    pub verbose: bool,

    /// Testing clients without trained weights: a JSON list of reply texts
    /// (Harmony with special tokens, for GPT-OSS) played back in turn
    /// instead of sampling; the model still runs. Test builds only (the
    /// `scripted-replies` feature).
    #[cfg(feature = "scripted-replies")]
    #[arg(long, value_name = "FILE", hide = true)]
    pub scripted_replies: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub tools: ToolArgs,
}

async fn shutdown_signal(state: Arc<AppState>, signalled: Arc<tokio::sync::Notify>) {
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
    signalled.notify_one();
}

/// What the model thread reports once the model is loaded.
struct Loaded {
    device: String,
    harmony: bool,
    prompt_config: Option<PromptConfig>,
    generation_config: Option<Hyperparameters>,
    cancel: Cancel,
    grammars: Result<mlx_harmony_grammar::Grammars, String>,
}

/// The reply texts of `--scripted-replies`, read before the model loads.
#[cfg(feature = "scripted-replies")]
fn read_script(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--scripted-replies {}", path.display()))?;
    let texts = serde_json::from_str(&text).with_context(|| {
        format!(
            "--scripted-replies {}: expected a JSON list of strings",
            path.display()
        )
    })?;
    Ok(Some(texts))
}

/// The scripted replies as tokens, each ending with an end token as a
/// model's would.
#[cfg(feature = "scripted-replies")]
fn script(texts: &[String], loaded: &LoadedModel) -> anyhow::Result<worker::Script> {
    let replies = texts
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
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--scripted-replies: {e}"))?;
    if replies.is_empty() {
        anyhow::bail!("--scripted-replies: the list is empty");
    }
    Ok(worker::Script { replies, next: 0 })
}

/// The model thread's settings, from the flags.
fn worker_config(args: &ServeArgs, choice: &ModelChoice) -> WorkerConfig {
    WorkerConfig {
        tools: args.tools.any().then(|| args.tools.clone()),
        max_tool_calls: args.tools.max_tool_calls,
        max_concurrency: args.max_concurrency.max(1),
        prompt_lookup: args.model.prompt_lookup.unwrap_or(0) as usize,
        prompt_cache_bytes: args.prompt_cache_bytes,
        prompt_cache_file: args
            .prompt_cache_file
            .clone()
            .map(|path| (path, choice.spec.clone())),
        #[cfg(feature = "scripted-replies")]
        script: None,
    }
}

/// `--tensor-parallel`: joins the group; `true` on the ranks other than 0,
/// which then follow rank 0's batch instead of serving (rank 0 alone
/// listens and answers). Refuses what the other ranks cannot follow.
fn join_tensor_parallel(args: &ServeArgs) -> anyhow::Result<bool> {
    if !args.model.tensor_parallel {
        return Ok(false);
    }
    if args.tools.any() {
        anyhow::bail!(
            "--tensor-parallel: the server's own tools (--python, --browser, --apply-patch) run \
             their requests one at a time outside the batch, which the other ranks do not \
             follow; serve without them (clients can still run their own tools)"
        );
    }
    if args.prompt_cache_file.is_some() {
        anyhow::bail!(
            "--tensor-parallel: --prompt-cache-file holds a whole model's keys and values, \
             and each rank holds its part of the heads; serve without it"
        );
    }
    let group = mlx_harmony_frontend::tensor_parallel::join()?;
    Ok(group.rank() != 0)
}

/// A rank other than 0: loads its part of the model and runs rank 0's
/// batch with it until rank 0's server stops.
fn follow(args: &ServeArgs, choice: &ModelChoice) -> anyhow::Result<()> {
    // Ctrl-C in the launcher's terminal reaches every rank: rank 0 finishes
    // the answers in progress, which need this rank, and then releases it.
    // SAFETY: setting a signal's disposition to "ignore".
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let config = worker_config(args, choice);
    let opened = args.model.open(choice, args.verbose)?;
    worker::follow(opened.generator, &config)
}

/// Loads the model on its own thread, which then serves jobs from `queue`
/// until it closes; returns what the handlers need to know of the model.
fn start_model_thread(
    args: &ServeArgs,
    choice: ModelChoice,
    queue: tokio::sync::mpsc::Receiver<worker::Job>,
    stats: Arc<Stats>,
) -> anyhow::Result<(
    Loaded,
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<()>,
)> {
    let (ready, loaded) = std::sync::mpsc::channel();
    // Said once the worker's loop has returned (the queue closed) and the
    // model, and with it every MLX array of the thread, is dropped.
    let (finished, model_done) = std::sync::mpsc::channel();
    let model_args = args.model.clone();
    let verbose = args.verbose;
    #[allow(unused_mut)]
    let mut config = worker_config(args, &choice);
    #[cfg(feature = "scripted-replies")]
    let script_texts = read_script(args.scripted_replies.as_deref())?;
    let thread = std::thread::Builder::new()
        .name("model".into())
        .spawn(move || {
            let opened = match model_args.open(&choice, verbose) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            #[cfg(feature = "scripted-replies")]
            if let Some(texts) = &script_texts {
                match script(texts, &opened.generator.loaded) {
                    Ok(script) => config.script = Some(script),
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
            }
            let loaded = &opened.generator.loaded;
            let grammars = mlx_harmony_grammar::Grammars::new(
                &loaded.tokenizer,
                loaded.model.vocab_size().max(0) as usize,
                &loaded.eos_token_ids,
                loaded.harmony.is_some(),
            )
            .map(|grammars| match &loaded.chat_template {
                Some(template) => grammars.with_call_style(template.call_style()),
                None => grammars,
            })
            .map_err(|e| e.to_string());
            if let Err(why) = &grammars {
                eprintln!("warning: {why}; requests for them get a 400");
            }
            let _ = ready.send(Ok(Loaded {
                grammars,
                device: opened.device.to_string(),
                harmony: opened.generator.loaded.harmony.is_some(),
                prompt_config: opened.prompt_config,
                generation_config: opened.generation_config,
                cancel: opened.generator.cancel_handle(),
            }));
            worker::run(opened.generator, queue, stats, config);
            let _ = finished.send(());
        })
        .context("cannot start the model thread")?;
    let loaded = loaded
        .recv()
        .context("the model thread stopped while loading")??;
    Ok((loaded, model_done, thread))
}

/// Runs `mlx-harmony-server` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
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
    if join_tensor_parallel(&args)? {
        return follow(&args, &choice);
    }
    let address = format!("{}:{}", args.host, args.port);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&address))
        .with_context(|| format!("cannot listen on {address}"))?;

    // The model lives on its own thread, which loads it and then serves jobs.
    let (jobs, queue) = tokio::sync::mpsc::channel(args.queue_size.max(1));
    let stats = Arc::new(Stats::default());
    let (
        Loaded {
            device,
            harmony,
            prompt_config,
            generation_config,
            cancel,
            grammars,
        },
        model_done,
        model_thread,
    ) = start_model_thread(&args, choice, queue, stats.clone())?;
    eprintln!("device: {device}");
    let setup =
        frontend_setup::prompt_setup(prompt_config.as_ref(), args.system.as_deref(), harmony);
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
        responses: Default::default(),
        grammars,
    });
    let app = router(state.clone(), args.max_body_mb.max(1) << 20);
    eprintln!(
        "serving {model_id} on http://{address}/v1 (chat/completions, completions, responses, messages, models; health at /health){}",
        if args.api_key.is_some() {
            "; API key required"
        } else {
            ""
        }
    );
    let signalled = Arc::new(tokio::sync::Notify::new());
    let deadline = Duration::from_secs(args.shutdown_timeout);
    let served = runtime.block_on(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(state, signalled.clone()));
        let overdue = async {
            signalled.notified().await;
            tokio::time::sleep(deadline).await;
        };
        tokio::select! {
            served = server => served.map(|()| true),
            () = overdue => Ok(false),
        }
    })?;
    if !served {
        eprintln!(
            "shutting down: connections still open after {} s are closed",
            deadline.as_secs()
        );
    }
    // Dropping the runtime drops every connection and task, and with them
    // the last senders of the job queue: the model thread's loop returns once
    // its sequences have ended. The process must not exit while that thread
    // is still inside MLX (exit-time destructors would race it).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match model_done.recv_timeout(deadline + Duration::from_secs(5)) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // Its loop has returned; joining waits for the rest of its end,
            // the thread-local MLX state it frees as it exits, which must
            // not race the process's own exit (a SIGABRT was seen in CI when
            // main returned first).
            let _ = model_thread.join();
            eprintln!("stopped");
            Ok(())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // A tool call or a long prompt pass that does not end: leave
            // without running exit-time destructors under the model thread.
            eprintln!("stopped (the model thread was still busy)");
            unsafe { libc::_exit(0) }
        }
    }
}
