//! The bodies of the session routes, parsed and checked once, before any
//! store is touched: `POST /v1/sessions` into a [`NewSession`], a message
//! (or a chat completion naming a session) into a [`TurnRequest`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SessionMeta;
use crate::api::chat::{message_content, ChatCall, GenerationFields, StreamOptions};
use crate::api::error::ApiError;
use crate::api::limits::{MAX_CHAT_CHARS, MAX_SYSTEM_CHARS};
use crate::api::parse::{json_body, no_unknown_fields};
use crate::api::HttpRequest;
use crate::decoder::template::{Message, Role};
use crate::registry::{self, ModelSpec, Task};

#[derive(Debug, Default, Deserialize)]
struct CreateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    defaults: Option<Defaults>,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// A session's sampling defaults, with unknown fields refused by name.
#[derive(Debug, Deserialize)]
struct Defaults {
    #[serde(flatten)]
    fields: GenerationFields,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// Room a turn needs besides the system prompt: `<|bos|>`, the system
/// message's role and end tokens, `<|assistant|>`, and a short user message
/// with its own two; a system prompt that leaves less is refused at creation
/// rather than at every turn.
const MIN_TURN_TOKENS: usize = 16;

/// A checked `POST /v1/sessions`: everything but the id, the time and the
/// owner, which the host gives when it stores it.
#[derive(Debug)]
pub struct NewSession {
    pub spec: &'static ModelSpec,
    pub system: Option<String>,
    pub defaults: GenerationFields,
}

impl NewSession {
    pub fn into_meta(self, id: String, created: u64, owner: Option<&str>) -> SessionMeta {
        SessionMeta {
            id,
            created,
            model: self.spec.qualified_name(),
            system: self.system,
            defaults: self.defaults,
            owner: owner.map(str::to_string),
        }
    }
}

/// The model of a session that names none: the deployer's choice
/// (`DEFAULT_CHAT_MODEL`), else the first text-generation model listed.
fn default_model(configured: Option<&str>) -> Result<&'static ModelSpec, ApiError> {
    match configured {
        Some(name) => registry::chat_spec(name).map_err(|e| {
            ApiError::internal(format!(
                "DEFAULT_CHAT_MODEL {name:?} is not a chat model of this worker: {e}"
            ))
        }),
        None => registry::MODELS
            .iter()
            .find(|m| m.task == Task::TextGeneration)
            .ok_or_else(|| ApiError::internal("no text-generation model is embedded")),
    }
}

/// Prefixes a refused field of `defaults` with `defaults.`.
fn in_defaults(e: ApiError) -> ApiError {
    let param = e.param.clone().unwrap_or_default();
    e.with_param(format!("defaults.{param}"))
}

/// `POST /v1/sessions`: an optional body `{model, system, defaults}`.
pub fn parse_create(
    req: &HttpRequest<'_>,
    default_chat_model: Option<&str>,
) -> Result<NewSession, ApiError> {
    let body: CreateBody = if req.body.iter().all(u8::is_ascii_whitespace) && req.body_complete {
        CreateBody::default()
    } else {
        json_body(req)?
    };
    no_unknown_fields(&body.unknown)?;
    let spec = match &body.model {
        Some(name) => registry::chat_spec(name)?,
        None => default_model(default_chat_model)?,
    };
    let defaults = match body.defaults {
        Some(d) => {
            no_unknown_fields(&d.unknown).map_err(in_defaults)?;
            d.fields
        }
        None => GenerationFields::default(),
    };
    let options = defaults.options(0).map_err(in_defaults)?;
    if let Some(system) = &body.system {
        let chars = system.chars().count();
        if chars > MAX_SYSTEM_CHARS {
            return Err(ApiError::too_large(format!(
                "`system` has {chars} characters; the limit is {MAX_SYSTEM_CHARS}"
            ))
            .with_param("system"));
        }
        let (model, _) = registry::chat_model(spec)?;
        let tokens = model.encode(system)?.len();
        let budget = model.context().saturating_sub(options.max_tokens);
        if tokens + MIN_TURN_TOKENS > budget {
            return Err(ApiError::too_large(format!(
                "`system` is {tokens} tokens; with max_tokens {} the model's {}-token context leaves room for at most {} (and a short message)",
                options.max_tokens,
                model.context(),
                budget.saturating_sub(MIN_TURN_TOKENS)
            ))
            .with_param("system")
            .with_code("context_length_exceeded"));
        }
    }
    Ok(NewSession {
        spec,
        system: body.system.filter(|s| !s.is_empty()),
        defaults,
    })
}

/// A turn to take: new messages (at least the user's), and how to generate.
/// Serializable: the worker parses it once and hands it to the session's
/// Durable Object as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnRequest {
    /// Messages to store before the reply (user, or user and assistant).
    pub new_messages: Vec<Message>,
    /// A system prompt for this turn only (from a chat completion request),
    /// replacing the session's.
    pub system_override: Option<String>,
    /// The model named by a chat completion request; else the session's.
    #[serde(with = "model_name")]
    pub model: Option<&'static ModelSpec>,
    pub generation: GenerationFields,
    pub stream: bool,
    pub include_usage: bool,
}

/// A model travels by its `id@version` (a pointer means nothing in
/// another isolate) and is found again on arrival.
mod model_name {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::registry::{self, ModelSpec};

    pub fn serialize<S: Serializer>(
        spec: &Option<&'static ModelSpec>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        spec.map(|m| m.qualified_name()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<&'static ModelSpec>, D::Error> {
        let name: Option<String> = Option::deserialize(d)?;
        name.map(|n| registry::chat_spec(&n).map_err(D::Error::custom))
            .transpose()
    }
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    content: Value,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    generation: GenerationFields,
    #[serde(flatten)]
    unknown: BTreeMap<String, Value>,
}

/// `POST /v1/sessions/{id}/messages`: `{content, stream, ...sampling}`.
pub fn parse_message(req: &HttpRequest<'_>) -> Result<TurnRequest, ApiError> {
    let body: MessageBody = json_body(req)?;
    no_unknown_fields(&body.unknown)?;
    let content = message_content(Some(&body.content), "content")?;
    if content.trim().is_empty() {
        return Err(ApiError::invalid("`content` is empty; send some text").with_param("content"));
    }
    let chars = content.chars().count();
    if chars > MAX_CHAT_CHARS {
        return Err(ApiError::too_large(format!(
            "`content` has {chars} characters; the limit is {MAX_CHAT_CHARS}"
        ))
        .with_param("content"));
    }
    body.generation.options(0)?;
    Ok(TurnRequest {
        new_messages: vec![Message {
            role: Role::User,
            content,
        }],
        system_override: None,
        model: None,
        generation: body.generation,
        stream: body.stream.unwrap_or(false),
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A chat completion naming a session: its system messages apply to this
/// turn only; the others are appended to the history.
pub fn turn_from_chat(call: ChatCall) -> TurnRequest {
    let (system, new_messages): (Vec<Message>, Vec<Message>) = call
        .messages
        .into_iter()
        .partition(|m| m.role == Role::System);
    let system_override = (!system.is_empty()).then(|| {
        system
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    });
    TurnRequest {
        new_messages,
        system_override,
        model: Some(call.spec),
        generation: call.generation,
        stream: call.stream,
        include_usage: call.include_usage,
    }
}
