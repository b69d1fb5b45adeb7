//! alt-profanity-check's model, reproduced: scikit-learn's `TfidfVectorizer`
//! (CPython `str.lower()`, `(?u)\b\w\w+\b` tokens, l2-normalised tf-idf) into
//! five sigmoid-calibrated linear SVMs whose probabilities are averaged.
//!
//! The text rules are CPython 3.11's, not Rust's: `\w`, lowercasing and the
//! final-sigma context come from tables exported from CPython
//! (`models/profanity/unicode.json`), because Rust's Unicode is newer and its
//! `\w` counts combining marks. The math is f64 over sparse counts, as
//! scikit-learn computes it (see `models/profanity/SPEC.md`).

use super::packed::FormatError;
use std::collections::HashMap;

use serde::Deserialize;

/// Inclusive code-point ranges, sorted.
type Ranges = Vec<(u32, u32)>;

#[derive(Deserialize)]
struct UnicodeTables {
    word: Ranges,
    /// `[code point, lowered code points...]` where `str.lower()` changes it.
    lower: Vec<Vec<u32>>,
    cased: Ranges,
    case_ignorable: Ranges,
}

fn contains(ranges: &Ranges, c: char) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// CPython's `str.lower()` and `\w`, from its own tables.
pub struct PythonText {
    word: Ranges,
    lower: HashMap<u32, Vec<char>>,
    cased: Ranges,
    case_ignorable: Ranges,
}

const CAPITAL_SIGMA: char = '\u{03a3}';

impl PythonText {
    fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        let t: UnicodeTables = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut lower = HashMap::with_capacity(t.lower.len());
        for entry in t.lower {
            let (&from, to) = entry.split_first().ok_or("an empty `lower` entry")?;
            let to = to
                .iter()
                .map(|&c| char::from_u32(c).ok_or(format!("bad code point {c}")))
                .collect::<Result<Vec<char>, _>>()?;
            lower.insert(from, to);
        }
        Ok(PythonText {
            word: t.word,
            lower,
            cased: t.cased,
            case_ignorable: t.case_ignorable,
        })
    }

    pub fn is_word(&self, c: char) -> bool {
        contains(&self.word, c)
    }

    /// Whether the Σ at `chars[i]` ends a word (Unicode's Final_Sigma, as
    /// CPython applies it: cased before it and no cased after it, skipping
    /// case-ignorable characters both ways).
    fn final_sigma(&self, chars: &[char], i: usize) -> bool {
        let skip = |c: &&char| contains(&self.case_ignorable, **c);
        let before = chars[..i].iter().rev().find(|c| !skip(c));
        let after = chars[i + 1..].iter().find(|c| !skip(c));
        before.is_some_and(|&c| contains(&self.cased, c))
            && !after.is_some_and(|&c| contains(&self.cased, c))
    }

    /// `str.lower()` of the whole text (the final-sigma rule needs context).
    pub fn lower(&self, text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        for (i, &c) in chars.iter().enumerate() {
            if c == CAPITAL_SIGMA {
                out.push(if self.final_sigma(&chars, i) {
                    '\u{03c2}'
                } else {
                    '\u{03c3}'
                });
            } else if let Some(to) = self.lower.get(&(c as u32)) {
                out.extend(to);
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The tokens of `(?u)\b\w\w+\b`: maximal runs of word characters, at
    /// least two code points long.
    pub fn tokens<'a>(&'a self, text: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        text.split(|c| !self.is_word(c))
            .filter(|t| t.chars().nth(1).is_some())
    }
}

/// One calibrated linear SVM of the ensemble.
struct Fold {
    /// `idf[t] * coef[t]`: the weight of an l2-normalised count.
    weights: Vec<f64>,
    intercept: f64,
    a: f64,
    b: f64,
}

/// The tf-idf vocabulary and the calibrated SVM ensemble.
pub struct TfidfModel {
    text: PythonText,
    columns: HashMap<String, usize>,
    idf: Vec<f64>,
    folds: Vec<Fold>,
}

impl std::fmt::Debug for TfidfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TfidfModel")
            .field("terms", &self.idf.len())
            .field("folds", &self.folds.len())
            .finish_non_exhaustive()
    }
}

