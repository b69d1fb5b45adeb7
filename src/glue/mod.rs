//! The Workers layer: moves a request's bytes from workerd into [`crate::api`]
//! and the answer back, keeps answers in KV when a `CACHE` namespace is bound,
//! and writes one JSON log line per request. It does no math and makes no API
//! decisions (what is cacheable, and under which key, is [`api::cache`]'s).

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::{
    console_error, console_log, event, kv::KvStore, Context, Delay, Env, Headers, Method, Request,
    Response, Result,
};

use crate::api::auth::{self, ApiKeys, Caller};
use crate::api::{self, cache, limits::MAX_BODY_BYTES, ApiError, HttpRequest, HttpResponse, Route};

mod chat;
mod rate_limit;

/// The KV binding that caches inference answers (optional).
const CACHE_BINDING: &str = "CACHE";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Reads at most `MAX_BODY_BYTES + 1` bytes, so a huge body costs no more
/// memory than the limit; returns whether the body was read whole.
async fn read_body(req: &mut Request) -> Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    // A request without a body (a POST with no Content-Length) has no stream:
    // that is an empty body, which the API answers with its 400.
    let Ok(mut stream) = req.stream() else {
        return Ok((body, true));
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
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
fn cache_write(ctx: &Context, kv: KvStore, key: String, body: Vec<u8>, ttl: u64) {
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
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    match serve(req, &env, &ctx).await {
        Ok(res) => Ok(res),
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
            Ok(Response::from_bytes(error.body())?
                .with_status(500)
                .with_headers(headers))
        }
    }
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

async fn serve(mut req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    let started = js_sys::Date::now();
    let method = req.method();
    // The method as sent: `Method` reads one it does not know (QUERY, FOO)
    // as GET, which would let it through the GET routes instead of a 405.
    let method_sent = req.inner().method();
    let path = req.path();
    #[cfg(feature = "test-panic")]
    if path == "/__test/panic" {
        panic!("test-panic: a panic on the request path, on purpose");
    }
    let caller = match admit(&req, &path, env).await? {
        Ok(caller) => caller,
        Err(res) => {
            log(
                &method,
                &path,
                res.status,
                started,
                None,
                false,
                "off",
                res.internal_error.as_deref(),
                None,
            );
            return respond(res.status, res.body, None, &res.headers, None);
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
        let res = chat::serve(route, &request, session.as_deref(), caller.owner(), env).await?;
        let model = res.headers().get("x-edgeinfer-model")?;
        log(
            &method,
            &path,
            res.status_code(),
            started,
            model.as_deref(),
            false,
            "off",
            None,
            None,
        );
        return Ok(res);
    }

    let kv = env.kv(CACHE_BINDING).ok();
    let key = kv.as_ref().and_then(|_| cache::key(&request));
    let mut cache_error = None;
    if let (Some(kv), Some(key)) = (&kv, &key) {
        match cache_read(kv, &key.key).await {
            Ok(Some(hit)) => {
                log(
                    &method,
                    &path,
                    200,
                    started,
                    Some(&key.model),
                    false,
                    "hit",
                    None,
                    None,
                );
                return respond(200, hit, Some(&key.model), &[], Some("hit"));
            }
            Ok(None) => {}
            Err(e) => cache_error = Some(e),
        }
    }

    let res = api::handle(&request);
    // Only answers are cached, so only answers say how the cache went.
    let cache_state = key.as_ref().filter(|_| res.status == 200).map(|_| "miss");
    if let (Some(kv), Some(key), 200) = (kv, key, res.status) {
        let ttl = cache::ttl_seconds(
            env.var("CACHE_TTL_SECONDS")
                .ok()
                .map(|v| v.to_string())
                .as_deref(),
        );
        cache_write(ctx, kv, key.key, res.body.clone(), ttl);
    }
    log(
        &method,
        &path,
        res.status,
        started,
        res.model.as_deref(),
        res.model_loaded,
        cache_state.unwrap_or("off"),
        res.internal_error.as_deref(),
        cache_error.as_deref(),
    );
    respond(
        res.status,
        res.body,
        res.model.as_deref(),
        &res.headers,
        cache_state,
    )
}

/// One JSON line per request, for Workers Logs.
#[allow(clippy::too_many_arguments)]
fn log(
    method: &Method,
    path: &str,
    status: u16,
    started: f64,
    model: Option<&str>,
    model_loaded: bool,
    cache: &str,
    error: Option<&str>,
    cache_error: Option<&str>,
) {
    let line = serde_json::json!({
        "method": method.as_ref(),
        "path": path,
        "status": status,
        "ms": js_sys::Date::now() - started,
        "model": model,
        "model_loaded": model_loaded,
        "cache": cache,
        "cache_error": cache_error,
        "error": error,
    });
    if status >= 500 || cache_error.is_some() {
        console_error!("{line}");
    } else {
        console_log!("{line}");
    }
}

fn respond(
    status: u16,
    body: Vec<u8>,
    model: Option<&str>,
    extra: &[(&'static str, String)],
    cache: Option<&str>,
) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(model) = model {
        headers.set("x-edgeinfer-model", model)?;
    }
    if let Some(cache) = cache {
        headers.set("x-edgeinfer-cache", cache)?;
    }
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(body)?
        .with_status(status)
        .with_headers(headers))
}
