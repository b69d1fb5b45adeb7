//! Chat sessions, the platform-neutral part: ids, request bodies, limits,
//! what a turn sends to the model and what it stores. The storage itself (a
//! SQLite-backed Durable Object per session) is the glue's.
//!
//! A turn is stored whole or not at all: the user's messages and the reply
//! are written together once the reply is complete, so an interrupted stream
//! or a crash leaves the history as it was before the turn.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::{
    message_content, no_unknown_fields, ChatCall, GenerationFields, Reply, StreamOptions,
};
use super::error::ApiError;
use super::limits::{MAX_CHAT_CHARS, MAX_SESSION_BYTES, MAX_SESSION_MESSAGES, MAX_SYSTEM_CHARS};
use super::parse::json_body;
use super::{HttpRequest, HttpResponse};
use crate::decoder::template::{Message, Role};
use crate::registry::{self, ModelSpec, Task};

/// Session ids are 128 random bits, as 32 lowercase hex digits.
pub const ID_HEX_DIGITS: usize = 32;

pub fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX_DIGITS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 404 for an id that is malformed or names no session: the same answer
/// either way, so probing reveals nothing.
pub fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(
        "session_not_found",
        format!(
            "session `{shown}` does not exist (or was deleted); create one with POST /v1/sessions"
        ),
    )
    .with_param("session")
}

/// What a session is, as stored (one row) and as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub id: String,
    pub created: u64,
    /// `id@version` of the model its turns use.
    pub model: String,
    pub system: Option<String>,
    pub defaults: GenerationFields,
    /// The sha256 of the API key that created it ([`super::auth::Caller::owner`]); only
    /// that key may read, continue or delete it. `None` when keys were off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl SessionMeta {
    /// The same 404 as for a session that does not exist when `caller` is not
    /// its owner: another key learns nothing, not even that the id is taken.
    pub fn check_owner(&self, caller: Option<&str>) -> Result<(), ApiError> {
        if self.owner.as_deref() == caller {
            Ok(())
        } else {
            Err(not_found(&self.id))
        }
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub role: String,
    pub content: String,
    pub created: u64,
    /// Replies only: `stop` or `length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    defaults: Option<Defaults>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// A session's sampling defaults, with unknown fields refused by name.
#[derive(Debug, Deserialize)]
struct Defaults {
    #[serde(flatten)]
    fields: GenerationFields,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// Room a turn needs besides the system prompt: `<|bos|>`, the system
/// message's role and end tokens, `<|assistant|>`, and a short user message
/// with its own two; a system prompt that leaves less is refused at creation
/// rather than at every turn.
const MIN_TURN_TOKENS: usize = 16;

/// The first text-generation model: the default of a session.
fn first_chat_model() -> Result<&'static ModelSpec, ApiError> {
    registry::MODELS
        .iter()
        .find(|m| m.task == Task::TextGeneration)
        .ok_or_else(|| ApiError::internal("no text-generation model is embedded"))
}

fn chat_spec(name: &str) -> Result<&'static ModelSpec, ApiError> {
    let spec = registry::find(name)?;
    if spec.task != Task::TextGeneration {
        return Err(ApiError::from(crate::CoreError::WrongTask {
            model: spec.id.to_string(),
            task: spec.task.as_str(),
            wanted: "text generation",
        }));
    }
    Ok(spec)
}

