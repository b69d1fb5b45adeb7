//! The deployment's settings (wrangler.toml `[vars]` and the `API_KEYS`
//! secret), read once per isolate: they are fixed for its life, so no
//! request pays for parsing them. A mistake in one is logged once and
//! handled as its own documented fallback, never as a panic.

use super::auth::ApiKeys;
use super::cache;
use super::cors::Cors;
use super::rate_limit::RateLimit;
use super::variants::Variants;

#[derive(Debug)]
pub struct Config {
    /// `API_KEYS` (a secret): unset means open.
    pub keys: ApiKeys,
    /// `RATE_LIMIT_PER_MINUTE` / `RATE_LIMIT_BURST`: `Ok(None)` is off; a
    /// value that is not a number makes every limited route answer 500
    /// (with the variable named in the log), rather than run unprotected.
    pub rate_limit: Result<Option<RateLimit>, String>,
    /// `MODEL_VARIANTS`: a broken value serves every caller the model they
    /// asked for.
    pub variants: Option<Variants>,
    /// `CORS_ALLOW_ORIGINS`.
    pub cors: Cors,
    /// `CACHE_TTL_SECONDS`.
    pub cache_ttl_seconds: u64,
    /// `DEFAULT_CHAT_MODEL`: the model of sessions that name none.
    pub default_chat_model: Option<String>,
    /// What was wrong with the settings, for the log.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads every setting through `var` (a var or secret by name).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut problems = Vec::new();
        let rate_limit = RateLimit::from_vars(
            var("RATE_LIMIT_PER_MINUTE").as_deref(),
            var("RATE_LIMIT_BURST").as_deref(),
            var("RATE_LIMIT_ON_ERROR").as_deref(),
        );
        if let Err(e) = &rate_limit {
            problems.push(e.clone());
        }
        let variants = match Variants::parse(var("MODEL_VARIANTS").as_deref()) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        Config {
            keys: ApiKeys::parse(var("API_KEYS").as_deref()),
            rate_limit,
            variants,
            cors: Cors::parse(var("CORS_ALLOW_ORIGINS").as_deref()),
            cache_ttl_seconds: cache::ttl_seconds(var("CACHE_TTL_SECONDS").as_deref()),
            default_chat_model: var("DEFAULT_CHAT_MODEL").filter(|v| !v.is_empty()),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_open_unlimited_and_default() {
        let c = Config::read(|_| None);
        assert!(!c.keys.enabled());
        assert_eq!(c.rate_limit, Ok(None));
        assert_eq!(c.cache_ttl_seconds, cache::DEFAULT_TTL_SECONDS);
        assert!(c.default_chat_model.is_none());
        assert!(c.problems.is_empty());
    }

    #[test]
    fn mistakes_are_named_once() {
        let c = Config::read(|name| match name {
            "RATE_LIMIT_PER_MINUTE" => Some("many".into()),
            "MODEL_VARIANTS" => Some("{".into()),
            "DEFAULT_CHAT_MODEL" => Some(String::new()),
            _ => None,
        });
        assert!(c.rate_limit.is_err());
        assert!(c.variants.is_none());
        assert!(c.default_chat_model.is_none());
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(c.problems[0].contains("RATE_LIMIT_PER_MINUTE"));
    }
}
