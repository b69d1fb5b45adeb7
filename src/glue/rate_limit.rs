//! The `RateLimiter` Durable Object: one per caller (see
//! [`api::rate_limit::bucket_name`]), holding that caller's token bucket.
//! A Durable Object handles its requests one at a time, so two isolates
//! taking a token at once cannot both spend the last one.
//!
//! The bucket lives in the object's memory, not its storage (a write per
//! request would cost more than the check): when the object is evicted (after
//! idling) or restarted (a deploy) its caller starts again with a full bucket.
//! An idle caller's bucket refills in `burst * 60 / per_minute` seconds
//! anyway (6 s with wrangler.toml's limits), so only a restart in the middle
//! of a burst grants extra requests: one burst per restart at most.

use std::cell::Cell;

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::api::rate_limit::{self, RateLimit, TokenBucket};
use crate::api::ApiError;

const LIMITER_BINDING: &str = "RATE_LIMITER";
/// Object -> worker: seconds until the next token, on a refusal.
const RETRY_HEADER: &str = "retry-after";

/// Takes a token from `bucket`'s object: `Ok(())`, or the 429 to answer.
/// Without the binding (an old wrangler.toml) requests are not limited. When
/// the object cannot be reached or fails, the failure is logged and the
/// limit's `on_error` decides (api::rate_limit::OnError): served (open, the
/// default: the limiter must not take the service down) or a 503 (closed);
/// never a client 500 for our own fault.
pub async fn take(env: &Env, limit: &RateLimit, bucket: &str) -> std::result::Result<(), ApiError> {
    let Ok(namespace) = env.durable_object(LIMITER_BINDING) else {
        return Ok(());
    };
    let answer = async {
        let stub = namespace.id_from_name(bucket)?.get_stub()?;
        let res = stub.fetch_with_str("https://rate-limiter/take").await?;
        let retry_after = res.headers().get(RETRY_HEADER)?;
        Ok::<_, worker::Error>((res.status_code(), retry_after))
    };
    match answer.await {
        Ok((204, _)) => Ok(()),
        Ok((429, retry_after)) => {
            let seconds = retry_after.and_then(|v| v.parse().ok()).unwrap_or(1);
            Err(limit.refusal(seconds))
        }
        Ok((status, _)) => unavailable(limit, &format!("the RateLimiter object answered {status}")),
        Err(e) => unavailable(limit, &e.to_string()),
    }
}

/// The limiter failed: one log line (`"rate_limit": "unavailable"`, what an
/// operator counts in Workers Logs), then open or closed as configured.
fn unavailable(limit: &RateLimit, error: &str) -> std::result::Result<(), ApiError> {
    let refusal = limit.when_unavailable();
    let outcome = match refusal {
        None => "served unlimited",
        Some(_) => "refused 503",
    };
    worker::console_error!(
        "{}",
        serde_json::json!({ "rate_limit": "unavailable", "request": outcome, "error": error })
    );
    refusal.map_or(Ok(()), Err)
}

#[durable_object]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    bucket: Cell<Option<TokenBucket>>,
}

impl DurableObject for RateLimiter {
    fn new(_state: State, env: Env) -> Self {
        RateLimiter {
            // A malformed variable was already refused by the worker.
            limit: super::config(&env).rate_limit.clone().ok().flatten(),
            bucket: Cell::new(None),
        }
    }

    async fn fetch(&self, _req: Request) -> Result<Response> {
        let Some(limit) = self.limit else {
            return Ok(Response::empty()?.with_status(204));
        };
        let now = js_sys::Date::now();
        let mut bucket = self
            .bucket
            .get()
            .unwrap_or_else(|| TokenBucket::full(&limit, now));
        let taken = bucket.take(&limit, now);
        self.bucket.set(Some(bucket));
        match taken {
            Ok(()) => Ok(Response::empty()?.with_status(204)),
            Err(seconds) => {
                let res = Response::empty()?.with_status(429);
                res.headers().set(RETRY_HEADER, &seconds.to_string())?;
                Ok(res)
            }
        }
    }
}

/// The bucket a request draws from.
pub fn bucket_for(caller: &crate::api::auth::Caller, req: &Request) -> String {
    let ip = req.headers().get("cf-connecting-ip").ok().flatten();
    rate_limit::bucket_name(caller, ip.as_deref())
}
