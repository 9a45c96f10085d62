//! The constraints on real vocabularies and models: a plain-text model's
//! whole reply held to a schema, alone and inside a batch beside free
//! sequences (random-weight parity checkpoints sampled at temperature 1, so
//! that only the mask makes the output valid); a GPT-OSS reply whose
//! analysis stays free while its final answer and a strict tool's call are
//! held, read token by token on the o200k_harmony vocabulary.

use std::collections::HashMap;
use std::rc::Rc;

use mlx_harmony_core::batch::{BatchEvent, BatchGenerator, SequenceRequest};
use mlx_harmony_core::generate::{Cancel, GenerateOptions, LoadedModel, generate};
use mlx_harmony_core::sampling::{Sampler, SamplingSettings, TokenConstraint};
use mlx_harmony_grammar::{Grammars, OutputFormat, OutputRules, StrictTool};
use serde_json::{Value, json};

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(&mlx_harmony_testkit::parity_fixture(name)).unwrap()
}

fn grammars(loaded: &LoadedModel) -> Grammars {
    Grammars::new(
        &loaded.tokenizer,
        loaded.model.vocab_size() as usize,
        &loaded.eos_token_ids,
        loaded.harmony.is_some(),
    )
    .unwrap()
}

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
        "score": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["name", "tags", "score"], "additionalProperties": false})
}

/// Checks by hand what the schema asks (the engine is not asked again).
fn assert_matches_schema(text: &str) {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let object = value.as_object().unwrap();
    assert_eq!(object.len(), 3, "{text}");
    assert!(
        object["name"].as_str().unwrap().chars().count() <= 8,
        "{text}"
    );
    let tags = object["tags"].as_array().unwrap();
    assert!((1..=3).contains(&tags.len()), "{text}");
    assert!(
        tags.iter()
            .all(|t| ["a", "b", "c"].contains(&t.as_str().unwrap())),
        "{text}"
    );
    let score = object["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score), "{text}");
}

fn hot_sampler(seed: u64) -> Sampler {
    Sampler::new(SamplingSettings {
        temperature: 1.0,
        seed: Some(seed),
        ..Default::default()
    })
    .unwrap()
}

fn constraint(grammars: &Grammars, format: OutputFormat) -> Box<dyn TokenConstraint> {
    grammars
        .constraint(&OutputRules {
            answer: Some(format),
            strict_tools: Vec::new(),
        })
        .unwrap()
        .unwrap()
}

/// A generation at temperature 1 held to `format`.
fn held_generation(
    loaded: &LoadedModel,
    grammars: &Grammars,
    format: OutputFormat,
    seed: u64,
    max_tokens: usize,
) -> mlx_harmony_core::generate::Generation {
    let prompt = loaded.encode("Hello").unwrap();
    let mut sampler = hot_sampler(seed);
    sampler.set_constraint(constraint(grammars, format));
    generate(
        loaded,
        &prompt,
        &mut sampler,
        &GenerateOptions::new(max_tokens),
        |_, _| {},
    )
    .unwrap()
}

#[test]
fn a_random_model_held_to_a_schema_writes_valid_json() {
    let loaded = load("llama");
    let grammars = grammars(&loaded);
    for seed in 0..4 {
        let generation = held_generation(
            &loaded,
            &grammars,
            OutputFormat::JsonSchema(schema()),
            seed,
            200,
        );
        assert_eq!(
            generation.finish_reason,
            mlx_harmony_core::generate::FinishReason::Stop,
            "{}",
            generation.text
        );
        assert_matches_schema(&generation.text);
    }
}

#[test]
fn a_lark_grammar_and_a_regex_hold_the_whole_reply() {
    let loaded = load("llama");
    let grammars = grammars(&loaded);
    let formats = [
        (
            OutputFormat::Lark(r#"start: "yes" | "no" | "maybe""#.into()),
            r"^(yes|no|maybe)$",
        ),
        (
            OutputFormat::Regex("[0-9]{3}-[a-z]{2}".into()),
            r"^[0-9]{3}-[a-z]{2}$",
        ),
    ];
    for (format, expected) in formats {
        let generation = held_generation(&loaded, &grammars, format, 3, 50);
        let matches = match expected {
            r"^(yes|no|maybe)$" => ["yes", "no", "maybe"].contains(&generation.text.as_str()),
            _ => {
                let b = generation.text.as_bytes();
                b.len() == 6
                    && b[..3].iter().all(u8::is_ascii_digit)
                    && b[3] == b'-'
                    && b[4..].iter().all(u8::is_ascii_lowercase)
            }
        };
        assert!(matches, "{:?} does not match {expected}", generation.text);
    }
}

#[test]
fn a_schema_the_engine_cannot_compile_is_an_error_naming_its_place() {
    let loaded = load("llama");
    let grammars = grammars(&loaded);
    let bad = OutputFormat::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1}));
    let error = grammars.matcher(&bad, "response_format").err().unwrap();
    assert!(
        error.to_string().starts_with("response_format: "),
        "{error}"
    );
    let error = grammars
        .constraint(&OutputRules {
            answer: None,
            strict_tools: vec![StrictTool {
                name: "f".into(),
                parameters: json!({"type": "nonsense"}),
            }],
        })
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .starts_with("the parameters of the strict tools [\"f\"]: "),
        "{error}"
    );
}

