//! `POST /v1/chat/completions`, OpenAI-compatible, and the reply engine that
//! session turns share: parse and validate the request, build the prompt,
//! then either run to the end (one `chat.completion`) or hand out
//! server-sent events (`chat.completion.chunk`s, then `data: [DONE]`) one
//! token at a time, so the glue can flush each as it is produced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::limits::{
    DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING_TOP_K, DEFAULT_TEMPERATURE, MAX_CHAT_CHARS, MAX_MESSAGES,
    MAX_STOP_CHARS, MAX_STOP_SEQUENCES,
};
use super::parse::{json_body, kind};
use super::timing::{self, Clock, Timings, Work};
use super::{HttpRequest, HttpResponse, Served};
use crate::decoder::chat::ChatModel;
use crate::decoder::generation::{FinishReason, GenerateOptions, Generation};
use crate::decoder::sampling::SamplingParams;
use crate::decoder::template::{Message, Role};
use crate::error::CoreError;
use crate::registry::{self, ModelSpec};

/// Sampling and length settings, shared by chat completions, session
/// messages and session defaults. All optional; absent ones fall back to the
/// session's defaults, then to the model's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// OpenAI's penalties: only 0 (their default) is accepted; see
    /// `repetition_penalty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
}

impl GenerationFields {
    /// `self` where set, else `fallback`.
    pub fn or(&self, fallback: &GenerationFields) -> GenerationFields {
        GenerationFields {
            max_tokens: self
                .max_tokens
                .or(self.max_completion_tokens)
                .or(fallback.max_tokens)
                .or(fallback.max_completion_tokens),
            max_completion_tokens: None,
            temperature: self.temperature.or(fallback.temperature),
            top_p: self.top_p.or(fallback.top_p),
            top_k: self.top_k.or(fallback.top_k),
            repetition_penalty: self.repetition_penalty.or(fallback.repetition_penalty),
            seed: self.seed.or(fallback.seed),
            stop: self.stop.clone().or_else(|| fallback.stop.clone()),
            frequency_penalty: self.frequency_penalty.or(fallback.frequency_penalty),
            presence_penalty: self.presence_penalty.or(fallback.presence_penalty),
        }
    }

    /// Checks every field against its range; `default_seed` is used when no
    /// seed was given (the glue draws it at random).
    pub fn options(&self, default_seed: u64) -> Result<GenerateOptions, ApiError> {
        let bad = |field: &str, message: String| ApiError::invalid(message).with_param(field);
        if self.max_tokens.is_some() && self.max_completion_tokens.is_some() {
            return Err(bad(
                "max_completion_tokens",
                "send `max_tokens` or `max_completion_tokens`, not both".into(),
            ));
        }
        let (field, max_tokens) = match (self.max_tokens, self.max_completion_tokens) {
            (Some(n), _) => ("max_tokens", n),
            (None, Some(n)) => ("max_completion_tokens", n),
            (None, None) => ("max_tokens", DEFAULT_MAX_TOKENS as u64),
        };
        if max_tokens == 0 || max_tokens > super::limits::MAX_TOKENS as u64 {
            return Err(bad(
                field,
                format!(
                    "`{field}` is {max_tokens}; it must be between 1 and {} (the model's context is shared by the prompt and the reply)",
                    super::limits::MAX_TOKENS
                ),
            ));
        }
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(bad(
                "temperature",
                format!("`temperature` is {temperature}; it must be between 0 and 2 (0 = greedy)"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        // 0 keeps only the most likely token, as OpenAI reads it.
        if !(0.0..=1.0).contains(&top_p) {
            return Err(bad(
                "top_p",
                format!("`top_p` is {top_p}; it must be between 0 and 1"),
            ));
        }
        let top_k = self.top_k.unwrap_or(DEFAULT_SAMPLING_TOP_K as u64);
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        // A tiny penalty would push a seen logit to infinity (NaN weights).
        if !(0.01..=10.0).contains(&repetition_penalty) {
            return Err(bad(
                "repetition_penalty",
                format!("`repetition_penalty` is {repetition_penalty}; it must be between 0.01 and 10 (1 = off)"),
            ));
        }
        for (field, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(bad(
                    field,
                    format!(
                        "`{field}` is not supported (only 0); use `repetition_penalty` (e.g. 1.2)"
                    ),
                ));
            }
        }
        Ok(GenerateOptions {
            max_tokens: max_tokens as usize,
            stop: stop_sequences(self.stop.as_ref())?,
            sampling: SamplingParams {
                temperature: temperature as f32,
                top_k: usize::try_from(top_k).unwrap_or(usize::MAX),
                top_p: top_p as f32,
                repetition_penalty: repetition_penalty as f32,
                seed: self.seed.map_or(default_seed, |s| s as u64),
            },
        })
    }
}

/// `stop`: a string or an array of up to 4 non-empty strings.
fn stop_sequences(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param("stop");
    let list: Vec<&Value> = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(_)) => vec![stop.expect("matched")],
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => {
            return Err(bad(format!(
                "`stop` is {}; send a string or an array of strings",
                kind(other)
            )))
        }
    };
    if list.len() > MAX_STOP_SEQUENCES {
        return Err(bad(format!(
            "`stop` has {} sequences; at most {MAX_STOP_SEQUENCES}",
            list.len()
        )));
    }
    list.into_iter()
        .map(|v| match v.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= MAX_STOP_CHARS => Ok(s.to_string()),
            Some(_) => Err(bad(format!(
                "every stop sequence must have 1 to {MAX_STOP_CHARS} characters"
            ))),
            None => Err(bad(format!(
                "a stop sequence is {}; it must be a string",
                kind(v)
            ))),
        })
        .collect()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    pub messages: Value,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// A session (`POST /v1/sessions`) whose stored history precedes
    /// `messages`; the new messages and the reply are stored in it.
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// OpenAI's end-user id; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub generation: GenerationFields,
    /// Anything else: refused by name, so a typo is not silently ignored.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

