//! What may be cached, under which key. The glue stores and fetches; the
//! decisions live here so they are the same on every host and tested natively.
//!
//! A key is derived from the exact model bytes (their sha256, and the
//! encoder's for a head on embeddings), the request in canonical form and
//! the caller's API key, so an entry can only ever answer the model version
//! that produced it, for the key that asked it. With API keys on, a second
//! key asking what the first just asked misses: a hit would tell it the
//! other key's input. With keys off every caller is the same caller, and
//! the cache is shared, as the open API is.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::inference::Resolved;
use super::request::Stateless;
use super::variants::Arm;
use super::{hex, HttpResponse, Served};
use crate::registry::{InputSpec, ModelSpec, MODELS};

/// Default lifetime of a cache entry, when `CACHE_TTL_SECONDS` is unset.
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 60 * 60;
/// Workers KV refuses expirations shorter than a minute (a store that
/// says it takes shorter ones, as Deno KV does, gets the configured TTL:
/// see [`stored_ttl`]).
pub const MIN_TTL_SECONDS: u64 = 60;
/// How long a cache read may take before the request is served uncached.
pub const READ_TIMEOUT_MS: u64 = 250;

/// Where a cacheable request's response is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    pub key: String,
    /// The model that made the stored answer, for the headers on a hit.
    pub served: Served,
}

/// The cache key of a parsed request made by `owner` (the caller's key
/// digest, [`super::auth::Caller::owner`]; `None` with keys off), or `None`
/// when it is not cacheable (not an inference route). The model was
/// resolved when the request was parsed, so each arm of an A/B split has
/// its own entries.
pub fn key(call: &Stateless<'_>, owner: Option<&str>) -> Option<CacheKey> {
    match call {
        Stateless::Classify(c) => key_of("classify", c, owner),
        Stateless::Embeddings(c) => key_of("embeddings", c, owner),
        Stateless::Similarity(c) => key_of("similarity", c, owner),
        _ => None,
    }
}

fn key_of<T: Serialize>(route: &str, call: &Resolved<T>, owner: Option<&str>) -> Option<CacheKey> {
    let mut body = serde_json::to_value(&call.body).ok()?;
    // `id` and `id@version` ask for the same bytes: one entry serves both.
    body["model"] = Value::String(call.spec.qualified_name());
    // serde_json's map is ordered by key: one text per request.
    let canonical = body.to_string();
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(canonical.as_bytes());
    // The scope: the owner's digest, or one shared scope with keys off.
    hash.update([0]);
    hash.update(owner.unwrap_or("").as_bytes());
    Some(CacheKey {
        key: format!(
            "v3:{route}:{}:{}",
            fingerprint(call.spec),
            hex(&hash.finalize())
        ),
        served: served(call.spec, call.arm),
    })
}

fn served(spec: &'static ModelSpec, arm: Option<Arm>) -> Served {
    Served {
        arm,
        ..Served::new(spec, false)
    }
}

/// The answer to a request found in the cache.
pub fn hit(key: &CacheKey, body: Vec<u8>) -> HttpResponse {
    let mut res = HttpResponse::json(200, &());
    res.body = body;
    res.model = Some(Box::new(key.served.clone()));
    res.headers.push(("x-edgeinfer-cache", "hit".into()));
    res
}

/// A fresh answer to a cacheable request: what to store (only a 200 is:
/// an error may depend on a limit or a model that changes), marking the
/// answer a miss. `None` for anything else, unmarked.
pub fn miss(res: &mut HttpResponse) -> Option<Vec<u8>> {
    if res.status != 200 {
        return None;
    }
    res.headers.push(("x-edgeinfer-cache", "miss".into()));
    Some(res.body.clone())
}

/// The sha256 of everything the model's answer depends on.
fn fingerprint(spec: &ModelSpec) -> String {
    match spec.input {
        InputSpec::SentenceEmbedding { encoder, .. } => {
            let mut hash = Sha256::new();
            hash.update(spec.sha256.as_bytes());
            if let Some(encoder) = MODELS.get(encoder) {
                hash.update(encoder.sha256.as_bytes());
            }
            hex(&hash.finalize())
        }
        _ => spec.sha256.to_string(),
    }
}

/// The entry lifetime from the `CACHE_TTL_SECONDS` variable: whole seconds,
/// at least one; unset or unreadable means the default.
pub fn ttl_seconds(var: Option<&str>) -> u64 {
    var.and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_TTL_SECONDS, |s| s.max(1))
}

