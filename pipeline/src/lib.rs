//! The build-time pipeline: checks of `models/manifest.toml` and the files
//! it names, the packers that turn each model file into the engine's packed
//! form, and the planner that cuts a decoder too big for one isolate across
//! shard Workers. One crate, used by build.rs (which refuses to build on any
//! failure), the shard Workers' build (`cargo run -p edgeinfer-pipeline
//! --bin shards`), the tests (which prove each failure is caught and
//! explained) and the bench.
//!
//! Every error names the model and says how to fix it, because the person who
//! sees it is usually adding or updating a model, not debugging build.rs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

// The container every packed model is written in (the engine's own).
pub use edgeinfer_engine::packed;

// The runtime's own loader, so the build refuses what the worker could not load.
use edgeinfer_engine::tfidf::TfidfModel;

// The ONNX messages the packers read.
#[cfg(feature = "front")]
pub mod onnx;

// The sentence encoder's weights, packed for the worker.
#[cfg(feature = "front")]
pub mod pack_bert;

// The small dense networks (lande, heads on embeddings), packed likewise.
#[cfg(feature = "front")]
pub mod pack_dense;

// Llama-family decoders (the chat models), packed for the decoder engine.
#[cfg(feature = "front")]
pub mod pack_llama;

// Llama-architecture GGUF files (the instruct model), packed likewise.
pub mod pack_gguf;

// A GGUF file's vocabulary as a tokenizer.json.
pub mod gguf_tokenizer;

// How a decoder too big for one isolate is cut across Workers.
pub mod plan;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub version: String,
    pub task: String,
    pub description: String,
    pub license: String,
    pub source: Source,
    pub export: String,
    pub artifact: String,
    pub sha256: String,
    pub quantization: String,
    pub labels: Vec<String>,
    /// Empty for a GGUF chat model added with scripts/add-model: its
    /// reference is the file itself (golden tests compare against it).
    #[serde(default)]
    pub golden: String,
    #[serde(default)]
    pub golden_sha256: String,
    pub input: InputEntry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub registry: String,
    pub package: String,
    pub version: String,
}

/// How text becomes the graph's input; `kind` selects the variant.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InputEntry {
    /// lande: the frequencies of a fixed list of character n-grams.
    CharNgramFrequencies {
        vocab: String,
        vocab_sha256: String,
        features: usize,
    },
    /// A transformer fed with token ids from the model's own Hugging Face
    /// `tokenizer.json`. The graph's token-embedding table may be pruned: row
    /// `i` holds the token `vocab_keep[i]`, and every dropped token is fed as
    /// `unk_token`.
    Tokens {
        tokenizer: String,
        tokenizer_sha256: String,
        vocab_keep: String,
        vocab_keep_sha256: String,
        unk_token: String,
        max_tokens: usize,
        dims: usize,
    },
    /// A head on the sentence embeddings of another model of the manifest.
    SentenceEmbedding { encoder: String },
    /// scikit-learn's TfidfVectorizer words into calibrated linear SVMs (the
    /// artifact is their weights, not a graph): alt-profanity-check.
    TfidfWords {
        vocab: String,
        vocab_sha256: String,
        unicode: String,
        unicode_sha256: String,
    },
    /// A causal language model graph with a key/value cache (interface in
    /// models/tinylm/README.md), its tokenizer and its chat template's
    /// control tokens.
    ChatTokens {
        tokenizer: String,
        tokenizer_sha256: String,
        context: usize,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        vocab: usize,
        template: TemplateEntry,
    },
    /// A Llama-architecture GGUF too big for one isolate, cut by layers
    /// across shard Workers (pipeline/src/plan.rs, scripts/build-shards). The
    /// artifact is in the models cache ([`models_cache`]), not in git; the
    /// front worker embeds the tokenizer and the ChatML template only.
    GgufChat {
        /// Empty (a model added with scripts/add-model): the tokenizer is
        /// the GGUF's own vocabulary and merges ([`gguf_tokenizer`]).
        #[serde(default)]
        tokenizer: String,
        #[serde(default)]
        tokenizer_sha256: String,
        /// The longest sequence (prompt + reply) served: what the shards'
        /// key/value caches are budgeted for.
        context: usize,
        /// The system message the model's template adds when none is given.
        default_system: String,
        template: ChatMlEntry,
        shards: ShardBudget,
    },
}

/// ChatML's control tokens: `start` role `\n` content `end` `\n`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMlEntry {
    pub start: String,
    pub end: String,
}

/// The per-isolate budget the shards are planned against (plan::Budget).
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct ShardBudget {
    pub isolate_mib: u64,
    pub worker_mib: u64,
    /// The shard module and its entry, measured (scripts/bench).
    pub code_kib: u64,
    /// An isolate's own memory before the weights, measured.
    pub runtime_mib: u64,
    /// Generations one shard isolate holds at once.
    pub sessions: usize,
}

/// The control tokens of the chat template, as strings of the tokenizer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateEntry {
    pub bos: String,
    pub eos: String,
    pub end: String,
    pub system: String,
    pub user: String,
    pub assistant: String,
}

