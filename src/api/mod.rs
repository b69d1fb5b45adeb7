//! The HTTP API as a pure function: a request (method, path, content type,
//! body bytes) in, a response (status, headers, JSON bytes) out. The Workers
//! glue only moves bytes to and from here, so every route, limit and error is
//! testable natively and behaves the same on any host.

pub mod auth;
pub mod cache;
pub mod chat;
mod classify;
pub mod config;
pub mod cors;
mod embeddings;
mod error;
pub mod host;
mod inference;
pub mod limits;
mod models;
mod parse;
pub mod rate_limit;
pub mod request;
pub mod responses;
pub mod schema;
pub mod sessions;
mod similarity;
pub mod timing;
pub mod trace;
pub mod variants;

pub use classify::{Classification, ClassifyRequest, ClassifyResponse, LabelScore};
pub use embeddings::{Embedding, EmbeddingData, EmbeddingsResponse};
pub use error::ApiError;
pub use inference::{Resolved, TokenUsage};
pub use models::{ModelList, ModelObject};
pub use parse::{body_within_limit, kind};
pub use request::{parse, Call, Parsed, SessionRequest, Stateless};
pub use similarity::{Match, SimilarityResponse};

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::registry::{self, ModelSpec};
use chat::{ChatTurn, Event, Output, RequestMeta, Step, TurnSink, Wire};
use responses::{Begun, ResponseRequest};
use sessions::{
    MemoryStore, Session, SessionAnswer, SessionCall, SessionOp, SessionStore, SessionTurn, Shared,
};
use timing::Clock;
use variants::{Arm, Variants};

/// Lower-case hex of `bytes` (digests, ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request as the host hands it over.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The URL path, without query string.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// False when the host stopped reading because the body passed
    /// [`limits::MAX_BODY_BYTES`]: the request is answered 413 unread.
    pub body_complete: bool,
    /// The `X-Session-Id` header: a chat completion's session, as an
    /// alternative to its `session` field.
    pub session: Option<&'a str>,
}

impl<'a> HttpRequest<'a> {
    /// A complete `application/json` POST of `body` to `path`.
    pub fn post_json(path: &'a str, body: &'a [u8]) -> Self {
        HttpRequest {
            method: "POST",
            path,
            content_type: Some("application/json"),
            body,
            body_complete: true,
            session: None,
        }
    }

    /// A bodiless request.
    pub fn bodiless(method: &'a str, path: &'a str) -> Self {
        HttpRequest {
            method,
            path,
            content_type: None,
            body: &[],
            body_complete: true,
            session: None,
        }
    }
}

/// What the host gives a request besides its bytes: its clock, time and
/// randomness (the core has none of its own), who is calling, and the
/// deployment's settings that shape an answer.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The isolate's clock, for `Server-Timing` and `usage.cpu_ms`.
    pub clock: Clock,
    /// Unix seconds, for `created` fields.
    pub now: fn() -> u64,
    /// Fills a buffer with random bytes: session and reply ids, seeds.
    pub random: fn(&mut [u8]),
    /// The A/B splits in force (`MODEL_VARIANTS`).
    pub variants: Option<&'a Variants>,
    /// What a split hashes on ([`variants::subject`]).
    pub subject: Option<&'a str>,
    /// The caller's API key digest, when keys are on: sessions belong to it.
    pub owner: Option<&'a str>,
    /// The model of sessions that name none (`DEFAULT_CHAT_MODEL`).
    pub default_chat_model: Option<&'a str>,
}

impl<'a> Context<'a> {
    /// The host's defaults, calling as the key whose digest is `owner`.
    pub fn owned_by(owner: &'a str) -> Self {
        Context {
            owner: Some(owner),
            ..Context::default()
        }
    }
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context {
            clock: host::CLOCK,
            now: host::now,
            random: host::random,
            variants: None,
            subject: None,
            owner: None,
            default_chat_model: None,
        }
    }
}

