//! The Workers layer: moves a request's bytes from workerd into [`crate::api`]
//! and the answer back, keeps answers in KV when a `CACHE` namespace is bound,
//! and writes one JSON log line per request. It does no math and makes no API
//! decisions (what is cacheable, and under which key, is [`api::cache`]'s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::{
    console_error, console_log, event, kv::KvStore, Delay, Env, Headers, Method, Request, Response,
    Result,
};

use crate::api::auth::{self, Caller};
use crate::api::config::Config;
use crate::api::cors::Preflight;
use crate::api::timing::server_timing;
use crate::api::{
    self, cache,
    limits::{MAX_BODY_BYTES, MAX_DRAINED_BYTES},
    variants, ApiError, Call, Context, HttpRequest, HttpResponse, Mode, Route, Served,
};
use wasm_bindgen::prelude::wasm_bindgen;

mod chat;
mod rate_limit;
mod session_kv;
mod shards;

/// The KV binding that caches inference answers (optional).
const CACHE_BINDING: &str = "CACHE";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// The isolate's clock for [`api::timing`]. Locally it runs; on Cloudflare's
/// edge it stands still while code computes (see api::timing).
pub(crate) fn clock() -> f64 {
    performance_now()
}

/// Unix seconds.
fn now_seconds() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

/// `crypto.getRandomValues`. It cannot fail in workerd; if it ever did, the
/// bytes would stay as they are and the failure is logged, rather than a
/// request panicking.
pub(crate) fn random(out: &mut [u8]) {
    if let Err(e) = getrandom03::fill(out) {
        console_error!(
            "{}",
            serde_json::json!({ "random": "crypto.getRandomValues failed", "error": e.to_string() })
        );
    }
}

/// The host's clock, time and randomness, with no caller or settings.
pub(crate) fn context() -> Context<'static> {
    Context {
        clock,
        now: now_seconds,
        random,
        ..Context::default()
    }
}

/// True until this isolate has started serving its first request.
static COLD: AtomicBool = AtomicBool::new(true);

/// The settings, read once per isolate (vars and secrets are fixed for its
/// life); what was wrong with them is logged then.
fn config(env: &Env) -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let config = Config::read(|name| {
            env.var(name)
                .ok()
                .map(|v| v.to_string())
                .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
        });
        for problem in &config.problems {
            console_error!("{}", serde_json::json!({ "config": problem }));
        }
        config
    })
}

/// The headers that say which model answered and where the time went.
pub(crate) fn set_served_headers(
    headers: &Headers,
    served: &Served,
    cache_ms: Option<f64>,
) -> Result<()> {
    headers.set("x-edgeinfer-model", &served.model)?;
    headers.set("x-edgeinfer-model-sha256", served.sha256)?;
    if let Some(arm) = served.arm {
        headers.set("x-edgeinfer-variant", arm.as_str())?;
    }
    let mut phases: Vec<(&str, f64)> = cache_ms.map(|ms| ("cache", ms)).into_iter().collect();
    phases.extend(served.timings.iter().copied());
    if !phases.is_empty() {
        headers.set("server-timing", &server_timing(&phases))?;
    }
    Ok(())
}

/// Keeps at most `MAX_BODY_BYTES` bytes, so a huge body costs no more memory
/// than the limit; returns whether the body was read whole.
///
/// The rest of an oversize body is read and dropped, up to
/// [`MAX_DRAINED_BYTES`]: a connection whose body was left unread cannot carry
/// the client's next request, and local servers (workerd, `wrangler dev`)
/// then reset it or answer 503. Beyond that bound the 413 goes out anyway.
/// A body that stops arriving midway is a 400 that says so, not an empty
/// body or a 500.
async fn read_body(req: &mut Request) -> std::result::Result<(Vec<u8>, bool), ApiError> {
    let mut body = Vec::new();
    // A request without a body (a POST with no Content-Length) has no stream:
    // that is an empty body, which the API answers with its 400.
    let Ok(mut stream) = req.stream() else {
        return Ok((body, true));
    };
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::malformed(format!("the body could not be read to its end: {e}"))
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            body.extend_from_slice(&chunk);
        } else if seen > MAX_DRAINED_BYTES {
            break;
        }
    }
    Ok((body, seen <= MAX_BODY_BYTES))
}

