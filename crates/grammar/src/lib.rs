//! Structured outputs: the answer a model must give, as a grammar, turned
//! into the tokens it may write next at each step.
//!
//! [`Grammars`] holds a model's vocabulary as the grammar engine
//! (llguidance) needs it, built once per model. It compiles an
//! [`OutputFormat`] (a JSON Schema, any JSON object, a Lark grammar, a
//! regular expression) and gives the sampler a
//! [`TokenConstraint`](mlx_harmony_core::sampling::TokenConstraint), the
//! mask of allowed tokens applied to the logits before sampling:
//!
//! - for a model whose reply is plain text, the whole reply follows the
//!   grammar and ends where the grammar may end ([`whole`]); with strict
//!   tools and no answer format, its Hermes-style `<tool_call>` blocks are
//!   held to the tools' schemas ([`template_calls`]), or, for a template
//!   whose model answers a call with the bare object (Llama 3.1), a reply
//!   that starts as an object is held to one call ([`bare_call`]);
//! - for a GPT-OSS (Harmony) model, only the final channel's answer and the
//!   JSON of tool calls do: the analysis channel stays free ([`harmony`]).
//!
//! A format the engine cannot compile is an error that names what in it is
//! wrong ([`GrammarError`]), so a server can answer 400 before anything runs.

mod bare_call;
mod harmony;
mod mask;
mod template_calls;
mod vocabulary;
mod whole;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use mlx_harmony_core::sampling::TokenConstraint;
pub use mlx_harmony_core::tool_parsers::CallStyle;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

pub use harmony::HarmonyTokens;

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against this JSON Schema.
    JsonSchema(Value),
    /// Text in the language of this Lark grammar (llguidance's dialect:
    /// `start: ...`, regular expressions between slashes, `%json {...}` for
    /// an embedded schema).
    Lark(String),
    /// Text the whole of which matches this regular expression.
    Regex(String),
}

/// A function tool whose call arguments are held to its parameters' schema.
#[derive(Clone, Debug, PartialEq)]
pub struct StrictTool {
    pub name: String,
    pub parameters: Value,
}

/// What one request's output is held to: its answer's format, and the
/// tools whose calls must match their schemas. Empty: nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputRules {
    pub answer: Option<OutputFormat>,
    /// Harmony models' calls are found by their headers; a plain-text
    /// model's `<tool_call>` blocks (Hermes, Qwen) by their tag, when the
    /// answer has no format of its own (which would hold the whole reply).
    pub strict_tools: Vec<StrictTool>,
}

impl OutputRules {
    pub fn is_empty(&self) -> bool {
        self.answer.is_none() && self.strict_tools.is_empty()
    }
}

/// Why a format cannot be used: the engine's own words, with where.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    /// The format (or the part named) cannot be compiled.
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
    /// The model's vocabulary could not be read for the grammar engine.
    #[error("structured outputs are not available for this model: {0}")]
    Vocabulary(String),
}

/// A model's vocabulary for the grammar engine, and what compiles formats
/// against it. Cheap to clone; shared between threads.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// The Harmony control tokens, for a GPT-OSS model.
    harmony: Option<HarmonyTokens>,
    /// The end-of-output tokens of a plain-text model.
    eos: Vec<u32>,
    tokenizer: Arc<Tokenizer>,
    /// How a plain-text model writes a tool call (its chat template's way).
    call_style: CallStyle,
}

/// JSON is written compactly, with single spaces after `,` and `:`: a small
/// model left free to add whitespace can fill its token budget with it.
fn json_options() -> Value {
    json!({"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": false})
}

