//! Chat templates: the Jinja templates models ship (`tokenizer_config.json`'s
//! `chat_template`, or GGUF's `tokenizer.chat_template`), rendered with
//! minijinja plus the Python-flavoured helpers real templates use.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::Serialize;

use crate::{Error, Result};

/// One chat message as templates see it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now("%d %b %Y")`, as Llama 3 templates call it.
fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(false);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Invalid(format!("the chat template does not parse: {e}")))?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages`; with `add_generation_prompt`, ends where the
    /// assistant's answer starts.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let template = self.env.get_template("chat").expect("added in new()");
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            })
            .map_err(|e| Error::Invalid(format!("the chat template failed: {e}")))
    }
}
