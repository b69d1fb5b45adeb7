//! `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`: OpenAI's
//! Responses API (Open Responses) over the same chat turn, with its own
//! renderers ([`super::chat::responses`]).
//!
//! State: a stored response (`store: true`, the default, as OpenAI's) is a
//! session of its own, id `resp_…`, created whole when its reply is
//! complete (its Durable Object in the worker, [`SessionStore`] anywhere):
//! the conversation up to it (the previous response's, then this
//! request's input, then the reply) and a last row with what the response
//! object shows. `previous_response_id` reads that conversation back (the
//! caller's own: another key's id is the same 404 as a missing one) and
//! continues it; the sharded model's shards match the prompt's prefix
//! against the caches they kept of the previous turn, as for sessions.
//! `instructions` are not carried over from a previous response (OpenAI's
//! rule): they apply to the request that sends them.
//!
//! Not served (a 4xx naming the field, never ignored): built-in tools
//! (web search, file search, computer use, code interpreter, MCP), images
//! and files in the input, `reasoning`, `background`, `conversation`,
//! `prompt` templates, `include`, `top_logprobs`, more than one call per
//! reply, `item_reference` and `reasoning` input items.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::chat::responses::{self as wire, ResponseHead, Status};
use super::chat::shape::{self, CallMode, CallText, Shape};
use super::chat::{
    message_content, with_instructions, ChatTurn, GenerationFields, Head, RequestMeta, TurnPlan,
    Wire,
};
use super::error::ApiError;
use super::limits::{MAX_CHAT_CHARS, MAX_MESSAGES};
use super::parse::{json_body, kind, no_unknown_fields};
use super::sessions::{
    PreparedTurn, Session, SessionCall, SessionMeta, SessionOp, StoredMessage, STATE_ROLE,
};
use super::{hex, Context, HttpRequest, HttpResponse};
use crate::decoder::template::{Message, Role};
use crate::registry::{self, ModelSpec};

/// The most rows a stored conversation may hold (each response stores the
/// whole conversation up to it in one statement; the Durable Object's
/// SQLite binds at most 100 values in one).
pub const MAX_RESPONSE_ROWS: usize = 96;

/// A response route's request.
#[derive(Debug)]
pub enum ResponseRequest {
    Create(Box<ResponsesCall>),
    Get(String),
    Delete(String),
}

/// The body of `POST /v1/responses`.
#[derive(Debug, Deserialize)]
struct ResponsesBody {
    model: String,
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    /// Accepted (`include_obfuscation` has nothing to pad here).
    #[serde(default)]
    #[allow(dead_code)]
    stream_options: Option<Value>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    /// `disabled` or `auto`: the oldest turns are dropped to fit either way.
    #[serde(default)]
    truncation: Option<String>,
    /// End-user ids and cache hints: accepted and ignored, as `user` is on
    /// chat completions.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    safety_identifier: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    prompt_cache_key: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// A checked `POST /v1/responses`.
#[derive(Debug)]
pub struct ResponsesCall {
    pub spec: &'static ModelSpec,
    /// `input` as messages (calls and their outputs included).
    input: Vec<Message>,
    instructions: Option<String>,
    generation: GenerationFields,
    shape: Shape,
    pub stream: bool,
    pub store: bool,
    pub previous: Option<String>,
    /// The request's fields every response object shows.
    echo: Map<String, Value>,
    /// Call ids the input's `function_call` items made, and the ones its
    /// `function_call_output` items answer (with their index).
    made: Vec<String>,
    answered: Vec<(usize, String)>,
}

/// What a stored response keeps besides its conversation.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct State {
    echo: Map<String, Value>,
    calls: CallMode,
    /// Every call id made in the conversation before the reply.
    call_ids: Vec<String>,
}

/// `resp_` and 32 hex digits.
pub fn new_id(ctx: &Context<'_>) -> String {
    let mut bytes = [0u8; 16];
    (ctx.random)(&mut bytes);
    format!("resp_{}", hex(&bytes))
}

/// 404 for an id that is malformed, missing, deleted or another key's:
/// the same answer every time, so probing reveals nothing.
pub fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(
        "response_not_found",
        format!(
            "response `{shown}` does not exist (or was deleted, or was not stored: `store: false`)"
        ),
    )
}

pub fn check_id(id: &str) -> Result<(), ApiError> {
    match id.strip_prefix("resp_") {
        Some(tail) if tail.len() == 32 && tail.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err(not_found(id)),
    }
}