const MAGIC: &[u8; 8] = b"EIPROF01";

impl TfidfModel {
    /// Reads `weights.bin` (layout in `models/profanity/SPEC.md`), the
    /// vocabulary (JSON array, index = column) and CPython's text tables.
    pub fn load(
        weights: &[u8],
        vocab_json: &[u8],
        unicode_json: &[u8],
    ) -> Result<Self, FormatError> {
        let terms: Vec<String> = serde_json::from_slice(vocab_json)
            .map_err(|e| FormatError(format!("vocabulary: {e}")))?;
        let text = PythonText::from_json(unicode_json)
            .map_err(|e| FormatError(format!("unicode tables: {e}")))?;
        let u32_at = |at: usize| -> Result<usize, FormatError> {
            weights
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| FormatError::from("weights.bin is truncated"))
        };
        if weights.get(..8) != Some(&MAGIC[..]) {
            return Err("weights.bin does not start with EIPROF01".into());
        }
        let (v, k) = (u32_at(8)?, u32_at(12)?);
        if v != terms.len() || k == 0 {
            return Err(FormatError(format!(
                "weights.bin has {v} terms and {k} folds; the vocabulary has {} terms",
                terms.len()
            )));
        }
        let floats: Vec<f64> = weights[16..]
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        if floats.len() != v * (k + 1) + 3 * k || weights[16..].len() % 8 != 0 {
            return Err(FormatError(format!(
                "weights.bin has the wrong size for {v} terms and {k} folds"
            )));
        }
        let (table, tail) = floats.split_at(v * (k + 1));
        let idf: Vec<f64> = table.chunks_exact(k + 1).map(|row| row[0]).collect();
        let folds = (0..k)
            .map(|f| Fold {
                weights: table
                    .chunks_exact(k + 1)
                    .map(|row| row[0] * row[1 + f])
                    .collect(),
                intercept: tail[f],
                a: tail[k + f],
                b: tail[2 * k + f],
            })
            .collect();
        let columns = terms.into_iter().enumerate().map(|(i, t)| (t, i)).collect();
        Ok(TfidfModel {
            text,
            columns,
            idf,
            folds,
        })
    }

    pub fn terms(&self) -> usize {
        self.idf.len()
    }

    /// The vocabulary columns the text hits and their counts, by column.
    pub fn counts(&self, text: &str) -> Vec<(usize, u32)> {
        let lowered = self.text.lower(text);
        let mut counts: HashMap<usize, u32> = HashMap::new();
        for token in self.text.tokens(&lowered) {
            if let Some(&column) = self.columns.get(token) {
                *counts.entry(column).or_default() += 1;
            }
        }
        let mut counts: Vec<(usize, u32)> = counts.into_iter().collect();
        counts.sort_unstable();
        counts
    }

    /// The probability that the text is profane (the package's `predict_prob`).
    pub fn probability(&self, text: &str) -> f64 {
        let counts = self.counts(text);
        let norm = counts
            .iter()
            .map(|&(t, n)| (f64::from(n) * self.idf[t]).powi(2))
            .sum::<f64>()
            .sqrt();
        let total: f64 = self
            .folds
            .iter()
            .map(|fold| {
                let dot = if norm > 0.0 {
                    counts
                        .iter()
                        .map(|&(t, n)| f64::from(n) * fold.weights[t])
                        .sum::<f64>()
                        / norm
                } else {
                    0.0
                };
                let decision = dot + fold.intercept;
                1.0 / (1.0 + (fold.a * decision + fold.b).exp())
            })
            .sum();
        total / self.folds.len() as f64
    }
}
