//! Text generation around the decoder engine (`edgeinfer_engine::decoder`,
//! our own Llama-family decoder on packed weights): the chat template
//! ([`template`]), token sampling ([`sampling`]), one reply streamed as text
//! ([`generation`]) and the chat model that ties them to a tokenizer
//! ([`chat`]), and the grammars a reply can be held to ([`constraint`]).
//!
//! Nothing here knows the registry: a chat model is built from bytes (the
//! packed weights, the tokenizer) and the template's token ids.

pub mod chat;
pub mod constraint;
pub mod generation;
pub mod jinja;
pub mod sampling;
pub mod template;
