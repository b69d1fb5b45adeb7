//! Any request a client can send: a method, a path, a content type and a body,
//! put through every check before a model runs (`api::validate`). Oracles:
//! no panic, and a refused request gets the same status and a JSON error
//! from the full handler (`api::handle_with`, over a native session store
//! holding the session the paths name), so validation and serving agree;
//! a session request validation passes that runs no model (create, read,
//! delete) is served without a 5xx.

use edgeinfer::api::chat::GenerationFields;
use edgeinfer::api::sessions::{MemoryStore, SessionMeta, SessionStore};
use edgeinfer::api::{self, Context, HttpRequest, Route};

/// The session the paths below name.
const SESSION: &str = "0123456789abcdef0123456789abcdef";

/// A store holding [`SESSION`] (a tinylm session, cheap to run).
fn store() -> MemoryStore {
    let mut store = MemoryStore::new();
    store
        .create(&SessionMeta {
            id: SESSION.into(),
            created: 0,
            model: "shakespeare-llama".into(),
            system: None,
            defaults: GenerationFields::default(),
            owner: None,
        })
        .expect("an empty store takes a session");
    store
}

const METHODS: [&str; 5] = ["POST", "GET", "DELETE", "PUT", "PATCH"];
const PATHS: [&str; 10] = [
    "/v1/classify",
    "/v1/embeddings",
    "/v1/similarity",
    "/v1/chat/completions",
    "/v1/sessions",
    "/v1/sessions/0123456789abcdef0123456789abcdef/messages",
    "/v1/models",
    "/v1/models/lande",
    "/healthz",
    "/v1/sessions/0123456789abcdef0123456789abcdef",
];
const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    None,
    Some("text/plain"),
];

/// One input; panics on a finding.
pub fn check(data: &[u8]) {
    let [route, shape, rest @ ..] = data else {
        return;
    };
    // The first byte picks the path: a route, or (128 and up) bytes of the
    // input up to a newline. The second picks the method, the content type
    // and whether the body was read whole, independently of each other.
    let (path, body) = if *route >= 128 {
        let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        (
            String::from_utf8_lossy(&rest[..cut]).into_owned(),
            rest.get(cut + 1..).unwrap_or_default(),
        )
    } else {
        (PATHS[usize::from(*route) % PATHS.len()].to_string(), rest)
    };
    let req = HttpRequest {
        method: METHODS[usize::from(shape & 0x07) % METHODS.len()],
        path: &path,
        content_type: CONTENT_TYPES[usize::from((shape >> 3) & 0x03)],
        body,
        body_complete: shape & 0x20 == 0,
        session: None,
    };
    let ctx = Context::default();
    let route = Route::parse(&path);
    let Err(e) = api::validate(&req) else {
        // Reads, deletes and creations are cheap: serve them too.
        let cheap = match route {
            Some(Route::Session(_)) => true,
            Some(Route::Sessions) => req.method == "POST",
            _ => false,
        };
        if cheap {
            let res = api::handle_with(&req, &ctx, &mut store());
            assert!(res.status < 500, "{} for {} {path}", res.status, req.method);
        }
        return;
    };
    assert!(
        (400..500).contains(&e.status),
        "{} for a client's request: {}",
        e.status,
        e.message
    );
    let res = api::handle_with(&req, &ctx, &mut store());
    assert_eq!(
        res.status, e.status,
        "validate and handle disagree: {}",
        e.message
    );
    let body: serde_json::Value = serde_json::from_slice(&res.body).expect("a JSON error body");
    assert!(body["error"]["message"].is_string());
}
