//! A request parsed once: the route and method checked, the body read into
//! its route's typed form and the model it names resolved (after any A/B
//! split). Everything after this — the cache key, validation, serving, the
//! worker's hand-off to a session's Durable Object — takes these values
//! and never looks at the bytes again.

use serde::de::DeserializeOwned;

use super::chat::{self, ChatCall};
use super::classify::ClassifyRequest;
use super::embeddings::EmbeddingsRequest;
use super::error::ApiError;
use super::inference::Resolved;
use super::parse::{body_within_limit, json_body};
use super::responses::{self, ResponseRequest};
use super::sessions::{self, NewSession, SessionCall, SessionOp, TurnRequest};
use super::similarity::SimilarityRequest;
use super::timing::Timings;
use super::{Context, HttpRequest, Route};

/// What a request asks for, parsed, by how a host serves it.
#[derive(Debug)]
pub enum Call<'a> {
    /// Answered at once from the request alone ([`super::serve_stateless`]).
    Stateless(Stateless<'a>),
    /// A chat completion without a session: a reply, maybe streamed.
    Chat(ChatCall),
    /// Anything a session's store answers (a chat completion naming a
    /// session is a turn of it).
    Session(SessionRequest),
    /// The Responses API: a reply (stored in its own session unless
    /// `store: false`), or a stored response read or deleted.
    Response(ResponseRequest),
}

/// The calls one function answers, the same on every host; the inference
/// ones are what the worker caches.
#[derive(Debug)]
pub enum Stateless<'a> {
    /// `OPTIONS`: the route's methods.
    Options(Route<'a>),
    Playground,
    OpenApi,
    Health,
    Models,
    Model(&'a str),
    Classify(Resolved<ClassifyRequest>),
    Embeddings(Resolved<EmbeddingsRequest>),
    Similarity(Resolved<SimilarityRequest>),
}

/// A session route's request, before the host picks the store.
#[derive(Debug)]
pub enum SessionRequest {
    Create(NewSession),
    Get(String),
    Delete(String),
    Turn(String, TurnRequest),
}

impl SessionRequest {
    /// The session the request is for: a new one gets its id here.
    pub fn into_call(self, ctx: &Context<'_>) -> SessionCall {
        let owner = ctx.owner.map(str::to_string);
        let (id, op) = match self {
            SessionRequest::Create(new) => {
                let id = sessions::new_id(ctx);
                let meta = new.into_meta(id.clone(), (ctx.now)(), ctx.owner);
                (id, SessionOp::Create { meta })
            }
            SessionRequest::Get(id) => (id, SessionOp::Get),
            SessionRequest::Delete(id) => (id, SessionOp::Delete),
            SessionRequest::Turn(id, turn) => (id, SessionOp::Turn { turn }),
        };
        SessionCall { id, owner, op }
    }
}

/// A parsed request, and whether it was a `HEAD` (served as `GET`,
/// answered without a body).
#[derive(Debug)]
pub struct Parsed<'a> {
    pub route: Route<'a>,
    pub head: bool,
    pub call: Call<'a>,
}

/// The one parse of `req`: every check that needs only the request and
/// the embedded models (not a model run, not a store) happens here or in
/// the route's own `serve` before its model runs.
pub fn parse<'a>(req: &HttpRequest<'a>, ctx: &Context<'_>) -> Result<Parsed<'a>, ApiError> {
    let route = Route::parse(req.path).ok_or_else(|| ApiError::no_route(req.path))?;
    route.check_method(req.method, req.path)?;
    let head = req.method == "HEAD";
    let call = match (route, req.method) {
        (route, "OPTIONS") => Call::Stateless(Stateless::Options(route)),
        (Route::Playground, _) => Call::Stateless(Stateless::Playground),
        (Route::OpenApi, _) => Call::Stateless(Stateless::OpenApi),
        (Route::Health, _) => Call::Stateless(Stateless::Health),
        (Route::Models, _) => Call::Stateless(Stateless::Models),
        (Route::Model(id), _) => Call::Stateless(Stateless::Model(id)),
        (Route::Classify, _) => Call::Stateless(Stateless::Classify(resolved(
            req,
            ctx,
            |b: &ClassifyRequest| &b.model,
        )?)),
        (Route::Embeddings, _) => Call::Stateless(Stateless::Embeddings(resolved(
            req,
            ctx,
            |b: &EmbeddingsRequest| &b.model,
        )?)),
        (Route::Similarity, _) => Call::Stateless(Stateless::Similarity(resolved(
            req,
            ctx,
            |b: &SimilarityRequest| &b.model,
        )?)),
        (Route::ChatCompletions, _) => {
            let call = chat::parse(req)?;
            match call.session.clone() {
                Some(id) => {
                    sessions::check_id(&id)?;
                    Call::Session(SessionRequest::Turn(id, sessions::turn_from_chat(call)))
                }
                None => Call::Chat(call),
            }
        }
        (Route::Sessions, _) => {
            body_within_limit(req)?;
            Call::Session(SessionRequest::Create(sessions::parse_create(
                req,
                ctx.default_chat_model,
            )?))
        }
        (Route::Session(id), "DELETE") => {
            sessions::check_id(id)?;
            Call::Session(SessionRequest::Delete(id.to_string()))
        }
        (Route::Session(id), _) => {
            sessions::check_id(id)?;
            Call::Session(SessionRequest::Get(id.to_string()))
        }
        (Route::Responses, _) => {
            Call::Response(ResponseRequest::Create(Box::new(responses::parse(req)?)))
        }
        (Route::Response(id), "DELETE") => {
            responses::check_id(id)?;
            Call::Response(ResponseRequest::Delete(id.to_string()))
        }
        (Route::Response(id), _) => {
            responses::check_id(id)?;
            Call::Response(ResponseRequest::Get(id.to_string()))
        }
        (Route::SessionMessages(id), _) => {
            sessions::check_id(id)?;
            Call::Session(SessionRequest::Turn(
                id.to_string(),
                sessions::parse_message(req)?,
            ))
        }
    };
    Ok(Parsed { route, head, call })
}

/// The JSON body of `req` as `T`, and the model `model_of` names in it.
fn resolved<T: DeserializeOwned>(
    req: &HttpRequest<'_>,
    ctx: &Context<'_>,
    model_of: fn(&T) -> &String,
) -> Result<Resolved<T>, ApiError> {
    let timings = Timings::start(ctx.clock);
    let body: T = json_body(req)?;
    let (spec, arm) = ctx.resolve(model_of(&body))?;
    Ok(Resolved {
        body,
        spec,
        arm,
        timings,
    })
}
