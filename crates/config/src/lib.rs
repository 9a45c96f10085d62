//! The files users write and keep for mlx-harmony.
//!
//! This crate's one job: read, validate and write the user-facing formats of
//! the seed program, with errors that name the file, the key and what is
//! allowed. It knows nothing of MLX or tokenizers.
//!
//! - [`prompt_config`]: the JSON prompt config (Harmony fragments, sampling
//!   and loading defaults), with [`placeholders`] expanded against a clock.
//! - [`settings`]: the generation settings every program resolves, and their
//!   precedence: CLI flag > prompt config > saved conversation > the model's
//!   `generation_config.json` > built-in default.
//! - [`profiles`]: `profiles.json`, name → model and prompt config.
//! - [`conversation`]: saved conversations (`--save-conversation`), written
//!   atomically, migrated from older versions on load.
//! - [`message`]: the one chat message type, saved, rendered and served.
//! - [`dialogue`]: the `role: text` dialogue format of
//!   `mlx-harmony-convert-dialogue`.
//!
//! ```
//! use mlx_harmony_config::placeholders::Clock;
//! use mlx_harmony_config::prompt_config::PromptConfig;
//!
//! let config = PromptConfig::from_json_str(
//!     r#"{"system_model_identity": "You are {assistant}. Today is <|DATE|>.",
//!         "placeholders": {"assistant": "Dave"}, "temperature": 0.7}"#,
//!     "inline.json",
//! )?;
//! let clock = Clock::fixed_local("2026-03-01T09:30:00")?;
//! let expanded = config.expanded(&clock);
//! assert_eq!(
//!     expanded.config.system_model_identity.as_deref(),
//!     Some("You are Dave. Today is 2026-03-01.")
//! );
//! assert_eq!(expanded.config.sampling.temperature, Some(0.7));
//! # Ok::<(), mlx_harmony_config::ConfigError>(())
//! ```

pub mod conversation;
pub mod dialogue;
pub mod error;
pub mod message;
pub mod placeholders;
pub mod profiles;
pub mod prompt_config;
pub mod settings;

pub use error::ConfigError;
