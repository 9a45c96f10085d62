//! Placeholders in prompt text: the clock built-ins and the user's own.
//!
//! Built-ins (case-insensitive): `<|DATE|>` (YYYY-MM-DD, local), `<|DATETIME|>`
//! (ISO 8601 local time to the second), `<|TIME|>` and `<|TIMEZ|>` (HH:MM:SS
//! local), `<|TIMEA|>` (12-hour, `hh:MM:SS AM`), `<|TIMEU|>` (HH:MM:SS UTC).
//! User-defined ones come from the prompt config's `placeholders` object and
//! are written `{key}` (case-sensitive) or `<|KEY|>` (case-insensitive).
//! Anything else is left exactly as written and reported, so that a typo is
//! visible with `--debug` and special tokens such as `<|start|>` survive.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone, Utc};

use crate::ConfigError;

/// Where "now" comes from: the system clock, or a fixed instant for
/// reproducible prompts and tests (`deterministic_time_iso`).
#[derive(Clone, Debug, PartialEq)]
pub enum Clock {
    System,
    /// A fixed instant, with the wall-clock time to show as "local".
    Fixed(DateTime<FixedOffset>),
}

/// The local and UTC wall-clock times of one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moment {
    pub local: NaiveDateTime,
    pub utc: NaiveDateTime,
}

impl Clock {
    /// Parses an ISO 8601 date-time. With an offset (`…+02:00`, `…Z`) the
    /// offset's wall time is "local"; without one it is read in the machine's
    /// time zone, as the Python program does.
    pub fn fixed_local(iso: &str) -> Result<Clock, ConfigError> {
        if let Ok(with_offset) = DateTime::parse_from_rfc3339(iso) {
            return Ok(Clock::Fixed(with_offset));
        }
        let naive = NaiveDateTime::parse_from_str(iso, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(iso, "%Y-%m-%d %H:%M:%S%.f"))
            .or_else(|_| NaiveDateTime::parse_from_str(iso, "%Y-%m-%dT%H:%M"))
            .map_err(|_| ConfigError::Content {
                file: "deterministic_time_iso".into(),
                line: None,
                message: format!(
                    "{iso:?} is not an ISO 8601 date-time (e.g. 2026-03-01T09:30:00 or 2026-03-01T09:30:00+01:00)"
                ),
            })?;
        let local = Local
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| ConfigError::Content {
                file: "deterministic_time_iso".into(),
                line: None,
                message: format!("{iso:?} does not exist in the local time zone"),
            })?;
        Ok(Clock::Fixed(local.fixed_offset()))
    }

    pub fn now(&self) -> Moment {
        match self {
            Clock::System => {
                let now = Local::now();
                Moment {
                    local: now.naive_local(),
                    utc: now.with_timezone(&Utc).naive_utc(),
                }
            }
            Clock::Fixed(instant) => Moment {
                local: instant.naive_local(),
                utc: instant.with_timezone(&Utc).naive_utc(),
            },
        }
    }
}

/// The names of the built-in placeholders.
pub const BUILT_INS: [&str; 6] = ["DATE", "DATETIME", "TIME", "TIMEZ", "TIMEA", "TIMEU"];

fn built_in(name: &str, moment: &Moment) -> Option<String> {
    let format = match name.to_ascii_uppercase().as_str() {
        "DATE" => "%Y-%m-%d",
        "DATETIME" => "%Y-%m-%dT%H:%M:%S",
        "TIME" | "TIMEZ" => "%H:%M:%S",
        "TIMEA" => "%I:%M:%S %p",
        "TIMEU" => return Some(moment.utc.format("%H:%M:%S").to_string()),
        _ => return None,
    };
    Some(moment.local.format(format).to_string())
}

/// Expands placeholders in text; one instance serves a whole config so that
/// every field sees the same instant.
#[derive(Clone, Debug)]
pub struct Expander {
    moment: Moment,
    /// User values, with the built-ins inside them already expanded.
    user: BTreeMap<String, String>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Expander {
    pub fn new(clock: &Clock, user: &BTreeMap<String, String>) -> Self {
        let moment = clock.now();
        let bare = Expander {
            moment,
            user: BTreeMap::new(),
        };
        let user = user
            .iter()
            .map(|(key, value)| (key.clone(), bare.expand(value, &mut Vec::new())))
            .collect();
        Expander { moment, user }
    }

    fn user_case_insensitive(&self, name: &str) -> Option<&String> {
        self.user
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Returns `text` with every known placeholder replaced; unknown ones are
    /// kept as written and pushed onto `unknown`.
    pub fn expand(&self, text: &str, unknown: &mut Vec<String>) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(['<', '{']) {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let (open, close) = if tail.starts_with("<|") {
                ("<|", "|>")
            } else if tail.starts_with('{') {
                ("{", "}")
            } else {
                ("", "")
            };
            if !open.is_empty()
                && let Some(end) = tail[open.len()..].find(close)
            {
                let name = &tail[open.len()..open.len() + end];
                let whole = &tail[..open.len() + end + close.len()];
                if is_name(name) {
                    let replacement = if open == "<|" {
                        built_in(name, &self.moment)
                            .or_else(|| self.user_case_insensitive(name).cloned())
                    } else {
                        self.user.get(name).cloned()
                    };
                    match replacement {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str(whole);
                            unknown.push(whole.to_string());
                        }
                    }
                    rest = &tail[whole.len()..];
                    continue;
                }
            }
            // Not a placeholder: keep the character and go on after it.
            let ch = tail.chars().next().unwrap();
            out.push(ch);
            rest = &tail[ch.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}
