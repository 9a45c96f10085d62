//! What real models emit that is not quite Harmony: the parser never fails,
//! never drops text, and flags what it could not structure.

mod common;

use mlx_harmony_format::model::{Message, Role};
use mlx_harmony_format::{RenderConfig, Special, StreamParser};

fn tokens(parts: &[&str]) -> Vec<u32> {
    let enc = common::encoding();
    let mut out = Vec::new();
    for part in parts {
        match Special::ALL.into_iter().find(|s| s.as_str() == *part) {
            Some(special) => out.push(enc.special(special)),
            None => out.extend(enc.encode_text(part).unwrap()),
        }
    }
    out
}

#[test]
fn missing_start_assistant_prefix() {
    let enc = common::encoding();
    // Parsing with role None, but the model began straight with the channel.
    let parsed = enc.parse_completion(
        &tokens(&[
            "<|channel|>",
            "final",
            "<|message|>",
            "Hi there",
            "<|return|>",
        ]),
        None,
    );
    assert_eq!(parsed.len(), 1);
    let m = &parsed[0];
    assert_eq!(
        (m.message.author.role, m.message.channel.as_deref()),
        (Role::Assistant, Some("final"))
    );
    assert_eq!(m.message.text_content(), "Hi there");
    assert_eq!(m.ended_by, Some(Special::Return));
    assert!(
        m.irregular
            .as_deref()
            .unwrap()
            .contains("did not begin with <|start|>")
    );

    // Parsing after <|start|>assistant, but the model repeats <|start|>assistant anyway.
    let parsed = enc.parse_completion(
        &tokens(&[
            "<|start|>",
            "assistant",
            "<|channel|>",
            "final",
            "<|message|>",
            "Yes",
            "<|return|>",
        ]),
        Some(Role::Assistant),
    );
    assert_eq!(parsed[0].message.text_content(), "Yes");
    assert!(parsed[0].irregular.is_none());

    // No header at all: plain text then an end token.
    let parsed = enc.parse_completion(&tokens(&["Just text.", "<|end|>"]), Some(Role::Assistant));
    assert_eq!(parsed[0].message.text_content(), "Just text.");
    assert!(
        parsed[0]
            .irregular
            .as_deref()
            .unwrap()
            .contains("without a message header")
    );
}

#[test]
fn message_cut_off_by_max_tokens() {
    let enc = common::encoding();
    let mut parser = StreamParser::new(enc, Some(Role::Assistant));
    for t in tokens(&[
        "<|channel|>",
        "analysis",
        "<|message|>",
        "Thinking about the ans",
    ]) {
        parser.process(t);
    }
    assert_eq!(parser.current_content(), Some("Thinking about the ans"));
    parser.finish();
    let m = &parser.messages()[0];
    assert_eq!(m.message.text_content(), "Thinking about the ans");
    assert_eq!(m.ended_by, None);
    assert_eq!(m.message.channel.as_deref(), Some("analysis"));
    assert!(m.irregular.is_none());

    // Cut off inside the header: the header text is kept, flagged.
    let parsed = enc.parse_completion(&tokens(&["<|channel|>", "comment"]), Some(Role::Assistant));
    assert_eq!(parsed[0].message.text_content(), "<|channel|>comment");
    assert!(
        parsed[0]
            .irregular
            .as_deref()
            .unwrap()
            .contains("cut off in the message header")
    );
}

#[test]
fn channel_marker_without_a_channel() {
    let parsed = common::encoding().parse_completion(
        &tokens(&["<|channel|>", "<|message|>", "Answer.", "<|end|>"]),
        Some(Role::Assistant),
    );
    let m = &parsed[0];
    assert_eq!(m.message.channel, None);
    assert_eq!(m.message.text_content(), "Answer.");
    let why = m.irregular.as_deref().unwrap();
    assert!(why.contains("<|channel|> without a channel name"), "{why}");
}

