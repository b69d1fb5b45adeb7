//! A shard isolate's state: its part of the model and the passes open on
//! it, at most `max_passes` at once (what the plan budgeted its memory for:
//! each holds a key/value cache that grows to the context).

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
    #[error("the shard already serves {0} generations, all it has memory for")]
    Busy(usize),
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

/// What a shard tells its caller about itself (`GET /` and `info()`).
#[derive(Debug, Serialize)]
pub struct Info {
    pub config: Config,
    pub part: Part,
    pub max_passes: usize,
    pub open_passes: usize,
    pub cache_bytes: usize,
}

pub struct Shard {
    decoder: Option<Decoder>,
    max_passes: usize,
    /// Open passes by handle (0 is never a handle).
    passes: Vec<(u32, KvCache)>,
    next: u32,
}

impl Shard {
    pub fn new(max_passes: usize) -> Self {
        Shard {
            decoder: None,
            max_passes,
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

    pub fn info(&self) -> Result<Info, ShardError> {
        let d = self.decoder()?;
        Ok(Info {
            config: *d.config(),
            part: *d.part(),
            max_passes: self.max_passes,
            open_passes: self.passes.len(),
            cache_bytes: self.passes.iter().map(|(_, c)| c.bytes()).sum(),
        })
    }

    /// Starts a generation's pass: an empty cache for this shard's layers.
    pub fn open(&mut self) -> Result<u32, ShardError> {
        let cache = self.decoder()?.new_cache();
        if self.passes.len() >= self.max_passes {
            return Err(ShardError::Busy(self.max_passes));
        }
        let handle = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.passes.push((handle, cache));
        Ok(handle)
    }

    pub fn free_passes(&self) -> usize {
        self.max_passes.saturating_sub(self.passes.len())
    }

    /// Frees a pass's cache; closing one already closed does nothing.
    pub fn close(&mut self, handle: u32) {
        self.passes.retain(|(h, _)| *h != handle);
    }

    /// Feeds `input` to pass `handle`: hidden states for the next shard, or
    /// the next token's logits from the last one.
    pub fn step(&mut self, handle: u32, input: Input) -> Result<Vec<f32>, ShardError> {
        let decoder = self.decoder.as_ref().ok_or(ShardError::NotLoaded)?;
        let (_, cache) = self
            .passes
            .iter_mut()
            .find(|(h, _)| *h == handle)
            .ok_or(ShardError::NoPass(handle))?;
        let input = match input {
            Input::Tokens(t) => StageInput::Tokens(t),
            Input::Hidden(h) => StageInput::Hidden(h),
        };
        Ok(decoder.stage(cache, input)?)
    }
}
