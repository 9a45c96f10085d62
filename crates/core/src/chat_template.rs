//! Chat templates: the Jinja templates models ship (`tokenizer_config.json`'s
//! `chat_template`, or GGUF's `tokenizer.chat_template`), rendered with
//! minijinja set up the way `transformers` sets up Jinja2 for
//! `apply_chat_template`: blocks trimmed, loop controls, `raise_exception`,
//! `strftime_now`, a `tojson` that writes what Python's `json.dumps` writes,
//! and Python's string and dict methods (`.strip()`, `.items()`, ...).
//!
//! `crates/core/tests/chat_templates.rs` checks the real templates of Llama
//! 3.x, Mistral, Qwen2.5 and Qwen3 against transformers' own renderings.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};

use crate::{Error, Result};

/// One chat message as templates see it (the OpenAI / transformers shape):
/// the one message type of mlx-harmony, from the config crate.
pub use mlx_harmony_config::message::{FunctionCall, Message as ChatMessage, ToolCall};

fn raise_exception(message: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now("%d %b %Y")`, as Llama 3 templates call it.
fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// How `tojson` lays out its output; the defaults are `json.dumps`'s.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

/// The `tojson` filter as transformers defines it: `json.dumps` with
/// `ensure_ascii=False` and no HTML escaping (Jinja's own escapes `<`, `>`
/// and `&`, which would change prompts).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<String, JinjaError> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(
                i64::try_from(v.clone())
                    .map_err(|_| {
                        JinjaError::new(ErrorKind::InvalidOperation, "tojson: indent is a number")
                    })?
                    .max(0) as usize,
            ),
        }),
    };
    let (item_separator, key_separator) = match separators.filter(|s| !s.is_none()) {
        Some(pair) => {
            let items: Vec<Value> = pair.try_iter()?.collect();
            match (
                items.first().and_then(Value::as_str),
                items.get(1).and_then(Value::as_str),
            ) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => {
                    return Err(JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators is a pair of strings",
                    ));
                }
            }
        }
        // With an indent, items end at the newline: no space after the comma.
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let style = JsonStyle {
        indent,
        item_separator,
        key_separator,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&value, &style, 0, &mut out)?;
    Ok(out)
}

fn write_json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it (`1.0`, `0.1`, `1e+21`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Exponent form: Rust writes 1e21, Python 1e+21.
        let s = format!("{f:e}");
        let (mantissa, exponent) = s.split_once('e').expect("{:e} has an exponent");
        let exponent: i32 = exponent.parse().expect("an integer exponent");
        return format!(
            "{mantissa}e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

fn write_json(
    value: &Value,
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), JinjaError> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => match i64::try_from(value.clone()) {
            Ok(i) if value.as_i64().is_some() => out.push_str(&i.to_string()),
            _ => {
                let f = f64::try_from(value.clone()).map_err(|_| {
                    JinjaError::new(ErrorKind::InvalidOperation, "tojson: not a number")
                })?;
                out.push_str(&python_float(f));
            }
        },
        ValueKind::String => {
            write_json_string(value.as_str().unwrap_or(""), style.ensure_ascii, out)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                newline(out, depth + 1);
                write_json(item, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                newline(out, depth + 1);
                write_json_string(&key.to_string(), style.ensure_ascii, out);
                out.push_str(&style.key_separator);
                write_json(&value.get_item(key)?, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot write a {} as JSON", value.kind()),
            ));
        }
    }
    Ok(())
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    call_style: crate::tool_parsers::CallStyle,
}

impl ChatTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        // As transformers configures Jinja2 for chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Invalid(format!("the chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            call_style: crate::tool_parsers::CallStyle::of_template(source),
        })
    }

    /// How the template's model writes a tool call.
    pub fn call_style(&self) -> crate::tool_parsers::CallStyle {
        self.call_style
    }

    /// Renders `messages` with `tools` (OpenAI-style function definitions,
    /// none when empty); with `add_generation_prompt`, ends where the
    /// assistant's answer starts.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let messages = serde_json::to_value(messages).expect("messages serialize");
        let mut variables = serde_json::Map::new();
        variables.insert("bos_token".into(), bos_token.into());
        variables.insert("eos_token".into(), eos_token.into());
        self.render_json(
            messages.as_array().expect("a list"),
            (!tools.is_empty()).then_some(tools),
            add_generation_prompt,
            &variables,
        )
    }

    /// Renders messages given as JSON (as `apply_chat_template` takes them),
    /// with `tools` (JSON Schema function definitions) and any further
    /// template variables (`bos_token`, `enable_thinking`, `date_string`...).
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let template = self.env.get_template("chat").expect("added in new()");
        let mut context: Vec<(String, Value)> = variables
            .iter()
            .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
            .collect();
        // transformers also copies `reasoning_content` to `thinking`, the name
        // some templates read.
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| match (m.get("reasoning_content"), m.as_object()) {
                (Some(r), Some(map)) if !r.is_null() && !map.contains_key("thinking") => {
                    let mut map = map.clone();
                    map.insert("thinking".into(), r.clone());
                    serde_json::Value::Object(map)
                }
                _ => m.clone(),
            })
            .collect();
        context.push(("messages".into(), Value::from_serialize(&messages)));
        context.push((
            "tools".into(),
            tools.map(Value::from_serialize).unwrap_or(Value::from(())),
        ));
        context.push(("documents".into(), Value::from(())));
        context.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        let context: Value = context.into_iter().collect();
        template
            .render(context)
            .map_err(|e| Error::Invalid(format!("the chat template failed: {}", describe(&e))))
    }
}

/// The message a template raised, or minijinja's description of what went wrong.
fn describe(error: &JinjaError) -> String {
    match (error.kind(), error.detail()) {
        (ErrorKind::InvalidOperation, Some(detail)) => detail.to_string(),
        _ => format!("{error:#}"),
    }
}