/// A read of the cache that gives up after [`cache::READ_TIMEOUT_MS`]: a slow
/// or failing KV must cost a request no more than that.
async fn cache_read(kv: &KvStore, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
    let read = Box::pin(kv.get(key).bytes());
    let timeout = Box::pin(Delay::from(Duration::from_millis(cache::READ_TIMEOUT_MS)));
    match select(read, timeout).await {
        Either::Left((result, _)) => result.map_err(|e| e.to_string()),
        Either::Right(_) => Err(format!("no answer within {} ms", cache::READ_TIMEOUT_MS)),
    }
}

/// The shortest lifetime the `CACHE` binding takes, when it says
/// (`minExpirationTtl`: the Deno server's, over Deno KV, takes any);
/// Workers KV does not, and takes a minute at least.
fn kv_min_ttl(env: &Env) -> Option<u64> {
    let kv = js_sys::Reflect::get(env, &CACHE_BINDING.into()).ok()?;
    let min = js_sys::Reflect::get(&kv, &"minExpirationTtl".into()).ok()?;
    min.as_f64().map(|s| s.max(0.0) as u64)
}

/// Stores an answer after the response has gone out; a failure is logged only.
fn cache_write(ctx: &worker::Context, kv: KvStore, key: String, body: Vec<u8>, ttl: u64) {
    ctx.wait_until(async move {
        let put = match kv.put_bytes(&key, &body) {
            Ok(put) => put.expiration_ttl(ttl).execute().await,
            Err(e) => Err(e),
        };
        if let Err(e) = put {
            console_error!(
                "{}",
                serde_json::json!({ "cache": "write failed", "key": key, "error": e.to_string() })
            );
        }
    });
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: worker::Context) -> Result<Response> {
    // What the answer's CORS headers and a HEAD's empty body depend on,
    // read before `serve` takes the request.
    let origin = req.headers().get("origin").ok().flatten();
    let asked_headers = req
        .headers()
        .get("access-control-request-headers")
        .ok()
        .flatten();
    let preflight = (req.method() == Method::Options
        && req
            .headers()
            .has("access-control-request-method")
            .unwrap_or(false))
    .then(|| Route::parse(&req.path()).map(|r| r.allow()))
    .flatten();
    let head = req.inner().method() == "HEAD";
    let res = serve(req, &env, &ctx).await;
    let res: Response = match res {
        Ok(res) => res,
        // Reading the body or building the response failed in the runtime
        // (e.g. the client went away): still answer with the JSON contract.
        Err(e) => {
            let error = api::ApiError::internal(e.to_string());
            console_error!(
                "{}",
                serde_json::json!({ "status": 500, "error": error.internal })
            );
            let headers = Headers::new();
            headers.set("content-type", "application/json")?;
            Response::from_bytes(error.body())?
                .with_status(500)
                .with_headers(headers)
        }
    };
    let cors = config(&env).cors.headers(
        origin.as_deref(),
        preflight.map(|allow| Preflight {
            allow,
            headers: asked_headers.as_deref(),
        }),
    );
    finish(res, &cors, head)
}

