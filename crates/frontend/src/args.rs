//! The command-line pieces the programs share: which model (path, hub id or
//! profile) with its prompt config and loading options, the sampling flags
//! and the tool flags. Each program flattens these into its own `clap`
//! parser, so that a flag means the same thing, with the same default,
//! everywhere.

use std::path::{Path, PathBuf};

use mlx_harmony_config::profiles::{ModelRef, Profiles};
use mlx_harmony_config::prompt_config::PromptConfig;
use mlx_harmony_config::settings::Hyperparameters;
use mlx_harmony_tools::{BrowserConfig, PatchConfig, PythonConfig, ToolBox, ToolsConfig};

use anyhow::{Context, Result};

use crate::flat;
use mlx_harmony_core::device::{self, DeviceChoice, DeviceKind, SelectedDevice};
use mlx_harmony_core::draft::DraftModel;
use mlx_harmony_core::generate::TokenGenerator;
use mlx_harmony_core::hub::HubOptions;
use mlx_harmony_core::loading::{self, LoadOptions};
use mlx_harmony_core::models::cache::KvQuantization;

/// Which model, with what prompt config, loaded how.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Model: a Hugging Face id (e.g. mlx-community/Qwen3-0.6B-4bit,
    /// fetched into the Hugging Face cache), a model folder with config.json
    /// and tokenizer.json, or a .gguf file.
    #[arg(long, value_name = "ID|PATH")]
    pub model: Option<String>,

    /// A profile (model and prompt config) from the profiles file.
    #[arg(long, conflicts_with = "model")]
    pub profile: Option<String>,

    /// The profiles file for --profile.
    #[arg(long, default_value = "profiles.json", value_name = "FILE")]
    pub profiles_file: PathBuf,

    /// JSON prompt config (identity, instructions, reasoning effort, example
    /// dialogues, sampling defaults; see docs/PROMPT_CONFIG_REFERENCE.md).
    #[arg(long, value_name = "FILE")]
    pub prompt_config: Option<PathBuf>,

    /// Hugging Face revision (branch, tag or commit) of a hub model [default: main].
    #[arg(long)]
    pub revision: Option<String>,

    /// Read the weight files once before loading, to warm the file cache
    /// [default: off; MLX's own parallel reads measured faster, cold or warm].
    #[arg(long, conflicts_with = "no_prewarm_cache")]
    pub prewarm_cache: bool,

    /// Do not prewarm, even where the prompt config's "prewarm_cache" asks for it.
    #[arg(long)]
    pub no_prewarm_cache: bool,

    /// Run as one rank of a tensor-parallel group that MLX's launcher set
    /// up (`mlx.launch -n 2 --backend ring|nccl|jaccl -- PROGRAM ...
    /// --tensor-parallel`): each rank keeps its part of every attention and
    /// MLP layer, and rank 0 prints; see docs/DISTRIBUTED.md.
    #[arg(long)]
    pub tensor_parallel: bool,

    /// Keep the weights resident in memory: Metal wired memory, or locked
    /// pages on the CPU (needs a large enough `ulimit -l`).
    #[arg(long)]
    pub mlock: bool,

    /// Bound the KV cache to N positions: past it the first 4 and the newest
    /// are kept (as mlx-lm's --max-kv-size), so memory stays flat in long
    /// generations. Llama-family models; GPT-OSS's sliding layers are bounded
    /// already. Overrides the prompt config's "max_kv_size".
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_kv_size: Option<u32>,

    /// Keep the KV cache quantized to this many bits (4 or 8), as mlx-lm's
    /// --kv-bits: about 0.28x (4 bits) or 0.53x (8 bits) of a 16-bit
    /// cache's memory, for long contexts (from --quantized-kv-start
    /// positions on); attention runs on the quantized values. Llama-family
    /// models; not with --max-kv-size.
    #[arg(long, value_name = "BITS", value_parser = ["4", "8"], conflicts_with = "max_kv_size")]
    pub kv_bits: Option<String>,

    /// Values per scale and bias in the quantized KV cache (with --kv-bits).
    #[arg(
        long,
        value_name = "N",
        default_value = "64",
        requires = "kv_bits",
        value_parser = ["32", "64", "128"]
    )]
    pub kv_group_size: String,

    /// With --kv-bits: positions kept at full precision before the cache is
    /// quantized (as mlx-lm's --quantized-kv-start), so that short
    /// conversations lose nothing; 0 quantizes from the first token.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5000,
        requires = "kv_bits",
        value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64)
    )]
    pub quantized_kv_start: u32,

    /// Prompt-lookup decoding: each step checks up to N tokens drafted from
    /// the prompt and the answer so far (where its last tokens occurred
    /// before) in one forward pass. Greedy output is unchanged; faster when
    /// the answer repeats its input (edits, quotes, extraction). Not with a
    /// repetition penalty, --json-schema/--grammar, sliding-window models
    /// (GPT-OSS) or --max-kv-size: then decoding is plain. The server checks
    /// drafts for a request while it decodes alone in the batch.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub prompt_lookup: Option<u32>,

    /// Speculative decoding with a draft model (a path or a Hugging Face
    /// id): a smaller model of the same tokenizer drafts
    /// --num-draft-tokens tokens greedily and the model checks them in one
    /// forward pass. Output is unchanged (greedy: the same tokens; sampled:
    /// the same distribution). Not with a repetition penalty,
    /// --json-schema/--grammar, sliding-window models (GPT-OSS) or
    /// --max-kv-size: then decoding is plain.
    #[arg(long, value_name = "MODEL", conflicts_with = "prompt_lookup")]
    pub draft_model: Option<String>,

    /// Tokens the draft model drafts per step (with --draft-model).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 3,
        requires = "draft_model",
        value_parser = clap::value_parser!(u32).range(1..=32)
    )]
    pub num_draft_tokens: u32,

    /// Where to run: gpu (Metal or CUDA), cpu, or auto (the GPU when MLX has one).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

