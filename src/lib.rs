//! edgeinfer: small models embedded in a WebAssembly module, served from a
//! Cloudflare Worker.
//!
//! The crate is split so that everything that computes is platform-neutral and
//! tested natively: [`registry`] (the embedded models), [`ngrams`] (featurizers),
//! [`encoder`] (tokenizer + transformer sentence embeddings),
//! [`classifier`] (tract inference) and [`api`] (request parsing, validation,
//! routing and response shapes, as plain bytes in and out). The Workers glue
//! (`glue`, wasm32 only) moves bytes between workerd and [`api`] and does no math.

pub mod api;
pub mod bert;
pub mod causal_lm;
pub mod chat_model;
pub mod chat_template;
pub mod classifier;
pub mod dense;
pub mod encoder;
pub mod error;
pub mod generation;
pub mod ngrams;
pub mod registry;
pub mod sampling;
pub mod tfidf;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use error::CoreError;
