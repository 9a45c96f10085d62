//! The OpenAI request and response shapes, and how requests are checked.

use std::path::Path;

use mlx_harmony_config::settings::Hyperparameters;
use mlx_harmony_core::chat_template::{ChatMessage, FunctionCall, ToolCall};
use mlx_harmony_core::prompt::ForcedCall;
use mlx_harmony_format::model::{ReasoningEffort, ToolDescription};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;

/// `stop`: one string or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

/// Message content: text, or a list of parts (only text parts are supported).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RequestFunctionCall {
    pub name: String,
    /// A JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RequestToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: RequestFunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<RequestToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The assistant's reasoning of an earlier turn (as this server returns it).
    #[serde(default, alias = "reasoning")]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    /// What the SDK's `message.model_dump()` carries back: URL citations
    /// (ignored), audio (refused unless null), the legacy single call.
    #[serde(default)]
    pub annotations: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub function_call: Option<RequestFunctionCall>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<Value>,
}

/// Declares an OpenAI request body: its own fields, then the fields that
/// chat and completion requests share (streaming, sampling, the ones this
/// server refuses), written once here, with [`SharedFields`] to read them.
macro_rules! request_body {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            #[serde(default)]
            pub stream: bool,
            #[serde(default)]
            pub stream_options: Option<StreamOptions>,
            #[serde(default)]
            pub max_tokens: Option<i64>,
            #[serde(default)]
            pub temperature: Option<f64>,
            #[serde(default)]
            pub top_p: Option<f64>,
            #[serde(default)]
            pub top_k: Option<i64>,
            #[serde(default)]
            pub min_p: Option<f64>,
            #[serde(default)]
            pub seed: Option<i64>,
            #[serde(default)]
            pub stop: Option<Stop>,
            #[serde(default)]
            pub repetition_penalty: Option<f64>,
            #[serde(default)]
            pub n: Option<i64>,
            #[serde(default)]
            pub user: Option<String>,
            #[serde(default)]
            pub frequency_penalty: Option<f64>,
            #[serde(default)]
            pub presence_penalty: Option<f64>,
            #[serde(default)]
            pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
        }

        impl $name {
            /// The fields every request has, to check them one way.
            pub fn shared(&self) -> SharedFields<'_> {
                SharedFields {
                    model: &self.model,
                    max_tokens: self.max_tokens,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: self.top_k,
                    min_p: self.min_p,
                    seed: self.seed,
                    stop: &self.stop,
                    repetition_penalty: self.repetition_penalty,
                    n: self.n,
                    frequency_penalty: self.frequency_penalty,
                    presence_penalty: self.presence_penalty,
                    logit_bias: &self.logit_bias,
                }
            }

            /// Whether the answer is streamed, and with a usage chunk.
            pub fn streaming(&self) -> (bool, bool) {
                let usage = self.stream_options.as_ref().is_some_and(|o| o.include_usage);
                (self.stream, usage)
            }
        }
    };
}

request_body! {
    /// `POST /v1/chat/completions`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ChatRequest {
        pub model: String,
        pub messages: Vec<RequestMessage>,
        #[serde(default)]
        pub max_completion_tokens: Option<i64>,
        #[serde(default)]
        pub reasoning_effort: Option<String>,
        #[serde(default)]
        pub tools: Option<Vec<ToolSpec>>,
        #[serde(default)]
        pub tool_choice: Option<Value>,
        #[serde(default)]
        pub parallel_tool_calls: Option<bool>,
        #[serde(default)]
        pub response_format: Option<ResponseFormat>,
        #[serde(default)]
        pub logprobs: Option<bool>,
        #[serde(default)]
        pub metadata: Option<Value>,
        #[serde(default)]
        pub store: Option<bool>,
        #[serde(default)]
        pub top_logprobs: Option<i64>,
        /// Legacy function calling: `functions` are tools, `function_call`
        /// is `tool_choice`.
        #[serde(default)]
        pub functions: Option<Vec<FunctionSpec>>,
        #[serde(default)]
        pub function_call: Option<Value>,
        #[serde(default)]
        pub modalities: Option<Vec<String>>,
        #[serde(default)]
        pub audio: Option<Value>,
        #[serde(default)]
        pub web_search_options: Option<Value>,
        /// Accepted and ignored (documented in docs/SERVER.md): the prompt
        /// cache is automatic, there is one service tier, and the answer's
        /// length follows max_tokens.
        #[serde(default)]
        pub service_tier: Option<Value>,
        #[serde(default)]
        pub prompt_cache_key: Option<Value>,
        #[serde(default)]
        pub safety_identifier: Option<Value>,
        #[serde(default)]
        pub verbosity: Option<Value>,
        #[serde(default)]
        pub prediction: Option<Value>,
    }
}

