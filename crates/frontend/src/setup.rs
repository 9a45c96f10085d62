//! Prompt configs and resolved settings as the engine takes them: the
//! [`PromptSetup`] before a conversation, the greeting, and the sampler.

use mlx_harmony_config::prompt_config::{self, PromptConfig};
use mlx_harmony_config::settings::GenerationSettings;
use mlx_harmony_core::chat_template::ChatMessage;
use mlx_harmony_core::generate::LoadedModel;
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::sampling::{Sampler, SamplingSettings};
use mlx_harmony_format::model::ReasoningEffort;

/// The prompt config's identity, dates, reasoning effort, instructions
/// and example dialogues, placeholders expanded; `instructions` (e.g.
/// `--system`) replaces the config's developer instructions. GPT-OSS
/// models are given today's date when the config sets none.
pub fn prompt_setup(
    config: Option<&PromptConfig>,
    instructions: Option<&str>,
    harmony: bool,
) -> PromptSetup {
    let expanded = config.map(|c| c.expanded(&c.clock()).config);
    let field =
        |f: fn(&PromptConfig) -> &Option<String>| expanded.as_ref().and_then(|c| f(c).clone());
    let mut setup = PromptSetup {
        model_identity: field(|c| &c.system_model_identity),
        knowledge_cutoff: field(|c| &c.knowledge_cutoff),
        conversation_start_date: field(|c| &c.conversation_start_date),
        reasoning_effort: expanded
            .as_ref()
            .and_then(|c| c.reasoning_effort)
            .map(effort_from_config),
        instructions: instructions
            .map(str::to_string)
            .or_else(|| field(|c| &c.developer_instructions)),
        examples: expanded
            .as_ref()
            .map(|c| {
                c.example_dialogues
                    .iter()
                    .map(|dialogue| {
                        dialogue
                            .iter()
                            .map(|m| ChatMessage::new(&m.role, &m.content))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        functions: Vec::new(),
        builtin_tools: Vec::new(),
        forced_call: None,
    };
    if harmony && setup.conversation_start_date.is_none() {
        setup.conversation_start_date = Some(chrono::Local::now().format("%Y-%m-%d").to_string());
    }
    setup
}

/// The config crate's effort as Harmony's.
pub fn effort_from_config(effort: prompt_config::ReasoningEffort) -> ReasoningEffort {
    match effort {
        prompt_config::ReasoningEffort::Low => ReasoningEffort::Low,
        prompt_config::ReasoningEffort::Medium => ReasoningEffort::Medium,
        prompt_config::ReasoningEffort::High => ReasoningEffort::High,
    }
}

/// The assistant greeting of a prompt config, placeholders expanded.
pub fn greeting(config: &PromptConfig) -> Option<String> {
    config
        .expanded(&config.clock())
        .config
        .assistant_greeting
        .filter(|g| !g.trim().is_empty())
}

/// The constraint that holds a model's answers to `format` (a GPT-OSS
/// model's final answers; the whole reply otherwise); an error names what
/// in the format cannot be compiled.
pub fn output_constraint(
    format: &mlx_harmony_grammar::OutputFormat,
    loaded: &LoadedModel,
) -> anyhow::Result<Box<dyn mlx_harmony_core::sampling::TokenConstraint>> {
    let grammars = mlx_harmony_grammar::Grammars::new(
        &loaded.tokenizer,
        loaded.model.vocab_size().max(0) as usize,
        &loaded.eos_token_ids,
        loaded.harmony.is_some(),
    )?;
    let rules = mlx_harmony_grammar::OutputRules {
        answer: Some(format.clone()),
        strict_tools: Vec::new(),
    };
    grammars
        .constraint(&rules)?
        .ok_or_else(|| anyhow::anyhow!("the output format holds the answer to nothing"))
}

/// A sampler for resolved settings and a model (XTC spares its end tokens).
pub fn sampler(
    settings: &GenerationSettings,
    loaded: &LoadedModel,
) -> mlx_harmony_core::Result<Sampler> {
    Sampler::new(SamplingSettings {
        temperature: settings.temperature as f32,
        top_p: settings.top_p as f32,
        top_k: settings.top_k,
        min_p: settings.min_p as f32,
        min_tokens_to_keep: settings.min_tokens_to_keep,
        xtc_probability: settings.xtc_probability as f32,
        xtc_threshold: settings.xtc_threshold as f32,
        xtc_special_tokens: loaded.eos_token_ids.clone(),
        repetition_penalty: settings.repetition_penalty as f32,
        repetition_context_size: settings.repetition_context_size,
        logit_bias: settings.logit_bias.clone(),
        seed: settings.seed,
    })
}
