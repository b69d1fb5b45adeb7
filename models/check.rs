//! Checks of `models/manifest.toml` and the files it names, shared by build.rs
//! (which refuses to build on any failure) and the tests (which prove each
//! failure is caught and explained).
//!
//! Every error names the model and says how to fix it, because the person who
//! sees it is usually adding or updating a model, not debugging build.rs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

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
    pub golden: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputEntry {
    pub kind: String,
    pub vocab: String,
    pub vocab_sha256: String,
    pub features: usize,
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
pub const TASKS: &[(&str, &str)] = &[("language-identification", "LanguageIdentification")];

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
    pub onnx: Vec<u8>,
    /// `vocab[n - 1]`: the n-grams of length n, in input order.
    pub vocab: Vec<Vec<String>>,
    /// The `registry::Task` variant name.
    pub task_variant: &'static str,
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
        if !ids.insert(m.id.as_str()) {
            return err(
                &m.id,
                "the id appears twice in models/manifest.toml",
                "give each model a unique id",
            );
        }
    }
    Ok(manifest)
}

/// Runs every check on one model; `models_dir` is the `models/` directory.
pub fn check_model(models_dir: &Path, m: &ModelEntry) -> Result<Checked, CheckError> {
    let Some(&(_, task_variant)) = TASKS.iter().find(|(name, _)| *name == m.task) else {
        let known: Vec<&str> = TASKS.iter().map(|(n, _)| *n).collect();
        return err(
            &m.id,
            format!("unsupported task {:?}", m.task),
            format!("use one of: {}", known.join(", ")),
        );
    };
    if m.input.kind != "char-ngram-frequencies" {
        return err(
            &m.id,
            format!("unsupported input kind {:?}", m.input.kind),
            "use input.kind = \"char-ngram-frequencies\"",
        );
    }
    let onnx = verified(models_dir, m, &m.artifact, &m.sha256)?;
    verified(models_dir, m, &m.golden, &m.golden_sha256)?;
    let vocab_bytes = verified(models_dir, m, &m.input.vocab, &m.input.vocab_sha256)?;
    let vocab = ngram_vocab(m, &vocab_bytes)?;
    check_graph(m, &onnx)?;
    Ok(Checked {
        onnx,
        vocab,
        task_variant,
    })
}

/// Reads a model file and checks its sha256 against the manifest.
pub fn verified(
    models_dir: &Path,
    m: &ModelEntry,
    rel: &str,
    sha256: &str,
) -> Result<Vec<u8>, CheckError> {
    let bytes = match std::fs::read(models_dir.join(rel)) {
        Ok(b) => b,
        Err(e) => {
            return err(
                &m.id,
                format!("cannot read models/{rel}: {e}"),
                format!("restore it from git, or regenerate it with {}", m.export),
            )
        }
    };
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(sha256) {
        return err(
            &m.id,
            format!("models/{rel} has sha256 {actual}, the manifest says {sha256}"),
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
fn ngram_vocab(m: &ModelEntry, bytes: &[u8]) -> Result<Vec<Vec<String>>, CheckError> {
    let regenerate = format!("regenerate it with {}", m.export);
    let vocab: NgramVocab = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return err(
                &m.id,
                format!("models/{} is not an n-gram vocabulary: {e}", m.input.vocab),
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
    if total != m.input.features {
        return err(
            &m.id,
            format!(
                "the vocabulary has {total} n-grams, input.features says {}",
                m.input.features
            ),
            "make input.features equal the vocabulary size",
        );
    }
    Ok(lists)
}

/// Loads the graph with tract, as the worker will, and checks its shapes.
pub fn check_graph(m: &ModelEntry, onnx: &[u8]) -> Result<(), CheckError> {
    let unsupported = |e: TractError| CheckError {
        model: m.id.clone(),
        what: format!("tract cannot run models/{}: {e:#}", m.artifact),
        fix: format!(
            "export the graph with operators and shapes tract-onnx supports ({})",
            m.export
        ),
    };
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .map_err(unsupported)?;
    let model = model.into_typed().map_err(unsupported)?;
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return err(
            &m.id,
            "the graph must have exactly one input and one output",
            format!("re-export it ({})", m.export),
        );
    }
    let input = model.input_fact(0).map_err(unsupported)?.clone();
    let output = model.output_fact(0).map_err(unsupported)?.clone();
    let last = |f: &TypedFact| f.shape.last().and_then(|d| d.to_i64().ok());
    if input.datum_type != f32::datum_type()
        || input.rank() != 2
        || last(&input) != Some(m.input.features as i64)
    {
        return err(
            &m.id,
            format!(
                "graph input is {input:?}, expected f32 [batch, {}]",
                m.input.features
            ),
            format!("re-export it ({})", m.export),
        );
    }
    if output.rank() != 2 || last(&output) != Some(m.labels.len() as i64) {
        return err(
            &m.id,
            format!(
                "graph output is {output:?}, expected [batch, {}] (one score per label)",
                m.labels.len()
            ),
            format!("re-export it ({}), or fix the manifest's labels", m.export),
        );
    }
    model.into_optimized().map_err(unsupported)?;
    Ok(())
}
