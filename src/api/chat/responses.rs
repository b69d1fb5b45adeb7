//! The Responses API's wire format (OpenAI's `/v1/responses`, Open
//! Responses) for a turn's events: one `response` object at the end
//! ([`ResponseBody`]), or its semantic server-sent events as the reply is
//! made ([`ResponseEvents`]): `response.created`, `response.in_progress`,
//! then for text `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, or for a call `response.output_item.added`,
//! `response.function_call_arguments.delta`…,
//! `response.function_call_arguments.done`, `response.output_item.done`;
//! then `response.completed` (or `response.incomplete` when
//! `max_output_tokens` cut it), or `error` and `response.failed`.
//!
//! The request's own fields ([`ResponseHead::echo`]) are shown in every
//! `response` object, as OpenAI's are; a stored response is the same
//! object ([`object`]).

use serde_json::{json, Map, Value};

use super::shape::{CallMode, CallText, Piece};
use super::turn::{Event, Finish, Head};
use super::turn::{Render, WholeBody};
use super::wire::{sent_or_kept_alive, KEEPALIVE};

/// What every `response` object of one reply shows.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// `resp_…` as the id, its time and model.
    pub head: Head,
    /// The request's fields a response shows (instructions, tools, …).
    pub echo: Map<String, Value>,
    pub calls: CallMode,
}

impl ResponseHead {
    fn tail(&self) -> &str {
        self.head.id.strip_prefix("resp_").unwrap_or(&self.head.id)
    }

    /// The reply's message item id.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.tail())
    }

    /// The reply's function call item id, and the call's own id.
    pub fn call_ids(&self) -> (String, String) {
        (
            format!("fc_{}", self.tail()),
            format!("call_{}", self.tail()),
        )
    }
}

/// How a reply ended, as a response shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    /// `max_output_tokens` (or the context) cut it.
    Incomplete,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
        }
    }

    /// The status of a finished reply's `finish_reason` (`stop`, `length`).
    pub fn of(finish_reason: &str) -> Self {
        match finish_reason {
            "length" => Status::Incomplete,
            _ => Status::Completed,
        }
    }
}

/// The Responses API's usage, from a reply's token counts.
pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion
    })
}

/// The output items of a reply's whole text: one message, or one call.
pub fn output(head: &ResponseHead, text: &str, status: Status) -> Vec<Value> {
    let mut split = CallText::new(head.calls);
    split.push(text);
    split.end();
    let item_status = match status {
        Status::Completed => "completed",
        _ => "incomplete",
    };
    match split.call().filter(|_| split.is_call()) {
        Some((name, arguments)) => {
            let (id, call_id) = head.call_ids();
            vec![json!({
                "type": "function_call",
                "id": id,
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
                "status": item_status
            })]
        }
        None => vec![message_item(head, text, item_status)],
    }
}