impl TemplateEntry {
    fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("bos", &self.bos),
            ("eos", &self.eos),
            ("end", &self.end),
            ("system", &self.system),
            ("user", &self.user),
            ("assistant", &self.assistant),
        ]
    }
}

impl InputEntry {
    /// The files this input reads, with their sha256, relative to `models/`.
    pub fn files(&self) -> Vec<(&str, &str)> {
        match self {
            InputEntry::CharNgramFrequencies {
                vocab,
                vocab_sha256,
                ..
            } => vec![(vocab, vocab_sha256)],
            InputEntry::Tokens {
                tokenizer,
                tokenizer_sha256,
                vocab_keep,
                vocab_keep_sha256,
                ..
            } => vec![
                (tokenizer, tokenizer_sha256),
                (vocab_keep, vocab_keep_sha256),
            ],
            InputEntry::SentenceEmbedding { .. } => Vec::new(),
            InputEntry::TfidfWords {
                vocab,
                vocab_sha256,
                unicode,
                unicode_sha256,
            } => vec![(vocab, vocab_sha256), (unicode, unicode_sha256)],
            InputEntry::ChatTokens {
                tokenizer,
                tokenizer_sha256,
                ..
            } => vec![(tokenizer, tokenizer_sha256)],
            InputEntry::GgufChat {
                tokenizer,
                tokenizer_sha256,
                ..
            } => match tokenizer.is_empty() {
                true => Vec::new(),
                false => vec![(tokenizer, tokenizer_sha256)],
            },
        }
    }
}

/// Where model files that are not in git are kept (the GGUF of a sharded
/// model, fetched from its package by its export script):
/// `EDGEINFER_MODELS`, else the user's cache, `edgeinfer/models`.
pub fn models_cache() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("EDGEINFER_MODELS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("edgeinfer/models")
}

/// The shard plan of a sharded model: which layers each shard Worker holds,
/// and, when the embedding or head fits no isolate beside a layer, which
/// rows of the vocabulary each slice Worker holds (none otherwise: the
/// first layer shard embeds, the last predicts). build.rs (the front
/// worker's bindings) and scripts/build-shards (the shard Workers) both
/// call this, so the two always agree.
pub fn shard_plan(m: &ModelEntry, gguf: &pack_gguf::Gguf) -> Result<plan::SplitPlan, CheckError> {
    let InputEntry::GgufChat {
        context, shards, ..
    } = &m.input
    else {
        return err(
            &m.id,
            "not a sharded model",
            "use input.kind = \"gguf-chat\"",
        );
    };
    const MIB: u64 = 1 << 20;
    let budget = plan::Budget {
        isolate_bytes: shards.isolate_mib * MIB,
        worker_bytes: shards.worker_mib * MIB,
        code_bytes: shards.code_kib * 1024,
        runtime_bytes: shards.runtime_mib * MIB,
        context: *context,
        sessions: shards.sessions,
    };
    let fix = "raise the budget in [model.input.shards], or lower input.context";
    let costs = gguf.costs().map_err(|e| CheckError {
        model: m.id.clone(),
        what: e,
        fix: fix.into(),
    })?;
    let vocab = gguf
        .config()
        .map_err(|e| CheckError {
            model: m.id.clone(),
            what: e,
            fix: fix.into(),
        })?
        .vocab;
    match plan::plan(&costs, &budget) {
        Ok(layers) => Ok(plan::SplitPlan {
            vocab: Vec::new(),
            layers,
        }),
        Err(whole) => plan::plan_split(&costs, &budget, vocab).map_err(|split| CheckError {
            model: m.id.clone(),
            what: format!("no shard plan: {whole}; with the vocabulary cut apart: {split}"),
            fix: fix.into(),
        }),
    }
}

/// The system message a ChatML chat template writes when a chat has none:
/// the first `<|im_start|>system` block whose text is a literal up to its
/// `<|im_end|>` (SmolLM2's and Qwen2.5's templates write one there), or
/// none. scripts/add-model's default for `default_system`; the served
/// rendering is the manifest's ChatML, so this is what makes the two agree.
pub fn chatml_default_system(template: &str) -> Option<String> {
    for opening in ["<|im_start|>system\\n", "<|im_start|>system\n"] {
        let mut rest = template;
        while let Some(at) = rest.find(opening) {
            rest = &rest[at + opening.len()..];
            let Some(end) = rest.find("<|im_end|>") else {
                break;
            };
            let text = &rest[..end];
            // A literal, not an expression of the messages.
            if !text.is_empty() && !text.contains(['{', '}', '\'', '"', '+']) {
                return Some(text.replace("\\n", "\n"));
            }
        }
    }
    None
}

