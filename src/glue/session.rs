//! The `ChatSession` Durable Object: one per session, its history in the
//! object's SQLite storage ([`SqlStore`], one [`SessionStore`]; under the
//! Deno server the host's KV, [`super::session_kv`]), its turns one at a
//! time. What each session call does is [`sessions::serve`]'s; a turn's
//! reply goes out through [`super::chat`].

use std::sync::Arc;

use futures_util::lock::{Mutex, OwnedMutexGuard};
use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, Result,
    SqlStorage, SqlStorageValue, State,
};

use super::chat::{self, Keep};
use super::log::LogLine;
use super::session_kv::{self, KvStore, SessionKv};
use crate::api::chat::{Reply, RequestMeta, TurnSink};
use crate::api::sessions::{
    self, not_found, Record, Session, SessionAnswer, SessionCall, SessionMeta, SessionOp,
    SessionStore, SessionTurn, StoreError, StoredMessage,
};
use crate::api::trace::Trace;
use crate::api::{ApiError, HttpResponse};

/// The Durable Object namespace binding of the sessions.
const SESSIONS_BINDING: &str = "SESSIONS";

/// What a session's turn holds while its reply goes out: the session's
/// storage, what to store in it with the reply, and the lock that keeps
/// the session's other turns waiting until this one is over.
struct Held {
    store: ObjectStore,
    record: Record,
    /// Always held for a turn (see `ChatSession::fetch`).
    _turn: Option<OwnedMutexGuard<()>>,
}

/// Where an object keeps its session: its SQLite database (workerd), or
/// the host's KV (Deno), whose writes wait in memory until
/// [`ObjectStore::flush`].
enum ObjectStore {
    Sql(SqlStore),
    Kv(Box<KvStore>),
}

impl ObjectStore {
    fn store(&mut self) -> &mut dyn SessionStore {
        match self {
            ObjectStore::Sql(store) => store,
            ObjectStore::Kv(store) => &mut **store,
        }
    }

    /// Makes the writes so far durable: SQLite's already are.
    async fn flush(&mut self) -> std::result::Result<(), ApiError> {
        match self {
            ObjectStore::Sql(_) => Ok(()),
            ObjectStore::Kv(store) => store.flush().await,
        }
    }
}

impl TurnSink for Held {
    fn finished(&mut self, reply: &Reply) -> std::result::Result<(), ApiError> {
        self.record.sink(self.store.store()).finished(reply)
    }
}

impl Keep for Held {
    async fn flush(&mut self) -> std::result::Result<(), ApiError> {
        self.store.flush().await
    }
}

/// Hands a parsed session call to its session's object.
pub async fn forward(env: &Env, call: &SessionCall, trace: &Trace) -> Result<Response> {
    let Ok(namespace) = env.durable_object(SESSIONS_BINDING) else {
        return super::respond(
            &HttpResponse::error(ApiError::unavailable(
                "sessions need the SESSIONS Durable Object binding (see wrangler.toml)",
            )),
            None,
        );
    };
    let stub = namespace.id_from_name(&call.id)?.get_stub()?;
    let body = serde_json::to_vec(call).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(super::TRACEPARENT_HEADER, &trace.header())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    let inner = Request::new_with_init("https://session/call", &init)?;
    stub.fetch_with_request(inner).await
}

/// An error answered by the object (the worker passes it on as it is).
fn refuse(e: ApiError) -> Result<Response> {
    let res = HttpResponse::error(e);
    if let Some(detail) = &res.internal_error {
        worker::console_error!(
            "{}",
            serde_json::json!({ "session": "failed", "error": detail })
        );
    }
    super::respond(&res, None)
}

