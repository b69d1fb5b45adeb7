//! The core's single error type. The HTTP layer maps each variant to a status.
//! A leaf: every module may return these, and this imports none of them.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// No embedded model has this id (or this id@version).
    #[error("model `{0}` does not exist")]
    UnknownModel(String),
    /// The model exists but does another task than the one asked for.
    #[error("model `{model}` does {task}, not {wanted}")]
    WrongTask {
        model: String,
        task: &'static str,
        wanted: &'static str,
    },
    /// The embedded bytes could not be turned into a runnable model. build.rs
    /// loads every graph, so this means a bug, not bad input.
    #[error("model `{model}` failed to load: {reason}")]
    ModelLoad { model: &'static str, reason: String },
    /// A loaded model failed while running (a bug, not bad input: inputs
    /// are validated before a model runs).
    #[error("inference with `{model}` failed: {reason}")]
    Inference { model: &'static str, reason: String },
    /// The conversation cannot become a prompt for the model.
    #[error("{0}")]
    Prompt(TemplateError),
}

/// Why a conversation cannot become a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// No user or assistant message to answer.
    NoTurns,
    /// Even with every droppable message dropped, the system message and the
    /// last message need `needed` tokens, more than `budget`.
    TooLong { needed: usize, budget: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::NoTurns => write!(f, "messages must include a user message"),
            TemplateError::TooLong { needed, budget } => write!(
                f,
                "the system message and the last message need {needed} prompt tokens; \
                 at most {budget} fit with the requested max_tokens"
            ),
        }
    }
}