/// A store's answer about a response's session, in the response's words
/// (its 404 is the response's).
pub fn answered_as_response(e: ApiError, id: &str) -> ApiError {
    match e.status {
        404 => not_found(id),
        _ => e,
    }
}

/// Parses and checks `POST /v1/responses` (everything but what depends on
/// the previous response, see [`ResponsesCall::prepare`]).
pub fn parse(req: &HttpRequest<'_>) -> Result<ResponsesCall, ApiError> {
    let body: ResponsesBody = json_body(req)?;
    no_unknown_fields(&body.unknown)?;
    let spec = registry::chat_spec(&body.model)?;
    if let Some(t) = body.truncation.as_deref() {
        if !["disabled", "auto"].contains(&t) {
            return Err(
                ApiError::invalid(format!("`truncation` is {t:?}; use disabled or auto"))
                    .with_param("truncation"),
            );
        }
    }
    if let Some(tier) = body.service_tier.as_deref() {
        if !["auto", "default"].contains(&tier) {
            return Err(ApiError::invalid(format!(
                "`service_tier` is {tier:?}; only auto and default are served"
            ))
            .with_param("service_tier"));
        }
    }
    let generation = GenerationFields {
        max_tokens: body.max_output_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        ..GenerationFields::default()
    };
    generation
        .options(0)
        .map_err(|e| match e.param.as_deref() {
            Some("max_tokens") => {
                ApiError::invalid(e.message.replace("max_tokens", "max_output_tokens"))
                    .with_param("max_output_tokens")
            }
            _ => e,
        })?;
    let json = match body.text.as_ref().and_then(|t| t.get("format")) {
        None | Some(Value::Null) => None,
        Some(format) => shape::response_format(format, "text.format", false)?,
    };
    if let Some(text) = &body.text {
        if let Some(field) = text.as_object().and_then(|m| {
            m.keys()
                .find(|k| !["format", "verbosity"].contains(&k.as_str()))
        }) {
            return Err(
                ApiError::invalid(format!("`text.{field}` is not supported"))
                    .with_param(format!("text.{field}")),
            );
        }
    }
    let shape = shape::of(
        json,
        "text.format",
        body.tools.as_ref(),
        body.tool_choice.as_ref(),
    )?;
    let metadata = match &body.metadata {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Value::Object(m.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`metadata` must be an object of at most 16 string values",
            )
            .with_param("metadata"))
        }
    };
    let (input, made, answered) = input_messages(&body.input)?;
    if let Some(id) = &body.previous_response_id {
        check_id(id).map_err(|e| e.with_param("previous_response_id"))?;
    }
    let store = body.store.unwrap_or(true);
    let mut echo = Map::new();
    echo.insert("instructions".into(), json!(body.instructions));
    echo.insert("max_output_tokens".into(), json!(body.max_output_tokens));
    echo.insert("temperature".into(), json!(body.temperature));
    echo.insert("top_p".into(), json!(body.top_p));
    echo.insert(
        "text".into(),
        json!({"format": body.text.as_ref().and_then(|t| t.get("format")).cloned().unwrap_or(json!({"type": "text"}))}),
    );
    echo.insert("tools".into(), body.tools.clone().unwrap_or(json!([])));
    echo.insert(
        "tool_choice".into(),
        body.tool_choice.clone().unwrap_or(json!("auto")),
    );
    echo.insert(
        "parallel_tool_calls".into(),
        json!(body.parallel_tool_calls.unwrap_or(true)),
    );
    echo.insert(
        "previous_response_id".into(),
        json!(body.previous_response_id),
    );
    echo.insert("store".into(), json!(store));
    echo.insert("metadata".into(), metadata);
    echo.insert(
        "truncation".into(),
        json!(body.truncation.as_deref().unwrap_or("disabled")),
    );
    Ok(ResponsesCall {
        spec,
        input,
        instructions: body.instructions,
        generation,
        shape,
        stream: body.stream.unwrap_or(false),
        store,
        previous: body.previous_response_id,
        echo,
        made,
        answered,
    })
}

