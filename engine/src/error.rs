//! What an engine reports about an input it cannot run.

use thiserror::Error;

/// An engine was handed an input outside what it runs (more tokens than
/// its positions, features of the wrong width). The routes check inputs
/// first, so this is a caller's bug, reported as an inference failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InputError(pub String);