/// The binding and script name of vocabulary slice `i` of model `id`:
/// [`shard_names`] with a `V` before the index (`QWEN_V0`, `edgeinfer-qwen-v0`).
pub fn slice_names(id: &str, i: usize) -> (String, String) {
    let (binding, script) = shard_names(id, 0);
    let (binding, script) = (
        binding.strip_suffix("_0").unwrap_or(&binding).to_string(),
        script.strip_suffix("-0").unwrap_or(&script).to_string(),
    );
    (format!("{binding}_V{i}"), format!("{script}-v{i}"))
}

/// The Worker binding (front worker) and script name of shard `i` of model
/// `id`: `SMOLLM2_135M_INSTRUCT_0`, `edgeinfer-smollm2-135m-instruct-0`.
pub fn shard_names(id: &str, i: usize) -> (String, String) {
    // ASCII letters and digits kept (in `case`), anything else `other`.
    let spell = |case: fn(&char) -> char, other: char| -> String {
        id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    case(&c)
                } else {
                    other
                }
            })
            .collect()
    };
    let binding = spell(char::to_ascii_uppercase, '_');
    let script = spell(char::to_ascii_lowercase, '-');
    (format!("{binding}_{i}"), format!("edgeinfer-{script}-{i}"))
}

/// The n-gram vocabulary file written by `models/lande/export.mjs`.
#[derive(Deserialize)]
struct NgramVocab {
    order: Vec<String>,
    langs: Vec<String>,
    #[serde(flatten)]
    lists: HashMap<String, serde_json::Value>,
}

/// Tasks the runtime can serve, with the `registry::Task` variant of each.
pub const TASKS: &[(&str, &str)] = &[
    ("language-identification", "LanguageIdentification"),
    ("sentence-embedding", "SentenceEmbedding"),
    ("sentiment-analysis", "SentimentAnalysis"),
    ("toxicity", "Toxicity"),
    ("text-generation", "TextGeneration"),
];

/// The one task that generates text (input kind `chat-tokens`, no labels).
pub const GENERATION_TASK: &str = "text-generation";

/// The one task whose output is an embedding rather than label scores.
pub const EMBEDDING_TASK: &str = "sentence-embedding";

/// A model that cannot be embedded: what is wrong and how to fix it.
#[derive(Debug)]
pub struct CheckError {
    pub model: String,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model `{}`: {}\n  fix: {}",
            self.model, self.what, self.fix
        )
    }
}

fn err<T>(model: &str, what: impl Into<String>, fix: impl Into<String>) -> Result<T, CheckError> {
    Err(CheckError {
        model: model.to_string(),
        what: what.into(),
        fix: fix.into(),
    })
}

/// A model that passed every check, with the bytes to embed.
#[derive(Debug)]
pub struct Checked {
    /// The model file: an ONNX graph, or the weights of a tf-idf model
    /// (build.rs embeds `embedded`; tests/manifest.rs compares the two).
    #[allow(dead_code)]
    pub artifact: Vec<u8>,
    /// What the worker embeds: the artifact itself, or the weights packed
    /// from the graph (`pack_bert` for a sentence encoder, `pack_dense` for
    /// lande and the heads on embeddings).
    pub embedded: Vec<u8>,
    /// The `registry::Task` variant name.
    pub task_variant: &'static str,
    pub input: CheckedInput,
}

/// The verified input side of a model, in the form build.rs embeds.
#[derive(Debug)]
pub enum CheckedInput {
    /// `vocab[n - 1]`: the n-grams of length n, in input order.
    Ngrams {
        vocab: Vec<Vec<String>>,
    },
    Tokens {
        tokenizer: Vec<u8>,
        /// For every token id of the tokenizer, its row in the graph's table.
        rows: Vec<u32>,
        max_tokens: usize,
        dims: usize,
    },
    /// The index in the manifest of the encoder this head reads.
    SentenceEmbedding {
        encoder: usize,
        dims: usize,
    },
    TfidfWords {
        vocab: Vec<u8>,
        unicode: Vec<u8>,
    },
    Chat {
        tokenizer: Vec<u8>,
        /// The packed decoder (engine/src/decoder/format.rs).
        packed: Vec<u8>,
        context: usize,
        /// Ids of bos, eos, end, system, user, assistant.
        template: [u32; 6],
    },
    /// A model served by shard Workers: the front embeds its tokenizer, its
    /// config (a packed part with no weights) and the plan.
    ShardedChat {
        tokenizer: Vec<u8>,
        /// A packed part of no layers and no weights: the model's config.
        packed: Vec<u8>,
        context: usize,
        /// Ids of ChatML's start and end tokens.
        template: [u32; 2],
        default_system: String,
        shards: plan::SplitPlan,
    },
}

/// The manifest of the models a user added (scripts/add-model), beside
/// models/manifest.toml and in its format; not in git.
pub const LOCAL_MANIFEST: &str = "local.toml";

/// models/manifest.toml and, when there is one, models/local.toml after it,
/// checked as one list.
pub fn read_manifests(models_dir: &Path) -> Result<Manifest, CheckError> {
    let read = |name: &str| {
        std::fs::read_to_string(models_dir.join(name)).map_err(|e| CheckError {
            model: "-".into(),
            what: format!("cannot read models/{name}: {e}"),
            fix: "restore models/manifest.toml from git".into(),
        })
    };
    let mut text = read("manifest.toml")?;
    if models_dir.join(LOCAL_MANIFEST).exists() {
        text.push('\n');
        text.push_str(&read(LOCAL_MANIFEST)?);
    }
    parse_manifest(&text)
}