/// `--device`, as the engine's [`DeviceChoice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// GPU if available, else CPU.
    #[default]
    Auto,
    /// The GPU (Metal or CUDA); an error if MLX has none.
    Gpu,
    /// The CPU.
    Cpu,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(arg: DeviceArg) -> Self {
        match arg {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Gpu => DeviceChoice::Gpu,
            DeviceArg::Cpu => DeviceChoice::Cpu,
        }
    }
}

/// A format the answer must follow (structured output), as a file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// The answer is JSON valid against this JSON Schema (a file); with a
    /// GPT-OSS model, its final answer (the reasoning stays free).
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<PathBuf>,

    /// The answer follows this Lark grammar (a file, llguidance's dialect:
    /// `start: ...`, /regex/ terminals, %json {schema}).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
}

impl OutputArgs {
    /// The format the flags name, read and checked as JSON (compiled later,
    /// against the model).
    pub fn format(&self) -> Result<Option<mlx_harmony_grammar::OutputFormat>> {
        use mlx_harmony_grammar::OutputFormat;
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()))
        };
        if let Some(path) = &self.json_schema {
            let schema: serde_json::Value = serde_json::from_str(&read(path, "JSON Schema")?)
                .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
            return Ok(Some(OutputFormat::JsonSchema(schema)));
        }
        if let Some(path) = &self.grammar {
            return Ok(Some(OutputFormat::Lark(read(path, "grammar")?)));
        }
        Ok(None)
    }
}

/// The sampling and length flags; unset ones fall back to the prompt config,
/// a resumed conversation, the model's generation_config.json, then the
/// built-in defaults.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SamplingArgs {
    /// Maximum number of tokens to generate; GPT-OSS: 1024 [default: 512].
    #[arg(long)]
    pub max_tokens: Option<u32>,

    /// Sampling temperature, 0 to 2; 0 is greedy [default: 0.8].
    #[arg(long)]
    pub temperature: Option<f64>,

    /// Nucleus sampling mass, 0 to 1 [default: 0.9].
    #[arg(long)]
    pub top_p: Option<f64>,

    /// Keep only the k most likely tokens; 0 is off [default: 0].
    #[arg(long)]
    pub top_k: Option<u32>,

    /// Drop tokens below min_p times the top probability; 0 is off [default: 0].
    #[arg(long)]
    pub min_p: Option<f64>,

    /// top_p and min_p keep at least this many tokens [default: 1].
    #[arg(long)]
    pub min_tokens_to_keep: Option<u32>,

    /// Penalty for recently generated tokens; 1 is off [default: 1].
    #[arg(long)]
    pub repetition_penalty: Option<f64>,

    /// How many recent tokens the repetition penalty considers [default: 20].
    #[arg(long)]
    pub repetition_context_size: Option<u32>,

    /// XTC: chance per token of excluding the top choices [default: 0].
    #[arg(long)]
    pub xtc_probability: Option<f64>,

    /// XTC: probability threshold, 0 to 0.5 [default: 0.1].
    #[arg(long)]
    pub xtc_threshold: Option<f64>,

    /// Stop when the model writes this text (not shown); repeat for several.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,

    /// Random seed; -1 is a fresh one [default: -1].
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<i64>,
}

