//! The request limits, in one place: README.md's limits table lists the same
//! numbers, and the tests check each one through workerd.

/// Largest request body accepted, in bytes (413 beyond).
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Most bytes of an oversize body read (and dropped) before its 413, so the
/// connection stays usable for the client's next request.
pub const MAX_DRAINED_BYTES: usize = 32 << 20;
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

/// Most tokens one chat reply may generate (`max_tokens`, 422 beyond): the
/// model's 256-token context keeps at least 32 for the prompt.
pub const MAX_TOKENS: usize = 224;
/// `max_tokens` of a chat reply when neither the request nor the session sets it.
pub const DEFAULT_MAX_TOKENS: usize = 128;
/// Sampling defaults of a chat reply (the model's own: it was tuned with them).
pub const DEFAULT_TEMPERATURE: f64 = 0.8;
pub const DEFAULT_SAMPLING_TOP_K: usize = 40;
/// Most messages in one chat completion request (413 beyond).
pub const MAX_MESSAGES: usize = 256;
/// Most characters across the messages of one request (413 beyond).
pub const MAX_CHAT_CHARS: usize = 20_000;
/// `stop`: at most 4 sequences (as OpenAI) of at most 64 characters (422).
pub const MAX_STOP_SEQUENCES: usize = 4;
pub const MAX_STOP_CHARS: usize = 64;
/// A session holds at most this many stored messages (user and assistant);
/// a turn that would pass it is refused with 413, nothing is dropped.
pub const MAX_SESSION_MESSAGES: usize = 200;
/// A session's stored text, in bytes of UTF-8; a new turn is refused (413)
/// once the history has reached it.
pub const MAX_SESSION_BYTES: usize = 256 * 1024;
/// Longest system prompt of a session, in characters (413 beyond).
pub const MAX_SYSTEM_CHARS: usize = 4_000;
