//! A classifier: featurizer + a small dense network packed at build time
//! (see [`crate::dense`]), built once per isolate from a [`ModelSpec`], then
//! shared read-only by every request. The featurizer is either lande's n-gram
//! counter or a sentence encoder whose embeddings feed a small head
//! (sentiment, ...).

use crate::encoder::{SentenceEncoder, Tokenized};
use crate::error::CoreError;
use crate::spec::{InputSpec, ModelSpec};
use edgeinfer_engine::dense::Dense;
use edgeinfer_engine::ngrams::NgramFeaturizer;
use edgeinfer_engine::packed::FormatError;
use edgeinfer_engine::tfidf::TfidfModel;

/// The scores of one input, in label order (they sum to 1).
pub type Scores = Vec<f32>;

/// What turns texts into the graph's input rows.
enum Featurizer {
    Ngrams(NgramFeaturizer),
    Embeddings(&'static SentenceEncoder),
}

/// How scores are computed: a dense network over feature rows, or a linear
/// model over sparse counts.
enum Scorer {
    Graph {
        featurizer: Featurizer,
        width: usize,
        network: Dense,
    },
    Tfidf(Box<TfidfModel>),
}

pub struct Classifier {
    spec: &'static ModelSpec,
    scorer: Scorer,
}

/// Scores of a batch, with the tokens it took when the input was tokenized.
#[derive(Debug)]
pub struct Classified {
    pub scores: Vec<Scores>,
    /// Per text, for models that read tokens; empty otherwise.
    pub tokenized: Vec<Tokenized>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.spec.id)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Reads the packed network's header (its weights are used in place).
    /// Once per isolate (see [`crate::registry::classifier`]). A head on
    /// sentence embeddings is given its (loaded) encoder: the registry
    /// resolves models, this module never looks one up.
    pub fn load(
        spec: &'static ModelSpec,
        encoder: Option<&'static SentenceEncoder>,
    ) -> Result<Self, CoreError> {
        let err = |reason: FormatError| CoreError::ModelLoad {
            model: spec.id,
            reason: reason.to_string(),
        };
        let (featurizer, width) = match spec.input {
            InputSpec::CharNgrams { vocab, features } => {
                (Featurizer::Ngrams(NgramFeaturizer::new(vocab)), features)
            }
            InputSpec::SentenceEmbedding { dims, .. } => {
                let encoder = encoder
                    .ok_or_else(|| err("a head on sentence embeddings needs its encoder".into()))?;
                (Featurizer::Embeddings(encoder), dims)
            }
            InputSpec::TfidfWords { vocab, unicode } => {
                let model = TfidfModel::load(spec.artifact, vocab, unicode).map_err(err)?;
                return Ok(Classifier {
                    spec,
                    scorer: Scorer::Tfidf(Box::new(model)),
                });
            }
            InputSpec::Tokens { .. } | InputSpec::Chat { .. } | InputSpec::ShardedChat { .. } => {
                return Err(CoreError::ModelLoad {
                    model: spec.id,
                    reason: "a sentence encoder or a language model is not a classifier".into(),
                })
            }
        };
        let network = Dense::parse(spec.artifact).map_err(err)?;
        if network.inputs() != width || network.outputs() != spec.labels.len() {
            return Err(err(FormatError(format!(
                "the network maps {} features to {} scores; the manifest says {width} and {} labels",
                network.inputs(),
                network.outputs(),
                spec.labels.len()
            ))));
        }
        Ok(Classifier {
            spec,
            scorer: Scorer::Graph {
                featurizer,
                width,
                network,
            },
        })
    }

    pub fn spec(&self) -> &'static ModelSpec {
        self.spec
    }

    /// The n-gram featurizer, for models that count n-grams.
    pub fn ngrams(&self) -> Option<&NgramFeaturizer> {
        match &self.scorer {
            Scorer::Graph {
                featurizer: Featurizer::Ngrams(f),
                ..
            } => Some(f),
            _ => None,
        }
    }

    /// The sentence encoder, for heads on embeddings (the API tokenizes first
    /// to enforce its token limit, then calls [`Self::classify_tokenized`]).
    pub fn encoder(&self) -> Option<&'static SentenceEncoder> {
        match &self.scorer {
            Scorer::Graph {
                featurizer: Featurizer::Embeddings(e),
                ..
            } => Some(e),
            _ => None,
        }
    }

    /// Scores already tokenized texts (heads on embeddings only).
    pub fn classify_tokenized(&self, tokenized: Vec<Tokenized>) -> Result<Classified, CoreError> {
        let encoder = self.encoder().ok_or_else(|| CoreError::Inference {
            model: self.spec.id,
            reason: "this model does not read tokens".into(),
        })?;
        let embeddings = encoder.embed(&tokenized)?;
        Ok(Classified {
            scores: self.run(&embeddings.concat(), tokenized.len())?,
            tokenized,
        })
    }

    /// The tf-idf model, for models that are one.
    pub fn tfidf(&self) -> Option<&TfidfModel> {
        match &self.scorer {
            Scorer::Tfidf(m) => Some(m),
            Scorer::Graph { .. } => None,
        }
    }

    /// Scores every text.
    pub fn classify(&self, texts: &[&str]) -> Result<Classified, CoreError> {
        let (featurizer, width) = match &self.scorer {
            Scorer::Tfidf(model) => {
                let scores = texts
                    .iter()
                    .map(|t| {
                        let p = model.probability(t);
                        vec![(1.0 - p) as f32, p as f32]
                    })
                    .collect();
                return Ok(Classified {
                    scores,
                    tokenized: Vec::new(),
                });
            }
            Scorer::Graph {
                featurizer, width, ..
            } => (featurizer, *width),
        };
        match featurizer {
            Featurizer::Ngrams(featurizer) => {
                let mut batch = vec![0.0f32; texts.len() * width];
                for (text, row) in texts.iter().zip(batch.chunks_exact_mut(width)) {
                    featurizer.featurize_into(text, row);
                }
                Ok(Classified {
                    scores: self.run(&batch, texts.len())?,
                    tokenized: Vec::new(),
                })
            }
            Featurizer::Embeddings(encoder) => self.classify_tokenized(encoder.tokenize(texts)?),
        }
    }

    /// Runs the network on `rows` already-featurized inputs, laid out row-major.
    pub fn run(&self, features: &[f32], rows: usize) -> Result<Vec<Scores>, CoreError> {
        let Scorer::Graph { width, network, .. } = &self.scorer else {
            return Err(CoreError::Inference {
                model: self.spec.id,
                reason: "a tf-idf model has no graph to run".into(),
            });
        };
        if rows == 0 {
            return Ok(Vec::new());
        }
        if features.len() != rows * width {
            return Err(CoreError::Inference {
                model: self.spec.id,
                reason: format!("{} features for {rows} rows of {width}", features.len()),
            });
        }
        network
            .run(features)
            .map_err(|reason| CoreError::Inference {
                model: self.spec.id,
                reason: reason.to_string(),
            })
    }
}
