//! edgeinfer: small models embedded in a WebAssembly module, served from a
//! Cloudflare Worker.
//!
//! The arithmetic is the `edgeinfer-engine` crate (engine/: the packed
//! container, kernels, the sentence encoder, dense networks, text features
//! and the decoder with its key/value cache); this crate is what serves it,
//! platform-neutral and tested natively: [`spec`] and [`registry`] (the
//! embedded models: what build.rs verified, and their loaded forms),
//! [`encoder`] and [`classifier`] (models as the routes use them, with their
//! tokenizers), [`decoder`] (chat templates, sampling, a reply streamed as
//! text) and [`api`] (request parsing, validation, routing and response
//! shapes, as plain bytes in and out). The Workers glue (`glue`, wasm32
//! only) moves bytes between workerd and [`api`] and does no math.

pub mod api;
pub mod classifier;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod registry;
pub mod spec;

#[cfg(target_arch = "wasm32")]
mod glue;

pub use error::CoreError;
