//! `POST /v1/classify`: labels with scores for one text or a batch.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::inference::{tokenize_within_limit, truncated_inputs, Resolved};
use super::limits::DEFAULT_TOP_K;
use super::parse::input_texts;
use super::timing::{self, Work};
use super::{HttpResponse, Mode, ModelRef, Served};
use crate::registry;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// `id` or `id@version`, as listed by `GET /v1/models`.
    pub model: String,
    /// A string or an array of strings; checked by [`texts`] for clear errors.
    pub input: Value,
    pub top_k: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Classification {
    pub object: String,
    pub index: usize,
    /// The best label and its score (the first of `labels`).
    pub label: String,
    pub score: f32,
    /// The `top_k` best labels, best first.
    pub labels: Vec<LabelScore>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifyUsage {
    pub inputs: usize,
    /// Unicode scalar values across all inputs.
    pub characters: usize,
    /// Tokens fed to the model, for models that read tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<usize>,
    /// Indices of the inputs cut to the model's token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_inputs: Option<Vec<usize>>,
    /// Estimated CPU ms of the model work in the worker (see api::timing).
    pub cpu_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifyResponse {
    pub object: String,
    #[serde(flatten)]
    pub model: ModelRef,
    pub data: Vec<Classification>,
    pub usage: ClassifyUsage,
}

pub(super) fn serve(call: Resolved<ClassifyRequest>, mode: Mode) -> Result<HttpResponse, ApiError> {
    let (body, spec, arm, mut timings) = call.into_parts();
    if !spec.task.classifies() {
        return Err(registry::wrong_task(spec, "classification").into());
    }
    let labels = spec.labels.len();
    let top_k = match body.top_k {
        None => DEFAULT_TOP_K.min(labels),
        Some(k) if k >= 1 && k <= labels as u64 => k as usize,
        Some(k) => {
            return Err(ApiError::invalid(format!(
                "`top_k` is {k}; model `{}` has {labels} labels, so use 1 to {labels}",
                spec.id
            ))
            .with_param("top_k"))
        }
    };
    let texts = input_texts(&body.input)?;
    timings.lap("parse");
    let (classifier, loaded_now) = registry::classifier(spec)?;
    timings.lap_if(loaded_now, "init");
    let classified = match classifier.encoder() {
        Some(encoder) => {
            let tokenized = tokenize_within_limit(encoder, &texts)?;
            timings.lap("tokenize");
            if mode == Mode::Validate {
                return Ok(HttpResponse::validated());
            }
            classifier.classify_tokenized(tokenized)?
        }
        None if mode == Mode::Validate => return Ok(HttpResponse::validated()),
        None => classifier.classify(&texts)?,
    };
    timings.lap("inference");
    let tokens = (!classified.tokenized.is_empty()).then(|| {
        let t = &classified.tokenized;
        (t.iter().map(|t| t.ids.len()).sum(), truncated_inputs(t))
    });
    let data = classified
        .scores
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let mut ranked: Vec<(usize, f32)> = row.into_iter().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let labels: Vec<LabelScore> = ranked
                .iter()
                .take(top_k)
                .map(|&(i, score)| LabelScore {
                    label: spec.labels[i].to_string(),
                    score,
                })
                .collect();
            let (label, score) = labels
                .first()
                .map(|l| (l.label.clone(), l.score))
                .unwrap_or_default();
            Classification {
                object: "classification".into(),
                index,
                label,
                score,
                labels,
            }
        })
        .collect();
    let characters = texts.iter().map(|t| t.chars().count()).sum();
    let work = Work {
        inputs: texts.len(),
        characters,
        tokens: tokens.as_ref().map_or(0, |t| t.0),
        generated: 0,
    };
    let cpu_ms = timing::estimate_cpu_ms(spec, &work);
    let response = ClassifyResponse {
        object: "list".into(),
        model: ModelRef::of(spec),
        data,
        usage: ClassifyUsage {
            inputs: texts.len(),
            characters,
            prompt_tokens: tokens.as_ref().map(|t| t.0),
            truncated_inputs: tokens.map(|t| t.1),
            cpu_ms,
        },
    };
    let mut res = HttpResponse::json(200, &response);
    res.model = Some(Box::new(Served {
        arm,
        timings: timings.phases().to_vec(),
        tokens: response.usage.prompt_tokens,
        cpu_ms: Some(cpu_ms),
        ..Served::new(spec, loaded_now)
    }));
    Ok(res)
}
