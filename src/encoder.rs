//! A sentence encoder: the model's own tokenizer, then a transformer graph
//! that pools and normalizes inside, so one embedding per text comes out.
//!
//! Built once per isolate (see [`crate::registry::encoder`]) and shared
//! read-only by every request.

use std::sync::Arc;

use tokenizers::{Tokenizer, TruncationParams};
use tract_onnx::prelude::*;

use crate::error::CoreError;
use crate::registry::{InputSpec, ModelSpec};

/// Attention memory grows with batch x tokens²: texts are run in groups of
/// similar length whose padded size stays under these budgets, which bounds
/// the isolate's peak memory (one group's attention scores are
/// 12 heads x `ATTENTION_BUDGET` f32s, about 6 MB) whatever the request.
const TOKEN_BUDGET: usize = 2048;
const ATTENTION_BUDGET: usize = 2 * 256 * 256;

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
    plan: Arc<TypedRunnableModel>,
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
    /// Parses the tokenizer and optimizes the graph. Costly: once per isolate.
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
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &spec.artifact[..])
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| fail(format!("{e:#}")))?;
        Ok(SentenceEncoder {
            spec,
            tokenizer,
            rows,
            max_tokens,
            dims,
            plan,
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
    pub fn embed(&self, texts: &[Tokenized]) -> Result<Vec<Vec<f32>>, CoreError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].ids.len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted by length, so the last of a group is its longest.
            let mut end = start + 1;
            while end < order.len() {
                let len = texts[order[end]].ids.len().max(1);
                let batch = end + 1 - start;
                if batch * len > TOKEN_BUDGET || batch * len * len > ATTENTION_BUDGET {
                    break;
                }
                end += 1;
            }
            let group: Vec<&Tokenized> = order[start..end].iter().map(|&i| &texts[i]).collect();
            for (&i, embedding) in order[start..end].iter().zip(self.run(&group)?) {
                out[i] = embedding;
            }
            start = end;
        }
        Ok(out)
    }

    /// Tokenizes and embeds.
    pub fn encode(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<Tokenized>), CoreError> {
        let tokenized = self.tokenize(texts)?;
        Ok((self.embed(&tokenized)?, tokenized))
    }

    /// One run of the graph on a padded batch.
    fn run(&self, group: &[&Tokenized]) -> Result<Vec<Vec<f32>>, CoreError> {
        let err = |reason: String| CoreError::Inference {
            model: self.spec.id,
            reason,
        };
        let width = group.iter().map(|t| t.ids.len()).max().unwrap_or(0);
        if width == 0 {
            return Err(err("a text produced no tokens".into()));
        }
        let mut ids = vec![0i64; group.len() * width];
        let mut mask = vec![0i64; group.len() * width];
        for (t, (ids, mask)) in group.iter().zip(
            ids.chunks_exact_mut(width)
                .zip(mask.chunks_exact_mut(width)),
        ) {
            for (slot, &id) in ids.iter_mut().zip(&t.ids) {
                let row = self.rows.get(id as usize).ok_or_else(|| {
                    err(format!(
                        "token id {id} is outside the tokenizer's vocabulary"
                    ))
                })?;
                *slot = i64::from(*row);
            }
            mask[..t.ids.len()].fill(1);
        }
        let shape = [group.len(), width];
        let tensor = |data: &[i64]| {
            Tensor::from_shape(&shape, data)
                .map(IntoTValue::into_tvalue)
                .map_err(|e| err(format!("{e:#}")))
        };
        let outputs = self
            .plan
            .run(tvec!(tensor(&ids)?, tensor(&mask)?))
            .map_err(|e| err(format!("{e:#}")))?;
        let output = outputs
            .first()
            .ok_or_else(|| err("the graph returned no output".into()))?;
        let view = output
            .to_plain_array_view::<f32>()
            .map_err(|e| err(format!("{e:#}")))?;
        if view.shape() != [group.len(), self.dims] {
            return Err(err(format!(
                "output shape {:?}, expected [{}, {}]",
                view.shape(),
                group.len(),
                self.dims
            )));
        }
        Ok(view.rows().into_iter().map(|r| r.to_vec()).collect())
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