/// A validated chat completion request.
#[derive(Debug)]
pub struct ChatCall {
    pub spec: &'static ModelSpec,
    pub messages: Vec<Message>,
    pub generation: GenerationFields,
    pub stream: bool,
    pub include_usage: bool,
    pub session: Option<String>,
}

/// Refuses fields no route knows, naming them.
pub fn no_unknown_fields(unknown: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    match unknown.keys().next() {
        None => Ok(()),
        Some(field) => Err(ApiError::invalid(format!(
            "unknown field `{field}`; see README for the fields this route accepts"
        ))
        .with_param(field.clone())),
    }
}

/// Parses and validates `POST /v1/chat/completions`. `session_header` is the
/// `X-Session-Id` header, an alternative to the `session` field.
pub fn parse(req: &HttpRequest<'_>, session_header: Option<&str>) -> Result<ChatCall, ApiError> {
    let body: ChatBody = json_body(req)?;
    no_unknown_fields(&body.unknown)?;
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only `n: 1` is supported").with_param("n"));
    }
    if body.logprobs == Some(true) {
        return Err(ApiError::invalid("`logprobs` is not supported").with_param("logprobs"));
    }
    let spec = registry::find(&body.model).map_err(ApiError::from)?;
    if spec.task != registry::Task::TextGeneration {
        return Err(ApiError::from(crate::CoreError::WrongTask {
            model: spec.id.to_string(),
            task: spec.task.as_str(),
            wanted: "text generation",
        }));
    }
    let messages = parse_messages(&body.messages)?;
    // Checked now, so a bad value is a 422 before any session is touched.
    body.generation.options(0)?;
    let session = match (body.session, session_header) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "the `session` field and the X-Session-Id header name different sessions",
            )
            .with_param("session"))
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    };
    Ok(ChatCall {
        spec,
        messages,
        generation: body.generation,
        stream: body.stream.unwrap_or(false),
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
        session,
    })
}