request_body! {
    /// `POST /v1/completions`.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CompletionRequest {
        pub model: String,
        /// Text, a list of texts, token ids, or a list of token-id lists
        /// (read by [`CompletionRequest::prompts`]).
        pub prompt: Value,
        #[serde(default)]
        pub echo: Option<bool>,
        #[serde(default)]
        pub logprobs: Option<Value>,
        #[serde(default)]
        pub suffix: Option<Value>,
        #[serde(default)]
        pub best_of: Option<i64>,
    }
}

/// The most choices (`n`) one request may ask for: each is a sequence of
/// the batch, so more would only queue behind each other.
pub const MAX_CHOICES: usize = 16;

/// The most sequences one completions request may start: its prompts times
/// `n`.
pub const MAX_COMPLETION_SEQUENCES: usize = 64;

/// One prompt of a completions request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptInput {
    /// Text, tokenized by the server (with the model's start token, where it
    /// has one).
    Text(String),
    /// Token ids of the model's vocabulary, fed as they are.
    Tokens(Vec<u32>),
}

impl CompletionRequest {
    /// The request's prompts, in order: OpenAI's four forms (a string, a
    /// list of strings, a list of token ids, a list of such lists), and a
    /// list of text content parts as one text.
    pub fn prompts(&self) -> Result<Vec<PromptInput>, ApiError> {
        let wrong = || {
            ApiError::invalid(
                "`prompt` must be a string, a list of strings, a list of token ids \
                 (whole numbers from 0) or a list of lists of token ids",
            )
            .with_param(Some("prompt".into()))
        };
        let tokens = |items: &[Value]| -> Option<Vec<u32>> {
            items
                .iter()
                .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                .collect()
        };
        let prompts = match &self.prompt {
            Value::String(text) => vec![PromptInput::Text(text.clone())],
            Value::Array(items) if items.is_empty() => {
                return Err(ApiError::invalid("`prompt` is an empty list")
                    .with_param(Some("prompt".into())));
            }
            Value::Array(items) => match &items[0] {
                Value::String(_) => items
                    .iter()
                    .map(|item| item.as_str().map(|t| PromptInput::Text(t.to_string())))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(wrong)?,
                Value::Number(_) => vec![PromptInput::Tokens(tokens(items).ok_or_else(wrong)?)],
                Value::Array(_) => items
                    .iter()
                    .map(|item| item.as_array().and_then(|ids| tokens(ids)))
                    .map(|ids| ids.map(PromptInput::Tokens))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(wrong)?,
                Value::Object(_) => {
                    let parts: Vec<ContentPart> =
                        serde_json::from_value(self.prompt.clone()).map_err(|_| wrong())?;
                    vec![PromptInput::Text(Content::Parts(parts).text("prompt")?)]
                }
                _ => return Err(wrong()),
            },
            _ => return Err(wrong()),
        };
        Ok(prompts)
    }
}

/// What chat and completion requests share, as [`SharedFields::accept`] and
/// [`SharedFields::hyperparameters`] check it.
#[derive(Clone, Copy, Debug)]
pub struct SharedFields<'a> {
    pub model: &'a str,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: &'a Option<Stop>,
    pub repetition_penalty: Option<f64>,
    pub n: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub logit_bias: &'a Option<std::collections::BTreeMap<String, f64>>,
}

/// Reads a request body: invalid JSON, a field of the wrong type or an
/// unknown field are each a 400 naming the field.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "the request body is not valid JSON ({e}); send a JSON object"
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let param = (path != ".").then_some(path.clone());
        let message = match inner.strip_prefix("unknown field ") {
            Some(rest) => format!(
                "unrecognized request argument {}",
                rest.split(',').next().unwrap_or(rest)
            ),
            None if param.is_some() => format!("invalid value for `{path}`: {inner}"),
            None => inner,
        };
        ApiError::invalid(message).with_param(param)
    })
}

