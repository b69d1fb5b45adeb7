//! Turning a POST body into a typed request, with the status each failure
//! deserves: 415 not JSON, 413 too big, 400 not UTF-8 or not JSON, 422 JSON of
//! the wrong shape.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::ApiError;
use super::limits::MAX_BODY_BYTES;
use super::HttpRequest;

/// True for `application/json`, with or without parameters such as charset.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

pub fn json_body<T: DeserializeOwned>(req: &HttpRequest<'_>) -> Result<T, ApiError> {
    if !req.content_type.is_some_and(is_json) {
        return Err(ApiError::unsupported_media_type(req.content_type));
    }
    if !req.body_complete || req.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(format!(
            "the body is larger than the limit of {MAX_BODY_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(req.body).map_err(|e| {
        ApiError::malformed(format!(
            "the body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::malformed("the body is empty; send a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => ApiError::invalid(format!("invalid request: {e}")),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::malformed(format!("the body is not valid JSON: {e}"))
        }
    })
}