impl Grammars {
    /// Reads `tokenizer`'s vocabulary (padded to `model_vocab`, the rows of
    /// the model's output layer). `eos` are the tokens that end a reply; with
    /// `harmony`, the Harmony control tokens are looked up in the vocabulary.
    pub fn new(
        tokenizer: &Tokenizer,
        model_vocab: usize,
        eos: &[u32],
        harmony: bool,
    ) -> Result<Self, GrammarError> {
        let env = vocabulary::token_env(tokenizer, model_vocab, eos)
            .map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        // Errors are returned to the caller, not printed.
        factory.quiet();
        let tokenizer = Arc::new(tokenizer.clone());
        let harmony = if harmony {
            Some(HarmonyTokens::find(tokenizer.clone()).map_err(GrammarError::Vocabulary)?)
        } else {
            None
        };
        Ok(Grammars {
            factory: Arc::new(factory),
            harmony,
            eos: eos.to_vec(),
            tokenizer,
            call_style: CallStyle::Tagged,
        })
    }

    /// The way the model's chat template has it write tool calls (Hermes
    /// `<tool_call>` blocks unless told otherwise); strict tools are held
    /// in that form.
    pub fn with_call_style(mut self, style: CallStyle) -> Self {
        self.call_style = style;
        self
    }

    /// A token's bytes (a special token's name), as the wire shows tokens.
    pub fn token_bytes(&self, token: u32) -> Vec<u8> {
        let trie = self.factory.tok_env().tok_trie();
        if (token as usize) >= trie.vocab_size() {
            return Vec::new();
        }
        let bytes = trie.token(token);
        match bytes.first() {
            Some(&llguidance::toktrie::TokTrie::SPECIAL_TOKEN_MARKER) => bytes[1..].to_vec(),
            _ => bytes.to_vec(),
        }
    }

    /// Compiles `format` into a matcher at its start; `place` names the
    /// format in an error (`response_format.json_schema.schema`).
    pub fn matcher(&self, format: &OutputFormat, place: &str) -> Result<Matcher, GrammarError> {
        let grammar = match format {
            OutputFormat::JsonObject => {
                let mut schema = json!({"type": "object"});
                schema["x-guidance"] = json_options();
                TopLevelGrammar::from_json_schema(schema)
            }
            OutputFormat::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GrammarError::Invalid {
                        place: place.to_string(),
                        message: "a JSON Schema is an object (or true/false)".into(),
                    });
                }
                let mut schema = match schema {
                    Value::Bool(true) => json!({}),
                    other => other.clone(),
                };
                bound_numbers(&mut schema);
                if let Some(object) = schema.as_object_mut()
                    && !object.contains_key("x-guidance")
                {
                    object.insert("x-guidance".into(), json_options());
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            OutputFormat::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            OutputFormat::Regex(pattern) => TopLevelGrammar::from_regex(pattern),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::Invalid {
                place: place.to_string(),
                message: e.to_string(),
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(error) = matcher.get_error() {
            return Err(GrammarError::Invalid {
                place: place.to_string(),
                message: error,
            });
        }
        Ok(matcher)
    }

    /// The constraint for one request's output, or `None` when `rules` hold
    /// it to nothing. Everything is compiled here, so a bad format fails
    /// before generation starts.
    pub fn constraint(
        &self,
        rules: &OutputRules,
    ) -> Result<Option<Box<dyn TokenConstraint>>, GrammarError> {
        if rules.is_empty() {
            return Ok(None);
        }
        let answer = rules
            .answer
            .as_ref()
            .map(|format| self.matcher(format, "the answer's format"))
            .transpose()?;
        match &self.harmony {
            Some(tokens) => {
                let mut tools = Vec::new();
                for tool in &rules.strict_tools {
                    let format = OutputFormat::JsonSchema(tool.parameters.clone());
                    let place = format!("the parameters of strict tool {:?}", tool.name);
                    tools.push((tool.name.clone(), self.matcher(&format, &place)?));
                }
                let any_json = self.matcher(&OutputFormat::JsonObject, "JSON")?;
                Ok(Some(Box::new(harmony::HarmonyConstraint::new(
                    tokens.clone(),
                    answer,
                    tools,
                    any_json,
                    self.eos.clone(),
                ))))
            }
            None => match answer {
                Some(matcher) => Ok(Some(Box::new(whole::WholeOutput::new(matcher)))),
                None => match self.call_style {
                    CallStyle::Tagged => {
                        let call = self.template_call(&rules.strict_tools)?;
                        Ok(Some(Box::new(template_calls::TemplateCalls::new(
                            self.tokenizer.clone(),
                            call,
                            self.eos.clone(),
                        ))))
                    }
                    CallStyle::WholeReply => {
                        let reply = self.bare_call(&rules.strict_tools)?;
                        Ok(Some(Box::new(bare_call::BareCall::new(
                            self.tokenizer.clone(),
                            reply,
                        ))))
                    }
                },
            },
        }
    }
}

impl Grammars {
    /// The `{"name": <a strict tool>, "parameters": <its schema>}` object of
    /// each strict tool, as JSON Schema choices.
    fn call_objects(tools: &[StrictTool], arguments_key: &str) -> Value {
        let mut choices = Vec::new();
        for tool in tools {
            let mut parameters = tool.parameters.clone();
            bound_numbers(&mut parameters);
            choices.push(json!({"type": "object", "properties": {
                "name": {"const": tool.name}, (arguments_key): parameters},
                "required": ["name", (arguments_key)], "additionalProperties": false}));
        }
        let mut schema = json!({"anyOf": choices});
        schema["x-guidance"] = json_options();
        schema
    }