impl SharedFields<'_> {
    /// The request is for the model served here and asks for nothing this
    /// server refuses (instead of silently ignoring it).
    /// Returns how many choices (`n`) to generate.
    pub fn accept(&self, served: &str) -> Result<usize, ApiError> {
        if self.model != served {
            return Err(ApiError::model_not_found(self.model, served));
        }
        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "`n` must be between 1 and {MAX_CHOICES} (got {n})"
                ))
                .with_param(Some("n".into())));
            }
        };
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(format!(
                    "`{name}` is not supported; use `repetition_penalty` (e.g. 1.1)"
                ))
                .with_param(Some(name.into())));
            }
        }
        Ok(n)
    }

    /// `logit_bias` as token ids and biases: ids are whole numbers, biases
    /// from -100 to 100 (OpenAI's range). Whether an id is in the model's
    /// vocabulary is checked by the model thread, which knows it.
    pub fn logit_bias(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        let mut out = Vec::new();
        for (token, bias) in self.logit_bias.iter().flatten() {
            let param = Some(format!("logit_bias.{token}"));
            let Ok(id) = token.trim().parse::<u32>() else {
                return Err(ApiError::invalid(format!(
                    "logit_bias keys are token ids (whole numbers as strings), not {token:?}"
                ))
                .with_param(param));
            };
            if !(-100.0..=100.0).contains(bias) {
                return Err(ApiError::invalid(format!(
                    "logit_bias values are from -100 to 100, got {bias} for token {id}"
                ))
                .with_param(param));
            }
            out.push((id, *bias as f32));
        }
        Ok(out)
    }

    /// The sampling settings the request asks for, checked against the
    /// same ranges as every other layer (prompt configs, `\set`).
    pub fn hyperparameters(&self) -> Result<Hyperparameters, ApiError> {
        let stop = match self.stop {
            None => None,
            Some(Stop::One(s)) => Some(vec![s.clone()]),
            Some(Stop::Many(v)) => {
                if v.len() > 4 {
                    return Err(ApiError::invalid("`stop` takes at most 4 sequences")
                        .with_param(Some("stop".into())));
                }
                Some(v.clone())
            }
        };
        let fields = [
            ("max_tokens", self.max_tokens.map(Value::from)),
            ("temperature", self.temperature.map(Value::from)),
            ("top_p", self.top_p.map(Value::from)),
            ("top_k", self.top_k.map(Value::from)),
            ("min_p", self.min_p.map(Value::from)),
            // A negative seed means "random" in our configs; OpenAI takes any integer.
            (
                "seed",
                self.seed
                    .map(|s| Value::from(s.unsigned_abs() as i64 & i64::MAX)),
            ),
            ("stop", stop.map(|s| json!(s))),
            (
                "repetition_penalty",
                self.repetition_penalty.map(Value::from),
            ),
        ];
        let mut map = serde_json::Map::new();
        for (name, value) in fields {
            let Some(value) = value else { continue };
            let mut one = serde_json::Map::new();
            one.insert(name.to_string(), value.clone());
            Hyperparameters::from_json_map(&one, Path::new("request")).map_err(|e| {
                let text = e.to_string();
                let detail = text.rsplit(": ").next().unwrap_or(&text).to_string();
                ApiError::invalid(format!("`{name}` {detail}")).with_param(Some(name.to_string()))
            })?;
            map.insert(name.to_string(), value);
        }
        Hyperparameters::from_json_map(&map, Path::new("request"))
            .map_err(|e| ApiError::invalid(e.to_string()))
    }
}

