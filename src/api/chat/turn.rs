//! One reply in progress, as a small state machine the host drives with
//! one pair of calls: [`ChatTurn::poll`] says what is needed next (a model
//! pass the host runs elsewhere) or what the reply has come to (an
//! [`Event`]); [`ChatTurn::feed`] hands back a pass's result. A model this
//! isolate runs does its pass inside `poll`. What the events look like on
//! the wire is the renderers' business ([`super::render`]), and where a
//! finished reply is kept is its [`TurnSink`]'s: a turn knows neither, so a
//! new wire format or a new kind of storage does not touch it.

use crate::api::error::ApiError;
use crate::api::timing::{self, Clock, Timings, Work};
use crate::api::{hex, Context, Served};
use crate::decoder::chat::ChatModel;
use crate::decoder::constraint::Grammar;
use crate::decoder::generation::{Delta, FinishReason, Generation};
use crate::decoder::sampling::Logits;
use crate::decoder::template::Message;
use crate::error::CoreError;
use crate::registry::{self, InputSpec, ModelSpec, ShardSpec};
use edgeinfer_engine::decoder::stage_rows;

use super::fields::GenerationFields;
use super::wire::{ChatUsage, PromptTokensDetails};

/// What the host supplies per reply: an id, the time, a seed for requests
/// without one (the core has no clock and no randomness of its own).
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// `chatcmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub seed: u64,
    /// The isolate's clock, for `Server-Timing` and `usage.cpu_ms`.
    pub clock: Clock,
}

impl RequestMeta {
    /// A fresh id and seed from the host's randomness, and its time.
    pub fn draw(ctx: &Context<'_>) -> Self {
        let mut bytes = [0u8; 20];
        (ctx.random)(&mut bytes);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[12..]);
        RequestMeta {
            id: format!("chatcmpl-{}", hex(&bytes[..12])),
            created: (ctx.now)(),
            seed: u64::from_le_bytes(seed),
            clock: ctx.clock,
        }
    }
}

/// What a reply is made from.
#[derive(Debug)]
pub struct TurnPlan {
    pub spec: &'static ModelSpec,
    /// The whole conversation the model sees (system prompt and history
    /// included).
    pub messages: Vec<Message>,
    pub generation: GenerationFields,
    /// What the reply must be (JSON under a schema, a tool call), if
    /// anything: checked by the request's parse, compiled here.
    pub grammar: Option<Grammar>,
}

/// What [`ChatTurn::poll`] asks of the host, or tells it.
#[derive(Debug)]
pub enum Step {
    /// Run one model pass over these token ids where the model's weights
    /// are (its shard Workers) and [`ChatTurn::feed`] the result; then poll
    /// again.
    Pass(Vec<u32>),
    /// What the reply has come to: render it and poll again, until
    /// [`Event::Done`].
    Event(Event),
}

/// What a reply has come to, in order: `Started`, then `Text` and `Pending`
/// as the model steps, then `Finished` or `Failed`, then `Done`.
#[derive(Debug)]
pub enum Event {
    /// The reply begins (before any model pass: a stream's first bytes go
    /// out while the prompt is read).
    Started,
    /// Text to append to the reply (never empty).
    Text(String),
    /// A model step whose text is held back for now (half a character, or
    /// what may be the start of a stop sequence): nothing to show, but a
    /// stream may send a sign of life so each step still sends something.
    Pending,
    /// The reply is complete, and its sink has taken it.
    Finished(Finish),
    /// The reply ended on an error (the model, a shard, the sink): no more
    /// text follows, and the sink has taken nothing.
    Failed(ApiError),
    /// Nothing more: every later poll says so again.
    Done,
}

/// How a reply ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The reply's last text, shown with its end (it may be empty): what a
    /// stop sequence or the end of a character had held back.
    pub text: String,
    pub reason: FinishReason,
    pub usage: ChatUsage,
}

