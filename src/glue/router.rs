//! The fetch handler: every request to the worker comes in here. It answers
//! preflights, checks keys and rate limits, reads the body (up to its
//! limit), parses the request once ([`api::parse`]) and hands the parsed
//! call to the binding that serves it: the cache ([`super::cache`]), a
//! chat reply ([`super::chat`]), a session's object ([`super::session`]).
//! Then CORS headers, and a HEAD's body dropped.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use worker::{console_error, event, Env, Headers, Method, Request, Response, Result};

use super::log::LogLine;
use super::{cache, chat, config, rate_limit, respond, session};
use crate::api::auth::{self, Caller};
use crate::api::config::Config;
use crate::api::cors::Preflight;
use crate::api::{
    self,
    limits::{MAX_BODY_BYTES, MAX_DRAINED_BYTES},
    variants, ApiError, Call, Context, HttpRequest, HttpResponse, Route,
};

/// True until this isolate has started serving its first request.
static COLD: AtomicBool = AtomicBool::new(true);

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
    let started = super::clock();
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
    let line = LogLine::request(&method_sent, &path, started, isolate);
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
        ..super::context()
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
        super::trace(
            req.headers()
                .get(super::TRACEPARENT_HEADER)
                .ok()
                .flatten()
                .as_deref(),
        )
    };
    match parsed.call {
        Call::Stateless(call) => cache::serve(call, api_ctx.owner, env, ctx, config, line).await,
        Call::Chat(call) => chat::serve_chat(call, &api_ctx, env, &trace(), line).await,
        Call::Session(request) => {
            let res = session::forward(env, &request.into_call(&api_ctx), &trace()).await?;
            line.write_forwarded(&res)?;
            Ok(res)
        }
        Call::Response(request) => {
            super::responses::serve(request, &api_ctx, env, &trace(), line).await
        }
    }
}

/// The header naming a session, as an alternative to the `session` field.
const SESSION_HEADER: &str = "x-session-id";

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
