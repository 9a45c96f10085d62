//! Precedence: CLI > prompt config > saved conversation > generation_config.json > default.

use mlx_harmony_config::prompt_config::PromptConfig;
use mlx_harmony_config::settings::{Hyperparameters, SETTINGS, Source, built_in_defaults, resolve};

fn h(json: &str) -> Hyperparameters {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    Hyperparameters::from_json_map(value.as_object().unwrap(), "t.json".as_ref()).unwrap()
}

#[test]
fn each_layer_wins_over_the_ones_below_it() {
    let cli = h(r#"{"temperature": 0.1}"#);
    let prompt = h(r#"{"temperature": 0.2, "top_p": 0.5}"#);
    let conversation = h(r#"{"temperature": 0.3, "top_p": 0.6, "top_k": 7}"#);
    let model = h(r#"{"temperature": 0.4, "top_p": 0.7, "top_k": 8, "min_p": 0.05}"#);
    let r = resolve(
        Some(&cli),
        Some(&prompt),
        Some(&conversation),
        Some(&model),
        false,
    );
    let s = &r.settings;
    assert_eq!(
        (s.temperature, s.top_p, s.top_k, s.min_p),
        (0.1, 0.5, 7, 0.05)
    );
    assert_eq!(s.repetition_penalty, 1.0);
    let source = |name: &str| r.sources.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(source("temperature"), Source::Cli);
    assert_eq!(source("top_p"), Source::PromptConfig);
    assert_eq!(source("top_k"), Source::Conversation);
    assert_eq!(source("min_p"), Source::GenerationConfig);
    assert_eq!(source("repetition_penalty"), Source::Default);
    assert_eq!(r.sources.len(), SETTINGS.len());

    // Remove the top layer each time: the next one shows through.
    let r = resolve(
        None,
        Some(&prompt),
        Some(&conversation),
        Some(&model),
        false,
    );
    assert_eq!(r.settings.temperature, 0.2);
    let r = resolve(None, None, Some(&conversation), Some(&model), false);
    assert_eq!(r.settings.temperature, 0.3);
    let r = resolve(None, None, None, Some(&model), false);
    assert_eq!(r.settings.temperature, 0.4);
    let r = resolve(None, None, None, None, false);
    assert_eq!(r.settings.temperature, 0.8);
}

#[test]
fn built_in_defaults_depend_on_harmony_for_max_tokens() {
    assert_eq!(
        resolve(None, None, None, None, true).settings.max_tokens,
        1024
    );
    assert_eq!(
        resolve(None, None, None, None, false).settings.max_tokens,
        512
    );
    let d = resolve(None, None, None, None, false).settings;
    assert_eq!(
        (
            d.temperature,
            d.top_p,
            d.top_k,
            d.min_p,
            d.min_tokens_to_keep
        ),
        (0.8, 0.9, 0, 0.0, 1)
    );
    assert_eq!((d.repetition_penalty, d.repetition_context_size), (1.0, 20));
    assert_eq!(
        (d.xtc_probability, d.xtc_threshold, d.seed),
        (0.0, 0.1, None)
    );
    assert!(d.stop.is_empty());
    assert_eq!(built_in_defaults(true).to_json_map().len(), SETTINGS.len());
}

#[test]
fn prompt_config_sampling_feeds_the_prompt_config_layer() {
    let config = PromptConfig::from_json_str(
        r#"{"max_tokens": 64, "seed": 5, "stop": ["x", "y"]}"#,
        "p.json",
    )
    .unwrap();
    let r = resolve(None, Some(&config.sampling), None, None, true);
    assert_eq!(r.settings.max_tokens, 64);
    assert_eq!(r.settings.seed, Some(5));
    assert_eq!(r.settings.stop, vec!["x", "y"]);
}

#[test]
fn generation_config_json_is_read_leniently() {
    let json = serde_json::json!({
        "bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": true,
        "temperature": 0.6, "top_p": 0.95, "top_k": 20, "max_new_tokens": 2048,
        "repetition_penalty": 0.0
    });
    let g = Hyperparameters::from_generation_config(&json);
    assert_eq!(
        (g.temperature, g.top_p, g.top_k, g.max_tokens),
        (Some(0.6), Some(0.95), Some(20), Some(2048))
    );
    // Out of our range: ignored rather than fatal (the model author's file).
    assert_eq!(g.repetition_penalty, None);
    assert_eq!(
        Hyperparameters::from_generation_config(&serde_json::json!("junk")),
        Hyperparameters::default()
    );
}

#[test]
fn set_changes_one_setting_or_explains_why_not() {
    let mut h = Hyperparameters::default();
    h.set("temperature", "0.7").unwrap();
    h.set("top_k", " 40 ").unwrap();
    h.set("stop", "END").unwrap();
    h.set("seed", "-1").unwrap();
    assert_eq!(
        (h.temperature, h.top_k, h.seed),
        (Some(0.7), Some(40), Some(-1))
    );
    assert_eq!(h.stop, Some(vec!["END".to_string()]));
    h.set("stop", r#"["a", "b"]"#).unwrap();
    assert_eq!(h.stop, Some(vec!["a".to_string(), "b".to_string()]));

    let err = h.set("temperature", "3").unwrap_err();
    assert!(
        err.contains("temperature must be a number from 0 to 2, got 3"),
        "{err}"
    );
    assert_eq!(h.temperature, Some(0.7), "a rejected value changes nothing");
    let err = h.set("top_k", "many").unwrap_err();
    assert!(err.contains("top_k must be a whole number"), "{err}");
    let err = h.set("temprature", "0.5").unwrap_err();
    assert!(
        err.starts_with("unknown setting \"temprature\"; valid: temperature, top_p, top_k"),
        "{err}"
    );
}

#[test]
fn hyperparameters_round_trip_through_json() {
    let h = h(r#"{"temperature": 0.5, "max_tokens": 10, "stop": ["s"]}"#);
    let map = h.to_json_map();
    assert_eq!(map.len(), 3);
    assert_eq!(
        Hyperparameters::from_json_map(&map, "x".as_ref()).unwrap(),
        h
    );
}
