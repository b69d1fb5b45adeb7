//! A shard isolate's state: its part of the model, the passes open on it,
//! and the caches of finished passes kept for the conversation's next turn.
//!
//! Memory is admitted in tokens: each pass reserves, when it opens, the
//! most tokens it will feed (its prompt plus its reply's `max_tokens`),
//! and the reservations of the open passes never exceed the isolate's
//! budget (`context x sessions` of the plan, pipeline/src/plan.rs): many short
//! chats at once, or one as long as the context, never more key/value
//! cache than the plan gave the isolate.
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

use serde::Serialize;
use thiserror::Error;

use edgeinfer_engine::decoder::format::{Config, Part};
use edgeinfer_engine::decoder::{Decoder, DecoderError, KvCache, StageInput};

#[derive(Debug, Error, PartialEq)]
pub enum ShardError {
    #[error("the shard's weights are not loaded")]
    NotLoaded,
    #[error("the shard's weights do not load: {0}")]
    Load(DecoderError),
    #[error("a pass of {asked} tokens does not fit: {free} of the shard's {budget} are free")]
    Busy {
        asked: usize,
        free: usize,
        budget: usize,
    },
    #[error("a pass reserves 1 to {context} tokens (the context), not {asked}")]
    BadReservation { asked: usize, context: usize },
    #[error("the pass reserved {reserved} tokens and would hold {needed}")]
    OverReservation { reserved: usize, needed: usize },
    #[error("the input starts at position {at}, but the pass holds {held} tokens")]
    Position { at: usize, held: usize },
    #[error("no open pass {0} (closed, or opened on an earlier instance)")]
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

/// What a shard tells its caller about itself (`GET /` on a shard Worker).
#[derive(Debug, Serialize)]
pub struct Info {
    pub config: Config,
    pub part: Part,
    pub budget_tokens: usize,
    pub reserved_tokens: usize,
    pub open_passes: usize,
    /// Caches of finished passes, and the tokens they hold.
    pub kept_caches: usize,
    pub kept_tokens: usize,
    /// Prompt tokens passes did not have to feed, since the isolate began.
    pub reused_tokens: u64,
    pub cache_bytes: usize,
}

/// A pass just opened: its handle, and how many of its prompt's first
/// tokens its cache already holds (the caller feeds from there on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub handle: u32,
    pub cached: usize,
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
    budget_tokens: usize,
    passes: Vec<Pass>,
    kept: Vec<Kept>,
    /// The next handle (0 is never one).
    next: u32,
    clock: u64,
    reused_tokens: u64,
}