/// A finished reply, as a [`TurnSink`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    pub finish_reason: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Where a finished reply goes before the client sees its end: a session
/// stores it (and the turn's messages) there, so a client never gets an
/// end its session does not hold. `()` keeps nothing: a reply without a
/// session.
pub trait TurnSink {
    /// Called once, with the whole reply, before the event that ends it
    /// ([`Event::Finished`]) is handed out; an error replaces that event
    /// with [`Event::Failed`].
    fn finished(&mut self, reply: &Reply) -> Result<(), ApiError>;
}

impl TurnSink for () {
    fn finished(&mut self, _: &Reply) -> Result<(), ApiError> {
        Ok(())
    }
}

/// What a host ran for [`Step::Pass`].
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// The next token's logits: all of them, or the best few the turn
    /// asked for ([`ChatTurn::needs_best`]).
    pub logits: Logits,
    /// The pass's time as the host measured it (ms).
    pub ms: f64,
    /// Each shard Worker's own time (its name for `Server-Timing`, ms),
    /// once per piece of the pass: summed by name.
    pub hops: Vec<(&'static str, f64)>,
    /// How many of the prompt's first tokens the model already held before
    /// the turn's first pass (kept from the conversation's last turn): they
    /// are reported as `usage.prompt_tokens_details.cached_tokens` and not
    /// counted as prompt work in `cpu_ms`.
    pub cached: usize,
}

/// What a renderer shows of every reply: which reply, and which model.
#[derive(Debug, Clone)]
pub struct Head {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// `id@version`.
    pub model: String,
    pub model_sha256: &'static str,
}

/// A model whose weights are in shard Workers, not in this isolate: what
/// the host needs to open the passes of a turn there.
#[derive(Debug, Clone, Copy)]
pub struct Sharded<'a> {
    /// The model's id (what its shard Workers are named after).
    pub model: &'static str,
    pub shards: &'static [ShardSpec],
    /// The most tokens the turn feeds the model: its prompt and its reply,
    /// within the context (what a shard reserves cache memory for).
    pub most_tokens: usize,
    /// The prompt's token ids (what the shards match their kept caches
    /// against).
    pub prompt: &'a [u32],
    /// [`ChatModel::public_start`]: what the shards keep for every caller.
    pub public_start: &'static [u32],
    /// The most rows a call carries: the model's window
    /// (`edgeinfer_engine::decoder::stage_rows`), as its shards run it.
    pub window: usize,
    /// Its hidden states' width.
    pub dims: usize,
}

/// Where a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Steps,
    /// Finished or failed: only `Done` is left.
    Ended,
    Done,
}

