//! What is known of each embedded model without loading it: the types of
//! the specs build.rs generates from models/manifest.toml. Plain data: the
//! registry holds the specs and the loaded models; engines never see these.

use crate::decoder::template::{TemplateSpec, TemplateTokens};

/// What a model does; decides which routes may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    LanguageIdentification,
    SentenceEmbedding,
    SentimentAnalysis,
    Toxicity,
    TextGeneration,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::LanguageIdentification => "language-identification",
            Task::SentenceEmbedding => "sentence-embedding",
            Task::SentimentAnalysis => "sentiment-analysis",
            Task::Toxicity => "toxicity",
            Task::TextGeneration => "text-generation",
        }
    }

    /// Whether `/v1/classify` serves it (it scores labels).
    pub fn classifies(self) -> bool {
        !matches!(self, Task::SentenceEmbedding | Task::TextGeneration)
    }
}

/// Where the weights come from: a package in a public registry.
#[derive(Debug)]
pub struct Source {
    pub registry: &'static str,
    pub package: &'static str,
    pub version: &'static str,
}

/// How text becomes the model's input tensor.
#[derive(Debug)]
pub enum InputSpec {
    /// Frequencies of the listed character n-grams; `vocab[n - 1]` holds the
    /// n-grams of length n, in input order.
    CharNgrams {
        vocab: &'static [&'static [&'static str]],
        features: usize,
    },
    /// Token ids from the model's own Hugging Face `tokenizer.json`, mapped
    /// to the rows of its (possibly pruned) embedding table.
    Tokens {
        tokenizer: &'static [u8],
        /// For each token id, its table row as a little-endian u32.
        rows: &'static [u8],
        /// Longest input in tokens, special tokens included; longer inputs
        /// are truncated.
        max_tokens: usize,
        dims: usize,
    },
    /// The sentence embeddings of `MODELS[encoder]`.
    SentenceEmbedding { encoder: usize, dims: usize },
    /// scikit-learn tf-idf word counts into calibrated linear SVMs; the
    /// artifact holds the weights (see [`crate::tfidf`]).
    TfidfWords {
        /// JSON array of terms, index = column.
        vocab: &'static [u8],
        /// CPython's text tables (`\w`, `str.lower()`).
        unicode: &'static [u8],
    },
    /// A decoder language model (the artifact is its packed weights, see
    /// [`crate::decoder::format`]): the tokenizer, the context in tokens and
    /// the chat template's control tokens.
    Chat {
        tokenizer: &'static [u8],
        context: usize,
        template: TemplateTokens,
    },
    /// A decoder language model too big for one isolate, served by shard
    /// Workers (one per group of layers, chained by RPC): the artifact is
    /// its config alone (a packed part with no weights).
    ShardedChat {
        tokenizer: &'static [u8],
        context: usize,
        template: ChatMl,
        shards: &'static [ShardSpec],
    },
}

/// ChatML's control tokens and the template's default system message.
#[derive(Debug, Clone, Copy)]
pub struct ChatMl {
    pub start: u32,
    pub end: u32,
    pub default_system: &'static str,
}

impl From<TemplateTokens> for TemplateSpec {
    fn from(t: TemplateTokens) -> Self {
        TemplateSpec::Tokens(t)
    }
}

impl From<ChatMl> for TemplateSpec {
    fn from(t: ChatMl) -> Self {
        TemplateSpec::ChatMl {
            start: t.start,
            end: t.end,
            default_system: t.default_system,
        }
    }
}

/// One shard Worker of a sharded model, in chain order (pipeline/src/plan.rs).
#[derive(Debug, Clone, Copy)]
pub struct ShardSpec {
    /// The front worker's service binding to it.
    pub binding: &'static str,
    /// Its Worker script's name (wrangler.toml `name`).
    pub script: &'static str,
    /// The model's blocks it holds: `first_layer..end_layer`.
    pub first_layer: usize,
    pub end_layer: usize,
    /// Takes token ids (holds the embedding).
    pub embeds: bool,
    /// Gives logits (holds the final norm and the head).
    pub predicts: bool,
    /// A vocabulary slice (no layers): the model's token rows `a..b` of the
    /// embedding and head, and the final norm (engine/src/decoder/vocab.rs).
    pub rows: Option<(usize, usize)>,
    /// Packed weight bytes in it, and its isolate's planned memory.
    pub weights: u64,
    pub memory: u64,
}

impl ShardSpec {
    /// What it holds, for messages: `layers 0..8` or `vocabulary rows 0..30388`.
    pub fn holds(&self) -> String {
        match self.rows {
            Some((a, b)) => format!("vocabulary rows {a}..{b}"),
            None => format!("layers {}..{}", self.first_layer, self.end_layer),
        }
    }
}

/// One embedded model, as verified by build.rs.
#[derive(Debug)]
pub struct ModelSpec {
    pub id: &'static str,
    pub version: &'static str,
    pub task: Task,
    pub description: &'static str,
    pub license: &'static str,
    pub source: Source,
    pub sha256: &'static str,
    pub quantization: &'static str,
    /// What the engine reads, 16-byte aligned: the weights packed at build
    /// time from the file whose sha256 build.rs verified (a sentence
    /// encoder, a dense network, a decoder: see [`crate::packed`]), or that
    /// file byte for byte (the weights of a `TfidfWords` model).
    pub artifact: &'static [u8],
    pub labels: &'static [&'static str],
    pub input: InputSpec,
}

impl ModelSpec {
    /// `id@version`, the exact name responses report.
    pub fn qualified_name(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}
