//! Sampling and length settings: the fields chat completions, session
//! messages and session defaults share, and their ranges.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::limits::{
    DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING_TOP_K, DEFAULT_TEMPERATURE, MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES, MAX_TOKENS,
};
use crate::api::parse::kind;
use crate::decoder::generation::GenerateOptions;
use crate::decoder::sampling::SamplingParams;

/// Sampling and length settings, shared by chat completions, session
/// messages and session defaults. All optional; absent ones fall back to the
/// session's defaults, then to the model's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// OpenAI's penalties: only 0 (their default) is accepted; see
    /// `repetition_penalty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
}

impl GenerationFields {
    /// `self` where set, else `fallback`.
    pub fn or(&self, fallback: &GenerationFields) -> GenerationFields {
        GenerationFields {
            max_tokens: self
                .max_tokens
                .or(self.max_completion_tokens)
                .or(fallback.max_tokens)
                .or(fallback.max_completion_tokens),
            max_completion_tokens: None,
            temperature: self.temperature.or(fallback.temperature),
            top_p: self.top_p.or(fallback.top_p),
            top_k: self.top_k.or(fallback.top_k),
            repetition_penalty: self.repetition_penalty.or(fallback.repetition_penalty),
            seed: self.seed.or(fallback.seed),
            stop: self.stop.clone().or_else(|| fallback.stop.clone()),
            frequency_penalty: self.frequency_penalty.or(fallback.frequency_penalty),
            presence_penalty: self.presence_penalty.or(fallback.presence_penalty),
        }
    }

    /// Checks every field against its range; `default_seed` is used when no
    /// seed was given (the glue draws it at random).
    pub fn options(&self, default_seed: u64) -> Result<GenerateOptions, ApiError> {
        let bad = |field: &str, message: String| ApiError::invalid(message).with_param(field);
        if self.max_tokens.is_some() && self.max_completion_tokens.is_some() {
            return Err(bad(
                "max_completion_tokens",
                "send `max_tokens` or `max_completion_tokens`, not both".into(),
            ));
        }
        let (field, max_tokens) = match (self.max_tokens, self.max_completion_tokens) {
            (Some(n), _) => ("max_tokens", n),
            (None, Some(n)) => ("max_completion_tokens", n),
            (None, None) => ("max_tokens", DEFAULT_MAX_TOKENS as u64),
        };
        if max_tokens == 0 || max_tokens > MAX_TOKENS as u64 {
            return Err(bad(
                field,
                format!(
                    "`{field}` is {max_tokens}; it must be between 1 and {} (the model's context is shared by the prompt and the reply)",
                    MAX_TOKENS
                ),
            ));
        }
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(
                "temperature",
                format!("`temperature` is {temperature}; it must be between 0 and 2 (0 = greedy)"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        // 0 keeps only the most likely token, as OpenAI reads it.
        if !(0.0..=1.0).contains(&top_p) {
            return Err(bad(
                "top_p",
                format!("`top_p` is {top_p}; it must be between 0 and 1"),
            ));
        }
        let top_k = self.top_k.unwrap_or(DEFAULT_SAMPLING_TOP_K as u64);
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        // A tiny penalty would push a seen logit to infinity (NaN weights).
        if !(0.01..=10.0).contains(&repetition_penalty) {
            return Err(bad(
                "repetition_penalty",
                format!("`repetition_penalty` is {repetition_penalty}; it must be between 0.01 and 10 (1 = off)"),
            ));
        }
        for (field, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(bad(
                    field,
                    format!(
                        "`{field}` is not supported (only 0); use `repetition_penalty` (e.g. 1.2)"
                    ),
                ));
            }
        }
        Ok(GenerateOptions {
            max_tokens: max_tokens as usize,
            stop: stop_sequences(self.stop.as_ref())?,
            sampling: SamplingParams {
                temperature: temperature as f32,
                top_k: usize::try_from(top_k).unwrap_or(usize::MAX),
                top_p: top_p as f32,
                repetition_penalty: repetition_penalty as f32,
                seed: self.seed.map_or(default_seed, |s| s as u64),
            },
        })
    }
}

/// `stop`: a string or an array of up to 4 non-empty strings.
fn stop_sequences(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param("stop");
    let list: Vec<&Value> = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(one @ Value::String(_)) => vec![one],
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => {
            return Err(bad(format!(
                "`stop` is {}; send a string or an array of strings",
                kind(other)
            )))
        }
    };
    if list.len() > MAX_STOP_SEQUENCES {
        return Err(bad(format!(
            "`stop` has {} sequences; at most {MAX_STOP_SEQUENCES}",
            list.len()
        )));
    }
    list.into_iter()
        .map(|v| match v.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= MAX_STOP_CHARS => Ok(s.to_string()),
            Some(_) => Err(bad(format!(
                "every stop sequence must have 1 to {MAX_STOP_CHARS} characters"
            ))),
            None => Err(bad(format!(
                "a stop sequence is {}; it must be a string",
                kind(v)
            ))),
        })
        .collect()
}