/// Adds `extra` headers to an answer (a session object's too, whose
/// headers cannot be changed in place), and drops the body of a HEAD's.
fn finish(res: Response, extra: &[(&'static str, String)], head: bool) -> Result<Response> {
    if extra.is_empty() && !head {
        return Ok(res);
    }
    let headers = Headers::new();
    for (name, value) in res.headers().entries() {
        headers.append(&name, &value)?;
    }
    for (name, value) in extra {
        headers.append(name, value)?;
    }
    let status = res.status_code();
    let res = if head { Response::empty()? } else { res };
    Ok(res.with_status(status).with_headers(headers))
}

/// Who is calling, and whether they may: the 401 or 429 otherwise. Both
/// come before the body is read, so a refused caller costs nothing more.
async fn admit(
    req: &Request,
    path: &str,
    env: &Env,
    config: &Config,
) -> Result<std::result::Result<Caller, ApiError>> {
    let authorization = req.headers().get("authorization")?;
    let caller = match config.keys.authorize(path, authorization.as_deref()) {
        Ok(caller) => caller,
        Err(e) => return Ok(Err(e)),
    };
    if !auth::guarded(path) {
        return Ok(Ok(caller));
    }
    let limit = match &config.rate_limit {
        Ok(Some(limit)) => limit,
        Ok(None) => return Ok(Ok(caller)),
        Err(e) => return Ok(Err(ApiError::internal(e.clone()))),
    };
    let bucket = rate_limit::bucket_for(&caller, req);
    Ok(rate_limit::take(env, limit, &bucket).await.map(|()| caller))
}

async fn serve(mut req: Request, env: &Env, ctx: &worker::Context) -> Result<Response> {
    let started = clock();
    let isolate = if COLD.swap(false, Ordering::Relaxed) {
        "cold"
    } else {
        "warm"
    };
    let method = req.method();
    // The method as sent: `Method` reads one it does not know (QUERY, FOO)
    // as GET, which would let it through the GET routes instead of a 405.
    let method_sent = req.inner().method();
    let path = req.path();
    let mut line = LogLine::request(&method_sent, &path, started, isolate);
    // A preflight carries no key: it is answered before keys and limits.
    if method_sent == "OPTIONS" {
        let res = match Route::parse(&path) {
            Some(route) => route.options(),
            None => HttpResponse::error(ApiError::no_route(&path)),
        };
        line.write(res.status, None, None);
        return respond(&res, None);
    }
    #[cfg(feature = "test-panic")]
    if path == "/__test/panic" {
        panic!("test-panic: a panic on the request path, on purpose");
    }
    let config = config(env);
    let caller = match admit(&req, &path, env, config).await? {
        Ok(caller) => caller,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            return respond(&res, None);
        }
    };
    let content_type = req.headers().get("content-type")?;
    let session = req.headers().get(SESSION_HEADER)?;
    let read = match method {
        Method::Get | Method::Head | Method::Options => Ok((Vec::new(), true)),
        _ => read_body(&mut req).await,
    };
    let (body, body_complete) = match read {
        Ok(read) => read,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, None);
            return respond(&res, None);
        }
    };
    let request = HttpRequest {
        method: &method_sent,
        path: &path,
        content_type: content_type.as_deref(),
        body: &body,
        body_complete,
        session: session.as_deref(),
    };
    let client_ip = req.headers().get("cf-connecting-ip")?;
    let api_ctx = Context {
        variants: config.variants.as_ref(),
        subject: variants::subject(caller.owner(), client_ip.as_deref()),
        owner: caller.owner(),
        default_chat_model: config.default_chat_model.as_deref(),
        ..context()
    };
    // The one parse of the request; everything below takes its values.
    let parsed = match api::parse(&request, &api_ctx) {
        Ok(parsed) => parsed,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            return respond(&res, None);
        }
    };
    let trace = || {
        chat::trace(
            req.headers()
                .get(chat::TRACEPARENT_HEADER)
                .ok()
                .flatten()
                .as_deref(),
        )
    };
    match parsed.call {
        Call::Stateless(call) => {
            let kv = env.kv(CACHE_BINDING).ok();
            let key = kv.as_ref().and_then(|_| cache::key(&call));
            let mut cache_ms = None;
            if let (Some(kv), Some(key)) = (&kv, &key) {
                let asked = clock();
                let read = cache_read(kv, &key.key).await;
                cache_ms = Some(clock() - asked);
                match read {
                    Ok(Some(hit)) => {
                        let res = cache::hit(key, hit);
                        line.cache = "hit";
                        line.write(200, res.model.as_deref(), None);
                        return respond(&res, cache_ms);
                    }
                    Ok(None) => {}
                    Err(e) => line.cache_error = Some(e),
                }
            }
            let mut res = api::serve_stateless(call, Mode::Serve);
            if let (Some(kv), Some(key)) = (kv, key) {
                if let Some(stored) = cache::miss(&mut res) {
                    line.cache = "miss";
                    let ttl = cache::stored_ttl(config.cache_ttl_seconds, kv_min_ttl(env));
                    cache_write(ctx, kv, key.key, stored, ttl);
                }
            }
            line.write(
                res.status,
                res.model.as_deref(),
                res.internal_error.as_deref(),
            );
            respond(&res, cache_ms)
        }
        Call::Chat(call) => chat::serve_chat(call, &api_ctx, env, &trace(), line).await,
        Call::Session(request) => {
            let res = chat::forward(env, &request.into_call(&api_ctx), &trace()).await?;
            line.write_forwarded(&res)?;
            Ok(res)
        }
    }
}