/// `POST /v1/sessions`: an optional body `{model, system, defaults}`.
/// `default_model`: the deployer's choice for sessions that name none
/// (`DEFAULT_CHAT_MODEL`), else the first text-generation model listed.
pub fn parse_create(
    req: &HttpRequest<'_>,
    id: &str,
    created: u64,
    owner: Option<&str>,
    default_model: Option<&str>,
) -> Result<SessionMeta, ApiError> {
    let body: CreateBody = if req.body.iter().all(u8::is_ascii_whitespace) && req.body_complete {
        CreateBody {
            model: None,
            system: None,
            defaults: None,
            unknown: BTreeMap::new(),
        }
    } else {
        json_body(req)?
    };
    no_unknown_fields(&body.unknown)?;
    let spec = match (&body.model, default_model) {
        (Some(name), _) => chat_spec(name)?,
        (None, Some(name)) => chat_spec(name).map_err(|e| {
            ApiError::internal(format!(
                "DEFAULT_CHAT_MODEL {name:?} is not a chat model of this worker: {}",
                String::from_utf8_lossy(&e.body())
            ))
        })?,
        (None, None) => first_chat_model()?,
    };
    let defaults = match body.defaults {
        Some(d) => {
            no_unknown_fields(&d.unknown).map_err(|e| {
                let param = e.param.clone().unwrap_or_default();
                e.with_param(format!("defaults.{param}"))
            })?;
            d.fields
        }
        None => GenerationFields::default(),
    };
    let options = defaults.options(0).map_err(|e| {
        let param = e.param.clone().unwrap_or_default();
        e.with_param(format!("defaults.{param}"))
    })?;
    if let Some(system) = &body.system {
        let chars = system.chars().count();
        if chars > MAX_SYSTEM_CHARS {
            return Err(ApiError::too_large(format!(
                "`system` has {chars} characters; the limit is {MAX_SYSTEM_CHARS}"
            ))
            .with_param("system"));
        }
        let (model, _) = registry::chat_model(spec)?;
        let tokens = model.encode(system)?.len();
        let budget = model.context().saturating_sub(options.max_tokens);
        if tokens + MIN_TURN_TOKENS > budget {
            return Err(ApiError::too_large(format!(
                "`system` is {tokens} tokens; with max_tokens {} the model's {}-token context leaves room for at most {} (and a short message)",
                options.max_tokens,
                model.context(),
                budget.saturating_sub(MIN_TURN_TOKENS)
            ))
            .with_param("system")
            .with_code("context_length_exceeded"));
        }
    }
    Ok(SessionMeta {
        id: id.to_string(),
        created,
        model: spec.qualified_name(),
        system: body.system.filter(|s| !s.is_empty()),
        defaults,
        owner: owner.map(str::to_string),
    })
}

