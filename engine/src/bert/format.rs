//! The packed form of a BERT-style sentence encoder: what build.rs writes
//! from the ONNX graph and what the worker reads in place.
//!
//! Why not the ONNX file: parsing 28 MB of protobuf and optimizing the graph
//! took ~1 s in a cold isolate, and tract copied every weight out of the
//! embedded bytes (then folded int8 to float32), so the weights sat in
//! linear memory two to four times. This form is laid out so the weights are
//! used where the module's data segment put them: int8 rows for the integer
//! kernel, float32 arrays 16-byte aligned, nothing to decode but a small
//! JSON header.
//!
//! Stored in the shared container ([`crate::packed`]). This file is shared
//! with build.rs (`#[path]`), so it depends on serde only.

use serde::{Deserialize, Serialize};

use super::Span;

/// The first bytes of a packed encoder; the version digit changes with the layout.
pub const MAGIC: &[u8; 8] = b"EIBERT01";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub dims: usize,
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub ffn: usize,
    /// Longest input the position table covers.
    pub max_positions: usize,
    /// LayerNormalization's epsilon.
    pub eps: f32,
    pub embedding: Embedding,
    /// float32, `max_positions x dims` (token type 0 already added in).
    pub positions: Span,
    pub embedding_norm: Norm,
    pub layers: Vec<Layer>,
}

/// The token table, uint8 with one scale and zero point, as onnxruntime's
/// quantizer stored it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embedding {
    pub rows: usize,
    /// uint8, `rows x dims`.
    pub table: Span,
    pub scale: f32,
    pub zero_point: u8,
}

/// float32 `gamma` and `beta`, `dims` each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Norm {
    pub gamma: Span,
    pub beta: Span,
}

/// A post-norm transformer layer: attention (q, k, v, o), then the
/// feed-forward pair (up, GELU, down), each followed by residual + norm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub attention_norm: Norm,
    pub up: Linear,
    pub down: Linear,
    pub output_norm: Norm,
}

/// `y = x W + b`, W stored transposed (one row of `inputs` per output) so
/// every output is one contiguous dot product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    pub weights: Weights,
    /// float32, `outputs`.
    pub bias: Span,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Weights {
    /// int8, symmetric per output channel (`scales`, float32 x `outputs`);
    /// activations are quantized per call to uint8, as onnxruntime's
    /// DynamicQuantizeLinear does.
    Int8 { weight: Span, scales: Span },
    /// float32 (layers the quantizer left in float: too sensitive).
    Float { weight: Span },
}