#[test]
fn unknown_recipients_are_kept() {
    let parsed = common::encoding().parse_completion(
        &tokens(&[
            "<|channel|>",
            "commentary to=spaceship.launch",
            " ",
            "<|constrain|>",
            "json",
            "<|message|>",
            "{\"go\":true}",
            "<|call|>",
        ]),
        Some(Role::Assistant),
    );
    let m = &parsed[0];
    assert_eq!(m.message.recipient.as_deref(), Some("spaceship.launch"));
    assert_eq!(m.message.content_type.as_deref(), Some("<|constrain|>json"));
    assert_eq!(m.ended_by, Some(Special::Call));
    assert!(m.irregular.is_none());
}

#[test]
fn text_after_return_is_kept_and_flagged() {
    let parsed = common::encoding().parse_completion(
        &tokens(&[
            "<|channel|>",
            "final",
            "<|message|>",
            "Done.",
            "<|return|>",
            "and some more",
            "<|end|>",
        ]),
        Some(Role::Assistant),
    );
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].message.text_content(), "Done.");
    assert_eq!(parsed[1].message.text_content(), "and some more<|end|>");
    assert!(
        parsed[1]
            .irregular
            .as_deref()
            .unwrap()
            .contains("outside any message")
    );
}

#[test]
fn unexpected_header_words_and_unknown_roles_are_flagged_not_fatal() {
    let enc = common::encoding();
    let parsed = enc.parse_completion(
        &tokens(&[
            "<|start|>",
            "assistant what is this to=x json",
            "<|message|>",
            "ok",
            "<|end|>",
        ]),
        None,
    );
    assert_eq!(parsed[0].message.text_content(), "ok");
    assert!(
        parsed[0]
            .irregular
            .as_deref()
            .unwrap()
            .contains("unexpected words")
    );
    let parsed = enc.parse_completion(
        &tokens(&["<|start|>", "robot", "<|message|>", "beep", "<|end|>"]),
        None,
    );
    assert_eq!(parsed[0].message.author.role, Role::Tool);
    assert_eq!(parsed[0].message.author.name.as_deref(), Some("robot"));
    assert!(
        parsed[0]
            .irregular
            .as_deref()
            .unwrap()
            .contains("unknown role")
    );
}

/// The id of the byte-level token that is exactly this one byte.
fn byte_token(byte: u8) -> u32 {
    let enc = common::encoding();
    (0..200_000u32)
        .find(|&id| enc.token_bytes(id) == [byte])
        .expect("every byte has a token")
}

#[test]
fn utf8_split_across_tokens_is_held_back_then_emitted_whole() {
    let enc = common::encoding();
    let mut parser = StreamParser::new(enc, Some(Role::Assistant));
    for t in tokens(&["<|channel|>", "final", "<|message|>", "A"]) {
        parser.process(t);
    }
    let smile = "😀".as_bytes();
    for &b in &smile[..3] {
        parser.process(byte_token(b));
        assert_eq!(
            parser.last_content_delta(),
            None,
            "no partial character may be emitted"
        );
    }
    parser.process(byte_token(smile[3]));
    assert_eq!(parser.last_content_delta(), Some("😀"));
    // An invalid byte becomes U+FFFD, and text after it still flows.
    parser.process(byte_token(0xFF));
    assert_eq!(parser.last_content_delta(), Some("\u{FFFD}"));
    // A character cut off by the end of the stream is replaced, not lost silently.
    parser.process(byte_token(0xE6));
    parser.finish();
    assert_eq!(
        parser.messages()[0].message.text_content(),
        "A😀\u{FFFD}\u{FFFD}"
    );
}

#[test]
fn tool_messages_need_a_name_and_content_kinds_their_role() {
    let enc = common::encoding();
    let nameless = Message::text(Role::Tool, "result");
    assert!(
        enc.render_conversation(&[nameless], RenderConfig::default())
            .unwrap_err()
            .to_string()
            .contains("tool's name")
    );
    let misplaced = Message::new(
        Role::User,
        mlx_harmony_format::model::Content::SystemContent(Default::default()),
    );
    assert!(
        enc.render_conversation(&[misplaced], RenderConfig::default())
            .is_err()
    );
}