pub fn parse_manifest(text: &str) -> Result<Manifest, CheckError> {
    let manifest: Manifest = match toml::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return err(
                "-",
                format!("models/manifest.toml is invalid: {e}"),
                "fix the manifest (see README, Adding a model)",
            )
        }
    };
    if manifest.model.is_empty() {
        return err(
            "-",
            "models/manifest.toml lists no model",
            "add a [[model]] entry",
        );
    }
    let mut ids = HashSet::new();
    // Shard Workers are named after their model's id, spelled for bindings
    // and scripts: two ids spelled alike would share Workers.
    let mut spelled: HashMap<String, &str> = HashMap::new();
    for m in &manifest.model {
        if matches!(m.input, InputEntry::GgufChat { .. }) {
            let (binding, _) = shard_names(&m.id, 0);
            if let Some(other) = spelled.insert(binding.clone(), &m.id) {
                if other != m.id {
                    return err(
                        &m.id,
                        format!("its shard Workers would be named as model `{other}`'s ({binding})"),
                        "give it an id that differs in letters or digits (scripts/add-model --id NAME)",
                    );
                }
            }
        }
    }
    for m in &manifest.model {
        if m.id.is_empty()
            || !m
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return err(
                &m.id,
                "model ids may only use ASCII letters, digits, '-', '_' and '.'",
                "rename the model",
            );
        }
        // Versions of one id may sit side by side (an A/B variant); the
        // first listed is what the bare id resolves to.
        if !ids.insert((m.id.as_str(), m.version.as_str())) {
            return err(
                &m.id,
                format!(
                    "version {} appears twice in models/manifest.toml",
                    m.version
                ),
                "give each version of a model its own version string",
            );
        }
    }
    Ok(manifest)
}

/// Runs every check on one model; `models_dir` is the `models/` directory and
/// `all` the whole manifest (a head names the encoder it reads).
pub fn check_model(
    models_dir: &Path,
    all: &[ModelEntry],
    m: &ModelEntry,
) -> Result<Checked, CheckError> {
    let Some(&(_, task_variant)) = TASKS.iter().find(|(name, _)| *name == m.task) else {
        let known: Vec<&str> = TASKS.iter().map(|(n, _)| *n).collect();
        return err(
            &m.id,
            format!("unsupported task {:?}", m.task),
            format!("use one of: {}", known.join(", ")),
        );
    };
    let embeds = m.task == EMBEDDING_TASK;
    let generates = m.task == GENERATION_TASK;
    let labelled = !embeds && !generates;
    if embeds != matches!(m.input, InputEntry::Tokens { .. })
        || generates
            != matches!(
                m.input,
                InputEntry::ChatTokens { .. } | InputEntry::GgufChat { .. }
            )
        || labelled == m.labels.is_empty()
    {
        return err(
            &m.id,
            format!(
                "task {:?} does not fit input kind {:?} with {} labels",
                m.task,
                input_kind(&m.input),
                m.labels.len()
            ),
            "a sentence-embedding model has input.kind = \"tokens\" and no labels; \
             a text-generation model has input.kind = \"chat-tokens\" and no labels; \
             a classifier has labels and another input kind",
        );
    }
    let sharded = matches!(m.input, InputEntry::GgufChat { .. });
    let artifact = if sharded {
        verified_in(
            &models_cache(),
            "the models cache",
            m,
            &m.artifact,
            &m.sha256,
        )?
    } else {
        verified(models_dir, m, &m.artifact, &m.sha256)?
    };
    if !(sharded && m.golden.is_empty()) {
        verified(models_dir, m, &m.golden, &m.golden_sha256)?;
    }
    let mut files = Vec::new();
    for (rel, sha) in m.input.files() {
        files.push(verified(models_dir, m, rel, sha)?);
    }
    let input = match &m.input {
        InputEntry::CharNgramFrequencies {
            vocab, features, ..
        } => CheckedInput::Ngrams {
            vocab: ngram_vocab(m, vocab, *features, &files[0])?,
        },
        InputEntry::Tokens {
            tokenizer,
            unk_token,
            max_tokens,
            dims,
            ..
        } => CheckedInput::Tokens {
            rows: token_rows(m, tokenizer, unk_token, &files[0], &files[1])?,
            tokenizer: files.swap_remove(0),
            max_tokens: *max_tokens,
            dims: *dims,
        },
        InputEntry::SentenceEmbedding { encoder } => {
            let index = all.iter().position(|e| e.id == *encoder);
            match (index, index.map(|i| &all[i].input)) {
                (Some(index), Some(InputEntry::Tokens { dims, .. })) => {
                    CheckedInput::SentenceEmbedding {
                        encoder: index,
                        dims: *dims,
                    }
                }
                _ => {
                    return err(
                        &m.id,
                        format!(
                            "input.encoder {encoder:?} is not a sentence-embedding model of the manifest"
                        ),
                        "name the id of a [[model]] with task = \"sentence-embedding\"",
                    )
                }
            }
        }
        InputEntry::TfidfWords { .. } => {
            let unicode = files.pop().unwrap_or_default();
            let vocab = files.pop().unwrap_or_default();
            check_tfidf(m, &artifact, &vocab, &unicode)?;
            CheckedInput::TfidfWords { vocab, unicode }
        }
        InputEntry::ChatTokens {
            tokenizer,
            context,
            layers,
            kv_heads,
            head_dim,
            vocab,
            template,
            ..
        } => {
            let ids = chat_tokens(m, tokenizer, &files[0], *vocab, template)?;
            let stated = [*context, *layers, *kv_heads, *head_dim, *vocab];
            let packed = pack_chat_model(m, &artifact, stated)?;
            CheckedInput::Chat {
                tokenizer: files.swap_remove(0),
                packed,
                context: *context,
                template: ids,
            }
        }
        InputEntry::GgufChat {
            tokenizer,
            context,
            default_system,
            template,
            ..
        } => sharded_chat(
            m,
            tokenizer,
            files.pop(),
            *context,
            default_system,
            template,
            &artifact,
        )?,
    };
    let embedded = match input {
        CheckedInput::Chat { ref packed, .. } | CheckedInput::ShardedChat { ref packed, .. } => {
            packed.clone()
        }
        CheckedInput::TfidfWords { .. } => artifact.clone(),
        CheckedInput::Tokens { .. }
        | CheckedInput::Ngrams { .. }
        | CheckedInput::SentenceEmbedding { .. } => pack_graph(m, &input, &artifact)?,
    };
    Ok(Checked {
        artifact,
        embedded,
        task_variant,
        input,
    })
}