/// How many first ids `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Shard {
    /// A shard whose open passes reserve at most `budget_tokens` in all.
    pub fn new(budget_tokens: usize) -> Self {
        Shard {
            decoder: None,
            budget_tokens,
            passes: Vec::new(),
            kept: Vec::new(),
            next: 1,
            clock: 0,
            reused_tokens: 0,
        }
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

    fn reserved(&self) -> usize {
        self.passes.iter().map(|p| p.reserved).sum()
    }

    fn kept_tokens(&self) -> usize {
        self.kept.iter().map(|k| k.ids.len()).sum()
    }

    /// Tokens a new pass may still reserve (kept caches make room).
    pub fn free_tokens(&self) -> usize {
        self.budget_tokens.saturating_sub(self.reserved())
    }

    pub fn info(&self) -> Result<Info, ShardError> {
        let d = self.decoder()?;
        Ok(Info {
            config: *d.config(),
            part: *d.part(),
            budget_tokens: self.budget_tokens,
            reserved_tokens: self.reserved(),
            open_passes: self.passes.len(),
            kept_caches: self.kept.len(),
            kept_tokens: self.kept_tokens(),
            reused_tokens: self.reused_tokens,
            cache_bytes: self
                .passes
                .iter()
                .map(|p| p.cache.bytes())
                .chain(self.kept.iter().map(|k| k.cache.bytes()))
                .sum(),
        })
    }

    /// Starts a generation's pass of at most `tokens` fed tokens whose
    /// prompt is `prompt`, in `scope`: from the kept cache that shares the
    /// longest start with the prompt (all but its last token at most: a
    /// pass is fed at least one), else an empty one. `Busy` when the budget
    /// has no room for it now (the caller may wait for a pass to close).
    pub fn open(
        &mut self,
        tokens: usize,
        scope: &str,
        prompt: &[u32],
    ) -> Result<Opened, ShardError> {
        let context = self.decoder()?.config().context;
        if tokens == 0 || tokens > context {
            return Err(ShardError::BadReservation {
                asked: tokens,
                context,
            });
        }
        let free = self.free_tokens();
        if tokens > free {
            return Err(ShardError::Busy {
                asked: tokens,
                free,
                budget: self.budget_tokens,
            });
        }
        let usable = prompt.len().saturating_sub(1).min(tokens);
        let best = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, k)| k.scope == scope)
            .map(|(i, k)| (common_prefix(&k.ids, prompt).min(usable), k.used, i))
            .filter(|&(shared, _, _)| shared > 0)
            .max();
        let decoder = self.decoder.as_ref().ok_or(ShardError::NotLoaded)?;
        self.clock += 1;
        let mut cache = match best {
            // The conversation goes on: the pass takes its cache.
            Some((shared, _, i)) if shared == self.kept[i].ids.len() => {
                self.kept.swap_remove(i).cache
            }
            // Another that starts alike (a shared system prompt, or a turn
            // asked again): a copy of the start, the kept one stays whole.
            Some((shared, _, i)) => {
                self.kept[i].used = self.clock;
                self.kept[i].cache.prefix(shared, tokens)
            }
            None => decoder.new_cache(),
        };
        // The pass holds exactly what it reserved; the kept caches give up
        // what it needs, oldest first.
        cache.reserve_exact(tokens);
        while self.reserved() + tokens + self.kept_tokens() > self.budget_tokens {
            let Some(oldest) = (0..self.kept.len()).min_by_key(|&i| self.kept[i].used) else {
                break;
            };
            self.kept.swap_remove(oldest);
        }
        let handle = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        let cached = cache.len();
        self.reused_tokens += cached as u64;
        self.passes.push(Pass {
            handle,
            reserved: tokens,
            cache,
            scope: scope.to_string(),
            fed: false,
        });
        Ok(Opened { handle, cached })
    }

    /// Ends a pass and frees its reservation. With `keep`, the ids it was
    /// fed (every shard of the chain is told the same), its cache is kept
    /// for a later prompt of its scope that starts with them; a cache that does not hold
    /// exactly those (a pass that failed midway) is dropped. Closing a pass
    /// already closed does nothing.
    pub fn close(&mut self, handle: u32, keep: Option<&[u32]>) {
        let Some(i) = self.passes.iter().position(|p| p.handle == handle) else {
            return;
        };
        let mut pass = self.passes.swap_remove(i);
        let Some(ids) = keep else {
            return;
        };
        if ids.is_empty() || ids.len() != pass.cache.len() {
            return;
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

    /// Feeds `input` to pass `handle`, its first row at position `at`:
    /// hidden states for the next shard, or the next token's logits from
    /// the last one. A pass's first input may start before the end of the
    /// cache it opened with (the chain continues where every shard has a
    /// cache): the rest is forgotten.
    pub fn step(&mut self, handle: u32, at: usize, input: Input) -> Result<Vec<f32>, ShardError> {
        let decoder = self.decoder.as_ref().ok_or(ShardError::NotLoaded)?;
        let pass = self
            .passes
            .iter_mut()
            .find(|p| p.handle == handle)
            .ok_or(ShardError::NoPass(handle))?;
        let held = pass.cache.len();
        if at < held && !pass.fed {
            pass.cache.truncate(at);
        } else if at != held {
            return Err(ShardError::Position { at, held });
        }
        let (input, rows) = match input {
            Input::Tokens(t) => (StageInput::Tokens(t), t.len()),
            Input::Hidden(h) => (
                StageInput::Hidden(h),
                h.len() / decoder.config().dims.max(1),
            ),
        };
        let needed = pass.cache.len() + rows;
        if needed > pass.reserved {
            return Err(ShardError::OverReservation {
                reserved: pass.reserved,
                needed,
            });
        }
        let out = decoder.stage(&mut pass.cache, input)?;
        pass.fed = true;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config-only part (no layers) is enough for the bookkeeping.
    fn shard(budget: usize) -> Shard {
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
        };
        let bytes = leak_aligned(&Packer::default().finish(MAGIC, &header).unwrap());
        let mut s = Shard::new(budget);
        s.load(bytes).unwrap();
        s
    }

    /// Opens a pass with no prompt to match.
    fn open(s: &mut Shard, tokens: usize) -> Result<u32, ShardError> {
        s.open(tokens, "", &[]).map(|o| o.handle)
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
        assert!(matches!(
            open(&mut s, 1),
            Err(ShardError::Busy { free: 0, .. })
        ));
        s.close(a, None);
        assert_eq!(s.free_tokens(), 100);
        assert!(open(&mut s, 60).is_ok());
        assert!(matches!(
            open(&mut s, 41),
            Err(ShardError::Busy { free: 40, .. })
        ));
        s.close(b, None);
        s.close(b, None);
        assert_eq!(s.free_tokens(), 90);
        assert!(matches!(
            open(&mut s, 0),
            Err(ShardError::BadReservation { .. })
        ));
        assert!(matches!(
            open(&mut s, 101),
            Err(ShardError::BadReservation { .. })
        ));
    }

    #[test]
    fn a_pass_cannot_feed_more_than_it_reserved() {
        let mut s = shard(100);
        let p = open(&mut s, 2).unwrap();
        assert!(s.step(p, 0, Input::Hidden(&rows(2))).is_ok());
        assert!(matches!(
            s.step(p, 2, Input::Hidden(&rows(1))),
            Err(ShardError::OverReservation {
                reserved: 2,
                needed: 3
            })
        ));
        assert!(matches!(
            s.step(p + 1, 2, Input::Hidden(&rows(1))),
            Err(ShardError::NoPass(_))
        ));
    }

    /// Feeds `ids.len()` positions to a new pass of `prompt` (reserving as
    /// many) and keeps its cache as `ids`.
    fn converse(s: &mut Shard, scope: &str, prompt: &[u32], ids: &[u32]) -> Opened {
        let opened = s.open(ids.len(), scope, prompt).unwrap();
        let at = opened.cached;
        s.step(opened.handle, at, Input::Hidden(&rows(ids.len() - at)))
            .unwrap();
        s.close(opened.handle, Some(ids));
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
        let other = s.open(50, "key-b", &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(other.cached, 0);
        s.close(other.handle, None);
        // Turn 2 of the same caller: the history, then new tokens.
        let next = s.open(50, "key-a", &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert_eq!(next.cached, 5);
        assert_eq!(s.info().unwrap().kept_caches, 0, "the pass took the cache");
        // The chain continues where every shard has a cache: earlier is fine
        // on the first input, not later, and not once fed.
        assert!(matches!(
            s.step(next.handle, 6, Input::Hidden(&rows(1))),
            Err(ShardError::Position { at: 6, held: 5 })
        ));
        s.step(next.handle, 4, Input::Hidden(&rows(3))).unwrap();
        assert!(matches!(
            s.step(next.handle, 3, Input::Hidden(&rows(1))),
            Err(ShardError::Position { at: 3, held: 7 })
        ));
        // A cache that does not hold what the caller says is not kept.
        s.close(next.handle, Some(&[1, 2, 3]));
        assert_eq!(s.info().unwrap().kept_caches, 0);
        assert_eq!(s.info().unwrap().reused_tokens, 5);
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
        assert_eq!(s.open(50, "", &[1, 2, 3, 4, 5]).unwrap().cached, 4);
        // A prompt asked again still feeds its last token.
        assert_eq!(s.open(50, "", &[1, 9, 8]).unwrap().cached, 2);
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
        let p = s.open(50, "", &[7]).unwrap();
        assert_eq!(p.cached, 0);
        let info = s.info().unwrap();
        assert_eq!((info.kept_tokens, info.reserved_tokens), (30, 50));
        s.close(p.handle, None);
        assert_eq!(
            s.open(50, "", &[3, 3, 3]).unwrap().cached,
            2,
            "the newest stays"
        );
        // Kept caches never refuse a pass: the whole budget is still free.
        assert!(matches!(
            open(&mut s, 51),
            Err(ShardError::Busy { free: 50, .. })
        ));
    }
}
