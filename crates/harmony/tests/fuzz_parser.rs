//! Property test of the streaming parser on random token sequences drawn from
//! the special and the ordinary vocabulary: it never panics, the deltas of
//! each message add up to its text, and that text is exactly the (lossy)
//! decoding of the message's content tokens.

mod common;

use mlx_harmony_format::model::Role;
use mlx_harmony_format::{Special, StreamParser};
use proptest::prelude::*;

/// A token: mostly ordinary text (including single bytes that split UTF-8),
/// often a Harmony special token.
fn token() -> impl Strategy<Value = u32> {
    let enc = common::encoding();
    let specials: Vec<u32> = Special::ALL.iter().map(|s| enc.special(*s)).collect();
    prop_oneof![
        4 => 0u32..199_998,
        2 => proptest::sample::select(specials),
        1 => 0u32..256,
        1 => proptest::sample::select(enc.encode_text("final analysis commentary to=functions.f <|x|> 😀 日本").unwrap()),
    ]
}

/// The content segments by the format's rules alone: after `<|message|>` in a
/// header, up to a stop token or the end.
fn oracle_contents(tokens: &[u32], role: Option<Role>) -> Vec<String> {
    let enc = common::encoding();
    #[derive(PartialEq)]
    enum Mode {
        Between { stray: bool },
        Header,
        Content(Vec<u8>),
    }
    let mut mode = if role.is_some() {
        Mode::Header
    } else {
        Mode::Between { stray: false }
    };
    let mut out = Vec::new();
    for &t in tokens {
        let special = enc.special_of(t);
        let stop = matches!(
            special,
            Some(Special::End | Special::Return | Special::Call)
        );
        mode = match mode {
            Mode::Between { stray } => match special {
                Some(Special::Start) => Mode::Header,
                Some(Special::Channel) if !stray => Mode::Header,
                _ => Mode::Between { stray: true },
            },
            Mode::Header if special == Some(Special::Message) => Mode::Content(Vec::new()),
            Mode::Header if stop => Mode::Between { stray: false },
            Mode::Header => Mode::Header,
            Mode::Content(bytes) if stop => {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
                Mode::Between { stray: false }
            }
            Mode::Content(mut bytes) => {
                bytes.extend_from_slice(enc.token_bytes(t));
                Mode::Content(bytes)
            }
        };
    }
    if let Mode::Content(bytes) = mode {
        out.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    out
}

fn from_content(m: &mlx_harmony_format::ParsedMessage) -> bool {
    m.irregular
        .as_deref()
        .is_none_or(|why| why.starts_with("header"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn deltas_add_up_to_the_decoded_content(tokens in proptest::collection::vec(token(), 0..120), with_role in any::<bool>()) {
        let enc = common::encoding();
        let role = with_role.then_some(Role::Assistant);
        let mut parser = StreamParser::new(enc, role);
        let mut streamed = String::new();
        let mut per_message = Vec::new();
        let mut seen = 0;
        let step = |parser: &StreamParser, streamed: &mut String, per_message: &mut Vec<String>, seen: &mut usize| {
            if let Some(delta) = parser.last_content_delta() {
                streamed.push_str(delta);
            }
            for m in &parser.messages()[*seen..] {
                if from_content(m) {
                    per_message.push(std::mem::take(streamed));
                    prop_assert_eq!(&m.message.text_content(), per_message.last().unwrap());
                }
            }
            *seen = parser.messages().len();
            Ok(())
        };
        for &t in &tokens {
            parser.process(t);
            step(&parser, &mut streamed, &mut per_message, &mut seen)?;
        }
        parser.finish();
        step(&parser, &mut streamed, &mut per_message, &mut seen)?;
        prop_assert_eq!(per_message, oracle_contents(&tokens, role));
        prop_assert_eq!(parser.tokens(), &tokens[..]);
        // Text the parser could not place in a message body is kept verbatim
        // in a flagged message: stray text and headers that never reached
        // <|message|> decode to exactly their tokens.
        for m in parser.messages().iter().filter(|m| !from_content(m)) {
            prop_assert!(!m.message.text_content().is_empty());
        }
    }
}
