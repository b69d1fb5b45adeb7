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

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tokenizer
            .encode(String::from_utf8_lossy(s).as_ref(), false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
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
                if let Value::Object(map) = &mut schema {
                    let options: Value =
                        serde_json::from_str(JSON_OPTIONS).map_err(|e| e.to_string())?;
                    map.insert("x-guidance".into(), options);
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| e.to_string())?;
        let mut matcher = Matcher::new(Ok(parser));
        let next = next_mask(&mut matcher)?;
        Ok(Constraint {
            matcher,
            next,
            end: self.end,
        })
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
