//! `POST /v1/chat/completions`, OpenAI-compatible, and the reply engine
//! session turns share: [`parse`] the request once into a [`ChatCall`];
//! a [`ChatTurn`] builds the prompt, then the host polls it for one event
//! at a time (running the passes of a model whose weights are elsewhere);
//! [`render`] turns the events into what the client reads ([`wire`] has
//! the shapes), and a [`TurnSink`] (a session's store) takes the finished
//! reply before its end goes out.

mod fields;
pub mod render;
mod turn;
pub mod wire;

pub use fields::GenerationFields;
pub use render::{CompletionBody, CompletionChunks, Output, Render, Wire};
pub use turn::{
    ChatTurn, Event, Finish, Head, Pass, Reply, RequestMeta, Sharded, Step, TurnPlan, TurnSink,
};
pub use wire::{ChatUsage, SSE_HEADERS};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::limits::{MAX_CHAT_CHARS, MAX_MESSAGES};
use super::parse::{json_body, kind, no_unknown_fields};
use super::HttpRequest;
use crate::decoder::template::{Message, Role};
use crate::registry::{self, ModelSpec};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    pub messages: Value,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// A session (`POST /v1/sessions`) whose stored history precedes
    /// `messages`; the new messages and the reply are stored in it.
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// OpenAI's end-user id; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub generation: GenerationFields,
    /// Anything else: refused by name, so a typo is not silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A validated chat completion request.
#[derive(Debug)]
pub struct ChatCall {
    pub spec: &'static ModelSpec,
    pub messages: Vec<Message>,
    pub generation: GenerationFields,
    pub stream: bool,
    pub include_usage: bool,
    pub session: Option<String>,
}

impl ChatCall {
    /// The reply of a call without a session, and how it goes out.
    pub fn plan(self) -> (TurnPlan, Wire) {
        let wire = Wire::chat(self.stream, self.include_usage, None);
        let plan = TurnPlan {
            spec: self.spec,
            messages: self.messages,
            generation: self.generation,
        };
        (plan, wire)
    }
}

/// Parses and validates `POST /v1/chat/completions`; the `X-Session-Id`
/// header ([`HttpRequest::session`]) is an alternative to the `session` field.
/// The session's id is the caller's to check (a turn of a session is the
/// sessions' business).
pub fn parse(req: &HttpRequest<'_>) -> Result<ChatCall, ApiError> {
    let session_header = req.session;
    let body: ChatBody = json_body(req)?;
    no_unknown_fields(&body.unknown)?;
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only `n: 1` is supported").with_param("n"));
    }
    if body.logprobs == Some(true) {
        return Err(ApiError::invalid("`logprobs` is not supported").with_param("logprobs"));
    }
    let spec = registry::chat_spec(&body.model)?;
    let messages = parse_messages(&body.messages)?;
    // Checked now, so a bad value is a 422 before any session is touched.
    body.generation.options(0)?;
    let session = match (body.session, session_header) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "the `session` field and the X-Session-Id header name different sessions",
            )
            .with_param("session"))
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    };
    Ok(ChatCall {
        spec,
        messages,
        generation: body.generation,
        stream: body.stream.unwrap_or(false),
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
        session,
    })
}

/// `messages`: a non-empty array of `{role, content}`; content is a string,
/// an array of `{type: "text", text}` parts, or null (assistant only).
pub fn parse_messages(value: &Value) -> Result<Vec<Message>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(format!(
            "`messages` is {}; send an array of {{role, content}} objects",
            kind(value)
        ))
        .with_param("messages"));
    };
    if items.is_empty() {
        return Err(
            ApiError::invalid("`messages` is empty; send at least one user message")
                .with_param("messages"),
        );
    }
    if items.len() > MAX_MESSAGES {
        return Err(ApiError::too_large(format!(
            "`messages` has {} items; the limit is {MAX_MESSAGES}",
            items.len()
        ))
        .with_param("messages"));
    }
    let mut chars = 0;
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let bad = |message: String| ApiError::invalid(message).with_param(param.clone());
        let Value::Object(fields) = item else {
            return Err(bad(format!("`{param}` is {}; send an object", kind(item))));
        };
        let role = match fields.get("role") {
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                bad(format!(
                    "`{param}.role` is {r:?}; use system, developer, user or assistant"
                ))
            })?,
            other => {
                return Err(bad(format!(
                    "`{param}.role` is {}; send a string",
                    other.map_or("missing", kind)
                )))
            }
        };
        let content = message_content(fields.get("content"), &format!("{param}.content"))?;
        if let Some(field) = fields
            .keys()
            .find(|k| !["role", "content", "name"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "`{param}.{field}` is not supported (tool calls and the like are not)"
            )));
        }
        chars += content.chars().count();
        messages.push(Message { role, content });
    }
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::too_large(format!(
            "the messages have {chars} characters; the limit is {MAX_CHAT_CHARS}"
        ))
        .with_param("messages"));
    }
    match messages.last() {
        Some(m) if m.role == Role::User && !m.content.trim().is_empty() => Ok(messages),
        Some(m) if m.role == Role::User => Err(ApiError::invalid(
            "the last message is empty; send some text",
        )
        .with_param(format!("messages[{}].content", messages.len() - 1))),
        _ => Err(ApiError::invalid(
            "the last message must be from the user (the reply is the assistant's turn)",
        )
        .with_param("messages")),
    }
}

/// A message's text: a string, text parts joined, or null (empty).
pub fn message_content(value: Option<&Value>, param: &str) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param(param);
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Ok(String::new()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(bad(format!(
                            "`{param}[{j}]` must be {{\"type\": \"text\", \"text\": \"...\"}}; only text parts are supported"
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(bad(format!(
            "`{param}` is {}; send a string or an array of text parts",
            kind(other)
        ))),
    }
}