/// One session's rows in its object's SQLite database.
#[derive(Clone)]
struct SqlStore {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct JsonRow {
    json: String,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl SqlStore {
    /// The schema is made by the session's creation, not when the object
    /// starts: an object asked about a session that was never created (a
    /// probe of a well-formed id) answers from an empty database and
    /// writes nothing.
    fn create_schema(&self) -> std::result::Result<(), StoreError> {
        self.sql
            .exec(
                "CREATE TABLE IF NOT EXISTS session (json TEXT NOT NULL)",
                None,
            )
            .map_err(failed)?;
        self.sql
            .exec(
                "CREATE TABLE IF NOT EXISTS message (seq INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL)",
                None,
            )
            .map_err(failed)?;
        Ok(())
    }

    /// Whether this object's session was ever created (and not deleted:
    /// a delete wipes the database, schema included).
    fn exists(&self) -> std::result::Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Name {
            #[allow(dead_code)]
            name: String,
        }
        let tables: Vec<Name> = self
            .sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'session'",
                None,
            )
            .map_err(failed)?
            .to_array()
            .map_err(failed)?;
        Ok(!tables.is_empty())
    }

    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
    ) -> std::result::Result<Vec<T>, StoreError> {
        let rows: Vec<JsonRow> = self
            .sql
            .exec(query, None)
            .map_err(failed)?
            .to_array()
            .map_err(failed)?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.json).map_err(failed))
            .collect()
    }
}

