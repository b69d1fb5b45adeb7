//! The arithmetic of edgeinfer's models, apart from everything that serves
//! them: the [`packed`] container build.rs writes weights in and every
//! engine reads in place, the shared [`kernels`] (int8 and block-quantized
//! products in wasm simd128, SSE4.1 and portable code), and the engines:
//! [`bert`] (the sentence encoder), [`dense`] (small networks: lande, heads
//! on embeddings), [`tfidf`] and [`ngrams`] (text features), [`decoder`]
//! (a Llama-family decoder and its key/value cache, whole or one shard).
//!
//! Why a crate of its own: the worker, the shard module, the CLI and the
//! build-time packers compile these same files, and as a crate Cargo knows
//! it (no `#[path]` includes whose `crate::` paths must hold in two crates
//! at once). It knows nothing of tokenizers, HTTP or Workers.

pub mod bert;
pub mod decoder;
pub mod dense;
pub mod error;
pub mod kernels;
pub mod ngrams;
pub mod packed;
#[doc(hidden)]
pub mod testing;
pub mod tfidf;

pub use error::InputError;