impl Context<'_> {
    /// The model that serves a request naming `name` (`id` or
    /// `id@version`), after any A/B split, and the split's arm.
    pub fn resolve(&self, name: &str) -> Result<(&'static ModelSpec, Option<Arm>), CoreError> {
        match self.variants {
            Some(v) => v.resolve(name, self.subject),
            None => registry::find(name).map(|spec| (spec, None)),
        }
    }
}

/// Which model answered a request and what it cost: for the response
/// headers (`x-edgeinfer-model`, `-model-sha256`, `-variant`,
/// `Server-Timing`) and the request's log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// `id@version`.
    pub model: String,
    pub sha256: &'static str,
    /// True when this request paid for loading the model (a cold start).
    pub loaded: bool,
    pub arm: Option<Arm>,
    /// The request's phases in the core, in order (ms).
    pub timings: Vec<(&'static str, f64)>,
    /// Tokens read and generated, for models that read tokens.
    pub tokens: Option<usize>,
    /// `usage.cpu_ms`: the estimated CPU ms of the model work.
    pub cpu_ms: Option<f64>,
}

impl Served {
    pub(crate) fn new(spec: &'static ModelSpec, loaded: bool) -> Self {
        Served {
            model: spec.qualified_name(),
            sha256: spec.sha256,
            loaded,
            arm: None,
            timings: Vec::new(),
            tokens: None,
            cpu_ms: None,
        }
    }
}

/// A response ready to send: status, extra headers, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Set on 5xx: what went wrong, for the log only.
    pub internal_error: Option<String>,
    /// The model that served the request, when one did.
    /// (Boxed: most responses have none, and it is large.)
    pub model: Option<Box<Served>>,
}

impl HttpResponse {
    pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => HttpResponse {
                status,
                headers: Vec::new(),
                body,
                internal_error: None,
                model: None,
            },
            Err(e) => Self::error(ApiError::internal(format!("serializing the response: {e}"))),
        }
    }

    /// What a route in [`Mode::Validate`] returns: the request passed.
    pub(crate) fn validated() -> Self {
        Self::json(200, &())
    }

    /// A static document served as is (the playground, the OpenAPI spec).
    pub(crate) fn page(body: &str, content_type: &str) -> Self {
        let mut res = Self::json(200, &());
        res.body = body.as_bytes().to_vec();
        res.headers.push(("content-type", content_type.to_string()));
        res
    }

    pub fn error(e: ApiError) -> Self {
        HttpResponse {
            status: e.status,
            body: e.body(),
            headers: e.headers,
            internal_error: e.internal,
            model: None,
        }
    }

    /// A whole reply's JSON `body`, with the model that made it.
    pub fn reply(body: Vec<u8>, served: Served) -> Self {
        HttpResponse {
            status: 200,
            headers: Vec::new(),
            body,
            internal_error: None,
            model: Some(Box::new(served)),
        }
    }

    /// A streamed reply's headers around `body`, its events.
    pub fn events(body: Vec<u8>, served: Served) -> Self {
        let mut res = Self::reply(body, served);
        res.headers = chat::SSE_HEADERS
            .iter()
            .map(|&(k, v)| (k, v.to_string()))
            .collect();
        res
    }
}

/// Which model made an answer, as the inference routes' bodies say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The model's id.
    pub model: String,
    pub model_version: String,
    /// The sha256 of the embedded weights that answered.
    pub model_sha256: String,
}

impl ModelRef {
    pub fn of(spec: &ModelSpec) -> Self {
        ModelRef {
            model: spec.id.into(),
            model_version: spec.version.into(),
            model_sha256: spec.sha256.into(),
        }
    }
}

