//! A classifier: featurizer + tract plan, built once per isolate from a
//! [`ModelSpec`], then shared read-only by every request.

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::CoreError;
use crate::ngrams::NgramFeaturizer;
use crate::registry::{InputSpec, ModelSpec};

/// The scores of one input, in label order (they sum to 1).
pub type Scores = Vec<f32>;

pub struct Classifier {
    spec: &'static ModelSpec,
    featurizer: NgramFeaturizer,
    plan: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.spec.id)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Parses and optimizes the embedded graph. Costly: call once per isolate
    /// (see [`crate::registry::classifier`]).
    pub fn load(spec: &'static ModelSpec) -> Result<Self, CoreError> {
        let err = |e: TractError| CoreError::ModelLoad {
            model: spec.id,
            reason: format!("{e:#}"),
        };
        let featurizer = match &spec.input {
            InputSpec::CharNgrams { vocab, .. } => NgramFeaturizer::new(vocab),
        };
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &spec.onnx[..])
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Classifier {
            spec,
            featurizer,
            plan,
        })
    }

    pub fn spec(&self) -> &'static ModelSpec {
        self.spec
    }

    pub fn featurizer(&self) -> &NgramFeaturizer {
        &self.featurizer
    }

    /// Scores every text in one batched run of the graph.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Scores>, CoreError> {
        let width = self.featurizer.features();
        let mut batch = vec![0.0f32; texts.len() * width];
        for (text, row) in texts.iter().zip(batch.chunks_exact_mut(width)) {
            self.featurizer.featurize_into(text, row);
        }
        self.run(&batch, texts.len())
    }

    /// Runs the graph on `rows` already-featurized inputs, laid out row-major.
    pub fn run(&self, features: &[f32], rows: usize) -> Result<Vec<Scores>, CoreError> {
        let err = |e: TractError| CoreError::Inference {
            model: self.spec.id,
            reason: format!("{e:#}"),
        };
        let width = self.featurizer.features();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let input = Tensor::from_shape(&[rows, width], features).map_err(err)?;
        let outputs = self.plan.run(tvec!(input.into_tvalue())).map_err(err)?;
        let bad = |reason: String| CoreError::Inference {
            model: self.spec.id,
            reason,
        };
        let output = outputs
            .first()
            .ok_or_else(|| bad("the graph returned no output".into()))?;
        let view = output.to_plain_array_view::<f32>().map_err(err)?;
        let labels = self.spec.labels.len();
        if view.shape() != [rows, labels] {
            return Err(bad(format!(
                "output shape {:?}, expected [{rows}, {labels}]",
                view.shape()
            )));
        }
        Ok(view.rows().into_iter().map(|r| r.to_vec()).collect())
    }
}
