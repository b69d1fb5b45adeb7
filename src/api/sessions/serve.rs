//! What each session route does to a [`SessionStore`]. The worker's front
//! isolate parses the request, then sends the session's Durable Object a
//! [`SessionCall`]: the parsed operation, not the client's bytes, so the
//! object never parses or validates a request again.

use serde::{Deserialize, Serialize};

use super::record::Creation;
use super::{
    deleted, not_found, view, Record, Session, SessionMeta, SessionStore, StoredMessage,
    TurnRequest,
};
use crate::api::chat::{ChatTurn, RequestMeta, TurnPlan, Wire};
use crate::api::error::ApiError;
use crate::api::limits::{MAX_SESSION_BYTES, MAX_SESSION_MESSAGES};
use crate::api::HttpResponse;
use crate::decoder::template::{Message, Role};
use crate::registry::{self, ModelSpec};

/// One operation on one session, by one caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCall {
    pub id: String,
    /// The caller's key digest, when API keys are on.
    pub owner: Option<String>,
    pub op: SessionOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SessionOp {
    /// `POST /v1/sessions`, checked and given its id, time and owner.
    Create { meta: SessionMeta },
    /// `GET /v1/sessions/{id}`.
    Get,
    /// `DELETE /v1/sessions/{id}`.
    Delete,
    /// `POST /v1/sessions/{id}/messages`, or a chat completion naming it.
    Turn { turn: TurnRequest },
    /// The session as stored (its meta and every row), for a host that
    /// builds on it elsewhere (a response continued by
    /// `previous_response_id`).
    Export,
    /// A session made by its first turn (a stored response): `turn` is
    /// planned whole by the caller; when its reply is complete, the session
    /// is created with `history`, the turn's new messages, the reply and a
    /// last row holding `state` (the caller's, opaque here), all at once.
    Prepared {
        meta: SessionMeta,
        history: Vec<StoredMessage>,
        /// Boxed: the largest part, and the other operations are small.
        turn: Box<PreparedTurn>,
        state: serde_json::Value,
    },
}

/// A turn planned by its caller: the conversation the model sees, what to
/// store of it, and how the reply goes out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedTurn {
    /// The model's `id@version`.
    pub model: String,
    /// Everything the model sees (instructions and history included).
    pub messages: Vec<Message>,
    /// What the turn adds to the stored conversation (before the reply).
    pub new_messages: Vec<Message>,
    pub generation: crate::api::chat::GenerationFields,
    pub grammar: Option<crate::decoder::constraint::Grammar>,
    pub wire: Wire,
}

impl PreparedTurn {
    /// The turn's plan and wire.
    pub fn plan(&self) -> Result<(TurnPlan, Wire), ApiError> {
        let plan = TurnPlan {
            spec: session_model(&self.model)?,
            messages: self.messages.clone(),
            generation: self.generation.clone(),
            grammar: self.grammar.clone(),
        };
        Ok((plan, self.wire.clone()))
    }
}

/// What a session operation comes to: an answer, or a reply to generate.
pub enum SessionAnswer {
    Done(HttpResponse),
    Turn(Box<SessionTurn>),
}

/// A session's turn, ready to run: the reply, how it goes out, and what
/// to store with it (the host polls `turn` with `record.sink(store)`, so
/// the turn is stored before the reply's end goes out).
pub struct SessionTurn {
    pub turn: ChatTurn,
    pub wire: Wire,
    pub record: Record,
}

/// Carries out `call` on `store`. `meta` is the reply's id, time and seed,
/// for a turn. A session another key owns is answered like one that does
/// not exist.
pub fn serve(
    call: SessionCall,
    store: &mut dyn SessionStore,
    meta: RequestMeta,
) -> Result<SessionAnswer, ApiError> {
    let SessionCall { id, owner, op } = call;
    let owned = |store: &dyn SessionStore| -> Result<Session, ApiError> {
        let session = store.load(&id)?.ok_or_else(|| not_found(&id))?;
        session.meta.check_owner(owner.as_deref())?;
        Ok(session)
    };
    let answer = match op {
        SessionOp::Create { meta } => {
            store.create(&meta)?;
            let session = Session {
                meta,
                messages: Vec::new(),
            };
            view(201, &session)
        }
        SessionOp::Get => view(200, &owned(store)?),
        SessionOp::Delete => {
            owned(store)?;
            store.delete(&id)?;
            deleted(&id)
        }
        SessionOp::Turn { turn } => {
            let session = owned(store)?;
            let created = meta.created;
            let (plan, wire, messages) = plan_turn(&session, turn)?;
            return Ok(SessionAnswer::Turn(Box::new(SessionTurn {
                turn: ChatTurn::start(plan, meta)?,
                wire,
                record: Record {
                    session: session.meta.id,
                    messages,
                    created,
                    creates: None,
                },
            })));
        }
        SessionOp::Export => {
            let session = owned(store)?;
            HttpResponse::json(200, &session)
        }
        SessionOp::Prepared {
            meta: session,
            history,
            turn,
            state,
        } => {
            if store.load(&id)?.is_some() {
                return Err(ApiError::conflict(
                    "id_taken",
                    format!("`{id}` is already stored; nothing was changed"),
                ));
            }
            // The reply is the response: its id and time.
            let meta = RequestMeta {
                id: id.clone(),
                created: session.created,
                ..meta
            };
            let created = meta.created;
            let (plan, wire) = turn.plan()?;
            return Ok(SessionAnswer::Turn(Box::new(SessionTurn {
                turn: ChatTurn::start(plan, meta)?,
                wire,
                record: Record {
                    session: id,
                    messages: turn.new_messages,
                    created,
                    creates: Some(Box::new(Creation {
                        meta: session,
                        history,
                        state,
                    })),
                },
            })));
        }
    };
    Ok(SessionAnswer::Done(answer))
}

/// Checks the session's limits and assembles system prompt, history and the
/// new messages; with how the reply goes out, and the messages to store.
fn plan_turn(
    session: &Session,
    turn: TurnRequest,
) -> Result<(TurnPlan, Wire, Vec<Message>), ApiError> {
    let Session {
        meta,
        messages: history,
    } = session;
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
        None => session_model(&meta.model)?,
    };
    let mut conversation = Vec::with_capacity(history.len() + turn.new_messages.len() + 1);
    if let Some(system) = turn.system_override.as_ref().or(meta.system.as_ref()) {
        conversation.push(Message {
            role: Role::System,
            content: system.clone(),
        });
    }
    for m in history {
        conversation.push(m.message()?);
    }
    conversation.extend(turn.new_messages.iter().cloned());
    let plan = TurnPlan {
        spec,
        messages: conversation,
        generation: turn.generation.or(&meta.defaults),
        grammar: None,
    };
    let wire = Wire::chat(turn.stream, turn.include_usage, Some(meta.id.clone()));
    Ok((plan, wire, turn.new_messages))
}

/// The session's model: its `id@version`, else (after an upgrade replaced
/// that version) the same id's current one.
pub fn session_model(name: &str) -> Result<&'static ModelSpec, ApiError> {
    registry::chat_spec(name)
        .or_else(|_| registry::chat_spec(name.split('@').next().unwrap_or_default()))
        .map_err(ApiError::from)
}

fn session_full(message: String) -> ApiError {
    ApiError::too_large(format!(
        "{message}; start a new session (POST /v1/sessions) or delete this one"
    ))
    .with_code("session_full")
}