impl Content {
    pub fn text(&self, field: &str) -> Result<String, ApiError> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(format!(
                                "content parts of type `{kind}` are not supported; send text"
                            ))
                            .with_param(Some(field.to_string())));
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// The request's messages as the engine's history.
pub fn history(messages: &[RequestMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(
            ApiError::invalid("`messages` must not be empty").with_param(Some("messages".into()))
        );
    }
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let content = match &m.content {
            Some(c) => c.text(&format!("{field}.content"))?,
            None => String::new(),
        };
        if m.audio.as_ref().is_some_and(|a| !a.is_null()) {
            return Err(ApiError::invalid(format!(
                "{field}: audio is not supported; send the text of the message"
            ))
            .with_param(Some(format!("{field}.audio"))));
        }
        // Legacy function calling: a `function` message answers the latest
        // `function_call` of that name, as a tool message answers its call.
        let role = if m.role == "function" {
            "tool"
        } else {
            m.role.as_str()
        };
        let mut message = ChatMessage::new(role, &content);
        match m.role.as_str() {
            "function" => {
                let Some(name) = &m.name else {
                    return Err(ApiError::invalid(format!(
                        "{field} (function) needs the `name` of the function it answers"
                    ))
                    .with_param(Some(format!("{field}.name"))));
                };
                let answered = (0..i).rev().find(|&j| {
                    messages[j]
                        .function_call
                        .as_ref()
                        .is_some_and(|c| &c.name == name)
                });
                let Some(j) = answered else {
                    return Err(ApiError::invalid(format!(
                        "{field}: no earlier assistant message has a function_call to {name:?}"
                    ))
                    .with_param(Some(format!("{field}.name"))));
                };
                message.tool_call_id = Some(legacy_call_id(j));
                message.name = Some(name.clone());
            }
            "system" | "developer" | "user" => {
                if m.content.is_none() {
                    return Err(
                        ApiError::invalid(format!("{field} ({}) needs `content`", m.role))
                            .with_param(Some(format!("{field}.content"))),
                    );
                }
            }
            "assistant" => {
                message.reasoning_content = m.reasoning_content.clone();
                if let Some(call) = &m.function_call {
                    let arguments = serde_json::from_str(&call.arguments)
                        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                    message.tool_calls.push(ToolCall {
                        id: legacy_call_id(i),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments,
                        },
                    });
                }
                for call in m.tool_calls.iter().flatten() {
                    let arguments = serde_json::from_str(&call.function.arguments)
                        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
                    message.tool_calls.push(ToolCall {
                        id: call.id.clone(),
                        kind: call.kind.clone(),
                        function: FunctionCall {
                            name: call.function.name.clone(),
                            arguments,
                        },
                    });
                }
            }
            "tool" => {
                let Some(id) = &m.tool_call_id else {
                    return Err(
                        ApiError::invalid(format!("{field} (tool) needs `tool_call_id`"))
                            .with_param(Some(format!("{field}.tool_call_id"))),
                    );
                };
                message.tool_call_id = Some(id.clone());
                // The function's name, from the call it answers.
                let name = m.name.clone().or_else(|| {
                    messages[..i]
                        .iter()
                        .flat_map(|p| p.tool_calls.iter().flatten())
                        .find(|c| &c.id == id)
                        .map(|c| c.function.name.clone())
                });
                match name {
                    Some(name) => message.name = Some(name),
                    None => {
                        return Err(ApiError::invalid(format!(
                            "{field}: tool_call_id {id:?} answers no earlier tool call"
                        ))
                        .with_param(Some(format!("{field}.tool_call_id"))));
                    }
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "{field}: unknown role {other:?}; use system, developer, user, assistant or \
                     tool (or the legacy function)"
                ))
                .with_param(Some(format!("{field}.role"))));
            }
        }
        out.push(message);
    }
    Ok(out)
}

/// The id given to a legacy `function_call` of message `index`.
fn legacy_call_id(index: usize) -> String {
    format!("call_legacy_{index}")
}

/// Legacy function calling (`functions`, `function_call`) as `tools` and
/// `tool_choice`; both styles at once is a 400.
pub fn legacy_functions(
    tools: &Option<Vec<ToolSpec>>,
    tool_choice: &Option<Value>,
    functions: &Option<Vec<FunctionSpec>>,
    function_call: &Option<Value>,
) -> Result<(Option<Vec<ToolSpec>>, Option<Value>), ApiError> {
    if functions.is_none() && function_call.is_none() {
        return Ok((tools.clone(), tool_choice.clone()));
    }
    if tools.is_some() || tool_choice.is_some() {
        return Err(ApiError::invalid(
            "send `tools`/`tool_choice` or the legacy `functions`/`function_call`, not both",
        )
        .with_param(Some("functions".into())));
    }
    let tools = functions.as_ref().map(|functions| {
        functions
            .iter()
            .map(|f| ToolSpec {
                kind: "function".into(),
                function: f.clone(),
            })
            .collect()
    });
    let choice = match function_call {
        None => None,
        Some(Value::String(s)) if s == "auto" || s == "none" => Some(json!(s)),
        Some(Value::Object(o)) if o.get("name").is_some_and(Value::is_string) => {
            Some(json!({"type": "function", "function": {"name": o["name"]}}))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "function_call must be \"auto\", \"none\" or {{\"name\": \"…\"}}, not {other}"
            ))
            .with_param(Some("function_call".into())));
        }
    };
    Ok((tools, choice))
}

/// Request fields with no meaning here that are refused unless they ask for
/// nothing (`null`, text only): audio, web search, insertion.
pub fn refuse_unsupported(fields: &[(&str, Option<&Value>, &str)]) -> Result<(), ApiError> {
    for (name, value, why) in fields {
        if value.is_some_and(|v| !v.is_null()) {
            return Err(
                ApiError::invalid(format!("`{name}` is not supported: {why}"))
                    .with_param(Some((*name).into())),
            );
        }
    }
    Ok(())
}

