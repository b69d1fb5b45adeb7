//! A sentence encoder: the model's own tokenizer, then the transformer of
//! [`crate::bert`] (packed from the ONNX graph at build time), which pools and
//! normalizes, so one embedding per text comes out.
//!
//! Built once per isolate (see [`crate::registry::encoder`]) and shared
//! read-only by every request.

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::CoreError;
use crate::spec::{InputSpec, ModelSpec};
use edgeinfer_engine::bert::Bert;

/// One text as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// The tokenizer's ids, special tokens included, after truncation.
    pub ids: Vec<u32>,
    /// True when the text was longer than the model's `max_tokens` and its
    /// end was dropped.
    pub truncated: bool,
}

pub struct SentenceEncoder {
    spec: &'static ModelSpec,
    tokenizer: Tokenizer,
    /// Table row of each token id (the table may be pruned).
    rows: Vec<u32>,
    max_tokens: usize,
    dims: usize,
    bert: Bert,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("model", &self.spec.id)
            .field("dims", &self.dims)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Parses the tokenizer and the packed weights' header (the weights
    /// themselves are used in place). Once per isolate.
    pub fn load(spec: &'static ModelSpec) -> Result<Self, CoreError> {
        let fail = |reason: String| CoreError::ModelLoad {
            model: spec.id,
            reason,
        };
        let InputSpec::Tokens {
            tokenizer,
            rows,
            max_tokens,
            dims,
        } = spec.input
        else {
            return Err(fail("not a token-input model".into()));
        };
        let mut tokenizer = Tokenizer::from_bytes(tokenizer).map_err(|e| fail(e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        tokenizer.with_padding(None);
        let rows = rows
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let bert = Bert::parse(spec.artifact).map_err(|e| fail(e.to_string()))?;
        if bert.dims() != dims || bert.max_positions() < max_tokens {
            return Err(fail(format!(
                "packed weights are {} wide for {} positions; the manifest says {dims} and {max_tokens}",
                bert.dims(),
                bert.max_positions()
            )));
        }
        Ok(SentenceEncoder {
            spec,
            tokenizer,
            rows,
            max_tokens,
            dims,
            bert,
        })
    }

    pub fn spec(&self) -> &'static ModelSpec {
        self.spec
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes each text with the model's tokenizer (truncating to
    /// `max_tokens`), as the reference implementation does.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokenized>, CoreError> {
        texts
            .iter()
            .map(|text| {
                let encoding =
                    self.tokenizer
                        .encode(*text, true)
                        .map_err(|e| CoreError::Inference {
                            model: self.spec.id,
                            reason: format!("tokenizing: {e}"),
                        })?;
                Ok(Tokenized {
                    ids: encoding.get_ids().to_vec(),
                    truncated: !encoding.get_overflowing().is_empty(),
                })
            })
            .collect()
    }

    /// Embeddings of already tokenized texts, in input order (unit length).
    ///
    /// One run per text, never a padded batch: the int8 layers quantize
    /// its activations with a scale taken from the whole input tensor, so in
    /// a batch one text's embedding would depend on its neighbours and on
    /// padding. Alone, a text always gets the same embedding (which is what a
    /// cache needs), no compute is spent on padding, and memory is bounded
    /// by one text of `max_tokens`.
    pub fn embed(&self, texts: &[Tokenized]) -> Result<Vec<Vec<f32>>, CoreError> {
        texts.iter().map(|t| self.run(t)).collect()
    }

    /// Tokenizes and embeds.
    pub fn encode(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<Tokenized>), CoreError> {
        let tokenized = self.tokenize(texts)?;
        Ok((self.embed(&tokenized)?, tokenized))
    }

    /// The rows of the (pruned) token table a text's tokens read: the
    /// `input_ids` the ONNX graph takes, and what the encoder runs on.
    pub fn table_rows(&self, text: &Tokenized) -> Result<Vec<u32>, CoreError> {
        text.ids
            .iter()
            .map(|&id| {
                self.rows
                    .get(id as usize)
                    .copied()
                    .ok_or_else(|| CoreError::Inference {
                        model: self.spec.id,
                        reason: format!("token id {id} is outside the tokenizer's vocabulary"),
                    })
            })
            .collect()
    }

    /// One run of the encoder on one text.
    fn run(&self, text: &Tokenized) -> Result<Vec<f32>, CoreError> {
        let err = |reason: String| CoreError::Inference {
            model: self.spec.id,
            reason,
        };
        if text.ids.is_empty() {
            return Err(err("a text produced no tokens".into()));
        }
        let rows = self.table_rows(text)?;
        let embedding = self.bert.embed(&rows).map_err(|e| err(e.to_string()))?;
        debug_assert_eq!(embedding.len(), self.dims);
        Ok(embedding)
    }
}

/// Cosine similarity; 0 when either vector is all zeros.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        dot / (aa.sqrt() * bb.sqrt())
    }
}
