//! A chat model: its tokenizer, its chat template and its decoder, loaded
//! once per isolate; a generation (one reply) runs over it.
//!
//! The decoder may be the whole model (run here) or its config alone, when
//! the weights are in shard Workers: then a generation asks its caller for
//! each pass's logits.

use std::sync::OnceLock;

use tokenizers::Tokenizer;

use super::constraint::Constraints;
use super::template::{self, Message, Prompt, Template, TemplateSpec};
use crate::error::CoreError;
use edgeinfer_engine::decoder::Decoder;

pub struct ChatModel {
    id: &'static str,
    tokenizer: Tokenizer,
    decoder: Decoder,
    template: Template,
    /// [`Template::public_start`], empty without one.
    public_start: Vec<u32>,
    /// Built on the first constrained reply (see [`ChatModel::constraints`]).
    constraints: OnceLock<Result<Constraints, String>>,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("model", &self.id)
            .field("config", self.decoder.config())
            .finish_non_exhaustive()
    }
}

impl ChatModel {
    /// Builds a chat model from its packed decoder (see
    /// [`super::format`]: the whole model, or its config alone), its
    /// `tokenizer.json` and its template. Costly only for the tokenizer:
    /// the weights are read in place.
    pub fn load(
        id: &'static str,
        packed: &'static [u8],
        tokenizer: &[u8],
        template: TemplateSpec,
    ) -> Result<Self, CoreError> {
        let fail = |reason: String| CoreError::ModelLoad { model: id, reason };
        let mut tokenizer = Tokenizer::from_bytes(tokenizer).map_err(|e| fail(e.to_string()))?;
        // Message text is text: "<|system|>" typed by a user must not become
        // the control token (prompt injection into the template).
        tokenizer.set_encode_special_tokens(true);
        tokenizer
            .with_truncation(None)
            .map_err(|e| fail(e.to_string()))?;
        tokenizer.with_padding(None);
        let decoder = Decoder::parse(packed).map_err(|e| fail(e.to_string()))?;
        if tokenizer.get_vocab_size(true) > decoder.config().vocab {
            return Err(fail("the tokenizer has more tokens than the model".into()));
        }
        let template = match template {
            TemplateSpec::Tokens(tokens) => Template::from(tokens),
            TemplateSpec::ChatMl {
                start,
                end,
                default_system,
            } => {
                let ids = |text: &str| {
                    tokenizer
                        .encode(text, false)
                        .map(|e| e.get_ids().to_vec())
                        .map_err(|e| fail(format!("tokenizing the template: {e}")))
                };
                let newline = ids("\n")?;
                // Every special token ends a reply (<|im_end|> normally).
                let mut controls: Vec<u32> = tokenizer
                    .get_added_tokens_decoder()
                    .iter()
                    .filter(|(_, t)| t.special)
                    .map(|(&id, _)| id)
                    .chain([start, end])
                    .collect();
                controls.sort_unstable();
                controls.dedup();
                Template {
                    begin: Vec::new(),
                    prefixes: [vec![start], vec![start], vec![start], vec![start]],
                    texts: [
                        "system\n".into(),
                        "user\n".into(),
                        "assistant\n".into(),
                        "tool\n".into(),
                    ],
                    suffix: [vec![end], newline].concat(),
                    reply: [vec![start], ids("assistant\n")?].concat(),
                    // None when the model's template adds no system message.
                    default_system: match default_system.is_empty() {
                        true => None,
                        false => Some(ids(&format!("system\n{default_system}"))?),
                    },
                    controls,
                }
            }
        };
        Ok(ChatModel {
            id,
            tokenizer,
            decoder,
            public_start: template.public_start().unwrap_or_default(),
            template,
            constraints: OnceLock::new(),
        })
    }

    /// What compiles this model's grammars, built on first use (the token
    /// trie of its vocabulary): the isolate's model is `'static`, so the
    /// trie reads its tokenizer in place. `Err` (a vocabulary llguidance
    /// cannot take) is kept too, and told to every constrained request.
    pub fn constraints(&'static self) -> Result<&'static Constraints, CoreError> {
        let built = self.constraints.get_or_init(|| {
            let end = self.template.suffix.first().copied().unwrap_or(0);
            Constraints::new(&self.tokenizer, self.decoder.config().vocab, end)
        });
        built.as_ref().map_err(|reason| CoreError::Inference {
            model: self.id,
            reason: format!("building the grammar tables: {reason}"),
        })
    }

    /// Whether the grammar tables are built (a request that builds them
    /// reports the time).
    pub fn has_constraints(&self) -> bool {
        self.constraints.get().is_some()
    }

    pub fn spec_id(&self) -> &'static str {
        self.id
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// What every prompt without its own system message starts with
    /// (empty when the template has no default one): the server's text,
    /// whose cache every caller may share.
    pub fn public_start(&self) -> &[u32] {
        &self.public_start
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Whether this isolate holds the weights (else shard Workers do).
    pub fn is_local(&self) -> bool {
        self.decoder.part().is_whole()
    }

    /// The context window in tokens (prompt + reply).
    pub fn context(&self) -> usize {
        self.decoder.config().context
    }

    /// Token ids of plain text (no special tokens added or recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, CoreError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| CoreError::Inference {
                model: self.id,
                reason: format!("tokenizing: {e}"),
            })
    }

    /// Text of generated ids (control tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String, CoreError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| CoreError::Inference {
                model: self.id,
                reason: format!("decoding: {e}"),
            })
    }

    /// The prompt for `messages`, leaving room for `max_tokens` of reply;
    /// oldest turns are dropped when the conversation does not fit.
    pub fn prompt(&self, messages: &[Message], max_tokens: usize) -> Result<Prompt, CoreError> {
        let contents = messages
            .iter()
            .map(|m| match self.template.text(m.role) {
                "" => self.encode(&m.content),
                text => self.encode(&format!("{text}{}", m.content)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let budget = self.context().saturating_sub(max_tokens);
        template::render(&self.template, messages, &contents, budget).map_err(CoreError::Prompt)
    }
}