/// The object holds one session: `id` is checked by the object's name.
impl SessionStore for SqlStore {
    fn create(&mut self, meta: &SessionMeta) -> std::result::Result<(), StoreError> {
        self.create_schema()?;
        let json = serde_json::to_string(meta).map_err(failed)?;
        self.sql
            .exec(
                "INSERT INTO session (json) VALUES (?)",
                vec![SqlStorageValue::String(json)],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn load(&self, id: &str) -> std::result::Result<Option<Session>, StoreError> {
        let Some(meta) = self.meta(id)? else {
            return Ok(None);
        };
        let messages: Vec<StoredMessage> = self.rows("SELECT json FROM message ORDER BY seq")?;
        Ok(Some(Session { meta, messages }))
    }

    fn meta(&self, _id: &str) -> std::result::Result<Option<SessionMeta>, StoreError> {
        if !self.exists()? {
            return Ok(None);
        }
        Ok(self
            .rows::<SessionMeta>("SELECT json FROM session")?
            .into_iter()
            .next())
    }

    /// One statement: SQLite applies it whole or not at all, so a turn is
    /// never half stored.
    fn append(&mut self, _id: &str, rows: &[StoredMessage]) -> std::result::Result<(), StoreError> {
        let values = rows
            .iter()
            .map(|row| serde_json::to_string(row).map(SqlStorageValue::String))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(failed)?;
        let placeholders = vec!["(?)"; values.len()].join(", ");
        self.sql
            .exec(
                &format!("INSERT INTO message (json) VALUES {placeholders}"),
                values,
            )
            .map_err(failed)?;
        Ok(())
    }

    /// The rows only; the object then wipes its whole storage (see
    /// `ChatSession::fetch`).
    fn delete(&mut self, _id: &str) -> std::result::Result<(), StoreError> {
        self.sql.exec("DELETE FROM message", None).map_err(failed)?;
        self.sql.exec("DELETE FROM session", None).map_err(failed)?;
        Ok(())
    }
}

/// Where an object's session lives, as found when it starts.
enum Storage {
    /// The object's SQLite database (its schema made by the session's
    /// creation, see [`SqlStore::create_schema`]).
    Sql(SqlStore),
    /// The host's KV (the Deno server binds `SESSION_KV`; its objects have
    /// no SQLite storage).
    Kv(SessionKv),
}

/// One chat session: its history in this object's storage (SQLite, or the
/// host's KV), its turns one at a time.
#[durable_object]
pub struct ChatSession {
    state: State,
    storage: Storage,
    /// The worker's bindings: a sharded model's shard Workers.
    env: Env,
    /// Held from the start of a turn until its reply is over (stored, and
    /// its shard passes closed), so a second message waits and then sees
    /// the first turn in the history, and the caches the shards kept of it.
    turn_lock: Arc<Mutex<()>>,
}

impl ChatSession {
    /// This object's session storage, as read now.
    async fn store(&self, id: &str) -> std::result::Result<ObjectStore, ApiError> {
        match &self.storage {
            Storage::Sql(store) => Ok(ObjectStore::Sql(store.clone())),
            Storage::Kv(kv) => KvStore::open(kv.clone(), id)
                .await
                .map(|store| ObjectStore::Kv(Box::new(store)))
                .map_err(ApiError::from),
        }
    }
}

impl DurableObject for ChatSession {
    fn new(state: State, env: Env) -> Self {
        let storage = match session_kv::binding(&env) {
            Some(kv) => Storage::Kv(kv),
            None => Storage::Sql(SqlStore {
                sql: state.storage().sql(),
            }),
        };
        ChatSession {
            storage,
            state,
            env,
            turn_lock: Arc::new(Mutex::new(())),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let trace = super::trace(req.headers().get(super::TRACEPARENT_HEADER)?.as_deref());
        // Read as bytes and parsed by serde_json: `Request::json` goes
        // through JavaScript numbers, which round a 64-bit seed.
        let bytes = req.bytes().await?;
        let call: SessionCall = match serde_json::from_slice(&bytes) {
            Ok(call) => call,
            Err(e) => {
                return refuse(ApiError::internal(format!(
                    "the session object got a call it cannot read: {e}"
                )))
            }
        };
        // Who may touch the session is settled first, before anything
        // waits: a call on a session that does not exist, or that another
        // key owns, is the same 404 at once. It must not wait for a turn in
        // progress (that would tell another key the session exists and is
        // busy), nor make storage for an id never created.
        // A stored response's first turn (`Prepared`) creates its session
        // when its reply is complete: there is nothing to own yet, and its
        // id is fresh (one already stored is refused, `id_taken`).
        if !matches!(
            call.op,
            SessionOp::Create { .. } | SessionOp::Prepared { .. }
        ) {
            let mut store = match self.store(&call.id).await {
                Ok(store) => store,
                Err(e) => return refuse(e),
            };
            match store.store().meta(&call.id) {
                Ok(Some(meta)) if meta.owner == call.owner => {}
                Ok(_) => return refuse(not_found(&call.id)),
                Err(e) => return refuse(e.into()),
            }
        }
        // A turn, and a delete, wait for a turn in progress: a second
        // message then sees the first in the history, and a session is not
        // erased while a reply is about to be stored in it. (A read needs
        // no lock: a turn is stored in one statement.)
        let guard = match call.op {
            SessionOp::Turn { .. } | SessionOp::Delete | SessionOp::Prepared { .. } => {
                Some(self.turn_lock.clone().lock_owned().await)
            }
            SessionOp::Create { .. } | SessionOp::Get | SessionOp::Export => None,
        };
        // Read under the lock: a turn that waited sees the one before it.
        let mut store = match self.store(&call.id).await {
            Ok(store) => store,
            Err(e) => return refuse(e),
        };
        let owner = call.owner.clone();
        let line = LogLine::turn(&call.id);
        let deleting = matches!(call.op, SessionOp::Delete);
        match sessions::serve(call, store.store(), RequestMeta::draw(&super::context())) {
            Ok(SessionAnswer::Done(res)) => {
                let res = match store.flush().await {
                    Ok(()) => res,
                    Err(e) => return refuse(e),
                };
                if deleting && res.status == 200 && matches!(store, ObjectStore::Sql(_)) {
                    // The rows are gone; this also wipes the database files,
                    // schema included, so no deleted text lingers in free
                    // pages or the WAL: the object is as if never created.
                    self.state.storage().delete_all().await?;
                }
                super::respond(&res, None)
            }
            Ok(SessionAnswer::Turn(turn)) => {
                let SessionTurn { turn, wire, record } = *turn;
                let held = Held {
                    store,
                    record,
                    _turn: guard,
                };
                chat::reply(&self.env, &trace, turn, wire, owner.as_deref(), held, line).await
            }
            Err(e) => refuse(e),
        }
    }
}