/// `messages`: a non-empty array of `{role, content}`; content is a string,
/// an array of `{type: "text", text}` parts, or null (assistant only).
pub fn parse_messages(value: &Value) -> Result<Vec<Message>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(format!(
            "`messages` is {}; send an array of {{role, content}} objects",
            kind(value)
        ))
        .with_param("messages"));
    };
    if items.is_empty() {
        return Err(
            ApiError::invalid("`messages` is empty; send at least one user message")
                .with_param("messages"),
        );
    }
    if items.len() > MAX_MESSAGES {
        return Err(ApiError::too_large(format!(
            "`messages` has {} items; the limit is {MAX_MESSAGES}",
            items.len()
        ))
        .with_param("messages"));
    }
    let mut chars = 0;
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let bad = |message: String| ApiError::invalid(message).with_param(param.clone());
        let Value::Object(fields) = item else {
            return Err(bad(format!("`{param}` is {}; send an object", kind(item))));
        };
        let role = match fields.get("role") {
            Some(Value::String(r)) => Role::parse(r).ok_or_else(|| {
                bad(format!(
                    "`{param}.role` is {r:?}; use system, developer, user or assistant"
                ))
            })?,
            other => {
                return Err(bad(format!(
                    "`{param}.role` is {}; send a string",
                    other.map_or("missing", kind)
                )))
            }
        };
        let content = message_content(fields.get("content"), &format!("{param}.content"))?;
        if let Some(field) = fields
            .keys()
            .find(|k| !["role", "content", "name"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "`{param}.{field}` is not supported (tool calls and the like are not)"
            )));
        }
        chars += content.chars().count();
        messages.push(Message { role, content });
    }
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::too_large(format!(
            "the messages have {chars} characters; the limit is {MAX_CHAT_CHARS}"
        ))
        .with_param("messages"));
    }
    match messages.last() {
        Some(m) if m.role == Role::User && !m.content.trim().is_empty() => Ok(messages),
        Some(m) if m.role == Role::User => Err(ApiError::invalid(
            "the last message is empty; send some text",
        )
        .with_param(format!("messages[{}].content", messages.len() - 1))),
        _ => Err(ApiError::invalid(
            "the last message must be from the user (the reply is the assistant's turn)",
        )
        .with_param("messages")),
    }
}

