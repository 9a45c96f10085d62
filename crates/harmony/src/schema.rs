//! JSON Schema → the TypeScript-like type text Harmony uses to describe
//! function parameters, e.g. `{ location: string, unit?: "c" | "f", }`.
//!
//! The layout (comments for titles, descriptions, examples and defaults, `?`
//! for optional properties, `|` alternatives for `oneOf`, indentation) follows
//! what GPT-OSS was trained on, as openai-harmony renders it, so that the
//! token sequences are identical.

use serde_json::Value;

fn has_enum(schema: &Value) -> bool {
    schema
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|values| !values.is_empty())
}

fn text<'a>(schema: &'a Value, key: &str) -> Option<&'a str> {
    schema.get(key).and_then(Value::as_str)
}

fn is_nullable(schema: &Value) -> bool {
    schema
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// `type | null` for schemas marked `nullable`, unless null is already there.
fn with_null(schema: &Value, rendered: String) -> String {
    if is_nullable(schema) && !rendered.contains("null") {
        format!("{rendered} | null")
    } else {
        rendered
    }
}

/// How a default value is written in a comment. Strings are quoted, except
/// where the schema is an enum and the comment stands on its own line
/// (`quote_enum_strings == false`), matching the reference output.
fn default_text(schema: &Value, default: &Value, quote_enum_strings: bool) -> String {
    match default.as_str() {
        Some(s) if !has_enum(schema) => format!("default: \"{s}\""),
        Some(s) if !quote_enum_strings => format!("default: {s}"),
        _ => format!("default: {default}"),
    }
}

/// Renders `schema` as a type, indenting nested lines with `indent`.
pub fn to_typescript(schema: &Value, indent: &str) -> String {
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        let mut out = String::new();
        for variant in variants {
            out.push_str(&format!("\n{indent} | "));
            out.push_str(&with_null(
                variant,
                to_typescript(variant, &format!("{indent}   ")),
            ));
            let mut notes = Vec::new();
            if let Some(description) = text(variant, "description") {
                notes.push(description.to_string());
            }
            if let Some(default) = variant.get("default") {
                notes.push(default_text(variant, default, true));
            }
            if !notes.is_empty() {
                out.push_str(&format!(" // {}", notes.join(" ")));
            }
        }
        return out;
    }
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let names: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .map(|t| if t == "integer" { "number" } else { t })
            .collect();
        if !names.is_empty() {
            return names.join(" | ");
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => object_to_typescript(schema, indent),
        Some("string") => {
            let values: Vec<String> = schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("\"{s}\""))
                        .collect()
                })
                .unwrap_or_default();
            if values.is_empty() {
                "string".into()
            } else {
                values.join(" | ")
            }
        }
        Some("number") | Some("integer") => "number".into(),
        Some("boolean") => "boolean".into(),
        Some("array") => match schema.get("items") {
            Some(items) => format!("{}[]", to_typescript(items, indent)),
            None => "Array<any>".into(),
        },
        _ => "any".into(),
    }
}

fn object_to_typescript(schema: &Value, indent: &str) -> String {
    let mut out = String::new();
    if let Some(description) = text(schema, "description") {
        out.push_str(&format!("{indent}// {description}\n"));
    }
    out.push_str("{\n");
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let optional = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            if let Some(title) = text(property, "title") {
                out.push_str(&format!("{indent}// {title}\n{indent}//\n"));
            }
            let variants = property.get("oneOf").and_then(Value::as_array);
            if property.get("oneOf").is_none()
                && let Some(description) = text(property, "description")
            {
                out.push_str(&format!("{indent}// {description}\n"));
            }
            if let Some(examples) = property.get("examples").and_then(Value::as_array)
                && !examples.is_empty()
            {
                out.push_str(&format!("{indent}// Examples:\n"));
                for example in examples.iter().filter_map(Value::as_str) {
                    out.push_str(&format!("{indent}// - \"{example}\"\n"));
                }
            }
            if let Some(variants) = variants {
                out.push_str(&one_of_property(name, optional, property, variants, indent));
                continue;
            }
            out.push_str(&format!("{indent}{name}{optional}: "));
            out.push_str(&with_null(
                property,
                to_typescript(property, &format!("{indent}    ")),
            ));
            out.push(',');
            if let Some(default) = property.get("default") {
                out.push_str(&format!(" // {}", default_text(property, default, false)));
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("{indent}}}"));
    out
}

/// A property whose type is a `oneOf`: its comments above it, then one line
/// per alternative.
fn one_of_property(
    name: &str,
    optional: &str,
    property: &Value,
    variants: &[Value],
    indent: &str,
) -> String {
    let mut out = String::new();
    let description = text(property, "description");
    // The description is written once: above the property, unless the first
    // alternative carries the same text.
    let same_as_first = description.is_some()
        && variants.first().and_then(|v| text(v, "description")) == description;
    let described_above = description.is_some() && !same_as_first;
    if described_above {
        out.push_str(&format!("{indent}// {}\n", description.unwrap()));
    }
    if let Some(default) = property.get("default") {
        out.push_str(&format!(
            "{indent}// {}\n",
            default_text(property, default, false)
        ));
    }
    out.push_str(&format!("{indent}{name}{optional}:\n"));
    for (index, variant) in variants.iter().enumerate() {
        out.push_str(&format!("{indent} | "));
        out.push_str(&with_null(
            variant,
            to_typescript(variant, &format!("{indent}   ")),
        ));
        let mut notes = Vec::new();
        if !(index == 0 && described_above)
            && let Some(variant_description) = text(variant, "description")
            && Some(variant_description) != description
        {
            notes.push(variant_description.to_string());
        }
        if let Some(default) = variant.get("default") {
            notes.push(default_text(variant, default, false));
        }
        if !notes.is_empty() {
            out.push_str(&format!(" // {}", notes.join(" ")));
        }
        out.push('\n');
    }
    out.push_str(&format!("{indent},\n"));
    out
}
