//! Chat sessions: ids, what is stored, the request bodies of the session
//! routes ([`parse`]), and what each route does to a store ([`serve`]),
//! written against [`SessionStore`] so the worker (a SQLite-backed Durable
//! Object per session) and native hosts ([`MemoryStore`]) run the same logic.
//!
//! A turn is stored whole or not at all: the user's messages and the reply
//! are written together once the reply is complete, by the turn's sink
//! ([`SessionSink`], a [`super::chat::TurnSink`]) before the client sees the
//! reply's end: a crash, or a client hanging up before the reply is
//! complete, leaves the history as it was before the turn, never part of it.

mod parse;
mod record;
mod serve;
mod store;

pub use parse::{parse_create, parse_message, turn_from_chat, NewSession, TurnRequest};
pub use record::{Creation, Record, SessionSink, STATE_ROLE};
pub use serve::{serve, PreparedTurn, SessionAnswer, SessionCall, SessionOp, SessionTurn};
pub use store::{MemoryStore, Session, SessionStore, Shared, Staged, StoreError, Write};

use serde::{Deserialize, Serialize};

use super::chat::GenerationFields;
use super::error::ApiError;
use super::limits::{MAX_SESSION_BYTES, MAX_SESSION_MESSAGES};
use super::{hex, Context, HttpResponse};
use crate::decoder::template::{Message, Role};

/// Session ids are 128 random bits, as 32 lowercase hex digits.
pub const ID_HEX_DIGITS: usize = 32;

pub fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX_DIGITS
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new session id from the host's randomness.
pub fn new_id(ctx: &Context<'_>) -> String {
    let mut bytes = [0u8; ID_HEX_DIGITS / 2];
    (ctx.random)(&mut bytes);
    hex(&bytes)
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

/// A session id from a path, header or body that is not even well-formed.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(not_found(id))
    }
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

impl StoredMessage {
    /// The message a prompt is rendered from; a role this build does not
    /// know is the store's fault (only known roles are written), not the
    /// caller's.
    pub fn message(&self) -> Result<Message, ApiError> {
        let role = Role::parse(&self.role)
            .ok_or_else(|| ApiError::internal(format!("stored role {:?}", self.role)))?;
        Ok(Message {
            role,
            content: self.content.clone(),
        })
    }
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
fn view(status: u16, session: &Session) -> HttpResponse {
    let Session { meta, messages } = session;
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
fn deleted(id: &str) -> HttpResponse {
    HttpResponse::json(
        200,
        &serde_json::json!({ "id": id, "object": "chat.session.deleted", "deleted": true }),
    )
}
