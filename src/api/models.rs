//! `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's model object, plus what
//! a user needs to pin and audit a model (task, version, sha256, size, source).

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::registry::{self, InputSpec, ModelSpec, MODELS};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub task: String,
    pub version: String,
    pub sha256: String,
    /// Bytes of the weights that serve it: embedded in this worker, or,
    /// for a model cut across shard Workers, packed in them all (what the
    /// front embeds of it is a header).
    pub bytes: usize,
    pub license: String,
    pub source: String,
    pub quantization: String,
    pub description: String,
    pub labels: Vec<String>,
    /// Embedding size, for sentence encoders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// Longest input in tokens (longer ones are truncated), for token models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// The model whose embeddings a head reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// Context window of a language model in tokens (prompt + reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<usize>,
    /// Largest `max_tokens` a chat request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<usize>,
    /// The shard Workers a model too big for one isolate is cut across.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

/// The token limit of a token model, or of the encoder a head reads.
fn max_tokens(m: &ModelSpec) -> Option<usize> {
    match m.input {
        InputSpec::Tokens { max_tokens, .. } => Some(max_tokens),
        InputSpec::SentenceEmbedding { encoder, .. } => MODELS.get(encoder).and_then(max_tokens),
        _ => None,
    }
}

impl ModelObject {
    fn from_spec(m: &ModelSpec) -> Self {
        // The bare id names the first version listed; any other version is
        // listed (and addressed) as `id@version`, so every id is unique.
        let default = registry::find(m.id).is_ok_and(|d| std::ptr::eq(d, m));
        ModelObject {
            id: if default {
                m.id.into()
            } else {
                m.qualified_name()
            },
            object: "model".into(),
            // The weights are fixed at build time; there is no meaningful creation date.
            created: 0,
            owned_by: "edgeinfer".into(),
            task: m.task.as_str().into(),
            version: m.version.into(),
            sha256: m.sha256.into(),
            bytes: match m.input {
                InputSpec::ShardedChat { shards, .. } => {
                    shards.iter().map(|s| s.weights as usize).sum()
                }
                _ => m.artifact.len(),
            },
            license: m.license.into(),
            source: format!(
                "{}:{}@{}",
                m.source.registry, m.source.package, m.source.version
            ),
            quantization: m.quantization.into(),
            description: m.description.into(),
            labels: m.labels.iter().map(|l| l.to_string()).collect(),
            dimensions: match m.input {
                InputSpec::Tokens { dims, .. } => Some(dims),
                _ => None,
            },
            max_tokens: max_tokens(m),
            context_tokens: match m.input {
                InputSpec::Chat { context, .. } | InputSpec::ShardedChat { context, .. } => {
                    Some(context)
                }
                _ => None,
            },
            max_completion_tokens: match m.input {
                InputSpec::Chat { .. } | InputSpec::ShardedChat { .. } => {
                    Some(super::limits::MAX_TOKENS)
                }
                _ => None,
            },
            shards: match m.input {
                InputSpec::ShardedChat { shards, .. } => Some(shards.len()),
                _ => None,
            },
            encoder: match m.input {
                InputSpec::SentenceEmbedding { encoder, .. } => {
                    MODELS.get(encoder).map(|e| e.qualified_name())
                }
                _ => None,
            },
        }
    }

    pub fn find(name: &str) -> Result<Self, CoreError> {
        registry::find(name).map(Self::from_spec)
    }
}

impl ModelList {
    pub fn all() -> Self {
        ModelList {
            object: "list".into(),
            data: registry::MODELS
                .iter()
                .map(ModelObject::from_spec)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chat model says its context and its reply limit, the sharded
    /// one too, with how many shard Workers hold it.
    #[test]
    fn chat_models_say_their_context_and_a_sharded_one_its_shards() {
        for m in registry::MODELS {
            let o = ModelObject::from_spec(m);
            match m.input {
                InputSpec::Chat { context, .. } => {
                    assert_eq!(
                        (o.context_tokens, o.shards),
                        (Some(context), None),
                        "{}",
                        m.id
                    );
                }
                InputSpec::ShardedChat {
                    context, shards, ..
                } => {
                    assert!(!shards.is_empty(), "{}", m.id);
                    assert_eq!(o.context_tokens, Some(context), "{}", m.id);
                    assert_eq!(o.shards, Some(shards.len()), "{}", m.id);
                }
                _ => assert_eq!((o.context_tokens, o.shards), (None, None), "{}", m.id),
            }
            if o.context_tokens.is_some() {
                assert_eq!(
                    o.max_completion_tokens,
                    Some(super::super::limits::MAX_TOKENS)
                );
            }
        }
        let sharded = ModelObject::find("smollm2-135m-instruct").unwrap();
        assert_eq!(sharded.context_tokens, Some(1024));
    }
}
