//! Chat in the Workers runtime: replies streamed as server-sent events, the
//! passes of a sharded model run on its shard Workers, and the
//! `ChatSession` Durable Object, whose SQLite storage is one
//! [`SessionStore`] (and, under the Deno server, the host's KV another:
//! [`session_kv`]). What a turn is, which limits apply, what is stored
//! and when, are [`api::chat`] / [`api::sessions`] decisions; this file
//! only moves bytes, rows and tokens.

use std::sync::Arc;
use std::time::Duration;

use futures_util::lock::{Mutex, OwnedMutexGuard};
use futures_util::stream;
use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, Result,
    SqlStorage, SqlStorageValue, State,
};

use super::session_kv::{self, KvStore, SessionKv};
use super::shards::Chain;
use super::LogLine;
use crate::api::chat::{ChatCall, ChatTurn, RequestMeta, SSE_HEADERS};
use crate::api::sessions::{
    self, Session, SessionAnswer, SessionCall, SessionMeta, SessionOp, SessionStore, StoreError,
    StoredMessage,
};
use crate::api::trace::Trace;
use crate::api::{ApiError, Context, HttpResponse};

/// The Durable Object namespace binding of the sessions.
const SESSIONS_BINDING: &str = "SESSIONS";
/// Worker -> object, worker -> shards: W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The request's trace: the caller's `traceparent`, or a new one.
pub fn trace(traceparent: Option<&str>) -> Trace {
    let mut random = [0u8; 24];
    super::random(&mut random);
    Trace::continue_or_start(traceparent, random)
}

/// The shard passes a turn needs: none for a model this isolate runs; one
/// per shard Worker for a sharded one (a 503 if one is down), continuing
/// from the caches the shards kept of `owner`'s earlier turns.
async fn open_chain(
    env: &Env,
    trace: &Trace,
    turn: &mut ChatTurn,
    owner: Option<&str>,
) -> std::result::Result<Option<Chain>, ApiError> {
    let Some(shards) = turn.shards() else {
        return Ok(None);
    };
    let chain = Chain::open(
        env,
        turn.model_id(),
        shards,
        trace,
        turn.most_tokens(),
        turn.prompt(),
        owner.unwrap_or(""),
    )
    .await?;
    turn.set_cached_tokens(chain.cached());
    Ok(Some(chain))
}

/// Runs one model pass on the shards if the turn needs one next.
async fn run_pass(
    turn: &mut ChatTurn,
    chain: Option<&mut Chain>,
) -> std::result::Result<(), ApiError> {
    let (Some(chain), Some(feed)) = (chain, turn.wants()) else {
        return Ok(());
    };
    let started = super::clock();
    let (logits, hops) = chain.forward(&feed).await?;
    turn.supply(logits, super::clock() - started, &hops)
}

/// A session's storage and the lock that keeps its other turns waiting
/// until this one is stored (or has failed).
struct Held {
    store: ObjectStore,
    _turn: OwnedMutexGuard<()>,
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

/// Flushes `held`'s writes, if it has any, and answers `res` if they
/// are durable, the failure if not.
async fn flushed(held: Option<&mut Held>, res: HttpResponse) -> HttpResponse {
    match held {
        Some(held) if res.status < 300 => match held.store.flush().await {
            Ok(()) => res,
            Err(e) => HttpResponse::error(e),
        },
        _ => res,
    }
}

/// A turn's reply: streamed, or whole. The turn stores itself (in `held`'s
/// store, for a session) before its end goes out. `line` is written when
/// the reply is done, with the tokens it took.
async fn reply(
    env: &Env,
    trace: &Trace,
    mut turn: ChatTurn,
    owner: Option<&str>,
    mut held: Option<Held>,
    line: LogLine,
) -> Result<Response> {
    let chain = match open_chain(env, trace, &mut turn, owner).await {
        Ok(chain) => chain,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            return super::respond(&res, None);
        }
    };
    if turn.streams() {
        return stream_response(turn, held, chain, line);
    }
    let mut chain = chain;
    let res = complete(&mut turn, chain.as_mut(), held.as_mut()).await;
    let res = flushed(held.as_mut(), res).await;
    if let Some(chain) = chain {
        chain.close().await;
    }
    drop(held);
    line.write(
        res.status,
        res.model.as_deref(),
        res.internal_error.as_deref(),
    );
    super::respond(&res, None)
}

fn store_of(held: Option<&mut Held>) -> Option<&mut dyn SessionStore> {
    held.map(|h| h.store.store())
}

/// The whole reply of a turn that is not streamed.
async fn complete(
    turn: &mut ChatTurn,
    mut chain: Option<&mut Chain>,
    held: Option<&mut Held>,
) -> HttpResponse {
    if chain.is_some() {
        loop {
            if let Err(e) = run_pass(turn, chain.as_deref_mut()).await {
                return HttpResponse::error(e);
            }
            match turn.advance() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return HttpResponse::error(e),
            }
        }
    }
    turn.complete(store_of(held))
}

/// What a stream needs once the handler has returned.
struct Streaming {
    turn: ChatTurn,
    held: Option<Held>,
    /// The shard passes of a sharded model, disposed with the stream.
    chain: Option<Chain>,
    /// The first event (the role chunk) is out: model passes may start.
    started: bool,
    line: Option<LogLine>,
}

