//! `POST /v1/embeddings`, OpenAI-compatible: the official clients work with
//! only their base URL changed (they ask for `base64` by default).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::inference::{embed_within_limit, encoder_for, Resolved, TokenUsage};
use super::parse::input_texts;
use super::{HttpResponse, Mode, ModelRef};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string or an array of strings (OpenAI's token-array form is refused
    /// with a message: ids of another tokenizer mean nothing to this model).
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u64>,
    /// OpenAI's end-user id; accepted (clients send it) and ignored.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum EmbeddingData {
    Float(Vec<f32>),
    /// Little-endian f32s, base64: what the OpenAI clients request by default.
    Base64(String),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Embedding {
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingData,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct EmbeddingsResponse {
    pub object: String,
    pub data: Vec<Embedding>,
    #[serde(flatten)]
    pub model: ModelRef,
    pub usage: TokenUsage,
}

fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn serve(
    call: Resolved<EmbeddingsRequest>,
    mode: Mode,
) -> Result<HttpResponse, ApiError> {
    let (body, spec, arm, mut timings) = call.into_parts();
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`encoding_format` is {other:?}; use \"float\" or \"base64\""
            ))
            .with_param("encoding_format"))
        }
    };
    let (encoder, served) = encoder_for(spec, arm, &mut timings)?;
    let spec = encoder.spec();
    if let Some(d) = body.dimensions {
        if d != encoder.dims() as u64 {
            return Err(ApiError::invalid(format!(
                "`dimensions` is {d}, but model `{}` only makes {}-dimensional embeddings \
                 (it was not trained to be shortened); omit `dimensions` or set it to {}",
                spec.id,
                encoder.dims(),
                encoder.dims()
            ))
            .with_param("dimensions"));
        }
    }
    let texts = input_texts(&body.input)?;
    let Some((tokenized, embeddings)) = embed_within_limit(encoder, &texts, &mut timings, mode)?
    else {
        return Ok(HttpResponse::validated());
    };
    let data = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| Embedding {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                EmbeddingData::Base64(base64_f32(&e))
            } else {
                EmbeddingData::Float(e)
            },
        })
        .collect();
    let response = EmbeddingsResponse {
        object: "list".into(),
        data,
        model: ModelRef::of(spec),
        usage: TokenUsage::of(&tokenized, spec),
    };
    let mut res = HttpResponse::json(200, &response);
    res.model = Some(Box::new(served.finish(&timings, &response.usage)));
    Ok(res)
}
