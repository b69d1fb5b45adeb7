//! Rate limiting: one token bucket per caller (per API key, or per client IP
//! when no keys are configured). The Workers glue keeps each bucket in a
//! `RateLimiter` Durable Object named by [`bucket_name`], so every isolate in
//! the world draws from the same bucket; the arithmetic lives here.

use super::auth::Caller;
use super::error::ApiError;

/// Burst size when `RATE_LIMIT_BURST` is not set (wrangler.toml sets both
/// variables; without `RATE_LIMIT_PER_MINUTE` limiting is off).
pub const DEFAULT_BURST: u32 = 60;

/// The limit, from wrangler.toml's `[vars]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate: the bucket refills at this many tokens per minute.
    pub per_minute: u32,
    /// Bucket size: this many requests may arrive at once.
    pub burst: u32,
    /// What a request gets when its bucket's object fails or cannot be
    /// reached (`RATE_LIMIT_ON_ERROR`).
    pub on_error: OnError,
}

/// When the limiter itself fails: serve unlimited (the default: the
/// limiter protects the service, it must not take it down), or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Served, and a log line says so (`"rate_limit": "unavailable"`).
    #[default]
    Open,
    /// 503 `rate_limiter_unavailable` with `Retry-After`: for a deployment
    /// whose keys are there to cap spending, where an unlimited minute
    /// costs more than a refused one.
    Closed,
}

/// Seconds a client refused because the limiter failed is asked to wait.
pub const UNAVAILABLE_RETRY_SECONDS: u64 = 5;

impl RateLimit {
    /// Reads `RATE_LIMIT_PER_MINUTE` and `RATE_LIMIT_BURST`; an unset,
    /// `0` or `off` rate turns limiting off (`None`). A value that is not a number
    /// is a deployment mistake: the error names the variable.
    pub fn from_vars(
        per_minute: Option<&str>,
        burst: Option<&str>,
        on_error: Option<&str>,
    ) -> Result<Option<Self>, String> {
        let number = |name: &str, value: Option<&str>, default: u32| -> Result<u32, String> {
            match value.map(str::trim) {
                None | Some("") => Ok(default),
                Some("off") => Ok(0),
                Some(v) => v.parse().map_err(|_| {
                    format!("{name} must be a whole number of requests (or `off`), got `{v}`")
                }),
            }
        };
        let per_minute = number("RATE_LIMIT_PER_MINUTE", per_minute, 0)?;
        let burst = number("RATE_LIMIT_BURST", burst, DEFAULT_BURST)?;
        let on_error = match on_error.map(str::trim) {
            None | Some("") | Some("open") => OnError::Open,
            Some("closed") => OnError::Closed,
            Some(v) => {
                return Err(format!(
                    "RATE_LIMIT_ON_ERROR must be `open` or `closed`, got `{v}`"
                ))
            }
        };
        if per_minute == 0 {
            return Ok(None);
        }
        Ok(Some(RateLimit {
            per_minute,
            burst: burst.max(1),
            on_error,
        }))
    }

    /// What a request gets when its bucket's object failed: `None` to serve
    /// it (open), or the 503 to answer (closed).
    pub fn when_unavailable(&self) -> Option<ApiError> {
        match self.on_error {
            OnError::Open => None,
            OnError::Closed => Some(
                ApiError::unavailable(
                    "the rate limiter is unavailable and this deployment refuses requests it cannot count; retry shortly",
                )
                .with_code("rate_limiter_unavailable")
                .with_header("retry-after", UNAVAILABLE_RETRY_SECONDS.to_string()),
            ),
        }
    }

    /// The 429 for a caller whose next token comes in `retry_after` seconds.
    pub fn refusal(&self, retry_after: u64) -> ApiError {
        ApiError::rate_limited(retry_after, self.per_minute, self.burst)
    }
}

/// The Durable Object name of a caller's bucket. A client IP is only used
/// when keys are off; without one (local runs) all callers share a bucket.
/// An IPv6 client is counted by its /64, the block one subscriber gets, so
/// it cannot take a fresh bucket per address.
pub fn bucket_name(caller: &Caller, client_ip: Option<&str>) -> String {
    let Caller::Key(digest) = caller else {
        let Some(ip) = client_ip.map(str::trim) else {
            return "ip:unknown".to_string();
        };
        return match ip.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("ip:{v4}"),
                None => {
                    let s = v6.segments();
                    format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
            Err(_) => format!("ip:{ip}"),
        };
    };
    format!("key:{digest}")
}

/// One caller's bucket: full when new, one token per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated_ms: f64,
}

impl TokenBucket {
    pub fn full(limit: &RateLimit, now_ms: f64) -> Self {
        TokenBucket {
            tokens: f64::from(limit.burst),
            updated_ms: now_ms,
        }
    }

