//! The worker's decoder engine and its packed format, as they are.

pub use crate::packed::Span;

#[path = "../../../src/decoder/engine.rs"]
pub mod engine;
#[path = "../../../src/decoder/format.rs"]
pub mod format;
