//! Conformance with openai-harmony 0.0.8: the golden cases made by
//! scripts/make_harmony_golden.py, rendered and parsed by this crate with the
//! o200k_harmony tokenizer as a Hugging Face tokenizer.json.

mod common;

use mlx_harmony_format::model::{Message, Role};
use mlx_harmony_format::{RenderConfig, StreamParser};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn first_difference(ours: &[u32], theirs: &[u32]) -> String {
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let enc = common::encoding();
    format!(
        "first difference at token {at} of {}/{}:\n ours:   {:?}\n theirs: {:?}",
        ours.len(),
        theirs.len(),
        enc.decode_lossy(&ours[at.saturating_sub(8)..(at + 8).min(ours.len())]),
        enc.decode_lossy(&theirs[at.saturating_sub(8)..(at + 8).min(theirs.len())]),
    )
}

#[test]
fn at_least_forty_cases_cover_every_feature() {
    let golden = golden();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "only {} golden cases", cases.len());
    let all = serde_json::to_string(cases).unwrap();
    for feature in [
        "\"reasoning_effort\":\"Low\"",
        "\"reasoning_effort\":\"High\"",
        "conversation_start_date",
        "\"browser\"",
        "\"python\"",
        "\"functions\"",
        "\"oneOf\"",
        "\"enum\"",
        "\"default\"",
        "\"items\"",
        "\"recipient\":\"functions.",
        "\"recipient\":\"browser.search\"",
        "\"recipient\":\"python\"",
        "<|constrain|>json",
        "\"role\":\"tool\"",
        "\"channel\":\"analysis\"",
        "\"channel\":\"commentary\"",
        "\"channel\":\"final\"",
        "\"name\":\"alice\"",
        "\"instructions\"",
    ] {
        assert!(all.contains(feature), "no golden case has {feature}");
    }
}

#[test]
fn stop_tokens_match() {
    let golden = golden();
    let enc = common::encoding();
    let mut stops = enc.stop_tokens().to_vec();
    stops.sort();
    assert_eq!(stops, ids(&golden["stop_tokens"]));
    let mut actions = enc.stop_tokens_for_assistant_actions().to_vec();
    actions.sort();
    assert_eq!(actions, ids(&golden["stop_tokens_for_assistant_actions"]));
}

#[test]
fn renders_match_token_for_token() {
    let enc = common::encoding();
    let golden = golden();
    let mut failures = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone())
            .unwrap_or_else(|e| panic!("{name}: cannot read the conversation: {e}"));
        let no_drop = RenderConfig {
            auto_drop_analysis: false,
        };
        let renders = [
            (
                "completion",
                enc.render_conversation_for_completion(
                    &messages,
                    Role::Assistant,
                    RenderConfig::default(),
                ),
            ),
            (
                "conversation",
                enc.render_conversation(&messages, RenderConfig::default()),
            ),
            (
                "training",
                enc.render_conversation_for_training(&messages, RenderConfig::default()),
            ),
            (
                "completion_no_drop",
                enc.render_conversation_for_completion(&messages, Role::Assistant, no_drop),
            ),
        ];
        for (kind, ours) in renders {
            let ours = ours.unwrap_or_else(|e| panic!("{name} {kind}: {e}"));
            let theirs = ids(&case[kind]);
            if ours != theirs {
                failures.push(format!(
                    "{name} ({kind}): {}",
                    first_difference(&ours, &theirs)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} renders differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn messages_round_trip_through_openai_harmony_json() {
    for case in golden()["cases"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let back = serde_json::to_value(&messages).unwrap();
        let again: Vec<Message> = serde_json::from_value(back).unwrap();
        assert_eq!(messages, again, "{}", case["name"]);
    }
}

fn option_str(value: &Value) -> Option<&str> {
    value.as_str()
}

/// Parses token by token and compares every step and the messages.
fn check_stream(name: &str, tokens: &[u32], role: Option<Role>, steps: &Value, expected: &Value) {
    let enc = common::encoding();
    let mut parser = StreamParser::new(enc, role);
    for (i, (&token, step)) in tokens.iter().zip(steps.as_array().unwrap()).enumerate() {
        parser.process(token);
        let ours = (
            parser.current_role().map(|r| r.as_str()),
            parser.current_channel(),
            parser.current_recipient(),
            parser.current_content_type(),
            parser.last_content_delta(),
        );
        let theirs = (
            option_str(&step[0]),
            option_str(&step[1]),
            option_str(&step[2]),
            option_str(&step[3]),
            option_str(&step[4]),
        );
        assert_eq!(
            ours,
            theirs,
            "{name}: after token {i} ({:?})",
            enc.decode_lossy(&[token])
        );
    }
    parser.finish();
    let parsed = parser.into_messages();
    assert!(
        parsed.iter().all(|m| m.irregular.is_none()),
        "{name}: {parsed:?}"
    );
    let ours: Vec<Message> = parsed.into_iter().map(|m| m.message).collect();
    let theirs: Vec<Message> = serde_json::from_value(expected.clone()).unwrap();
    assert_eq!(ours, theirs, "{name}: parsed messages differ");
}

#[test]
fn streaming_parse_matches_step_by_step() {
    let golden = golden();
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        let Some(parse) = case.get("parse") else {
            continue;
        };
        let name = case["name"].as_str().unwrap();
        check_stream(
            name,
            &ids(&parse["tokens"]),
            None,
            &parse["stream"],
            &parse["messages"],
        );
        check_stream(
            &format!("{name} (after <|start|>assistant)"),
            &ids(&parse["tokens_after_role"]),
            Some(Role::Assistant),
            &parse["stream_after_role"],
            &parse["messages_after_role"],
        );
        // The whole-completion parse agrees with the streaming one.
        let whole = common::encoding().parse_completion(&ids(&parse["tokens"]), None);
        let theirs: Vec<Message> = serde_json::from_value(parse["messages"].clone()).unwrap();
        assert_eq!(
            whole.into_iter().map(|m| m.message).collect::<Vec<_>>(),
            theirs,
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} streaming cases");
}

#[test]
fn text_encoding_matches_tiktoken_rs() {
    // An independent check of the tokenizer.json conversion: tiktoken-rs's own o200k_harmony.
    let reference = tiktoken_rs::o200k_harmony().unwrap();
    let enc = common::encoding();
    for text in [
        "Hello, world!  How's it going?\n\n  Ünïcødé 日本語 😀 1234567 tabs\t\tend   ",
        "<|start|>assistant<|channel|>final<|message|> as plain text",
        "   leading spaces and trailing newlines\n\n\n",
        "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    ] {
        let theirs: Vec<u32> = reference.encode_ordinary(text);
        assert_eq!(enc.encode_text(text).unwrap(), theirs, "{text:?}");
        assert_eq!(enc.decode_lossy(&theirs), text);
    }
    for (name, id) in [
        ("<|start|>", 200006),
        ("<|end|>", 200007),
        ("<|message|>", 200008),
        ("<|channel|>", 200005),
        ("<|return|>", 200002),
        ("<|call|>", 200012),
        ("<|constrain|>", 200003),
    ] {
        assert_eq!(enc.tokenizer().token_to_id(name), Some(id));
    }
}
