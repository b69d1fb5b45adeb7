//! The core's single error type. The HTTP layer maps each variant to a status.

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
    Prompt(crate::decoder::template::TemplateError),
}
