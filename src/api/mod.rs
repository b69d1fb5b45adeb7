//! The HTTP API as a pure function: a request (method, path, content type,
//! body bytes) in, a response (status, headers, JSON bytes) out. The Workers
//! glue only moves bytes to and from here, so every route, limit and error is
//! testable natively and behaves the same on any host.

pub mod auth;
pub mod cache;
pub mod chat;
mod classify;
pub mod cors;
mod embeddings;
mod error;
pub mod limits;
mod models;
mod parse;
pub mod rate_limit;
pub mod sessions;
mod similarity;
pub mod timing;
pub mod trace;
pub mod variants;

pub use classify::{Classification, ClassifyRequest, ClassifyResponse, LabelScore};
pub use embeddings::{Embedding, EmbeddingData, EmbeddingsResponse, TokenUsage};
pub use error::ApiError;
pub use models::{ModelList, ModelObject};
pub use parse::{body_within_limit, kind};
pub use similarity::{Match, SimilarityResponse};

use serde::Serialize;

use crate::error::CoreError;
use crate::registry::{self, ModelSpec};
use timing::Clock;
use variants::{Arm, Variants};

/// Lower-case hex of `bytes` (digests, ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request as the glue hands it over.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The URL path, without query string.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// False when the glue stopped reading because the body passed
    /// [`limits::MAX_BODY_BYTES`]: the request is answered 413 unread.
    pub body_complete: bool,
}

/// What the host gives a request besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The isolate's clock, for `Server-Timing` and `usage.cpu_ms`.
    pub clock: Clock,
    /// The A/B splits in force (`MODEL_VARIANTS`).
    pub variants: Option<&'a Variants>,
    /// What a split hashes on: the API key's digest, else the client IP.
    pub subject: Option<&'a str>,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context {
            #[cfg(not(target_arch = "wasm32"))]
            clock: timing::native_clock,
            #[cfg(target_arch = "wasm32")]
            clock: timing::frozen_clock,
            variants: None,
            subject: None,
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
            headers: Vec::new(),
            body: e.body(),
            internal_error: e.internal.clone(),
            model: None,
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
            _ => {
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
            Route::Session(_) => "GET, HEAD, DELETE, OPTIONS",
            Route::Classify
            | Route::Embeddings
            | Route::Similarity
            | Route::ChatCompletions
            | Route::Sessions
            | Route::SessionMessages(_) => "POST, OPTIONS",
        }
    }

    /// The answer to `OPTIONS`: no content, the route's methods.
    pub fn options(&self) -> HttpResponse {
        let mut res = HttpResponse::json(204, &());
        res.body.clear();
        res.headers.push(("allow", self.allow().to_string()));
        res
    }

    /// The 405 answer when `method` is not one the route accepts.
    pub fn check_method(&self, method: &str, path: &str) -> Result<(), HttpResponse> {
        let allow = self.allow();
        if allow.split(", ").any(|m| m == method) {
            return Ok(());
        }
        let mut res = HttpResponse::error(ApiError::method_not_allowed(method, path, allow));
        res.headers.push(("allow", allow.to_string()));
        Err(res)
    }
}

/// The playground page: one self-contained HTML file (no framework, no
/// build step) that calls the same public routes a client does.
const PLAYGROUND: &str = include_str!("../playground/index.html");

/// The OpenAPI 3.1 description of every route; tests/openapi.rs keeps it true.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Serves one request with no A/B splits and the host's default clock.
/// Never panics on any input.
pub fn handle(req: &HttpRequest<'_>) -> HttpResponse {
    handle_with(req, &Context::default())
}

/// Serves one request in `ctx`. Never panics on any input.
pub fn handle_with(req: &HttpRequest<'_>, ctx: &Context<'_>) -> HttpResponse {
    let Some(route) = Route::parse(req.path) else {
        return HttpResponse::error(ApiError::no_route(req.path));
    };
    if let Err(res) = route.check_method(req.method, req.path) {
        return res;
    }
    if req.method == "OPTIONS" {
        return route.options();
    }
    let mut res = serve_route(route, req, ctx);
    // HEAD: what GET answers, headers only.
    if req.method == "HEAD" {
        res.body.clear();
    }
    res
}