/// `input`: a string (one user message) or items: messages (`{role,
/// content}`, with or without `type: "message"`), `function_call` and
/// `function_call_output`. With the call ids made and answered.
#[allow(clippy::type_complexity)]
fn input_messages(
    input: &Value,
) -> Result<(Vec<Message>, Vec<String>, Vec<(usize, String)>), ApiError> {
    let items = match input {
        Value::String(text) if !text.trim().is_empty() => {
            let chars = text.chars().count();
            if chars > MAX_CHAT_CHARS {
                return Err(ApiError::too_large(format!(
                    "`input` has {chars} characters; the limit is {MAX_CHAT_CHARS}"
                ))
                .with_param("input"));
            }
            return Ok((
                vec![Message {
                    role: Role::User,
                    content: text.clone(),
                }],
                Vec::new(),
                Vec::new(),
            ));
        }
        Value::Array(items) if !items.is_empty() => items,
        other => {
            return Err(ApiError::invalid(format!(
                "`input` is {}; send a non-empty string or an array of items",
                match other {
                    Value::String(_) | Value::Array(_) => "empty",
                    other => kind(other),
                }
            ))
            .with_param("input"))
        }
    };
    if items.len() > MAX_MESSAGES {
        return Err(ApiError::too_large(format!(
            "`input` has {} items; the limit is {MAX_MESSAGES}",
            items.len()
        ))
        .with_param("input"));
    }
    let mut messages = Vec::with_capacity(items.len());
    let mut made = Vec::new();
    let mut answered = Vec::new();
    let mut chars = 0;
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let bad = |message: String| ApiError::invalid(message).with_param(param.clone());
        let Value::Object(fields) = item else {
            return Err(bad(format!("`{param}` is {}; send an object", kind(item))));
        };
        let text = |key: &str| fields.get(key).and_then(Value::as_str);
        let message = match text("type") {
            None | Some("message") => {
                let role = match text("role") {
                    Some("tool") | None => None,
                    Some(r) => Role::parse(r),
                }
                .ok_or_else(|| {
                    bad(format!(
                        "`{param}.role` must be user, system, developer or assistant"
                    ))
                })?;
                let content = item_content(fields.get("content"), &format!("{param}.content"))?;
                Message { role, content }
            }
            Some("function_call") => {
                let (Some(call_id), Some(name)) = (text("call_id"), text("name")) else {
                    return Err(bad(format!(
                        "`{param}` must have `call_id`, `name` and `arguments`"
                    )));
                };
                made.push(call_id.to_string());
                let arguments = fields.get("arguments").cloned().unwrap_or(json!({}));
                Message {
                    role: Role::Assistant,
                    content: shape::call_text(name, &arguments),
                }
            }
            Some("function_call_output") => {
                let Some(call_id) = text("call_id") else {
                    return Err(bad(format!("`{param}.call_id` is missing")));
                };
                answered.push((i, call_id.to_string()));
                let content = match fields.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other @ Value::Array(_)) => {
                        item_content(Some(other), &format!("{param}.output"))?
                    }
                    other => {
                        return Err(bad(format!(
                            "`{param}.output` is {}; send a string",
                            other.map_or("missing", kind)
                        )))
                    }
                };
                Message {
                    role: Role::Tool,
                    content,
                }
            }
            Some(other) => {
                return Err(ApiError::unsupported(
                    "unsupported_item",
                    format!(
                        "`{param}.type` is {other:?}; served input items are message, function_call and function_call_output"
                    ),
                )
                .with_param(format!("{param}.type")))
            }
        };
        chars += message.content.chars().count();
        messages.push(message);
    }
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::too_large(format!(
            "the input has {chars} characters; the limit is {MAX_CHAT_CHARS}"
        ))
        .with_param("input"));
    }
    Ok((messages, made, answered))
}

/// A message item's content: a string, or parts (`input_text`,
/// `output_text`, `text`).
fn item_content(value: Option<&Value>, param: &str) -> Result<String, ApiError> {
    let Some(Value::Array(parts)) = value else {
        return message_content(value, param);
    };
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("input_text" | "output_text" | "text"), Some(Value::String(t))) => {
                text.push_str(t)
            }
            (Some(kind), _) => {
                return Err(ApiError::unsupported(
                    "unsupported_content",
                    format!("`{param}[{j}].type` is {kind:?}; only text parts are served"),
                )
                .with_param(format!("{param}[{j}]")))
            }
            _ => {
                return Err(ApiError::invalid(format!(
                    "`{param}[{j}]` must be {{\"type\": \"input_text\", \"text\": \"...\"}}"
                ))
                .with_param(format!("{param}[{j}]")))
            }
        }
    }
    Ok(text)
}

