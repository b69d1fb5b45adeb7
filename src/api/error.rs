//! The one error type of the HTTP API: each failure a client can cause gets its
//! status and a message that says what to change; internal failures get a 500
//! whose details go to the log, not to the client.

use serde::Serialize;

use crate::error::{CoreError, TemplateError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// A stable machine-readable code, e.g. `model_not_found`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// Detail for the log only (never sent to the client).
    pub internal: Option<String>,
    /// Headers the answer must carry for a client to act on it: `Allow` on
    /// a 405, `Retry-After` on a 429, `WWW-Authenticate` on a 401.
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
}

impl ApiError {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let e = ApiError {
            status,
            code,
            message: message.into(),
            param: None,
            internal: None,
            headers: Vec::new(),
        };
        debug_assert_eq!(e.kind(), kind, "the type of a {status}");
        e
    }

    /// OpenAI-style error type, which follows from the status:
    /// `not_found_error`, `rate_limit_error`, `server_error`, else
    /// `invalid_request_error`.
    pub fn kind(&self) -> &'static str {
        match self.status {
            404 => "not_found_error",
            429 => "rate_limit_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Replaces the stable code (e.g. `session_full` for a 413).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// 404 for a thing that does not exist (a session, ...).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, "not_found_error", code, message)
    }

    /// 409: the thing changed under the request (a session another server
    /// stored a turn in meanwhile); nothing was changed, retrying is safe.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, "invalid_request_error", code, message)
    }

    /// 503: a binding this route needs is not configured.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "server_error", "unavailable", message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: the body is not JSON, or not UTF-8.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", "malformed_body", message)
    }

    /// 422: well-formed JSON that does not fit the route's schema or rules.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "invalid_request_error", "invalid_value", message)
    }

    /// 400: a schema, grammar or tool the request relies on is not one the
    /// server can hold a reply to (an unsupported JSON Schema keyword, a
    /// schema that does not compile, a tool that was never declared). A
    /// 400, as OpenAI answers these: never ignored, since the client counts
    /// on the reply having that shape.
    pub fn unsupported(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    /// 413: the body, a batch, or one input is over a documented limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "invalid_request_error", "too_large", message)
    }

    /// 415: the body is not declared as JSON.
    pub fn unsupported_media_type(got: Option<&str>) -> Self {
        let got = got.map_or("no Content-Type".to_string(), |c| {
            format!("Content-Type `{c}`")
        });
        Self::new(
            415,
            "invalid_request_error",
            "unsupported_media_type",
            format!("expected `Content-Type: application/json`, got {got}"),
        )
    }

    /// 404 for a path no route serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "not_found_error",
            "route_not_found",
            format!("no route for `{path}`; routes are GET /healthz, GET /v1/models, GET /v1/models/{{id}}, POST /v1/classify, POST /v1/embeddings, POST /v1/similarity, POST /v1/chat/completions, POST /v1/sessions, GET|DELETE /v1/sessions/{{id}}, POST /v1/sessions/{{id}}/messages"),
        )
    }

    /// 405, with the methods the route accepts in `Allow`.
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on `{path}`; use {allow}"),
        )
        .with_header("allow", allow)
    }

    /// 401: no API key, or not one of the configured keys; `WWW-Authenticate`
    /// names the scheme to use.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "invalid_request_error", "invalid_api_key", message)
            .with_header("www-authenticate", "Bearer")
    }

    /// 429: the caller's rate limit is spent; `Retry-After` says when the
    /// next request will be admitted.
    pub fn rate_limited(retry_after: u64, per_minute: u32, burst: u32) -> Self {
        Self::new(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            format!("rate limit of {per_minute} requests per minute (bursts of {burst}) reached; retry after {retry_after} s"),
        )
        .with_header("retry-after", retry_after.to_string())
    }

    /// 500: something on our side failed; `detail` is logged only.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            500,
            "server_error",
            "internal_error",
            "the server failed to process the request; it has been logged",
        );
        e.internal = Some(detail.into());
        e
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> Vec<u8> {
        let body = Body {
            error: Detail {
                kind: self.kind(),
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match &e {
            CoreError::UnknownModel(name) => ApiError::new(
                404,
                "not_found_error",
                "model_not_found",
                format!("model `{name}` does not exist; GET /v1/models lists the models this worker serves"),
            )
            .with_param("model"),
            CoreError::WrongTask { .. } => ApiError::invalid(e.to_string()).with_param("model"),
            CoreError::Prompt(TemplateError::TooLong { .. }) => ApiError::new(
                413,
                "invalid_request_error",
                "context_length_exceeded",
                format!("{e}; shorten the last message or the system message, or lower max_tokens"),
            )
            .with_param("messages"),
            CoreError::Prompt(TemplateError::NoTurns) => {
                ApiError::invalid(e.to_string()).with_param("messages")
            }
            CoreError::ModelLoad { .. } | CoreError::Inference { .. } => ApiError::internal(e.to_string()),
        }
    }
}
