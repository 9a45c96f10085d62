//! The request handlers under random and mutated bodies (proptest), in
//! process against the real router, with a stand-in model thread that
//! answers every job at once: no input panics the server or gets a 5xx;
//! bad input gets a 4xx with an OpenAI error body.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mlx_harmony_core::generate::Cancel;
use mlx_harmony_server::api::Usage;
use mlx_harmony_server::metrics::Stats;
use mlx_harmony_server::worker::{Event, Job};
use mlx_harmony_server::{AppState, router};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// The router over a stand-in model thread: each job is answered with a
/// start, a piece of text and its end.
fn app() -> axum::Router {
    let (jobs, mut queue) = tokio::sync::mpsc::channel::<Job>(64);
    let stats = Arc::new(Stats::default());
    let worker_stats = stats.clone();
    std::thread::spawn(move || {
        while let Some(job) = queue.blocking_recv() {
            worker_stats.waiting.fetch_sub(1, Ordering::SeqCst);
            let _ = job.events.send(Event::Started);
            let _ = job.events.send(Event::Content("ok".into()));
            let _ = job.events.send(Event::Done {
                finish_reason: "stop",
                usage: Usage::new(3, 1, 0),
                content: "ok".into(),
                calls: Vec::new(),
                steps: Vec::new(),
                stop_sequence: None,
            });
        }
    });
    let state = Arc::new(AppState {
        model_id: "tiny".into(),
        api_key: None,
        jobs,
        queue_size: 64,
        stats,
        cancel: Cancel::new(),
        created: 0,
        harmony: true,
        setup: Default::default(),
        cli_settings: Default::default(),
        prompt_config_settings: None,
        generation_config: None,
        responses: Default::default(),
        grammars: Err("not loaded in this test".into()),
    });
    router(state, 1 << 20)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Posts `body` and reads the whole answer; returns the status and body.
fn post(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    rt.block_on(async {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, bytes.to_vec())
    })
}

fn check(status: StatusCode, body: &[u8], sent: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "{status} for {sent}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() {
        let answer: Value = serde_json::from_slice(body).map_err(|e| {
            TestCaseError::fail(format!("{status} without a JSON body ({e}) for {sent}"))
        })?;
        prop_assert!(
            answer["error"]["message"].is_string(),
            "{answer} for {sent}"
        );
    }
    Ok(())
}

/// Any JSON value, nested a little, with the awkward numbers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        ".{0,24}".prop_map(Value::from),
        Just(json!("<|start|>assistant<|channel|>final<|message|>")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
    "logprobs",
    "repetition_penalty",
    "parallel_tool_calls",
    "user",
    "frequency_penalty",
    "presence_penalty",
    "unknown_field",
];

/// A valid chat request, then some of its fields replaced by anything.
fn mutated_chat() -> impl Strategy<Value = Value> {
    let base = json!({
        "model": "tiny",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 8,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    });
    prop::collection::vec((prop::sample::select(CHAT_FIELDS), any_json()), 0..5).prop_map(
        move |changes| {
            let mut body = base.clone();
            for (field, value) in changes {
                body[field] = value;
            }
            body
        },
    )
}