/// A stored response's conversation as the model sees it, and the call
/// ids made in it (the reply's own call included).
fn stored_conversation(session: &Session) -> Result<(Vec<StoredMessage>, Vec<String>), ApiError> {
    let (state, rows) = split_state(session)?;
    let mut call_ids = state.call_ids.clone();
    if let Some(reply) = rows.last() {
        let head = response_head(session, &state);
        if is_call(&head, reply) {
            call_ids.push(head.call_ids().1);
        }
    }
    Ok((rows.to_vec(), call_ids))
}

fn split_state(session: &Session) -> Result<(State, &[StoredMessage]), ApiError> {
    let broken = || ApiError::internal(format!("response {} has no state row", session.meta.id));
    let (last, rows) = session.messages.split_last().ok_or_else(broken)?;
    if last.role != STATE_ROLE {
        return Err(broken());
    }
    let state: State = serde_json::from_str(&last.content)
        .map_err(|e| ApiError::internal(format!("response {}: {e}", session.meta.id)))?;
    Ok((state, rows))
}

fn response_head(session: &Session, state: &State) -> ResponseHead {
    let sha = registry::chat_spec(&session.meta.model).map_or("", |s| s.sha256);
    ResponseHead {
        head: Head {
            id: session.meta.id.clone(),
            created: session.meta.created,
            model: session.meta.model.clone(),
            model_sha256: sha,
        },
        echo: state.echo.clone(),
        calls: state.calls,
    }
}

fn is_call(head: &ResponseHead, reply: &StoredMessage) -> bool {
    let mut split = CallText::new(head.calls);
    split.push(&reply.content);
    split.end();
    split.is_call() && reply.finish_reason.as_deref() == Some("stop")
}

/// `GET /v1/responses/{id}`: the stored response object.
pub fn view(session: &Session) -> Result<HttpResponse, ApiError> {
    let (state, rows) = split_state(session)?;
    let head = response_head(session, &state);
    let reply = rows
        .last()
        .ok_or_else(|| ApiError::internal("a stored response without its reply"))?;
    let status = Status::of(reply.finish_reason.as_deref().unwrap_or("stop"));
    let output = wire::output(&head, &reply.content, status);
    let prompt = reply.prompt_tokens.unwrap_or(0) as usize;
    let completion = reply.completion_tokens.unwrap_or(0) as usize;
    let object = wire::object(
        &head,
        status,
        output,
        Some(wire::usage(prompt, 0, completion)),
    );
    Ok(HttpResponse::json(200, &object))
}

/// `DELETE /v1/responses/{id}`, once done.
pub fn deleted(id: &str) -> HttpResponse {
    HttpResponse::json(
        200,
        &json!({ "id": id, "object": "response", "deleted": true }),
    )
}

/// A response ready to run.
pub struct Prepared {
    pub turn: PreparedTurn,
    history: Vec<StoredMessage>,
    state: Value,
    pub store: bool,
}