fn message_item(head: &ResponseHead, text: &str, status: &str) -> Value {
    let content = match status {
        "in_progress" => json!([]),
        _ => json!([text_part(text)]),
    };
    json!({
        "type": "message",
        "id": head.message_id(),
        "status": status,
        "role": "assistant",
        "content": content
    })
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// A `response` object.
pub fn object(
    head: &ResponseHead,
    status: Status,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut map = Map::new();
    map.insert("id".into(), json!(head.head.id));
    map.insert("object".into(), json!("response"));
    map.insert("created_at".into(), json!(head.head.created));
    map.insert("status".into(), json!(status.as_str()));
    map.insert("error".into(), Value::Null);
    map.insert(
        "incomplete_details".into(),
        match status {
            Status::Incomplete => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        },
    );
    map.insert("model".into(), json!(head.head.model));
    map.insert("model_sha256".into(), json!(head.head.model_sha256));
    map.insert("output".into(), Value::Array(output));
    for (key, value) in &head.echo {
        map.insert(key.clone(), value.clone());
    }
    map.insert("usage".into(), usage.unwrap_or(Value::Null));
    Value::Object(map)
}

fn finish_usage(finish: &Finish) -> Value {
    usage(
        finish.usage.prompt_tokens,
        finish.usage.prompt_tokens_details.cached_tokens,
        finish.usage.completion_tokens,
    )
}

/// A reply as one `response` object.
pub struct ResponseBody {
    head: ResponseHead,
}

impl ResponseBody {
    pub fn new(head: ResponseHead) -> Self {
        ResponseBody { head }
    }
}

impl WholeBody for ResponseBody {
    fn body(&self, text: &str, finish: &Finish) -> Vec<u8> {
        let status = Status::of(finish.reason.as_str());
        let output = output(&self.head, text, status);
        let body = object(&self.head, status, output, Some(finish_usage(finish)));
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A reply as the Responses API's semantic events.
pub struct ResponseEvents {
    head: ResponseHead,
    split: CallText,
    sequence: u64,
    /// The text so far (a message's), or the call's arguments so far.
    text: String,
    /// Whether the output item was announced.
    opened: bool,
}

impl ResponseEvents {
    pub fn new(head: ResponseHead) -> Self {
        ResponseEvents {
            split: CallText::new(head.calls),
            head,
            sequence: 0,
            text: String::new(),
            opened: false,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Vec<u8> {
        if let Value::Object(map) = &mut data {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        let mut out = format!("event: {kind}\ndata: ").into_bytes();
        out.extend(serde_json::to_vec(&data).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        out
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    if !self.opened {
                        self.opened = true;
                        let item = message_item(&self.head, "", "in_progress");
                        out.extend(self.event(
                            "response.output_item.added",
                            json!({"output_index": 0, "item": item}),
                        ));
                        let item_id = self.head.message_id();
                        out.extend(self.event(
                            "response.content_part.added",
                            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": text_part("")}),
                        ));
                    }
                    self.text.push_str(&text);
                    let item_id = self.head.message_id();
                    out.extend(self.event(
                        "response.output_text.delta",
                        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
                    ));
                }
                Piece::Call(name) => {
                    self.opened = true;
                    let (id, call_id) = self.head.call_ids();
                    out.extend(self.event(
                        "response.output_item.added",
                        json!({"output_index": 0, "item": {
                            "type": "function_call", "id": id, "call_id": call_id,
                            "name": name, "arguments": "", "status": "in_progress"
                        }}),
                    ));
                }
                Piece::Arguments(arguments) => {
                    self.text.push_str(&arguments);
                    let (id, _) = self.head.call_ids();
                    out.extend(self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": 0, "delta": arguments}),
                    ));
                }
            }
        }
        out
    }

    fn finished(&mut self, finish: &Finish) -> Vec<u8> {
        let mut pieces = self.split.push(&finish.text);
        pieces.extend(self.split.end());
        let mut out = self.pieces(pieces);
        let status = Status::of(finish.reason.as_str());
        let item_status = match status {
            Status::Completed => "completed",
            _ => "incomplete",
        };
        let item = if let Some(name) = self.split.name().map(str::to_string) {
            let (id, call_id) = self.head.call_ids();
            let arguments = self.text.clone();
            out.extend(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": 0, "name": name, "arguments": arguments}),
            ));
            json!({
                "type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": arguments, "status": item_status
            })
        } else {
            if !self.opened {
                // An empty reply still has its message.
                out.extend(self.pieces(vec![Piece::Text(String::new())]));
            }
            let item_id = self.head.message_id();
            let text = self.text.clone();
            out.extend(self.event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.extend(self.event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": text_part(&text)}),
            ));
            message_item(&self.head, &text, item_status)
        };
        out.extend(self.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item.clone()}),
        ));
        let response = object(&self.head, status, vec![item], Some(finish_usage(finish)));
        let kind = match status {
            Status::Incomplete => "response.incomplete",
            _ => "response.completed",
        };
        out.extend(self.event(kind, json!({ "response": response })));
        out
    }
}