/// Which routes exist, and the methods each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`: the playground page (src/playground/index.html).
    Playground,
    /// `GET /openapi.json`: the OpenAPI 3.1 description of every route.
    OpenApi,
    Health,
    Models,
    Model(&'a str),
    Classify,
    Embeddings,
    Similarity,
    ChatCompletions,
    /// `POST /v1/sessions`: create.
    Sessions,
    /// `GET` / `DELETE /v1/sessions/{id}` (the id is not validated here).
    Session(&'a str),
    /// `POST /v1/sessions/{id}/messages`.
    SessionMessages(&'a str),
    /// `POST /v1/responses`.
    Responses,
    /// `GET` / `DELETE /v1/responses/{id}` (the id is not validated here).
    Response(&'a str),
}

impl<'a> Route<'a> {
    pub fn parse(path: &'a str) -> Option<Self> {
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        match path {
            "/" => Some(Route::Playground),
            "/openapi.json" => Some(Route::OpenApi),
            "/healthz" => Some(Route::Health),
            "/v1/models" => Some(Route::Models),
            "/v1/classify" => Some(Route::Classify),
            "/v1/embeddings" => Some(Route::Embeddings),
            "/v1/similarity" => Some(Route::Similarity),
            "/v1/chat/completions" => Some(Route::ChatCompletions),
            "/v1/sessions" => Some(Route::Sessions),
            "/v1/responses" => Some(Route::Responses),
            _ => {
                if let Some(id) = path.strip_prefix("/v1/responses/") {
                    return (!id.is_empty() && !id.contains('/')).then_some(Route::Response(id));
                }
                if let Some(id) = path.strip_prefix("/v1/models/") {
                    return (!id.is_empty() && !id.contains('/')).then_some(Route::Model(id));
                }
                let rest = path.strip_prefix("/v1/sessions/")?;
                match rest.split_once('/') {
                    None if !rest.is_empty() => Some(Route::Session(rest)),
                    Some((id, "messages")) if !id.is_empty() => Some(Route::SessionMessages(id)),
                    _ => None,
                }
            }
        }
    }

    /// The methods the route accepts, as the `Allow` header lists them:
    /// `HEAD` wherever `GET` is, and `OPTIONS` everywhere (a browser's
    /// preflight, see [`cors`]).
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Playground
            | Route::OpenApi
            | Route::Health
            | Route::Models
            | Route::Model(_) => "GET, HEAD, OPTIONS",
            Route::Session(_) | Route::Response(_) => "GET, HEAD, DELETE, OPTIONS",
            Route::Classify
            | Route::Embeddings
            | Route::Similarity
            | Route::ChatCompletions
            | Route::Sessions
            | Route::SessionMessages(_)
            | Route::Responses => "POST, OPTIONS",
        }
    }

    /// The answer to `OPTIONS`: no content, the route's methods.
    pub fn options(&self) -> HttpResponse {
        let mut res = HttpResponse::json(204, &());
        res.body.clear();
        res.headers.push(("allow", self.allow().to_string()));
        res
    }

    /// The 405 (with `Allow`) when `method` is not one the route accepts.
    pub fn check_method(&self, method: &str, path: &str) -> Result<(), ApiError> {
        let allow = self.allow();
        if allow.split(", ").any(|m| m == method) {
            return Ok(());
        }
        Err(ApiError::method_not_allowed(method, path, allow))
    }
}

/// The playground page: one self-contained HTML file (no framework, no
/// build step) that calls the same public routes a client does.
const PLAYGROUND: &str = include_str!("../playground/index.html");

/// The OpenAPI 3.1 description of every route; tests/openapi.rs keeps it true.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The sessions `handle` keeps for this process.
static NATIVE_SESSIONS: Mutex<MemoryStore> = Mutex::new(MemoryStore::new());

/// Serves one request with no A/B splits, the host's clock and randomness,
/// and this process's sessions in memory. Never panics on any input.
pub fn handle(req: &HttpRequest<'_>) -> HttpResponse {
    handle_with(req, &Context::default(), &mut Shared(&NATIVE_SESSIONS))
}

/// Serves one request in `ctx`, its sessions in `store`. Never panics on
/// any input.
pub fn handle_with(
    req: &HttpRequest<'_>,
    ctx: &Context<'_>,
    store: &mut dyn SessionStore,
) -> HttpResponse {
    let parsed = match parse(req, ctx) {
        Ok(parsed) => parsed,
        Err(e) => return HttpResponse::error(e),
    };
    let mut res = match parsed.call {
        Call::Stateless(call) => serve_stateless(call, Mode::Serve),
        Call::Chat(call) => {
            let (plan, wire) = call.plan();
            match ChatTurn::start(plan, RequestMeta::draw(ctx)) {
                Ok(turn) => answer_here(turn, &wire, &mut ()),
                Err(e) => HttpResponse::error(e),
            }
        }
        Call::Session(request) => {
            let call = request.into_call(ctx);
            match sessions::serve(call, store, RequestMeta::draw(ctx)) {
                Ok(SessionAnswer::Done(res)) => res,
                Ok(SessionAnswer::Turn(turn)) => {
                    let SessionTurn { turn, wire, record } = *turn;
                    answer_here(turn, &wire, &mut record.sink(store))
                }
                Err(e) => HttpResponse::error(e),
            }
        }
        Call::Response(request) => {
            respond_here(request, ctx, store).unwrap_or_else(HttpResponse::error)
        }
    };
    // HEAD: what GET answers, headers only.
    if parsed.head {
        res.body.clear();
    }
    res
}

/// A Responses API call served here, its stored responses in `store`
/// (the same session operations the worker sends each response's Durable
/// Object).
fn respond_here(
    request: ResponseRequest,
    ctx: &Context<'_>,
    store: &mut dyn SessionStore,
) -> Result<HttpResponse, ApiError> {
    let owner = ctx.owner.map(str::to_string);
    let call = |id: &str, op: SessionOp| SessionCall {
        id: id.to_string(),
        owner: owner.clone(),
        op,
    };
    let export = |id: &str, store: &mut dyn SessionStore| -> Result<Session, ApiError> {
        match sessions::serve(call(id, SessionOp::Export), store, RequestMeta::draw(ctx)) {
            Ok(SessionAnswer::Done(res)) => serde_json::from_slice(&res.body)
                .map_err(|e| ApiError::internal(format!("an exported session: {e}"))),
            Ok(SessionAnswer::Turn(_)) => Err(ApiError::internal("an export that is a turn")),
            Err(e) => Err(responses::answered_as_response(e, id)),
        }
    };
    match request {
        ResponseRequest::Get(id) => responses::view(&export(&id, store)?),
        ResponseRequest::Delete(id) => {
            export(&id, store)?;
            sessions::serve(call(&id, SessionOp::Delete), store, RequestMeta::draw(ctx))
                .map_err(|e| responses::answered_as_response(e, &id))?;
            Ok(responses::deleted(&id))
        }
        ResponseRequest::Create(create) => {
            let previous = match &create.previous {
                Some(id) => {
                    Some(export(id, store).map_err(|e| e.with_param("previous_response_id"))?)
                }
                None => None,
            };
            match create.begin(previous.as_ref(), ctx, owner.clone())? {
                Begun::Here(turn, wire) => Ok(answer_here(*turn, &wire, &mut ())),
                Begun::Stored(stored, meta) => match sessions::serve(*stored, store, meta)? {
                    SessionAnswer::Turn(turn) => {
                        let SessionTurn { turn, wire, record } = *turn;
                        Ok(answer_here(turn, &wire, &mut record.sink(store)))
                    }
                    SessionAnswer::Done(res) => Ok(res),
                },
            }
        }
    }
}

/// Answers a call that needs no store and no host I/O: the pages, the
/// model list, and the inference routes (run, or in [`Mode::Validate`]
/// stopped before their model runs).
pub fn serve_stateless(call: Stateless<'_>, mode: Mode) -> HttpResponse {
    try_stateless(call, mode).unwrap_or_else(HttpResponse::error)
}

fn try_stateless(call: Stateless<'_>, mode: Mode) -> Result<HttpResponse, ApiError> {
    let validated = |res: HttpResponse| match mode {
        Mode::Serve => res,
        Mode::Validate => HttpResponse::validated(),
    };
    match call {
        Stateless::Options(route) => Ok(route.options()),
        Stateless::Playground => Ok(validated(HttpResponse::page(
            PLAYGROUND,
            "text/html; charset=utf-8",
        ))),
        Stateless::OpenApi => Ok(validated(HttpResponse::page(OPENAPI, "application/json"))),
        Stateless::Health => Ok(HttpResponse::json(200, &Health::current())),
        Stateless::Models => Ok(HttpResponse::json(200, &ModelList::all())),
        Stateless::Model(id) => ModelObject::find(id)
            .map(|m| HttpResponse::json(200, &m))
            .map_err(ApiError::from),
        Stateless::Classify(call) => classify::serve(call, mode),
        Stateless::Embeddings(call) => embeddings::serve(call, mode),
        Stateless::Similarity(call) => similarity::serve(call, mode),
    }
}

/// A reply generated here to the end: one `chat.completion`, or every
/// event in one body. A model whose weights live in shard Workers needs
/// the worker's glue to run its passes.
fn answer_here(mut turn: ChatTurn, wire: &Wire, sink: &mut dyn TurnSink) -> HttpResponse {
    let head = turn.head();
    if turn.sharded().is_some() {
        return HttpResponse::error(ApiError::unavailable(format!(
            "model `{}` runs across shard Workers: serve it with the worker (scripts/dev), or use a model this host runs (GET /v1/models)",
            head.model
        )));
    }
    let mut out = Output::new(wire, head);
    let mut sent = Vec::new();
    loop {
        let event = match turn.poll(sink) {
            Step::Event(event) => event,
            // Not asked of a model this host runs (checked above).
            Step::Pass(_) => Event::Failed(ApiError::internal("a pass asked of the native host")),
        };
        let done = matches!(event, Event::Done);
        sent.extend(out.event(event));
        if done {
            break;
        }
    }
    if out.streams() {
        HttpResponse::events(sent, turn.served())
    } else {
        out.answer(turn.served())
    }
}

/// How far a route goes with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// All the way: run the model and answer.
    Serve,
    /// Every check and the tokenization, then stop before the model runs.
    Validate,
}

