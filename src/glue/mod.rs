//! The Workers layer: moves a request's bytes from workerd into [`crate::api`]
//! and the answer back. It does no math and makes no API decisions. One
//! file per binding: the fetch handler ([`router`]), the KV cache
//! ([`cache`]), chat replies and a sharded model's passes ([`chat`], over
//! [`shards`]), the `ChatSession` Durable Object and its SQLite store
//! ([`session`]; under the Deno server its KV store, [`session_kv`]), the
//! `RateLimiter` object ([`rate_limit`]), the log line ([`log`]). This file
//! holds what they share: the host's clock, time and randomness, the
//! settings, a trace, and an answer from the core's [`HttpResponse`].

use std::sync::OnceLock;

use worker::{console_error, event, Env, Headers, Response, Result};

use crate::api::config::Config;
use crate::api::timing::server_timing;
use crate::api::trace::Trace;
use crate::api::{Context, HttpResponse, Served};
use wasm_bindgen::prelude::wasm_bindgen;

mod cache;
mod chat;
mod log;
mod rate_limit;
mod responses;
mod router;
mod session;
mod session_kv;
mod shards;

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

/// Worker -> object, worker -> shards: W3C trace context.
const TRACEPARENT_HEADER: &str = "traceparent";

/// The request's trace: the caller's `traceparent`, or a new one.
fn trace(traceparent: Option<&str>) -> Trace {
    let mut random = [0u8; 24];
    self::random(&mut random);
    Trace::continue_or_start(traceparent, random)
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
