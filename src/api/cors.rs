//! Cross-origin access, so a browser app served from another origin can
//! call the API (`fetch` from a page on `https://app.example`). The
//! deployer names the origins in the `CORS_ALLOW_ORIGINS` var: `*` (the
//! default: the API takes bearer keys, never cookies, so any page may
//! call it with a key it was given), a comma-separated list of origins,
//! or empty to send no CORS headers at all.

/// Which origins may read the API's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    Off,
    Any,
    Origins(Vec<String>),
}

/// What a preflight (`OPTIONS` with `Access-Control-Request-Method`) asks.
#[derive(Debug, Clone, Copy)]
pub struct Preflight<'a> {
    /// The route's methods, as its `Allow` header lists them.
    pub allow: &'static str,
    /// `Access-Control-Request-Headers`, if sent.
    pub headers: Option<&'a str>,
}

/// How long a browser may reuse a preflight's answer (seconds).
const MAX_AGE: &str = "86400";

/// Whether `list` is a header-name list a browser would send (token
/// characters, commas, spaces): only such a list is echoed back.
fn is_header_list(list: &str) -> bool {
    list.len() <= 2048
        && list
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
}

impl Cors {
    /// The `CORS_ALLOW_ORIGINS` var: unset means `*`.
    pub fn parse(var: Option<&str>) -> Cors {
        let Some(var) = var.map(str::trim) else {
            return Cors::Any;
        };
        if var == "*" {
            return Cors::Any;
        }
        let origins: Vec<String> = var
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            Cors::Off
        } else {
            Cors::Origins(origins)
        }
    }

    /// The CORS headers of the answer to a request from `origin` (a
    /// preflight's too, with what it asks).
    pub fn headers(
        &self,
        origin: Option<&str>,
        preflight: Option<Preflight<'_>>,
    ) -> Vec<(&'static str, String)> {
        let allowed = match (self, origin) {
            (Cors::Off, _) | (_, None) => return Vec::new(),
            (Cors::Any, Some(_)) => "*".to_string(),
            (Cors::Origins(list), Some(origin)) => {
                let asked = origin.trim_end_matches('/').to_ascii_lowercase();
                if !list.contains(&asked) {
                    // The answer depends on the origin: caches must know.
                    return vec![("vary", "origin".into())];
                }
                origin.to_string()
            }
        };
        let mut headers = vec![("access-control-allow-origin", allowed)];
        if matches!(self, Cors::Origins(_)) {
            headers.push(("vary", "origin".into()));
        }
        match preflight {
            Some(p) => {
                headers.push(("access-control-allow-methods", p.allow.to_string()));
                // What the page's client sends (the openai SDK adds its own
                // x-stainless-* headers): echoed when well-formed, since a
                // wildcard does not cover `authorization`.
                let asked = p.headers.filter(|h| is_header_list(h));
                headers.push((
                    "access-control-allow-headers",
                    asked
                        .unwrap_or("authorization, content-type, traceparent, x-session-id")
                        .to_string(),
                ));
                headers.push(("access-control-max-age", MAX_AGE.into()));
            }
            // Timing, cache, model and rate-limit headers readable by the page.
            None => headers.push(("access-control-expose-headers", "*".into())),
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRE: Preflight<'static> = Preflight {
        allow: "POST, OPTIONS",
        headers: Some("authorization, content-type, x-stainless-os"),
    };

    fn get<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn any_origin_by_default_and_none_when_turned_off() {
        let any = Cors::parse(None);
        assert_eq!(any, Cors::parse(Some(" * ")));
        let h = any.headers(Some("https://app.example"), None);
        assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&h, "access-control-expose-headers"), Some("*"));
        assert!(any.headers(None, None).is_empty(), "no Origin, no CORS");
        let off = Cors::parse(Some(""));
        assert_eq!(off, Cors::Off);
        assert!(off
            .headers(Some("https://app.example"), Some(PRE))
            .is_empty());
    }

    #[test]
    fn a_list_admits_its_origins_only_and_varies_on_origin() {
        let cors = Cors::parse(Some("https://App.example/, http://localhost:5173"));
        let h = cors.headers(Some("https://app.example"), Some(PRE));
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(get(&h, "vary"), Some("origin"));
        assert_eq!(
            get(&h, "access-control-allow-methods"),
            Some("POST, OPTIONS")
        );
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("authorization, content-type, x-stainless-os")
        );
        let other = cors.headers(Some("https://evil.example"), Some(PRE));
        assert_eq!(other, vec![("vary", "origin".to_string())]);
    }

    #[test]
    fn a_malformed_header_list_is_not_echoed() {
        let h = Cors::Any.headers(
            Some("https://a.example"),
            Some(Preflight {
                allow: "GET, HEAD, OPTIONS",
                headers: Some("x\r\nset-cookie: a"),
            }),
        );
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("authorization, content-type, traceparent, x-session-id")
        );
    }
}
