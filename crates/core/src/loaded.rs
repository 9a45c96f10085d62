//! A model with what turns text into its tokens and back: the tokenizer,
//! the chat template (or Harmony for GPT-OSS) and the end-of-turn tokens,
//! loaded from a GGUF file or a Hugging Face / mlx-community folder.

use std::path::Path;

use tokenizers::Tokenizer;

use mlx_harmony_format::HarmonyEncoding;

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::models::Model;
use crate::prompt::{self, PromptSetup};
use crate::{Error, Result};

/// A model with its tokenizer and chat template.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Set for GPT-OSS models, which take their prompt in the Harmony format.
    pub harmony: Option<HarmonyEncoding>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token: String,
    pub eos_token: String,
}

impl LoadedModel {
    /// Loads a model: a GGUF file (or a folder holding one), or a Hugging
    /// Face / mlx-community folder with `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if let Some(file) = crate::gguf::find_gguf(path) {
            return Self::load_gguf(&file);
        }
        if path.join("config.json").is_file() {
            return Self::load_folder(path);
        }
        Err(Error::Invalid(format!(
            "{}: not a model: expected a .gguf file or a folder with config.json and tokenizer.json",
            path.display()
        )))
    }

    fn load_gguf(file: &Path) -> Result<Self> {
        let (checkpoint, extras) = crate::gguf::open(file)?;
        let model = Model::from_checkpoint(checkpoint)?;
        let token = |id: Option<u32>| {
            id.and_then(|i| extras.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        Ok(LoadedModel {
            bos_token: token(extras.bos_token_id),
            eos_token: token(extras.eos_token_ids.first().copied()),
            chat_template: extras
                .chat_template
                .as_deref()
                .map(ChatTemplate::new)
                .transpose()?,
            harmony: None,
            eos_token_ids: extras.eos_token_ids,
            tokenizer: extras.tokenizer,
            model,
        })
    }

    fn load_folder(dir: &Path) -> Result<Self> {
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Checkpoint {
                    path,
                    message: format!("not valid JSON: {e}"),
                })
        };
        let config = read_json("config.json")?.unwrap_or_default();
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::Checkpoint {
            path: tokenizer_path.clone(),
            message: format!("cannot load the tokenizer: {e}"),
        })?;
        if config.get("model_type").and_then(|v| v.as_str()) == Some("gpt_oss") {
            // GPT-OSS speaks Harmony: its turn ends with <|return|> (done) or
            // <|call|> (a tool call); the chat template is not used.
            let harmony =
                HarmonyEncoding::new(tokenizer.clone()).map_err(|e| Error::Checkpoint {
                    path: tokenizer_path.clone(),
                    message: e.to_string(),
                })?;
            return Ok(LoadedModel {
                model: Model::load(dir)?,
                eos_token_ids: harmony.stop_tokens_for_assistant_actions().to_vec(),
                harmony: Some(harmony),
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
                tokenizer,
            });
        }
        let tokenizer_config = read_json("tokenizer_config.json")?.unwrap_or_default();
        // A token is written as a string or as {"content": ...}.
        let token_text = |v: Option<&serde_json::Value>| -> String {
            match v {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        let template = match tokenizer_config.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            // Several named templates: the default one.
            Some(serde_json::Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| {
                    t.get("template")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                }),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        // End-of-turn ids: generation_config.json, then config.json, then the tokenizer's eos.
        let ids_of = |v: Option<&serde_json::Value>| -> Vec<u32> {
            match v {
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|n| n.as_u64())
                    .map(|n| n as u32)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let eos_token = token_text(tokenizer_config.get("eos_token"));
        let mut eos_token_ids = ids_of(
            read_json("generation_config.json")?
                .as_ref()
                .and_then(|g| g.get("eos_token_id")),
        );
        if eos_token_ids.is_empty() {
            eos_token_ids = ids_of(config.get("eos_token_id"));
        }
        if eos_token_ids.is_empty() {
            eos_token_ids.extend(tokenizer.token_to_id(&eos_token));
        }
        Ok(LoadedModel {
            model: Model::load(dir)?,
            bos_token: token_text(tokenizer_config.get("bos_token")),
            eos_token,
            chat_template: template.as_deref().map(ChatTemplate::new).transpose()?,
            harmony: None,
            eos_token_ids,
            tokenizer,
        })
    }

    /// The prompt text for a conversation (the chat template, or the plain
    /// text of the last message when the model has no template).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        self.render_with_tools(messages, &[])
    }

    /// Like [`LoadedModel::render`], declaring `tools` (OpenAI-style function
    /// definitions) to the template.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
    ) -> Result<String> {
        match &self.chat_template {
            Some(template) => {
                template.render(messages, tools, true, &self.bos_token, &self.eos_token)
            }
            None => Ok(messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default()),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The prompt's token ids for one user message (see
    /// [`LoadedModel::conversation_tokens`]).
    pub fn prompt_tokens(&self, setup: &PromptSetup, user: &str) -> Result<Vec<u32>> {
        self.conversation_tokens(setup, &[ChatMessage::new("user", user)])
    }

    /// The prompt's token ids for a conversation, ending where the
    /// assistant's next message starts: Harmony for GPT-OSS, the chat
    /// template otherwise (see [`crate::prompt`]).
    pub fn conversation_tokens(
        &self,
        setup: &PromptSetup,
        history: &[ChatMessage],
    ) -> Result<Vec<u32>> {
        match &self.harmony {
            Some(harmony) => prompt::harmony_tokens(harmony, setup, history),
            None => {
                let (messages, tools) = prompt::template_messages(setup, history);
                let text = self.render_with_tools(&messages, &tools)?;
                self.encode(&text)
            }
        }
    }

    /// The tokens that open the reply as the call `setup.forced_call` asks
    /// for (see [`prompt::forced_call_header`]); empty when no call is forced.
    pub fn forced_call_tokens(&self, setup: &PromptSetup) -> Result<Vec<u32>> {
        let Some(forced) = &setup.forced_call else {
            return Ok(Vec::new());
        };
        let Some(harmony) = &self.harmony else {
            return Err(Error::Invalid(
                "only GPT-OSS (Harmony) models can be made to call a tool; \
                 other models' chat templates cannot: let the model choose"
                    .into(),
            ));
        };
        let mut tokens = vec![harmony.special(mlx_harmony_format::Special::Channel)];
        tokens.extend(self.encode(&prompt::forced_call_header(forced))?);
        Ok(tokens)
    }
}
