//! The shard Workers of a sharded model, seen from the front worker.
//!
//! A turn opens one pass on each shard (`begin`, one invocation per shard
//! over its service binding: a turn makes as many as the model has
//! shards, far below the 32 a request may make) and gets back an
//! `RpcTarget` stub that holds that shard's key/value cache for the turn,
//! with how much of the prompt that cache already holds: a shard keeps a
//! finished turn's cache for the conversation's next turn
//! (shard/src/shard.rs). The chain feeds from where every shard has it.
//! Each model pass then calls the stubs in chain order (calls on a stub are
//! not new invocations): token ids into the first shard, hidden states from
//! shard to shard, logits out of the last. Every call is bounded in time,
//! so a shard that is down or stuck becomes an error, never a hang. A turn
//! that ends well tells each shard the ids it fed, to keep its cache; one
//! that fails or is dropped frees them.
//!
//! This holds no model logic: the engine's `Decoder::stage` runs in each
//! shard (shard/src), sampling and text here in the core.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{join_all, select, Either};
use worker::js_sys::{self, Float32Array, Promise, Reflect, Uint32Array};
use worker::wasm_bindgen::prelude::*;
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Delay, Env};

use crate::api::trace::Trace;
use crate::api::ApiError;
use crate::decoder::sampling::Logits;
use crate::spec::ShardSpec;
use edgeinfer_engine::decoder::{merge, MOST_BEST};

/// Longest wait for a shard to open a pass (its first call in a cold
/// isolate loads the weights: tens of ms). A shard with no room makes a
/// pass wait up to 10 s (shard/src/gate.rs) and then refuses it itself,
/// with a time to retry after: this bound is for a shard that does not
/// answer at all.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for a turn's passes to close, all at once: a close is a
/// call that frees memory, quick unless the shard is busy with another
/// pass's long prefill (~2 s per 1,000 tokens).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one shard's share of one pass (a long prompt's prefill
/// is the slowest: ~2 s per 1,000 tokens per shard measured in workerd).
const PASS_TIMEOUT: Duration = Duration::from_secs(30);

#[wasm_bindgen]
extern "C" {
    /// A shard Worker's entrypoint (shard/entry.mjs), over its binding.
    #[wasm_bindgen(extends = js_sys::Object)]
    type ShardEntry;
    #[wasm_bindgen(method, catch)]
    fn begin(
        this: &ShardEntry,
        traceparent: &str,
        tokens: u32,
        prompt: &Uint32Array,
        scope: &str,
    ) -> Result<Promise, JsValue>;

    /// One turn's pass on one shard: an `RpcTarget` stub.
    #[wasm_bindgen(extends = js_sys::Object)]
    #[derive(Clone)]
    type ShardPass;
    #[wasm_bindgen(method, catch)]
    fn forward(this: &ShardPass, input: &JsValue, at: u32, best: u32) -> Result<Promise, JsValue>;
    /// A vocabulary slice's embeddings of token ids of its rows.
    #[wasm_bindgen(method, catch)]
    fn embed(this: &ShardPass, ids: &Uint32Array) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn close(this: &ShardPass, fed: &JsValue) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn touch(this: &ShardPass, late: f64) -> Result<Promise, JsValue>;
}

/// How often an open turn tells each shard its pass is still in use. In
/// workerd a client that hangs up mid-stream stalls the turn for good: it
/// never closes its passes, and the stubs are not disposed either
/// (measured, docs/chat.md). The touches stop with it, and a shard
/// reclaims a pass whose caller went quiet for a few of them
/// (shard/src/gate.rs).
const TOUCH_EVERY: Duration = Duration::from_secs(1);
/// A turn that started or ended no model pass for this long (longer than
/// a pass may take) stops touching its passes: a client that stops
/// reading does not hold the shards' memory for as long as it keeps the
/// connection open.
const STALL: Duration = Duration::from_secs(40);