fn serve_route(route: Route<'_>, req: &HttpRequest<'_>, ctx: &Context<'_>) -> HttpResponse {
    let result = match route {
        Route::Playground => Ok(HttpResponse::page(PLAYGROUND, "text/html; charset=utf-8")),
        Route::OpenApi => Ok(HttpResponse::page(OPENAPI, "application/json")),
        Route::Health => Ok(HttpResponse::json(200, &Health::current())),
        Route::Models => Ok(HttpResponse::json(200, &ModelList::all())),
        Route::Model(id) => ModelObject::find(id)
            .map(|m| HttpResponse::json(200, &m))
            .map_err(ApiError::from),
        Route::Classify => classify::serve(req, Mode::Serve, ctx),
        Route::Embeddings => embeddings::serve(req, Mode::Serve, ctx),
        Route::Similarity => similarity::serve(req, Mode::Serve, ctx),
        // The worker streams these itself (see `glue`); natively they run to
        // the end in one answer, with a fixed id and seed.
        Route::ChatCompletions => serve_chat_here(req),
        Route::Sessions | Route::Session(_) | Route::SessionMessages(_) => {
            Err(ApiError::unavailable(
                "sessions live in the ChatSession Durable Object: run the worker (scripts/dev)",
            ))
        }
    };
    result.unwrap_or_else(HttpResponse::error)
}

/// How far a route goes with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// All the way: run the model and answer.
    Serve,
    /// Every check and the tokenization, then stop before the model runs.
    Validate,
}

/// Puts `req` through every check its route makes before a model runs
/// (routing, method, content type, JSON, fields, limits, model lookup,
/// tokenization, the chat template), and returns the error it would get.
/// This is the surface a client controls, so it is what the fuzzers drive
/// (fuzz/fuzz_targets/requests.rs), millions of times, without paying for
/// inference on every input.
pub fn validate(req: &HttpRequest<'_>) -> Result<(), ApiError> {
    let route = Route::parse(req.path).ok_or_else(|| ApiError::no_route(req.path))?;
    if route.check_method(req.method, req.path).is_err() {
        return Err(ApiError::method_not_allowed(
            req.method,
            req.path,
            route.allow(),
        ));
    }
    if req.method == "OPTIONS" {
        return Ok(());
    }
    match route {
        Route::Playground | Route::OpenApi => Ok(()),
        Route::Health | Route::Models | Route::Model(_) => {
            let res = handle(req);
            match res.status {
                200 => Ok(()),
                _ => Err(ApiError::not_found("model_not_found", "no such model")),
            }
        }
        Route::Classify => classify::serve(req, Mode::Validate, &Context::default()).map(drop),
        Route::Embeddings => embeddings::serve(req, Mode::Validate, &Context::default()).map(drop),
        Route::Similarity => similarity::serve(req, Mode::Validate, &Context::default()).map(drop),
        // Building the prompt is the last step before the model runs.
        Route::ChatCompletions => start_turn(&chat::parse(req, None)?).map(drop),
        Route::Sessions => {
            body_within_limit(req)?;
            sessions::parse_create(req, "00000000000000000000000000000000", 0, None, None).map(drop)
        }
        Route::Session(id) => sessions::check_id(id),
        Route::SessionMessages(id) => {
            sessions::check_id(id)?;
            body_within_limit(req)?;
            sessions::parse_message(req).map(drop)
        }
    }
}

/// A sessionless turn with a fixed id and seed (no clock or randomness here).
fn start_turn(call: &chat::ChatCall) -> Result<chat::ChatTurn, ApiError> {
    let meta = chat::RequestMeta {
        id: "chatcmpl-native".into(),
        created: 0,
        seed: 0,
        clock: Context::default().clock,
    };
    chat::ChatTurn::start(
        call.spec,
        &call.messages,
        &call.generation,
        call.include_usage,
        None,
        meta,
    )
}

/// A chat completion without a session, answered whole (`stream: true`
/// gives every event in one body).
fn serve_chat_here(req: &HttpRequest<'_>) -> Result<HttpResponse, ApiError> {
    let call = chat::parse(req, None)?;
    if let Some(id) = &call.session {
        return Err(sessions::not_found(id));
    }
    let mut turn = start_turn(&call)?;
    if !call.stream {
        return Ok(turn.complete());
    }
    let mut res = HttpResponse::json(200, &());
    res.body = turn.all_events();
    res.headers = chat::SSE_HEADERS
        .iter()
        .map(|&(k, v)| (k, v.to_string()))
        .collect();
    res.model = Some(Box::new(turn.served()));
    Ok(res)
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
            kernels: crate::kernels::active(),
        }
    }
}
