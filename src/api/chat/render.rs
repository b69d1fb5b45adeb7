//! Renderers: a turn's [`Event`]s in one wire format. The turn says what
//! happened (started, text, finished with this usage, failed); a renderer
//! says what a client of one API reads for it. Chat completions have two:
//! [`CompletionBody`] (one `chat.completion` at the end) and
//! [`CompletionChunks`] (`chat.completion.chunk` server-sent events). A
//! new format (the Responses API's semantic events, tool calls) is a new
//! [`Render`] and a new [`Wire`], with the turn as it is.
//!
//! Whether a reply streams is an HTTP matter, not a format's: [`Output`]
//! sends a stream's bytes as each event is rendered, or gathers a whole
//! reply and answers it at the end, with the status of the error that
//! ended it if one did.

use serde_json::json;

use super::responses::{ResponseBody, ResponseEvents, ResponseHead};
use super::shape::{CallMode, CallText, Piece};
use super::turn::{Event, Finish, Head};
pub use super::turn::{Render, Whole, WholeBody};
use super::wire::{
    sent_or_kept_alive, sse, AssistantMessage, ChatUsage, Choice, Chunk, ChunkChoice, ChunkDelta,
    Completion, DONE, KEEPALIVE,
};
use crate::api::error::ApiError;
use crate::api::{HttpResponse, Served};

/// How a reply goes out, as its request asked (serialized: a stored
/// response's turn travels to its Durable Object planned).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Wire {
    /// One `chat.completion` body once the reply is complete; `session`
    /// names the session that now holds it.
    Completion {
        session: Option<String>,
        calls: CallMode,
    },
    /// `chat.completion.chunk` events as the reply is made, a usage chunk
    /// before `data: [DONE]` if asked.
    Chunks {
        include_usage: bool,
        calls: CallMode,
    },
    /// The Responses API: one `response` object, or its semantic events
    /// when `stream`; `echo` holds the request's fields every `response`
    /// object shows.
    Responses {
        stream: bool,
        echo: serde_json::Map<String, serde_json::Value>,
        calls: CallMode,
    },
}

impl Wire {
    /// What a chat completion (or a session message, which takes the same
    /// fields) asked for.
    pub fn chat(stream: bool, include_usage: bool, session: Option<String>) -> Self {
        if stream {
            Wire::Chunks {
                include_usage,
                calls: CallMode::Never,
            }
        } else {
            Wire::Completion {
                session,
                calls: CallMode::Never,
            }
        }
    }

    /// The same format, reading the reply as a tool call as `mode` says.
    pub fn with_calls(self, mode: CallMode) -> Self {
        match self {
            Wire::Completion { session, .. } => Wire::Completion {
                session,
                calls: mode,
            },
            Wire::Chunks { include_usage, .. } => Wire::Chunks {
                include_usage,
                calls: mode,
            },
            Wire::Responses { stream, echo, .. } => Wire::Responses {
                stream,
                echo,
                calls: mode,
            },
        }
    }

    /// Whether the reply is a stream (its status and headers go out first,
    /// then each event as it comes), else one body at its end.
    pub fn streams(&self) -> bool {
        match self {
            Wire::Completion { .. } => false,
            Wire::Chunks { .. } => true,
            Wire::Responses { stream, .. } => *stream,
        }
    }

    /// The renderer of this format for the reply `head` names.
    pub fn renderer(&self, head: Head) -> Box<dyn Render> {
        match self {
            Wire::Completion { session, calls } => Box::new(Whole::new(
                CompletionBody::new(head, session.clone()).with_calls(*calls),
            )),
            Wire::Chunks {
                include_usage,
                calls,
            } => Box::new(CompletionChunks::new(head, *include_usage).with_calls(*calls)),
            Wire::Responses {
                stream,
                echo,
                calls,
            } => {
                let head = ResponseHead {
                    head,
                    echo: echo.clone(),
                    calls: *calls,
                };
                match stream {
                    true => Box::new(ResponseEvents::new(head)),
                    false => Box::new(Whole::new(ResponseBody::new(head))),
                }
            }
        }
    }
}

/// A reply as one `chat.completion`.
pub struct CompletionBody {
    head: Head,
    session: Option<String>,
    calls: CallMode,
}

/// A call's id, from its reply's (one call per reply).
pub fn call_id(head: &Head) -> String {
    let tail = head.id.rsplit('-').next().unwrap_or(&head.id);
    format!("call_{tail}")
}

/// The finish reason a client reads: a complete call ends as
/// `tool_calls`.
fn finish_reason(finish: &Finish, call: bool) -> &'static str {
    match finish.reason.as_str() {
        "stop" if call => "tool_calls",
        reason => reason,
    }
}

impl CompletionBody {
    pub fn new(head: Head, session: Option<String>) -> Self {
        CompletionBody {
            head,
            session,
            calls: CallMode::Never,
        }
    }

