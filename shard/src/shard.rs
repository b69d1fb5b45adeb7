//! A shard isolate's state: its part of the model, the passes open on it,
//! the requests waiting for one, and the caches of finished passes kept for
//! the conversation's next turn.
//!
//! Memory is admitted in tokens: each pass reserves, when it opens, the
//! most tokens it will feed (its prompt plus its reply's `max_tokens`),
//! and the reservations of the open passes never exceed the isolate's
//! budget (`context x sessions` of the plan, pipeline/src/plan.rs): many short
//! chats at once, or one as long as the context, never more key/value
//! cache than the plan gave the isolate. Who is admitted, who waits and in
//! what order, and when an abandoned pass is reclaimed is the gate's
//! policy (shard/src/gate.rs); this file gives each admitted pass its cache.
//!
//! A finished pass may leave its cache behind, labelled with the token ids
//! it holds. A later pass whose prompt starts with the same ids (the next
//! turn of that conversation: its history is the last turn's prompt and
//! reply) starts from that cache and feeds only what is new, which is what
//! keeps turn 10 as quick to answer as turn 1. Kept caches live in the
//! budget's free room and are dropped, least recently used first, when a
//! pass needs it: they never delay or refuse one. They are matched only
//! within the scope they were kept in (the caller's API key), so with
//! keys on one caller cannot time another's prompts.
//!
//! One scope is everybody's: [`PUBLIC`]. The front feeds it, once per
//! isolate and before any caller's pass, the start every prompt without a
//! system message of its own has (the template's default system message:
//! the server's text, no caller's). Its cache is pinned (never dropped, its
//! tokens taken out of the budget) and copied, never taken, into any
//! scope's pass whose prompt starts alike: a new conversation feeds only
//! what follows it, and whether it was there says nothing of any caller.
//!
//! The entry (shard/pass.mjs) moves bytes and keeps time: it hands every
//! call the time (ms), waits when told to, and after each call wakes the
//! requests [`Shard::take_news`] names.

use serde::Serialize;
use thiserror::Error;

use edgeinfer_engine::decoder::format::{Config, Part};
use edgeinfer_engine::decoder::{
    best, Candidate, Decoder, DecoderError, KvCache, StageInput, Step, MOST_BEST, PREDICT_ROWS,
};

use crate::gate::{Decisions, Gate, Limits, Millis, Refusal, Standing};

#[derive(Debug, Error, PartialEq)]
pub enum ShardError {
    #[error("the shard's weights are not loaded")]
    NotLoaded,
    #[error("the shard's weights do not load: {0}")]
    Load(DecoderError),
    #[error("a pass reserves 1 to {context} tokens (the context), not {asked}")]
    BadReservation { asked: usize, context: usize },
    #[error("the pass reserved {reserved} tokens and would hold {needed}")]
    OverReservation { reserved: usize, needed: usize },
    #[error("the input starts at position {at}, but the pass holds {held} tokens")]
    Position { at: usize, held: usize },
    #[error("no open pass {0} (closed, reclaimed unused, or opened on an earlier instance)")]
    NoPass(u32),
    #[error(transparent)]
    Decoder(#[from] DecoderError),
}

/// What a pass is fed: token ids (the first shard) or hidden states.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Tokens(&'a [u32]),
    Hidden(&'a [f32]),
}

/// One call of a batch ([`Shard::step_batch`]): pass `handle`'s input, its
/// first row at position `at`; from the last shard, only the `best` best
/// logits when it is not 0 (and at most [`MOST_BEST`]).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub handle: u32,
    pub at: usize,
    pub input: Input<'a>,
    pub best: usize,
}

/// A call's output: hidden states for the next shard or the whole row of
/// logits, or (the last shard, asked for them) the best few logits.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Floats(Vec<f32>),
    Best(Vec<Candidate>),
}

impl Output {
    /// The floats, if these are floats.
    pub fn floats(&self) -> Option<&[f32]> {
        match self {
            Output::Floats(v) => Some(v),
            Output::Best(_) => None,
        }
    }
}

/// What became of one call of a batch: its output or its error, or `None`
/// when it did not run this time (ask again with it first: see
/// [`Shard::step_batch`]).
pub type Ran = Option<Result<Output, ShardError>>;

/// What a batch did: each call's outcome, and when none ran because
/// passes that run in step with them are still to call, how long the
/// entry may hold the calls before asking again (it asks sooner when
/// another call comes).
#[derive(Debug)]
pub struct Batch {
    pub ran: Vec<Ran>,
    pub hold: Option<Millis>,
}

/// How long calls may be held for the passes in step with them, per such
/// pass (ms): the front samples each conversation's token in turn on its
/// thread (~1.1 ms each for SmolLM2's vocabulary), so their calls arrive
/// spread by about that much each; 3 ms each covers it with room (8
/// conversations: 24 ms at most, about one token's step).
pub const HOLD: Millis = 3;

/// The rows a batch takes beyond its first call's: room for every decode
/// row (one per conversation) a shard's budget admits at once, not for a
/// second prompt. Only single rows gain from sharing a stage (a prompt's
/// rows already share every weight read among themselves), and a stage is
/// one synchronous call during which nothing else on the thread runs: no
/// timer, no touch of a pass (a touch held back by a long stage elsewhere
/// can let a shard reclaim a pass that was only waiting; measured at 16
/// streams when prompts were batched together), no other conversation's
/// call. So a prompt runs alone or with a few single rows, as before.
pub const BATCH_ROWS: usize = 32;

/// Past the first shard, a pass is in step when it ran in one of this
/// many last stages (see [`Shard::step_batch`]).
const RELAY_WINDOW: u64 = 2;

/// How much longer the first shard holds calls, per pass in step, to
/// merge groups of conversations (see [`Shard::step_batch`]): a group
/// behind another arrives after the other's trip through every shard.
pub const MERGE: Millis = 8;

