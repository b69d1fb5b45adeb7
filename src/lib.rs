//! edgeinfer: small models embedded in a WebAssembly module, served from a
//! Cloudflare Worker.
//!
//! The crate is split so that everything that computes is platform-neutral and
//! tested natively: [`spec`] and [`registry`] (the embedded models: what
//! build.rs verified, and their loaded forms), the engines ([`bert`] the
//! sentence encoder, [`dense`] small networks, [`decoder`] text generation,
//! [`tfidf`], [`ngrams`]) on shared [`kernels`] and the [`packed`] container
//! build.rs writes their weights in, [`encoder`] and [`classifier`] (models
//! as the routes use them) and [`api`] (request parsing, validation, routing
//! and response shapes, as plain bytes in and out). The Workers glue (`glue`,
//! wasm32 only) moves bytes between workerd and [`api`] and does no math.

pub mod api;
pub mod bert;
pub mod classifier;
pub mod decoder;
pub mod dense;
pub mod encoder;
pub mod error;
pub mod kernels;
pub mod ngrams;
pub mod packed;
pub mod registry;
pub mod spec;
pub mod tfidf;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use error::CoreError;
