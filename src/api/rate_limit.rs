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
}

impl RateLimit {
    /// Reads `RATE_LIMIT_PER_MINUTE` and `RATE_LIMIT_BURST`; an unset,
    /// `0` or `off` rate turns limiting off (`None`). A value that is not a number
    /// is a deployment mistake: the error names the variable.
    pub fn from_vars(
        per_minute: Option<&str>,
        burst: Option<&str>,
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
        if per_minute == 0 {
            return Ok(None);
        }
        Ok(Some(RateLimit {
            per_minute,
            burst: burst.max(1),
        }))
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
        assert_eq!(RateLimit::from_vars(None, Some("5")), Ok(None));
        assert_eq!(
            RateLimit::from_vars(Some("600"), None),
            Ok(Some(RateLimit {
                per_minute: 600,
                burst: DEFAULT_BURST
            }))
        );
        assert_eq!(RateLimit::from_vars(Some("0"), None), Ok(None));
        assert_eq!(RateLimit::from_vars(Some("off"), Some("5")), Ok(None));
        assert_eq!(
            RateLimit::from_vars(Some(" 120 "), Some("0")),
            Ok(Some(RateLimit {
                per_minute: 120,
                burst: 1
            }))
        );
        let e = RateLimit::from_vars(Some("lots"), None).unwrap_err();
        assert!(e.contains("RATE_LIMIT_PER_MINUTE"), "{e}");
        assert!(RateLimit::from_vars(None, Some("-3")).is_err());
    }

    #[test]
    fn burst_then_refill() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 3,
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
        };
        let res = crate::api::HttpResponse::error(limit.refusal(7));
        assert_eq!(res.status, 429);
        assert!(res.headers.contains(&("retry-after", "7".to_string())));
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
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