#[test]
fn a_template_models_tool_call_block_is_held_to_the_strict_tools_schema() {
    let loaded = load("llama");
    let grammars = grammars(&loaded);
    let rules = OutputRules {
        answer: None,
        strict_tools: vec![StrictTool {
            name: "get_weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"enum": ["Oslo", "Bergen"]}},
                "required": ["city"], "additionalProperties": false}),
        }],
    };
    let mut constraint = grammars.constraint(&rules).unwrap().unwrap();
    let encode = |text: &str| {
        loaded
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec()
    };
    let eos = loaded.eos_token_ids[0];
    for token in encode("Let me look that up. ") {
        constraint.consume(token).unwrap();
    }
    assert_eq!(
        constraint.allowed().unwrap(),
        None,
        "free text before a call"
    );
    for token in encode("<tool_call>") {
        constraint.consume(token).unwrap();
    }
    let mask = constraint.allowed().unwrap();
    assert!(!allows(&mask, eos), "the reply cannot end inside a call");
    assert!(!allows(&mask, encode("Sure")[0]), "a call is JSON");
    // The text a call must be, token by token; a wrong name is refused.
    let call =
        encode("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>");
    for token in call {
        let mask = constraint.allowed().unwrap();
        assert!(
            allows(&mask, token),
            "token {token} of a valid call refused"
        );
        constraint.consume(token).unwrap();
    }
    assert_eq!(
        constraint.allowed().unwrap(),
        None,
        "free again after the call"
    );
    let mut other = constraint.fresh();
    for token in encode("<tool_call>{\"name\": \"") {
        other.consume(token).unwrap();
    }
    let mask = other.allowed().unwrap();
    assert!(
        !allows(&mask, encode("set")[0]),
        "only a strict tool's name"
    );
}

fn weather_tool() -> OutputRules {
    OutputRules {
        answer: None,
        strict_tools: vec![StrictTool {
            name: "get_weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"enum": ["Oslo", "Bergen"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                "required": ["city", "days"], "additionalProperties": false}),
        }],
    }
}

