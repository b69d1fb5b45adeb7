//! Constrained decoding: at each step, only the tokens that keep the reply a
//! valid prefix of a grammar (a JSON Schema, or a Lark grammar for a choice
//! between text and a tool call) may be sampled; the reply ends when the
//! grammar is complete. The masks come from `llguidance` (what llama.cpp and
//! vLLM use), over a token trie of the model's own vocabulary.
//!
//! The mask is applied where sampling happens (the front isolate, also for
//! a model whose layers are in shard Workers): disallowed tokens' logits
//! become `-inf`, so greedy and sampled decoding alike only see the allowed
//! ones. The next step's mask is computed as soon as a token is accepted:
//! when it allows only the end, the reply ends without another model pass.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use tokenizers::Tokenizer;
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// What a reply must be.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Grammar {
    /// JSON valid under this schema (`{"type": "object"}`: any object). The
    /// API layer checks the schema is of the supported subset first.
    JsonSchema(Value),
    /// A grammar in llguidance's Lark dialect (it may embed `%json {...}`).
    Lark(String),
}

/// JSON as the grammar writes it: no whitespace between tokens. A small
/// model left free to add whitespace can pad forever; compact JSON also
/// makes a tool call's text predictable for the renderers that split it.
pub const JSON_OPTIONS: &str =
    r#"{"item_separator": ",", "key_separator": ":", "whitespace_flexible": false}"#;

/// A model's vocabulary as llguidance sees it: each token's bytes, special
/// tokens behind llguidance's marker byte (so no text grammar allows them),
/// and the token that ends a reply.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: &'static Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// llguidance tokenizes the bytes a grammar forces, which may stop in
    /// the middle of a UTF-8 character (the first byte of `ü`): the valid
    /// text goes through the tokenizer, the rest token by token through the
    /// trie. A lossy conversion would turn the partial character into
    /// U+FFFD, a token the grammar never allows.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// GPT-2's byte-level alphabet: the char each byte is written as in a
/// byte-level BPE vocabulary (printable Latin-1 as itself, the rest shifted
/// past U+0100).
fn byte_level_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut shifted = 0x100u32;
    for byte in 0..=255u8 {
        let c = char::from(byte);
        let printable = matches!(c, '!'..='~' | '\u{A1}'..='\u{AC}' | '\u{AE}'..='\u{FF}');
        chars[byte as usize] = if printable {
            c
        } else {
            let c = char::from_u32(shifted).unwrap_or('\0');
            shifted += 1;
            c
        };
    }
    chars
}

