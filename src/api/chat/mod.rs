//! `POST /v1/chat/completions`, OpenAI-compatible, and the reply engine
//! session turns share: [`parse`] the request once into a [`ChatCall`];
//! a [`ChatTurn`] builds the prompt, then the host polls it for one event
//! at a time (running the passes of a model whose weights are elsewhere);
//! [`render`] turns the events into what the client reads ([`wire`] has
//! the shapes), and a [`TurnSink`] (a session's store) takes the finished
//! reply before its end goes out.

mod fields;
pub mod render;
pub mod responses;
pub mod shape;
mod turn;
pub mod wire;

pub use fields::GenerationFields;
pub use render::{CompletionBody, CompletionChunks, Output, Render, Wire};
pub use shape::{CallMode, Shape};
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
    /// `{type: text | json_object | json_schema}`: what the reply must be.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Function tools the model may call, and whether it must.
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Accepted: a reply holds one call at most either way.
    #[serde(default)]
    #[allow(dead_code)]
    pub parallel_tool_calls: Option<bool>,
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
    /// What the reply must be: text, JSON under a schema, or a call.
    pub shape: Shape,
}

impl ChatCall {
    /// The reply of a call without a session, and how it goes out.
    pub fn plan(self) -> (TurnPlan, Wire) {
        let wire = Wire::chat(self.stream, self.include_usage, None).with_calls(self.shape.calls());
        let plan = TurnPlan {
            spec: self.spec,
            messages: with_instructions(self.messages, self.shape.instructions()),
            generation: self.generation,
            grammar: self.shape.grammar(),
        };
        (plan, wire)
    }
}

/// `messages` with `instructions` (what the model is told of its tools)
/// at the end of the first system message, or as one before the others.
pub fn with_instructions(mut messages: Vec<Message>, instructions: Option<String>) -> Vec<Message> {
    let Some(text) = instructions else {
        return messages;
    };
    match messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{text}", first.content);
        }
        _ => messages.insert(
            0,
            Message {
                role: Role::System,
                content: text,
            },
        ),
    }
    messages
}

/// `response_format`, `tools` and `tool_choice` as one [`Shape`].
fn shape(body: &ChatBody) -> Result<Shape, ApiError> {
    let json = match &body.response_format {
        None | Some(Value::Null) => None,
        Some(format) => shape::response_format(format, "response_format", true)?,
    };
    shape::of(
        json,
        "response_format",
        body.tools.as_ref(),
        body.tool_choice.as_ref(),
    )
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
    let shape = shape(&body)?;
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
    if session.is_some() && (shape != Shape::Text || messages.iter().any(|m| m.role == Role::Tool))
    {
        return Err(ApiError::unsupported(
            "unsupported_with_session",
            "`response_format`, `tools` and tool messages are not served in a session's turn; send the conversation without `session` (or use /v1/responses with previous_response_id)",
        )
        .with_param("session"));
    }
    Ok(ChatCall {
        spec,
        messages,
        generation: body.generation,
        stream: body.stream.unwrap_or(false),
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
        session,
        shape,
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
    // The ids of the calls earlier assistant messages made: a tool message
    // answers one of them.
    let mut calls: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let bad = |message: String| ApiError::invalid(message).with_param(param.clone());
        let Value::Object(fields) = item else {
            return Err(bad(format!("`{param}` is {}; send an object", kind(item))));
        };
        let role = match fields.get("role") {
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                bad(format!(
                    "`{param}.role` is {r:?}; use system, developer, user, assistant or tool"
                ))
            })?,
            other => {
                return Err(bad(format!(
                    "`{param}.role` is {}; send a string",
                    other.map_or("missing", kind)
                )))
            }
        };
        let mut content = message_content(fields.get("content"), &format!("{param}.content"))?;
        let allowed: &[&str] = match role {
            Role::Assistant => &["role", "content", "name", "tool_calls", "refusal"],
            Role::Tool => &["role", "content", "tool_call_id"],
            _ => &["role", "content", "name"],
        };
        if let Some(field) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!(
                "`{param}.{field}` is not supported in a {} message",
                role.as_str()
            )));
        }
        if let Some(made) = fields.get("tool_calls").filter(|v| !v.is_null()) {
            for (id, call) in history_calls(made, &format!("{param}.tool_calls"))? {
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&call);
                calls.push(id);
            }
        }
        if role == Role::Tool {
            let answers = fields.get("tool_call_id").and_then(Value::as_str);
            if !answers.is_some_and(|id| calls.iter().any(|c| c == id)) {
                return Err(ApiError::unsupported(
                    "invalid_tool_message",
                    format!(
                        "`{param}` is a tool message whose `tool_call_id` ({}) answers no call of an earlier assistant message's `tool_calls`",
                        answers.map_or("missing".into(), |id| format!("{id:?}"))
                    ),
                )
                .with_param(format!("{param}.tool_call_id")));
            }
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
        // A tool's result: the model answers with it.
        Some(m) if m.role == Role::Tool => Ok(messages),
        Some(m) if m.role == Role::User && !m.content.trim().is_empty() => Ok(messages),
        Some(m) if m.role == Role::User => Err(ApiError::invalid(
            "the last message is empty; send some text",
        )
        .with_param(format!("messages[{}].content", messages.len() - 1))),
        _ => Err(ApiError::invalid(
            "the last message must be from the user or a tool (the reply is the assistant's turn)",
        )
        .with_param("messages")),
    }
}

/// An assistant message's `tool_calls`: each call's id, and the call as
/// the model writes one (see [`shape`]), for the prompt.
fn history_calls(value: &Value, param: &str) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param(param);
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "`{param}` is {}; send an array of calls",
            kind(value)
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let id = call.get("id").and_then(Value::as_str);
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function.and_then(|f| f.get("arguments"));
            match (id, name, arguments) {
                (Some(id), Some(name), Some(arguments)) => {
                    Ok((id.to_string(), shape::call_text(name, arguments)))
                }
                _ => Err(bad(format!(
                    "`{param}[{j}]` must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}"
                ))),
            }
        })
        .collect()
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
