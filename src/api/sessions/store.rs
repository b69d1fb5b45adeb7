//! Where sessions are kept: a small trait the session logic is written
//! against, so it runs the same over the `ChatSession` Durable Object's
//! SQLite storage in the worker, over [`MemoryStore`] natively (the CLI,
//! the tests, the fuzzers), and over [`Staged`] where the storage only
//! answers asynchronously (Deno KV): the session is read before the call
//! and the call's writes are committed after it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{SessionMeta, StoredMessage};
use crate::api::error::ApiError;

/// A session as stored: what it is and its history, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub meta: SessionMeta,
    pub messages: Vec<StoredMessage>,
}

/// The storage failed (not the client's doing): a 500, details logged.
#[derive(Debug, Error)]
#[error("session storage failed: {0}")]
pub struct StoreError(pub String);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// A store of sessions by id. Turns of one session never overlap: the host
/// serializes them (the Durable Object holds a lock; the native store a
/// `&mut`), so none of these needs to be atomic with another.
pub trait SessionStore {
    /// Stores a new session with no messages.
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError>;
    /// The session `id`, if it exists.
    fn load(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Only what the session is (who owns it), without its history: what
    /// is checked before a call may wait for the session's turn lock.
    fn meta(&self, id: &str) -> Result<Option<SessionMeta>, StoreError> {
        Ok(self.load(id)?.map(|s| s.meta))
    }
    /// Adds a finished turn's rows, all of them or none.
    fn append(&mut self, id: &str, rows: &[StoredMessage]) -> Result<(), StoreError>;
    /// Erases the session and its history.
    fn delete(&mut self, id: &str) -> Result<(), StoreError>;
}

/// Sessions in memory, serializable whole (the CLI keeps a conversation in
/// a JSON file). Holds at most [`MemoryStore::CAPACITY`] sessions: creating
/// one more drops the oldest, so a long-lived process cannot grow without
/// bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStore {
    sessions: BTreeMap<String, Session>,
}

impl MemoryStore {
    pub const CAPACITY: usize = 1024;

    pub const fn new() -> Self {
        MemoryStore {
            sessions: BTreeMap::new(),
        }
    }

    /// The sessions held, by id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.sessions.keys().map(String::as_str)
    }
}

impl SessionStore for MemoryStore {
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError> {
        if self.sessions.contains_key(&meta.id) {
            return Err(StoreError(format!("session {} exists already", meta.id)));
        }
        if self.sessions.len() >= Self::CAPACITY {
            let oldest = self
                .sessions
                .values()
                .min_by_key(|s| s.meta.created)
                .map(|s| s.meta.id.clone());
            if let Some(id) = oldest {
                self.sessions.remove(&id);
            }
        }
        self.sessions.insert(
            meta.id.clone(),
            Session {
                meta: meta.clone(),
                messages: Vec::new(),
            },
        );
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions.get(id).cloned())
    }

    fn append(&mut self, id: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        let session = self
            .sessions
            .get_mut(id)
            .ok_or_else(|| StoreError(format!("session {id} is gone")))?;
        session.messages.extend_from_slice(rows);
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.sessions.remove(id);
        Ok(())
    }
}

/// A [`MemoryStore`] threads share (what [`crate::api::handle`] keeps for
/// its process): each operation holds the lock for itself only, so calls
/// that touch no session never wait. Two turns of one session at once are
/// each stored whole, in the order they finish.
pub struct Shared<'a>(pub &'a Mutex<MemoryStore>);

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, MemoryStore> {
        // A panic elsewhere leaves the sessions as they were: each change
        // is one insert or extend.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SessionStore for Shared<'_> {
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError> {
        self.lock().create(meta)
    }

    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.lock().load(id)
    }

    fn append(&mut self, id: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        self.lock().append(id, rows)
    }

    fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.lock().delete(id)
    }
}

/// One session read before a call, and the writes the call made to it, in
/// order: for a host whose storage is asynchronous (Deno KV), which the
/// synchronous [`SessionStore`] cannot await. The host loads the session,
/// runs the call over this, then commits [`Staged::take_writes`] in one
/// atomic write per entry, checked against the version it read; a write
/// that fails there is answered as a store failure, as a failed SQLite
/// statement is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Staged {
    id: String,
    session: Option<Session>,
    writes: Vec<Write>,
}

/// A change to one session, as [`Staged`] records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Write {
    Create {
        meta: Box<SessionMeta>,
    },
    /// One turn's rows: stored together or not at all.
    Append {
        rows: Vec<StoredMessage>,
    },
    Delete,
}

impl Staged {
    /// Session `id` as the host read it (`None`: there is none).
    pub fn new(id: &str, session: Option<Session>) -> Self {
        Staged {
            id: id.to_string(),
            session,
            writes: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The writes made since the last call, oldest first.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    fn check(&self, id: &str) -> Result<(), StoreError> {
        if id == self.id {
            Ok(())
        } else {
            Err(StoreError(format!(
                "this store holds session {}, not {id}",
                self.id
            )))
        }
    }
}

impl SessionStore for Staged {
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError> {
        self.check(&meta.id)?;
        if self.session.is_some() {
            return Err(StoreError(format!("session {} exists already", meta.id)));
        }
        self.session = Some(Session {
            meta: meta.clone(),
            messages: Vec::new(),
        });
        self.writes.push(Write::Create {
            meta: Box::new(meta.clone()),
        });
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.check(id)?;
        Ok(self.session.clone())
    }

    fn append(&mut self, id: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        self.check(id)?;
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| StoreError(format!("session {id} is gone")))?;
        session.messages.extend_from_slice(rows);
        self.writes.push(Write::Append {
            rows: rows.to_vec(),
        });
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.check(id)?;
        if self.session.take().is_some() {
            self.writes.push(Write::Delete);
        }
        Ok(())
    }
}