/// The request's tools as function descriptions, and the call `tool_choice`
/// forces: "none" declares no tools, "auto" (the default) lets the model
/// choose, "required" and `{"type": "function", "function": {"name": …}}`
/// make the reply a call.
pub fn functions(
    tools: &Option<Vec<ToolSpec>>,
    tool_choice: &Option<Value>,
) -> Result<(Vec<ToolDescription>, Option<ForcedCall>), ApiError> {
    let forced = match tool_choice {
        None => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(Value::String(s)) if s == "none" => return Ok((Vec::new(), None)),
        Some(Value::String(s)) if s == "required" => Some(ForcedCall::AnyFunction),
        Some(Value::Object(choice)) if choice.get("type") == Some(&json!("function")) => {
            match choice.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(name)) => Some(ForcedCall::Function(name.clone())),
                _ => {
                    return Err(ApiError::invalid_at(
                        "tool_choice: a named choice is {\"type\": \"function\", \"function\": {\"name\": \"…\"}}",
                        "tool_choice.function.name",
                    ));
                }
            }
        }
        Some(other) => {
            return Err(ApiError::invalid_at(
                format!(
                    "tool_choice {other} is not supported: use \"auto\", \"none\", \"required\" \
                     or {{\"type\": \"function\", \"function\": {{\"name\": \"…\"}}}}"
                ),
                "tool_choice",
            ));
        }
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::invalid(format!(
                "tools[{i}]: only tools of type \"function\" are supported"
            ))
            .with_param(Some(format!("tools[{i}].type"))));
        }
        let name = &tool.function.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ApiError::invalid(format!(
                "tools[{i}]: a function name is letters, digits, _ and -; got {name:?}"
            ))
            .with_param(Some(format!("tools[{i}].function.name"))));
        }
        if let Some(p) = &tool.function.parameters
            && !p.is_object()
        {
            return Err(ApiError::invalid(format!(
                "tools[{i}]: `parameters` must be a JSON Schema object"
            ))
            .with_param(Some(format!("tools[{i}].function.parameters"))));
        }
        out.push(ToolDescription::new(
            name.clone(),
            tool.function.description.clone().unwrap_or_default(),
            tool.function.parameters.clone(),
        ));
    }
    match &forced {
        Some(_) if out.is_empty() => Err(ApiError::invalid_at(
            "tool_choice asks for a call but the request declares no tools",
            "tool_choice",
        )),
        Some(ForcedCall::Function(name)) if !out.iter().any(|f| &f.name == name) => {
            Err(ApiError::invalid_at(
                format!("tool_choice names {name:?}, which is not one of the request's tools"),
                "tool_choice.function.name",
            ))
        }
        _ => Ok((out, forced)),
    }
}

/// A function tool written flat — the Responses API's `{"type": "function",
/// "name", "description", "parameters", "strict"}`, Anthropic's `{"name",
/// "description", "input_schema"}` — as a chat-completions tool, its schema
/// read from `schema_key`; `field` names it in errors.
pub fn flat_function_tool(
    tool: &Value,
    schema_key: &str,
    field: &str,
) -> Result<ToolSpec, ApiError> {
    let part = |key: &str| tool.get(key).cloned().unwrap_or(Value::Null);
    let function: FunctionSpec = serde_json::from_value(json!({
        "name": part("name"),
        "description": part("description"),
        "parameters": part(schema_key),
        "strict": part("strict"),
    }))
    .map_err(|e| ApiError::invalid_at(format!("{field}: {e}"), field))?;
    Ok(ToolSpec {
        kind: "function".into(),
        function,
    })
}

pub fn reasoning_effort(effort: &Option<String>) -> Result<Option<ReasoningEffort>, ApiError> {
    match effort.as_deref() {
        None => Ok(None),
        Some("low" | "minimal") => Ok(Some(ReasoningEffort::Low)),
        Some("medium") => Ok(Some(ReasoningEffort::Medium)),
        Some("high") => Ok(Some(ReasoningEffort::High)),
        Some(other) => Err(ApiError::invalid(format!(
            "reasoning_effort {other:?}: use low, medium or high"
        ))
        .with_param(Some("reasoning_effort".into()))),
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CompletionTokensDetails {
    /// Tokens the model generated as reasoning (a GPT-OSS analysis channel).
    pub reasoning_tokens: usize,
}

impl Usage {
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }

    pub fn with_reasoning_tokens(mut self, reasoning: usize) -> Self {
        self.completion_tokens_details.reasoning_tokens = reasoning;
        self
    }
}
