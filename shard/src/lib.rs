//! One shard of a Llama-family decoder cut across Workers by layers
//! (pipeline/src/plan.rs): the edgeinfer decoder engine and its kernels, compiled
//! alone into a small wasm module that every shard Worker shares. Its
//! weights are not embedded in the module but given once per isolate (the
//! shard Worker's data module, copied into linear memory), so one build
//! serves every shard of every model.
//!
//! The engine is the `edgeinfer-engine` crate the worker runs too: a shard
//! runs exactly the code the whole model runs, which is what makes a chain
//! of shards give the whole model's logits bit for bit
//! (engine/src/decoder/engine_tests.rs).
//!
//! [`Shard`] is the state of one isolate: the model part and the passes open
//! on it (one per generation, each with its key/value cache). [`abi`] is
//! the C interface the JavaScript entry calls; it holds no logic.
//!
//! The same module serves the vocabulary slices of a model whose embedding
//! or head fits no isolate (engine/src/decoder/vocab.rs): `slice_abi`, for
//! shard/slice.mjs.

mod abi;
pub mod gate;
mod shard;
mod slice_abi;

pub use gate::{Limits, Millis, Refusal};
pub use shard::{
    Batch, Begun, Call, Input, News, Opened, Output, Ran, Shard, ShardError, BATCH_ROWS, HOLD,
    MERGE,
};

#[cfg(test)]
mod batch_tests;
