//! Every prompt-config key, its validation, and placeholder expansion.

use mlx_harmony_config::ConfigError;
use mlx_harmony_config::placeholders::Clock;
use mlx_harmony_config::prompt_config::{KEYS, PromptConfig, ReasoningEffort};

fn parse(json: &str) -> Result<PromptConfig, ConfigError> {
    PromptConfig::from_json_str(json, "test.json")
}

fn error(json: &str) -> String {
    parse(json).expect_err("must be rejected").to_string()
}

const FULL: &str = r#"{
  "system_model_identity": "You are {assistant}.",
  "reasoning_effort": "hIgH",
  "conversation_start_date": "<|DATE|>",
  "knowledge_cutoff": "2025-01",
  "developer_instructions": "Call the user {user}.",
  "assistant_greeting": "Hi {user}!",
  "example_dialogues": [[{"role": "user", "content": "Q <|TIMEU|>"}, {"role": "assistant", "content": "A"}]],
  "placeholders": {"assistant": "Dave", "user": "Morgan", "year": 2026},
  "deterministic_time_enabled": true,
  "deterministic_time_iso": "2026-03-01T21:05:09+02:00",
  "temperature": 0.5, "top_p": 0.8, "top_k": 40, "min_p": 0.05, "min_tokens_to_keep": 2,
  "max_tokens": 300, "repetition_penalty": 1.1, "repetition_context_size": 64,
  "xtc_probability": 0.5, "xtc_threshold": 0.2, "xtc_special_tokens": ["<|end|>"],
  "seed": 42, "reseed_each_turn": true, "stop": "<END>", "end_token_strings": ["<|eot_id|>"],
  "max_context_tokens": 8192, "max_context_tokens_margin": 256, "max_kv_size": 4096,
  "prewarm_cache": false, "mlock": true, "lazy": true,
  "truncate_thinking": 200, "truncate_response": 0, "logs_dir": "logs", "chats_dir": "chats",
  "_comment": "ignored"
}"#;

#[test]
fn every_key_is_read() {
    let c = parse(FULL).unwrap();
    assert_eq!(
        c.system_model_identity.as_deref(),
        Some("You are {assistant}.")
    );
    assert_eq!(c.reasoning_effort, Some(ReasoningEffort::High));
    assert_eq!(c.conversation_start_date.as_deref(), Some("<|DATE|>"));
    assert_eq!(c.knowledge_cutoff.as_deref(), Some("2025-01"));
    assert_eq!(
        c.developer_instructions.as_deref(),
        Some("Call the user {user}.")
    );
    assert_eq!(c.assistant_greeting.as_deref(), Some("Hi {user}!"));
    assert_eq!(c.example_dialogues[0][1].content, "A");
    assert_eq!(c.placeholders["year"], "2026");
    assert!(c.deterministic_time_enabled);
    let s = &c.sampling;
    assert_eq!(
        (
            s.temperature,
            s.top_p,
            s.top_k,
            s.min_p,
            s.min_tokens_to_keep
        ),
        (Some(0.5), Some(0.8), Some(40), Some(0.05), Some(2))
    );
    assert_eq!(
        (
            s.max_tokens,
            s.repetition_penalty,
            s.repetition_context_size
        ),
        (Some(300), Some(1.1), Some(64))
    );
    assert_eq!(
        (s.xtc_probability, s.xtc_threshold, s.seed),
        (Some(0.5), Some(0.2), Some(42))
    );
    assert_eq!(s.stop, Some(vec!["<END>".to_string()]));
    assert_eq!(c.xtc_special_tokens, Some(vec!["<|end|>".to_string()]));
    assert_eq!(c.end_token_strings, Some(vec!["<|eot_id|>".to_string()]));
    assert_eq!(c.reseed_each_turn, Some(true));
    assert_eq!(
        (
            c.max_context_tokens,
            c.max_context_tokens_margin,
            c.max_kv_size
        ),
        (Some(8192), Some(256), Some(4096))
    );
    assert_eq!(
        (c.prewarm_cache, c.mlock, c.lazy),
        (Some(false), Some(true), Some(true))
    );
    assert!(!c.prewarm_cache_or_default() && c.mlock_or_default());
    assert_eq!(
        (c.truncate_thinking, c.truncate_response),
        (Some(200), Some(0))
    );
    assert_eq!(
        (c.logs_dir.as_deref(), c.chats_dir.as_deref()),
        (Some("logs"), Some("chats"))
    );
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
}

#[test]
fn empty_config_has_the_loading_defaults() {
    let c = parse("{}").unwrap();
    assert!(!c.prewarm_cache_or_default());
    assert!(!c.mlock_or_default());
    assert_eq!(c.clock(), Clock::System);
}