    pub fn with_calls(mut self, calls: CallMode) -> Self {
        self.calls = calls;
        self
    }
}

impl WholeBody for CompletionBody {
    fn body(&self, text: &str, finish: &Finish) -> Vec<u8> {
        let mut split = CallText::new(self.calls);
        split.push(text);
        split.end();
        if let Some((name, arguments)) = split.call().filter(|_| split.is_call()) {
            let body = json!({
                "id": self.head.id,
                "object": "chat.completion",
                "created": self.head.created,
                "model": self.head.model,
                "model_sha256": self.head.model_sha256,
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "refusal": null,
                        "tool_calls": [{
                            "id": call_id(&self.head),
                            "type": "function",
                            "function": {"name": name, "arguments": arguments}
                        }]
                    },
                    "finish_reason": finish_reason(finish, true),
                    "logprobs": null
                }],
                "usage": finish.usage,
            });
            return serde_json::to_vec(&body).unwrap_or_default();
        }
        let body = Completion {
            id: &self.head.id,
            object: "chat.completion",
            created: self.head.created,
            model: &self.head.model,
            model_sha256: self.head.model_sha256,
            choices: [Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                finish_reason: finish_reason(finish, false),
                logprobs: None,
            }],
            usage: finish.usage.clone(),
            session: self.session.as_deref(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A reply as `chat.completion.chunk` server-sent events: the role first,
/// then the text as it comes, the finish reason with the last of it, the
/// usage if asked, and `data: [DONE]`; an error mid-stream is an `error`
/// event before `[DONE]` (the status line has already gone out).
pub struct CompletionChunks {
    head: Head,
    include_usage: bool,
    split: CallText,
}

impl CompletionChunks {
    pub fn new(head: Head, include_usage: bool) -> Self {
        CompletionChunks {
            head,
            include_usage,
            split: CallText::new(CallMode::Never),
        }
    }

    pub fn with_calls(mut self, calls: CallMode) -> Self {
        self.split = CallText::new(calls);
        self
    }

    /// The chunks of a reply's text: content, or a call's start and its
    /// arguments as OpenAI streams them (`delta.tool_calls[0]`).
    fn pieces(&self, pieces: Vec<Piece>) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.extend(self.chunk(None, Some(&text), None, None)),
                Piece::Call(name) => out.extend(self.call_chunk(json!({
                    "index": 0,
                    "id": call_id(&self.head),
                    "type": "function",
                    "function": {"name": name, "arguments": ""}
                }))),
                Piece::Arguments(arguments) => out.extend(self.call_chunk(json!({
                    "index": 0,
                    "function": {"arguments": arguments}
                }))),
            }
        }
        out
    }

    fn call_chunk(&self, call: serde_json::Value) -> Vec<u8> {
        let chunk = json!({
            "id": self.head.id,
            "object": "chat.completion.chunk",
            "created": self.head.created,
            "model": self.head.model,
            "choices": [{
                "index": 0,
                "delta": {"tool_calls": [call]},
                "finish_reason": null,
                "logprobs": null
            }]
        });
        sse(&serde_json::to_vec(&chunk).unwrap_or_default())
    }

    fn chunk(
        &self,
        role: Option<&'static str>,
        content: Option<&str>,
        finish: Option<&'static str>,
        usage: Option<ChatUsage>,
    ) -> Vec<u8> {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta: ChunkDelta { role, content },
                finish_reason: finish,
                logprobs: None,
            }]
        };
        let chunk = Chunk {
            id: &self.head.id,
            object: "chat.completion.chunk",
            created: self.head.created,
            model: &self.head.model,
            choices,
            usage,
        };
        sse(&serde_json::to_vec(&chunk).unwrap_or_default())
    }
}

impl Render for CompletionChunks {
    fn render(&mut self, event: &Event) -> Vec<u8> {
        match event {
            Event::Started => self.chunk(Some("assistant"), Some(""), None, None),
            Event::Text(text) => {
                sent_or_kept_alive(self.split.push(text), |pieces| self.pieces(pieces))
            }
            // A comment line: one event per model step, no chunk a client
            // would see.
            Event::Pending => KEEPALIVE.to_vec(),
            Event::Finished(finish) => {
                let mut pieces = self.split.push(&finish.text);
                pieces.extend(self.split.end());
                let mut out = Vec::new();
                let mut last = None;
                // The last text piece goes with the finish reason, as before.
                if let Some(Piece::Text(_)) = pieces.last() {
                    if let Some(Piece::Text(text)) = pieces.pop() {
                        last = Some(text);
                    }
                }
                out.extend(self.pieces(pieces));
                let reason = finish_reason(finish, self.split.is_call());
                let content = last.as_deref().filter(|t| !t.is_empty());
                out.extend(self.chunk(None, content, Some(reason), None));
                if self.include_usage {
                    out.extend(self.chunk(None, None, None, Some(finish.usage.clone())));
                }
                out
            }
            Event::Failed(e) => sse(&e.body()),
            Event::Done => DONE.to_vec(),
        }
    }
}

