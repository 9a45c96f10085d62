//! Rendering conversations into the token ids a GPT-OSS model expects, over
//! the model's own Hugging Face tokenizer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::error::HarmonyError;
use crate::model::{Content, DeveloperContent, Message, Role, SystemContent, ToolNamespaceConfig};
use crate::schema;

/// The Harmony formatting tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    Start,
    Message,
    End,
    Return,
    Call,
    Channel,
    Constrain,
}

impl Special {
    pub const ALL: [Special; 7] = [
        Special::Start,
        Special::Message,
        Special::End,
        Special::Return,
        Special::Call,
        Special::Channel,
        Special::Constrain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Special::Start => "<|start|>",
            Special::Message => "<|message|>",
            Special::End => "<|end|>",
            Special::Return => "<|return|>",
            Special::Call => "<|call|>",
            Special::Channel => "<|channel|>",
            Special::Constrain => "<|constrain|>",
        }
    }
}

/// Options for rendering a whole conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// Drop the `analysis` messages that come before the first `final`
    /// message once the conversation's last assistant message is final, as
    /// GPT-OSS expects: past reasoning is not shown back to the model.
    pub auto_drop_analysis: bool,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            auto_drop_analysis: true,
        }
    }
}

struct Inner {
    tokenizer: Tokenizer,
    specials: HashMap<Special, u32>,
    /// The bytes each token id stands for (special tokens: their text).
    token_bytes: Vec<Vec<u8>>,
}

/// Harmony over one tokenizer. Cheap to clone.
#[derive(Clone)]
pub struct HarmonyEncoding {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HarmonyEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarmonyEncoding")
            .field("vocab", &self.inner.token_bytes.len())
            .finish()
    }
}

/// The byte → printable-character table of byte-level BPE vocabularies
/// (GPT-2 style): printable Latin-1 bytes stand for themselves, the others
/// are shifted to code points from 256 up, in byte order.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 256u32;
    (0u32..=255)
        .map(|byte| {
            let ch = if printable(byte) {
                char::from_u32(byte).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            };
            (ch, byte as u8)
        })
        .collect()
}

fn uses_byte_level(tokenizer: &Tokenizer) -> bool {
    let json = serde_json::to_value(tokenizer.get_decoder()).unwrap_or_default();
    let text = json.to_string();
    text.contains("\"ByteLevel\"")
}