/// What a shard tells its caller about itself (`GET /` on a shard Worker).
#[derive(Debug, Serialize)]
pub struct Info {
    pub config: Config,
    pub part: Part,
    pub budget_tokens: usize,
    pub reserved_tokens: usize,
    pub open_passes: usize,
    /// Requests waiting for room.
    pub waiting: usize,
    /// Caches of finished passes, and the tokens they hold ([`PUBLIC`]'s
    /// aside: `public_tokens`, out of `budget_tokens`).
    pub kept_caches: usize,
    pub kept_tokens: usize,
    pub public_tokens: usize,
    /// Prompt tokens passes did not have to feed, since the instance began.
    pub reused_tokens: u64,
    /// Passes reclaimed after their lease, and requests refused, since the
    /// instance began.
    pub reclaimed_passes: u64,
    pub refused_requests: u64,
    /// The id the next request gets (ids are never reused).
    pub next_id: u32,
    pub cache_bytes: usize,
    /// Passes of the model part run since the instance began (each one
    /// stage over one or more calls), how many of them ran several calls
    /// at once (concurrent conversations sharing one read of the weights),
    /// the calls those held, and the most calls one of them held.
    pub stages: u64,
    pub batched_stages: u64,
    pub batched_calls: u64,
    pub max_batch: usize,
    /// Asks whose calls were held for passes in step, and stages that ran
    /// without one of them because the hold ran out.
    pub holds: u64,
    pub hold_timeouts: u64,
    /// Calls answered with their best logits only, not the whole row
    /// (the last shard, when the caller's sampling needs just those).
    pub ranked_calls: u64,
}

/// A pass just opened: its handle, and how many of its prompt's first
/// tokens its cache already holds (the caller feeds from there on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub handle: u32,
    pub cached: usize,
    /// Tokens of [`PUBLIC`] caches the shard holds: none tells the front
    /// this instance is new to it (see the module's doc).
    pub public_tokens: usize,
}

/// Where a request for a pass stands, for the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    Admitted(Opened),
    /// Waiting: ask again ([`Shard::poll`]) when woken, or at `until`.
    Waiting {
        id: u32,
        until: Millis,
    },
    /// Not admitted; the caller may try again after `retry_after` seconds
    /// (none when it never fits).
    Refused {
        refusal: Refusal,
        retry_after: Option<u32>,
    },
    /// Not a request of this instance (one made before a trap): ask anew.
    Unknown,
}

/// What happened to others since the entry last asked: whom to wake, and
/// which passes the shard ended itself (reclaimed unused), for their log.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct News {
    pub wake: Vec<u32>,
    pub ended: Vec<u32>,
}

impl News {
    pub fn is_empty(&self) -> bool {
        self.wake.is_empty() && self.ended.is_empty()
    }
}

/// What a waiter carries until it is admitted: what its cache is matched on.
struct Asked {
    scope: String,
    prompt: Vec<u32>,
    tokens: usize,
}

struct Pass {
    handle: u32,
    reserved: usize,
    cache: KvCache,
    /// Where its cache may be matched again once kept.
    scope: String,
    /// Whether it has been fed yet: only its first input may start before
    /// the end of its cache.
    fed: bool,
    /// The stage it last ran in, and whether a hold ran out without it
    /// since (see [`Shard::step_batch`]'s hold).
    stage: u64,
    missed: bool,
}

/// A finished pass's cache, for a later prompt that starts with `ids`.
struct Kept {
    scope: String,
    ids: Vec<u32>,
    cache: KvCache,
    /// When it was kept or last matched (a counter): the least recent goes
    /// first when room is needed.
    used: u64,
}

pub struct Shard {
    decoder: Option<Decoder>,
    gate: Gate<Asked>,
    passes: Vec<Pass>,
    kept: Vec<Kept>,
    /// Answers for waiters the gate decided on, until they ask again, with
    /// when. One never collected (its caller gone): an admission goes with
    /// its pass (reclaimed like any pass never called), a refusal after a
    /// wait's time.
    answers: Vec<(u32, Begun, Millis)>,
    news: News,
    clock: u64,
    reused_tokens: u64,
    reclaimed_passes: u64,
    refused_requests: u64,
    stages: u64,
    batched_stages: u64,
    batched_calls: u64,
    ranked_calls: u64,
    max_batch: usize,
    holds: u64,
    hold_timeouts: u64,
    /// Since when the calls asked for are held, and for how long at most
    /// (see [`Shard::step_batch`]).
    holding: Option<Millis>,
    hold: Millis,
}

/// The scope whose kept caches every scope may start from (see the
/// module's doc). A caller's scope is its key's hex digest, or empty.
pub const PUBLIC: &str = "public";

/// The most tokens [`PUBLIC`] caches may pin in all.
pub const MOST_PUBLIC_TOKENS: usize = 256;