/// A turn to take: new messages (at least the user's), and how to generate.
#[derive(Debug)]
pub struct TurnRequest {
    /// Messages to store before the reply (user, or user and assistant).
    pub new_messages: Vec<Message>,
    /// A system prompt for this turn only (from a chat completion request),
    /// replacing the session's.
    pub system_override: Option<String>,
    /// The model named by a chat completion request; else the session's.
    pub model: Option<&'static ModelSpec>,
    pub generation: GenerationFields,
    pub stream: bool,
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    content: Value,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    generation: GenerationFields,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// `POST /v1/sessions/{id}/messages`: `{content, stream, ...sampling}`.
pub fn parse_message(req: &HttpRequest<'_>) -> Result<TurnRequest, ApiError> {
    let body: MessageBody = json_body(req)?;
    no_unknown_fields(&body.unknown)?;
    let content = message_content(Some(&body.content), "content")?;
    if content.trim().is_empty() {
        return Err(ApiError::invalid("`content` is empty; send some text").with_param("content"));
    }
    let chars = content.chars().count();
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::too_large(format!(
            "`content` has {chars} characters; the limit is {MAX_CHAT_CHARS}"
        ))
        .with_param("content"));
    }
    body.generation.options(0)?;
    Ok(TurnRequest {
        new_messages: vec![Message {
            role: Role::User,
            content,
        }],
        system_override: None,
        model: None,
        generation: body.generation,
        stream: body.stream.unwrap_or(false),
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A chat completion naming a session: its system messages apply to this
/// turn only; the others are appended to the history.
pub fn turn_from_chat(call: ChatCall) -> TurnRequest {
    let (system, new_messages): (Vec<Message>, Vec<Message>) = call
        .messages
        .into_iter()
        .partition(|m| m.role == Role::System);
    let system_override = (!system.is_empty()).then(|| {
        system
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    });
    TurnRequest {
        new_messages,
        system_override,
        model: Some(call.spec),
        generation: call.generation,
        stream: call.stream,
        include_usage: call.include_usage,
    }
}

/// What the model gets for a turn, once the session's limits allow it.
#[derive(Debug)]
pub struct PreparedTurn {
    pub spec: &'static ModelSpec,
    pub conversation: Vec<Message>,
    pub generation: GenerationFields,
}

/// Checks the session's limits and assembles system prompt, history and the
/// new messages.
pub fn prepare_turn(
    meta: &SessionMeta,
    history: &[StoredMessage],
    turn: &TurnRequest,
) -> Result<PreparedTurn, ApiError> {
    let count = history.len() + turn.new_messages.len() + 1;
    if count > MAX_SESSION_MESSAGES {
        return Err(session_full(format!(
            "this turn would make {count} stored messages; a session holds at most {MAX_SESSION_MESSAGES}"
        )));
    }
    let bytes: usize = history.iter().map(|m| m.content.len()).sum::<usize>()
        + turn
            .new_messages
            .iter()
            .map(|m| m.content.len())
            .sum::<usize>();
    if bytes > MAX_SESSION_BYTES {
        return Err(session_full(format!(
            "the session holds {bytes} bytes of text with this turn; the limit is {MAX_SESSION_BYTES}"
        )));
    }
    let spec = match turn.model {
        Some(spec) => spec,
        None => chat_spec(&meta.model)
            .or_else(|_| chat_spec(meta.model.split('@').next().unwrap_or_default()))?,
    };
    let mut conversation = Vec::with_capacity(history.len() + turn.new_messages.len() + 1);
    if let Some(system) = turn.system_override.as_ref().or(meta.system.as_ref()) {
        conversation.push(Message {
            role: Role::System,
            content: system.clone(),
        });
    }
    for m in history {
        let role = Role::parse(&m.role)
            .ok_or_else(|| ApiError::internal(format!("stored role {:?}", m.role)))?;
        conversation.push(Message {
            role,
            content: m.content.clone(),
        });
    }
    conversation.extend(turn.new_messages.iter().cloned());
    Ok(PreparedTurn {
        spec,
        conversation,
        generation: turn.generation.or(&meta.defaults),
    })
}

fn session_full(message: String) -> ApiError {
    ApiError::too_large(format!(
        "{message}; start a new session (POST /v1/sessions) or delete this one"
    ))
    .with_code("session_full")
}

/// The rows a finished turn adds, in order.
pub fn turn_rows(turn: &TurnRequest, reply: &Reply, now: u64) -> Vec<StoredMessage> {
    let mut rows: Vec<StoredMessage> = turn
        .new_messages
        .iter()
        .map(|m| StoredMessage {
            role: m.role.as_str().to_string(),
            content: m.content.clone(),
            created: now,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
        })
        .collect();
    rows.push(StoredMessage {
        role: Role::Assistant.as_str().to_string(),
        content: reply.content.clone(),
        created: now,
        finish_reason: Some(reply.finish_reason.clone()),
        prompt_tokens: Some(reply.prompt_tokens as u64),
        completion_tokens: Some(reply.completion_tokens as u64),
    });
    rows
}

#[derive(Serialize)]
struct SessionView<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system: Option<&'a str>,
    defaults: &'a GenerationFields,
    messages: &'a [StoredMessage],
    bytes: usize,
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    max_messages: usize,
    max_bytes: usize,
}

/// The session and its history (`GET`, and `POST /v1/sessions` with 201).
pub fn view(status: u16, meta: &SessionMeta, messages: &[StoredMessage]) -> HttpResponse {
    HttpResponse::json(
        status,
        &SessionView {
            id: &meta.id,
            object: "chat.session",
            created: meta.created,
            model: &meta.model,
            system: meta.system.as_deref(),
            defaults: &meta.defaults,
            messages,
            bytes: messages.iter().map(|m| m.content.len()).sum(),
            limits: Limits {
                max_messages: MAX_SESSION_MESSAGES,
                max_bytes: MAX_SESSION_BYTES,
            },
        },
    )
}

/// `DELETE /v1/sessions/{id}`.
pub fn deleted(id: &str) -> HttpResponse {
    HttpResponse::json(
        200,
        &serde_json::json!({ "id": id, "object": "chat.session.deleted", "deleted": true }),
    )
}

/// A session id from a header or body that is not even well-formed.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(not_found(id))
    }
}