/// The lifetime an entry is stored with: the configured one, raised to the
/// store's shortest (`store_minimum`, when the store states one; else
/// Workers KV's [`MIN_TTL_SECONDS`]).
pub fn stored_ttl(configured: u64, store_minimum: Option<u64>) -> u64 {
    configured.max(store_minimum.unwrap_or(MIN_TTL_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    use crate::api::{parse, Call, Context, HttpRequest};

    /// The key of `req` parsed in `ctx`.
    fn key_in(req: &HttpRequest<'_>, ctx: &Context<'_>) -> Option<CacheKey> {
        match parse(req, ctx).ok()?.call {
            Call::Stateless(call) => super::key(&call, ctx.owner),
            _ => None,
        }
    }

    /// The key with no A/B split in force.
    fn key(req: &HttpRequest<'_>) -> Option<CacheKey> {
        key_in(req, &Context::default())
    }

    fn req<'a>(path: &'a str, body: &'a str) -> HttpRequest<'a> {
        HttpRequest::post_json(path, body.as_bytes())
    }

    /// With API keys on, one key's entries never answer another key (a hit
    /// would tell it the other's input); one key asking again hits.
    #[test]
    fn entries_are_scoped_to_the_callers_key() {
        let body = r#"{"model":"lande","input":"hello"}"#;
        let in_scope = |owner: Option<&'static str>| {
            let ctx = Context {
                owner,
                ..Context::default()
            };
            key_in(&req("/v1/classify", body), &ctx).unwrap().key
        };
        let (a, b, open) = (
            in_scope(Some("digest-a")),
            in_scope(Some("digest-b")),
            in_scope(None),
        );
        assert_ne!(a, b);
        assert_ne!(a, open);
        assert_eq!(a, in_scope(Some("digest-a")));
        assert_eq!(open, in_scope(None));
    }

    #[test]
    fn same_request_same_key_whatever_the_field_order_or_version_spelling() {
        let a = key(&req("/v1/classify", r#"{"model":"lande","input":"hello"}"#)).unwrap();
        let b = key(&req(
            "/v1/classify",
            r#"{"input":"hello","model":"lande@1.0.10"}"#,
        ))
        .unwrap();
        assert_eq!(a, b);
        assert!(a.key.contains(registry::find("lande").unwrap().sha256));
        assert_eq!(a.served.model, "lande@1.0.10");
    }

    #[test]
    fn different_input_route_or_options_differ() {
        let base = key(&req("/v1/classify", r#"{"model":"lande","input":"hello"}"#)).unwrap();
        for other in [
            key(&req(
                "/v1/classify",
                r#"{"model":"lande","input":"hello!"}"#,
            )),
            key(&req(
                "/v1/classify",
                r#"{"model":"lande","input":"hello","top_k":5}"#,
            )),
            key(&req(
                "/v1/classify",
                r#"{"model":"lande","input":["hello"]}"#,
            )),
        ] {
            assert_ne!(other.unwrap(), base);
        }
    }

    #[test]
    fn not_cacheable_when_it_will_be_refused_or_is_not_inference() {
        assert!(key(&req("/v1/models", "{}")).is_none());
        assert!(key(&req("/v1/classify", r#"{"model":"nope","input":"x"}"#)).is_none());
        assert!(key(&req("/v1/classify", "{not json")).is_none());
        let mut get = req("/v1/classify", r#"{"model":"lande","input":"x"}"#);
        get.method = "GET";
        assert!(key(&get).is_none());
    }

    #[test]
    fn only_answers_are_stored() {
        let mut ok = HttpResponse::json(200, &serde_json::json!({"a": 1}));
        assert_eq!(miss(&mut ok), Some(ok.body.clone()));
        assert!(ok.headers.contains(&("x-edgeinfer-cache", "miss".into())));
        let mut refused = HttpResponse::error(crate::api::ApiError::invalid("no"));
        assert_eq!(miss(&mut refused), None);
        assert!(refused.headers.is_empty());
    }

    #[test]
    fn ttl_has_a_default_and_a_floor() {
        assert_eq!(ttl_seconds(None), DEFAULT_TTL_SECONDS);
        assert_eq!(ttl_seconds(Some("3600")), 3600);
        assert_eq!(ttl_seconds(Some("5")), 5);
        assert_eq!(ttl_seconds(Some("0")), 1);
        assert_eq!(stored_ttl(5, None), MIN_TTL_SECONDS);
        assert_eq!(stored_ttl(5, Some(0)), 5);
        assert_eq!(stored_ttl(3600, None), 3600);
        assert_eq!(ttl_seconds(Some("soon")), DEFAULT_TTL_SECONDS);
    }

    #[test]
    fn each_arm_of_a_split_has_its_own_entries() {
        let variants = crate::api::variants::Variants::parse(Some(
            r#"{"sentiment": {"variant": "sentiment@1.1.0", "fraction": 0.5}}"#,
        ))
        .unwrap();
        let body = r#"{"model":"sentiment","input":"what a day"}"#;
        let mut keys = std::collections::BTreeMap::new();
        for subject in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let ctx = Context {
                variants: Some(&variants),
                subject: Some(subject),
                ..Context::default()
            };
            let k = key_in(&req("/v1/classify", body), &ctx).unwrap();
            keys.insert(k.served.model.clone(), k.key);
        }
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_eq!(
            keys.values()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            2
        );
    }
}
