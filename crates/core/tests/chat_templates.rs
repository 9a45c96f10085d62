//! The real chat templates of Llama 3.x, Mistral, Qwen2.5 and Qwen3 render
//! exactly what transformers' `apply_chat_template` renders, including the
//! errors the templates raise. The templates and transformers' renderings are
//! made by scripts/make-template-fixtures (fixtures/templates/).

use std::path::PathBuf;

use mlx_harmony_core::chat_template::ChatTemplate;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/templates")
}

#[test]
fn real_templates_render_as_transformers_does() {
    let dir = fixtures();
    let cases_path = dir.join("cases.json");
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&cases_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/make-template-fixtures",
                cases_path.display()
            )
        }))
        .unwrap();
    assert!(cases.len() >= 40, "expected the full case list");
    let mut families = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["template"].as_str().unwrap();
        let label = format!("{name} / {}", case["case"].as_str().unwrap());
        families.insert(case["family"].as_str().unwrap().to_string());
        let source = std::fs::read_to_string(dir.join(name)).unwrap();
        let template = ChatTemplate::new(&source).unwrap();
        let tools = case["tools"].as_array().map(Vec::as_slice);
        let mut variables = case["variables"].as_object().unwrap().clone();
        // Templates that call strftime_now print today's date: give the
        // date the golden was made on, so that the comparison holds any day.
        if let Some(date) = case["rendered_on"].as_str() {
            variables.entry("date_string").or_insert(date.into());
        }
        let rendered = template.render_json(
            case["messages"].as_array().unwrap(),
            tools,
            case["add_generation_prompt"].as_bool().unwrap(),
            &variables,
        );
        match (rendered, case.get("expected"), case.get("error")) {
            (Ok(text), Some(expected), _) if text == expected.as_str().unwrap() => {}
            (Ok(text), Some(expected), _) => failures.push(format!(
                "{label}: differs\n--- ours ---\n{text}\n--- transformers ---\n{}",
                expected.as_str().unwrap()
            )),
            (Err(e), _, Some(error)) if e.to_string().contains(error.as_str().unwrap()) => {}
            (Err(e), _, _) => failures.push(format!(
                "{label}: {e} (expected {:?})",
                case.get("error").or(case.get("expected"))
            )),
            (Ok(text), None, _) => failures.push(format!(
                "{label}: rendered {text:?}, transformers raised {}",
                case["error"]
            )),
        }
    }
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        ["llama3", "mistral", "qwen", "qwen3"]
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn each_template_says_how_its_model_writes_a_tool_call() {
    use mlx_harmony_core::tool_parsers::CallStyle;
    let style = |name: &str| {
        let source = std::fs::read_to_string(fixtures().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run scripts/make-template-fixtures"));
        ChatTemplate::new(&source).unwrap().call_style()
    };
    for qwen in ["Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen-Qwen3-0.6B.jinja"] {
        assert_eq!(style(qwen), CallStyle::Tagged, "{qwen}");
    }
    for llama in [
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
    ] {
        assert_eq!(style(llama), CallStyle::WholeReply, "{llama}");
    }
}
