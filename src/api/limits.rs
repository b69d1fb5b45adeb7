//! The request limits, in one place: README.md's limits table lists the same
//! numbers, and the tests check each one through workerd.

/// Largest request body accepted, in bytes (413 beyond).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Most texts in one `input` array (413 beyond).
pub const MAX_INPUTS: usize = 128;
/// Longest single text, in Unicode scalar values (413 beyond).
pub const MAX_INPUT_CHARS: usize = 20_000;
/// Default number of labels returned per input when `top_k` is absent.
pub const DEFAULT_TOP_K: usize = 3;
/// Most tokens across all texts of one embeddings/similarity/classify request
/// on a token model, special tokens included (413 beyond). Inputs longer than
/// the model's own limit (256 for all-minilm-l6-v2) are truncated, not refused.
pub const MAX_TOTAL_TOKENS: usize = 8192;
