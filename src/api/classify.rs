//! `POST /v1/classify`: labels with scores for one text or a batch.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::limits::{DEFAULT_TOP_K, MAX_INPUTS, MAX_INPUT_CHARS};
use super::parse::json_body;
use super::{HttpRequest, HttpResponse};
use crate::error::CoreError;
use crate::registry::{self, Task};

#[derive(Debug, Deserialize)]
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
pub struct Usage {
    pub inputs: usize,
    /// Unicode scalar values across all inputs.
    pub characters: usize,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifyResponse {
    pub object: String,
    pub model: String,
    pub model_version: String,
    pub model_sha256: String,
    pub data: Vec<Classification>,
    pub usage: Usage,
}

/// The texts of `input`, validated against the limits.
fn texts(input: &Value) -> Result<Vec<&str>, ApiError> {
    let texts: Vec<&str> = match input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(
                    ApiError::invalid("`input` is an empty array; send at least one text")
                        .with_param("input"),
                );
            }
            if items.len() > MAX_INPUTS {
                return Err(ApiError::too_large(format!(
                    "`input` has {} texts; the limit is {MAX_INPUTS} per request",
                    items.len()
                ))
                .with_param("input"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        ApiError::invalid(format!(
                            "`input[{i}]` is {}; every item must be a string",
                            kind(v)
                        ))
                        .with_param(format!("input[{i}]"))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        other => {
            return Err(ApiError::invalid(format!(
                "`input` is {}; send a string or an array of strings",
                kind(other)
            ))
            .with_param("input"))
        }
    };
    for (i, text) in texts.iter().enumerate() {
        let param = if matches!(input, Value::Array(_)) {
            format!("input[{i}]")
        } else {
            "input".to_string()
        };
        if text.trim().is_empty() {
            return Err(
                ApiError::invalid(format!("`{param}` is empty; send some text")).with_param(param),
            );
        }
        let chars = text.chars().count();
        if chars > MAX_INPUT_CHARS {
            return Err(ApiError::too_large(format!(
                "`{param}` has {chars} characters; the limit is {MAX_INPUT_CHARS}"
            ))
            .with_param(param));
        }
    }
    Ok(texts)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn serve(req: &HttpRequest<'_>) -> Result<HttpResponse, ApiError> {
    let body: ClassifyRequest = json_body(req)?;
    let spec = registry::find(&body.model)?;
    if spec.task != Task::LanguageIdentification {
        return Err(CoreError::WrongTask {
            model: body.model.clone(),
            task: spec.task.as_str(),
            wanted: "classification",
        }
        .into());
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
    let texts = texts(&body.input)?;
    let (classifier, loaded_now) = registry::classifier(spec)?;
    let scores = classifier.classify(&texts)?;
    let data = scores
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
    let response = ClassifyResponse {
        object: "list".into(),
        model: spec.id.into(),
        model_version: spec.version.into(),
        model_sha256: spec.sha256.into(),
        data,
        usage: Usage {
            inputs: texts.len(),
            characters: texts.iter().map(|t| t.chars().count()).sum(),
        },
    };
    let mut res = HttpResponse::json(200, &response);
    res.model = Some(spec.qualified_name());
    res.model_loaded = loaded_now;
    Ok(res)
}