/// Random messages: roles, contents, calls.
fn random_messages() -> impl Strategy<Value = Value> {
    let role = prop::sample::select(vec![
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "robot",
        "",
    ]);
    let message = (role, any_json(), any_json()).prop_map(|(role, content, extra)| {
        let mut m = Map::new();
        m.insert("role".into(), json!(role));
        m.insert("content".into(), content);
        if let Value::Object(extra) = extra {
            m.extend(extra);
        }
        Value::Object(m)
    });
    prop::collection::vec(message, 0..4)
        .prop_map(|messages| json!({"model": "tiny", "messages": messages, "max_tokens": 4}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_chat_requests_get_an_answer_or_a_4xx(body in mutated_chat()) {
        let (rt, app) = (runtime(), app());
        let text = body.to_string();
        let (status, answer) = post(&rt, &app, "/v1/chat/completions", text.clone().into_bytes());
        check(status, &answer, &text)?;
    }

    #[test]
    fn random_messages_get_an_answer_or_a_4xx(body in random_messages()) {
        let (rt, app) = (runtime(), app());
        let text = body.to_string();
        let (status, answer) = post(&rt, &app, "/v1/chat/completions", text.clone().into_bytes());
        check(status, &answer, &text)?;
    }

    #[test]
    fn random_bytes_and_cut_bodies_get_a_4xx(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        cut in 0usize..200,
        path in prop::sample::select(vec!["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens"]),
    ) {
        let (rt, app) = (runtime(), app());
        let (status, answer) = post(&rt, &app, path, bytes.clone());
        check(status, &answer, &format!("{bytes:?}"))?;
        // A valid body cut short.
        let valid = json!({"model": "tiny", "prompt": "Once", "messages": [{"role": "user", "content": "Hi"}]}).to_string();
        let cut = valid.as_bytes()[..cut.min(valid.len() - 1)].to_vec();
        let (status, answer) = post(&rt, &app, path, cut.clone());
        prop_assert!(status.is_client_error(), "{status} for {}", String::from_utf8_lossy(&cut));
        check(status, &answer, &String::from_utf8_lossy(&cut))?;
    }

    #[test]
    fn mutated_responses_requests_get_an_answer_or_a_4xx(
        changes in prop::collection::vec((prop::sample::select(vec!["model", "input", "instructions", "tools", "tool_choice", "reasoning", "max_output_tokens", "text", "store", "previous_response_id", "stream", "include", "temperature", "unknown_field"]), any_json()), 0..4),
        items in prop::collection::vec((prop::sample::select(vec!["message", "function_call", "function_call_output", "reasoning", "input_image", ""]), any_json()), 0..4),
    ) {
        let (rt, app) = (runtime(), app());
        let input: Vec<Value> = items.into_iter().map(|(kind, extra)| {
            let mut item = json!({"type": kind, "role": "user", "content": "Hi", "call_id": "c", "name": "f", "arguments": "{}", "output": "x"});
            if let Value::Object(extra) = extra {
                for (k, v) in extra { item[k] = v; }
            }
            item
        }).collect();
        let mut body = json!({"model": "tiny", "input": input, "max_output_tokens": 4,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]});
        for (field, value) in changes {
            body[field] = value;
        }
        let text = body.to_string();
        let (status, answer) = post(&rt, &app, "/v1/responses", text.clone().into_bytes());
        check(status, &answer, &text)?;
    }

    #[test]
    fn mutated_messages_requests_get_an_answer_or_a_4xx(
        changes in prop::collection::vec((prop::sample::select(vec!["model", "messages", "system", "max_tokens", "tools", "tool_choice", "thinking", "stop_sequences", "stream", "output_config", "temperature"]), any_json()), 0..4),
        blocks in prop::collection::vec((prop::sample::select(vec!["text", "tool_use", "tool_result", "thinking", "image", ""]), any_json()), 0..4),
        path in prop::sample::select(vec!["/v1/messages", "/v1/messages/count_tokens"]),
    ) {
        let (rt, app) = (runtime(), app());
        let content: Vec<Value> = blocks.into_iter().map(|(kind, extra)| {
            let mut block = json!({"type": kind, "text": "Hi", "id": "t", "name": "f", "input": {}, "tool_use_id": "t", "thinking": "hm"});
            if let Value::Object(extra) = extra {
                for (k, v) in extra { block[k] = v; }
            }
            block
        }).collect();
        let mut body = json!({"model": "tiny", "max_tokens": 4, "messages": [
            {"role": "assistant", "content": content.clone()}, {"role": "user", "content": content}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]});
        for (field, value) in changes {
            body[field] = value;
        }
        let text = body.to_string();
        let (status, answer) = post(&rt, &app, path, text.clone().into_bytes());
        check(status, &answer, &text)?;
    }

    #[test]
    fn mutated_completion_requests_get_an_answer_or_a_4xx(
        changes in prop::collection::vec((prop::sample::select(vec!["model", "prompt", "max_tokens", "n", "stream", "stop", "echo", "logprobs", "seed", "temperature", "suffix"]), any_json()), 0..4),
    ) {
        let (rt, app) = (runtime(), app());
        let mut body = json!({"model": "tiny", "prompt": "Once", "max_tokens": 4});
        for (field, value) in changes {
            body[field] = value;
        }
        let text = body.to_string();
        let (status, answer) = post(&rt, &app, "/v1/completions", text.clone().into_bytes());
        check(status, &answer, &text)?;
    }
}

/// The stand-in answers valid requests, so the properties above see 200s
/// (and streams) as well as refusals.
#[test]
fn valid_requests_are_answered_by_the_stand_in() {
    let (rt, app) = (runtime(), app());
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "n": 2});
    let (status, answer) = post(
        &rt,
        &app,
        "/v1/chat/completions",
        body.to_string().into_bytes(),
    );
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["choices"][1]["message"]["content"], "ok", "{answer}");
    let body = json!({"model": "tiny", "prompt": "Once", "stream": true});
    let (status, answer) = post(&rt, &app, "/v1/completions", body.to_string().into_bytes());
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&answer).ends_with("data: [DONE]\n\n"));
}
