//! The message model of Harmony: who speaks, on which channel, to whom, and
//! what. Its JSON form is openai-harmony's (`Message.to_dict()`), so the same
//! conversations can be exchanged with the Python library.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Developer => "developer",
            Role::Tool => "tool",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "system" => Role::System,
            "developer" => Role::Developer,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role and, optionally, a name (the tool's name for tool messages, e.g.
/// `functions.get_weather`, `browser.search`, `python`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
}

impl Author {
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Author {
            role,
            name: Some(name.into()),
        }
    }
}

impl From<Role> for Author {
    fn from(role: Role) -> Self {
        Author { role, name: None }
    }
}

/// How long GPT-OSS reasons before answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    #[serde(alias = "Low", alias = "LOW")]
    Low,
    #[serde(alias = "Medium", alias = "MEDIUM")]
    Medium,
    #[serde(alias = "High", alias = "HIGH")]
    High,
}

impl ReasoningEffort {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

/// The channels a model may write to, announced in the system message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub valid_channels: Vec<String>,
    #[serde(default)]
    pub channel_required: bool,
}

impl ChannelConfig {
    /// These channels, and a channel is required on every message.
    pub fn require_channels<S: Into<String>>(channels: impl IntoIterator<Item = S>) -> Self {
        ChannelConfig {
            valid_channels: channels.into_iter().map(Into::into).collect(),
            channel_required: true,
        }
    }
}

/// One callable tool: a name, what it does, and a JSON Schema of its argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDescription {
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl ToolDescription {
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Option<serde_json::Value>,
    ) -> Self {
        ToolDescription {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

/// A namespace of tools (`functions`, `browser`, `python`), rendered as
/// `## name` plus a TypeScript-like `namespace name { ... }` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolNamespaceConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tools: Vec<ToolDescription>,
}

impl ToolNamespaceConfig {
    pub fn new(
        name: impl Into<String>,
        description: Option<String>,
        tools: Vec<ToolDescription>,
    ) -> Self {
        ToolNamespaceConfig {
            name: name.into(),
            description,
            tools,
        }
    }
}

fn default_identity() -> Option<String> {
    Some("You are ChatGPT, a large language model trained by OpenAI.".into())
}

fn default_effort() -> Option<ReasoningEffort> {
    Some(ReasoningEffort::Medium)
}

fn default_cutoff() -> Option<String> {
    Some("2024-06".into())
}

fn default_channels() -> Option<ChannelConfig> {
    Some(ChannelConfig::require_channels([
        "analysis",
        "commentary",
        "final",
    ]))
}

/// The content of the system message. Defaults are GPT-OSS's: its identity,
/// medium reasoning, knowledge cutoff 2024-06, and the three channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemContent {
    #[serde(default = "default_identity")]
    pub model_identity: Option<String>,
    #[serde(default = "default_effort")]
    pub reasoning_effort: Option<ReasoningEffort>,
    #[serde(default)]
    pub conversation_start_date: Option<String>,
    #[serde(default = "default_cutoff")]
    pub knowledge_cutoff: Option<String>,
    #[serde(default = "default_channels")]
    pub channel_config: Option<ChannelConfig>,
    /// Built-in tool namespaces (browser, python), by name.
    #[serde(default)]
    pub tools: Option<BTreeMap<String, ToolNamespaceConfig>>,
}

impl Default for SystemContent {
    fn default() -> Self {
        SystemContent {
            model_identity: default_identity(),
            reasoning_effort: default_effort(),
            conversation_start_date: None,
            knowledge_cutoff: default_cutoff(),
            channel_config: default_channels(),
            tools: None,
        }
    }
}

impl SystemContent {
    pub fn with_model_identity(mut self, identity: impl Into<String>) -> Self {
        self.model_identity = Some(identity.into());
        self
    }

    pub fn with_reasoning_effort(mut self, effort: ReasoningEffort) -> Self {
        self.reasoning_effort = Some(effort);
        self
    }

    pub fn with_conversation_start_date(mut self, date: impl Into<String>) -> Self {
        self.conversation_start_date = Some(date.into());
        self
    }

    pub fn with_knowledge_cutoff(mut self, cutoff: impl Into<String>) -> Self {
        self.knowledge_cutoff = Some(cutoff.into());
        self
    }

    pub fn with_channel_config(mut self, config: ChannelConfig) -> Self {
        self.channel_config = Some(config);
        self
    }

    /// Adds (or replaces) a tool namespace.
    pub fn with_tools(mut self, namespace: ToolNamespaceConfig) -> Self {
        self.tools
            .get_or_insert_with(BTreeMap::new)
            .insert(namespace.name.clone(), namespace);
        self
    }
}

/// The content of the developer message: instructions and function tools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeveloperContent {
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<BTreeMap<String, ToolNamespaceConfig>>,
}

impl DeveloperContent {
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    pub fn with_tools(mut self, namespace: ToolNamespaceConfig) -> Self {
        self.tools
            .get_or_insert_with(BTreeMap::new)
            .insert(namespace.name.clone(), namespace);
        self
    }

    /// Adds tools to the `functions` namespace.
    pub fn with_function_tools(self, tools: Vec<ToolDescription>) -> Self {
        self.with_tools(ToolNamespaceConfig::new("functions", None, tools))
    }
}

/// One piece of a message's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: String },
    SystemContent(SystemContent),
    DeveloperContent(DeveloperContent),
}

impl Content {
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text { text: text.into() }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub author: Author,
    pub content: Vec<Content>,
    pub channel: Option<String>,
    pub recipient: Option<String>,
    pub content_type: Option<String>,
}

impl Message {
    pub fn new(author: impl Into<Author>, content: Content) -> Self {
        Message {
            author: author.into(),
            content: vec![content],
            channel: None,
            recipient: None,
            content_type: None,
        }
    }

    /// A message whose content is text.
    pub fn text(author: impl Into<Author>, text: impl Into<String>) -> Self {
        Message::new(author, Content::text(text))
    }

    pub fn system(content: SystemContent) -> Self {
        Message::new(Role::System, Content::SystemContent(content))
    }

    pub fn developer(content: DeveloperContent) -> Self {
        Message::new(Role::Developer, Content::DeveloperContent(content))
    }

    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    pub fn with_recipient(mut self, recipient: impl Into<String>) -> Self {
        self.recipient = Some(recipient.into());
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// All text content joined (system and developer content excluded).
    pub fn text_content(&self) -> String {
        self.content
            .iter()
            .filter_map(|c| match c {
                Content::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// openai-harmony's JSON shape: author fields flattened, content as a list
/// (or, on input, a plain string).
#[derive(Serialize, Deserialize)]
struct MessageJson {
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(deserialize_with = "string_or_contents")]
    content: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

fn string_or_contents<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Content>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        List(Vec<Content>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Text(text) => vec![Content::text(text)],
        Either::List(list) => list,
    })
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MessageJson {
            role: self.author.role,
            name: self.author.name.clone(),
            content: self.content.clone(),
            channel: self.channel.clone(),
            recipient: self.recipient.clone(),
            content_type: self.content_type.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = MessageJson::deserialize(d)?;
        Ok(Message {
            author: Author {
                role: m.role,
                name: m.name,
            },
            content: m.content,
            channel: m.channel,
            recipient: m.recipient,
            content_type: m.content_type,
        })
    }
}
