//! A session's part in a turn: the turn's new messages, stored with the
//! reply by the turn's sink once the reply is complete and before the
//! client sees its end. Chat defines the sink ([`TurnSink`]); this is the
//! one sessions give it, so chat needs to know nothing of sessions.

use super::{SessionMeta, SessionStore, StoredMessage};
use crate::api::chat::{Reply, TurnSink};
use crate::api::error::ApiError;
use crate::decoder::template::{Message, Role};

/// A session turn's messages, kept until its reply is complete.
#[derive(Debug, Clone)]
pub struct Record {
    pub session: String,
    pub messages: Vec<Message>,
    /// When the turn was asked (Unix seconds): every stored row's time.
    pub created: u64,
    /// The session this turn creates (a stored response), if it does.
    pub creates: Option<Box<Creation>>,
}

/// A session made by its first turn: created once the reply is complete,
/// with its history before the turn's rows and `state` after the reply.
#[derive(Debug, Clone)]
pub struct Creation {
    pub meta: SessionMeta,
    pub history: Vec<StoredMessage>,
    /// The caller's own record of the turn (a stored response's fields), as
    /// the last row's content, role [`STATE_ROLE`].
    pub state: serde_json::Value,
}

/// The role of a [`Creation`]'s last row: never a message the model sees.
pub const STATE_ROLE: &str = "state";

impl Record {
    /// The sink that stores this turn in `store`.
    pub fn sink<'a>(&'a self, store: &'a mut dyn SessionStore) -> SessionSink<'a> {
        SessionSink {
            record: self,
            store,
        }
    }
}

/// Stores a session's turn: its messages, then the reply, in one append
/// (whole or not at all).
pub struct SessionSink<'a> {
    record: &'a Record,
    store: &'a mut dyn SessionStore,
}

impl TurnSink for SessionSink<'_> {
    fn finished(&mut self, reply: &Reply) -> Result<(), ApiError> {
        let now = self.record.created;
        let mut rows = turn_rows(&self.record.messages, reply, now);
        if let Some(creation) = &self.record.creates {
            self.store.create(&creation.meta)?;
            rows.splice(0..0, creation.history.iter().cloned());
            rows.push(StoredMessage {
                role: STATE_ROLE.into(),
                content: creation.state.to_string(),
                created: now,
                finish_reason: None,
                prompt_tokens: None,
                completion_tokens: None,
            });
        }
        self.store
            .append(&self.record.session, &rows)
            .map_err(ApiError::from)
    }
}

/// The rows a finished turn adds, in order: its messages, then the reply.
fn turn_rows(messages: &[Message], reply: &Reply, now: u64) -> Vec<StoredMessage> {
    let mut rows: Vec<StoredMessage> = messages
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
