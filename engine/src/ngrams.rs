//! lande's featurizer, reproduced exactly: the model was trained on these
//! features, so any difference (a whitespace class, a case mapping, counting
//! code points where JavaScript counts UTF-16 units) shifts its predictions.
//!
//! lande (`standalone/utils.js`) does, in order:
//! 1. replace each run of `-` with one space;
//! 2. drop every character that is not a letter (`\p{L}`), a mark (`\p{M}`) or
//!    JavaScript whitespace (`\s`);
//! 3. replace each run of two or more whitespace characters with one space;
//! 4. `toLowerCase()`, then `trim()`, then add one space at each end;
//! 5. for n = 1..=4, the frequency of each vocabulary n-gram among all n-grams of
//!    the string, where an n-gram is n consecutive UTF-16 code units.

use std::collections::HashMap;

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The characters JavaScript's `\s` and `String.prototype.trim` treat as
/// whitespace (ECMAScript WhiteSpace + LineTerminator). Not Rust's
/// `char::is_whitespace`: that one includes U+0085 and excludes U+FEFF.
pub fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

fn is_letter_or_mark(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::NonspacingMark
            | G::SpacingMark
            | G::EnclosingMark
    )
}

/// lande's `getNormalized`: the string whose n-grams are counted.
pub fn normalize(text: &str) -> String {
    // Steps 1 and 2.
    let mut kept = String::with_capacity(text.len());
    let mut in_hyphens = false;
    for c in text.chars() {
        if c == '-' {
            if !in_hyphens {
                kept.push(' ');
            }
            in_hyphens = true;
            continue;
        }
        in_hyphens = false;
        if is_letter_or_mark(c) || is_js_whitespace(c) {
            kept.push(c);
        }
    }
    // Step 3: a single whitespace character stays as it is (a lone tab stays a tab).
    let mut collapsed = String::with_capacity(kept.len());
    let mut chars = kept.chars().peekable();
    while let Some(c) = chars.next() {
        if is_js_whitespace(c) && chars.peek().is_some_and(|&n| is_js_whitespace(n)) {
            while chars.peek().is_some_and(|&n| is_js_whitespace(n)) {
                chars.next();
            }
            collapsed.push(' ');
        } else {
            collapsed.push(c);
        }
    }
    // Step 4. Rust's `to_lowercase` applies the same full Unicode mapping as
    // JavaScript's, final sigma included.
    let lower = collapsed.to_lowercase();
    format!(" {} ", lower.trim_matches(is_js_whitespace))
}

/// Maps each vocabulary n-gram to its input position, per n.
#[derive(Debug)]
pub struct NgramFeaturizer {
    /// `by_len[n - 1]`: n-gram (as UTF-16 units) -> feature index.
    by_len: Vec<HashMap<Vec<u16>, usize>>,
    features: usize,
}

impl NgramFeaturizer {
    /// `vocab[n - 1]` lists the n-grams of length n; feature indices run
    /// through the lists in order.
    pub fn new(vocab: &[&[&str]]) -> Self {
        let mut index = 0;
        let by_len = vocab
            .iter()
            .map(|list| {
                list.iter()
                    .map(|gram| {
                        let entry = (gram.encode_utf16().collect(), index);
                        index += 1;
                        entry
                    })
                    .collect()
            })
            .collect();
        NgramFeaturizer {
            by_len,
            features: index,
        }
    }

    /// The width of the feature vector.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Writes the features of `text` into `out` (length [`Self::features`]),
    /// which must be zeroed.
    pub fn featurize_into(&self, text: &str, out: &mut [f32]) {
        let units: Vec<u16> = normalize(text).encode_utf16().collect();
        for (i, grams) in self.by_len.iter().enumerate() {
            let n = i + 1;
            if units.len() < n {
                continue;
            }
            let windows = units.windows(n);
            let total = windows.len() as f64;
            let mut counts: HashMap<usize, u32> = HashMap::new();
            for window in windows {
                if let Some(&feature) = grams.get(window) {
                    *counts.entry(feature).or_default() += 1;
                }
            }
            for (feature, count) in counts {
                // JavaScript divides in f64, then lande stores into a Float32Array.
                if let Some(slot) = out.get_mut(feature) {
                    *slot = (f64::from(count) / total) as f32;
                }
            }
        }
    }

    /// The features of `text` as a new vector.
    pub fn featurize(&self, text: &str) -> Vec<f32> {
        let mut out = vec![0.0; self.features];
        self.featurize_into(text, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_follows_lande_step_by_step() {
        assert_eq!(normalize("Hello, World!"), " hello world ");
        assert_eq!(normalize("well--known"), " well known ");
        assert_eq!(normalize("a\tb"), " a\tb ");
        assert_eq!(normalize("a \t b"), " a b ");
        assert_eq!(normalize("123"), "  ");
        assert_eq!(normalize(""), "  ");
        assert_eq!(normalize("\u{FEFF}x\u{85}y"), " xy ");
    }

    #[test]
    fn final_sigma_is_lowercased_as_in_javascript() {
        assert_eq!(
            normalize("ΟΔΟΣ ΑΣ"),
            " \u{3BF}\u{3B4}\u{3BF}\u{3C2} \u{3B1}\u{3C2} "
        );
        assert_eq!(normalize("ΣΑ"), " \u{3C3}\u{3B1} ");
    }

    #[test]
    fn counts_utf16_units_like_javascript() {
        // U+20000 is a letter outside the BMP: two UTF-16 units, so " 𠀀 " has
        // four unigrams and the astral letter alone forms no unigram.
        let f = NgramFeaturizer::new(&[&[" ", "\u{20000}"], &["\u{20000}"]]);
        let x = f.featurize("\u{20000}");
        assert_eq!(x, vec![0.5, 0.0, 1.0 / 3.0]);
    }
}