/// A sharded model as a chain reaches it.
#[derive(Debug, Clone, Copy)]
pub struct Sharding {
    pub model: &'static str,
    /// Its layer shards in chain order, then its vocabulary slices.
    pub shards: &'static [ShardSpec],
    /// The most rows one call carries (the model's window,
    /// `edgeinfer_engine::decoder::stage_rows`).
    pub window: usize,
    /// Its hidden states' width (what a slice's embedding row must be).
    pub dims: usize,
}

/// Cloudflare's limit of Worker invocations per request: a turn opens one
/// pass per shard Worker (one invocation each).
const MOST_INVOCATIONS: usize = 32;

impl Sharding {
    /// Whether the public start may be fed in the same request as a turn:
    /// feeding it opens every shard once more, and the two together must
    /// stay within [`MOST_INVOCATIONS`] (not so for Qwen2.5-1.5B's 28
    /// shard Workers: its turns go without the shared start).
    pub fn warms_with_a_turn(&self) -> bool {
        // The front's own, and each shard twice.
        2 * self.shards.len() < MOST_INVOCATIONS
    }

    fn has_slices(&self) -> bool {
        self.shards.iter().any(|s| s.rows.is_some())
    }
}

/// One turn's passes, one per shard, in chain order.
pub struct Chain {
    passes: Vec<(&'static ShardSpec, ShardPass)>,
    model: &'static str,
    window: usize,
    dims: usize,
    /// The prompt's first tokens every shard's cache holds.
    cached: usize,
    /// Every token id fed so far, the prompt's cached start included.
    fed: Vec<u32>,
    /// A pass failed: the shards' caches may disagree, none is kept.
    failed: bool,
    /// The fewest tokens a shard said it keeps for every caller (`None`:
    /// a shard older than this worker, which does not say).
    public_tokens: Option<usize>,
    /// Whether the turn still goes on, for its passes' touches.
    life: Rc<Life>,
}

/// What a turn's touches go by.
struct Life {
    /// False once the turn is over.
    open: Cell<bool>,
    /// When the last model pass started or ended (ms).
    progress: Cell<f64>,
}

/// Touches `pass` every [`TOUCH_EVERY`], telling the shard how late the
/// timer fired (a late one means the thread was busy: the shard then
/// extends every lease), while the turn goes on and makes progress.
fn keep_alive(pass: ShardPass, life: Rc<Life>) {
    worker::wasm_bindgen_futures::spawn_local(async move {
        let every = TOUCH_EVERY.as_millis() as f64;
        loop {
            let due = js_sys::Date::now() + every;
            Delay::from(TOUCH_EVERY).await;
            let now = js_sys::Date::now();
            if !life.open.get() || now - life.progress.get() > STALL.as_millis() as f64 {
                break;
            }
            let Ok(promise) = pass.touch((now - due).max(0.0)) else {
                break;
            };
            // False: the shard ended the pass (the turn will find out).
            if bounded(promise, TOUCH_EVERY)
                .await
                .ok()
                .and_then(|v| v.as_bool())
                == Some(false)
            {
                break;
            }
        }
    });
}

fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Seconds a client is told to wait after a shard failed or did not answer
/// in time: the shards' own refusal says 5 (shard/src/gate.rs), and a shard
/// that timed out is most often one that was busy.
const SHARD_RETRY_AFTER_S: u64 = 5;

/// 503 `shard_unavailable` naming the shard, with `Retry-After`
/// (`retry_after` seconds): every 503 a client gets says when to retry.
fn shard_error_after(model: &str, shard: &ShardSpec, what: &str, retry_after: u64) -> ApiError {
    ApiError::unavailable(format!(
        "model {model}: shard Worker {} ({}, binding {}) {what}; retry shortly",
        shard.script,
        shard.holds(),
        shard.binding
    ))
    .with_code("shard_unavailable")
    .with_header("retry-after", retry_after.to_string())
}

fn shard_error(model: &str, shard: &ShardSpec, what: &str) -> ApiError {
    shard_error_after(model, shard, what, SHARD_RETRY_AFTER_S)
}

/// A shard's refusal of a pass (`{ message, retry_after }`: it had no room
/// in time): 503, with the shard's `Retry-After` when it gave one.
fn refusal(model: &str, shard: &ShardSpec, refused: &JsValue) -> ApiError {
    let field = |name: &str| Reflect::get(refused, &JsValue::from_str(name)).ok();
    let message = field("message")
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| "refused a pass".into());
    let seconds = field("retry_after")
        .and_then(|v| v.as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(SHARD_RETRY_AFTER_S, |s| s.ceil() as u64);
    shard_error_after(model, shard, &message, seconds)
}

/// Awaits `promise`, at most `timeout`.
async fn bounded(promise: Promise, timeout: Duration) -> Result<JsValue, String> {
    let call = JsFuture::from(promise);
    match select(call, Box::pin(Delay::from(timeout))).await {
        Either::Left((Ok(v), _)) => Ok(v),
        Either::Left((Err(e), _)) => Err(describe(&e)),
        Either::Right(_) => Err(format!("did not answer within {} s", timeout.as_secs())),
    }
}

impl Chain {
    /// Opens a pass of at most `tokens` fed tokens (the turn's prompt and
    /// reply: what each shard reserves cache memory for) for `prompt` on
    /// every shard of `model` at once (cold shards load their weights side
    /// by side), passing `trace` on. `scope` is the caller's key digest (or
    /// empty): a shard matches kept caches only within it.
    pub async fn open(
        env: &Env,
        sharding: Sharding,
        trace: &Trace,
        tokens: usize,
        prompt: &[u32],
        scope: &str,
    ) -> Result<Chain, ApiError> {
        let Sharding { model, shards, .. } = sharding;
        let traceparent = trace.header();
        let prompt_ids = Uint32Array::from(prompt);
        let life = Rc::new(Life {
            open: Cell::new(true),
            progress: Cell::new(js_sys::Date::now()),
        });
        let opened = join_all(shards.iter().map(|shard| {
            let open = Self::open_one(env, model, shard, &traceparent, tokens, &prompt_ids, scope);
            let life = life.clone();
            async move {
                let opened = open.await;
                // Touched from the moment it is admitted: the other shards
                // may keep the turn waiting for seconds.
                if let Ok((pass, _, _)) = &opened {
                    keep_alive(pass.clone(), life);
                }
                opened
            }
        }))
        .await;
        let mut chain = Chain {
            passes: Vec::with_capacity(shards.len()),
            model,
            window: sharding.window.max(1),
            dims: sharding.dims,
            cached: prompt.len(),
            fed: Vec::with_capacity(tokens),
            failed: false,
            public_tokens: None,
            life,
        };
        let mut error = None;
        for (shard, result) in shards.iter().zip(opened) {
            match result {
                Ok((pass, cached, public)) => {
                    chain.cached = chain.cached.min(cached);
                    if let Some(p) = public {
                        chain.public_tokens = Some(chain.public_tokens.map_or(p, |q| q.min(p)));
                    }
                    chain.passes.push((shard, pass));
                }
                Err(e) => error = error.or(Some(e)),
            }
        }
        if let Some(e) = error {
            // The shards that did open free their place now.
            chain.failed = true;
            chain.close().await;
            return Err(e);
        }
        if chain.passes.is_empty() {
            chain.cached = 0;
        }
        Ok(chain)
    }

