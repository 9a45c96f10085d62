//! Saved conversations: round trip, atomic writes, refusing to clobber, migration.

use mlx_harmony_config::conversation::{
    Conversation, FORMAT_VERSION, Message, normalize_timestamp, timestamp_now,
};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn is_canonical_timestamp(t: &str) -> bool {
    // 2026-03-01T09:30:05.120000Z
    t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.' && t.as_bytes()[10] == b'T'
}

#[test]
fn save_then_load_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chats/session.json");
    let mut conversation = Conversation::new(Some("models/x".into()), None);
    conversation.metadata.tools = vec!["python".into()];
    conversation
        .metadata
        .hyperparameters
        .insert("temperature".into(), 0.7.into());
    conversation.messages.push(Message::now("user", "Hello"));
    let mut reply = Message::now("assistant", "Hi!");
    reply.channel = Some("final".into());
    reply.hyperparameters = Some(
        serde_json::json!({"temperature": 0.7})
            .as_object()
            .unwrap()
            .clone(),
    );
    conversation.messages.push(reply);
    let mut tool = Message::now("tool", "4");
    tool.name = Some("python".into());
    tool.recipient = Some("assistant".into());
    conversation.messages.push(tool);
    conversation.save(&path).unwrap();

    let loaded = Conversation::load(&path).unwrap();
    assert_eq!(loaded.migrated_from, None);
    assert_eq!(loaded.conversation, conversation);
    assert_eq!(loaded.conversation.metadata.format_version, FORMAT_VERSION);
    assert!(is_canonical_timestamp(
        loaded.conversation.messages[0].timestamp.as_ref().unwrap()
    ));
    assert_eq!(
        loaded.conversation.hyperparameters().unwrap().temperature,
        Some(0.7)
    );
    assert_eq!(
        loaded.conversation.messages[1]
            .hyperparameters()
            .unwrap()
            .unwrap()
            .temperature,
        Some(0.7)
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("session.json")]);
}

#[test]
fn saving_again_updates_updated_at_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    let mut conversation = Conversation::new(None, None);
    conversation.metadata.created_at = Some("2020-01-01T00:00:00.000000Z".into());
    conversation.save(&path).unwrap();
    let first = Conversation::load(&path).unwrap().conversation;
    std::thread::sleep(std::time::Duration::from_millis(5));
    conversation.messages.push(Message::now("user", "again"));
    conversation.save(&path).unwrap();
    let second = Conversation::load(&path).unwrap().conversation;
    assert_eq!(
        second.metadata.created_at.as_deref(),
        Some("2020-01-01T00:00:00.000000Z")
    );
    assert!(second.metadata.updated_at > first.metadata.updated_at);
    assert_eq!(second.messages.len(), 1);
}

#[test]
fn a_file_that_is_not_a_conversation_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.json");
    std::fs::write(&path, "my precious notes {").unwrap();
    let err = Conversation::load(&path).unwrap_err().to_string();
    assert!(err.contains("notes.json: not valid JSON"), "{err}");
    let err = Conversation::new(None, None)
        .save(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not overwriting it"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "my precious notes {"
    );
}

#[test]
fn python_version_0_files_migrate() {
    let loaded = Conversation::load(fixture("conversation-v0-python.json")).unwrap();
    assert_eq!(loaded.migrated_from.as_deref(), Some("0"));
    let c = &loaded.conversation;
    assert_eq!(c.metadata.format_version, FORMAT_VERSION);
    assert_eq!(c.metadata.model_path.as_deref(), Some("models/gpt-oss-20b"));
    assert!(c.metadata.tool_settings.is_empty());
    assert_eq!(c.hyperparameters().unwrap().max_tokens, Some(1024));
    // A naive timestamp becomes canonical UTC; canonical ones are unchanged.
    assert_eq!(
        c.messages[1].timestamp.as_deref(),
        Some("2025-11-02T18:04:25.250000Z")
    );
    assert_eq!(
        c.messages[0].timestamp.as_deref(),
        Some("2025-11-02T18:04:20.000001Z")
    );
    assert_eq!(c.messages[1].channel.as_deref(), Some("final"));

    // Saving writes the current version.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("migrated.json");
    let mut c = c.clone();
    c.save(&out).unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(raw["metadata"]["format_version"], FORMAT_VERSION);
    assert_eq!(Conversation::load(&out).unwrap().migrated_from, None);
}

#[test]
fn bare_message_lists_migrate() {
    let loaded = Conversation::load(fixture("conversation-list.json")).unwrap();
    assert_eq!(loaded.migrated_from.as_deref(), Some("list"));
    let c = loaded.conversation;
    assert_eq!(c.messages.len(), 2);
    assert_eq!(
        c.messages[0].timestamp.as_deref(),
        Some("2025-06-01T10:00:00.000000Z")
    );
    assert_eq!(c.messages[1].timestamp, None);
    assert_eq!(c.metadata.model_path, None);
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let json = r#"{"metadata": {"format_version": 1, "custom": {"a": 1}},
                   "messages": [{"role": "user", "content": "x", "mood": "curious"}], "extra_top": true}"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(&path, json).unwrap();
    let mut c = Conversation::load(&path).unwrap().conversation;
    c.save(&path).unwrap();
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(raw["metadata"]["custom"]["a"], 1);
    assert_eq!(raw["messages"][0]["mood"], "curious");
    assert_eq!(raw["extra_top"], true);
}

#[test]
fn invalid_content_is_rejected_with_the_key() {
    let path = std::path::Path::new("c.json");
    for (json, expected) in [
        (
            r#"{"metadata": {}, "messages": [{"role": "robot", "content": "x"}]}"#,
            "messages[0].role: must be one of",
        ),
        (
            r#"{"metadata": {"hyperparameters": {"temperature": 9}}}"#,
            "metadata.hyperparameters",
        ),
        (
            r#"{"metadata": {}, "messages": [{"role": "assistant", "content": "x", "hyperparameters": {"top_p": 2}}]}"#,
            "messages[0].hyperparameters",
        ),
        (
            r#"{"metadata": {"format_version": 99}}"#,
            "newer than this program understands",
        ),
        (
            r#""text""#,
            "expected an object with metadata and messages, got a string",
        ),
        (r#"{"metadata": 5}"#, "metadata"),
    ] {
        let err = Conversation::from_json_str(json, path)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.json"), "{err}");
        assert!(err.contains(expected), "{json}: {err}");
    }
}

#[test]
fn timestamps() {
    assert!(is_canonical_timestamp(&timestamp_now()));
    assert_eq!(
        normalize_timestamp("2026-01-02T03:04:05+01:00").as_deref(),
        Some("2026-01-02T02:04:05.000000Z")
    );
    assert_eq!(
        normalize_timestamp("2026-01-02 03:04:05.5").as_deref(),
        Some("2026-01-02T03:04:05.500000Z")
    );
    assert_eq!(normalize_timestamp("last tuesday"), None);
}
