//! The Responses API in the Workers runtime: a stored response lives in a
//! `ChatSession` Durable Object of its own, named by its `resp_…` id, as a
//! session created whole by its first (only) turn. `previous_response_id`
//! is read from that response's object (an export of its session, checked
//! against the caller's key there), then the new response's turn is sent
//! to the new object, which streams the reply back as a session turn does.
//! What a response is and what is stored are [`crate::api::responses`]'s
//! decisions; this file only moves calls between objects.

use worker::{Env, Response, Result};

use super::log::LogLine;
use super::session::forward;
use crate::api::chat::{ChatTurn, Wire};
use crate::api::responses::{self, Begun, ResponseRequest};
use crate::api::sessions::{Session, SessionCall, SessionOp};
use crate::api::trace::Trace;
use crate::api::{ApiError, Context, HttpResponse};

/// Serves a Responses API call.
pub async fn serve(
    request: ResponseRequest,
    ctx: &Context<'_>,
    env: &Env,
    trace: &Trace,
    line: LogLine,
) -> Result<Response> {
    match serve_call(request, ctx, env, trace).await {
        Ok(Answer::Forwarded(res)) => {
            line.write_forwarded(&res)?;
            Ok(res)
        }
        Ok(Answer::Done(res)) => {
            line.write(res.status, None, None);
            super::respond(&res, None)
        }
        Ok(Answer::Reply(turn, wire)) => {
            super::chat::reply(env, trace, *turn, wire, ctx.owner, (), line).await
        }
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            super::respond(&res, None)
        }
    }
}

enum Answer {
    /// A response object's own answer (a stored reply, streamed through
    /// it).
    Forwarded(Response),
    /// Answered here.
    Done(HttpResponse),
    /// A reply stored nowhere (`store: false`), run in this isolate.
    Reply(Box<ChatTurn>, Wire),
}

async fn serve_call(
    request: ResponseRequest,
    ctx: &Context<'_>,
    env: &Env,
    trace: &Trace,
) -> std::result::Result<Answer, ApiError> {
    let owner = ctx.owner.map(str::to_string);
    let call = |id: &str, op: SessionOp| SessionCall {
        id: id.to_string(),
        owner: owner.clone(),
        op,
    };
    let done = |res: HttpResponse| Ok(Answer::Done(res));
    match request {
        ResponseRequest::Get(id) => {
            let session = export(env, &call(&id, SessionOp::Export), trace).await?;
            done(responses::view(&session)?)
        }
        ResponseRequest::Delete(id) => {
            let res = forward(env, &call(&id, SessionOp::Delete), trace)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            match res.status_code() {
                200 => done(responses::deleted(&id)),
                404 => Err(responses::not_found(&id)),
                status => Err(ApiError::internal(format!(
                    "the response's object answered {status} to a delete"
                ))),
            }
        }
        ResponseRequest::Create(create) => {
            let previous = match &create.previous {
                Some(id) => Some(
                    export(env, &call(id, SessionOp::Export), trace)
                        .await
                        .map_err(|e| e.with_param("previous_response_id"))?,
                ),
                None => None,
            };
            match create.begin(previous.as_ref(), ctx, owner)? {
                Begun::Here(turn, wire) => Ok(Answer::Reply(turn, wire)),
                Begun::Stored(stored, _) => {
                    let res = forward(env, &stored, trace)
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    Ok(Answer::Forwarded(res))
                }
            }
        }
    }
}

/// A stored response's session, from its object (the caller's own; a
/// missing one, or another key's, is the response's 404).
async fn export(
    env: &Env,
    call: &SessionCall,
    trace: &Trace,
) -> std::result::Result<Session, ApiError> {
    let mut res = forward(env, call, trace)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match res.status_code() {
        200 => {
            let bytes = res
                .bytes()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::internal(format!("an exported response: {e}")))
        }
        404 => Err(responses::not_found(&call.id)),
        status => Err(ApiError::internal(format!(
            "the response's object answered {status}"
        ))),
    }
}
