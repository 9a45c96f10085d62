//! Llama 3.1-style calls: the whole answer is one JSON object
//! `{"name": ..., "parameters": {...}}` (`arguments` is accepted too).

use super::{ParsedCall, call_from_json};

/// The call, when the whole of `text` is one call object.
pub fn parse(text: &str) -> Option<ParsedCall> {
    call_from_json(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_answer_object_is_a_call() {
        let call = parse("  {\"name\": \"f\", \"parameters\": {\"x\": 1}}\n").unwrap();
        assert_eq!(call.name, "f");
        assert_eq!(call.arguments, r#"{"x":1}"#);
        assert_eq!(parse(r#"{"name": "g"}"#).unwrap().arguments, "{}");
    }

    #[test]
    fn anything_else_is_not() {
        assert_eq!(parse("The answer is {\"name\": \"f\"}"), None);
        assert_eq!(parse(r#"{"parameters": {}}"#), None);
        assert_eq!(parse(r#"{"name": 3}"#), None);
    }
}
