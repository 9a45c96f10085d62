//! The dialogue text format of `mlx-harmony-convert-dialogue`:
//!
//! ```text
//! assistant: Hello, how may I help you today?
//! user: I'd like to know something about fruit.
//!       Especially apples.
//! assistant: What would you like to know?
//! ```
//!
//! A line `role: text` starts a turn; the roles are user, assistant, system
//! and developer (any case). Every following line until the next role line
//! continues the turn, blank lines included (blank lines at the end of a turn
//! are dropped). A line that looks like a role line (`word: ...` at the start
//! of the line) with another word is an error naming the line: indent it to
//! keep it as text. A line `---` separates example dialogues.

use std::path::Path;

use serde_json::{Value, json};

use crate::ConfigError;
use crate::prompt_config::{DIALOGUE_ROLES, DialogueMessage};

/// Splits `line` into a role word and the rest, if it has the shape of a role line.
fn role_line(line: &str) -> Option<(&str, &str)> {
    let (word, rest) = line.split_once(':')?;
    let is_word = !word.is_empty()
        && word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    is_word.then(|| (word, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// Parses dialogue text into dialogues (one unless `---` lines separate several).
pub fn parse(text: &str, file: &Path) -> Result<Vec<Vec<DialogueMessage>>, ConfigError> {
    let mut dialogues: Vec<Vec<DialogueMessage>> = vec![Vec::new()];
    let error = |line: usize, message: String| ConfigError::Content {
        file: file.to_owned(),
        line: Some(line),
        message,
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim() == "---" {
            if !dialogues.last().unwrap().is_empty() {
                dialogues.push(Vec::new());
            }
            continue;
        }
        if let Some((word, rest)) = role_line(line) {
            let role = word.to_ascii_lowercase();
            if !DIALOGUE_ROLES.contains(&role.as_str()) {
                return Err(error(
                    number,
                    format!(
                        "unknown role {word:?} (expected {}); indent the line to keep it as text of the turn before",
                        DIALOGUE_ROLES.join(", ")
                    ),
                ));
            }
            dialogues.last_mut().unwrap().push(DialogueMessage {
                role,
                content: rest.to_string(),
            });
            continue;
        }
        match dialogues.last_mut().unwrap().last_mut() {
            Some(turn) => {
                turn.content.push('\n');
                turn.content.push_str(line);
            }
            None if line.trim().is_empty() => {}
            None => {
                return Err(error(
                    number,
                    format!(
                        "text before the first turn; start the line with a role, e.g. \"user: {}\"",
                        line.trim()
                    ),
                ));
            }
        }
    }
    if dialogues.last().is_some_and(Vec::is_empty) && dialogues.len() > 1 {
        dialogues.pop();
    }
    for dialogue in &mut dialogues {
        for turn in dialogue.iter_mut() {
            let trimmed = turn.content.trim_end_matches(['\n', ' ', '\t', '\r']).len();
            turn.content.truncate(trimmed);
        }
    }
    if dialogues.iter().all(Vec::is_empty) {
        return Err(ConfigError::Content {
            file: file.to_owned(),
            line: None,
            message: "no turns found (lines look like \"user: Hello\")".into(),
        });
    }
    Ok(dialogues)
}

/// The JSON written for parsed dialogues: a list of messages (a list of such
/// lists when there are several dialogues), or a prompt-config fragment
/// `{"example_dialogues": [[...], ...]}`.
pub fn to_json(dialogues: &[Vec<DialogueMessage>], as_example_dialogues: bool) -> Value {
    if as_example_dialogues {
        json!({ "example_dialogues": dialogues })
    } else if dialogues.len() == 1 {
        json!(dialogues[0])
    } else {
        json!(dialogues)
    }
}
