//! Chat replies in the Workers runtime: the turn polled one event at a
//! time, the passes it asks for run on the model's shard Workers
//! ([`super::shards`]), each event rendered and streamed as it comes (or
//! the reply answered whole). What a turn is, which limits apply, what is
//! stored and when, and what the client reads, are [`crate::api::chat`] /
//! [`crate::api::sessions`] decisions; this file only moves bytes and
//! tokens. A session's turn comes here from its object
//! ([`super::session`]) with a [`Keep`]: the turn's sink, and how to make
//! what it stored durable.

use std::time::Duration;

use futures_util::stream;
use worker::{Env, Headers, Response, Result};

use super::log::LogLine;
use super::shards::{warm_public_start, Chain, Sharding};
use crate::api::chat::{
    ChatCall, ChatTurn, Event, Output, Pass, RequestMeta, Step, TurnSink, Wire, SSE_HEADERS,
};
use crate::api::trace::Trace;
use crate::api::{ApiError, Context, HttpResponse};

/// What a turn holds while its reply goes out: the sink that takes the
/// finished reply (a session's store), and the wait that makes what the
/// sink wrote durable before the reply's end goes out. `()` for a reply
/// without a session.
pub(crate) trait Keep: TurnSink {
    async fn flush(&mut self) -> std::result::Result<(), ApiError>;
}

impl Keep for () {
    async fn flush(&mut self) -> std::result::Result<(), ApiError> {
        Ok(())
    }
}

/// A chat completion without a session, served in this isolate.
pub async fn serve_chat(
    call: ChatCall,
    ctx: &Context<'_>,
    env: &Env,
    trace: &Trace,
    line: LogLine,
) -> Result<Response> {
    let (plan, wire) = call.plan();
    match ChatTurn::start(plan, RequestMeta::draw(ctx)) {
        Ok(turn) => reply(env, trace, turn, wire, ctx.owner, (), line).await,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, None);
            super::respond(&res, None)
        }
    }
}

/// A turn's reply, streamed or whole as `wire` says. The turn gives its
/// finished reply to `keep` before the reply's end goes out. `line` is
/// written when the reply is done, with the tokens it took.
pub(crate) async fn reply<K: Keep + 'static>(
    env: &Env,
    trace: &Trace,
    turn: ChatTurn,
    wire: Wire,
    owner: Option<&str>,
    keep: K,
    line: LogLine,
) -> Result<Response> {
    let chain = match open_chain(env, trace, &turn, owner).await {
        Ok(chain) => chain,
        Err(e) => {
            let res = HttpResponse::error(e);
            line.write(res.status, None, res.internal_error.as_deref());
            return super::respond(&res, None);
        }
    };
    let running = Running {
        out: Output::new(&wire, turn.head()),
        turn,
        chain,
        keep,
        line,
        done: false,
    };
    if running.out.streams() {
        stream_response(running)
    } else {
        whole(running).await
    }
}

/// The shard passes a turn needs: none for a model this isolate runs; one
/// per shard Worker for a sharded one (a 503 if one is down), continuing
/// from the caches the shards kept of `owner`'s earlier turns.
async fn open_chain(
    env: &Env,
    trace: &Trace,
    turn: &ChatTurn,
    owner: Option<&str>,
) -> std::result::Result<Option<Chain>, ApiError> {
    let Some(sharded) = turn.sharded() else {
        return Ok(None);
    };
    let sharding = Sharding {
        model: sharded.model,
        shards: sharded.shards,
        window: sharded.window,
        dims: sharded.dims,
    };
    if sharding.warms_with_a_turn() {
        warm_public_start(env, sharding, trace, sharded.public_start).await;
    }
    let chain = Chain::open(
        env,
        sharding,
        trace,
        sharded.most_tokens,
        sharded.prompt,
        owner.unwrap_or(""),
    )
    .await?;
    if !sharded.public_start.is_empty() {
        chain.forget_public_start_if_lost();
    }
    Ok(Some(chain))
}

/// One model pass on the shards, timed: the whole row of logits, or the
/// `best` few the turn needs.
async fn run_pass(
    chain: Option<&mut Chain>,
    ids: &[u32],
    best: Option<usize>,
) -> std::result::Result<Pass, ApiError> {
    let chain =
        chain.ok_or_else(|| ApiError::internal("a model pass was asked with no shards open"))?;
    let started = super::clock();
    let (logits, hops) = chain.forward(ids, best).await?;
    Ok(Pass {
        logits,
        ms: super::clock() - started,
        hops,
        cached: chain.cached(),
    })
}

/// A reply on its way out. The shard passes come before the session's
/// hold: a reply dropped midway (a client that went away) sends the close
/// of its passes before the session's next turn may start.
struct Running<K> {
    turn: ChatTurn,
    out: Output,
    /// The shard passes of a sharded model.
    chain: Option<Chain>,
    keep: K,
    line: LogLine,
    /// `Done` is out: the turn is over.
    done: bool,
}

impl<K: Keep> Running<K> {
    /// The turn's next event, after the passes it asks for. The end of a
    /// finished reply waits until what its sink stored is durable, or
    /// becomes that failure.
    async fn next(&mut self) -> Event {
        loop {
            match self.turn.poll(&mut self.keep) {
                Step::Pass(ids) => {
                    let best = self.turn.needs_best();
                    let pass = run_pass(self.chain.as_mut(), &ids, best).await;
                    self.turn.feed(pass);
                }
                Step::Event(Event::Finished(finish)) => {
                    return match self.keep.flush().await {
                        Ok(()) => Event::Finished(finish),
                        Err(e) => Event::Failed(e),
                    };
                }
                Step::Event(event) => return event,
            }
        }
    }
}

/// Ends the shards' passes (each keeps its cache for the conversation's
/// next turn, or frees it), and only then lets the session's next turn in:
/// it must find them closed.
async fn end<K>(chain: Option<Chain>, keep: K) {
    if let Some(chain) = chain {
        chain.close().await;
    }
    drop(keep);
}

/// The reply of a turn that is not streamed: one answer once it is done.
async fn whole<K: Keep>(mut running: Running<K>) -> Result<Response> {
    loop {
        let event = running.next().await;
        let done = matches!(event, Event::Done);
        running.out.event(event);
        if done {
            break;
        }
    }
    let Running {
        turn,
        out,
        chain,
        keep,
        line,
        ..
    } = running;
    let res = out.answer(turn.served());
    end(chain, keep).await;
    line.write(
        res.status,
        res.model.as_deref(),
        res.internal_error.as_deref(),
    );
    super::respond(&res, None)
}

/// A reply as `text/event-stream`, one event per model pass. Each event
/// waits for a zero timer first: that returns to the event loop, so the
/// previous event is on the wire before the next token is computed.
fn stream_response<K: Keep + 'static>(running: Running<K>) -> Result<Response> {
    let served = running.turn.served();
    let events = stream::unfold(running, |mut running| async move {
        if running.done {
            let Running {
                turn,
                chain,
                keep,
                line,
                ..
            } = running;
            end(chain, keep).await;
            line.write(200, Some(&turn.served()), None);
            return None;
        }
        worker::Delay::from(Duration::ZERO).await;
        loop {
            let event = running.next().await;
            running.done = matches!(event, Event::Done);
            let bytes = running.out.event(event);
            if !bytes.is_empty() || running.done {
                return Some((Ok::<Vec<u8>, worker::Error>(bytes), running));
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