/// A message's text: a string, text parts joined, or null (empty).
pub fn message_content(value: Option<&Value>, param: &str) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param(param);
    match value {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Ok(String::new()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(bad(format!(
                            "`{param}[{j}]` must be {{\"type\": \"text\", \"text\": \"...\"}}; only text parts are supported"
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(bad(format!(
            "`{param}` is {}; send a string or an array of text parts",
            kind(other)
        ))),
    }
}

/// What the glue supplies per request: an id, the time, a seed for requests
/// without one (the core has no clock and no randomness of its own).
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// `chatcmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub seed: u64,
    /// The isolate's clock, for `Server-Timing` and `usage.cpu_ms`.
    pub clock: Clock,
}

/// A finished reply, for a session to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub content: String,
    pub finish_reason: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
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
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    model_sha256: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: usize,
    message: AssistantMessage<'a>,
    finish_reason: &'static str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// Where a streamed reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Tokens,
    Usage,
    Done,
    Closed,
}

/// One reply in progress.
pub struct ChatTurn {
    spec: &'static ModelSpec,
    qualified: String,
    generation: Generation<'static>,
    meta: RequestMeta,
    include_usage: bool,
    dropped_messages: usize,
    session: Option<String>,
    phase: Phase,
    /// True when this request loaded the model (a cold start).
    pub model_loaded: bool,
    /// Model load (if any) and prompt building, before the first event.
    timings: Timings,
    /// Time spent generating so far (ms), summed over the steps only, so
    /// the pauses between streamed events do not count.
    generating_ms: f64,
    /// Per shard Worker of a sharded model: its own time, summed.
    hops: Vec<(&'static str, f64)>,
    /// The prompt's first tokens the model did not have to feed again.
    cached_tokens: usize,
}

impl ChatTurn {
    /// Loads the model (once per isolate), builds the prompt from `messages`
    /// and prepares generation with `fields`.
    pub fn start(
        spec: &'static ModelSpec,
        messages: &[Message],
        fields: &GenerationFields,
        include_usage: bool,
        session: Option<String>,
        meta: RequestMeta,
    ) -> Result<Self, ApiError> {
        let mut timings = Timings::start(meta.clock);
        let options = fields.options(meta.seed)?;
        let (model, model_loaded): (&'static ChatModel, bool) = registry::chat_model(spec)?;
        timings.lap_if(model_loaded, "init");
        let prompt = model.prompt(messages, options.max_tokens)?;
        timings.lap("tokenize");
        Ok(ChatTurn {
            spec,
            qualified: spec.qualified_name(),
            generation: model.generate(prompt.ids, options),
            meta,
            include_usage,
            dropped_messages: prompt.dropped_messages,
            session,
            phase: Phase::Role,
            model_loaded,
            timings,
            generating_ms: 0.0,
            hops: Vec::new(),
            cached_tokens: 0,
        })
    }

    pub fn model_name(&self) -> &str {
        &self.qualified
    }

    /// The phases so far: load and prompt, then generation.
    fn phases(&self) -> Timings {
        let mut all = self.timings.clone();
        if self.generating_ms > 0.0 || self.phase != Phase::Role {
            all.push("inference", self.generating_ms);
        }
        for &(name, ms) in &self.hops {
            all.push(name, ms);
        }
        all
    }

    fn usage(&self) -> Usage {
        let prompt = self.generation.prompt_tokens();
        let completion = self.generation.completion_tokens();
        let work = Work {
            inputs: 1,
            tokens: prompt - self.cached_tokens,
            generated: completion,
            ..Work::default()
        };
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self.cached_tokens,
            },
            dropped_messages: self.dropped_messages,
            cpu_ms: timing::estimate_cpu_ms(self.spec, &work),
        }
    }

    /// Which model served the turn and what it cost so far, for headers
    /// and logs (a stream's headers go out before generation: they carry
    /// the load and prompt phases only).
    pub fn served(&self) -> Served {
        let usage = self.usage();
        let mut served = Served::new(self.spec, self.model_loaded);
        served.timings = self.phases().phases().to_vec();
        served.tokens = Some(usage.total_tokens);
        served.cpu_ms = Some(usage.cpu_ms);
        served
    }

    /// The tokens to run through the model's shard Workers before the next
    /// step, when its weights are there (`None` for a model run here).
    pub fn wants(&self) -> Option<Vec<u32>> {
        if self.generation.is_local() || !matches!(self.phase, Phase::Role | Phase::Tokens) {
            return None;
        }
        self.generation.wants()
    }

    /// The most tokens the turn feeds the model: its prompt and its reply,
    /// within the context (what a shard reserves cache memory for).
    pub fn most_tokens(&self) -> usize {
        self.generation.most_tokens()
    }

    /// The prompt's token ids.
    pub fn prompt(&self) -> &[u32] {
        self.generation.prompt()
    }

    /// How many of the prompt's first tokens the model's shards already
    /// held (kept from the conversation's last turn): reported as
    /// `usage.prompt_tokens_details.cached_tokens` and not counted as
    /// prompt work in `cpu_ms`.
    pub fn set_cached_tokens(&mut self, cached: usize) {
        self.cached_tokens = cached.min(self.generation.prompt_tokens());
    }

    /// The logits of the pass [`ChatTurn::wants`] asked for, and the time
    /// it took (ms): each shard's own `hops` (name, ms) go into
    /// `Server-Timing` next to `inference`.
    pub fn supply(
        &mut self,
        logits: Vec<f32>,
        ms: f64,
        hops: &[(&'static str, f64)],
    ) -> Result<(), ApiError> {
        self.generating_ms += ms.max(0.0);
        for &(name, ms) in hops {
            match self.hops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += ms,
                None => self.hops.push((name, ms)),
            }
        }
        self.generation.supply(logits).map_err(ApiError::from)
    }

    /// Runs one step of a reply that is not streamed: `false` once it has
    /// ended (then [`ChatTurn::complete`] answers without more work).
    pub fn advance(&mut self) -> Result<bool, ApiError> {
        Ok(self.step()?.is_some_and(|d| d.finish.is_none()))
    }

    /// Ends a stream on an error found outside the turn (a shard that
    /// failed): the `error` event, then `[DONE]`.
    pub fn fail(&mut self, error: ApiError) -> Vec<u8> {
        self.phase = Phase::Done;
        sse(&error.body())
    }

    /// One generation step, timed.
    fn step(&mut self) -> Result<Option<crate::decoder::generation::Delta>, CoreError> {
        let clock = self.meta.clock;
        let started = clock();
        let step = self.generation.step();
        self.generating_ms += (clock() - started).max(0.0);
        step
    }

    /// The reply, once generation has finished.
    pub fn reply(&self) -> Option<Reply> {
        let finish = self.generation.finish_reason()?;
        Some(Reply {
            content: self.generation.text().to_string(),
            finish_reason: finish.as_str().to_string(),
            prompt_tokens: self.generation.prompt_tokens(),
            completion_tokens: self.generation.completion_tokens(),
        })
    }

    /// Generates the whole reply and answers one `chat.completion`.
    pub fn complete(&mut self) -> HttpResponse {
        let clock = self.meta.clock;
        let started = clock();
        let finish = match self.generation.run_to_end() {
            Ok((_, finish)) => finish,
            Err(e) => return HttpResponse::error(ApiError::from(e)),
        };
        self.generating_ms += (clock() - started).max(0.0);
        self.phase = Phase::Done;
        let body = Completion {
            id: &self.meta.id,
            object: "chat.completion",
            created: self.meta.created,
            model: &self.qualified,
            model_sha256: self.spec.sha256,
            choices: [Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: self.generation.text(),
                },
                finish_reason: finish.as_str(),
                logprobs: None,
            }],
            usage: self.usage(),
            session: self.session.as_deref(),
        };
        let mut res = HttpResponse::json(200, &body);
        res.model = Some(Box::new(self.served()));
        res
    }

    /// The next server-sent event (one token's worth of work at most), or
    /// `None` after `data: [DONE]`. An error mid-stream becomes an `error`
    /// event and ends the stream (the status line has already gone out).
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        match self.phase {
            Phase::Role => {
                self.phase = Phase::Tokens;
                Some(self.chunk(Some("assistant"), Some(""), None, None))
            }
            Phase::Tokens => match self.step() {
                Ok(Some(delta)) => {
                    let finish = delta.finish.map(FinishReason::as_str);
                    if finish.is_some() {
                        self.phase = Phase::Usage;
                    }
                    let content = (!delta.text.is_empty()).then_some(delta.text.as_str());
                    if content.is_none() && finish.is_none() {
                        // Nothing safe to show yet: an empty event keeps the
                        // one-token-per-call rhythm without a client-visible chunk.
                        return Some(b": \n\n".to_vec());
                    }
                    Some(self.chunk(None, content, finish, None))
                }
                Ok(None) => {
                    self.phase = Phase::Usage;
                    self.next_event()
                }
                Err(e) => {
                    self.phase = Phase::Done;
                    let error = ApiError::from(e);
                    Some(sse(&error.body()))
                }
            },
            Phase::Usage => {
                self.phase = Phase::Done;
                if self.include_usage {
                    Some(self.chunk(None, None, None, Some(self.usage())))
                } else {
                    self.next_event()
                }
            }
            Phase::Done => {
                self.phase = Phase::Closed;
                Some(b"data: [DONE]\n\n".to_vec())
            }
            Phase::Closed => None,
        }
    }

    fn chunk(
        &self,
        role: Option<&'static str>,
        content: Option<&str>,
        finish: Option<&'static str>,
        usage: Option<Usage>,
    ) -> Vec<u8> {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta: Delta { role, content },
                finish_reason: finish,
                logprobs: None,
            }]
        };
        let chunk = Chunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.qualified,
            choices,
            usage,
        };
        sse(&serde_json::to_vec(&chunk).unwrap_or_default())
    }

    /// Every event at once: what `handle` answers natively for `stream: true`.
    pub fn all_events(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(event) = self.next_event() {
            out.extend(event);
        }
        out
    }
}

fn sse(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// Headers of a streamed reply.
pub const SSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];