/// One reply in progress.
pub struct ChatTurn {
    spec: &'static ModelSpec,
    generation: Generation<'static>,
    meta: RequestMeta,
    dropped_messages: usize,
    phase: Phase,
    /// A pass the host could not run, or whose logits did not fit: told by
    /// the next poll.
    failed: Option<ApiError>,
    /// True when this request loaded the model (a cold start).
    model_loaded: bool,
    /// Model load (if any) and prompt building, before the first event.
    timings: Timings,
    /// Time spent generating so far (ms), summed over the steps only, so
    /// the pauses between streamed events do not count.
    generating_ms: f64,
    /// Per shard Worker of a sharded model: its own time, summed.
    hops: Vec<(&'static str, f64)>,
    /// The prompt's first tokens the model did not have to feed again.
    cached_tokens: usize,
    /// The model's [`ChatModel::public_start`].
    public_start: &'static [u32],
    /// Its window ([`Sharded::window`]).
    window: usize,
    dims: usize,
}

impl ChatTurn {
    /// Loads the model (once per isolate), builds the prompt from the
    /// plan's messages and prepares generation with its fields.
    pub fn start(plan: TurnPlan, meta: RequestMeta) -> Result<Self, ApiError> {
        let mut timings = Timings::start(meta.clock);
        let options = plan.generation.options(meta.seed)?;
        let spec = plan.spec;
        let (model, model_loaded): (&'static ChatModel, bool) = registry::chat_model(spec)?;
        timings.lap_if(model_loaded, "init");
        let prompt = model.prompt(&plan.messages, options.max_tokens)?;
        timings.lap("tokenize");
        let mut generation = Generation::new(model, prompt.ids, options);
        if let Some(grammar) = &plan.grammar {
            let built = model.has_constraints();
            let constraints = model.constraints()?;
            timings.lap_if(!built, "grammar_init");
            let constraint = constraints.compile(grammar).map_err(|reason| {
                ApiError::unsupported(
                    "invalid_schema",
                    format!("the schema cannot constrain a reply: {reason}"),
                )
            })?;
            timings.lap("grammar");
            generation.constrain(constraint, meta.clock);
        }
        Ok(ChatTurn {
            spec,
            generation,
            meta,
            dropped_messages: prompt.dropped_messages,
            phase: Phase::Start,
            failed: None,
            model_loaded,
            timings,
            generating_ms: 0.0,
            hops: Vec::new(),
            cached_tokens: 0,
            public_start: model.public_start(),
            window: stage_rows(model.decoder().config()),
            dims: model.decoder().config().dims,
        })
    }

    /// The next thing to do: a pass for the host to run, or the next event
    /// of the reply (one model step's worth of work at most). A finished
    /// reply goes to `sink` before [`Event::Finished`] is returned.
    pub fn poll(&mut self, sink: &mut dyn TurnSink) -> Step {
        let event = match self.phase {
            Phase::Start => {
                self.phase = Phase::Steps;
                Event::Started
            }
            Phase::Steps => {
                if let Some(e) = self.failed.take() {
                    return Step::Event(self.fail(e));
                }
                if !self.generation.is_local() {
                    if let Some(ids) = self.generation.wants() {
                        return Step::Pass(ids);
                    }
                }
                match self.step() {
                    Ok(Delta { text, finish: None }) if text.is_empty() => Event::Pending,
                    Ok(Delta { text, finish: None }) => Event::Text(text),
                    Ok(Delta {
                        text,
                        finish: Some(reason),
                    }) => self.finish(text, reason, sink),
                    Err(e) => self.fail(ApiError::from(e)),
                }
            }
            Phase::Ended | Phase::Done => {
                self.phase = Phase::Done;
                Event::Done
            }
        };
        Step::Event(event)
    }

    /// The result of the pass [`Step::Pass`] asked for, or why the host
    /// could not run it (the reply then ends on that error).
    pub fn feed(&mut self, pass: Result<Pass, ApiError>) {
        let pass = match pass {
            Ok(pass) => pass,
            Err(e) => {
                self.failed = Some(e);
                return;
            }
        };
        self.generating_ms += pass.ms.max(0.0);
        for (name, ms) in pass.hops {
            match self.hops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += ms,
                None => self.hops.push((name, ms)),
            }
        }
        self.cached_tokens = self
            .cached_tokens
            .max(pass.cached.min(self.generation.prompt_tokens()));
        if let Err(e) = self.generation.supply(pass.logits) {
            self.failed = Some(e.into());
        }
    }

    /// How many of the next pass's best logits the turn needs, when fewer
    /// than all: a host that runs the pass in shard Workers asks the last
    /// for just these ([`Logits::Best`]).
    pub fn needs_best(&self) -> Option<usize> {
        self.generation.needs_best()
    }

    /// The shard Workers that hold the model's weights, when this isolate
    /// does not: the host opens the turn's passes there before it polls.
    pub fn sharded(&self) -> Option<Sharded<'_>> {
        match self.spec.input {
            InputSpec::ShardedChat { shards, .. } => Some(Sharded {
                model: self.spec.id,
                shards,
                most_tokens: self.generation.most_tokens(),
                prompt: self.generation.prompt(),
                public_start: self.public_start,
                window: self.window,
                dims: self.dims,
            }),
            _ => None,
        }
    }

    /// What every rendering of the reply names.
    pub fn head(&self) -> Head {
        Head {
            id: self.meta.id.clone(),
            created: self.meta.created,
            model: self.spec.qualified_name(),
            model_sha256: self.spec.sha256,
        }
    }

    /// Which model served the turn and what it cost so far, for headers
    /// and logs (a stream's headers go out before generation: they carry
    /// the load and prompt phases only).
    pub fn served(&self) -> Served {
        let usage = self.usage();
        let mut served = Served::new(self.spec, self.model_loaded);
        served.timings = self.phases().phases().to_vec();
        served.tokens = Some(usage.total_tokens);
        served.cpu_ms = Some(usage.cpu_ms);
        served
    }

