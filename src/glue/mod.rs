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

use crate::api::auth::{self, ApiKeys, Caller};
use crate::api::cors::{Cors, Preflight};
use crate::api::timing::server_timing;
use crate::api::variants::Variants;
use crate::api::{
    self, cache,
    limits::{MAX_BODY_BYTES, MAX_DRAINED_BYTES},
    ApiError, Context, HttpRequest, HttpResponse, Route, Served,
};
use wasm_bindgen::prelude::wasm_bindgen;

mod chat;
mod rate_limit;
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

/// True until this isolate has started serving its first request.
static COLD: AtomicBool = AtomicBool::new(true);

/// `MODEL_VARIANTS`, parsed once per isolate (vars are fixed for its life).
/// A broken configuration is logged and serves every caller the model they
/// asked for, rather than failing every request.
fn variants(env: &Env) -> Option<&'static Variants> {
    static VARIANTS: OnceLock<Option<Variants>> = OnceLock::new();
    VARIANTS
        .get_or_init(|| {
            let var = env.var("MODEL_VARIANTS").ok().map(|v| v.to_string());
            match Variants::parse(var.as_deref()) {
                Ok(v) => Some(v),
                Err(e) => {
                    console_error!("{}", serde_json::json!({ "config": e }));
                    None
                }
            }
        })
        .as_ref()
}

/// What an A/B split hashes on: the caller's key digest, else the client IP.
fn split_subject(caller: &Caller, req: &Request) -> Option<String> {
    match caller.owner() {
        Some(digest) => Some(digest.to_string()),
        None => req.headers().get("cf-connecting-ip").ok().flatten(),
    }
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
async fn read_body(req: &mut Request) -> Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    // A request without a body (a POST with no Content-Length) has no stream:
    // that is an empty body, which the API answers with its 400.
    let Ok(mut stream) = req.stream() else {
        return Ok((body, true));
    };
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
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
    let cors = cors_config(&env).headers(
        origin.as_deref(),
        preflight.map(|allow| Preflight {
            allow,
            headers: asked_headers.as_deref(),
        }),
    );
    finish(res, &cors, head)
}

/// `CORS_ALLOW_ORIGINS`, read once per isolate (vars are fixed for its life).
fn cors_config(env: &Env) -> &'static Cors {
    static CORS: OnceLock<Cors> = OnceLock::new();
    CORS.get_or_init(|| {
        Cors::parse(
            env.var("CORS_ALLOW_ORIGINS")
                .ok()
                .map(|v| v.to_string())
                .as_deref(),
        )
    })
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