fn input_kind(input: &InputEntry) -> &'static str {
    match input {
        InputEntry::CharNgramFrequencies { .. } => "char-ngram-frequencies",
        InputEntry::Tokens { .. } => "tokens",
        InputEntry::SentenceEmbedding { .. } => "sentence-embedding",
        InputEntry::TfidfWords { .. } => "tfidf-words",
        InputEntry::ChatTokens { .. } => "chat-tokens",
        InputEntry::GgufChat { .. } => "gguf-chat",
    }
}

/// Checks a sharded model: the GGUF is a decoder the engine runs whole
/// (every tensor matched), a plan exists for the budget, the tokenizer
/// fits the vocabulary and names the template's tokens; the front embeds
/// the config alone.
fn sharded_chat(
    m: &ModelEntry,
    path: &str,
    tokenizer_json: Option<Vec<u8>>,
    context: usize,
    default_system: &str,
    template: &ChatMlEntry,
    gguf_bytes: &[u8],
) -> Result<CheckedInput, CheckError> {
    let fail = |what: String| {
        CheckError {
        model: m.id.clone(),
        what,
        fix: format!(
            "use a Llama-architecture GGUF ({}), or extend pipeline/src/pack_gguf.rs and engine/src/decoder",
            m.export
        ),
    }
    };
    let gguf = pack_gguf::Gguf::parse(gguf_bytes).map_err(|e| fail(e.to_string()))?;
    let layers = gguf.layers().map_err(&fail)?;
    let config_only = edgeinfer_engine::decoder::format::Part {
        model_layers: layers,
        first_layer: 0,
        end_layer: 0,
        embeds: false,
        predicts: false,
    };
    let packed = gguf
        .pack_part(pack_gguf::Storage::AsStored, config_only, context)
        .map_err(&fail)?;
    let shards = shard_plan(m, &gguf)?;
    // No tokenizer file: the GGUF's own vocabulary, merges and pre-tokenizer.
    let (tokenizer_json, path) = match tokenizer_json {
        Some(json) => (json, format!("models/{path}")),
        None => (
            gguf_tokenizer::Vocabulary::of(&gguf)
                .and_then(|v| v.tokenizer_json())
                .map_err(|e| fail(format!("the GGUF's tokenizer: {e}")))?
                .into_bytes(),
            "the GGUF's tokenizer".to_string(),
        ),
    };
    let tokenizer = Vocabulary::load(&tokenizer_json)
        .map_err(|e| fail(format!("{path} does not load: {e}")))?;
    let size = tokenizer.size();
    if size > packed.config.vocab {
        return Err(fail(format!(
            "{path} has {size} tokens, the model's vocabulary {}",
            packed.config.vocab
        )));
    }
    let mut ids = [0u32; 2];
    for (slot, (name, token)) in ids
        .iter_mut()
        .zip([("start", &template.start), ("end", &template.end)])
    {
        *slot = tokenizer.id(token).ok_or_else(|| CheckError {
            model: m.id.clone(),
            what: format!("input.template.{name} = {token:?} is not a token of {path}"),
            fix: "name the tokenizer's own ChatML tokens in [model.input.template]".into(),
        })?;
    }
    Ok(CheckedInput::ShardedChat {
        tokenizer: tokenizer_json,
        packed: packed.bytes,
        context,
        template: ids,
        default_system: default_system.to_string(),
        shards,
    })
}

