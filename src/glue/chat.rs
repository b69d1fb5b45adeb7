//! Chat replies in the Workers runtime: streamed as server-sent events or
//! answered whole, the passes of a sharded model run on its shard Workers
//! ([`super::shards`]). What a turn is, which limits apply, what is stored
//! and when, are [`crate::api::chat`] / [`crate::api::sessions`] decisions;
//! this file only moves bytes and tokens. A session's turn comes here from
//! its object ([`super::session`]) with a [`Keep`]: the store the turn is
//! kept in, and how to make that durable.

use std::time::Duration;

use futures_util::stream;
use worker::{Env, Headers, Response, Result};

use super::log::LogLine;
use super::shards::Chain;
use crate::api::chat::{ChatCall, ChatTurn, RequestMeta, SSE_HEADERS};
use crate::api::sessions::SessionStore;
use crate::api::trace::Trace;
use crate::api::{ApiError, Context, HttpResponse};

/// What a session's turn holds while its reply goes out: the store the
/// turn is kept in, and the wait that makes its writes durable. `()` for
/// a reply without a session.
pub(crate) trait Keep {
    fn store(&mut self) -> Option<&mut dyn SessionStore>;
    async fn flush(&mut self) -> std::result::Result<(), ApiError>;
}

impl Keep for () {
    fn store(&mut self) -> Option<&mut dyn SessionStore> {
        None
    }

    async fn flush(&mut self) -> std::result::Result<(), ApiError> {
        Ok(())
    }
}

/// The shard passes a turn needs: none for a model this isolate runs; one
/// per shard Worker for a sharded one (a 503 if one is down), continuing
/// from the caches the shards kept of `owner`'s earlier turns.
async fn open_chain(
    env: &Env,
    trace: &Trace,
    turn: &mut ChatTurn,
    owner: Option<&str>,
) -> std::result::Result<Option<Chain>, ApiError> {
    let Some(shards) = turn.shards() else {
        return Ok(None);
    };
    let chain = Chain::open(
        env,
        turn.model_id(),
        shards,
        trace,
        turn.most_tokens(),
        turn.prompt(),
        owner.unwrap_or(""),
    )
    .await?;
    turn.set_cached_tokens(chain.cached());
    Ok(Some(chain))
}

/// Runs one model pass on the shards if the turn needs one next.
async fn run_pass(
    turn: &mut ChatTurn,
    chain: Option<&mut Chain>,
) -> std::result::Result<(), ApiError> {
    let (Some(chain), Some(feed)) = (chain, turn.wants()) else {
        return Ok(());
    };
    let started = super::clock();
    let (logits, hops) = chain.forward(&feed).await?;
    turn.supply(logits, super::clock() - started, &hops)
}

/// Flushes `keep`'s writes, if it has any, and answers `res` if they
/// are durable, the failure if not.
async fn flushed(keep: &mut impl Keep, res: HttpResponse) -> HttpResponse {
    if res.status >= 300 {
        return res;
    }
    match keep.flush().await {
        Ok(()) => res,
        Err(e) => HttpResponse::error(e),
    }
}

/// A turn's reply: streamed, or whole. The turn stores itself (in `keep`'s
/// store, for a session) before its end goes out. `line` is written when
/// the reply is done, with the tokens it took.
pub(crate) async fn reply<K: Keep + 'static>(
    env: &Env,
    trace: &Trace,
    mut turn: ChatTurn,
    owner: Option<&str>,
    mut keep: K,
    line: LogLine,
) -> Result<Response> {
    let chain = match open_chain(env, trace, &mut turn, owner).await {
        Ok(chain) => chain,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            return super::respond(&res, None);
        }
    };
    if turn.streams() {
        return stream_response(turn, keep, chain, line);
    }
    let mut chain = chain;
    let res = complete(&mut turn, chain.as_mut(), &mut keep).await;
    let res = flushed(&mut keep, res).await;
    if let Some(chain) = chain {
        chain.close().await;
    }
    drop(keep);
    line.write(
        res.status,
        res.model.as_deref(),
        res.internal_error.as_deref(),
    );
    super::respond(&res, None)
}

/// The whole reply of a turn that is not streamed.
async fn complete(
    turn: &mut ChatTurn,
    mut chain: Option<&mut Chain>,
    keep: &mut impl Keep,
) -> HttpResponse {
    if chain.is_some() {
        loop {
            if let Err(e) = run_pass(turn, chain.as_deref_mut()).await {
                return HttpResponse::error(e);
            }
            match turn.advance() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return HttpResponse::error(e),
            }
        }
    }
    turn.complete(keep.store())
}

/// What a stream needs once the handler has returned.
struct Streaming<K> {
    turn: ChatTurn,
    /// The shard passes of a sharded model, disposed with the stream.
    chain: Option<Chain>,
    keep: Option<K>,
    /// The first event (the role chunk) is out: model passes may start.
    started: bool,
    line: Option<LogLine>,
}

/// A reply as `text/event-stream`, one event per model pass. Each pass waits
/// for a zero timer first: that returns to the event loop, so the previous
/// event is on the wire before the next token is computed.
fn stream_response<K: Keep + 'static>(
    turn: ChatTurn,
    keep: K,
    chain: Option<Chain>,
    line: LogLine,
) -> Result<Response> {
    let served = turn.served();
    let streaming = Streaming {
        turn,
        chain,
        keep: Some(keep),
        started: false,
        line: Some(line),
    };
    let events = stream::unfold(streaming, |mut st| async move {
        worker::Delay::from(Duration::ZERO).await;
        if st.started {
            if let Err(e) = run_pass(&mut st.turn, st.chain.as_mut()).await {
                let event = st.turn.fail(e);
                return Some((Ok::<Vec<u8>, worker::Error>(event), st));
            }
        }
        st.started = true;
        let mut event = st
            .turn
            .next_event(st.keep.as_mut().and_then(|keep| keep.store()));
        // The turn was stored before its end: make that durable before the
        // end goes out, or end with the failure instead.
        if let (Some(_), Some(keep)) = (&event, st.keep.as_mut()) {
            if let Err(e) = keep.flush().await {
                event = Some(st.turn.fail(e));
            }
        }
        match event {
            Some(event) => Some((Ok(event), st)),
            None => {
                st.keep = None;
                if let Some(chain) = st.chain.take() {
                    chain.close().await;
                }
                if let Some(line) = st.line.take() {
                    line.write(200, Some(&st.turn.served()), None);
                }
                None
            }
        }
    });
    let headers = Headers::new();
    for (name, value) in SSE_HEADERS {
        headers.set(name, value)?;
    }
    super::set_served_headers(&headers, &served, None)?;
    Ok(Response::from_stream(events)?.with_headers(headers))
}

/// A chat completion without a session, served in this isolate.
pub async fn serve_chat(
    call: ChatCall,
    ctx: &Context<'_>,
    env: &Env,
    trace: &Trace,
    line: LogLine,
) -> Result<Response> {
    match ChatTurn::start(call.plan(), RequestMeta::draw(ctx)) {
        Ok(turn) => reply(env, trace, turn, ctx.owner, (), line).await,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, None);
            super::respond(&res, None)
        }
    }
}