impl SamplingArgs {
    /// The flags as a settings layer, range-checked like every other layer.
    pub fn hyperparameters(&self) -> Result<Hyperparameters> {
        let flags = Hyperparameters {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            min_tokens_to_keep: self.min_tokens_to_keep,
            max_tokens: self.max_tokens,
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: self.repetition_context_size,
            xtc_probability: self.xtc_probability,
            xtc_threshold: self.xtc_threshold,
            seed: self.seed,
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
        };
        Hyperparameters::from_json_map(&flags.to_json_map(), Path::new("command line"))
            .map_err(flat)
    }
}

/// Where the model and prompt config come from, before anything is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelChoice {
    /// As the user gave it (a path or a hub id); what conversations record.
    pub spec: String,
    pub prompt_config_path: Option<PathBuf>,
}

impl ModelArgs {
    /// The model and prompt config from `--profile` or `--model` /
    /// `--prompt-config`, else from `fallback` (e.g. a resumed
    /// conversation's); `None` when nothing names a model.
    pub fn choice(&self, fallback: Option<ModelChoice>) -> Result<Option<ModelChoice>> {
        if let Some(name) = &self.profile {
            let profiles = Profiles::load(&self.profiles_file).map_err(flat)?;
            let profile = profiles.get(name).map_err(flat)?;
            let spec = match &profile.model {
                ModelRef::Path(path) => path.display().to_string(),
                ModelRef::HubId(id) => id.clone(),
            };
            return Ok(Some(ModelChoice {
                spec,
                prompt_config_path: self.prompt_config.clone().or(profile.prompt_config.clone()),
            }));
        }
        let fallback_config = fallback.as_ref().and_then(|f| f.prompt_config_path.clone());
        Ok(match (&self.model, fallback) {
            (Some(model), _) => Some(ModelChoice {
                spec: model.clone(),
                prompt_config_path: self.prompt_config.clone().or(fallback_config),
            }),
            (None, Some(fallback)) => Some(ModelChoice {
                spec: fallback.spec,
                prompt_config_path: self.prompt_config.clone().or(fallback_config),
            }),
            (None, None) => None,
        })
    }

    /// Selects the device and opens the model, printing loading notes
    /// (prewarm, load time, mlock) to standard error when `verbose`.
    pub fn open(&self, choice: &ModelChoice, verbose: bool) -> Result<Opened> {
        let device = device::select(self.device.into())?;
        if self.tensor_parallel {
            let group = crate::tensor_parallel::join()?;
            if verbose {
                eprintln!("tensor parallel: rank {} of {}", group.rank(), group.size());
            }
        }
        let prompt_config = choice
            .prompt_config_path
            .as_deref()
            .map(PromptConfig::load)
            .transpose()
            .map_err(flat)?;
        if let (Some(config), Some(path)) = (&prompt_config, &choice.prompt_config_path) {
            for warning in config.warnings() {
                eprintln!("warning: {}: {warning}", path.display());
            }
        }
        let options = LoadOptions {
            hub: HubOptions {
                revision: self.revision.clone(),
                ..Default::default()
            },
            prewarm: !self.no_prewarm_cache
                && (self.prewarm_cache
                    || prompt_config
                        .as_ref()
                        .is_some_and(|c| c.prewarm_cache_or_default())),
            mlock: self.mlock || prompt_config.as_ref().is_some_and(|c| c.mlock_or_default()),
            on_gpu: device.kind == DeviceKind::Gpu,
        };
        let (mut generator, path) = loading::open(&choice.spec, &options, |note| {
            if verbose {
                eprintln!("{note}");
            }
        })?;
        let max_kv_size = self
            .max_kv_size
            .or(prompt_config.as_ref().and_then(|c| c.max_kv_size));
        generator.set_max_kv_size(max_kv_size)?;
        if let Some(bits) = &self.kv_bits {
            let settings = KvQuantization::new(bits.parse()?, self.kv_group_size.parse()?)?
                .starting_at(self.quantized_kv_start as i32);
            generator
                .set_kv_quantization(Some(settings))
                .context("--kv-bits")?;
        }
        if let Some(spec) = &self.draft_model {
            let (draft, _) = loading::open(spec, &options, |note| {
                if verbose {
                    eprintln!("draft model: {note}");
                }
            })?;
            let draft = DraftModel::new(
                draft.loaded.clone(),
                &generator.loaded,
                self.num_draft_tokens as usize,
            )
            .with_context(|| format!("--draft-model {spec}"))?;
            generator.set_draft_model(Some(draft));
        }
        let generation_config = read_generation_config(&path);
        Ok(Opened {
            generator,
            path,
            device,
            prompt_config,
            generation_config,
        })
    }
}

