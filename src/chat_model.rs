//! A chat model: its tokenizer, its chat template and its graph, loaded once
//! per isolate; [`ChatModel::generate`] starts one reply.

use tokenizers::Tokenizer;

use crate::causal_lm::{CausalLm, LmShape};
use crate::chat_template::{self, Message, Prompt, TemplateTokens};
use crate::error::CoreError;
use crate::generation::{GenerateOptions, Generation};
use crate::registry::{InputSpec, ModelSpec};

pub struct ChatModel {
    id: &'static str,
    tokenizer: Tokenizer,
    lm: CausalLm,
    template: TemplateTokens,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("model", &self.id)
            .field("shape", &self.lm.shape())
            .finish_non_exhaustive()
    }
}

impl ChatModel {
    /// Loads an embedded chat model. Costly: once per isolate.
    pub fn load(spec: &'static ModelSpec) -> Result<Self, CoreError> {
        Self::with_graph(spec, spec.artifact)
    }

    /// The embedded model's tokenizer and template with another graph of the
    /// same shape (the unquantized reference, in the golden test).
    pub fn with_graph(spec: &'static ModelSpec, onnx: &[u8]) -> Result<Self, CoreError> {
        let InputSpec::Chat {
            tokenizer,
            shape,
            template,
        } = spec.input
        else {
            return Err(CoreError::ModelLoad {
                model: spec.id,
                reason: "not a chat model".into(),
            });
        };
        Self::from_parts(spec.id, onnx, tokenizer, shape, template)
    }

    /// Builds a chat model from its files (the embedded ones, or a reference
    /// graph in tests).
    pub fn from_parts(
        id: &'static str,
        onnx: &[u8],
        tokenizer: &[u8],
        shape: LmShape,
        template: TemplateTokens,
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
        let lm = CausalLm::load(onnx, shape).map_err(fail)?;
        Ok(ChatModel {
            id,
            tokenizer,
            lm,
            template,
        })
    }

    pub fn spec_id(&self) -> &'static str {
        self.id
    }

    pub fn lm(&self) -> &CausalLm {
        &self.lm
    }

    pub fn template(&self) -> &TemplateTokens {
        &self.template
    }

    /// The context window in tokens (prompt + reply).
    pub fn context(&self) -> usize {
        self.lm.shape().context
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
            .map(|m| self.encode(&m.content))
            .collect::<Result<Vec<_>, _>>()?;
        let budget = self.context().saturating_sub(max_tokens);
        chat_template::render(&self.template, messages, &contents, budget)
            .map_err(CoreError::Prompt)
    }

    /// Starts generating after `prompt` (ids, as [`ChatModel::prompt`] makes).
    pub fn generate(&self, prompt: Vec<u32>, options: GenerateOptions) -> Generation<'_> {
        Generation::new(self, prompt, options)
    }
}