/// A tokenizer.json as the worker's tokenizer (the same crate and
/// features) loads it: what the checks read of it, its size and its ids.
#[cfg(feature = "front")]
struct Vocabulary(tokenizers::Tokenizer);

#[cfg(feature = "front")]
impl Vocabulary {
    fn load(bytes: &[u8]) -> Result<Self, String> {
        tokenizers::Tokenizer::from_bytes(bytes)
            .map(Vocabulary)
            .map_err(|e| e.to_string())
    }

    fn size(&self) -> usize {
        self.0.get_vocab_size(true)
    }

    fn id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }
}

/// Without the `front` feature no tokenizer is read (the shard Workers'
/// build checks no model the front embeds): every load is refused.
#[cfg(not(feature = "front"))]
struct Vocabulary;

#[cfg(not(feature = "front"))]
impl Vocabulary {
    fn load(_: &[u8]) -> Result<Self, String> {
        Err("this build reads no tokenizer.json: build edgeinfer-pipeline with its default feature `front`".into())
    }

    fn size(&self) -> usize {
        0
    }

    fn id(&self, _: &str) -> Option<u32> {
        None
    }
}

/// Loads the tokenizer, checks its vocabulary size against the graph's and
/// resolves the template's control tokens to ids.
fn chat_tokens(
    m: &ModelEntry,
    path: &str,
    bytes: &[u8],
    vocab: usize,
    template: &TemplateEntry,
) -> Result<[u32; 6], CheckError> {
    let fix = format!("re-export the model ({})", m.export);
    let tokenizer = match Vocabulary::load(bytes) {
        Ok(t) => t,
        Err(e) => return err(&m.id, format!("models/{path} does not load: {e}"), fix),
    };
    let size = tokenizer.size();
    if size != vocab {
        return err(
            &m.id,
            format!("models/{path} has {size} tokens, input.vocab says {vocab}"),
            "make input.vocab the tokenizer's (and the graph's) vocabulary size",
        );
    }
    let mut ids = [0u32; 6];
    for (slot, (name, token)) in ids.iter_mut().zip(template.named()) {
        match tokenizer.id(token) {
            Some(id) => *slot = id,
            None => {
                return err(
                    &m.id,
                    format!("input.template.{name} = {token:?} is not a token of models/{path}"),
                    "name the tokenizer's own control tokens in [model.input.template]",
                )
            }
        }
    }
    Ok(ids)
}

/// Checks an ONNX graph's inputs and output, and packs
/// it for the engine: a BERT encoder (`pack_bert`) or a dense network
/// (`pack_dense`).
#[cfg(feature = "front")]
fn pack_graph(
    m: &ModelEntry,
    input: &CheckedInput,
    artifact: &[u8],
) -> Result<Vec<u8>, CheckError> {
    check_graph(m, input, artifact)?;
    let packed = match input {
        CheckedInput::Tokens { .. } => pack_bert::pack(artifact).map_err(|e| CheckError {
            model: m.id.clone(),
            what: format!("cannot pack models/{} for the worker: {e}", m.artifact),
            fix: format!(
                "export a post-norm BERT encoder quantized as {} does, or extend pipeline/src/pack_bert.rs and engine/src/bert",
                m.export
            ),
        })?,
        _ => pack_dense::pack(artifact).map_err(|e| CheckError {
            model: m.id.clone(),
            what: format!("cannot pack models/{} for the worker: {e}", m.artifact),
            fix: format!(
                "export a Gemm/Relu/Softmax network ({}), or extend pipeline/src/pack_dense.rs and engine/src/dense",
                m.export
            ),
        })?,
    };
    Ok(packed)
}

/// Without the `front` feature (the shard Workers' build, which packs GGUF
/// files only) an ONNX model is refused by name rather than compiling
/// the ONNX reader for a binary that never reads one.
#[cfg(not(feature = "front"))]
fn pack_graph(m: &ModelEntry, _: &CheckedInput, _: &[u8]) -> Result<Vec<u8>, CheckError> {
    without_front(m)
}

#[cfg(not(feature = "front"))]
fn pack_chat_model(m: &ModelEntry, _: &[u8], _: [usize; 5]) -> Result<Vec<u8>, CheckError> {
    without_front(m)
}

#[cfg(not(feature = "front"))]
fn without_front<T>(m: &ModelEntry) -> Result<T, CheckError> {
    err(
        &m.id,
        format!(
            "models/{} is an ONNX graph and this build reads none",
            m.artifact
        ),
        "build edgeinfer-pipeline with its default feature `front`",
    )
}

