//! Text generation: a Llama-family decoder of our own on packed weights
//! ([`engine`], [`format`]), the chat template ([`template`]), token
//! sampling ([`sampling`]), one reply streamed as text ([`generation`]) and
//! the chat model that ties them to a tokenizer ([`chat`]).
//!
//! Nothing here knows the registry: a chat model is built from bytes (the
//! packed weights, the tokenizer) and the template's token ids.

pub use crate::packed::Span;

pub mod chat;
pub mod engine;
pub mod format;
pub mod generation;
pub mod sampling;
pub mod template;
