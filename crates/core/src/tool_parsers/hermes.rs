//! Hermes-style calls (Qwen2.5, Qwen3, Hermes): each call a JSON object
//! `{"name": ..., "arguments": {...}}` between `<tool_call>` and
//! `</tool_call>`, anywhere in the answer.

use super::{ParsedCall, call_from_json};

pub const OPEN: &str = "<tool_call>";
pub const CLOSE: &str = "</tool_call>";

/// The calls in `text` and the text with their blocks removed. A block that
/// does not hold a call object stays in the text, as does an unclosed one.
pub fn parse(text: &str) -> (String, Vec<ParsedCall>) {
    let mut calls = Vec::new();
    let mut rest = String::new();
    let mut remaining = text;
    while let Some(start) = remaining.find(OPEN) {
        let after = &remaining[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            break;
        };
        match call_from_json(&after[..end]) {
            Some(call) => {
                rest.push_str(&remaining[..start]);
                calls.push(call);
            }
            None => rest.push_str(&remaining[..start + OPEN.len() + end + CLOSE.len()]),
        }
        remaining = &after[end + CLOSE.len()..];
    }
    rest.push_str(remaining);
    (rest, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_blocks_in_order_with_the_text_between_kept() {
        let (rest, calls) = parse(
            "A <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> B \
             <tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"k\\\": 2}\"}</tool_call> C",
        );
        assert_eq!(rest, "A  B  C");
        assert_eq!(
            calls,
            vec![
                ParsedCall {
                    name: "a".into(),
                    arguments: "{}".into()
                },
                ParsedCall {
                    name: "b".into(),
                    arguments: "{\"k\": 2}".into()
                }
            ]
        );
    }

    #[test]
    fn broken_and_unclosed_blocks_stay_text() {
        let text = "<tool_call>not json</tool_call> and <tool_call>{\"name\": \"x\"";
        let (rest, calls) = parse(text);
        assert!(calls.is_empty());
        assert_eq!(rest, text);
    }
}
