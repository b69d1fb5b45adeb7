//! `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's model object, plus what
//! a user needs to pin and audit a model (task, version, sha256, size, source).

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::registry::{self, ModelSpec};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub task: String,
    pub version: String,
    pub sha256: String,
    /// Size of the embedded graph in bytes.
    pub bytes: usize,
    pub license: String,
    pub source: String,
    pub quantization: String,
    pub description: String,
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

impl ModelObject {
    fn from_spec(m: &ModelSpec) -> Self {
        ModelObject {
            id: m.id.into(),
            object: "model".into(),
            // The weights are fixed at build time; there is no meaningful creation date.
            created: 0,
            owned_by: "edgeinfer".into(),
            task: m.task.as_str().into(),
            version: m.version.into(),
            sha256: m.sha256.into(),
            bytes: m.artifact.len(),
            license: m.license.into(),
            source: format!(
                "{}:{}@{}",
                m.source.registry, m.source.package, m.source.version
            ),
            quantization: m.quantization.into(),
            description: m.description.into(),
            labels: m.labels.iter().map(|l| l.to_string()).collect(),
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