/// Packs the decoder for src/decoder (which refuses any graph that is not the
/// architecture it implements, naming the node) and checks that the model
/// is the shape the manifest states: `[context, layers, kv_heads,
/// head_dim, vocab]`.
#[cfg(feature = "front")]
fn pack_chat_model(m: &ModelEntry, onnx: &[u8], stated: [usize; 5]) -> Result<Vec<u8>, CheckError> {
    let (packed, c, layers) = pack_llama::pack(onnx).map_err(|e| CheckError {
        model: m.id.clone(),
        what: format!(
            "models/{} is not a decoder the engine runs: {e}",
            m.artifact
        ),
        fix: format!(
            "export a Llama-family graph as {} does (interface in models/tinylm/README.md), \
             or extend pipeline/src/pack_llama.rs and engine/src/decoder",
            m.export
        ),
    })?;
    let actual = [c.context, layers, c.kv_heads, c.head_dim, c.vocab];
    if actual != stated {
        return err(
            &m.id,
            format!(
                "the model is [context, layers, kv_heads, head_dim, vocab] = {actual:?}, the manifest says {stated:?}"
            ),
            "make [model.input] state the model's shape",
        );
    }
    Ok(packed)
}

/// Loads the tf-idf model as the worker will (vocabulary, weights layout,
/// text tables) and checks it has one output per label.
fn check_tfidf(
    m: &ModelEntry,
    weights: &[u8],
    vocab: &[u8],
    unicode: &[u8],
) -> Result<(), CheckError> {
    if m.labels.len() != 2 {
        return err(
            &m.id,
            format!(
                "a tf-idf model scores 2 labels (negative, positive), the manifest lists {}",
                m.labels.len()
            ),
            "list the two labels, negative class first",
        );
    }
    match TfidfModel::load(weights, vocab, unicode) {
        Ok(_) => Ok(()),
        Err(e) => err(
            &m.id,
            format!("the tf-idf model does not load: {e}"),
            format!("regenerate it with {}", m.export),
        ),
    }
}

/// Loads the tokenizer as the worker will and maps each of its token ids to
/// the graph's table row: the kept ids in order, every other id to `unk`.
fn token_rows(
    m: &ModelEntry,
    rel: &str,
    unk: &str,
    tokenizer_json: &[u8],
    keep_json: &[u8],
) -> Result<Vec<u32>, CheckError> {
    let regenerate = format!("regenerate it with {}", m.export);
    let tokenizer = match Vocabulary::load(tokenizer_json) {
        Ok(t) => t,
        Err(e) => {
            return err(
                &m.id,
                format!("models/{rel} is not a tokenizer.json the tokenizers crate loads: {e}"),
                regenerate,
            )
        }
    };
    let size = tokenizer.size();
    let Some(unk_id) = tokenizer.id(unk) else {
        return err(
            &m.id,
            format!("the tokenizer has no token {unk:?} (input.unk_token)"),
            "set input.unk_token to the tokenizer's unknown token",
        );
    };
    let keep: Vec<u32> = match serde_json::from_slice(keep_json) {
        Ok(k) => k,
        Err(e) => {
            return err(
                &m.id,
                format!("input.vocab_keep is not a JSON array of token ids: {e}"),
                regenerate,
            )
        }
    };
    if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&l| l as usize >= size) {
        return err(
            &m.id,
            format!("input.vocab_keep must list ascending token ids below {size}"),
            regenerate,
        );
    }
    let Ok(unk_row) = keep.binary_search(&unk_id) else {
        return err(
            &m.id,
            format!("input.vocab_keep drops the unknown token {unk:?}"),
            regenerate,
        );
    };
    let mut rows = vec![unk_row as u32; size];
    for (row, &id) in keep.iter().enumerate() {
        rows[id as usize] = row as u32;
    }
    Ok(rows)
}

/// Reads a model file and checks its sha256 against the manifest.
pub fn verified(
    models_dir: &Path,
    m: &ModelEntry,
    rel: &str,
    sha256: &str,
) -> Result<Vec<u8>, CheckError> {
    verified_in(models_dir, "models", m, rel, sha256)
}

