//! Answers in KV: a stateless inference call's answer is looked up, and
//! stored after it goes out, when a `CACHE` namespace is bound. What is
//! cacheable, under which key and for how long, is [`api::cache`]'s
//! decision; this only reads and writes the bytes.

use std::time::Duration;

use futures_util::future::{select, Either};
use worker::{console_error, kv::KvStore, Delay, Env, Response, Result};

use super::log::LogLine;
use crate::api::config::Config;
use crate::api::{self, cache, Mode, Stateless};

/// The KV binding that caches inference answers (optional).
const CACHE_BINDING: &str = "CACHE";

/// A stateless call's answer: from the cache when it holds one, else
/// computed (and stored when [`cache::miss`] says it may be).
/// `owner` is the caller's key digest (entries are scoped to it).
pub async fn serve(
    call: Stateless<'_>,
    owner: Option<&str>,
    env: &Env,
    ctx: &worker::Context,
    config: &Config,
    mut line: LogLine,
) -> Result<Response> {
    let kv = env.kv(CACHE_BINDING).ok();
    let key = kv.as_ref().and_then(|_| cache::key(&call, owner));
    let mut cache_ms = None;
    if let (Some(kv), Some(key)) = (&kv, &key) {
        let asked = super::clock();
        let found = read(kv, &key.key).await;
        cache_ms = Some(super::clock() - asked);
        match found {
            Ok(Some(hit)) => {
                let res = cache::hit(key, hit);
                line.cache("hit");
                line.write(200, res.model.as_deref(), None);
                return super::respond(&res, cache_ms);
            }
            Ok(None) => {}
            Err(e) => line.cache_failed(e),
        }
    }
    let mut res = api::serve_stateless(call, Mode::Serve);
    if let (Some(kv), Some(key)) = (kv, key) {
        if let Some(stored) = cache::miss(&mut res) {
            line.cache("miss");
            let ttl = cache::stored_ttl(config.cache_ttl_seconds, min_ttl(env));
            write(ctx, kv, key.key, stored, ttl);
        }
    }
    line.write(
        res.status,
        res.model.as_deref(),
        res.internal_error.as_deref(),
    );
    super::respond(&res, cache_ms)
}

/// A read of the cache that gives up after [`cache::READ_TIMEOUT_MS`]: a slow
/// or failing KV must cost a request no more than that.
async fn read(kv: &KvStore, key: &str) -> std::result::Result<Option<Vec<u8>>, String> {
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
fn min_ttl(env: &Env) -> Option<u64> {
    let kv = js_sys::Reflect::get(env, &CACHE_BINDING.into()).ok()?;
    let min = js_sys::Reflect::get(&kv, &"minExpirationTtl".into()).ok()?;
    min.as_f64().map(|s| s.max(0.0) as u64)
}

/// Stores an answer after the response has gone out; a failure is logged only.
fn write(ctx: &worker::Context, kv: KvStore, key: String, body: Vec<u8>, ttl: u64) {
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
