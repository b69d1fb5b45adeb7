//! `POST /v1/similarity`: a query and candidate texts, ranked by the cosine of
//! their embeddings — the smallest useful semantic-search primitive.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::inference::{embed_within_limit, encoder_for, Resolved, TokenUsage};
use super::limits::MAX_INPUTS;
use super::parse::input_texts;
use super::{HttpResponse, Mode, ModelRef};
use crate::encoder::cosine;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarityRequest {
    pub model: String,
    pub query: Value,
    pub documents: Value,
    /// How many of the best documents to return (default: all).
    #[serde(default)]
    pub top_k: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Match {
    pub object: String,
    /// The document's position in `documents`.
    pub index: usize,
    /// Cosine similarity of query and document, in [-1, 1].
    pub score: f32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SimilarityResponse {
    pub object: String,
    #[serde(flatten)]
    pub model: ModelRef,
    /// Best first; ties keep the documents' order.
    pub data: Vec<Match>,
    pub usage: TokenUsage,
}

pub(super) fn serve(
    call: Resolved<SimilarityRequest>,
    mode: Mode,
) -> Result<HttpResponse, ApiError> {
    let (body, spec, arm, mut timings) = call.into_parts();
    let (encoder, served) = encoder_for(spec, arm, &mut timings)?;
    let spec = encoder.spec();
    let query = match &body.query {
        Value::String(_) => input_texts(&body.query).map_err(|e| e.with_param("query"))?,
        other => {
            return Err(ApiError::invalid(format!(
                "`query` is {}; send one string",
                super::parse::kind(other)
            ))
            .with_param("query"))
        }
    };
    if !body.documents.is_array() {
        return Err(ApiError::invalid(format!(
            "`documents` is {}; send an array of strings",
            super::parse::kind(&body.documents)
        ))
        .with_param("documents"));
    }
    let documents = input_texts(&body.documents).map_err(|mut e| {
        e.message = e.message.replace("`input", "`documents");
        e.param = e.param.map(|p| p.replace("input", "documents"));
        e
    })?;
    if documents.len() >= MAX_INPUTS {
        return Err(ApiError::too_large(format!(
            "`documents` has {} texts; the limit is {} (query included, {MAX_INPUTS} texts per request)",
            documents.len(),
            MAX_INPUTS - 1
        ))
        .with_param("documents"));
    }
    let top_k = match body.top_k {
        None => documents.len(),
        Some(k) if k >= 1 => (k as usize).min(documents.len()),
        Some(k) => {
            return Err(
                ApiError::invalid(format!("`top_k` is {k}; use 1 or more")).with_param("top_k")
            )
        }
    };
    let texts: Vec<&str> = query.into_iter().chain(documents).collect();
    let Some((tokenized, embeddings)) = embed_within_limit(encoder, &texts, &mut timings, mode)?
    else {
        return Ok(HttpResponse::validated());
    };
    let (query, documents) = embeddings
        .split_first()
        .ok_or_else(|| ApiError::internal("the encoder returned no embedding for the query"))?;
    let mut data: Vec<Match> = documents
        .iter()
        .enumerate()
        .map(|(index, d)| Match {
            object: "similarity".into(),
            index,
            score: cosine(query, d),
        })
        .collect();
    data.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    data.truncate(top_k);
    let response = SimilarityResponse {
        object: "list".into(),
        model: ModelRef::of(spec),
        data,
        usage: TokenUsage::of(&tokenized, spec),
    };
    let mut res = HttpResponse::json(200, &response);
    res.model = Some(Box::new(served.finish(&timings, &response.usage)));
    Ok(res)
}
