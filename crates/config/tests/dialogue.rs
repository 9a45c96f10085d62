//! The `role: text` dialogue format.

use std::path::Path;

use mlx_harmony_config::dialogue::{parse, to_json};

fn turns(text: &str) -> Vec<(String, String)> {
    let dialogues = parse(text, Path::new("d.txt")).unwrap();
    assert_eq!(dialogues.len(), 1);
    dialogues[0]
        .iter()
        .map(|m| (m.role.clone(), m.content.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

#[test]
fn multi_line_turns_keep_inner_blank_lines() {
    let text = "\n\nsystem: Be brief.\nuser: First line\n\nsecond paragraph\n    indented: not a role\n\n\nAssistant: Ok\n";
    assert_eq!(
        turns(text),
        pairs(&[
            ("system", "Be brief."),
            (
                "user",
                "First line\n\nsecond paragraph\n    indented: not a role"
            ),
            ("assistant", "Ok"),
        ])
    );
}

#[test]
fn developer_role_and_text_with_colons() {
    assert_eq!(
        turns("developer: Rules: none.\nuser: time is 10:30\n"),
        pairs(&[("developer", "Rules: none."), ("user", "time is 10:30")])
    );
    // A turn may start empty and continue on the next line.
    assert_eq!(turns("user:\nHello\n"), pairs(&[("user", "\nHello")]));
}

#[test]
fn separators_make_several_dialogues() {
    let dialogues = parse(
        "user: a\nassistant: b\n---\nuser: c\n---\n",
        Path::new("d.txt"),
    )
    .unwrap();
    assert_eq!(dialogues.len(), 2);
    assert_eq!(dialogues[1][0].content, "c");
    let json = to_json(&dialogues, true);
    assert_eq!(json["example_dialogues"].as_array().unwrap().len(), 2);
    assert_eq!(to_json(&dialogues, false).as_array().unwrap().len(), 2);
    assert!(to_json(&dialogues[..1], false)[0]["role"] == "user");
}

#[test]
fn errors_name_the_line() {
    for (text, expected) in [
        ("user: hi\nbot: hello\n", "d.txt:2: unknown role \"bot\""),
        (
            "Hello there\nuser: hi\n",
            "d.txt:1: text before the first turn",
        ),
        ("\n\n", "d.txt: no turns found"),
        ("Note: this\n", "d.txt:1: unknown role \"Note\""),
    ] {
        let err = parse(text, Path::new("d.txt")).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{text:?}: {err}");
    }
}
