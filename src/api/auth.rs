//! API keys: who is calling, decided before any route runs.
//!
//! Keys come from the `API_KEYS` secret (`wrangler secret put API_KEYS`, or
//! `.dev.vars` locally): any number of keys separated by commas or
//! whitespace. Without it the API is open, as a fresh clone must be for
//! `scripts/dev` to answer at once. With it, every `/v1/*` route needs
//! `Authorization: Bearer <key>`; `/healthz` and the page at `/` stay open.
//!
//! A caller is known by the sha256 of its key, never by the key itself: that
//! digest is what sessions record as their owner and what names a rate-limit
//! bucket, so neither storage nor logs ever hold a key.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::hex;

/// The configured keys, as digests.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// Whether the secret is set at all.
    configured: bool,
    digests: Vec<[u8; 32]>,
}

/// Whether `path` is an API route: what keys guard and rate limits count.
/// `/healthz`, the page and unknown paths outside `/v1` are not.
pub fn guarded(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Keys are not configured: everyone is the same anonymous caller.
    Anonymous,
    /// The hex sha256 of the presented key.
    Key(String),
}

impl Caller {
    /// What a session stores as its owner (`None` for anonymous sessions).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::Key(digest) => Some(digest),
        }
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Parses the secret's value; `None` (no secret) means open. A secret
    /// that is set but holds no key (blank, only commas) admits no one: a
    /// mistyped secret must not silently open the API.
    pub fn parse(secret: Option<&str>) -> Self {
        let digests = secret
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .map(|k| digest(k.as_bytes()))
            .collect();
        ApiKeys {
            configured: secret.is_some(),
            digests,
        }
    }

    pub fn enabled(&self) -> bool {
        self.configured
    }

    /// Who is calling `path`, or the 401 to send. Paths outside `/v1/` are
    /// always open (the health check and the page; unknown ones get their 404).
    pub fn authorize(&self, path: &str, authorization: Option<&str>) -> Result<Caller, ApiError> {
        if !self.enabled() || !guarded(path) {
            return Ok(Caller::Anonymous);
        }
        let Some(header) = authorization else {
            return Err(ApiError::unauthorized(
                "this API needs a key: send `Authorization: Bearer <key>`",
            ));
        };
        let Some(key) = bearer_token(header) else {
            return Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <key>`",
            ));
        };
        // Hashing first gives equal lengths to compare; every configured key
        // is compared, so the time taken does not tell which one came close.
        let presented = digest(key.as_bytes());
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&presented)
            });
        if bool::from(matched) {
            Ok(Caller::Key(hex(&presented)))
        } else {
            Err(ApiError::unauthorized("the API key is not valid"))
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 7235 says).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_keys() {
        let keys = ApiKeys::parse(None);
        assert_eq!(keys.authorize("/v1/models", None), Ok(Caller::Anonymous));
    }

    #[test]
    fn a_blank_secret_admits_no_one() {
        let keys = ApiKeys::parse(Some(" ,\n "));
        assert!(keys.enabled());
        assert_eq!(keys.authorize("/v1/models", None).unwrap_err().status, 401);
        assert_eq!(
            keys.authorize("/v1/models", Some("Bearer ,"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(keys.authorize("/healthz", None), Ok(Caller::Anonymous));
    }

    #[test]
    fn guarded_paths() {
        for p in ["/v1", "/v1/", "/v1/models", "/v1/sessions/x/messages"] {
            assert!(guarded(p), "{p}");
        }
        for p in ["/", "/healthz", "/v1foo", "/V1/models", "/favicon.ico"] {
            assert!(!guarded(p), "{p}");
        }
    }

    #[test]
    fn keys_guard_v1_only() {
        let keys = ApiKeys::parse(Some("alpha, beta\ngamma"));
        assert!(keys.enabled());
        assert_eq!(keys.authorize("/healthz", None), Ok(Caller::Anonymous));
        assert_eq!(keys.authorize("/", None), Ok(Caller::Anonymous));
        for path in ["/v1/models", "/v1", "/v1/unknown"] {
            assert_eq!(keys.authorize(path, None).unwrap_err().status, 401);
        }
        let a = keys.authorize("/v1/models", Some("Bearer alpha")).unwrap();
        let g = keys
            .authorize("/v1/models", Some("bearer   gamma "))
            .unwrap();
        assert_ne!(a, g);
        assert_eq!(a.owner().map(str::len), Some(64));
        assert!(!a.owner().unwrap().contains("alpha"));
        for bad in [
            "Bearer alph",
            "Bearer alpha2",
            "Basic alpha",
            "alpha",
            "Bearer ",
            "",
        ] {
            let e = keys.authorize("/v1/models", Some(bad)).unwrap_err();
            assert_eq!((e.status, e.code), (401, "invalid_api_key"), "{bad:?}");
        }
    }
}
