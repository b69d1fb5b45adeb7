//! A shard isolate's state: its part of the model and the passes open on
//! it. Memory is admitted in tokens: each pass reserves, when it opens, the
//! most tokens it will feed (its prompt plus its reply's `max_tokens`), and
//! the reservations of the open passes never exceed the isolate's budget
//! (`context x sessions` of the plan, models/plan.rs): many short chats at
//! once, or one as long as the context, never more key/value cache than
//! the plan gave the isolate.

use serde::Serialize;
use thiserror::Error;

use crate::decoder::engine::{Decoder, DecoderError, KvCache, StageInput};
use crate::decoder::format::{Config, Part};

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
    pub cache_bytes: usize,
}

struct Pass {
    handle: u32,
    reserved: usize,
    cache: KvCache,
}

pub struct Shard {
    decoder: Option<Decoder>,
    budget_tokens: usize,
    passes: Vec<Pass>,
    /// The next handle (0 is never one).
    next: u32,
}

impl Shard {
    /// A shard whose open passes reserve at most `budget_tokens` in all.
    pub fn new(budget_tokens: usize) -> Self {
        Shard {
            decoder: None,
            budget_tokens,
            passes: Vec::new(),
            next: 1,
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

    /// Tokens a new pass may still reserve.
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
            cache_bytes: self.passes.iter().map(|p| p.cache.bytes()).sum(),
        })
    }

    /// Starts a generation's pass of at most `tokens` fed tokens: an empty
    /// cache for this shard's layers. `Busy` when the budget has no room
    /// for it now (the caller may wait for a pass to close).
    pub fn open(&mut self, tokens: usize) -> Result<u32, ShardError> {
        let decoder = self.decoder()?;
        let context = decoder.config().context;
        if tokens == 0 || tokens > context {
            return Err(ShardError::BadReservation {
                asked: tokens,
                context,
            });
        }
        let cache = decoder.new_cache();
        let free = self.free_tokens();
        if tokens > free {
            return Err(ShardError::Busy {
                asked: tokens,
                free,
                budget: self.budget_tokens,
            });
        }
        let handle = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.passes.push(Pass {
            handle,
            reserved: tokens,
            cache,
        });
        Ok(handle)
    }

    /// Frees a pass's cache and reservation; closing one already closed
    /// does nothing.
    pub fn close(&mut self, handle: u32) {
        self.passes.retain(|p| p.handle != handle);
    }

    /// Feeds `input` to pass `handle`: hidden states for the next shard, or
    /// the next token's logits from the last one.
    pub fn step(&mut self, handle: u32, input: Input) -> Result<Vec<f32>, ShardError> {
        let decoder = self.decoder.as_ref().ok_or(ShardError::NotLoaded)?;
        let pass = self
            .passes
            .iter_mut()
            .find(|p| p.handle == handle)
            .ok_or(ShardError::NoPass(handle))?;
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
        Ok(decoder.stage(&mut pass.cache, input)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config-only part (no layers) is enough for the bookkeeping.
    fn shard(budget: usize) -> Shard {
        use crate::decoder::format::{Header, Rope, RopeStyle, MAGIC};
        use crate::packed::{leak_aligned, Packer};
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

    #[test]
    fn passes_are_admitted_while_their_reservations_fit_the_budget() {
        let mut s = shard(150);
        let a = s.open(100).unwrap();
        let b = s.open(50).unwrap();
        assert!(matches!(s.open(1), Err(ShardError::Busy { free: 0, .. })));
        s.close(a);
        assert_eq!(s.free_tokens(), 100);
        assert!(s.open(60).is_ok());
        assert!(matches!(s.open(41), Err(ShardError::Busy { free: 40, .. })));
        s.close(b);
        s.close(b);
        assert_eq!(s.free_tokens(), 90);
        assert!(matches!(s.open(0), Err(ShardError::BadReservation { .. })));
        assert!(matches!(
            s.open(101),
            Err(ShardError::BadReservation { .. })
        ));
    }

    #[test]
    fn a_pass_cannot_feed_more_than_it_reserved() {
        let mut s = shard(100);
        let p = s.open(2).unwrap();
        assert!(s.step(p, Input::Hidden(&[0.5; 8])).is_ok());
        assert!(matches!(
            s.step(p, Input::Hidden(&[0.5; 4])),
            Err(ShardError::OverReservation {
                reserved: 2,
                needed: 3
            })
        ));
        assert!(matches!(
            s.step(p + 1, Input::Hidden(&[0.5; 4])),
            Err(ShardError::NoPass(_))
        ));
    }
}