    async fn open_one(
        env: &Env,
        model: &str,
        shard: &'static ShardSpec,
        traceparent: &str,
        tokens: usize,
        prompt: &Uint32Array,
        scope: &str,
    ) -> Result<(ShardPass, usize, Option<usize>), ApiError> {
        let entry: ShardEntry = env
            .service(shard.binding)
            .map_err(|_| {
                shard_error(
                    model,
                    shard,
                    "is not bound to this worker (see wrangler.toml)",
                )
            })?
            .into_rpc();
        let promise = entry
            .begin(
                traceparent,
                u32::try_from(tokens).unwrap_or(u32::MAX),
                prompt,
                scope,
            )
            .map_err(|e| shard_error(model, shard, &describe(&e)))?;
        let opened = bounded(promise, OPEN_TIMEOUT)
            .await
            .map_err(|e| shard_error(model, shard, &format!("could not open a pass: {e}")))?;
        let field = |name: &str| Reflect::get(&opened, &JsValue::from_str(name)).ok();
        if let Some(refused) = field("refused").filter(|r| r.is_object()) {
            return Err(refusal(model, shard, &refused));
        }
        match (field("pass"), field("cached").and_then(|v| v.as_f64())) {
            // A stub is a callable proxy: not undefined is all it shows.
            (Some(pass), Some(cached)) if !pass.is_undefined() && cached >= 0.0 => {
                let public = field("public_tokens")
                    .and_then(|v| v.as_f64())
                    .filter(|p| *p >= 0.0)
                    .map(|p| p as usize);
                Ok((pass.unchecked_into(), cached as usize, public))
            }
            _ => Err(shard_error(
                model,
                shard,
                "answered `begin` with no pass (is it older than this worker?)",
            )),
        }
    }

