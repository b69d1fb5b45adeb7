//! One reply in progress: the prompt built, then generation step by step,
//! answered whole (`chat.completion`) or as server-sent events. A session's
//! turn is stored here too, the moment its reply is complete and before the
//! client sees its end, so every host stores turns the same way.

use super::fields::GenerationFields;
use super::wire::{
    sse, AssistantMessage, ChatUsage, Choice, Chunk, ChunkChoice, ChunkDelta, Completion,
    PromptTokensDetails, Reply, DONE, KEEPALIVE,
};
use crate::api::error::ApiError;
use crate::api::sessions::{turn_rows, SessionStore};
use crate::api::timing::{self, Clock, Timings, Work};
use crate::api::{hex, Context, HttpResponse, Served};
use crate::decoder::chat::ChatModel;
use crate::decoder::generation::{Delta, FinishReason, Generation};
use crate::decoder::template::Message;
use crate::error::CoreError;
use crate::registry::{self, InputSpec, ModelSpec, ShardSpec};

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
    pub stream: bool,
    pub include_usage: bool,
    /// For a session's turn: what to store with the reply.
    pub record: Option<Record>,
}

/// A session turn's messages, stored with its reply once that is complete.
#[derive(Debug)]
pub struct Record {
    pub session: String,
    pub messages: Vec<Message>,
}

/// Where a streamed reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Tokens,
    Usage,
    Done,
    Closed,
}

/// One reply in progress.
pub struct ChatTurn {
    spec: &'static ModelSpec,
    qualified: String,
    generation: Generation<'static>,
    meta: RequestMeta,
    include_usage: bool,
    stream: bool,
    dropped_messages: usize,
    /// The session's id and the turn's messages, until they are stored.
    record: Option<Record>,
    /// The session of the turn (kept after `record` is stored).
    session: Option<String>,
    phase: Phase,
    /// True when this request loaded the model (a cold start).
    pub model_loaded: bool,
    /// Model load (if any) and prompt building, before the first event.
    timings: Timings,
    /// Time spent generating so far (ms), summed over the steps only, so
    /// the pauses between streamed events do not count.
    generating_ms: f64,
    /// Per shard Worker of a sharded model: its own time, summed.
    hops: Vec<(&'static str, f64)>,
    /// The prompt's first tokens the model did not have to feed again.
    cached_tokens: usize,
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
        Ok(ChatTurn {
            spec,
            qualified: spec.qualified_name(),
            generation: Generation::new(model, prompt.ids, options),
            meta,
            include_usage: plan.include_usage,
            stream: plan.stream,
            dropped_messages: prompt.dropped_messages,
            session: plan.record.as_ref().map(|r| r.session.clone()),
            record: plan.record,
            phase: Phase::Role,
            model_loaded,
            timings,
            generating_ms: 0.0,
            hops: Vec::new(),
            cached_tokens: 0,
        })
    }

    pub fn model_name(&self) -> &str {
        &self.qualified
    }

    /// Whether the client asked for server-sent events.
    pub fn streams(&self) -> bool {
        self.stream
    }

