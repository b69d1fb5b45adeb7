//! What chat replies look like on the wire: OpenAI's `chat.completion` and
//! `chat.completion.chunk` objects (the renderers in [`super::render`] fill
//! them), and the server-sent event framing every streamed reply (worker or
//! native) goes out in.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ChatUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// OpenAI's field: how much of the prompt was not computed again.
    pub prompt_tokens_details: PromptTokensDetails,
    /// Oldest messages left out because the conversation outgrew the
    /// model's context (never the system message or the last message).
    pub dropped_messages: usize,
    /// Estimated CPU ms of the prompt and the generation in the worker
    /// (see api::timing).
    pub cpu_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Serialize)]
pub(super) struct Completion<'a> {
    pub(super) id: &'a str,
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) model: &'a str,
    pub(super) model_sha256: &'a str,
    pub(super) choices: [Choice<'a>; 1],
    pub(super) usage: ChatUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) session: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct Choice<'a> {
    pub(super) index: usize,
    pub(super) message: AssistantMessage<'a>,
    pub(super) finish_reason: &'static str,
    pub(super) logprobs: Option<()>,
}

#[derive(Serialize)]
pub(super) struct AssistantMessage<'a> {
    pub(super) role: &'static str,
    pub(super) content: &'a str,
}

#[derive(Serialize)]
pub(super) struct Chunk<'a> {
    pub(super) id: &'a str,
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) model: &'a str,
    pub(super) choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<ChatUsage>,
}

#[derive(Serialize)]
pub(super) struct ChunkChoice<'a> {
    pub(super) index: usize,
    pub(super) delta: ChunkDelta<'a>,
    pub(super) finish_reason: Option<&'static str>,
    pub(super) logprobs: Option<()>,
}

#[derive(Serialize)]
pub(super) struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<&'a str>,
}

/// One server-sent event carrying `json`.
pub fn sse(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// The last event of every stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// A comment line: keeps one event per model step without a chunk a
/// client would see.
pub const KEEPALIVE: &[u8] = b": \n\n";

/// A stream's new text as its client sees it: the pieces the call
/// splitter let out, sent; or, when it held them all back (a call's
/// closing brace, an undecided start), a sign of life.
pub fn sent_or_kept_alive(
    pieces: Vec<super::shape::Piece>,
    send: impl FnOnce(Vec<super::shape::Piece>) -> Vec<u8>,
) -> Vec<u8> {
    match pieces.is_empty() {
        true => KEEPALIVE.to_vec(),
        false => send(pieces),
    }
}

/// Headers of a streamed reply.
pub const SSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];
