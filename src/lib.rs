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
pub mod classifier;
pub mod encoder;
pub mod error;
pub mod ngrams;
pub mod registry;
pub mod tfidf;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use error::CoreError;
