//! What the inference routes share: a body with the model it names
//! resolved once ([`Resolved`], made by the one parse), the sentence
//! encoder's load and token limit, and the usage of texts it read. A leaf:
//! the parse and each route import it, and it imports none of them.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::limits::MAX_TOTAL_TOKENS;
use super::timing::{self, Timings, Work};
use super::variants::Arm;
use super::{Mode, Served};
use crate::encoder::{SentenceEncoder, Tokenized};
use crate::registry::{self, ModelSpec};

/// A route's body with the model it names, found once; `timings` started
/// when parsing did.
#[derive(Debug)]
pub struct Resolved<T> {
    pub body: T,
    pub spec: &'static ModelSpec,
    pub arm: Option<Arm>,
    pub timings: Timings,
}

impl<T> Resolved<T> {
    /// Its parts, each owned by the route that serves it.
    pub fn into_parts(self) -> (T, &'static ModelSpec, Option<Arm>, Timings) {
        (self.body, self.spec, self.arm, self.timings)
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    /// Indices of the inputs cut to the model's token limit (their end was
    /// not embedded).
    pub truncated_inputs: Vec<usize>,
    /// Estimated CPU ms of the model work in the worker (see api::timing).
    pub cpu_ms: f64,
}

impl TokenUsage {
    /// The usage of embedding `tokenized` with `spec`.
    pub(super) fn of(tokenized: &[Tokenized], spec: &ModelSpec) -> Self {
        let tokens = tokenized.iter().map(|t| t.ids.len()).sum();
        let work = Work {
            inputs: tokenized.len(),
            tokens,
            ..Work::default()
        };
        TokenUsage {
            cpu_ms: timing::estimate_cpu_ms(spec, &work),
            prompt_tokens: tokens,
            total_tokens: tokens,
            truncated_inputs: truncated_inputs(tokenized),
        }
    }
}

/// Indices of the inputs cut to the model's token limit.
pub(super) fn truncated_inputs(tokenized: &[Tokenized]) -> Vec<usize> {
    tokenized
        .iter()
        .enumerate()
        .filter(|(_, t)| t.truncated)
        .map(|(i, _)| i)
        .collect()
}

/// The encoder of `spec`, or the 422 that says it is not one; a load is
/// timed as `init`.
pub(super) fn encoder_for(
    spec: &'static ModelSpec,
    arm: Option<Arm>,
    timings: &mut Timings,
) -> Result<(&'static SentenceEncoder, Served), ApiError> {
    timings.lap("parse");
    let (encoder, loaded_now) = registry::encoder(spec)?;
    timings.lap_if(loaded_now, "init");
    Ok((
        encoder,
        Served {
            arm,
            ..Served::new(spec, loaded_now)
        },
    ))
}

impl Served {
    /// Fills in the timings and usage once the work is done.
    pub(super) fn finish(mut self, timings: &Timings, usage: &TokenUsage) -> Self {
        self.timings = timings.phases().to_vec();
        self.tokens = Some(usage.prompt_tokens);
        self.cpu_ms = Some(usage.cpu_ms);
        self
    }
}

/// Texts as tokenized, and their embeddings in the same order.
pub(super) type Embedded = (Vec<Tokenized>, Vec<Vec<f32>>);

/// `texts` tokenized within the limit and embedded, timed as `tokenize`
/// and `inference`; `None` in [`Mode::Validate`], which stops before any
/// inference.
pub(super) fn embed_within_limit(
    encoder: &SentenceEncoder,
    texts: &[&str],
    timings: &mut Timings,
    mode: Mode,
) -> Result<Option<Embedded>, ApiError> {
    let tokenized = tokenize_within_limit(encoder, texts)?;
    timings.lap("tokenize");
    if mode == Mode::Validate {
        return Ok(None);
    }
    let embeddings = encoder.embed(&tokenized)?;
    timings.lap("inference");
    Ok(Some((tokenized, embeddings)))
}

/// Tokenizes and enforces the per-request token limit before any inference.
pub(super) fn tokenize_within_limit(
    encoder: &SentenceEncoder,
    texts: &[&str],
) -> Result<Vec<Tokenized>, ApiError> {
    let tokenized = encoder.tokenize(texts)?;
    let total: usize = tokenized.iter().map(|t| t.ids.len()).sum();
    if total > MAX_TOTAL_TOKENS {
        return Err(ApiError::too_large(format!(
            "the inputs come to {total} tokens; the limit is {MAX_TOTAL_TOKENS} per request, so split the batch"
        ))
        .with_param("input"));
    }
    Ok(tokenized)
}
