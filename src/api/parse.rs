//! Turning a POST body into a typed request, with the status each failure
//! deserves: 415 not JSON, 413 too big, 400 not UTF-8 or not JSON, 422 JSON of
//! the wrong shape.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::Value;

use super::error::ApiError;
use super::limits::{MAX_BODY_BYTES, MAX_INPUTS, MAX_INPUT_CHARS};
use super::HttpRequest;

/// True for `application/json`, with or without parameters such as charset.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// 413 when the glue stopped reading the body at the limit.
pub fn body_within_limit(req: &HttpRequest<'_>) -> Result<(), ApiError> {
    if !req.body_complete || req.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(format!(
            "the body is larger than the limit of {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn json_body<T: DeserializeOwned>(req: &HttpRequest<'_>) -> Result<T, ApiError> {
    if !req.content_type.is_some_and(is_json) {
        return Err(ApiError::unsupported_media_type(req.content_type));
    }
    body_within_limit(req)?;
    let text = std::str::from_utf8(req.body).map_err(|e| {
        ApiError::malformed(format!(
            "the body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::malformed("the body is empty; send a JSON object"));
    }
    let malformed =
        |e: serde_json::Error| ApiError::malformed(format!("the body is not valid JSON: {e}"));
    serde_json::from_str(text).map_err(|e| match e.classify() {
        // serde stops at the first type mismatch (`[` for an object), which
        // may come before a syntax error: malformed JSON is a 400 either way.
        Category::Data => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Err(syntax) => malformed(syntax),
            Ok(_) => ApiError::invalid(format!("invalid request: {e}")),
        },
        Category::Syntax | Category::Eof | Category::Io => malformed(e),
    })
}

/// The texts of `input`, validated against the limits.
pub fn input_texts(input: &Value) -> Result<Vec<&str>, ApiError> {
    let texts: Vec<&str> = match input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(
                    ApiError::invalid("`input` is an empty array; send at least one text")
                        .with_param("input"),
                );
            }
            if items.len() > MAX_INPUTS {
                return Err(ApiError::too_large(format!(
                    "`input` has {} texts; the limit is {MAX_INPUTS} per request",
                    items.len()
                ))
                .with_param("input"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        ApiError::invalid(format!(
                            "`input[{i}]` is {}; every item must be a string",
                            kind(v)
                        ))
                        .with_param(format!("input[{i}]"))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        other => {
            return Err(ApiError::invalid(format!(
                "`input` is {}; send a string or an array of strings",
                kind(other)
            ))
            .with_param("input"))
        }
    };
    for (i, text) in texts.iter().enumerate() {
        let param = if matches!(input, Value::Array(_)) {
            format!("input[{i}]")
        } else {
            "input".to_string()
        };
        if text.trim().is_empty() {
            return Err(
                ApiError::invalid(format!("`{param}` is empty; send some text")).with_param(param),
            );
        }
        let chars = text.chars().count();
        if chars > MAX_INPUT_CHARS {
            return Err(ApiError::too_large(format!(
                "`{param}` has {chars} characters; the limit is {MAX_INPUT_CHARS}"
            ))
            .with_param(param));
        }
    }
    Ok(texts)
}

/// Refuses fields no route knows, naming them.
pub fn no_unknown_fields(unknown: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(field) => Err(ApiError::invalid(format!(
            "unknown field `{field}`; docs/api.md lists the fields this route accepts"
        ))
        .with_param(field.clone())),
    }
}

/// How an error message names the JSON type a client sent.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