/// The header naming a session, as an alternative to the `session` field.
const SESSION_HEADER: &str = "x-session-id";

/// One JSON line per request, for Workers Logs (`[observability]` in
/// wrangler.toml): what was asked, who answered, how long it took. A
/// session turn's object writes a line of its own when the reply is done,
/// with the tokens it took.
pub(crate) struct LogLine {
    /// Method and route, for a request's line; the session, for a turn's.
    what: What,
    started: f64,
    cache: &'static str,
    cache_error: Option<String>,
}

enum What {
    Request {
        method: String,
        path: String,
        /// `cold` for an isolate's first request, else `warm`.
        isolate: &'static str,
    },
    Turn {
        session: String,
    },
}

impl LogLine {
    fn request(method: &str, path: &str, started: f64, isolate: &'static str) -> Self {
        LogLine {
            what: What::Request {
                method: method.to_string(),
                path: path.to_string(),
                isolate,
            },
            started,
            cache: "off",
            cache_error: None,
        }
    }

    /// The line of a session's turn, written by its object.
    pub(crate) fn turn(session: &str) -> Self {
        LogLine {
            what: What::Turn {
                session: session.to_string(),
            },
            started: clock(),
            cache: "off",
            cache_error: None,
        }
    }

    pub(crate) fn write(&self, status: u16, served: Option<&Served>, error: Option<&str>) {
        self.emit(self.fields(status, served, error), status);
    }

    fn fields(
        &self,
        status: u16,
        served: Option<&Served>,
        error: Option<&str>,
    ) -> serde_json::Value {
        let mut line = serde_json::json!({
            "status": status,
            "ms": clock() - self.started,
            "model": served.map(|s| &s.model),
            "variant": served.and_then(|s| s.arm).map(|a| a.as_str()),
            "tokens": served.and_then(|s| s.tokens),
            "cpu_ms": served.and_then(|s| s.cpu_ms),
            "model_loaded": served.map(|s| s.loaded),
            "error": error,
        });
        match &self.what {
            What::Request {
                method,
                path,
                isolate,
            } => {
                line["method"] = method.as_str().into();
                line["route"] = path.as_str().into();
                line["isolate"] = (*isolate).into();
                line["cache"] = self.cache.into();
                line["cache_error"] = self.cache_error.clone().into();
            }
            What::Turn { session } => line["session"] = session.as_str().into(),
        }
        line
    }

    fn emit(&self, line: serde_json::Value, status: u16) {
        if status >= 500 || self.cache_error.is_some() {
            console_error!("{line}");
        } else {
            console_log!("{line}");
        }
    }

    /// The line of a request a session's object answered: the model is in
    /// its headers (the object's own line has the tokens and the load).
    fn write_forwarded(&self, res: &Response) -> Result<()> {
        let served = match res.headers().get("x-edgeinfer-model")? {
            Some(model) => crate::registry::find(&model)
                .ok()
                .map(|spec| Served::new(spec, false)),
            None => None,
        };
        let status = res.status_code();
        let mut line = self.fields(status, served.as_ref(), None);
        line["model_loaded"] = serde_json::Value::Null;
        self.emit(line, status);
        Ok(())
    }
}

/// The response for `res`: JSON (unless the route set its own type), the
/// model headers when a model answered, and the cache read's time.
pub(crate) fn respond(res: &HttpResponse, cache_ms: Option<f64>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(served) = &res.model {
        set_served_headers(&headers, served, cache_ms)?;
    }
    for (name, value) in &res.headers {
        headers.set(name, value)?;
    }
    // A 204 (a preflight's) may carry no body at all: Deno's Response
    // refuses even an empty one.
    let body = if res.body.is_empty() && matches!(res.status, 204 | 304) {
        Response::empty()?
    } else {
        Response::from_bytes(res.body.clone())?
    };
    Ok(body.with_status(res.status).with_headers(headers))
}