impl ResponsesCall {
    /// The turn, given the previous response's stored session (when
    /// `previous_response_id` named one; its owner was checked). `id` is
    /// the new response's. A `function_call_output` must answer a call
    /// made before it: in the input, or in the previous conversation.
    pub fn prepare(self, previous: Option<&Session>, id: &str) -> Result<Prepared, ApiError> {
        let (history, mut call_ids) = match previous {
            Some(session) => stored_conversation(session)?,
            None => (Vec::new(), Vec::new()),
        };
        let mut known = call_ids.clone();
        known.extend(self.made.iter().cloned());
        for (i, call_id) in &self.answered {
            if !known.contains(call_id) {
                return Err(ApiError::unsupported(
                    "invalid_tool_message",
                    format!(
                        "`input[{i}]` is a function_call_output for call {call_id:?}, which no function_call made (in this input or the previous response)"
                    ),
                )
                .with_param(format!("input[{i}].call_id")));
            }
        }
        if self.store && history.len() + self.input.len() + 2 > MAX_RESPONSE_ROWS {
            return Err(ApiError::too_large(format!(
                "this conversation would store {} rows; a stored response holds at most {MAX_RESPONSE_ROWS}: start again without previous_response_id",
                history.len() + self.input.len() + 2
            ))
            .with_code("conversation_too_long")
            .with_param("previous_response_id"));
        }
        call_ids.extend(self.made.iter().cloned());
        let mut messages = Vec::new();
        if let Some(instructions) = &self.instructions {
            messages.push(Message {
                role: Role::System,
                content: instructions.clone(),
            });
        }
        for row in &history {
            messages.push(row.message()?);
        }
        messages.extend(self.input.iter().cloned());
        let messages = with_instructions(messages, self.shape.instructions());
        let state = serde_json::to_value(State {
            echo: self.echo.clone(),
            calls: self.shape.calls(),
            call_ids,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let wire = Wire::Responses {
            stream: self.stream,
            echo: self.echo,
            calls: self.shape.calls(),
        };
        let _ = id;
        Ok(Prepared {
            turn: PreparedTurn {
                model: self.spec.qualified_name(),
                messages,
                new_messages: self.input,
                generation: self.generation,
                grammar: self.shape.grammar(),
                wire,
            },
            history,
            state,
            store: self.store,
        })
    }
}

/// Where a new response runs.
pub enum Begun {
    /// `store: false`: a turn the caller runs, stored nowhere.
    Here(Box<ChatTurn>, Wire),
    /// The call that runs and stores it in the response's own session, and
    /// the request's meta for the store that serves it here.
    Stored(Box<SessionCall>, RequestMeta),
}

impl ResponsesCall {
    /// Starts a new response (`previous`: the previous response's session,
    /// its owner checked): run here, or sent to its own session.
    pub fn begin(
        self,
        previous: Option<&Session>,
        ctx: &Context<'_>,
        owner: Option<String>,
    ) -> Result<Begun, ApiError> {
        let id = new_id(ctx);
        let prepared = self.prepare(previous, &id)?;
        if !prepared.store {
            let (plan, wire) = prepared.unstored()?;
            let meta = RequestMeta {
                id,
                ..RequestMeta::draw(ctx)
            };
            return Ok(Begun::Here(Box::new(ChatTurn::start(plan, meta)?), wire));
        }
        let meta = RequestMeta::draw(ctx);
        let call = prepared.stored(id, owner, meta.created);
        Ok(Begun::Stored(Box::new(call), meta))
    }
}

impl Prepared {
    /// The call that runs and stores it in the response's own session.
    pub fn stored(self, id: String, owner: Option<String>, created: u64) -> SessionCall {
        let model = self.turn.model.clone();
        SessionCall {
            id: id.clone(),
            owner: owner.clone(),
            op: SessionOp::Prepared {
                meta: SessionMeta {
                    id,
                    created,
                    model,
                    system: None,
                    defaults: GenerationFields::default(),
                    owner,
                },
                history: self.history,
                turn: Box::new(self.turn),
                state: self.state,
            },
        }
    }

    /// The turn run here, stored nowhere (`store: false`).
    pub fn unstored(self) -> Result<(TurnPlan, Wire), ApiError> {
        self.turn.plan()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<ResponsesCall, ApiError> {
        let bytes = body.to_string();
        parse(&HttpRequest::post_json("/v1/responses", bytes.as_bytes()))
    }

    #[test]
    fn input_items_become_messages_and_outputs_must_answer_a_call() {
        let call = request(json!({
            "model": "shakespeare-llama",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
            ]
        }))
        .unwrap();
        let prepared = call.prepare(None, "resp_x").unwrap();
        let roles: Vec<Role> = prepared.turn.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool]);
        assert_eq!(
            prepared.turn.messages[1].content,
            r#"{"name":"weather","arguments":{"city":"Paris"}}"#
        );
        let call = request(json!({
            "model": "shakespeare-llama",
            "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]
        }))
        .unwrap();
        let e = call.prepare(None, "resp_x").err().unwrap();
        assert_eq!((e.status, e.code), (400, "invalid_tool_message"));
    }

    #[test]
    fn unserved_fields_and_items_are_named() {
        let e = request(
            json!({"model": "shakespeare-llama", "input": "hi", "reasoning": {"effort": "low"}}),
        )
        .err()
        .unwrap();
        assert_eq!((e.status, e.param.as_deref()), (422, Some("reasoning")));
        let e = request(
            json!({"model": "shakespeare-llama", "input": [{"type": "reasoning", "summary": []}]}),
        )
        .err()
        .unwrap();
        assert_eq!((e.status, e.code), (400, "unsupported_item"));
        let e = request(
            json!({"model": "shakespeare-llama", "input": "hi", "tools": [{"type": "web_search"}]}),
        )
        .err()
        .unwrap();
        assert_eq!((e.status, e.code), (400, "unsupported_tool"));
        let e = request(json!({"model": "shakespeare-llama", "input": "hi", "previous_response_id": "resp_nope"}))
            .err()
            .unwrap();
        assert_eq!((e.status, e.code), (404, "response_not_found"));
    }
}