/// The bytes of every token id below `vocab` (the model's vocabulary may be
/// larger than the tokenizer's: those ids have no bytes and are never
/// allowed).
fn token_bytes(tokenizer: &Tokenizer, vocab: usize) -> Vec<Vec<u8>> {
    let chars = byte_level_chars();
    let byte_of = |c: char| chars.iter().position(|&b| b == c).map(|b| b as u8);
    let added = tokenizer.get_added_tokens_decoder();
    (0..vocab as u32)
        .map(|id| {
            if let Some(token) = added.get(&id) {
                let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                bytes.extend_from_slice(token.content.as_bytes());
                return bytes;
            }
            let Some(piece) = tokenizer.id_to_token(id) else {
                return Vec::new();
            };
            let mut bytes = Vec::with_capacity(piece.len());
            for c in piece.chars() {
                match byte_of(c) {
                    Some(b) => bytes.push(b),
                    // Not byte-level: the piece's own text.
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            bytes
        })
        .collect()
}

/// What compiles grammars for one model: built once per isolate, on the
/// first constrained reply (its token trie and llguidance's per-vocabulary
/// tables take a while; an unconstrained reply never pays for them).
pub struct Constraints {
    factory: ParserFactory,
    end: u32,
}

impl std::fmt::Debug for Constraints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraints")
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Constraints {
    /// `end` is the token that ends a reply (ChatML's `<|im_end|>`): the
    /// one a complete grammar allows.
    pub fn new(tokenizer: &'static Tokenizer, vocab: usize, end: u32) -> Result<Self, String> {
        let words = token_bytes(tokenizer, vocab);
        let info = TokRxInfo::new(vocab as u32, end);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        // Its log lines would go to the isolate's console on every request.
        factory.quiet();
        Ok(Constraints { factory, end })
    }

    /// A constraint for one reply, or why the grammar cannot be one (a
    /// schema llguidance refuses, a grammar that does not compile): the
    /// caller's error, told as it is.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, String> {
        let top = match grammar {
            Grammar::JsonSchema(schema) => {
                let mut schema = schema.clone();
                tighten_formats(&mut schema);
                if let Value::Object(map) = &mut schema {
                    let options: Value =
                        serde_json::from_str(JSON_OPTIONS).map_err(|e| e.to_string())?;
                    map.insert("x-guidance".into(), options);
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self.factory.create_parser(top).map_err(|e| e.to_string())?;
        let mut matcher = Matcher::new(Ok(parser));
        let next = next_mask(&mut matcher)?;
        Ok(Constraint {
            matcher,
            next,
            end: self.end,
        })
    }
}

/// An email's local part: RFC 5322's atext, in dot-separated atoms.
const ATEXT: &str = r"[a-zA-Z0-9!#$%&'*+\-/=?\^_`{|}~]";

/// A date whose day exists: February 29th only in leap years.
const DATE: &str = concat!(
    r"(?:[0-9]{4}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    r"|[0-9]{4}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    r"|[0-9]{4}-02-(?:0[1-9]|1[0-9]|2[0-8])",
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
);

/// A time of day with its offset; no leap second (valid only at the end
/// of some days, which a grammar cannot know).
const TIME: &str = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";

/// The pattern a `format` is held to where llguidance's own is looser
/// than what validators check: its `email` has no length limits (RFC 5321:
/// 64 bytes of local part, 63 per domain label, 254 in all), its `date`
/// allows February 29th of every year and its times a leap second at any
/// minute. Each pattern here is a subset of the format, so a reply that
/// matches it passes any validator of the format.
fn format_pattern(format: &str) -> Option<String> {
    let label = "[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?";
    match format {
        // At most 32 + 2 x 16 = 64 bytes of local part, 4 x 63 + 3 <= 254 of domain.
        "email" => Some(format!(
            "^{ATEXT}{{1,32}}(?:\\.{ATEXT}{{1,15}}){{0,2}}@{label}(?:\\.{label}){{0,2}}$"
        )),
        "date" => Some(format!("^{DATE}$")),
        "time" => Some(format!("^{TIME}$")),
        "date-time" => Some(format!("^{DATE}[tT]{TIME}$")),
        _ => None,
    }
}

/// Replaces the `format`s of [`format_pattern`] by their patterns (where
/// the schema has no `pattern` of its own), in every subschema.
fn tighten_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let pattern = match map.get("format").and_then(Value::as_str) {
                Some(format) if !map.contains_key("pattern") => format_pattern(format),
                _ => None,
            };
            if let Some(pattern) = pattern {
                map.remove("format");
                map.insert("pattern".into(), Value::String(pattern));
            }
            for (key, value) in map.iter_mut() {
                // Values of these are data, not schemas.
                if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    tighten_formats(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tighten_formats),
        _ => {}
    }
}

/// The tokens allowed next, or why there are none.
fn next_mask(matcher: &mut Matcher) -> Result<SimpleVob, String> {
    let mask = matcher.compute_mask_or_eos().map_err(|e| e.to_string())?;
    if mask.is_zero() {
        return Err("the grammar allows no token here".into());
    }
    Ok(mask)
}

/// One reply's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// What the next token may be.
    next: SimpleVob,
    end: u32,
}

impl Constraint {
    /// Sets every logit the grammar does not allow next to `-inf`.
    pub fn mask(&self, logits: &mut [f32]) {
        let allowed = &self.next;
        for (id, logit) in logits.iter_mut().enumerate() {
            if !allowed.is_allowed(id as TokenId) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// Whether the grammar allows `token` next.
    pub fn allows(&self, token: u32) -> bool {
        self.next.is_allowed(token)
    }

    /// Takes a sampled token (never the end token) and computes what may
    /// follow it.
    pub fn accept(&mut self, token: u32) -> Result<(), String> {
        self.matcher
            .consume_token(token)
            .map_err(|e| e.to_string())?;
        self.next = next_mask(&mut self.matcher)?;
        Ok(())
    }

    /// The grammar is complete and allows nothing but the end: the reply
    /// ends here, without asking the model.
    pub fn only_end(&self) -> bool {
        self.next.num_set() == 1 && self.next.is_allowed(self.end)
    }
}
