//! Chat routes in the Workers runtime: replies streamed as server-sent
//! events, and the `ChatSession` Durable Object that keeps a session's
//! history in its SQLite storage. What a turn is, which limits apply and what
//! is stored are [`api::chat`] / [`api::sessions`] decisions; this file only
//! moves bytes, rows and tokens.

use std::sync::Arc;
use std::time::Duration;

use futures_util::lock::{Mutex, OwnedMutexGuard};
use futures_util::stream;
use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, Request, RequestInit, Response, Result,
    SqlStorage, SqlStorageValue, State,
};

use super::shards::Chain;
use crate::api::chat::{self, ChatTurn, RequestMeta, SSE_HEADERS};
use crate::api::sessions::{self, SessionMeta, StoredMessage, TurnRequest};
use crate::api::trace::Trace;
use crate::api::{hex, ApiError, HttpRequest, HttpResponse, Route};
use crate::registry::{InputSpec, ModelSpec};

/// The Durable Object namespace binding of the sessions.
const SESSIONS_BINDING: &str = "SESSIONS";
/// The header naming a session, as an alternative to the `session` field.
pub const SESSION_HEADER: &str = "x-session-id";
/// Worker -> object: the id of a session being created.
const NEW_SESSION_HEADER: &str = "x-edgeinfer-new-session";
/// Worker -> object, worker -> shards: W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Worker -> object: the caller's key digest, when API keys are on. Only the
/// worker reaches the objects, and it builds their requests from scratch, so
/// a client cannot set this header itself.
const OWNER_HEADER: &str = "x-edgeinfer-owner";

fn now_seconds() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // crypto.getRandomValues; cannot fail in workerd.
    getrandom03::fill(&mut bytes).expect("crypto.getRandomValues is available");
    bytes
}

/// An id, a timestamp and a seed for one reply.
fn request_meta() -> RequestMeta {
    RequestMeta {
        id: format!("chatcmpl-{}", hex(&random_bytes::<12>())),
        created: now_seconds(),
        seed: u64::from_le_bytes(random_bytes::<8>()),
        clock: super::clock,
    }
}

pub fn json_response(res: HttpResponse) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(served) = &res.model {
        super::set_served_headers(&headers, served, None)?;
    }
    for (name, value) in &res.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(res.body)?
        .with_status(res.status)
        .with_headers(headers))
}

fn error_response(e: ApiError) -> Result<Response> {
    json_response(HttpResponse::error(e))
}

/// The request's trace: the caller's `traceparent`, or a new one.
pub fn trace(traceparent: Option<&str>) -> Trace {
    Trace::continue_or_start(traceparent, random_bytes::<24>())
}