    /// One generation step, timed; a finished generation answers its end
    /// again (a poll never steps past it).
    fn step(&mut self) -> Result<Delta, CoreError> {
        let clock = self.meta.clock;
        let started = clock();
        let step = self.generation.step();
        self.generating_ms += (clock() - started).max(0.0);
        Ok(step?.unwrap_or(Delta {
            text: String::new(),
            finish: Some(
                self.generation
                    .finish_reason()
                    .unwrap_or(FinishReason::Length),
            ),
        }))
    }

    /// The reply is complete: the sink takes it, then the end goes out (or
    /// the sink's error instead).
    fn finish(&mut self, text: String, reason: FinishReason, sink: &mut dyn TurnSink) -> Event {
        let reply = Reply {
            content: self.generation.text().to_string(),
            finish_reason: reason.as_str().to_string(),
            prompt_tokens: self.generation.prompt_tokens(),
            completion_tokens: self.generation.completion_tokens(),
        };
        if let Err(e) = sink.finished(&reply) {
            return self.fail(e);
        }
        self.phase = Phase::Ended;
        Event::Finished(Finish {
            text,
            reason,
            usage: self.usage(),
        })
    }

    fn fail(&mut self, error: ApiError) -> Event {
        self.phase = Phase::Ended;
        Event::Failed(error)
    }

    /// The phases so far: load and prompt, then generation.
    fn phases(&self) -> Timings {
        let mut all = self.timings.clone();
        if self.generating_ms > 0.0 || self.phase != Phase::Start {
            all.push("inference", self.generating_ms);
        }
        if self.generation.constraint_ms() > 0.0 {
            // Part of `inference`: the masks' share of it.
            all.push("constrain", self.generation.constraint_ms());
        }
        for &(name, ms) in &self.hops {
            all.push(name, ms);
        }
        all
    }

    fn usage(&self) -> ChatUsage {
        let prompt = self.generation.prompt_tokens();
        let completion = self.generation.completion_tokens();
        let work = Work {
            inputs: 1,
            tokens: prompt - self.cached_tokens,
            generated: completion,
            ..Work::default()
        };
        ChatUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self.cached_tokens,
            },
            dropped_messages: self.dropped_messages,
            cpu_ms: timing::estimate_cpu_ms(self.spec, &work),
        }
    }
}

/// One wire format of replies (beside the events it renders, so that the
/// renderers of each format implement it without importing one another).
pub trait Render {
    /// The bytes `event` adds to the reply's body (none for some).
    fn render(&mut self, event: &Event) -> Vec<u8>;
}

/// A wire format answered with one body once the reply is complete.
pub trait WholeBody {
    /// The body of the complete reply, `text`.
    fn body(&self, text: &str, finish: &Finish) -> Vec<u8>;
}

/// A [`WholeBody`] format as a [`Render`]: the text gathered as it comes,
/// one body at the finish (or the failure's error body).
pub struct Whole<B> {
    format: B,
    text: String,
}

impl<B: WholeBody> Whole<B> {
    pub fn new(format: B) -> Self {
        Whole {
            format,
            text: String::new(),
        }
    }
}

impl<B: WholeBody> Render for Whole<B> {
    fn render(&mut self, event: &Event) -> Vec<u8> {
        match event {
            Event::Text(text) => {
                self.text.push_str(text);
                Vec::new()
            }
            Event::Finished(finish) => {
                self.text.push_str(&finish.text);
                self.format.body(&self.text, finish)
            }
            Event::Failed(e) => e.body(),
            Event::Started | Event::Pending | Event::Done => Vec::new(),
        }
    }
}

