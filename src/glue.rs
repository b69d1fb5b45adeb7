//! The Workers layer: moves a request's bytes from workerd into [`crate::api`]
//! and the answer back, and writes one JSON log line per request. It does no
//! math and makes no API decisions.

use futures_util::StreamExt;
use worker::{
    console_error, console_log, event, Context, Env, Headers, Method, Request, Response, Result,
};

use crate::api::{self, limits::MAX_BODY_BYTES, HttpRequest};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Reads at most `MAX_BODY_BYTES + 1` bytes, so a huge body costs no more
/// memory than the limit; returns whether the body was read whole.
async fn read_body(req: &mut Request) -> Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    // A request without a body (a POST with no Content-Length) has no stream:
    // that is an empty body, which the API answers with its 400.
    let Ok(mut stream) = req.stream() else {
        return Ok((body, true));
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

#[event(fetch)]
async fn fetch(req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    match serve(req).await {
        Ok(res) => Ok(res),
        // Reading the body or building the response failed in the runtime
        // (e.g. the client went away): still answer with the JSON contract.
        Err(e) => {
            let error = api::ApiError::internal(e.to_string());
            console_error!(
                "{}",
                serde_json::json!({ "status": 500, "error": error.internal })
            );
            let headers = Headers::new();
            headers.set("content-type", "application/json")?;
            Ok(Response::from_bytes(error.body())?
                .with_status(500)
                .with_headers(headers))
        }
    }
}

async fn serve(mut req: Request) -> Result<Response> {
    let started = js_sys::Date::now();
    let method = req.method();
    let path = req.path();
    let content_type = req.headers().get("content-type")?;
    let (body, body_complete) = match method {
        Method::Get | Method::Head | Method::Options => (Vec::new(), true),
        _ => read_body(&mut req).await?,
    };
    let res = api::handle(&HttpRequest {
        method: method.as_ref(),
        path: &path,
        content_type: content_type.as_deref(),
        body: &body,
        body_complete,
    });

    let elapsed_ms = js_sys::Date::now() - started;
    let log = serde_json::json!({
        "method": method.as_ref(),
        "path": path,
        "status": res.status,
        "ms": elapsed_ms,
        "model": res.model,
        "model_loaded": res.model_loaded,
        "error": res.internal_error,
    });
    if res.status >= 500 {
        console_error!("{log}");
    } else {
        console_log!("{log}");
    }

    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(model) = &res.model {
        headers.set("x-edgeinfer-model", model)?;
    }
    for (name, value) in &res.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(res.body)?
        .with_status(res.status)
        .with_headers(headers))
}
