//! The built-in tools are declared to GPT-OSS as it was trained on them:
//! openai-harmony's `ToolNamespaceConfig.browser()` byte for byte, and its
//! `.python()` text with only this session's facts put in (timeout, folder,
//! network). The reference JSON is written by scripts/make-harmony-golden.

use std::path::Path;
use std::time::Duration;

use mlx_harmony_tools::{Isolation, PythonConfig, PythonSession, browser};
use serde_json::Value;

fn reference() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../harmony/tests/golden/builtin_tools.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn the_browser_namespace_is_the_reference_byte_for_byte() {
    let ours = serde_json::to_value(browser::namespace()).unwrap();
    assert_eq!(ours, reference()["browser"]);
}

#[test]
fn the_python_description_is_the_reference_with_this_sessions_facts() {
    let python = PythonSession::new(PythonConfig {
        timeout: Duration::from_secs(120),
        ..PythonConfig::default()
    })
    .unwrap();
    let network = match python.isolation() {
        Isolation::LimitsOnly(_) => "enabled.",
        _ => "disabled.",
    };
    let expected = reference()["python"]["description"]
        .as_str()
        .unwrap()
        .replace("/mnt/data", &python.workdir().display().to_string())
        .replace("UNKNOWN. Depends on the cluster.", network);
    assert_eq!(python.description(), expected);
    assert!(
        reference()["python"]["tools"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