/// Puts `req` through every check its route makes before a model runs or
/// a store is read (routing, method, content type, JSON, fields, limits,
/// model lookup, tokenization, the chat template), and returns the error
/// it would get. This is the surface a client controls, so it is what the
/// fuzzers drive (fuzz/fuzz_targets/requests.rs), millions of times,
/// without paying for inference on every input.
pub fn validate(req: &HttpRequest<'_>) -> Result<(), ApiError> {
    let ctx = Context::default();
    match parse(req, &ctx)?.call {
        Call::Stateless(call) => try_stateless(call, Mode::Validate).map(drop),
        // Building the prompt is the last step before the model runs.
        Call::Chat(call) => ChatTurn::start(call.plan().0, RequestMeta::draw(&ctx)).map(drop),
        // The rest needs the session's history.
        Call::Session(_) | Call::Response(_) => Ok(()),
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    models: usize,
    /// Size of the wasm linear memory: it only grows, so this is the
    /// isolate's peak so far (embedded weights included, as data segments
    /// are copied in at instantiation). Absent outside wasm.
    #[serde(skip_serializing_if = "Option::is_none")]
    wasm_memory_bytes: Option<usize>,
    /// The matrix kernels this build runs (see `kernels::active`).
    kernels: &'static str,
}

impl Health {
    fn current() -> Self {
        #[cfg(target_arch = "wasm32")]
        let memory = Some(core::arch::wasm32::memory_size(0) * 65536);
        #[cfg(not(target_arch = "wasm32"))]
        let memory = None;
        Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            models: crate::registry::MODELS.len(),
            wasm_memory_bytes: memory,
            kernels: edgeinfer_engine::kernels::active(),
        }
    }
}