    /// Takes one token, or says in how many whole seconds one will be there.
    /// A clock that goes back is treated as standing still.
    pub fn take(&mut self, limit: &RateLimit, now_ms: f64) -> Result<(), u64> {
        let per_ms = f64::from(limit.per_minute) / 60_000.0;
        let elapsed = (now_ms - self.updated_ms).max(0.0);
        self.tokens = (self.tokens + elapsed * per_ms).min(f64::from(limit.burst));
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - self.tokens) / per_ms;
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars() {
        assert_eq!(RateLimit::from_vars(None, Some("5"), None), Ok(None));
        assert_eq!(
            RateLimit::from_vars(Some("600"), None, None),
            Ok(Some(RateLimit {
                per_minute: 600,
                burst: DEFAULT_BURST,
                on_error: OnError::Open,
            }))
        );
        assert_eq!(RateLimit::from_vars(Some("0"), None, None), Ok(None));
        assert_eq!(RateLimit::from_vars(Some("off"), Some("5"), None), Ok(None));
        assert_eq!(
            RateLimit::from_vars(Some(" 120 "), Some("0"), Some("closed")),
            Ok(Some(RateLimit {
                per_minute: 120,
                burst: 1,
                on_error: OnError::Closed,
            }))
        );
        let e = RateLimit::from_vars(Some("5"), None, Some("sometimes")).unwrap_err();
        assert!(e.contains("RATE_LIMIT_ON_ERROR"), "{e}");
        let e = RateLimit::from_vars(Some("lots"), None, None).unwrap_err();
        assert!(e.contains("RATE_LIMIT_PER_MINUTE"), "{e}");
        assert!(RateLimit::from_vars(None, Some("-3"), None).is_err());
    }

    #[test]
    fn burst_then_refill() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 3,
            on_error: OnError::Open,
        };
        let mut b = TokenBucket::full(&limit, 1_000.0);
        for _ in 0..3 {
            assert_eq!(b.take(&limit, 1_000.0), Ok(()));
        }
        assert_eq!(b.take(&limit, 1_000.0), Err(1));
        // One token a second: half a second later still empty, a second later one.
        assert_eq!(b.take(&limit, 1_500.0), Err(1));
        assert_eq!(b.take(&limit, 2_000.0), Ok(()));
        assert_eq!(b.take(&limit, 2_000.0), Err(1));
        // A long pause refills to the burst, not beyond.
        for _ in 0..3 {
            assert_eq!(b.take(&limit, 100_000.0), Ok(()));
        }
        assert!(b.take(&limit, 100_000.0).is_err());
        // The clock going back does not mint tokens.
        assert!(b.take(&limit, 50_000.0).is_err());
    }

    #[test]
    fn slow_rates_wait_longer() {
        let limit = RateLimit {
            per_minute: 2,
            burst: 1,
            on_error: OnError::Open,
        };
        let mut b = TokenBucket::full(&limit, 0.0);
        assert_eq!(b.take(&limit, 0.0), Ok(()));
        assert_eq!(b.take(&limit, 0.0), Err(30));
        assert_eq!(b.take(&limit, 29_500.0), Err(1));
    }

    #[test]
    fn refusal_says_when() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 5,
            on_error: OnError::Open,
        };
        let res = crate::api::HttpResponse::error(limit.refusal(7));
        assert_eq!(res.status, 429);
        assert!(res.headers.contains(&("retry-after", "7".to_string())));
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }

    /// A failed limiter serves the request (open, the default) or refuses
    /// it with a 503 a client can act on (closed).
    #[test]
    fn a_failed_limiter_opens_or_closes_as_configured() {
        let open = RateLimit::from_vars(Some("60"), None, None)
            .unwrap()
            .unwrap();
        assert!(open.when_unavailable().is_none());
        let closed = RateLimit::from_vars(Some("60"), None, Some("closed"))
            .unwrap()
            .unwrap();
        let res = crate::api::HttpResponse::error(closed.when_unavailable().unwrap());
        assert_eq!(res.status, 503);
        assert!(res.headers.contains(&("retry-after", "5".to_string())));
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limiter_unavailable");
    }

    #[test]
    fn buckets() {
        assert_eq!(
            bucket_name(&Caller::Key("ab".into()), Some("1.2.3.4")),
            "key:ab"
        );
        assert_eq!(
            bucket_name(&Caller::Anonymous, Some("1.2.3.4")),
            "ip:1.2.3.4"
        );
        assert_eq!(bucket_name(&Caller::Anonymous, None), "ip:unknown");
        let a = bucket_name(&Caller::Anonymous, Some("2001:db8:1:2:aaaa::1"));
        let b = bucket_name(&Caller::Anonymous, Some("2001:db8:1:2:bbbb:cccc:dddd:eeee"));
        let c = bucket_name(&Caller::Anonymous, Some("2001:db8:1:3::1"));
        assert_eq!(a, "ip6:2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            bucket_name(&Caller::Anonymous, Some("::ffff:192.0.2.9")),
            "ip:192.0.2.9"
        );
    }
}