#[test]
fn a_bare_object_models_reply_that_starts_a_call_is_held_to_one_strict_call() {
    // Llama 3.1's template asks for the call as the whole reply,
    // `{"name": ..., "parameters": ...}`, with no tag around it.
    let loaded = load("llama");
    let grammars = grammars(&loaded).with_call_style(mlx_harmony_grammar::CallStyle::WholeReply);
    let constraint = grammars.constraint(&weather_tool()).unwrap().unwrap();
    let encode = |text: &str| {
        loaded
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec()
    };
    let eos = loaded.eos_token_ids[0];
    // Text that does not start as an object is free from its first character.
    let mut text = constraint.fresh();
    assert!(text.allowed().unwrap().is_some(), "undecided at the start");
    for token in encode("  It is sunny.") {
        text.consume(token).unwrap();
    }
    assert_eq!(text.allowed().unwrap(), None, "plain text stays free");
    // A call, after some whitespace, token by token; then only the end.
    let mut call = constraint.fresh();
    for token in
        encode("\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": 3}}")
    {
        let mask = call.allowed().unwrap();
        assert!(
            allows(&mask, token),
            "token {token} of a valid call refused"
        );
        assert!(
            !allows(&mask, eos) || token == eos,
            "the reply cannot end inside a call"
        );
        call.consume(token).unwrap();
    }
    let end = call.allowed().unwrap();
    assert!(allows(&end, eos), "a finished call ends the reply");
    assert!(!allows(&end, encode(" and")[0]), "nothing follows the call");
    // Only a strict tool's name, and its parameters' schema.
    let mut wrong = constraint.fresh();
    for token in encode("{\"name\": \"") {
        wrong.consume(token).unwrap();
    }
    assert!(!allows(&wrong.allowed().unwrap(), encode("set")[0]));
    // Sampled at temperature 1 from a random model with `{` pushed first:
    // each reply is one call whose parameters validate.
    let brace = encode("{")[0];
    for seed in 0..4 {
        let mut sampler = Sampler::new(SamplingSettings {
            temperature: 1.0,
            seed: Some(seed),
            logit_bias: vec![(brace, 30.0)],
            ..Default::default()
        })
        .unwrap();
        sampler.set_constraint(constraint.fresh());
        let prompt = loaded.encode("Weather?").unwrap();
        let reply = generate(
            &loaded,
            &prompt,
            &mut sampler,
            &GenerateOptions::new(80),
            |_, _| {},
        )
        .unwrap();
        let text = loaded.tokenizer.decode(&reply.tokens, true).unwrap();
        let parsed = mlx_harmony_core::tool_parsers::llama3_json::parse(&text)
            .unwrap_or_else(|| panic!("not one call: {text:?}"));
        assert_eq!(parsed.name, "get_weather");
        let arguments: Value = serde_json::from_str(&parsed.arguments).unwrap();
        assert!(
            ["Oslo", "Bergen"].contains(&arguments["city"].as_str().unwrap()),
            "{text}"
        );
        assert!(
            (1..=7).contains(&arguments["days"].as_i64().unwrap()),
            "{text}"
        );
        assert_eq!(arguments.as_object().unwrap().len(), 2, "{text}");
    }
}

#[test]
fn held_and_free_sequences_decode_together_each_with_its_own_mask() {
    let loaded = Rc::new(load("llama"));
    let grammars = grammars(&loaded);
    let prompt = loaded.encode("Tell me something").unwrap();
    let options = GenerateOptions::new(40);
    // A free greedy sequence alone, for comparison.
    let mut greedy = Sampler::new(SamplingSettings::default()).unwrap();
    let alone = generate(&loaded, &prompt, &mut greedy, &options, |_, _| {}).unwrap();

    let mut batch = BatchGenerator::new(loaded.clone(), 8);
    let mut held = HashMap::new();
    let mut free = Vec::new();
    for seed in 0..6 {
        if seed % 2 == 0 {
            let mut sampler = hot_sampler(seed);
            sampler.set_constraint(constraint(&grammars, OutputFormat::JsonSchema(schema())));
            let id = batch.add(SequenceRequest {
                prompt: prompt.clone(),
                sampler,
                options: GenerateOptions::new(200),
                cancel: Cancel::new(),
            });
            held.insert(id, ());
        } else {
            free.push(batch.add(SequenceRequest {
                prompt: prompt.clone(),
                sampler: Sampler::new(SamplingSettings::default()).unwrap(),
                options: options.clone(),
                cancel: Cancel::new(),
            }));
        }
    }
    let mut finished = HashMap::new();
    while !batch.is_idle() {
        for event in batch.step().unwrap() {
            match event {
                BatchEvent::Finished { id, generation } => {
                    finished.insert(id, generation);
                }
                BatchEvent::Failed { message, .. } => panic!("{message}"),
                BatchEvent::Token { .. } => {}
            }
        }
    }
    for id in held.keys() {
        assert_matches_schema(&finished[id].text);
    }
    for id in &free {
        assert_eq!(
            finished[id].tokens, alone.tokens,
            "a free row changed beside held ones"
        );
    }
}