impl HarmonyEncoding {
    /// Loads `tokenizer.json` (e.g. a GPT-OSS model folder's).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, HarmonyError> {
        let path = path.as_ref();
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| HarmonyError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(tokenizer)
    }

    /// Wraps a tokenizer that has the Harmony special tokens.
    pub fn new(mut tokenizer: Tokenizer) -> Result<Self, HarmonyError> {
        let mut specials = HashMap::new();
        for special in Special::ALL {
            let id = tokenizer.token_to_id(special.as_str()).ok_or_else(|| {
                HarmonyError::Tokenizer(format!(
                    "the tokenizer has no {} token; Harmony needs a GPT-OSS (o200k_harmony) tokenizer",
                    special.as_str()
                ))
            })?;
            specials.insert(special, id);
        }
        // Text inside messages is ordinary text even where it spells a special
        // token: only the renderer places special tokens.
        tokenizer.set_encode_special_tokens(true);

        let size = tokenizer.get_vocab_size(true);
        let mut token_bytes = vec![Vec::new(); size];
        let byte_level = uses_byte_level(&tokenizer).then(byte_level_chars);
        let added: HashMap<u32, String> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        for (token, id) in tokenizer.get_vocab(true) {
            let Some(slot) = token_bytes.get_mut(id as usize) else {
                continue;
            };
            *slot = match (&byte_level, added.contains_key(&id)) {
                (Some(table), false) => token
                    .chars()
                    .filter_map(|c| table.get(&c).copied())
                    .collect(),
                _ => match added.get(&id) {
                    Some(text) => text.clone().into_bytes(),
                    None => tokenizer
                        .decode(&[id], false)
                        .unwrap_or_default()
                        .into_bytes(),
                },
            };
        }
        Ok(HarmonyEncoding {
            inner: Arc::new(Inner {
                tokenizer,
                specials,
                token_bytes,
            }),
        })
    }

    /// The id of a formatting token.
    pub fn special(&self, special: Special) -> u32 {
        self.inner.specials[&special]
    }

    /// Which formatting token an id is, if any.
    pub fn special_of(&self, id: u32) -> Option<Special> {
        Special::ALL.into_iter().find(|s| self.special(*s) == id)
    }

    /// Tokens that end a message: `<|return|>`, `<|end|>`, `<|call|>`.
    pub fn stop_tokens(&self) -> [u32; 3] {
        [
            self.special(Special::Return),
            self.special(Special::End),
            self.special(Special::Call),
        ]
    }

    /// Tokens that end the assistant's turn: `<|return|>` (done) and
    /// `<|call|>` (a tool call). Generation stops on these.
    pub fn stop_tokens_for_assistant_actions(&self) -> [u32; 2] {
        [self.special(Special::Return), self.special(Special::Call)]
    }

    /// The tokenizer, as given.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The raw bytes of a token (empty for ids outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.inner
            .token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text, special tokens included, invalid UTF-8 replaced.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Ordinary (non-special) encoding of text.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, HarmonyError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .inner
            .tokenizer
            .encode(text, false)
            .map_err(|e| HarmonyError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn push_text(&self, out: &mut Vec<u32>, text: &str) -> Result<(), HarmonyError> {
        out.extend(self.encode_text(text)?);
        Ok(())
    }

    /// Renders one message: `<|start|>header<|message|>content<|end|>` (or
    /// `<|call|>` for an assistant message addressed to a tool).
    pub fn render_message(
        &self,
        message: &Message,
        has_function_tools: bool,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = vec![self.special(Special::Start)];
        if message.author.role == Role::Tool {
            let name = message
                .author
                .name
                .as_deref()
                .ok_or(HarmonyError::ToolWithoutName)?;
            self.push_text(&mut out, name)?;
        } else {
            self.push_text(&mut out, message.author.role.as_str())?;
            if let Some(name) = &message.author.name {
                self.push_text(&mut out, &format!(":{name}"))?;
            }
        }
        if let Some(recipient) = message.recipient.as_deref().filter(|r| *r != "all") {
            self.push_text(&mut out, &format!(" to={recipient}"))?;
        }
        if let Some(channel) = &message.channel {
            out.push(self.special(Special::Channel));
            self.push_text(&mut out, channel)?;
        }
        if let Some(content_type) = &message.content_type {
            match content_type.strip_prefix(Special::Constrain.as_str()) {
                Some(rest) => {
                    self.push_text(&mut out, " ")?;
                    out.push(self.special(Special::Constrain));
                    self.push_text(&mut out, rest)?;
                }
                None => self.push_text(&mut out, &format!(" {content_type}"))?,
            }
        }
        out.push(self.special(Special::Message));
        for content in &message.content {
            match content {
                Content::Text { text } => self.push_text(&mut out, text)?,
                Content::SystemContent(system) => {
                    if message.author.role != Role::System {
                        return Err(HarmonyError::MisplacedContent(
                            "system content",
                            message.author.role,
                        ));
                    }
                    self.push_text(&mut out, &system_text(system, has_function_tools))?;
                }
                Content::DeveloperContent(developer) => {
                    if message.author.role != Role::Developer {
                        return Err(HarmonyError::MisplacedContent(
                            "developer content",
                            message.author.role,
                        ));
                    }
                    self.push_text(&mut out, &developer_text(developer))?;
                }
            }
        }
        let end = if message.author.role == Role::Assistant && message.recipient.is_some() {
            Special::Call
        } else {
            Special::End
        };
        out.push(self.special(end));
        Ok(out)
    }

    /// Renders a conversation as it stands (history).
    pub fn render_conversation(
        &self,
        messages: &[Message],
        config: RenderConfig,
    ) -> Result<Vec<u32>, HarmonyError> {
        let has_function_tools = messages.iter().any(|m| {
            m.content.iter().any(|c| match c {
                Content::DeveloperContent(d) => d
                    .tools
                    .as_ref()
                    .and_then(|t| t.get("functions"))
                    .is_some_and(|ns| !ns.tools.is_empty()),
                _ => false,
            })
        });
        let last_assistant_is_final = messages
            .iter()
            .rev()
            .find(|m| m.author.role == Role::Assistant)
            .is_some_and(|m| m.channel.as_deref() == Some("final"));
        let first_final = messages
            .iter()
            .position(|m| m.channel.as_deref() == Some("final"));
        let drop_before = match (
            config.auto_drop_analysis && last_assistant_is_final,
            first_final,
        ) {
            (true, Some(index)) => index,
            _ => 0,
        };
        let mut out = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            if index < drop_before && message.channel.as_deref() == Some("analysis") {
                continue;
            }
            out.extend(self.render_message(message, has_function_tools)?);
        }
        Ok(out)
    }

    /// Renders a conversation followed by `<|start|>{role}`, ready for the
    /// model to continue as `role` (normally the assistant).
    pub fn render_conversation_for_completion(
        &self,
        messages: &[Message],
        next_role: Role,
        config: RenderConfig,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = self.render_conversation(messages, config)?;
        out.push(self.special(Special::Start));
        self.push_text(&mut out, next_role.as_str())?;
        Ok(out)
    }

    /// Renders a conversation for training: like history, except that a last
    /// message that is the assistant's final answer ends with `<|return|>`.
    pub fn render_conversation_for_training(
        &self,
        messages: &[Message],
        config: RenderConfig,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = self.render_conversation(messages, config)?;
        if let Some(last) = messages.last()
            && last.author.role == Role::Assistant
            && last.channel.as_deref() == Some("final")
            && let Some(end) = out.last_mut()
        {
            *end = self.special(Special::Return);
        }
        Ok(out)
    }
}

