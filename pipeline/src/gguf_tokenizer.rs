//! A GGUF file's tokenizer as a `tokenizer.json` the `tokenizers` crate (the
//! worker's) loads: byte-level BPE with the file's vocabulary and merges,
//! its control and user-defined tokens as added tokens, and the
//! pre-tokenizer its `tokenizer.ggml.pre` names.
//!
//! The file does not store its pre-tokenizer, only a name for one that
//! llama.cpp implements (`tokenizer.ggml.pre`, chosen by llama.cpp's
//! converter by hashing the original tokenizer's output on a test text).
//! So the regular expressions below are llama.cpp's for each name, applied
//! as llama.cpp applies them: each in turn splits every piece the previous
//! one left, keeping the matches and the text between them as pieces
//! (`Split` with `Isolated`), then the bytes become GPT-2's byte-level
//! characters. The reference of the tests is llama.cpp's own tokenizer on
//! the same files (models/qwen2.5-coder-0.5b/tokens.mjs).
//!
//! Two choices follow llama.cpp rather than transformers' GGUF converter:
//! no normalizer (Qwen2's original tokenizer.json normalizes to NFC; llama.cpp
//! does not, and text that is not NFC is rare), and nothing added by the
//! post-processor: a file's `add_bos_token` is for raw completion, while
//! every chat template writes its BOS itself, so adding one would double it.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::pack_gguf::Gguf;

/// llama.cpp's token types (`llama_token_type`): a control token (`<|im_end|>`)
/// and a user-defined one (`<tool_call>`) are matched whole in the text; a
/// normal one only through the merges; unused ones (Qwen's `[PAD151665]`) never.
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// GPT-2's expression (llama.cpp's `GPT2`): contractions, letters, digits,
/// other symbols, each with an optional leading space; whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's (llama.cpp's `LLAMA3`): case-insensitive contractions, a letter
/// run with one leading non-letter, digits by threes, symbols with the line
/// breaks after them, line breaks with the spaces before them.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's (llama.cpp's `QWEN2`): Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The expressions of a `tokenizer.ggml.pre` name, in the order they split,
/// and whether merges are skipped for a piece that is a token already
/// (llama.cpp's `ignore_merges`, set for Llama 3).
fn pre_tokenizer(pre: &str) -> Result<(Vec<&'static str>, bool), String> {
    Ok(match pre {
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" => (vec![GPT2], false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => (vec![LLAMA3], true),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => (vec![QWEN2], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
            (vec![r"\p{N}", GPT2], false)
        }
        other => {
            return Err(format!(
                "GGUF tokenizer.ggml.pre {other:?}: the tokenizer is built for the \
                 pre-tokenizers \"gpt2\", \"llama-bpe\" (Llama 3), \"qwen2\" and \"smollm\" \
                 (and the names llama.cpp gives the same expressions) only"
            ))
        }
    })
}

/// What `tokenizer.json` is built from: the file's `tokenizer.ggml.*` values.
pub struct Vocabulary<'a> {
    /// `tokenizer.ggml.model`: "gpt2" is byte-level BPE.
    pub model: &'a str,
    /// `tokenizer.ggml.pre`.
    pub pre: &'a str,
    /// `tokenizer.ggml.tokens`, by id.
    pub tokens: Vec<&'a str>,
    /// `tokenizer.ggml.token_type`, by id.
    pub types: Vec<i64>,
    /// `tokenizer.ggml.merges`: "left right", by rank.
    pub merges: Vec<&'a str>,
}

