//! What a request asks of its output beyond sampling: a format the answer
//! must follow (structured outputs: `response_format`, the Responses API's
//! `text.format`, strict tools) and the log-probabilities of its tokens,
//! from the request's fields to the sampler and back to the wire.

use mlx_harmony_core::sampling::{TokenConstraint, TokenLogprobs};
use mlx_harmony_grammar::{Grammars, OutputFormat, OutputRules, StrictTool};
use serde_json::{Value, json};

use crate::api::{ResponseFormat, ToolSpec};
use crate::error::ApiError;

/// The most `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// One request's output control, handed to the model thread.
#[derive(Default)]
pub struct OutputControl {
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// `Some(n)`: each token's log-probability and the `n` most likely.
    pub logprobs: Option<usize>,
}

impl OutputControl {
    /// The same control for another choice of the request, at its start.
    pub fn for_choice(&self) -> OutputControl {
        OutputControl {
            constraint: self.constraint.as_ref().map(|c| c.fresh()),
            logprobs: self.logprobs,
        }
    }
}

impl std::fmt::Debug for OutputControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputControl")
            .field("constrained", &self.constraint.is_some())
            .field("logprobs", &self.logprobs)
            .finish()
    }
}

/// `response_format` as the answer's format: none for `text`.
pub fn answer_format(format: &Option<ResponseFormat>) -> Result<Option<OutputFormat>, ApiError> {
    let param = "response_format";
    match format.as_ref().map(|f| (f.kind.as_str(), &f.json_schema)) {
        None | Some(("text", _)) => Ok(None),
        Some(("json_object", _)) => Ok(Some(OutputFormat::JsonObject)),
        Some(("json_schema", Some(spec))) => match spec.get("schema") {
            Some(schema) if schema.is_object() => {
                Ok(Some(OutputFormat::JsonSchema(schema.clone())))
            }
            // OpenAI allows the schema to be left out: any JSON then.
            None => Ok(Some(OutputFormat::JsonObject)),
            Some(_) => Err(ApiError::invalid_at(
                "response_format.json_schema.schema must be a JSON Schema object",
                "response_format.json_schema.schema",
            )),
        },
        Some(("json_schema", None)) => Err(ApiError::invalid_at(
            "response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}",
            param,
        )),
        Some((other, _)) => Err(ApiError::invalid_at(
            format!("response_format type {other:?}: use text, json_object or json_schema"),
            param,
        )),
    }
}

/// The tools declared `strict: true`, whose call arguments must match their
/// parameters (an object with no properties when a tool declares none).
pub fn strict_tools(tools: &Option<Vec<ToolSpec>>) -> Vec<StrictTool> {
    tools
        .iter()
        .flatten()
        .filter(|tool| tool.function.strict == Some(true))
        .map(|tool| StrictTool {
            name: tool.function.name.clone(),
            parameters: tool
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect()
}

/// `logprobs`/`top_logprobs` checked: `Some(n)` when asked for.
pub fn logprobs_count(
    wanted: bool,
    top: Option<i64>,
    param: &str,
) -> Result<Option<usize>, ApiError> {
    match top {
        Some(n) if !(0..=MAX_TOP_LOGPROBS).contains(&n) => Err(ApiError::invalid_at(
            format!("{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"),
            param,
        )),
        Some(n) if wanted || n > 0 => Ok(Some(n as usize)),
        _ if wanted => Ok(Some(0)),
        _ => Ok(None),
    }
}

/// Compiles `rules` against the model (a 400 that names the part that
/// cannot be compiled) and adds the log-probabilities asked for.
pub fn control(
    grammars: &Result<Grammars, String>,
    rules: &OutputRules,
    param: &str,
    logprobs: Option<usize>,
) -> Result<OutputControl, ApiError> {
    let constraint = if rules.is_empty() {
        None
    } else {
        let grammars = grammars.as_ref().map_err(|why| {
            ApiError::invalid_at(
                format!("structured outputs are not available: {why}"),
                param,
            )
        })?;
        grammars
            .constraint(rules)
            .map_err(|e| ApiError::invalid_at(format!("{param}: {e}"), param))?
    };
    if logprobs.is_some()
        && let Err(why) = grammars
    {
        return Err(ApiError::invalid_at(
            format!("logprobs are not available: {why}"),
            "logprobs",
        ));
    }
    Ok(OutputControl {
        constraint,
        logprobs,
    })
}

/// A token as the wire shows it: its text (invalid UTF-8 replaced) and bytes.
fn token_text(grammars: &Grammars, token: u32) -> (String, Vec<u8>) {
    let bytes = grammars.token_bytes(token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat's `logprobs.content` entries (also the Responses API's).
pub fn chat_entries(grammars: &Grammars, tokens: &[TokenLogprobs]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            let (text, bytes) = token_text(grammars, t.token);
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|&(id, logprob)| {
                    let (text, bytes) = token_text(grammars, id);
                    json!({"token": text, "logprob": logprob, "bytes": bytes})
                })
                .collect();
            json!({"token": text, "logprob": t.logprob, "bytes": bytes, "top_logprobs": top})
        })
        .collect()
}

/// Completions' `logprobs`: parallel lists, `text_offset` counted from
/// `offset` (the text already sent).
pub fn completion_logprobs(grammars: &Grammars, tokens: &[TokenLogprobs], offset: usize) -> Value {
    let mut at = offset;
    let (mut texts, mut values, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for t in tokens {
        let (text, _) = token_text(grammars, t.token);
        offsets.push(at);
        at += text.len();
        texts.push(text);
        values.push(t.logprob);
        let top: serde_json::Map<String, Value> = t
            .top
            .iter()
            .map(|&(id, logprob)| (token_text(grammars, id).0, json!(logprob)))
            .collect();
        tops.push(Value::Object(top));
    }
    json!({"tokens": texts, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets})
}