#[cfg(test)]
/// A reply's last event, with made-up usage (the renderers' tests share it).
pub(crate) fn finished(text: &str, reason: crate::decoder::generation::FinishReason) -> Event {
    Event::Finished(Finish {
        text: text.into(),
        reason,
        usage: super::wire::ChatUsage {
            prompt_tokens: 5,
            completion_tokens: 3,
            total_tokens: 8,
            prompt_tokens_details: super::wire::PromptTokensDetails { cached_tokens: 2 },
            dropped_messages: 0,
            cpu_ms: 1.5,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::timing::frozen_clock;
    use crate::decoder::template::Role;

    /// Keeps every reply it is given; fails instead when told to.
    #[derive(Default)]
    struct Kept {
        replies: Vec<Reply>,
        fail: bool,
    }

    impl TurnSink for Kept {
        fn finished(&mut self, reply: &Reply) -> Result<(), ApiError> {
            if self.fail {
                return Err(ApiError::internal("the disk is full"));
            }
            self.replies.push(reply.clone());
            Ok(())
        }
    }

    fn turn(model: &str, max_tokens: u64) -> ChatTurn {
        let plan = TurnPlan {
            spec: registry::chat_spec(model).unwrap(),
            messages: vec![Message {
                role: Role::User,
                content: "Speak, and tell me all.".into(),
            }],
            generation: GenerationFields {
                max_tokens: Some(max_tokens),
                temperature: Some(0.0),
                ..GenerationFields::default()
            },
            grammar: None,
        };
        let meta = RequestMeta {
            id: "chatcmpl-test".into(),
            created: 1,
            seed: 0,
            clock: frozen_clock,
        };
        ChatTurn::start(plan, meta).unwrap()
    }

    /// Polls a turn of a model this isolate runs until `Done`.
    fn events(turn: &mut ChatTurn, sink: &mut dyn TurnSink) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match turn.poll(sink) {
                Step::Pass(ids) => panic!("a local model asked for a pass over {ids:?}"),
                Step::Event(Event::Done) => return events,
                Step::Event(event) => events.push(event),
            }
        }
    }

    #[test]
    fn a_local_turn_starts_steps_finishes_into_its_sink_and_stays_done() {
        let mut turn = turn("shakespeare-llama", 24);
        assert!(turn.sharded().is_none());
        let mut sink = Kept::default();
        let events = events(&mut turn, &mut sink);
        assert!(matches!(events.first(), Some(Event::Started)), "{events:?}");
        let Some(Event::Finished(finish)) = events.last() else {
            panic!("{events:?}");
        };
        let mut text = String::new();
        for event in &events[1..events.len() - 1] {
            match event {
                Event::Text(t) => {
                    assert!(!t.is_empty());
                    text.push_str(t);
                }
                Event::Pending => {}
                other => panic!("{other:?} mid-reply"),
            }
        }
        text.push_str(&finish.text);
        assert_eq!(sink.replies.len(), 1);
        assert_eq!(sink.replies[0].content, text);
        assert_eq!(sink.replies[0].finish_reason, finish.reason.as_str());
        assert_eq!(
            sink.replies[0].completion_tokens,
            finish.usage.completion_tokens
        );
        assert!(finish.usage.completion_tokens <= 24);
        for _ in 0..2 {
            assert!(matches!(turn.poll(&mut sink), Step::Event(Event::Done)));
        }
        assert_eq!(sink.replies.len(), 1);
    }

    #[test]
    fn a_sink_that_fails_ends_the_reply_on_its_error_instead_of_its_end() {
        let mut turn = turn("shakespeare-llama", 8);
        let mut sink = Kept {
            fail: true,
            ..Kept::default()
        };
        let events = events(&mut turn, &mut sink);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Finished(_))),
            "{events:?}"
        );
        let Some(Event::Failed(e)) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(e.status, 500);
        assert!(sink.replies.is_empty());
    }

    /// A model whose weights are in shard Workers: its logits come from
    /// the host, here made up (all on one token).
    fn logits_on(turn: &ChatTurn, token: u32) -> Vec<f32> {
        let (model, _) = registry::chat_model(turn.spec).unwrap();
        let mut logits = vec![0.0; model.decoder().config().vocab];
        logits[token as usize] = 100.0;
        logits
    }

    /// The best candidates the turn asks for, of [`logits_on`]'s row.
    fn best_on(turn: &ChatTurn, token: u32) -> Logits {
        let k = turn
            .needs_best()
            .expect("no grammar, no penalty: a few suffice");
        Logits::Best(edgeinfer_engine::decoder::best(&logits_on(turn, token), k))
    }

    fn sharded_turn() -> ChatTurn {
        let spec = registry::MODELS
            .iter()
            .find(|m| matches!(m.input, InputSpec::ShardedChat { .. }))
            .expect("the default chat model is sharded");
        turn(spec.id, 8)
    }

    #[test]
    fn a_sharded_turn_asks_the_host_for_each_pass_and_counts_what_it_held() {
        let mut turn = sharded_turn();
        let prompt = turn.sharded().unwrap().prompt.to_vec();
        let mut sink = Kept::default();
        assert!(matches!(turn.poll(&mut sink), Step::Event(Event::Started)));
        let Step::Pass(ids) = turn.poll(&mut sink) else {
            panic!("no pass asked for the prompt");
        };
        assert_eq!(ids, prompt);
        // Not fed: the same pass is asked again.
        assert!(matches!(turn.poll(&mut sink), Step::Pass(again) if again == prompt));
        let (model, _) = registry::chat_model(turn.spec).unwrap();
        let word = (0..).find(|&t| !model.template().is_control(t)).unwrap();
        let end = (0..).find(|&t| model.template().is_control(t)).unwrap();
        turn.feed(Ok(Pass {
            logits: Logits::All(logits_on(&turn, word)),
            ms: 2.0,
            hops: vec![("shard-0", 1.5)],
            cached: 3,
        }));
        assert!(matches!(
            turn.poll(&mut sink),
            Step::Event(Event::Text(_) | Event::Pending)
        ));
        assert!(matches!(turn.poll(&mut sink), Step::Pass(ids) if ids == [word]));
        turn.feed(Ok(Pass {
            logits: best_on(&turn, end),
            ms: 1.0,
            hops: vec![("shard-0", 0.5)],
            cached: 3,
        }));
        let Step::Event(Event::Finished(finish)) = turn.poll(&mut sink) else {
            panic!("no end after a control token");
        };
        assert_eq!(finish.reason, FinishReason::Stop);
        assert_eq!(finish.usage.prompt_tokens_details.cached_tokens, 3);
        assert_eq!(finish.usage.completion_tokens, 2);
        assert_eq!(sink.replies.len(), 1);
        let served = turn.served();
        assert!(served.timings.contains(&("inference", 3.0)));
        assert!(served.timings.contains(&("shard-0", 2.0)));
    }

    #[test]
    fn a_pass_the_host_could_not_run_ends_the_reply_on_that_error() {
        let mut turn = sharded_turn();
        let mut sink = Kept::default();
        assert!(matches!(turn.poll(&mut sink), Step::Event(Event::Started)));
        assert!(matches!(turn.poll(&mut sink), Step::Pass(_)));
        turn.feed(Err(ApiError::unavailable("shard 2 is down")));
        let Step::Event(Event::Failed(e)) = turn.poll(&mut sink) else {
            panic!("the failure was not told");
        };
        assert_eq!(e.status, 503);
        assert!(matches!(turn.poll(&mut sink), Step::Event(Event::Done)));
        assert!(sink.replies.is_empty());
        // Logits of the wrong size are the model's failure, told the same way.
        let mut turn = sharded_turn();
        turn.poll(&mut sink);
        turn.poll(&mut sink);
        turn.feed(Ok(Pass {
            logits: Logits::All(vec![0.0; 3]),
            ..Pass::default()
        }));
        assert!(matches!(
            turn.poll(&mut sink),
            Step::Event(Event::Failed(ApiError { status: 500, .. }))
        ));
        // So are fewer candidates than the turn asked for.
        let mut turn = sharded_turn();
        turn.poll(&mut sink);
        turn.poll(&mut sink);
        let Logits::Best(mut top) = best_on(&turn, 5) else {
            unreachable!()
        };
        top.pop();
        turn.feed(Ok(Pass {
            logits: Logits::Best(top),
            ..Pass::default()
        }));
        assert!(matches!(
            turn.poll(&mut sink),
            Step::Event(Event::Failed(ApiError { status: 500, .. }))
        ));
    }
}