    fn strict_place(tools: &[StrictTool]) -> String {
        format!(
            "the parameters of the strict tools {:?}",
            tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()
        )
    }

    /// A bare-object model's whole reply: whitespace and one call of a
    /// strict tool (as Llama 3.1's template asks: `parameters`), or text
    /// that does not start as an object.
    fn bare_call(&self, tools: &[StrictTool]) -> Result<Matcher, GrammarError> {
        let schema = Self::call_objects(tools, "parameters");
        let lark = format!(
            "start: SPACE? %json {schema} | TEXT\n\
             SPACE: /[ \\t\\r\\n]+/\n\
             TEXT: /[ \\t\\r\\n]*[^{{ \\t\\r\\n][\\s\\S]*/\n"
        );
        self.matcher(&OutputFormat::Lark(lark), &Self::strict_place(tools))
    }

    /// What follows a plain-text model's `<tool_call>`: one call of a
    /// strict tool as its template writes it, then the closing tag.
    fn template_call(&self, tools: &[StrictTool]) -> Result<Matcher, GrammarError> {
        let schema = Self::call_objects(tools, "arguments");
        let lark = format!(
            "start: \"\\n\"? %json {schema} \"\\n\"? \"{}\"\n",
            template_calls::CLOSE
        );
        let place = Self::strict_place(tools);
        self.matcher(&OutputFormat::Lark(lark), &place)
    }
}

/// The largest magnitude and the finest step a number is written with when
/// its schema gives none.
const NUMBER_LIMIT: f64 = 1e15;
const NUMBER_STEP: f64 = 1e-6;

/// Narrows every number and integer schema that leaves its size or precision
/// open: at most 15 integer digits, at most 6 decimals. Every answer still
/// validates against the schema as given (the narrowed one accepts a subset
/// of it); without this a model can be held writing digits forever, each
/// one as valid as ending the number.
fn bound_numbers(schema: &mut Value) {
    match schema {
        Value::Array(items) => items.iter_mut().for_each(bound_numbers),
        Value::Object(object) => {
            let types: Vec<&str> = match object.get("type") {
                Some(Value::String(t)) => vec![t.as_str()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let number = types.contains(&"number");
            if number || types.contains(&"integer") {
                if !object.contains_key("minimum") && !object.contains_key("exclusiveMinimum") {
                    object.insert("minimum".into(), json!(-NUMBER_LIMIT));
                }
                if !object.contains_key("maximum") && !object.contains_key("exclusiveMaximum") {
                    object.insert("maximum".into(), json!(NUMBER_LIMIT));
                }
                if number && !object.contains_key("multipleOf") {
                    object.insert("multipleOf".into(), json!(NUMBER_STEP));
                }
            }
            for (key, value) in object.iter_mut() {
                // Literal values are data, not schemas.
                if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    bound_numbers(value);
                }
            }
        }
        _ => {}
    }
}