/// A reply's body in its wire format as the events come: a stream's bytes
/// go out event by event; a whole reply is gathered and answered at its
/// end, or answered as the error that ended it (with that error's status:
/// nothing has gone out yet).
pub struct Output {
    render: Box<dyn Render>,
    stream: bool,
    /// A whole reply's body so far.
    body: Vec<u8>,
    failed: Option<ApiError>,
}

impl Output {
    pub fn new(wire: &Wire, head: Head) -> Self {
        Output {
            render: wire.renderer(head),
            stream: wire.streams(),
            body: Vec::new(),
            failed: None,
        }
    }

    pub fn streams(&self) -> bool {
        self.stream
    }

    /// What to send now for `event`: a stream's bytes; nothing while a
    /// whole reply gathers.
    pub fn event(&mut self, event: Event) -> Vec<u8> {
        if self.stream {
            return self.render.render(&event);
        }
        match event {
            Event::Failed(e) => {
                self.failed.get_or_insert(e);
            }
            event => self.body.extend(self.render.render(&event)),
        }
        Vec::new()
    }

    /// A whole reply's answer once its turn is done: the body with the
    /// model that served it, or the error that ended it.
    pub fn answer(self, served: Served) -> HttpResponse {
        match self.failed {
            Some(e) => HttpResponse::error(e),
            None => HttpResponse::reply(self.body, served),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::generation::FinishReason;

    fn head() -> Head {
        Head {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m@1".into(),
            model_sha256: "abc",
        }
    }

    fn finish(text: &str) -> Event {
        super::super::turn::finished(text, FinishReason::Stop)
    }

    fn reply(tail: &str) -> Vec<Event> {
        vec![
            Event::Started,
            Event::Text("Hi".into()),
            Event::Pending,
            finish(tail),
            Event::Done,
        ]
    }

    fn rendered(render: &mut dyn Render, events: &[Event]) -> String {
        let bytes: Vec<u8> = events.iter().flat_map(|e| render.render(e)).collect();
        String::from_utf8(bytes).unwrap()
    }

    const CHUNK: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m@1","choices":"#;
    const USAGE: &str = r#""usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2},"dropped_messages":0,"cpu_ms":1.5}"#;

    #[test]
    fn chunks_carry_the_role_then_text_then_the_last_text_with_the_finish() {
        let mut chunks = CompletionChunks::new(head(), true);
        let want = [
            format!(r#"{CHUNK}[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null,"logprobs":null}}]}}"#),
            format!(r#"{CHUNK}[{{"index":0,"delta":{{"content":"Hi"}},"finish_reason":null,"logprobs":null}}]}}"#),
            ": ".into(),
            format!(r#"{CHUNK}[{{"index":0,"delta":{{"content":" there"}},"finish_reason":"stop","logprobs":null}}]}}"#),
            format!("{CHUNK}[],{USAGE}}}"),
            "data: [DONE]".into(),
        ]
        .map(|e| e + "\n\n")
        .concat();
        assert_eq!(rendered(&mut chunks, &reply(" there")), want);
        // Nothing held back at the end: the finish chunk has no content.
        let mut chunks = CompletionChunks::new(head(), false);
        let out = rendered(&mut chunks, &reply(""));
        assert!(
            out.contains(r#""delta":{},"finish_reason":"stop""#),
            "{out}"
        );
        assert!(!out.contains("usage"), "{out}");
    }

    #[test]
    fn a_failure_mid_stream_is_an_error_event_before_done() {
        let mut chunks = CompletionChunks::new(head(), true);
        let error = ApiError::unavailable("shard 2 is down");
        let out = rendered(
            &mut chunks,
            &[Event::Started, Event::Failed(error.clone()), Event::Done],
        );
        let events: Vec<&str> = out.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 3, "{out}");
        assert_eq!(
            events[1].as_bytes(),
            [b"data: ", &error.body()[..]].concat()
        );
        assert_eq!(events[2], "data: [DONE]");
    }

    #[test]
    fn a_whole_reply_is_one_completion_or_the_error_with_its_status() {
        let wire = Wire::chat(false, true, Some("s1".into()));
        let mut out = Output::new(&wire, head());
        for event in reply(" there") {
            assert!(out.event(event).is_empty());
        }
        let served = Served::new(&crate::registry::MODELS[0], false);
        let res = out.answer(served.clone());
        assert_eq!(res.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 8);
        assert_eq!(body["session"], "s1");
        assert!(res.model.is_some());

        let mut out = Output::new(&wire, head());
        out.event(Event::Started);
        out.event(Event::Failed(ApiError::unavailable("shard 2 is down")));
        out.event(Event::Done);
        let res = out.answer(served);
        assert_eq!(res.status, 503);
        assert!(res.model.is_none());
    }
}