/// [`verified`] for a file under `dir`, which messages call `where_`.
pub fn verified_in(
    dir: &Path,
    where_: &str,
    m: &ModelEntry,
    rel: &str,
    sha256: &str,
) -> Result<Vec<u8>, CheckError> {
    let in_git = where_ == "models";
    let bytes = match std::fs::read(dir.join(rel)) {
        Ok(b) => b,
        Err(e) => {
            return err(
                &m.id,
                format!(
                    "cannot read {where_}/{rel} ({}): {e}",
                    dir.join(rel).display()
                ),
                if in_git {
                    format!("restore it from git, or regenerate it with {}", m.export)
                } else {
                    format!(
                        "run scripts/setup (it runs {}), or point EDGEINFER_MODELS at the directory that holds it",
                        m.export
                    )
                },
            )
        }
    };
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(sha256) {
        return err(
            &m.id,
            format!("{where_}/{rel} has sha256 {actual}, the manifest says {sha256}"),
            format!("the file is corrupt or was regenerated: restore it from git, or rerun {} and update the sha256 in models/manifest.toml", m.export),
        );
    }
    Ok(bytes)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads the vocabulary and checks it against the labels and input width.
fn ngram_vocab(
    m: &ModelEntry,
    rel: &str,
    features: usize,
    bytes: &[u8],
) -> Result<Vec<Vec<String>>, CheckError> {
    let regenerate = format!("regenerate it with {}", m.export);
    let vocab: NgramVocab = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return err(
                &m.id,
                format!("models/{rel} is not an n-gram vocabulary: {e}"),
                regenerate,
            )
        }
    };
    if vocab.langs != m.labels {
        return err(
            &m.id,
            "the labels in models/manifest.toml differ from the vocabulary's langs",
            "copy the vocabulary's langs into the manifest's labels",
        );
    }
    let mut lists = Vec::new();
    for key in &vocab.order {
        let value = vocab
            .lists
            .get(key)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        match serde_json::from_value::<Vec<String>>(value) {
            Ok(list) => lists.push(list),
            Err(_) => {
                return err(
                    &m.id,
                    format!("vocabulary list {key:?} is missing or not a list of strings"),
                    regenerate,
                )
            }
        }
    }
    for (i, list) in lists.iter().enumerate() {
        // Lengths in UTF-16 units: the featurizer counts as JavaScript does.
        if let Some(bad) = list.iter().find(|g| g.encode_utf16().count() != i + 1) {
            return err(
                &m.id,
                format!("{bad:?} in the {}-gram list has the wrong length", i + 1),
                regenerate,
            );
        }
    }
    let total: usize = lists.iter().map(Vec::len).sum();
    if total != features {
        return err(
            &m.id,
            format!("the vocabulary has {total} n-grams, input.features says {features}"),
            "make input.features equal the vocabulary size",
        );
    }
    Ok(lists)
}

/// Reads the graph and checks its inputs and output against the manifest:
/// the element types and widths the worker feeds and reads (each model's
/// packer then checks the nodes it packs).
#[cfg(feature = "front")]
pub fn check_graph(m: &ModelEntry, input: &CheckedInput, bytes: &[u8]) -> Result<(), CheckError> {
    let reexport = format!("re-export it ({})", m.export);
    let unreadable = |e: String| CheckError {
        model: m.id.clone(),
        what: format!("cannot read models/{} as an ONNX graph: {e}", m.artifact),
        fix: reexport.clone(),
    };
    let model = onnx::read(bytes).map_err(unreadable)?;
    let graph = model
        .graph
        .ok_or_else(|| unreadable("it has no graph".into()))?;
    let (inputs, width) = match input {
        CheckedInput::Ngrams { vocab } => (vec![onnx::FLOAT], vocab.iter().map(Vec::len).sum()),
        CheckedInput::SentenceEmbedding { dims, .. } => (vec![onnx::FLOAT], *dims),
        // input_ids and attention_mask, [batch, tokens] each.
        CheckedInput::Tokens { .. } => (vec![onnx::INT64; 2], 0),
        CheckedInput::TfidfWords { .. }
        | CheckedInput::Chat { .. }
        | CheckedInput::ShardedChat { .. } => return Ok(()),
    };
    // Older exporters list the initializers among the inputs too.
    let constants: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let fed: Vec<&onnx::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !constants.contains(v.name.as_str()))
        .collect();
    if fed.len() != inputs.len() || graph.output.len() != 1 {
        return err(
            &m.id,
            format!(
                "the graph has {} inputs and {} outputs; expected {} and 1",
                fed.len(),
                graph.output.len(),
                inputs.len()
            ),
            reexport,
        );
    }
    // Of element type `want`, [batch, width] (any width for 0).
    let fits = |value: &onnx::ValueInfoProto, want: i32, width: usize| {
        matches!(value.tensor(), Some((t, dims))
            if t == want && dims.len() == 2 && (width == 0 || dims[1] == Some(width as i64)))
    };
    let shown = |value: &onnx::ValueInfoProto| match value.tensor() {
        Some((t, dims)) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
                .collect();
            format!("{} [{}]", onnx::type_name(t), dims.join(", "))
        }
        None => "not a tensor of stated shape".to_string(),
    };
    for (i, (value, &want)) in fed.iter().zip(&inputs).enumerate() {
        if !fits(value, want, width) {
            return err(
                &m.id,
                format!(
                    "graph input {i} ({:?}) is {}, expected {} [batch, {}]",
                    value.name,
                    shown(value),
                    onnx::type_name(want),
                    if width == 0 {
                        "tokens".to_string()
                    } else {
                        width.to_string()
                    }
                ),
                reexport,
            );
        }
    }
    let outputs = match input {
        CheckedInput::Tokens { dims, .. } => *dims,
        _ => m.labels.len(),
    };
    if !fits(&graph.output[0], onnx::FLOAT, outputs) {
        return err(
            &m.id,
            format!(
                "graph output is {}, expected f32 [batch, {outputs}] (one score per label, or the embedding)",
                shown(&graph.output[0])
            ),
            format!("{reexport}, or fix the manifest's labels / input.dims"),
        );
    }
    Ok(())
}
