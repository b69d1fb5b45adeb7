//! A Llama-family decoder on packed weights: the packed [`format`], the
//! [`engine`] that runs it (whole, or one shard's layers), and the [`kv`]
//! cache one generation keeps. Tokens in, logits (or a shard's hidden
//! states) out; text, templates and sampling are the caller's.

pub use crate::packed::Span;

pub mod best;
pub mod engine;
pub mod format;
pub mod kv;
pub mod vocab;

pub use best::{best, merge, Candidate, MOST_BEST};
pub use engine::{
    stage_row_bytes, stage_rows, Decoder, DecoderError, StageInput, Step, PREDICT_ROWS, STAGE_ROWS,
};
pub use kv::KvCache;