    /// Whether a shard said it keeps nothing for every caller while this
    /// isolate fed them the public start (a shard isolate new since, or
    /// one with no room to pin it): a turn [`REWARM_AFTER_MS`] after the
    /// last feeding feeds it again ([`warm_public_start`]). What a shard keeps
    /// for every caller depends on no caller's prompt, nor does this.
    pub fn forget_public_start_if_lost(&self) {
        if self.public_tokens == Some(0) {
            rewarm_later(self.model);
        }
    }

    /// How many of the prompt's first tokens every shard already held: the
    /// first pass feeds only the rest.
    pub fn cached(&self) -> usize {
        self.cached
    }

    /// One model pass over `tokens`: the next token's logits (the whole
    /// row, or with `best` only that many best candidates, ranked by the
    /// last shard: a few bytes cross instead of the vocabulary's floats),
    /// and each shard's own time (name for `Server-Timing`, ms).
    pub async fn forward(
        &mut self,
        tokens: &[u32],
        best: Option<usize>,
    ) -> Result<(Logits, Vec<(&'static str, f64)>), ApiError> {
        // The first pass is the prompt: the shards hold its cached start.
        let skip = if self.fed.is_empty() {
            self.cached.min(tokens.len().saturating_sub(1))
        } else {
            0
        };
        let at = self.fed.len() + skip;
        self.life.progress.set(js_sys::Date::now());
        let result = self.run(&tokens[skip..], at, best).await;
        self.life.progress.set(js_sys::Date::now());
        match &result {
            Ok(_) => self.fed.extend_from_slice(tokens),
            Err(_) => self.failed = true,
        }
        result
    }

    /// A pass in pieces of at most the model's window of tokens, each through
    /// every shard before the next: what a call carries between isolates
    /// (its hidden states, 2.3 KB a token for SmolLM2) and what a shard
    /// holds for it stay bounded whatever the prompt, and other
    /// conversations' steps run between the pieces of a long prompt
    /// instead of waiting for all of it. Pieces before the last ask the
    /// last shard for its one best candidate: their logits are not used.
    async fn run(
        &self,
        tokens: &[u32],
        at: usize,
        best: Option<usize>,
    ) -> Result<(Logits, Vec<(&'static str, f64)>), ApiError> {
        let pieces = tokens.len().div_ceil(self.window).max(1);
        let mut hops: Vec<(&'static str, f64)> = Vec::with_capacity(self.passes.len() * pieces);
        for (k, piece) in tokens.chunks(self.window).enumerate() {
            let last = k + 1 == pieces;
            // Pieces before the last: their logits are not used (None: no
            // slice is asked; a last shard that predicts ranks one).
            let ask = if last { best.or(Some(0)) } else { None };
            let (logits, times) = self.run_piece(piece, at + k * self.window, ask).await?;
            // One entry per shard per piece: the turn sums them by name.
            hops.extend(times);
            if last {
                return Ok((logits, hops));
            }
        }
        Err(ApiError::internal("a model pass over no tokens"))
    }

    /// One piece through the chain. `predict`: `None`, its logits are not
    /// used; `Some(0)`, the whole row; `Some(k)`, the best `k`.
    async fn run_piece(
        &self,
        tokens: &[u32],
        at: usize,
        predict: Option<usize>,
    ) -> Result<(Logits, Vec<(&'static str, f64)>), ApiError> {
        let (slices, layers): (Vec<_>, Vec<_>) =
            self.passes.iter().partition(|(s, _)| s.rows.is_some());
        let mut hops = Vec::with_capacity(self.passes.len());
        // Token ids into the first layer shard, or (the vocabulary cut
        // apart) their embeddings from the slices that hold them.
        let mut x: JsValue = if slices.is_empty() {
            Uint32Array::from(tokens).into()
        } else {
            self.embed(&slices, tokens, &mut hops).await?.into()
        };
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        // Slices rank at most MOST_BEST; more is the whole row. A last
        // shard that predicts ranks one when the logits are not used.
        let best = match predict {
            Some(k) if !slices.is_empty() && k > MOST_BEST => 0,
            Some(k) => u32::try_from(k).unwrap_or(u32::MAX),
            None => 1,
        };
        let mut ids = None;
        for (shard, pass) in &layers {
            // Only the last shard ranks (the others ignore it).
            let (values, got, ms) = self.call(shard, pass.forward(&x, at, best)).await?;
            hops.push((shard.script, ms));
            ids = got;
            x = values.into();
        }
        let values = x
            .dyn_into::<Float32Array>()
            .map_err(|_| ApiError::internal("a sharded model has no shards"))?;
        if !slices.is_empty() {
            if predict.is_none() {
                return Ok((Logits::Best(Vec::new()), hops));
            }
            return self
                .predict(&slices, values, tokens.len(), best, hops)
                .await;
        }
        let values = values.to_vec();
        // A shard older than `best` sends the whole row: taken as it is.
        let logits = match ids {
            Some(ids) if ids.length() as usize == values.len() => {
                Logits::Best(ids.to_vec().into_iter().zip(values).collect())
            }
            _ => Logits::All(values),
        };
        Ok((logits, hops))
    }

    /// One bounded call of a shard's pass: its floats, the ids that go with
    /// them (ranked logits), and the shard's own time.
    async fn call(
        &self,
        shard: &ShardSpec,
        promise: Result<Promise, JsValue>,
    ) -> Result<(Float32Array, Option<Uint32Array>, f64), ApiError> {
        let promise = promise.map_err(|e| shard_error(self.model, shard, &describe(&e)))?;
        let out = bounded(promise, PASS_TIMEOUT)
            .await
            .map_err(|e| shard_error(self.model, shard, &format!("failed a pass: {e}")))?;
        let field = |name: &str| Reflect::get(&out, &JsValue::from_str(name)).ok();
        let (Some(values), Some(ms)) = (
            field("out").and_then(|v| v.dyn_into::<Float32Array>().ok()),
            field("ms").and_then(|v| v.as_f64()),
        ) else {
            return Err(shard_error(
                self.model,
                shard,
                "answered a pass with no floats",
            ));
        };
        let ids = field("ids").and_then(|v| v.dyn_into::<Uint32Array>().ok());
        Ok((values, ids, ms))
    }

    /// The embeddings of `tokens`, each asked of the slice holding its row
    /// (the slices at once), in the tokens' order.
    async fn embed(
        &self,
        slices: &[&(&'static ShardSpec, ShardPass)],
        tokens: &[u32],
        hops: &mut Vec<(&'static str, f64)>,
    ) -> Result<Float32Array, ApiError> {
        let holder = |t: u32| {
            slices
                .iter()
                .position(|(s, _)| s.rows.is_some_and(|(a, b)| (a..b).contains(&(t as usize))))
        };
        let mut asked: Vec<Vec<usize>> = vec![Vec::new(); slices.len()];
        for (i, &t) in tokens.iter().enumerate() {
            let k = holder(t).ok_or_else(|| {
                ApiError::internal(format!(
                    "model {}: token {t} is in no vocabulary slice",
                    self.model
                ))
            })?;
            asked[k].push(i);
        }
        let calls = slices
            .iter()
            .zip(&asked)
            .filter(|(_, rows)| !rows.is_empty())
            .map(|((shard, pass), rows)| {
                let ids: Vec<u32> = rows.iter().map(|&i| tokens[i]).collect();
                let promise = pass.embed(&Uint32Array::from(&ids[..]));
                async move { (rows, self.call(shard, promise).await.map(|r| (shard, r))) }
            });
        let mut out: Vec<f32> = Vec::new();
        for (rows, answer) in join_all(calls).await {
            let (shard, (values, _, ms)) = answer?;
            hops.push((shard.script, ms));
            let values = values.to_vec();
            let dims = self.dims;
            if dims == 0 || values.len() != dims * rows.len() {
                return Err(shard_error(
                    self.model,
                    shard,
                    "answered embeddings of the wrong size",
                ));
            }
            if out.is_empty() {
                out = vec![0.0; dims * tokens.len()];
            }
            for (&i, row) in rows.iter().zip(values.chunks_exact(dims)) {
                out.get_mut(i * dims..(i + 1) * dims)
                    .ok_or_else(|| {
                        shard_error(self.model, shard, "answered embeddings of the wrong size")
                    })?
                    .copy_from_slice(row);
            }
        }
        Ok(Float32Array::from(&out[..]))
    }

    /// The next token's logits from the last of the `rows` rows of final
    /// hidden states `hidden`, asked of every slice at once: the `best` best of
    /// each merged (the unsplit model's ranking: decoder::merge), or, with
    /// `best` 0, every slice's row of logits in vocabulary order.
    async fn predict(
        &self,
        slices: &[&(&'static ShardSpec, ShardPass)],
        hidden: Float32Array,
        rows: usize,
        best: u32,
        mut hops: Vec<(&'static str, f64)>,
    ) -> Result<(Logits, Vec<(&'static str, f64)>), ApiError> {
        let rows = rows as u32;
        let dims = hidden.length().checked_div(rows).unwrap_or(0);
        if dims == 0 || rows * dims != hidden.length() || dims as usize != self.dims {
            let last = self.passes.iter().rfind(|(s, _)| s.rows.is_none());
            return Err(match last {
                Some((shard, _)) => shard_error(
                    self.model,
                    shard,
                    &format!(
                        "gave {} floats, not {rows} rows of {}",
                        hidden.length(),
                        self.dims
                    ),
                ),
                None => ApiError::internal("a model cut into slices has no layer shards"),
            });
        }
        // A copy, not a view: a view would carry its whole buffer over RPC.
        let last: JsValue = hidden.slice((rows - 1) * dims, rows * dims).into();
        let last = &last;
        let answers = join_all(slices.iter().map(|(shard, pass)| async move {
            (shard, self.call(shard, pass.forward(last, 0, best)).await)
        }))
        .await;
        let mut ranked = Vec::with_capacity(slices.len());
        let mut all = Vec::new();
        for (shard, answer) in answers {
            let (values, ids, ms) = answer?;
            hops.push((shard.script, ms));
            match (best, ids) {
                (0, _) => all.extend(values.to_vec()),
                (_, Some(ids)) if ids.length() == values.length() => {
                    ranked.push(ids.to_vec().into_iter().zip(values.to_vec()).collect())
                }
                _ => {
                    return Err(shard_error(
                        self.model,
                        shard,
                        "answered best logits without their ids",
                    ))
                }
            }
        }
        let logits = if best == 0 {
            Logits::All(all)
        } else {
            Logits::Best(merge(&ranked, best as usize))
        };
        Ok((logits, hops))
    }
}

/// The scope every shard lets every caller's pass start from (the shard
/// crate's `PUBLIC`; a caller's scope is its key's hex digest, or empty).
const PUBLIC_SCOPE: &str = "public";

thread_local! {
    /// Per model whose public start this isolate fed its shards: when it
    /// did (ms), and when it may feed it again (infinity while the shards
    /// are believed to hold it).
    static WARMED: std::cell::RefCell<Vec<(&'static str, f64, f64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How long after feeding the public start the isolate waits before feeding
/// it again when a shard lost it or could not pin it (a full budget): a
/// busy shard is not fed it on every turn.
const REWARM_AFTER_MS: f64 = 30_000.0;

/// Lets the public start of `model` be fed again [`REWARM_AFTER_MS`] after
/// it last was.
fn rewarm_later(model: &str) {
    WARMED.with(|w| {
        for entry in w.borrow_mut().iter_mut().filter(|e| e.0 == model) {
            entry.2 = entry.1 + REWARM_AFTER_MS;
        }
    });
}

/// Feeds `model`'s shards its public start (`ids`: the template's default
/// system message, the server's own text) under [`PUBLIC_SCOPE`], once per
/// isolate, before the isolate's first turn opens its passes, whatever that
/// turn's prompt: every shard pins the cache and copies it into any
/// caller's new conversation that starts with it (shard/src/shard.rs), and
/// when that happens depends on no caller's prompt. A shard that already
/// holds it (another front isolate fed it) is fed its last token only. A
/// failure costs only the saving: the turn goes on, and a turn at least
/// [`REWARM_AFTER_MS`] later tries again.
pub async fn warm_public_start(env: &Env, sharding: Sharding, trace: &Trace, ids: &[u32]) {
    let model = sharding.model;
    let now = js_sys::Date::now();
    let first = WARMED.with(|w| {
        let mut w = w.borrow_mut();
        match w.iter_mut().find(|e| e.0 == model) {
            Some(entry) if now < entry.2 => false,
            Some(entry) => {
                *entry = (model, now, f64::INFINITY);
                true
            }
            None => {
                w.push((model, now, f64::INFINITY));
                true
            }
        }
    });
    if !first || ids.is_empty() {
        return;
    }
    let Ok(mut chain) = Chain::open(env, sharding, trace, ids.len(), ids, PUBLIC_SCOPE).await
    else {
        rewarm_later(model);
        return;
    };
    // The whole row (not candidates): the shards count only callers' ranked
    // calls. Slices are asked for one candidate: a row is the vocabulary's
    // floats.
    let ask = sharding.has_slices().then_some(1);
    let fed = chain.forward(ids, ask).await.is_ok();
    chain.failed |= !fed;
    chain.close().await;
    if !fed {
        rewarm_later(model);
    }
}

impl Chain {
    /// Ends the turn's passes before the next turn may open one (a stub's
    /// disposal alone reaches the shard later, if at all), all at once and
    /// within one bound: each shard keeps its cache for the conversation's
    /// next turn (or frees it, if a pass failed) and logs the pass. A shard
    /// that does not answer in time has the stub's disposal, and its own
    /// lease, to free it.
    pub async fn close(mut self) {
        self.life.open.set(false);
        let fed: JsValue = if self.failed {
            JsValue::UNDEFINED
        } else {
            Uint32Array::from(&self.fed[..]).into()
        };
        let passes = std::mem::take(&mut self.passes);
        let closes: Vec<JsFuture> = passes
            .iter()
            .filter_map(|(_, pass)| pass.close(&fed).ok())
            .map(JsFuture::from)
            .collect();
        let _ = select(join_all(closes), Box::pin(Delay::from(CLOSE_TIMEOUT))).await;
        for (_, pass) in &passes {
            dispose(pass);
        }
    }
}

/// Disposes a stub (`stub[Symbol.dispose]()`): the runtime may then drop
/// the shard's side.
fn dispose(pass: &ShardPass) {
    let method = Reflect::get(&js_sys::global(), &"Symbol".into())
        .and_then(|symbol| Reflect::get(&symbol, &"dispose".into()))
        .and_then(|key| Reflect::get(pass, &key))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    if let Some(f) = method {
        let _ = f.call0(pass);
    }
}

impl Drop for Chain {
    /// A turn dropped before [`Chain::close`] (a client that went away mid
    /// stream, where the runtime drops the turn at all: a session's object
    /// does, workerd's front request cancelled by a hang-up does not) still
    /// ends its passes: the close calls are sent now (not awaited: the
    /// turn is over), and the stubs disposed. Its touches stop either way.
    fn drop(&mut self) {
        self.life.open.set(false);
        for (_, pass) in &self.passes {
            if let Ok(promise) = pass.close(&JsValue::UNDEFINED) {
                worker::wasm_bindgen_futures::spawn_local(async move {
                    let _ = JsFuture::from(promise).await;
                });
            }
            dispose(pass);
        }
    }
}