/// How many first ids `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Shard {
    /// A shard whose open passes reserve at most `budget_tokens` in all,
    /// with the shard Workers' limits, whose ids start at `first_id`.
    pub fn new(budget_tokens: usize, first_id: u32) -> Self {
        Self::with_limits(Limits::for_budget(budget_tokens), first_id)
    }

    pub fn with_limits(limits: Limits, first_id: u32) -> Self {
        Shard {
            decoder: None,
            gate: Gate::new(limits, first_id),
            passes: Vec::new(),
            kept: Vec::new(),
            answers: Vec::new(),
            news: News::default(),
            clock: 0,
            reused_tokens: 0,
            reclaimed_passes: 0,
            refused_requests: 0,
            stages: 0,
            batched_stages: 0,
            batched_calls: 0,
            ranked_calls: 0,
            max_batch: 0,
            holding: None,
            hold: HOLD,
            holds: 0,
            hold_timeouts: 0,
        }
    }

    /// Holds calls for the passes in step with them `hold` ms per such
    /// pass at most, [`MERGE`] times that on the first shard (0: never;
    /// [`HOLD`] unless set), for a deployment that measured better.
    pub fn set_hold(&mut self, hold: Millis) {
        self.hold = hold;
    }

    /// Reads the packed part in place: `weights` must outlive the isolate
    /// (the entry copies them into memory that is never freed).
    pub fn load(&mut self, weights: &'static [u8]) -> Result<(), ShardError> {
        self.decoder = Some(Decoder::parse(weights).map_err(ShardError::Load)?);
        Ok(())
    }

    fn decoder(&self) -> Result<&Decoder, ShardError> {
        self.decoder.as_ref().ok_or(ShardError::NotLoaded)
    }

    fn budget(&self) -> usize {
        self.gate.limits().budget
    }

    /// Tokens of the kept caches the budget holds: all but the pinned
    /// [`PUBLIC`] ones, which are out of it.
    fn kept_tokens(&self) -> usize {
        self.kept
            .iter()
            .filter(|k| k.scope != PUBLIC)
            .map(|k| k.ids.len())
            .sum()
    }

    fn public_tokens(&self) -> usize {
        self.kept
            .iter()
            .filter(|k| k.scope == PUBLIC)
            .map(|k| k.ids.len())
            .sum()
    }

    pub fn info(&self) -> Result<Info, ShardError> {
        let d = self.decoder()?;
        Ok(Info {
            config: *d.config(),
            part: *d.part(),
            budget_tokens: self.budget(),
            reserved_tokens: self.gate.reserved(),
            open_passes: self.passes.len(),
            waiting: self.gate.waiting(),
            kept_caches: self.kept.iter().filter(|k| k.scope != PUBLIC).count(),
            kept_tokens: self.kept_tokens(),
            public_tokens: self.public_tokens(),
            reused_tokens: self.reused_tokens,
            reclaimed_passes: self.reclaimed_passes,
            refused_requests: self.refused_requests,
            next_id: self.gate.next_id(),
            cache_bytes: self
                .passes
                .iter()
                .map(|p| p.cache.bytes())
                .chain(self.kept.iter().map(|k| k.cache.bytes()))
                .sum(),
            stages: self.stages,
            batched_stages: self.batched_stages,
            batched_calls: self.batched_calls,
            ranked_calls: self.ranked_calls,
            max_batch: self.max_batch,
            holds: self.holds,
            hold_timeouts: self.hold_timeouts,
        })
    }

    /// Asks for a generation's pass of at most `tokens` fed tokens whose
    /// prompt is `prompt`, in `scope`, at `now`: admitted now (its cache
    /// from the kept one that shares the longest start with the prompt, all
    /// but its last token at most: a pass is fed at least one; else an
    /// empty one), told to wait, or refused.
    pub fn begin(
        &mut self,
        tokens: usize,
        scope: &str,
        prompt: &[u32],
        now: Millis,
    ) -> Result<Begun, ShardError> {
        let context = self.decoder()?.config().context;
        if tokens == 0 || tokens > context {
            return Err(ShardError::BadReservation {
                asked: tokens,
                context,
            });
        }
        let asked = Asked {
            scope: scope.to_string(),
            prompt: prompt.to_vec(),
            tokens,
        };
        match self.gate.ask(scope, tokens, asked, now) {
            Ok((id, decisions)) => {
                self.apply(decisions, now);
                self.settle(now);
                // Admitted at once: nobody waits on it to be woken.
                self.news.wake.retain(|&w| w != id);
                Ok(self.poll(id, now, None))
            }
            Err(refusal) => {
                self.refused_requests += 1;
                Ok(self.refused(refusal))
            }
        }
    }

    fn refused(&self, refusal: Refusal) -> Begun {
        let retry_after = match refusal {
            Refusal::NeverFits { .. } => None,
            Refusal::QueueFull | Refusal::TimedOut => Some(self.gate.limits().retry_after),
        };
        Begun::Refused {
            refusal,
            retry_after,
        }
    }

    /// Where request `id` stands at `now`: its answer once the gate
    /// decided (given once), or how long it still waits. `late`: the
    /// entry's timer woke it, that many ms after it was due (none when
    /// another request's end woke it).
    pub fn poll(&mut self, id: u32, now: Millis, late: Option<Millis>) -> Begun {
        if let Some(late) = late {
            self.gate.timer(now, late);
        }
        self.settle(now);
        if let Some(i) = self.answers.iter().position(|(a, _, _)| *a == id) {
            return self.answers.swap_remove(i).1;
        }
        match self.gate.standing(id, now) {
            Standing::Waits { until } => Begun::Waiting { id, until },
            // Admitted, and its answer already given: a second poll.
            Standing::Holds => Begun::Unknown,
            Standing::Unknown => Begun::Unknown,
        }
    }

    /// The gate's rules at `now`, and what they decided applied.
    fn settle(&mut self, now: Millis) {
        let decisions = self.gate.settle(now);
        self.apply(decisions, now);
        let wait = self.gate.limits().wait;
        self.answers.retain(|(_, answer, at)| {
            matches!(answer, Begun::Admitted(_)) || now.saturating_sub(*at) < wait
        });
    }

    fn apply(&mut self, decisions: Decisions<Asked>, now: Millis) {
        for id in decisions.reclaimed {
            self.passes.retain(|p| p.handle != id);
            self.answers.retain(|(a, _, _)| *a != id);
            self.reclaimed_passes += 1;
            self.news.ended.push(id);
        }
        for (id, refusal) in decisions.refused {
            self.refused_requests += 1;
            let answer = self.refused(refusal);
            self.answers.push((id, answer, now));
            self.news.wake.push(id);
        }
        for (id, asked) in decisions.admitted {
            let opened = self.open(id, asked);
            self.answers.push((id, Begun::Admitted(opened), now));
            self.news.wake.push(id);
        }
    }

    /// The cache of pass `handle`, just admitted for `asked`.
    fn open(&mut self, handle: u32, asked: Asked) -> Opened {
        let Asked {
            scope,
            prompt,
            tokens,
        } = asked;
        let usable = prompt.len().saturating_sub(1).min(tokens);
        let best = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, k)| k.scope == scope || k.scope == PUBLIC)
            .map(|(i, k)| (common_prefix(&k.ids, &prompt).min(usable), k.used, i))
            .filter(|&(shared, _, _)| shared > 0)
            .max();
        self.clock += 1;
        let mut cache = match (best, self.decoder.as_ref()) {
            // The conversation goes on: the pass takes its cache.
            (Some((shared, _, i)), _)
                if shared == self.kept[i].ids.len() && self.kept[i].scope != PUBLIC =>
            {
                self.kept.swap_remove(i).cache
            }
            // Another that starts alike (a shared system prompt, or a turn
            // asked again): a copy of the start, the kept one stays whole.
            (Some((shared, _, i)), _) => {
                self.kept[i].used = self.clock;
                self.kept[i].cache.prefix(shared, tokens)
            }
            (None, Some(decoder)) => decoder.new_cache(),
            // Not loaded: `begin` refuses before anything is admitted.
            (None, None) => KvCache::new(0, 0),
        };
        // The pass holds exactly what it reserved; the kept caches give up
        // what it needs, oldest first.
        cache.reserve_exact(tokens);
        while self.gate.reserved() + self.kept_tokens() > self.budget() {
            let Some(oldest) = (0..self.kept.len())
                .filter(|&i| self.kept[i].scope != PUBLIC)
                .min_by_key(|&i| self.kept[i].used)
            else {
                break;
            };
            self.kept.swap_remove(oldest);
        }
        let cached = cache.len();
        self.reused_tokens += cached as u64;
        self.passes.push(Pass {
            handle,
            reserved: tokens,
            cache,
            scope,
            fed: false,
            stage: 0,
            missed: false,
        });
        Opened {
            handle,
            cached,
            public_tokens: self.public_tokens(),
        }
    }

    /// Ends request `id` at `now`: a pass frees its reservation, a waiter
    /// its place. With `keep`, the ids a pass was fed (every shard of the
    /// chain is told the same), its cache is kept for a later prompt of
    /// its scope that starts with them; a cache that does not hold exactly
    /// those (a pass that failed midway) is dropped. Ending a request that
    /// already ended does nothing.
    pub fn close(&mut self, id: u32, keep: Option<&[u32]>, now: Millis) {
        self.gate.release(id);
        self.answers.retain(|(a, _, _)| *a != id);
        if let Some(i) = self.passes.iter().position(|p| p.handle == id) {
            let pass = self.passes.swap_remove(i);
            self.keep(pass, keep);
        }
        self.settle(now);
    }

    fn keep(&mut self, mut pass: Pass, keep: Option<&[u32]>) {
        let Some(ids) = keep else {
            return;
        };
        if ids.is_empty() || ids.len() != pass.cache.len() {
            return;
        }
        if pass.scope == PUBLIC {
            // Pinned once: its tokens leave the budget for good, if they
            // are free now and within the public share.
            let known = self.kept.iter().any(|k| k.scope == PUBLIC && k.ids == ids);
            if known
                || self.public_tokens() + ids.len() > MOST_PUBLIC_TOKENS
                || self.kept_tokens() + ids.len() > self.gate.free()
                || !self.gate.pin(ids.len())
            {
                return;
            }
        }
        pass.cache.reserve_exact(ids.len());
        self.clock += 1;
        self.kept.push(Kept {
            scope: pass.scope,
            ids: ids.to_vec(),
            cache: pass.cache,
            used: self.clock,
        });
    }

    /// Pass `id`'s caller is still there: a touch from its timer, `late`
    /// ms after it was due, at `now`. False if the pass is not open (it
    /// ended, or was reclaimed: the caller had gone quiet too long).
    pub fn touch(&mut self, id: u32, now: Millis, late: Millis) -> bool {
        self.gate.timer(now, late);
        let held = self.gate.touch(id, now);
        self.settle(now);
        held
    }

    /// A timer of the entry's fired at `now`, `late` ms after it was due
    /// (an operator's `GET /` waits for one): leases run on.
    pub fn tick(&mut self, now: Millis, late: Millis) {
        self.gate.timer(now, late);
        self.settle(now);
    }

    /// Whom to wake and which passes ended since the last call.
    pub fn take_news(&mut self) -> News {
        std::mem::take(&mut self.news)
    }

    /// Feeds `input` to pass `handle` at `now`, its first row at position
    /// `at`: hidden states for the next shard, or the next token's logits
    /// from the last one. A pass's first input may start before the end of
    /// the cache it opened with (the chain continues where every shard has
    /// a cache): the rest is forgotten. A batch of one ([`Shard::step_batch`]).
    pub fn step(
        &mut self,
        handle: u32,
        at: usize,
        input: Input,
        now: Millis,
    ) -> Result<Vec<f32>, ShardError> {
        let call = Call {
            handle,
            at,
            input,
            best: 0,
        };
        match self.run_batch(&[call], now).pop().flatten() {
            Some(Ok(Output::Floats(out))) => Ok(out),
            Some(Ok(Output::Best(_))) => unreachable!("no candidates were asked for"),
            Some(Err(e)) => Err(e),
            None => Err(ShardError::NoPass(handle)),
        }
    }

    /// Runs `calls` (each as [`Shard::step`] would run it) at `now`, as many
    /// as may go together in one stage of the model part: each weight is
    /// read once for all of them, and each call's output is bit for bit
    /// what it gets alone (`Decoder::stage_batch`), so a stream's tokens
    /// never depend on who else was talking. One call's error (a pass
    /// ended, a wrong position, a reservation overrun, a bad input) fails
    /// it alone.
    ///
    /// The calls run in the order given, as a prefix: the first always
    /// runs; the next joins while the batch's rows stay within
    /// [`BATCH_ROWS`] or the first call's rows, whichever is more, and its
    /// pass has no call in the batch yet (a pass's calls follow each
    /// other). The rest are `None`: the caller asks again with them first
    /// (after letting other events run), so nobody is overtaken. Calls
    /// that fail do not count.
    ///
    /// Batches form only if calls wait for each other: on one thread, calls
    /// that arrive one by one would each run alone. So while a pass in
    /// step has not called yet, the calls are held (none runs,
    /// [`Batch::hold`]), at most [`HOLD`] ms ([`Shard::set_hold`]) per pass
    /// in step from the first held ask. Past the first shard, a pass is in
    /// step when it ran in one of the last two stages: conversations that
    /// ran together stay together, and a group split in two (one part ran
    /// before the other's calls were relayed) joins again. The first shard (the embedding: where every token's
    /// pass starts) merges groups: there a pass is in step when it ran in
    /// one of the last `n` stages (`n` the passes fed; with `g` groups
    /// taking turns, each runs every `g <= n` stages), and the hold is
    /// [`MERGE`] times longer, since a group behind another arrives only
    /// after the other's trip through every shard. Holding for each other
    /// on every shard would not merge them: each would wait on one shard
    /// for the other, held on another. A new conversation joins at its
    /// first call; one that ended is not waited for, and one that did not
    /// come before a hold ran out is not waited for again until it calls.
    /// A single conversation is never held.
    pub fn step_batch(&mut self, calls: &[Call], now: Millis) -> Batch {
        let asked = |p: &Pass| calls.iter().any(|c| c.handle == p.handle);
        // The chain's first shard: the one that embeds. (In a plan whose
        // vocabulary is cut into slices no layer shard embeds, and the first
        // holds calls as the others do: its part alone cannot tell it from
        // SmolLM2's second shard, which also starts at layer 0.)
        let first = self.decoder.as_ref().is_some_and(|d| d.part().embeds);
        let fed = self.passes.iter().filter(|p| p.fed).count() as u64;
        let window = if first { fed } else { RELAY_WINDOW };
        let in_step = |p: &&Pass| p.fed && !p.missed && p.stage + window > self.stages;
        let missing = self.passes.iter().filter(in_step).any(|p| !asked(p));
        let per_pass = if first { MERGE * self.hold } else { self.hold };
        let bound = per_pass * self.passes.iter().filter(in_step).count() as Millis;
        let waited = now.saturating_sub(*self.holding.get_or_insert(now));
        if missing && waited < bound && !calls.is_empty() {
            self.holds += 1;
            return Batch {
                ran: calls.iter().map(|_| None).collect(),
                hold: Some(bound - waited),
            };
        }
        self.holding = None;
        if missing && !calls.is_empty() {
            self.hold_timeouts += 1;
            // Not waited for again until it calls.
            let stages = self.stages;
            for p in self.passes.iter_mut() {
                if p.fed && p.stage + window > stages && !asked(p) {
                    p.missed = true;
                }
            }
        }
        Batch {
            ran: self.run_batch(calls, now),
            hold: None,
        }
    }

    /// Runs what of `calls` may go together (see [`Shard::step_batch`]).
    fn run_batch(&mut self, calls: &[Call], now: Millis) -> Vec<Ran> {
        let mut ran: Vec<Ran> = Vec::with_capacity(calls.len());
        let Some(decoder) = self.decoder.as_ref() else {
            ran.resize_with(calls.len(), || Some(Err(ShardError::NotLoaded)));
            return ran;
        };
        let dims = decoder.config().dims.max(1);
        let mut limit = decoder.config().context;
        // The calls that run: (call, pass index, its input, its rows).
        let mut chosen: Vec<(usize, usize, StageInput, usize)> = Vec::with_capacity(calls.len());
        let mut rows = 0;
        for (c, call) in calls.iter().enumerate() {
            let (input, n) = match call.input {
                Input::Tokens(t) => (StageInput::Tokens(t), t.len()),
                Input::Hidden(h) => (StageInput::Hidden(h), h.len() / dims),
            };
            let Some(i) = self.passes.iter().position(|p| p.handle == call.handle) else {
                ran.push(Some(Err(ShardError::NoPass(call.handle))));
                continue;
            };
            if chosen.is_empty() {
                limit = limit.min(n.max(BATCH_ROWS));
            }
            let full = !chosen.is_empty() && rows + n > limit;
            // The last shard's batches hold a row of logits per call: as
            // many as its plan counts.
            let predicting = decoder.part().predicts && chosen.len() >= PREDICT_ROWS;
            if full || predicting || chosen.iter().any(|c| c.1 == i) {
                break;
            }
            let checked = if self.gate.touch(call.handle, now) {
                Self::check(&mut self.passes[i], call.at, n).map(|()| i)
            } else {
                Err(ShardError::NoPass(call.handle))
            };
            match checked {
                Ok(i) => {
                    chosen.push((c, i, input, n));
                    rows += n;
                    ran.push(None);
                }
                Err(e) => ran.push(Some(Err(e))),
            }
        }
        ran.resize_with(calls.len(), || None);
        if chosen.is_empty() {
            return ran;
        }
        let mut steps = Vec::with_capacity(chosen.len());
        let mut order = Vec::with_capacity(chosen.len());
        for (i, pass) in self.passes.iter_mut().enumerate() {
            if let Some(&(c, _, input, _)) = chosen.iter().find(|x| x.1 == i) {
                steps.push(Step {
                    cache: &mut pass.cache,
                    input,
                });
                order.push((c, i));
            }
        }
        let results = decoder.stage_batch(&mut steps);
        drop(steps);
        let predicts = decoder.part().predicts;
        self.stages += 1;
        for ((c, i), result) in order.into_iter().zip(results) {
            let result = result.map(|out| match calls[c].best {
                k if predicts && (1..=MOST_BEST).contains(&k) => {
                    self.ranked_calls += 1;
                    Output::Best(best(&out, k))
                }
                _ => Output::Floats(out),
            });
            if result.is_ok() {
                self.passes[i].fed = true;
                self.passes[i].stage = self.stages;
                self.passes[i].missed = false;
            }
            ran[c] = Some(result.map_err(ShardError::from));
        }
        if chosen.len() > 1 {
            self.batched_stages += 1;
            self.batched_calls += chosen.len() as u64;
        }
        self.max_batch = self.max_batch.max(chosen.len());
        ran
    }

    /// Whether `pass` may be fed `rows` rows from position `at`: the first
    /// input may start inside the cache it opened with (the rest is
    /// forgotten), later ones where the last ended, and never past its
    /// reservation.
    fn check(pass: &mut Pass, at: usize, rows: usize) -> Result<(), ShardError> {
        let held = pass.cache.len();
        if at < held && !pass.fed {
            pass.cache.truncate(at);
        } else if at != held {
            return Err(ShardError::Position { at, held });
        }
        let needed = pass.cache.len() + rows;
        if needed > pass.reserved {
            return Err(ShardError::OverReservation {
                reserved: pass.reserved,
                needed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(budget: usize) -> Shard {
        shard_from(budget, 1)
    }

    /// A config-only part (no layers) is enough for the bookkeeping.
    fn shard_from(budget: usize, first_id: u32) -> Shard {
        use edgeinfer_engine::decoder::format::{Header, Rope, RopeStyle, MAGIC};
        use edgeinfer_engine::packed::{leak_aligned, Packer};
        let config = Config {
            vocab: 8,
            dims: 4,
            heads: 1,
            kv_heads: 1,
            head_dim: 4,
            ffn: 8,
            context: 100,
            norm_eps: 1e-5,
            rope: Rope {
                theta: 10000.0,
                style: RopeStyle::HalfSplit,
            },
        };
        let header = Header {
            config,
            part: Part {
                model_layers: 2,
                first_layer: 1,
                end_layer: 1,
                embeds: false,
                predicts: false,
            },
            embedding: None,
            layers: Vec::new(),
            final_norm: None,
            head: None,
            rope_factors: None,
        };
        let bytes = leak_aligned(&Packer::default().finish(MAGIC, &header).unwrap());
        let mut s = Shard::new(budget, first_id);
        s.load(bytes).unwrap();
        s
    }

    /// Opens a pass with no prompt to match, at time 0: its handle if
    /// admitted at once.
    fn open(s: &mut Shard, tokens: usize) -> Result<u32, Begun> {
        match s.begin(tokens, "", &[], 0) {
            Ok(Begun::Admitted(o)) => Ok(o.handle),
            Ok(other) => Err(other),
            Err(e) => panic!("{e}"),
        }
    }

    fn opened(s: &mut Shard, tokens: usize, scope: &str, prompt: &[u32]) -> Opened {
        match s.begin(tokens, scope, prompt, 0) {
            Ok(Begun::Admitted(o)) => o,
            other => panic!("not admitted: {other:?}"),
        }
    }

    /// Hidden states of `rows` positions (dims 4).
    fn rows(rows: usize) -> Vec<f32> {
        vec![0.5; rows * 4]
    }

    #[test]
    fn passes_are_admitted_while_their_reservations_fit_the_budget() {
        let mut s = shard(150);
        let a = open(&mut s, 100).unwrap();
        let b = open(&mut s, 50).unwrap();
        let Err(Begun::Waiting { id: w, .. }) = open(&mut s, 60) else {
            panic!("not waiting");
        };
        s.close(a, None, 1);
        // The waiter got the freed room, and is woken to collect it.
        assert_eq!(s.take_news().wake, vec![w]);
        assert!(matches!(s.poll(w, 2, None), Begun::Admitted(o) if o.handle == w));
        assert_eq!(s.info().unwrap().reserved_tokens, 110);
        s.close(b, None, 3);
        s.close(b, None, 3);
        assert_eq!(s.info().unwrap().reserved_tokens, 60);
        for tokens in [0, 101] {
            assert!(matches!(
                s.begin(tokens, "", &[], 4),
                Err(ShardError::BadReservation { .. })
            ));
        }
    }

    #[test]
    fn a_request_that_never_fits_is_refused_without_retry() {
        let mut s = shard(50);
        assert_eq!(
            open(&mut s, 60),
            Err(Begun::Refused {
                refusal: Refusal::NeverFits {
                    asked: 60,
                    budget: 50
                },
                retry_after: None
            })
        );
    }

    #[test]
    fn a_waiter_out_of_time_is_refused_with_a_time_to_retry() {
        let mut s = shard(100);
        open(&mut s, 100).unwrap();
        let Err(Begun::Waiting { id, until }) = open(&mut s, 10) else {
            panic!("not waiting");
        };
        // Not woken by a lease: nothing was called, but no timer ran yet.
        let wait = Limits::for_budget(100).wait;
        assert!(until < wait);
        assert!(matches!(s.poll(id, wait - 1, None), Begun::Waiting { .. }));
        assert_eq!(
            s.poll(id, wait, None),
            Begun::Refused {
                refusal: Refusal::TimedOut,
                retry_after: Some(5)
            }
        );
        assert_eq!(s.poll(id, wait, None), Begun::Unknown, "answered once");
        assert_eq!(s.info().unwrap().refused_requests, 1);
    }

    #[test]
    fn an_abandoned_pass_is_reclaimed_and_its_caller_is_told() {
        let mut s = shard(100);
        let lease = Limits::for_budget(100).lease;
        let gone = open(&mut s, 60).unwrap();
        let live = open(&mut s, 40).unwrap();
        s.step(gone, 0, Input::Hidden(&rows(1)), 10).unwrap();
        // The live caller touches every second; the other went quiet after
        // its first step at 10 ms.
        for t in (1..=6).map(|i| i * 1_000) {
            assert!(s.touch(live, t, 0));
        }
        assert_eq!(s.take_news().ended, vec![gone]);
        assert_eq!(
            s.step(gone, 1, Input::Hidden(&rows(1)), 11 + lease),
            Err(ShardError::NoPass(gone))
        );
        assert!(!s.touch(gone, 12 + lease, 0));
        let info = s.info().unwrap();
        assert_eq!((info.reclaimed_passes, info.reserved_tokens), (1, 40));
    }

    #[test]
    fn a_waiter_gets_an_abandoned_passs_room() {
        let mut s = shard(100);
        let lease = Limits::for_budget(100).lease;
        let gone = open(&mut s, 100).unwrap();
        let Ok(Begun::Waiting { id, until }) = s.begin(50, "", &[], 1_000) else {
            panic!("not waiting");
        };
        // Its wake-up, on time when the lease can end, is the evidence.
        assert_eq!(until, lease);
        assert!(matches!(s.poll(id, until, Some(0)), Begun::Admitted(_)));
        assert_eq!(s.take_news().ended, vec![gone]);
    }

    #[test]
    fn an_admitted_waiter_that_never_collects_is_reclaimed_too() {
        let mut s = shard(100);
        let lease = Limits::for_budget(100).lease;
        let a = open(&mut s, 100).unwrap();
        let Err(Begun::Waiting { id: dead, .. }) = open(&mut s, 100) else {
            panic!("not waiting");
        };
        s.close(a, None, 1);
        assert_eq!(s.take_news().wake, vec![dead]);
        // Its caller is gone and never asks again: it is reclaimed a lease
        // later like any pass never called.
        s.tick(1 + lease, 0);
        assert_eq!(s.take_news().ended, vec![dead]);
        assert_eq!(s.poll(dead, 2 + lease, None), Begun::Unknown);
        assert_eq!(s.info().unwrap().reserved_tokens, 0);
    }

    #[test]
    fn an_admission_is_kept_until_its_caller_asks() {
        let mut s = shard(100);
        let a = open(&mut s, 100).unwrap();
        let Err(Begun::Waiting { id, .. }) = open(&mut s, 100) else {
            panic!("not waiting");
        };
        s.close(a, None, 1);
        // The waiter's code runs late (a long step elsewhere): its answer,
        // and its pass, are still there.
        assert!(matches!(s.poll(id, 5_001, None), Begun::Admitted(o) if o.handle == id));
    }

    #[test]
    fn handles_start_where_the_entry_says() {
        // After a trap the entry makes a new instance starting past every
        // id the old one handed out: a stale close names no new pass.
        let mut old = shard(100);
        let stale = open(&mut old, 10).unwrap();
        let mut new = shard_from(100, stale + 1);
        let fresh = open(&mut new, 10).unwrap();
        assert!(fresh > stale);
        new.close(stale, None, 1);
        assert_eq!(new.info().unwrap().open_passes, 1);
        assert_eq!(
            new.step(stale, 0, Input::Hidden(&rows(1)), 1),
            Err(ShardError::NoPass(stale))
        );
    }

    #[test]
    fn a_pass_cannot_feed_more_than_it_reserved() {
        let mut s = shard(100);
        let p = open(&mut s, 2).unwrap();
        assert!(s.step(p, 0, Input::Hidden(&rows(2)), 0).is_ok());
        assert!(matches!(
            s.step(p, 2, Input::Hidden(&rows(1)), 0),
            Err(ShardError::OverReservation {
                reserved: 2,
                needed: 3
            })
        ));
        assert!(matches!(
            s.step(p + 1, 2, Input::Hidden(&rows(1)), 0),
            Err(ShardError::NoPass(_))
        ));
    }

    /// Feeds `ids.len()` positions to a new pass of `prompt` (reserving as
    /// many) and keeps its cache as `ids`.
    fn converse(s: &mut Shard, scope: &str, prompt: &[u32], ids: &[u32]) -> Opened {
        let opened = opened(s, ids.len(), scope, prompt);
        let at = opened.cached;
        s.step(opened.handle, at, Input::Hidden(&rows(ids.len() - at)), 0)
            .unwrap();
        s.close(opened.handle, Some(ids), 0);
        opened
    }

    #[test]
    fn a_prompt_continues_from_the_kept_cache_it_starts_with_in_its_scope() {
        let mut s = shard(200);
        // Turn 1: prompt 1 2 3, reply 4 5 (the last sampled token unfed).
        assert_eq!(
            converse(&mut s, "key-a", &[1, 2, 3], &[1, 2, 3, 4, 5]).cached,
            0
        );
        let info = s.info().unwrap();
        assert_eq!(
            (info.kept_caches, info.kept_tokens, info.reserved_tokens),
            (1, 5, 0)
        );
        // Another caller's identical prompt starts from nothing.
        let other = opened(&mut s, 50, "key-b", &[1, 2, 3, 4, 5, 6]);
        assert_eq!(other.cached, 0);
        s.close(other.handle, None, 0);
        // Turn 2 of the same caller: the history, then new tokens.
        let next = opened(&mut s, 50, "key-a", &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(next.cached, 5);
        assert_eq!(s.info().unwrap().kept_caches, 0, "the pass took the cache");
        // The chain continues where every shard has a cache: earlier is fine
        // on the first input, not later, and not once fed.
        assert!(matches!(
            s.step(next.handle, 6, Input::Hidden(&rows(1)), 0),
            Err(ShardError::Position { at: 6, held: 5 })
        ));
        s.step(next.handle, 4, Input::Hidden(&rows(3)), 0).unwrap();
        assert!(matches!(
            s.step(next.handle, 3, Input::Hidden(&rows(1)), 0),
            Err(ShardError::Position { at: 3, held: 7 })
        ));
        // A cache that does not hold what the caller says is not kept.
        s.close(next.handle, Some(&[1, 2, 3]), 0);
        assert_eq!(s.info().unwrap().kept_caches, 0);
        assert_eq!(s.info().unwrap().reused_tokens, 5);
    }

    #[test]
    fn the_public_start_is_pinned_out_of_the_budget_and_copied_into_every_scope() {
        let mut s = shard(100);
        converse(&mut s, PUBLIC, &[1, 2, 3, 4], &[1, 2, 3, 4]);
        let info = s.info().unwrap();
        assert_eq!(
            (info.public_tokens, info.budget_tokens, info.kept_caches),
            (4, 96, 0),
            "pinned: out of the budget, not a kept cache"
        );
        // Fed again (another front isolate warming): pinned once. Every
        // admission says what is pinned (none before).
        assert_eq!(
            converse(&mut s, PUBLIC, &[1, 2, 3, 4], &[1, 2, 3, 4]).public_tokens,
            4
        );
        assert_eq!(
            shard(100).begin(5, "key-a", &[1], 0).map(|b| matches!(
                b,
                Begun::Admitted(Opened {
                    public_tokens: 0,
                    ..
                })
            )),
            Ok(true)
        );
        assert_eq!(s.info().unwrap().public_tokens, 4);
        // Any scope whose prompt starts with it starts from a copy of it.
        for scope in ["key-a", "key-b", ""] {
            let o = opened(&mut s, 10, scope, &[1, 2, 3, 4, 9, 9]);
            assert_eq!(o.cached, 4, "{scope}");
            s.close(o.handle, None, 0);
        }
        // A prompt that shares only its first ids copies those.
        let o = opened(&mut s, 10, "key-a", &[1, 2, 7]);
        assert_eq!(o.cached, 2);
        s.close(o.handle, None, 0);
        // A caller's own kept cache is still its own alone, and passes that
        // need the whole budget drop it but never the public start.
        converse(&mut s, "key-a", &[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            opened(&mut s, 10, "key-b", &[1, 2, 3, 4, 5, 6, 7]).cached,
            4
        );
        let all = opened(&mut s, 86, "key-c", &[8]);
        assert_eq!(all.cached, 0);
        let info = s.info().unwrap();
        assert_eq!((info.kept_caches, info.public_tokens), (0, 4));
        assert!(matches!(
            s.begin(97, "key-d", &[1], 0),
            Ok(Begun::Refused { .. })
        ));
        s.close(all.handle, None, 0);
        // The public share is bounded: past it, nothing more is pinned.
        let mut big = shard(1000);
        for start in [0, 100, 200] {
            let ids: Vec<u32> = (start..start + 90).collect();
            converse(&mut big, PUBLIC, &ids, &ids);
        }
        let info = big.info().unwrap();
        assert_eq!((info.public_tokens, info.budget_tokens), (180, 820));
    }

    #[test]
    fn a_prompt_that_starts_alike_copies_the_start_and_the_longest_match_wins() {
        let mut s = shard(200);
        // Two conversations with the same first token (a system prompt).
        converse(&mut s, "", &[1, 2], &[1, 2, 3, 4]);
        assert_eq!(converse(&mut s, "", &[1, 9], &[1, 9, 8]).cached, 1);
        let kept = s.info().unwrap();
        assert_eq!(
            (kept.kept_caches, kept.kept_tokens),
            (2, 7),
            "both kept whole"
        );
        // The first goes on from all of its history.
        assert_eq!(opened(&mut s, 50, "", &[1, 2, 3, 4, 5]).cached, 4);
        // A prompt asked again still feeds its last token.
        assert_eq!(opened(&mut s, 50, "", &[1, 9, 8]).cached, 2);
        assert_eq!(s.info().unwrap().kept_caches, 1);
    }

    #[test]
    fn kept_caches_give_way_to_new_passes_oldest_first() {
        let mut s = shard(100);
        converse(&mut s, "", &[1], &[1; 30]);
        converse(&mut s, "", &[2], &[2; 30]);
        converse(&mut s, "", &[3], &[3; 30]);
        assert_eq!(s.info().unwrap().kept_tokens, 90);
        // A pass of 50 needs 40 of the 90 kept tokens: the two oldest go.
        let p = opened(&mut s, 50, "", &[7]);
        assert_eq!(p.cached, 0);
        let info = s.info().unwrap();
        assert_eq!((info.kept_tokens, info.reserved_tokens), (30, 50));
        s.close(p.handle, None, 0);
        assert_eq!(
            opened(&mut s, 50, "", &[3, 3, 3]).cached,
            2,
            "the newest stays"
        );
        // Kept caches never refuse a pass: the whole budget is still free.
        assert!(matches!(open(&mut s, 51), Err(Begun::Waiting { .. })));
    }

    /// A request of key-a for 20 tokens continuing a kept conversation
    /// (3 tokens), made to wait by passes of `holding` tokens, admitted when
    /// the last of them closes: its answer.
    fn admitted_after_a_wait(budget: usize, holding: &[usize]) -> Begun {
        let mut s = shard(budget);
        converse(&mut s, "key-a", &[1, 2], &[1, 2, 3]);
        let held: Vec<u32> = holding.iter().map(|&t| open(&mut s, t).unwrap()).collect();
        let Ok(Begun::Waiting { id, .. }) = s.begin(20, "key-a", &[1, 2, 3, 4], 1) else {
            panic!("not waiting");
        };
        s.close(held[held.len() - 1], None, 2);
        s.poll(id, 2, None)
    }

    #[test]
    fn a_waiter_admitted_later_starts_from_its_kept_cache() {
        // With room for it and the kept cache: it continues from it.
        assert!(matches!(
            admitted_after_a_wait(200, &[100, 90]),
            Begun::Admitted(Opened { cached: 3, .. })
        ));
        // The pass of 100 it waited for needed the kept cache's room.
        assert!(matches!(
            admitted_after_a_wait(100, &[100]),
            Begun::Admitted(Opened { cached: 0, .. })
        ));
    }
}