impl<'a> Vocabulary<'a> {
    /// The vocabulary of a parsed GGUF file.
    pub fn of(gguf: &'a Gguf) -> Result<Self, String> {
        let array = |key: &str| match gguf.get(key) {
            Some(gguf_rs_lib::prelude::MetadataValue::Array(a)) => Ok(&a.values),
            _ => Err(format!("GGUF metadata {key} is missing or not an array")),
        };
        let strings = |key: &str| -> Result<Vec<&'a str>, String> {
            array(key)?
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| format!("{key} holds a non-string"))
                })
                .collect()
        };
        let types = array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| "tokenizer.ggml.token_type holds a non-integer".to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Vocabulary {
            model: gguf.string("tokenizer.ggml.model")?,
            // llama.cpp reads a missing name as "default", which it does
            // not define for BPE vocabularies either.
            pre: gguf.string("tokenizer.ggml.pre").unwrap_or("default"),
            tokens: strings("tokenizer.ggml.tokens")?,
            types,
            merges: strings("tokenizer.ggml.merges")?,
        })
    }

    /// The `tokenizer.json` text (compact: Qwen2's is ~7 MB, every byte of
    /// which a Worker that embeds it carries).
    pub fn tokenizer_json(&self) -> Result<String, String> {
        if self.model != "gpt2" {
            return Err(format!(
                "GGUF tokenizer.ggml.model {:?}: only byte-level BPE vocabularies (\"gpt2\", as \
                 Llama 3, Qwen2 and SmolLM files have) are built into a tokenizer yet; \
                 SentencePiece (\"llama\") ones are not",
                self.model
            ));
        }
        let (expressions, ignore_merges) = pre_tokenizer(self.pre)?;
        if self.types.len() != self.tokens.len() {
            return Err(format!(
                "GGUF tokenizer.ggml.token_type has {} entries for {} tokens",
                self.types.len(),
                self.tokens.len()
            ));
        }
        let mut vocab = serde_json::Map::with_capacity(self.tokens.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.tokens.len());
        let mut added = Vec::new();
        for (id, (&token, &kind)) in self.tokens.iter().zip(&self.types).enumerate() {
            if let Some(first) = seen.insert(token, id) {
                return Err(format!(
                    "GGUF tokenizer.ggml.tokens holds {token:?} twice (ids {first} and {id})"
                ));
            }
            vocab.insert(token.to_string(), json!(id));
            if kind == CONTROL || kind == USER_DEFINED {
                added.push(json!({
                    "id": id,
                    "content": token,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": kind == CONTROL,
                }));
            } else if kind != NORMAL && !(0..=6).contains(&kind) {
                return Err(format!("GGUF token {id} has the unknown type {kind}"));
            }
        }
        let merges = self
            .merges
            .iter()
            .enumerate()
            .map(|(rank, m)| {
                let (left, right) = m
                    .split_once(' ')
                    .filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' '))
                    .ok_or_else(|| format!("GGUF merge {rank} {m:?} is not two tokens"))?;
                if !seen.contains_key(left) || !seen.contains_key(right) {
                    return Err(format!(
                        "GGUF merge {rank} {m:?} names a token not in the vocabulary"
                    ));
                }
                Ok(json!([left, right]))
            })
            .collect::<Result<Vec<Value>, String>>()?;
        let mut pretokenizers: Vec<Value> = expressions
            .iter()
            .map(|e| {
                json!({
                    "type": "Split",
                    "pattern": {"Regex": e},
                    "behavior": "Isolated",
                    "invert": false,
                })
            })
            .collect();
        let byte_level = json!({
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": false,
            "use_regex": false,
        });
        pretokenizers.push(byte_level.clone());
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
            "post_processor": null,
            "decoder": byte_level,
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": ignore_merges,
                "vocab": vocab,
                "merges": merges,
            },
        });
        serde_json::to_string(&tokenizer).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary<'a>(model: &'a str, pre: &'a str) -> Vocabulary<'a> {
        Vocabulary {
            model,
            pre,
            tokens: vec!["a", "b", "ab", "<|end|>"],
            types: vec![1, 1, 1, 3],
            merges: vec!["a b"],
        }
    }

    #[test]
    fn refuses_what_it_does_not_build_and_names_it() {
        let e = vocabulary("llama", "default").tokenizer_json().unwrap_err();
        assert!(e.contains("\"llama\""), "{e}");
        let e = vocabulary("gpt2", "tekken").tokenizer_json().unwrap_err();
        assert!(e.contains("\"tekken\""), "{e}");
        let mut v = vocabulary("gpt2", "qwen2");
        v.merges = vec!["a c"];
        assert!(v
            .tokenizer_json()
            .unwrap_err()
            .contains("not in the vocabulary"));
        let mut v = vocabulary("gpt2", "qwen2");
        v.tokens[2] = "a";
        assert!(v.tokenizer_json().unwrap_err().contains("twice"));
    }

    #[test]
    fn a_small_vocabulary_builds() {
        let json = vocabulary("gpt2", "llama-bpe").tokenizer_json().unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["model"]["ignore_merges"], true);
        assert_eq!(v["added_tokens"][0]["content"], "<|end|>");
        assert_eq!(v["model"]["merges"][0], json!(["a", "b"]));
    }
}