/// A reply as `text/event-stream`, one event per model pass. Each pass waits
/// for a zero timer first: that returns to the event loop, so the previous
/// event is on the wire before the next token is computed.
fn stream_response(
    turn: ChatTurn,
    held: Option<Held>,
    chain: Option<Chain>,
    line: LogLine,
) -> Result<Response> {
    let served = turn.served();
    let streaming = Streaming {
        turn,
        held,
        chain,
        started: false,
        line: Some(line),
    };
    let events = stream::unfold(streaming, |mut st| async move {
        worker::Delay::from(Duration::ZERO).await;
        if st.started {
            if let Err(e) = run_pass(&mut st.turn, st.chain.as_mut()).await {
                let event = st.turn.fail(e);
                return Some((Ok::<Vec<u8>, worker::Error>(event), st));
            }
        }
        st.started = true;
        let mut event = st.turn.next_event(store_of(st.held.as_mut()));
        // The turn was stored before its end: make that durable before the
        // end goes out, or end with the failure instead.
        if let (Some(_), Some(held)) = (&event, st.held.as_mut()) {
            if let Err(e) = held.store.flush().await {
                event = Some(st.turn.fail(e));
            }
        }
        match event {
            Some(event) => Some((Ok(event), st)),
            None => {
                st.held = None;
                if let Some(chain) = st.chain.take() {
                    chain.close().await;
                }
                if let Some(line) = st.line.take() {
                    line.write(200, Some(&st.turn.served()), None);
                }
                None
            }
        }
    });
    let headers = Headers::new();
    for (name, value) in SSE_HEADERS {
        headers.set(name, value)?;
    }
    super::set_served_headers(&headers, &served, None)?;
    Ok(Response::from_stream(events)?.with_headers(headers))
}

/// A chat completion without a session, served in this isolate.
pub async fn serve_chat(
    call: ChatCall,
    ctx: &Context<'_>,
    env: &Env,
    trace: &Trace,
    line: LogLine,
) -> Result<Response> {
    match ChatTurn::start(call.plan(), RequestMeta::draw(ctx)) {
        Ok(turn) => reply(env, trace, turn, ctx.owner, None, line).await,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, None);
            super::respond(&res, None)
        }
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
    headers.set(TRACEPARENT_HEADER, &trace.header())?;
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
    /// The schema, created when the object starts (a statement SQLite
    /// answers from its catalogue when the tables exist).
    fn open(sql: SqlStorage) -> std::result::Result<Self, StoreError> {
        sql.exec(
            "CREATE TABLE IF NOT EXISTS session (json TEXT NOT NULL)",
            None,
        )
        .map_err(failed)?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS message (seq INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL)",
            None,
        )
        .map_err(failed)?;
        Ok(SqlStore { sql })
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
        let json = serde_json::to_string(meta).map_err(failed)?;
        self.sql
            .exec(
                "INSERT INTO session (json) VALUES (?)",
                vec![SqlStorageValue::String(json)],
            )
            .map_err(failed)?;
        Ok(())
    }

    fn load(&self, _id: &str) -> std::result::Result<Option<Session>, StoreError> {
        let Some(meta) = self
            .rows::<SessionMeta>("SELECT json FROM session")?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let messages: Vec<StoredMessage> = self.rows("SELECT json FROM message ORDER BY seq")?;
        Ok(Some(Session { meta, messages }))
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
    /// The object's SQLite database. The schema is made when the object
    /// starts; a failure there is kept and answered (500) on every call
    /// rather than panicking.
    Sql(std::result::Result<SqlStore, String>),
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
    /// Held from the start of a turn until its reply is stored, so a second
    /// message waits and then sees the first turn in the history.
    turn_lock: Arc<Mutex<()>>,
}

impl DurableObject for ChatSession {
    fn new(state: State, env: Env) -> Self {
        let storage = match session_kv::binding(&env) {
            Some(kv) => Storage::Kv(kv),
            None => Storage::Sql(SqlStore::open(state.storage().sql()).map_err(|e| e.to_string())),
        };
        ChatSession {
            storage,
            state,
            env,
            turn_lock: Arc::new(Mutex::new(())),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let trace = trace(req.headers().get(TRACEPARENT_HEADER)?.as_deref());
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
        // A turn, and a delete, wait for a turn in progress: a second
        // message then sees the first in the history, and a session is not
        // erased while a reply is about to be stored in it. (A read needs
        // no lock: a turn is stored in one statement.)
        let guard = match call.op {
            SessionOp::Turn { .. } | SessionOp::Delete => {
                Some(self.turn_lock.clone().lock_owned().await)
            }
            SessionOp::Create { .. } | SessionOp::Get => None,
        };
        // Read under the lock: a turn that waited sees the one before it.
        let mut store = match &self.storage {
            Storage::Sql(Ok(store)) => ObjectStore::Sql(store.clone()),
            Storage::Sql(Err(e)) => return refuse(ApiError::internal(e.clone())),
            Storage::Kv(kv) => match KvStore::open(kv.clone(), &call.id).await {
                Ok(store) => ObjectStore::Kv(Box::new(store)),
                Err(e) => return refuse(e.into()),
            },
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
                    // so no deleted text lingers in free pages or the WAL.
                    // The empty schema is made again for the next call.
                    self.state.storage().delete_all().await?;
                    if let Err(e) = SqlStore::open(self.state.storage().sql()) {
                        return refuse(ApiError::internal(e.to_string()));
                    }
                }
                super::respond(&res, None)
            }
            Ok(SessionAnswer::Turn(turn)) => {
                let held = guard.map(|guard| Held {
                    store,
                    _turn: guard,
                });
                reply(&self.env, &trace, *turn, owner.as_deref(), held, line).await
            }
            Err(e) => refuse(e),
        }
    }
}
