//! profiles.json: paths, hub ids and the unknown-name error.

use std::path::PathBuf;

use mlx_harmony_config::profiles::{ModelRef, Profiles};

#[test]
fn paths_resolve_against_the_profiles_file_and_home() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("local-model")).unwrap();
    let file = dir.path().join("profiles.json");
    std::fs::write(
        &file,
        r#"{
          "home": {"model": "~/models/gpt-oss-20b", "prompt_config": "~/cfg.json"},
          "relative": {"model": "local-model", "prompt_config": "configs/p.json"},
          "dotted": {"model": "./not-there-yet"},
          "hub": {"model": "mlx-community/Llama-3.2-3B-Instruct-4bit"},
          "absolute": {"model": "/opt/models/qwen"}
        }"#,
    )
    .unwrap();
    let profiles = Profiles::load(&file).unwrap();
    let home = PathBuf::from(std::env::var("HOME").unwrap());
    let home_profile = profiles.get("home").unwrap();
    assert_eq!(
        home_profile.model,
        ModelRef::Path(home.join("models/gpt-oss-20b"))
    );
    assert_eq!(home_profile.prompt_config, Some(home.join("cfg.json")));
    let relative = profiles.get("relative").unwrap();
    assert_eq!(
        relative.model,
        ModelRef::Path(dir.path().join("local-model"))
    );
    assert_eq!(
        relative.prompt_config,
        Some(dir.path().join("configs/p.json"))
    );
    assert_eq!(
        profiles.get("dotted").unwrap().model,
        ModelRef::Path(dir.path().join("./not-there-yet"))
    );
    assert_eq!(
        profiles.get("hub").unwrap().model,
        ModelRef::HubId("mlx-community/Llama-3.2-3B-Instruct-4bit".into())
    );
    assert_eq!(
        profiles.get("absolute").unwrap().model,
        ModelRef::Path("/opt/models/qwen".into())
    );
    assert_eq!(profiles.get("hub").unwrap().prompt_config, None);
}

#[test]
fn unknown_profile_lists_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(&file, r#"{"b": {"model": "x"}, "a": {"model": "y"}}"#).unwrap();
    let err = Profiles::load(&file)
        .unwrap()
        .get("c")
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("no profile named \"c\"; known profiles: a, b"),
        "{err}"
    );
}

#[test]
fn malformed_profiles_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    for (json, expected) in [
        (r#"{"a": {"prompt_config": "x"}}"#, "a.model: is missing"),
        (
            r#"{"a": {"model": 3}}"#,
            "a.model: must be a path or model id",
        ),
        (r#"{"a": "model"}"#, "a: must be an object"),
        (
            r#"{"a": {"model": "m", "prompt_config": 1}}"#,
            "a.prompt_config: must be a path",
        ),
        (r#"[]"#, "must be an object of profile name"),
    ] {
        std::fs::write(&file, json).unwrap();
        let err = Profiles::load(&file).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}: {err}");
    }
}