/// The shard passes a turn of `spec` needs: none for a model this isolate
/// runs; one per shard Worker for a sharded one (a 503 if one is down),
/// continuing from the caches the shards kept of `owner`'s earlier turns.
async fn open_chain(
    env: &Env,
    spec: &'static ModelSpec,
    trace: &Trace,
    turn: &mut ChatTurn,
    owner: Option<&str>,
) -> std::result::Result<Option<Chain>, ApiError> {
    let InputSpec::ShardedChat { shards, .. } = spec.input else {
        return Ok(None);
    };
    let chain = Chain::open(
        env,
        spec.id,
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

/// The whole reply of a turn that is not streamed.
async fn complete(turn: &mut ChatTurn, mut chain: Option<&mut Chain>) -> HttpResponse {
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
    turn.complete()
}

/// What a stream needs once the handler has returned: the reply in progress
/// and, for a session, where to store the finished turn and the lock that
/// keeps the session's other turns waiting until then.
struct Streaming {
    turn: ChatTurn,
    store: Option<(SqlStorage, TurnRequest, OwnedMutexGuard<()>)>,
    /// The shard passes of a sharded model, disposed with the stream.
    chain: Option<Chain>,
    /// The first event (the role chunk) is out: model passes may start.
    started: bool,
}

/// A reply as `text/event-stream`, one event per model pass. Each pass waits
/// for a zero timer first: that returns to the event loop, so the previous
/// event is on the wire before the next token is computed.
fn stream_response(
    turn: ChatTurn,
    store: Option<(SqlStorage, TurnRequest, OwnedMutexGuard<()>)>,
    chain: Option<Chain>,
) -> Result<Response> {
    let served = turn.served();
    let streaming = Streaming {
        turn,
        store,
        chain,
        started: false,
    };
    let events = stream::unfold(streaming, |mut st| async move {
        worker::Delay::from(Duration::ZERO).await;
        if st.started {
            if let Err(e) = run_pass(&mut st.turn, st.chain.as_mut()).await {
                // The session keeps its history: this turn is not stored.
                st.store = None;
                let event = st.turn.fail(e);
                return Some((Ok::<Vec<u8>, worker::Error>(event), st));
            }
        }
        st.started = true;
        let Some(event) = st.turn.next_event() else {
            if let Some(chain) = st.chain.take() {
                chain.close().await;
            }
            return None;
        };
        if let (Some(reply), Some(_)) = (st.turn.reply(), &st.store) {
            // Complete: store the turn before the client sees its end.
            if let Some((sql, turn, guard)) = st.store.take() {
                if let Err(e) = append_turn(&sql, &turn, &reply) {
                    worker::console_error!(
                        "{}",
                        serde_json::json!({ "session": "store failed", "error": e.to_string() })
                    );
                    let error = ApiError::internal(e.to_string());
                    let mut body = b"data: ".to_vec();
                    body.extend(error.body());
                    body.extend(b"\n\n");
                    drop(guard);
                    return Some((Ok::<Vec<u8>, worker::Error>(body), st));
                }
                drop(guard);
            }
        }
        Some((Ok(event), st))
    });
    let headers = Headers::new();
    for (name, value) in SSE_HEADERS {
        headers.set(name, value)?;
    }
    super::set_served_headers(&headers, &served, None)?;
    Ok(Response::from_stream(events)?.with_headers(headers))
}

/// Serves the chat routes in the worker: session-less completions here,
/// everything that touches a session in that session's object.
pub async fn serve(
    route: Route<'_>,
    req: &HttpRequest<'_>,
    session_header: Option<&str>,
    owner: Option<&str>,
    env: &Env,
    trace: &Trace,
) -> Result<Response> {
    if let Err(res) = route.check_method(req.method, req.path) {
        return json_response(res);
    }
    // The object gets the body as read: a truncated one must not reach it.
    if let Err(e) = crate::api::body_within_limit(req) {
        return error_response(e);
    }
    match route {
        Route::ChatCompletions => {
            let call = match chat::parse(req, session_header) {
                Ok(call) => call,
                Err(e) => return error_response(e),
            };
            if let Some(id) = call.session.clone() {
                if let Err(e) = sessions::check_id(&id) {
                    return error_response(e);
                }
                return forward(env, &id, req, None, owner, trace).await;
            }
            let mut turn = match ChatTurn::start(
                call.spec,
                &call.messages,
                &call.generation,
                call.include_usage,
                None,
                request_meta(),
            ) {
                Ok(turn) => turn,
                Err(e) => return error_response(e),
            };
            let mut chain = match open_chain(env, call.spec, trace, &mut turn, owner).await {
                Ok(chain) => chain,
                Err(e) => return error_response(e),
            };
            if call.stream {
                stream_response(turn, None, chain)
            } else {
                let res = complete(&mut turn, chain.as_mut()).await;
                if let Some(chain) = chain {
                    chain.close().await;
                }
                json_response(res)
            }
        }
        Route::Sessions => {
            let id = hex(&random_bytes::<16>());
            forward(env, &id, req, Some(&id), owner, trace).await
        }
        Route::Session(id) | Route::SessionMessages(id) => {
            if let Err(e) = sessions::check_id(id) {
                return error_response(e);
            }
            forward(env, id, req, None, owner, trace).await
        }
        _ => error_response(ApiError::internal("not a chat route")),
    }
}

/// Hands the request to the session's object, unchanged.
async fn forward(
    env: &Env,
    id: &str,
    req: &HttpRequest<'_>,
    new_id: Option<&str>,
    owner: Option<&str>,
    trace: &Trace,
) -> Result<Response> {
    let Ok(namespace) = env.durable_object(SESSIONS_BINDING) else {
        return error_response(ApiError::unavailable(
            "sessions need the SESSIONS Durable Object binding (see wrangler.toml)",
        ));
    };
    let stub = namespace.id_from_name(id)?.get_stub()?;
    let headers = Headers::new();
    if let Some(ct) = req.content_type {
        headers.set("content-type", ct)?;
    }
    headers.set(SESSION_HEADER, id)?;
    headers.set(TRACEPARENT_HEADER, &trace.header())?;
    if let Some(new_id) = new_id {
        headers.set(NEW_SESSION_HEADER, new_id)?;
    }
    if let Some(owner) = owner {
        headers.set(OWNER_HEADER, owner)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(req.method.to_string()))
        .with_headers(headers);
    if !matches!(req.method, "GET" | "HEAD" | "DELETE") {
        init.with_body(Some(js_sys::Uint8Array::from(req.body).into()));
    }
    let inner = Request::new_with_init(&format!("https://session{}", req.path), &init)?;
    stub.fetch_with_request(inner).await
}

#[derive(Deserialize)]
struct JsonRow {
    json: String,
}

fn has_tables(sql: &SqlStorage) -> Result<bool> {
    #[derive(Deserialize)]
    struct Name {
        #[allow(dead_code)]
        name: String,
    }
    let rows: Vec<Name> = sql
        .exec(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'session'",
            None,
        )?
        .to_array()?;
    Ok(!rows.is_empty())
}

fn load(sql: &SqlStorage) -> Result<Option<(SessionMeta, Vec<StoredMessage>)>> {
    if !has_tables(sql)? {
        return Ok(None);
    }
    let meta: Vec<JsonRow> = sql.exec("SELECT json FROM session", None)?.to_array()?;
    let Some(meta) = meta.first() else {
        return Ok(None);
    };
    let meta: SessionMeta =
        serde_json::from_str(&meta.json).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let rows: Vec<JsonRow> = sql
        .exec("SELECT json FROM message ORDER BY seq", None)?
        .to_array()?;
    let messages = rows
        .iter()
        .map(|r| serde_json::from_str(&r.json))
        .collect::<std::result::Result<Vec<StoredMessage>, _>>()
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    Ok(Some((meta, messages)))
}

/// The rows of a finished turn, in one statement: SQLite applies it whole
/// or not at all, so a turn is never half stored.
fn append_turn(sql: &SqlStorage, turn: &TurnRequest, reply: &chat::Reply) -> Result<()> {
    let rows = sessions::turn_rows(turn, reply, now_seconds());
    let values = rows
        .iter()
        .map(|row| serde_json::to_string(row).map(SqlStorageValue::String))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let placeholders = vec!["(?)"; values.len()].join(", ");
    sql.exec(
        &format!("INSERT INTO message (json) VALUES {placeholders}"),
        values,
    )?;
    Ok(())
}

/// One chat session: its history in this object's SQLite storage, its turns
/// one at a time.
#[durable_object]
pub struct ChatSession {
    state: State,
    /// The worker's bindings: a sharded model's shard Workers.
    env: Env,
    /// `DEFAULT_CHAT_MODEL` (a var): the model of sessions that name none.
    default_chat_model: Option<String>,
    /// Held from the start of a turn until its reply is stored, so a second
    /// message waits and then sees the first turn in the history.
    turn_lock: Arc<Mutex<()>>,
}

impl DurableObject for ChatSession {
    fn new(state: State, env: Env) -> Self {
        let default_chat_model = env
            .var("DEFAULT_CHAT_MODEL")
            .ok()
            .map(|v| v.to_string())
            .filter(|v| !v.is_empty());
        ChatSession {
            state,
            default_chat_model,
            env,
            turn_lock: Arc::new(Mutex::new(())),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let method = req.method();
        let path = req.path();
        let content_type = req.headers().get("content-type")?;
        let id = req.headers().get(SESSION_HEADER)?.unwrap_or_default();
        let new_id = req.headers().get(NEW_SESSION_HEADER)?;
        let owner = req.headers().get(OWNER_HEADER)?;
        let owner = owner.as_deref();
        let trace = trace(req.headers().get(TRACEPARENT_HEADER)?.as_deref());
        let body = match method {
            Method::Get | Method::Head | Method::Delete => Vec::new(),
            _ => req.bytes().await.unwrap_or_default(),
        };
        let request = HttpRequest {
            method: method.as_ref(),
            path: &path,
            content_type: content_type.as_deref(),
            body: &body,
            body_complete: true,
        };
        let sql = self.state.storage().sql();
        match (Route::parse(&path), new_id) {
            (Some(Route::Sessions), Some(new_id)) => {
                let meta = match sessions::parse_create(
                    &request,
                    &new_id,
                    now_seconds(),
                    owner,
                    self.default_chat_model.as_deref(),
                ) {
                    Ok(meta) => meta,
                    Err(e) => return error_response(e),
                };
                sql.exec(
                    "CREATE TABLE IF NOT EXISTS session (json TEXT NOT NULL)",
                    None,
                )?;
                sql.exec("CREATE TABLE IF NOT EXISTS message (seq INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL)", None)?;
                let json = serde_json::to_string(&meta)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                sql.exec(
                    "INSERT INTO session (json) VALUES (?)",
                    vec![SqlStorageValue::String(json)],
                )?;
                json_response(sessions::view(201, &meta, &[]))
            }
            (Some(Route::Session(_)), _) if matches!(method, Method::Get | Method::Head) => {
                match load(&sql)? {
                    Some((meta, messages)) => match meta.check_owner(owner) {
                        Ok(()) => json_response(sessions::view(200, &meta, &messages)),
                        Err(e) => error_response(e),
                    },
                    None => error_response(sessions::not_found(&id)),
                }
            }
            (Some(Route::Session(_)), _) if method == Method::Delete => {
                // Waits for a turn in progress, so its reply is not stored
                // into a session that was just erased.
                let _guard = self.turn_lock.clone().lock_owned().await;
                match load(&sql)? {
                    None => return error_response(sessions::not_found(&id)),
                    Some((meta, _)) => {
                        if let Err(e) = meta.check_owner(owner) {
                            return error_response(e);
                        }
                    }
                }
                sql.exec("DROP TABLE IF EXISTS message", None)?;
                sql.exec("DROP TABLE IF EXISTS session", None)?;
                self.state.storage().delete_all().await?;
                json_response(sessions::deleted(&id))
            }
            (Some(Route::SessionMessages(_)), _) => match sessions::parse_message(&request) {
                Ok(turn) => self.take_turn(&id, owner, sql, turn, &trace).await,
                Err(e) => error_response(e),
            },
            (Some(Route::ChatCompletions), _) => match chat::parse(&request, Some(&id)) {
                Ok(call) => {
                    self.take_turn(&id, owner, sql, sessions::turn_from_chat(call), &trace)
                        .await
                }
                Err(e) => error_response(e),
            },
            _ => error_response(ApiError::no_route(&path)),
        }
    }
}

impl ChatSession {
    async fn take_turn(
        &self,
        id: &str,
        owner: Option<&str>,
        sql: SqlStorage,
        turn: TurnRequest,
        trace: &Trace,
    ) -> Result<Response> {
        let guard = self.turn_lock.clone().lock_owned().await;
        let Some((meta, history)) = load(&sql)? else {
            return error_response(sessions::not_found(id));
        };
        if let Err(e) = meta.check_owner(owner) {
            return error_response(e);
        }
        let prepared = match sessions::prepare_turn(&meta, &history, &turn) {
            Ok(p) => p,
            Err(e) => return error_response(e),
        };
        let started = ChatTurn::start(
            prepared.spec,
            &prepared.conversation,
            &prepared.generation,
            turn.include_usage,
            Some(id.to_string()),
            request_meta(),
        );
        let mut reply = match started {
            Ok(reply) => reply,
            Err(e) => return error_response(e),
        };
        let mut chain = match open_chain(&self.env, prepared.spec, trace, &mut reply, owner).await {
            Ok(chain) => chain,
            Err(e) => return error_response(e),
        };
        if turn.stream {
            return stream_response(reply, Some((sql, turn, guard)), chain);
        }
        let res = complete(&mut reply, chain.as_mut()).await;
        if let Some(chain) = chain {
            chain.close().await;
        }
        if let Some(done) = reply.reply() {
            append_turn(&sql, &turn, &done)?;
        }
        drop(guard);
        json_response(res)
    }
}
