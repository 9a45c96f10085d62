//! Tool calls written as text by models that use a chat template (GPT-OSS
//! writes Harmony instead, parsed in [`crate::reply`]): one module per
//! format, each with its tests, as mlx-lm's `tool_parsers/` does.
//!
//! - [`hermes`]: `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
//!   blocks (Hermes, Qwen2.5, Qwen3);
//! - [`llama3_json`]: an answer that is one `{"name": ..., "parameters": ...}`
//!   object (Llama 3.1 and later).

pub mod hermes;
pub mod llama3_json;

/// How a chat template's model writes its tool calls, read from the
/// template's text: a template that shows `<tool_call>` blocks is Hermes
/// style; any other (Llama 3.1 and later ask for the bare object) answers
/// with one call object as the whole reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStyle {
    /// `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks.
    Tagged,
    /// The whole reply is `{"name": ..., "parameters": ...}`.
    WholeReply,
}

impl CallStyle {
    pub fn of_template(source: &str) -> Self {
        if source.contains(hermes::OPEN) {
            CallStyle::Tagged
        } else {
            CallStyle::WholeReply
        }
    }
}

/// A call found in the text: the function's name and its arguments as JSON
/// text (an object, as OpenAI's `tool_calls` carry them).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// The calls in a template model's answer and the text left around them.
/// Hermes blocks first; an answer with none that is one JSON call object is
/// a Llama 3 call. Text without calls comes back unchanged.
pub fn parse_tool_calls(text: &str) -> (String, Vec<ParsedCall>) {
    let (rest, calls) = hermes::parse(text);
    if calls.is_empty()
        && let Some(call) = llama3_json::parse(text)
    {
        return (String::new(), vec![call]);
    }
    if calls.is_empty() {
        return (rest, calls);
    }
    (rest.trim().to_string(), calls)
}

/// A call object, `{"name": ..., "arguments"|"parameters": ...}`; arguments
/// given as a JSON string are taken as the JSON text they hold.
fn call_from_json(json: &str) -> Option<ParsedCall> {
    let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = value
        .get("arguments")
        .or_else(|| value.get("parameters"))
        .cloned()
        .unwrap_or(serde_json::json!({}));
    let arguments = match arguments {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ParsedCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_blocks_come_first_then_a_llama_object() {
        let (rest, calls) = parse_tool_calls(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
        );
        assert_eq!(rest, "Let me check.");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        let (_, llama) = parse_tool_calls(r#"{"name": "f", "parameters": {"x": 1}}"#);
        assert_eq!(llama[0].arguments, r#"{"x":1}"#);
    }

    #[test]
    fn text_without_calls_is_left_as_it_is() {
        let (text, none) = parse_tool_calls("just text {not json}");
        assert!(none.is_empty());
        assert_eq!(text, "just text {not json}");
        let (text, none) = parse_tool_calls("  padded  ");
        assert!(none.is_empty());
        assert_eq!(text, "  padded  ");
    }
}
