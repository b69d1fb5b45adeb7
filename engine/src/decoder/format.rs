//! The packed form of a Llama-family decoder: what build.rs writes from a
//! model file (pipeline/src/pack_llama.rs) and what [`super::engine`] reads in
//! place, in the shared container ([`crate::packed`]).
//!
//! Every matrix keeps the weights' own quantization (no second rounding at
//! pack time): float and int8 rows one row per output (`rows x cols`,
//! `cols` = its input width), GGUF's blocks re-laid out in panels of four
//! rows ([`crate::kernels::panels`]), their values and scales as the file
//! has them.

use serde::{Deserialize, Serialize};

use super::Span;
use crate::kernels::panels::PanelKind;

/// The first bytes of a packed decoder; the digit changes with the layout.
pub const MAGIC: &[u8; 8] = b"EILLAMA3";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub config: Config,
    /// Which part of the model these weights are.
    pub part: Part,
    /// `vocab x dims`: row `t` is token `t`'s embedding. Present when the
    /// part embeds, or predicts with the head tied to it.
    pub embedding: Option<Matrix>,
    /// Blocks `part.first_layer..` of the model, in order.
    pub layers: Vec<Layer>,
    /// float32, `dims`; present when the part predicts.
    pub final_norm: Option<Span>,
    /// `vocab x dims`; `None` when the head is tied to the embedding (or
    /// the part does not predict).
    pub head: Option<Matrix>,
    /// float32, `head_dim / 2`: what pair `i`'s rotary frequency is divided
    /// by (GGUF's `rope_freqs.weight`: Llama 3.1 and 3.2 stretch their low
    /// frequencies so; llama.cpp's `freq_factors`). `None`: all 1.
    #[serde(default)]
    pub rope_factors: Option<Span>,
}

/// The part of a model one packed file holds: all of it, or one shard of a
/// model cut across isolates by layers (pipeline/src/plan.rs). A shard that
/// embeds takes token ids; one that does not takes the previous shard's
/// hidden states. One that predicts gives logits, else hidden states.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// Blocks of the whole model.
    pub model_layers: usize,
    /// The model's blocks this part holds: `first_layer..end_layer`.
    pub first_layer: usize,
    pub end_layer: usize,
    /// Holds the token embedding: its input is token ids.
    pub embeds: bool,
    /// Holds the final norm and the head: its output is logits.
    pub predicts: bool,
}

impl Part {
    /// The whole model of `layers` blocks.
    pub fn whole(layers: usize) -> Part {
        Part {
            model_layers: layers,
            first_layer: 0,
            end_layer: layers,
            embeds: true,
            predicts: true,
        }
    }
}

/// The numbers that shape the model, read from the model file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub dims: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads / kv_heads` query
    /// heads share one).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the SwiGLU hidden layer.
    pub ffn: usize,
    /// Longest sequence (prompt + reply) the model was built for.
    pub context: usize,
    pub norm_eps: f32,
    pub rope: Rope,
}

/// Rotary position embedding: pair `i` of a head (of `head_dim / 2`) turns
/// by `position * theta^(-2i / head_dim)` (divided by the pair's factor,
/// where the model has them: [`Header::rope_factors`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub style: RopeStyle,
}

/// Which elements of a head form pair `i`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(i, i + head_dim / 2)`: Hugging Face Llama's `rotate_half`.
    HalfSplit,
    /// `(2i, 2i + 1)`: Meta's original Llama and GGUF's "normal" rope.
    Interleaved,
}

impl Part {
    /// Holds every block, the embedding and the head.
    pub fn is_whole(&self) -> bool {
        self.embeds && self.predicts && self.first_layer == 0 && self.end_layer == self.model_layers
    }
}

/// A pre-norm block: RMSNorm, grouped-query attention, residual; RMSNorm,
/// SwiGLU MLP (`down(silu(gate x) * up x)`), residual. Biases on q, k and v
/// only where the architecture has them (Qwen2); none elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    /// float32, `dims`.
    pub attention_norm: Span,
    pub q: Matrix,
    pub k: Matrix,
    pub v: Matrix,
    /// float32, one per row of q, k, v: added after the product, before
    /// the rotation. Absent from the header when `None`, so a model
    /// without biases packs to the same bytes as before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_bias: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k_bias: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v_bias: Option<Span>,
    pub o: Matrix,
    /// float32, `dims`.
    pub mlp_norm: Span,
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
}

/// A `rows x cols` weight matrix, one row per output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub weights: Weights,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Weights {
    /// float32, `rows x cols` (an unquantized reference model).
    F32 { values: Span },
    /// int8, `rows x cols`, symmetric with one float32 scale per row
    /// (`scales`, `rows`): weight = q x scale.
    I8Rows { values: Span, scales: Span },
    /// int8 in blocks of 32 along a row with one float32 scale each
    /// (GGUF's Q8_0, its f16 scales widened), in panels of four rows
    /// ([`crate::kernels::panels::PanelKind::Q8`]; `panels` counts bytes):
    /// activations are quantized per block too, and each block is an
    /// integer dot product.
    Q8Panels { panels: Span },
    /// GGUF's Q4_1 (4-bit values, an f16 scale and minimum per block of
    /// 32: weight = q x scale + min), bytes as the file has them, in panels
    /// of four rows ([`crate::kernels::panels::PanelKind::Q4_1`]).
    Q4_1Panels { panels: Span },
    /// GGUF's other block formats (Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), their
    /// values and scales as the file has them, in panels of four rows
    /// ([`crate::kernels::panels::PanelKind`] says each layout).
    Panels { kind: PanelKind, panels: Span },
}