/// A model opened for a program.
pub struct Opened {
    pub generator: TokenGenerator,
    /// The local folder or file.
    pub path: PathBuf,
    pub device: SelectedDevice,
    pub prompt_config: Option<PromptConfig>,
    /// The sampling defaults of the model's generation_config.json.
    pub generation_config: Option<Hyperparameters>,
}

fn read_generation_config(path: &Path) -> Option<Hyperparameters> {
    let text = std::fs::read_to_string(path.join("generation_config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(Hyperparameters::from_generation_config(&json))
}

/// The GPT-OSS tools: which are enabled and their limits.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "GPT-OSS tools")]
pub struct ToolArgs {
    /// Let the model browse the web (browser.search/open/find).
    #[arg(long)]
    pub browser: bool,

    /// Let the model run Python code (a stateful session, sandboxed where possible).
    #[arg(long)]
    pub python: bool,

    /// Let the model edit files under --patch-root with apply_patch.
    #[arg(long)]
    pub apply_patch: bool,

    /// The folder apply_patch works in; paths outside it are refused.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub patch_root: PathBuf,

    /// apply_patch checks patches and says what they would change, writing nothing.
    #[arg(long)]
    pub patch_dry_run: bool,

    /// The Python interpreter for --python.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python_interpreter: PathBuf,

    /// The folder Python code runs in [default: a new temporary folder per chat].
    #[arg(long, value_name = "DIR")]
    pub python_workdir: Option<PathBuf>,

    /// Seconds a Python call may run before it is stopped.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub python_timeout: u64,

    /// Memory limit of the Python process, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub python_memory_mb: u64,

    /// Run Python without the bubblewrap sandbox (limits still apply).
    #[arg(long)]
    pub python_no_sandbox: bool,

    /// Most characters of a tool's output the model is shown.
    #[arg(long, value_name = "CHARS", default_value_t = 16_000)]
    pub tool_output_chars: usize,

    /// Search backend for browser.search: a SearXNG-style JSON endpoint
    /// (GET URL?q=...&format=json).
    #[arg(long, value_name = "URL", env = "MLX_HARMONY_SEARCH_URL")]
    pub browser_search_url: Option<String>,

    /// Let the browser open loopback and private-network addresses.
    #[arg(long)]
    pub browser_allow_local: bool,

    /// Most tool calls the model may make in one turn before it must answer.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_tool_calls: usize,
}

impl ToolArgs {
    pub fn any(&self) -> bool {
        self.browser || self.python || self.apply_patch
    }

    /// The enabled tools, ready for a conversation (`None` when none is).
    pub fn toolbox(&self) -> Result<Option<ToolBox>> {
        if !self.any() {
            return Ok(None);
        }
        let config = ToolsConfig {
            python: self.python.then(|| PythonConfig {
                interpreter: self.python_interpreter.clone(),
                workdir: self.python_workdir.clone(),
                timeout: std::time::Duration::from_secs(self.python_timeout.max(1)),
                cpu_seconds: self.python_timeout.max(1),
                memory_bytes: self.python_memory_mb.max(64) << 20,
                output_chars: self.tool_output_chars,
                sandbox: !self.python_no_sandbox,
                ..PythonConfig::default()
            }),
            apply_patch: self.apply_patch.then(|| PatchConfig {
                root: self.patch_root.clone(),
                dry_run: self.patch_dry_run,
            }),
            browser: self.browser.then(|| BrowserConfig {
                search_url: self.browser_search_url.clone(),
                allow_local: self.browser_allow_local,
                ..BrowserConfig::default()
            }),
        };
        Ok(Some(ToolBox::new(config)?))
    }
}

/// What `--version` says: this program's version and the MLX it runs on.
pub fn version() -> &'static str {
    let text = format!(
        "{} (MLX {})",
        env!("CARGO_PKG_VERSION"),
        mlx_harmony_core::device::mlx_version()
    );
    // Asked once per process, before the arguments are parsed.
    Box::leak(text.into_boxed_str())
}

/// Parses the program's arguments, with [`version`] as its `--version`.
pub fn parse<T: clap::Parser>() -> T {
    let matches = T::command().version(version()).get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