/// The text of a system message.
pub fn system_text(system: &SystemContent, has_function_tools: bool) -> String {
    let mut sections = Vec::new();
    let mut top = Vec::new();
    if let Some(identity) = &system.model_identity {
        top.push(identity.clone());
    }
    if let Some(cutoff) = &system.knowledge_cutoff {
        top.push(format!("Knowledge cutoff: {cutoff}"));
    }
    if let Some(date) = &system.conversation_start_date {
        top.push(format!("Current date: {date}"));
    }
    if !top.is_empty() {
        sections.push(top.join("\n"));
    }
    if let Some(effort) = system.reasoning_effort {
        sections.push(format!("Reasoning: {}", effort.as_str()));
    }
    if let Some(tools) = system.tools.as_ref().filter(|t| !t.is_empty()) {
        sections.push(tools_text(tools.values()));
    }
    if let Some(channels) = system
        .channel_config
        .as_ref()
        .filter(|c| !c.valid_channels.is_empty())
    {
        let mut line = format!("# Valid channels: {}.", channels.valid_channels.join(", "));
        if channels.channel_required {
            line.push_str(" Channel must be included for every message.");
        }
        if has_function_tools {
            line.push_str("\nCalls to these tools must go to the commentary channel: 'functions'.");
        }
        sections.push(line);
    }
    sections.join("\n\n")
}

/// The text of a developer message.
pub fn developer_text(developer: &DeveloperContent) -> String {
    let mut sections = Vec::new();
    if let Some(instructions) = &developer.instructions {
        sections.push("# Instructions".to_string());
        sections.push(instructions.clone());
    }
    if let Some(tools) = developer.tools.as_ref().filter(|t| !t.is_empty()) {
        sections.push(tools_text(tools.values()));
    }
    sections.join("\n\n")
}

/// `# Tools` and one `## namespace` section per namespace.
fn tools_text<'a>(namespaces: impl Iterator<Item = &'a ToolNamespaceConfig>) -> String {
    let mut sections = vec!["# Tools".to_string()];
    for namespace in namespaces {
        let mut lines = vec![format!("## {}\n", namespace.name)];
        let has_tools = !namespace.tools.is_empty();
        if let Some(description) = &namespace.description {
            for line in description.lines() {
                lines.push(if has_tools {
                    format!("// {line}")
                } else {
                    line.to_string()
                });
            }
        }
        if has_tools {
            lines.push(format!("namespace {} {{\n", namespace.name));
            for tool in &namespace.tools {
                for line in tool.description.lines() {
                    lines.push(format!("// {line}"));
                }
                lines.push(match &tool.parameters {
                    Some(parameters) => format!(
                        "type {} = (_: {}) => any;\n",
                        tool.name,
                        schema::to_typescript(parameters, "")
                    ),
                    None => format!("type {} = () => any;\n", tool.name),
                });
            }
            lines.push(format!("}} // namespace {}", namespace.name));
        }
        sections.push(lines.join("\n"));
    }
    sections.join("\n\n")
}
