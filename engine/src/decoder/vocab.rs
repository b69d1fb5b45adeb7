//! A slice of a model's vocabulary: rows `a..b` of its token embedding and of
//! its output head (the same matrix when tied), and the final norm, packed
//! on their own.
//!
//! Why: a large vocabulary's matrix does not fit an isolate beside anything
//! else. Qwen2.5's 151,936 x 896 embedding is 145 MB as Q8_0, more than a
//! shard Worker may hold (64 MiB) and than an isolate's 128 MB; tied, it is
//! needed both where tokens come in and where logits go out. Cut by rows, it
//! spreads over a few Workers that each answer two questions: the
//! embeddings of the tokens in their rows (for the first layer shard, which
//! then takes hidden states), and their rows' logits, or the best of them,
//! for a final hidden state (merged by the caller: [`super::best::merge`]).
//!
//! Bit for bit the unsplit model: a row's embedding is the same
//! dequantization of the same blocks, and each head row's logit is computed
//! by the same operations whatever rows share its panel (a lane of its own),
//! so the merged logits are the whole head's; the final norm is the same
//! function of the same hidden state in every slice.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::best::{best, Candidate};
use super::engine::{DecoderError, Input, Matrix};
use super::format::{Config, Matrix as MatrixSpec};
use super::Span;
use crate::kernels;
use crate::kernels::blocks::Quantized;
use crate::packed::{self, FormatError};

/// The first bytes of a packed vocabulary slice.
pub const MAGIC: &[u8; 8] = b"EIVOCAB1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VocabHeader {
    /// The whole model's config (`vocab` is the whole vocabulary).
    pub config: Config,
    /// The model's rows `first..end` this slice holds.
    pub first: usize,
    pub end: usize,
    /// `(end - first) x dims`: those rows of the token embedding.
    pub embedding: MatrixSpec,
    /// Those rows of the head; `None` when tied to the embedding.
    pub head: Option<MatrixSpec>,
    /// float32, `dims`.
    pub final_norm: Span,
}

/// A loaded slice, reading its weights in place.
#[derive(Debug)]
pub struct VocabSlice {
    config: Config,
    rows: Range<usize>,
    embedding: Matrix,
    head: Option<Matrix>,
    final_norm: &'static [f32],
}

impl VocabSlice {
    pub fn parse(bytes: &'static [u8]) -> Result<VocabSlice, DecoderError> {
        let (h, data): (VocabHeader, _) = packed::open(bytes, MAGIC, "vocabulary slice")?;
        let c = h.config;
        if h.first >= h.end || h.end > c.vocab || c.dims == 0 {
            return Err(FormatError(format!(
                "rows {}..{} of a vocabulary of {}",
                h.first, h.end, c.vocab
            ))
            .into());
        }
        let n = h.end - h.first;
        let load = |spec: &MatrixSpec, what: &str| Matrix::load(&data, spec, n, c.dims, what);
        Ok(VocabSlice {
            embedding: load(&h.embedding, "embedding")?,
            head: h.head.as_ref().map(|s| load(s, "head")).transpose()?,
            final_norm: data
                .f32s(h.final_norm, c.dims)
                .map_err(|e| FormatError(format!("final norm: {e}")))?,
            rows: h.first..h.end,
            config: c,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model's token ids this slice holds.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// The embeddings of `tokens`, each one of this slice's rows:
    /// `tokens.len() x dims`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, DecoderError> {
        if tokens.is_empty() {
            return Err(DecoderError::NoTokens);
        }
        if let Some(&token) = tokens.iter().find(|&&t| !self.rows.contains(&(t as usize))) {
            return Err(DecoderError::TokenNotInSlice {
                token,
                first: self.rows.start,
                end: self.rows.end,
            });
        }
        let d = self.config.dims;
        let mut out = vec![0.0; tokens.len() * d];
        for (&t, row) in tokens.iter().zip(out.chunks_exact_mut(d)) {
            self.embedding.row(t as usize - self.rows.start, row);
        }
        Ok(out)
    }

    /// This slice's logits for each row of `hidden` (final hidden states,
    /// before the final norm): `rows x (end - first)`.
    pub fn logits(&self, hidden: &[f32]) -> Result<Vec<f32>, DecoderError> {
        let d = self.config.dims;
        if hidden.is_empty() {
            return Err(DecoderError::NoTokens);
        }
        if hidden.len() % d != 0 {
            return Err(DecoderError::WrongInput {
                expected: "whole rows of hidden states",
            });
        }
        let mut x = hidden.to_vec();
        kernels::rms_norm(&mut x, self.final_norm, self.config.norm_eps);
        let mut logits = vec![0.0f32; hidden.len() / d * self.rows.len()];
        self.head
            .as_ref()
            .unwrap_or(&self.embedding)
            .apply(&mut Input::new(&x, &mut Quantized::default()), &mut logits);
        Ok(logits)
    }

    /// The `k` best of this slice's logits for each row of `hidden`, with
    /// the model's ids: what [`super::best::merge`] takes from every slice.
    pub fn best(&self, hidden: &[f32], k: usize) -> Result<Vec<Vec<Candidate>>, DecoderError> {
        let logits = self.logits(hidden)?;
        let first = self.rows.start as u32;
        Ok(logits
            .chunks_exact(self.rows.len())
            .map(|row| {
                best(row, k)
                    .into_iter()
                    .map(|(id, logit)| (id + first, logit))
                    .collect()
            })
            .collect())
    }
}