/// Who is calling, and whether they may: the 401 or 429 to answer otherwise.
/// Both come before the body is read, so a refused caller costs nothing more.
async fn admit(
    req: &Request,
    path: &str,
    env: &Env,
) -> Result<std::result::Result<Caller, HttpResponse>> {
    // Secrets are fixed for an isolate's life: parse (and hash) them once.
    static KEYS: std::sync::OnceLock<ApiKeys> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let secret = env.secret("API_KEYS").ok().map(|s| s.to_string());
        ApiKeys::parse(secret.as_deref())
    });
    let authorization = req.headers().get("authorization")?;
    let caller = match keys.authorize(path, authorization.as_deref()) {
        Ok(caller) => caller,
        Err(e) => return Ok(Err(auth::refusal(e))),
    };
    if !auth::guarded(path) {
        return Ok(Ok(caller));
    }
    let limit = match rate_limit::configured(env) {
        Ok(Some(limit)) => limit,
        Ok(None) => return Ok(Ok(caller)),
        Err(e) => return Ok(Err(HttpResponse::error(ApiError::internal(e)))),
    };
    let bucket = rate_limit::bucket_for(&caller, req);
    Ok(rate_limit::take(env, &limit, &bucket)
        .await
        .map(|()| caller))
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
    let mut line = LogLine {
        method: &method_sent,
        path: &path,
        started,
        isolate,
        cache: "off",
        cache_error: None,
    };
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
    let caller = match admit(&req, &path, env).await? {
        Ok(caller) => caller,
        Err(res) => {
            line.write(res.status, None, res.internal_error.as_deref());
            return respond(&res, None);
        }
    };
    let content_type = req.headers().get("content-type")?;
    let (body, body_complete) = match method {
        Method::Get | Method::Head | Method::Options => (Vec::new(), true),
        _ => read_body(&mut req).await?,
    };
    let request = HttpRequest {
        method: &method_sent,
        path: &path,
        content_type: content_type.as_deref(),
        body: &body,
        body_complete,
    };

    if let Some(
        route @ (Route::ChatCompletions
        | Route::Sessions
        | Route::Session(_)
        | Route::SessionMessages(_)),
    ) = Route::parse(&path)
    {
        let session = req.headers().get(chat::SESSION_HEADER)?;
        let trace = chat::trace(req.headers().get(chat::TRACEPARENT_HEADER)?.as_deref());
        let res = chat::serve(
            route,
            &request,
            session.as_deref(),
            caller.owner(),
            env,
            &trace,
        )
        .await?;
        line.write_response(&res)?;
        return Ok(res);
    }

    let subject = split_subject(&caller, &req);
    let api_ctx = Context {
        clock,
        variants: variants(env),
        subject: subject.as_deref(),
    };
    let kv = env.kv(CACHE_BINDING).ok();
    let key = kv.as_ref().and_then(|_| cache::key(&request, &api_ctx));
    let mut cache_ms = None;
    if let (Some(kv), Some(key)) = (&kv, &key) {
        let asked = clock();
        let read = cache_read(kv, &key.key).await;
        cache_ms = Some(clock() - asked);
        match read {
            Ok(Some(hit)) => {
                let mut res = HttpResponse::json(200, &());
                res.body = hit;
                res.model = Some(Box::new(key.served.clone()));
                res.headers.push(("x-edgeinfer-cache", "hit".into()));
                line.cache = "hit";
                line.write(200, res.model.as_deref(), None);
                return respond(&res, cache_ms);
            }
            Ok(None) => {}
            Err(e) => line.cache_error = Some(e),
        }
    }

    let mut res = api::handle_with(&request, &api_ctx);
    // Only answers are cached, so only answers say how the cache went.
    if key.is_some() && res.status == 200 {
        line.cache = "miss";
        res.headers.push(("x-edgeinfer-cache", "miss".into()));
    }
    if let (Some(kv), Some(key), 200) = (kv, key, res.status) {
        let ttl = cache::ttl_seconds(
            env.var("CACHE_TTL_SECONDS")
                .ok()
                .map(|v| v.to_string())
                .as_deref(),
        );
        cache_write(ctx, kv, key.key, res.body.clone(), ttl);
    }
    line.write(
        res.status,
        res.model.as_deref(),
        res.internal_error.as_deref(),
    );
    respond(&res, cache_ms)
}

/// One JSON line per request, for Workers Logs (`[observability]` in
/// wrangler.toml): what was asked, who answered, how long it took.
struct LogLine<'a> {
    method: &'a str,
    path: &'a str,
    started: f64,
    /// `cold` for an isolate's first request, else `warm`.
    isolate: &'static str,
    cache: &'static str,
    cache_error: Option<String>,
}

impl LogLine<'_> {
    fn write(&self, status: u16, served: Option<&Served>, error: Option<&str>) {
        let line = serde_json::json!({
            "method": self.method,
            "route": self.path,
            "status": status,
            "ms": clock() - self.started,
            "model": served.map(|s| &s.model),
            "variant": served.and_then(|s| s.arm).map(|a| a.as_str()),
            "tokens": served.and_then(|s| s.tokens),
            "cpu_ms": served.and_then(|s| s.cpu_ms),
            "model_loaded": served.is_some_and(|s| s.loaded),
            "isolate": self.isolate,
            "cache": self.cache,
            "cache_error": self.cache_error,
            "error": error,
        });
        if status >= 500 || self.cache_error.is_some() {
            console_error!("{line}");
        } else {
            console_log!("{line}");
        }
    }

    /// The line of a response the chat glue built (the model is in its headers).
    fn write_response(&self, res: &Response) -> Result<()> {
        let headers = res.headers();
        let served = match headers.get("x-edgeinfer-model")? {
            Some(model) => crate::registry::find(&model)
                .ok()
                .map(|spec| Served::new(spec, false)),
            None => None,
        };
        self.write(res.status_code(), served.as_ref(), None);
        Ok(())
    }
}

/// The response for `res`: JSON (unless the route set its own type), the
/// model headers when a model answered, and the cache read's time.
fn respond(res: &HttpResponse, cache_ms: Option<f64>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(served) = &res.model {
        set_served_headers(&headers, served, cache_ms)?;
    }
    for (name, value) in &res.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(res.body.clone())?
        .with_status(res.status)
        .with_headers(headers))
}