impl Render for ResponseEvents {
    fn render(&mut self, event: &Event) -> Vec<u8> {
        match event {
            Event::Started => {
                let response = object(&self.head, Status::InProgress, Vec::new(), None);
                let mut out = self.event("response.created", json!({ "response": response }));
                out.extend(self.event("response.in_progress", json!({ "response": response })));
                out
            }
            Event::Text(text) => {
                sent_or_kept_alive(self.split.push(text), |pieces| self.pieces(pieces))
            }
            Event::Pending => KEEPALIVE.to_vec(),
            Event::Finished(finish) => self.finished(finish),
            Event::Failed(e) => {
                let mut out = self.event(
                    "error",
                    json!({"code": e.code, "message": e.message, "param": e.param}),
                );
                let mut response = object(&self.head, Status::Failed, Vec::new(), None);
                response["error"] = json!({"code": e.code, "message": e.message});
                out.extend(self.event("response.failed", json!({ "response": response })));
                out
            }
            // The Responses API's streams end with the connection, no
            // `[DONE]`.
            Event::Done => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::chat::turn::Whole;
    use crate::decoder::generation::FinishReason;

    fn head(calls: CallMode) -> ResponseHead {
        let mut echo = Map::new();
        echo.insert("store".into(), json!(true));
        ResponseHead {
            head: Head {
                id: "resp_ab12".into(),
                created: 7,
                model: "m@1".into(),
                model_sha256: "abc",
            },
            echo,
            calls,
        }
    }

    use crate::api::chat::turn::finished as finish;

    /// Each event's type and data, streamed for a reply in `mode` that
    /// starts, then makes `events`.
    fn events(mode: CallMode, events: &[Event]) -> Vec<(String, Value)> {
        let mut render = ResponseEvents::new(head(mode));
        let bytes: Vec<u8> = std::iter::once(&Event::Started)
            .chain(events)
            .flat_map(|e| render.render(e))
            .collect();
        String::from_utf8(bytes)
            .unwrap()
            .split_terminator("\n\n")
            .filter(|e| e.starts_with("event: "))
            .map(|e| {
                let (kind, data) = e["event: ".len()..].split_once("\ndata: ").unwrap();
                (kind.to_string(), serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    #[test]
    fn text_streams_as_semantic_events_in_order() {
        let got = events(
            CallMode::Never,
            &[
                Event::Text("Hel".into()),
                Event::Pending,
                Event::Text("lo".into()),
                finish("!", FinishReason::Stop),
                Event::Done,
            ],
        );
        assert_eq!(
            got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (kind, data)) in got.iter().enumerate() {
            assert_eq!(data["type"], kind.as_str());
            assert_eq!(data["sequence_number"], i as u64);
        }
        assert_eq!(got[7].1["text"], "Hello!");
        let response = &got[10].1["response"];
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello!");
        assert_eq!(
            response["usage"]["input_tokens_details"]["cached_tokens"],
            2
        );
        assert_eq!(response["store"], true);
    }

    #[test]
    fn a_call_streams_its_arguments_and_a_cut_reply_is_incomplete() {
        let got = events(
            CallMode::Always,
            &[
                Event::Text("{\"name\":\"f\",\"arguments\":{\"a\"".into()),
                Event::Text(":1}".into()),
                finish("}", FinishReason::Stop),
            ],
        );
        assert_eq!(
            got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                // The last `}` of each piece is held back until the next
                // shows it closes the arguments, not the call.
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(got[2].1["item"]["name"], "f");
        let deltas: String = got[3..6]
            .iter()
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "{\"a\":1}");
        assert_eq!(got[6].1["arguments"], "{\"a\":1}");
        let item = &got[8].1["response"]["output"][0];
        assert_eq!(item["call_id"], "call_ab12");
        assert_eq!(item["arguments"], "{\"a\":1}");

        let mut body = Whole::new(ResponseBody::new(head(CallMode::Never)));
        let out: Vec<u8> = [Event::Text("Hi".into()), finish("", FinishReason::Length)]
            .iter()
            .flat_map(|e| body.render(e))
            .collect();
        let response: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(response["status"], "incomplete");
        assert_eq!(
            response["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(response["output"][0]["content"][0]["text"], "Hi");
    }
}
