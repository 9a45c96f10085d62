//! OpenAI's Harmony format for GPT-OSS models.
//!
//! This crate's one job: turn a conversation into the token sequence a GPT-OSS
//! model expects, and turn the model's tokens back into messages while they
//! stream. It works on the model's own Hugging Face `tokenizer.json` and
//! knows nothing of MLX or of how tokens are generated.
//!
//! - [`model`]: messages, roles, channels, recipients, system and developer
//!   content, tool namespaces (JSON-compatible with openai-harmony).
//! - [`HarmonyEncoding`]: rendering for completion, history and training,
//!   and the stop tokens for the generator.
//! - [`StreamParser`]: token-by-token parsing with the current role, channel,
//!   recipient, content type and text delta; it never fails and never drops
//!   text.
//!
//! ```
//! use mlx_harmony_format::{HarmonyEncoding, RenderConfig, StreamParser};
//! use mlx_harmony_format::model::{DeveloperContent, Message, ReasoningEffort, Role, SystemContent, ToolDescription};
//!
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizers/o200k_harmony/tokenizer.json");
//! let encoding = HarmonyEncoding::from_file(path)?;  // a GPT-OSS model's tokenizer.json
//! let conversation = vec![
//!     Message::system(SystemContent::default().with_reasoning_effort(ReasoningEffort::Low)),
//!     Message::developer(DeveloperContent::default().with_function_tools(vec![ToolDescription::new(
//!         "get_time", "Current time in a city.",
//!         Some(serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})),
//!     )])),
//!     Message::text(Role::User, "What time is it in Paris?"),
//! ];
//! let prompt = encoding.render_conversation_for_completion(&conversation, Role::Assistant, RenderConfig::default())?;
//! assert_eq!(*prompt.last().unwrap(), encoding.encode_text("assistant")?[0]);
//!
//! // What a model might answer: reasoning, then a tool call.
//! let completion = encoding.render_conversation(&[
//!     Message::text(Role::Assistant, "Need the time tool.").with_channel("analysis"),
//!     Message::text(Role::Assistant, r#"{"city":"Paris"}"#)
//!         .with_channel("commentary").with_recipient("functions.get_time").with_content_type("<|constrain|>json"),
//! ], RenderConfig::default())?;
//! let mut parser = StreamParser::new(&encoding, None);
//! let mut streamed = String::new();
//! for &token in &completion {
//!     parser.process(token);
//!     streamed.push_str(parser.last_content_delta().unwrap_or(""));
//! }
//! parser.finish();
//! let call = &parser.messages()[1];
//! assert_eq!(call.message.recipient.as_deref(), Some("functions.get_time"));
//! assert_eq!(call.message.text_content(), r#"{"city":"Paris"}"#);
//! assert_eq!(streamed, format!("Need the time tool.{}", r#"{"city":"Paris"}"#));
//! # Ok::<(), mlx_harmony_format::HarmonyError>(())
//! ```

pub mod encoding;
pub mod error;
pub mod model;
pub mod parse;
pub mod schema;

pub use encoding::{HarmonyEncoding, RenderConfig, Special};
pub use error::HarmonyError;
pub use parse::{ParsedMessage, StreamParser};