/// The o200k_harmony ids of `text` with its control tokens.
fn harmony_tokens(loaded: &LoadedModel, text: &str) -> Vec<u32> {
    loaded
        .tokenizer
        .encode(text, false)
        .unwrap()
        .get_ids()
        .to_vec()
}

fn allows(bits: &Option<Vec<u32>>, token: u32) -> bool {
    match bits {
        None => true,
        Some(bits) => bits
            .get(token as usize / 32)
            .is_some_and(|w| w >> (token % 32) & 1 == 1),
    }
}

#[test]
fn gpt_oss_reasons_freely_and_its_final_answer_and_strict_calls_are_held() {
    let loaded = load("gpt-oss");
    let grammars = grammars(&loaded);
    let id = |name: &str| loaded.tokenizer.token_to_id(name).unwrap();
    let (end, ret, call) = (id("<|end|>"), id("<|return|>"), id("<|call|>"));
    let rules = OutputRules {
        answer: Some(OutputFormat::JsonSchema(schema())),
        strict_tools: vec![StrictTool {
            name: "get_weather".into(),
            parameters: json!({"type": "object", "properties": {"city": {"enum": ["Oslo", "Bergen"]}},
                "required": ["city"], "additionalProperties": false}),
        }],
    };
    let mut constraint = grammars.constraint(&rules).unwrap().unwrap();
    let feed = |c: &mut Box<dyn TokenConstraint>, text: &str| {
        for token in harmony_tokens(&loaded, text) {
            c.consume(token).unwrap();
        }
    };
    // The analysis channel: anything, including text that is not JSON.
    feed(
        &mut constraint,
        "<|channel|>analysis<|message|>Let me think",
    );
    assert_eq!(constraint.allowed().unwrap(), None);
    // A strict tool's call: its schema, and only <|call|> once complete.
    feed(
        &mut constraint,
        "<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
    );
    let mask = constraint.allowed().unwrap();
    assert!(
        !allows(&mask, call) && !allows(&mask, end),
        "a call cannot end before its JSON"
    );
    feed(&mut constraint, "{\"city\": \"Osl");
    let mask = constraint.allowed().unwrap();
    assert!(allows(&mask, harmony_tokens(&loaded, "o")[0]));
    assert!(
        !allows(&mask, harmony_tokens(&loaded, "x")[0]),
        "not one of the enum"
    );
    feed(&mut constraint, "o\"}");
    let mask = constraint.allowed().unwrap();
    assert!(allows(&mask, call) && !allows(&mask, end) && !allows(&mask, ret));
    // The tool's result comes in the next prompt; the generation goes on
    // from a fresh start (the sampler resets the constraint).
    constraint.reset().unwrap();
    feed(&mut constraint, "<|channel|>final<|message|>");
    let mask = constraint.allowed().unwrap();
    assert!(
        allows(&mask, harmony_tokens(&loaded, "{\"")[0])
            || allows(&mask, harmony_tokens(&loaded, "{")[0])
    );
    assert!(
        !allows(&mask, harmony_tokens(&loaded, "Sure")[0]),
        "the answer must be JSON"
    );
    assert!(!allows(&mask, ret), "the answer cannot end before its JSON");
    feed(
        &mut constraint,
        "{\"name\": \"x\", \"tags\": [\"a\"], \"score\": 0.5}",
    );
    let mask = constraint.allowed().unwrap();
    assert!(allows(&mask, ret) && allows(&mask, end));
    // Another choice of the same request starts over.
    let mut other = constraint.fresh();
    feed(&mut other, "<|channel|>analysis<|message|>");
    assert_eq!(other.allowed().unwrap(), None);
}
