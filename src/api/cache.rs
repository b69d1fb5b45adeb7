//! What may be cached, under which key. The glue stores and fetches; the
//! decisions live here so they are the same on every host and tested natively.
//!
//! A key is derived from the exact model bytes (their sha256, and the
//! encoder's for a head on embeddings) and the request in canonical form, so
//! an entry can only ever answer the model version that produced it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{hex, parse::json_body, Context, HttpRequest, Route, Served};
use crate::registry::{InputSpec, ModelSpec, MODELS};

/// Default lifetime of a cache entry, when `CACHE_TTL_SECONDS` is unset.
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 60 * 60;
/// KV refuses expirations shorter than a minute.
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

/// The cache key of a request, or `None` when the request is not cacheable
/// (not an inference route, or a body that will be refused anyway). The
/// model is resolved in `ctx`, so each arm of an A/B split has its own entries.
pub fn key(req: &HttpRequest<'_>, ctx: &Context<'_>) -> Option<CacheKey> {
    let route = match Route::parse(req.path)? {
        Route::Classify => "classify",
        Route::Embeddings => "embeddings",
        Route::Similarity => "similarity",
        _ => return None,
    };
    if req.method != "POST" {
        return None;
    }
    let mut body: Value = json_body(req).ok()?;
    let (spec, arm) = ctx.resolve(body.get("model")?.as_str()?).ok()?;
    // `id` and `id@version` ask for the same bytes: one entry serves both.
    body["model"] = Value::String(spec.qualified_name());
    // serde_json's map is ordered by key, so field order does not matter.
    let canonical = body.to_string();
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update([0]);
    hash.update(canonical.as_bytes());
    Some(CacheKey {
        key: format!("v1:{route}:{}:{}", fingerprint(spec), hex(&hash.finalize())),
        served: Served {
            arm,
            ..Served::new(spec, false)
        },
    })
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
/// at least KV's minimum; unset or unreadable means the default.
pub fn ttl_seconds(var: Option<&str>) -> u64 {
    var.and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_TTL_SECONDS, |s| s.max(MIN_TTL_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    /// The key with no A/B split in force.
    fn key(req: &HttpRequest<'_>) -> Option<CacheKey> {
        super::key(req, &Context::default())
    }

    fn req<'a>(path: &'a str, body: &'a str) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            path,
            content_type: Some("application/json"),
            body: body.as_bytes(),
            body_complete: true,
        }
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
    fn ttl_has_a_default_and_a_floor() {
        assert_eq!(ttl_seconds(None), DEFAULT_TTL_SECONDS);
        assert_eq!(ttl_seconds(Some("3600")), 3600);
        assert_eq!(ttl_seconds(Some("5")), MIN_TTL_SECONDS);
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
            let k = super::key(&req("/v1/classify", body), &ctx).unwrap();
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