#[test]
fn reasoning_effort_any_case_and_bad_values() {
    for (text, effort) in [
        ("low", ReasoningEffort::Low),
        ("Medium", ReasoningEffort::Medium),
        ("HIGH", ReasoningEffort::High),
    ] {
        assert_eq!(
            parse(&format!(r#"{{"reasoning_effort": "{text}"}}"#))
                .unwrap()
                .reasoning_effort,
            Some(effort)
        );
    }
    let err = error(r#"{"reasoning_effort": "extreme"}"#);
    assert!(
        err.starts_with("test.json: reasoning_effort: must be Low, Medium or High"),
        "{err}"
    );
    assert!(error(r#"{"reasoning_effort": 3}"#).contains("reasoning_effort"));
}

#[test]
fn out_of_range_and_wrong_type_name_the_key_and_the_range() {
    let cases = [
        (
            r#"{"temperature": 2.5}"#,
            "temperature: must be a number from 0 to 2, got 2.5",
        ),
        (
            r#"{"temperature": "hot"}"#,
            "temperature: must be a number from 0 to 2, got \"hot\"",
        ),
        (r#"{"top_p": 1.2}"#, "top_p: must be a number from 0 to 1"),
        (r#"{"min_p": -0.1}"#, "min_p: must be a number from 0 to 1"),
        (
            r#"{"top_k": -1}"#,
            "top_k: must be a whole number of at least 0",
        ),
        (r#"{"top_k": 1.5}"#, "top_k: must be a whole number"),
        (
            r#"{"min_tokens_to_keep": 0}"#,
            "min_tokens_to_keep: must be a whole number of at least 1",
        ),
        (
            r#"{"max_tokens": 0}"#,
            "max_tokens: must be a whole number of at least 1",
        ),
        (
            r#"{"max_tokens": 4294967296}"#,
            "max_tokens: must be at most 4294967295, got 4294967296",
        ),
        (
            r#"{"seed": 18446744073709551615}"#,
            "seed: must be at most 9223372036854775807",
        ),
        (
            r#"{"repetition_penalty": 0}"#,
            "repetition_penalty: must be a number above 0",
        ),
        (
            r#"{"repetition_context_size": 0}"#,
            "repetition_context_size: must be a whole number of at least 1",
        ),
        (
            r#"{"xtc_probability": 2}"#,
            "xtc_probability: must be a number from 0 to 1",
        ),
        (
            r#"{"xtc_threshold": 0.6}"#,
            "xtc_threshold: must be a number from 0 to 0.5",
        ),
        (
            r#"{"seed": -2}"#,
            "seed: must be a whole number of at least -1",
        ),
        (r#"{"stop": [1, 2]}"#, "stop"),
        (
            r#"{"system_model_identity": 5}"#,
            "system_model_identity: must be a string, got 5",
        ),
        (
            r#"{"mlock": "yes"}"#,
            "mlock: must be true or false, got \"yes\"",
        ),
        (
            r#"{"max_kv_size": 0}"#,
            "max_kv_size: must be a whole number of at least 1",
        ),
        (
            r#"{"max_context_tokens": 100, "max_context_tokens_margin": 100}"#,
            "max_context_tokens_margin: (100) must be smaller",
        ),
        (
            r#"{"placeholders": ["a"]}"#,
            "placeholders: must be an object",
        ),
        (
            r#"{"placeholders": {"a": [1]}}"#,
            "placeholders.a: must be a string",
        ),
        (
            r#"{"example_dialogues": [[{"role": "narrator", "content": "x"}]]}"#,
            "example_dialogues: [0][0].role must be one of user, assistant",
        ),
        (
            r#"{"example_dialogues": [{"role": "user"}]}"#,
            "example_dialogues: [0] must be a list",
        ),
        (
            r#"{"deterministic_time_enabled": true}"#,
            "deterministic_time_iso is not set",
        ),
        (
            r#"{"deterministic_time_iso": "yesterday"}"#,
            "deterministic_time_iso: must be an ISO 8601 date-time",
        ),
        (r#"[1, 2]"#, "must be a JSON object"),
        (r#"{"temperature": 0.7,}"#, "not valid JSON"),
    ];
    for (json, expected) in cases {
        let err = error(json);
        assert!(err.starts_with("test.json"), "{json}: {err}");
        assert!(
            err.contains(expected),
            "{json}: got {err:?}, expected it to contain {expected:?}"
        );
    }
}

#[test]
fn null_means_unset_and_unknown_keys_are_reported() {
    let c = parse(r#"{"temperature": null, "temprature": 0.5, "_note": "x", "max_tokens": 5}"#)
        .unwrap();
    assert_eq!(c.sampling.temperature, None);
    assert_eq!(c.sampling.max_tokens, Some(5));
    assert_eq!(c.unknown_keys, vec!["temprature".to_string()]);
    assert_eq!(
        c.warnings(),
        vec!["unknown key `temprature` (ignored; a typo, or a newer version's key?)".to_string()]
    );
}

#[test]
fn placeholders_expand_everywhere_with_a_fixed_clock() {
    let c = parse(FULL).unwrap();
    let clock = c.clock();
    let e = c.expanded(&clock);
    assert_eq!(
        e.config.system_model_identity.as_deref(),
        Some("You are Dave.")
    );
    assert_eq!(
        e.config.conversation_start_date.as_deref(),
        Some("2026-03-01")
    );
    assert_eq!(
        e.config.developer_instructions.as_deref(),
        Some("Call the user Morgan.")
    );
    assert_eq!(e.config.assistant_greeting.as_deref(), Some("Hi Morgan!"));
    // 21:05:09 at +02:00 is 19:05:09 UTC.
    assert_eq!(e.config.example_dialogues[0][0].content, "Q 19:05:09");
    assert!(e.unknown_placeholders.is_empty());
    // The original is untouched.
    assert_eq!(
        c.system_model_identity.as_deref(),
        Some("You are {assistant}.")
    );
}

#[test]
fn each_built_in_placeholder() {
    let clock = Clock::fixed_local("2026-03-01T21:05:09+02:00").unwrap();
    let c = parse(r#"{"system_model_identity": "<|DATE|> <|DATETIME|> <|TIME|> <|TIMEZ|> <|TIMEA|> <|TIMEU|> <|date|>"}"#).unwrap();
    assert_eq!(
        c.expanded(&clock).config.system_model_identity.as_deref(),
        Some("2026-03-01 2026-03-01T21:05:09 21:05:09 21:05:09 09:05:09 PM 19:05:09 2026-03-01")
    );
    let morning = Clock::fixed_local("2026-03-01T08:00:00Z").unwrap();
    let c = parse(r#"{"system_model_identity": "<|TIMEA|>"}"#).unwrap();
    assert_eq!(
        c.expanded(&morning).config.system_model_identity.as_deref(),
        Some("08:00:00 AM")
    );
}

#[test]
fn user_placeholders_braces_are_case_sensitive_pipes_are_not() {
    let clock = Clock::fixed_local("2026-03-01T12:00:00Z").unwrap();
    let c = parse(
        r#"{"placeholders": {"User": "Morgan", "when": "on <|DATE|>"},
            "developer_instructions": "{User} {user} <|USER|> <|user|> {when} <|start|> <|NOPE|> {x y} {}"}"#,
    )
    .unwrap();
    let e = c.expanded(&clock);
    assert_eq!(
        e.config.developer_instructions.as_deref(),
        Some("Morgan {user} Morgan Morgan on 2026-03-01 <|start|> <|NOPE|> {x y} {}")
    );
    assert_eq!(
        e.unknown_placeholders,
        vec!["{user}", "<|start|>", "<|NOPE|>"]
    );
}

#[test]
fn naive_fixed_time_is_read_in_local_time() {
    let clock = Clock::fixed_local("2026-07-04T10:11:12").unwrap();
    let c = parse(r#"{"system_model_identity": "<|DATETIME|>"}"#).unwrap();
    assert_eq!(
        c.expanded(&clock).config.system_model_identity.as_deref(),
        Some("2026-07-04T10:11:12")
    );
}

#[test]
fn reference_doc_lists_exactly_the_keys_the_code_reads() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROMPT_CONFIG_REFERENCE.md"
    ))
    .unwrap();
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key))
        .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert_eq!(
        documented, KEYS,
        "docs/PROMPT_CONFIG_REFERENCE.md's key table and prompt_config::KEYS differ"
    );
    // And every key the code lists is one the parser accepts without a warning.
    let all: String = format!(
        "{{{}}}",
        KEYS.iter()
            .map(|k| format!("\"{k}\": null"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(parse(&all).unwrap().unknown_keys.is_empty());
}

#[test]
fn example_configs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let c = PromptConfig::load(format!("{root}/prompt-config.example.json")).unwrap();
    assert!(c.unknown_keys.is_empty());
    let e = c.expanded(&Clock::fixed_local("2026-01-01T10:00:00Z").unwrap());
    assert_eq!(
        e.config.assistant_greeting.as_deref(),
        Some("Hello Morgan, I'm Dave. How can I help you today?")
    );
    assert!(e.unknown_placeholders.is_empty());
    let profiles =
        mlx_harmony_config::profiles::Profiles::load(format!("{root}/profiles.example.json"))
            .unwrap();
    let profile = profiles.get("gpt-oss-20b").unwrap();
    PromptConfig::load(profile.prompt_config.as_ref().unwrap()).unwrap();
    let conversation = mlx_harmony_config::conversation::Conversation::load(format!(
        "{root}/conversation.example.json"
    ))
    .unwrap();
    assert_eq!(conversation.migrated_from, None);
    assert_eq!(conversation.conversation.messages.len(), 4);
}

#[test]
fn a_missing_file_names_it() {
    let err = PromptConfig::load("/nonexistent/config.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/nonexistent/config.json:"), "{err}");
}
