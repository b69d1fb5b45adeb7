//! The packed form of a small dense network (Gemm, optional ReLU, ..., then
//! softmax): lande's 620-120-50 network and the logistic heads on sentence
//! embeddings, in the shared container ([`crate::packed`]), so the worker
//! needs no ONNX parser or graph optimizer to run them.
//!
//! Shared with build.rs (`#[path]`): depends on serde only.

use serde::{Deserialize, Serialize};

use super::Span;

/// The first bytes of a packed dense network.
pub const MAGIC: &[u8; 8] = b"EIDENSE1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub layers: Vec<DenseLayer>,
    /// Whether the last layer's outputs go through softmax.
    pub softmax: bool,
}

/// `y = W x + b`, then ReLU when `relu`; W stored as one row of `inputs` per
/// output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenseLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// float32, `outputs x inputs`.
    pub weight: Span,
    /// float32, `outputs`.
    pub bias: Span,
    pub relu: bool,
}