    /// The shard Workers whose isolates hold the model's weights, when they
    /// are not in this one: the host runs each pass there
    /// ([`ChatTurn::wants`], [`ChatTurn::supply`]).
    pub fn shards(&self) -> Option<&'static [ShardSpec]> {
        match self.spec.input {
            InputSpec::ShardedChat { shards, .. } => Some(shards),
            _ => None,
        }
    }

    /// The model's id (what its shard Workers are named after).
    pub fn model_id(&self) -> &'static str {
        self.spec.id
    }

    /// Stores a session turn's messages and reply, once the reply is
    /// complete; a no-op otherwise, and for a turn without a session.
    fn keep(&mut self, store: Option<&mut dyn SessionStore>) -> Result<(), ApiError> {
        let Some(reply) = self.reply() else {
            return Ok(());
        };
        let Some(record) = self.record.take() else {
            return Ok(());
        };
        let store = store.ok_or_else(|| {
            ApiError::internal("a session turn was served without its session's store")
        })?;
        let rows = turn_rows(&record.messages, &reply, self.meta.created);
        store.append(&record.session, &rows).map_err(ApiError::from)
    }

    /// The phases so far: load and prompt, then generation.
    fn phases(&self) -> Timings {
        let mut all = self.timings.clone();
        if self.generating_ms > 0.0 || self.phase != Phase::Role {
            all.push("inference", self.generating_ms);
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

    /// The tokens to run through the model's shard Workers before the next
    /// step, when its weights are there (`None` for a model run here).
    pub fn wants(&self) -> Option<Vec<u32>> {
        if self.generation.is_local() || !matches!(self.phase, Phase::Role | Phase::Tokens) {
            return None;
        }
        self.generation.wants()
    }

    /// The most tokens the turn feeds the model: its prompt and its reply,
    /// within the context (what a shard reserves cache memory for).
    pub fn most_tokens(&self) -> usize {
        self.generation.most_tokens()
    }

    /// The prompt's token ids.
    pub fn prompt(&self) -> &[u32] {
        self.generation.prompt()
    }

    /// How many of the prompt's first tokens the model's shards already
    /// held (kept from the conversation's last turn): reported as
    /// `usage.prompt_tokens_details.cached_tokens` and not counted as
    /// prompt work in `cpu_ms`.
    pub fn set_cached_tokens(&mut self, cached: usize) {
        self.cached_tokens = cached.min(self.generation.prompt_tokens());
    }

    /// The logits of the pass [`ChatTurn::wants`] asked for, and the time
    /// it took (ms): each shard's own `hops` (name, ms) go into
    /// `Server-Timing` next to `inference`.
    pub fn supply(
        &mut self,
        logits: Vec<f32>,
        ms: f64,
        hops: &[(&'static str, f64)],
    ) -> Result<(), ApiError> {
        self.generating_ms += ms.max(0.0);
        for &(name, ms) in hops {
            match self.hops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += ms,
                None => self.hops.push((name, ms)),
            }
        }
        self.generation.supply(logits).map_err(ApiError::from)
    }

    /// Runs one step of a reply that is not streamed: `false` once it has
    /// ended (then [`ChatTurn::complete`] answers without more work).
    pub fn advance(&mut self) -> Result<bool, ApiError> {
        Ok(self.step()?.is_some_and(|d| d.finish.is_none()))
    }

    /// Ends a stream on an error found outside the turn (a shard that
    /// failed): the `error` event, then `[DONE]`.
    pub fn fail(&mut self, error: ApiError) -> Vec<u8> {
        // The session keeps its history as it was: the turn is not stored.
        self.record = None;
        self.phase = Phase::Done;
        sse(&error.body())
    }

    /// One generation step, timed.
    fn step(&mut self) -> Result<Option<Delta>, CoreError> {
        let clock = self.meta.clock;
        let started = clock();
        let step = self.generation.step();
        self.generating_ms += (clock() - started).max(0.0);
        step
    }

    /// The reply, once generation has finished.
    pub fn reply(&self) -> Option<Reply> {
        let finish = self.generation.finish_reason()?;
        Some(Reply {
            content: self.generation.text().to_string(),
            finish_reason: finish.as_str().to_string(),
            prompt_tokens: self.generation.prompt_tokens(),
            completion_tokens: self.generation.completion_tokens(),
        })
    }

    /// Generates the whole reply, stores a session's turn in `store`, and
    /// answers one `chat.completion` (or, when the turn cannot be stored,
    /// the error: a client never gets a reply its session does not hold).
    pub fn complete(&mut self, store: Option<&mut dyn SessionStore>) -> HttpResponse {
        let clock = self.meta.clock;
        let started = clock();
        let finish = match self.generation.run_to_end() {
            Ok((_, finish)) => finish,
            Err(e) => return HttpResponse::error(ApiError::from(e)),
        };
        self.generating_ms += (clock() - started).max(0.0);
        self.phase = Phase::Done;
        if let Err(e) = self.keep(store) {
            return HttpResponse::error(e);
        }
        let body = Completion {
            id: &self.meta.id,
            object: "chat.completion",
            created: self.meta.created,
            model: &self.qualified,
            model_sha256: self.spec.sha256,
            choices: [Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: self.generation.text(),
                },
                finish_reason: finish.as_str(),
                logprobs: None,
            }],
            usage: self.usage(),
            session: self.session.as_deref(),
        };
        let mut res = HttpResponse::json(200, &body);
        res.model = Some(Box::new(self.served()));
        res
    }

    /// The next server-sent event (one token's worth of work at most), or
    /// `None` after `data: [DONE]`. An error mid-stream becomes an `error`
    /// event and ends the stream (the status line has already gone out).
    /// A session's turn is stored in `store` before the event that ends
    /// the reply goes out; if that fails, the error event replaces it.
    pub fn next_event(&mut self, store: Option<&mut dyn SessionStore>) -> Option<Vec<u8>> {
        match self.phase {
            Phase::Role => {
                self.phase = Phase::Tokens;
                Some(self.chunk(Some("assistant"), Some(""), None, None))
            }
            Phase::Tokens => match self.step() {
                Ok(Some(delta)) => {
                    let finish = delta.finish.map(FinishReason::as_str);
                    if finish.is_some() {
                        self.phase = Phase::Usage;
                        if let Err(e) = self.keep(store) {
                            return Some(self.fail(e));
                        }
                    }
                    let content = (!delta.text.is_empty()).then_some(delta.text.as_str());
                    if content.is_none() && finish.is_none() {
                        // Nothing safe to show yet: an empty event keeps the
                        // one-token-per-call rhythm without a client-visible chunk.
                        return Some(KEEPALIVE.to_vec());
                    }
                    Some(self.chunk(None, content, finish, None))
                }
                Ok(None) => {
                    self.phase = Phase::Usage;
                    if let Err(e) = self.keep(store) {
                        return Some(self.fail(e));
                    }
                    self.next_event(None)
                }
                Err(e) => Some(self.fail(ApiError::from(e))),
            },
            Phase::Usage => {
                self.phase = Phase::Done;
                if self.include_usage {
                    Some(self.chunk(None, None, None, Some(self.usage())))
                } else {
                    self.next_event(None)
                }
            }
            Phase::Done => {
                self.phase = Phase::Closed;
                Some(DONE.to_vec())
            }
            Phase::Closed => None,
        }
    }

    fn chunk(
        &self,
        role: Option<&'static str>,
        content: Option<&str>,
        finish: Option<&'static str>,
        usage: Option<ChatUsage>,
    ) -> Vec<u8> {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta: ChunkDelta { role, content },
                finish_reason: finish,
                logprobs: None,
            }]
        };
        let chunk = Chunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.qualified,
            choices,
            usage,
        };
        sse(&serde_json::to_vec(&chunk).unwrap_or_default())
    }

    /// Every event at once: what `handle` answers natively for `stream: true`.
    pub fn all_events(&mut self, mut store: Option<&mut dyn SessionStore>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(event) = self.next_event(reborrow(&mut store)) {
            out.extend(event);
        }
        out
    }
}

/// `store` again for one call (`as_deref_mut` cannot shorten the trait
/// object's lifetime behind `&mut`).
fn reborrow<'a>(store: &'a mut Option<&mut dyn SessionStore>) -> Option<&'a mut dyn SessionStore> {
    match store {
        Some(store) => Some(&mut **store),
        None => None,
    }
}
