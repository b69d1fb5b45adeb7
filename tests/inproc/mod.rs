//! The API called in this process, as `api::handle_with` over a native
//! store: what the native session and structured-output tests share.

use edgeinfer::api::sessions::SessionStore;
use edgeinfer::api::{self, Context, HttpRequest, HttpResponse};
use serde_json::Value;

pub fn post(
    store: &mut dyn SessionStore,
    ctx: &Context<'_>,
    path: &str,
    body: &Value,
) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap();
    api::handle_with(&HttpRequest::post_json(path, &bytes), ctx, store)
}

/// A request without a body (`GET`, `DELETE`).
pub fn request(
    store: &mut dyn SessionStore,
    ctx: &Context<'_>,
    method: &str,
    path: &str,
) -> HttpResponse {
    api::handle_with(&HttpRequest::bodiless(method, path), ctx, store)
}

/// The body as JSON; a body that is not is the test's failure, shown.
pub fn json_of(res: &HttpResponse) -> Value {
    serde_json::from_slice(&res.body).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}): {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })
}
