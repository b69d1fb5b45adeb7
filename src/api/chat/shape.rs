//! What a reply must be: free text, JSON under a schema (`response_format`,
//! the Responses API's `text.format`), or a call to one of the request's
//! `tools` (`tool_choice`). Parsed and checked here, turned into the
//! [`Grammar`] the reply is constrained to, and into the text the prompt
//! tells the model (a 135M model was never trained on tools: the grammar,
//! not the instructions, is what makes a call well-formed).
//!
//! A call is written as compact JSON, `{"name":"NAME","arguments":{...}}`
//! (the grammar allows no whitespace), which [`CallText`] splits back into
//! a name and an arguments string as the reply streams.
//!
//! `tool_choice: "auto"` lets the model choose: its first token either
//! starts a call (`{`) or starts text (anything else), so the choice is
//! the model's own probabilities for that first token, with both
//! continuations kept valid by the grammar. One call per reply:
//! `parallel_tool_calls` is accepted, and a reply never holds two.

use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::parse::kind;
use crate::api::schema;
use crate::decoder::constraint::{Grammar, JSON_OPTIONS};

/// The most tools a request may declare.
pub const MAX_TOOLS: usize = 32;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema of an object (checked by [`schema::check`]).
    pub parameters: Value,
}

/// `tool_choice`, once `none` has been taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// A call or text, as the model prefers.
    Auto,
    /// A call to one of the tools.
    Required,
    /// A call to this tool.
    Named(String),
}

/// What a reply must be.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Shape {
    #[default]
    Text,
    /// JSON under this schema.
    Json(Value),
    /// A call (or, with [`ToolChoice::Auto`], a call or text).
    Calls {
        tools: Vec<Tool>,
        choice: ToolChoice,
    },
}

/// Whether a reply's text is a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CallMode {
    /// Never: text (or JSON) only.
    #[default]
    Never,
    /// Always: the whole reply is a call.
    Always,
    /// When it starts with `{` (`tool_choice: "auto"`).
    Maybe,
}

impl Shape {
    /// The grammar the reply is held to (none for free text).
    pub fn grammar(&self) -> Option<Grammar> {
        match self {
            Shape::Text => None,
            Shape::Json(schema) => Some(Grammar::JsonSchema(schema.clone())),
            Shape::Calls { tools, choice } => {
                let named: Vec<&Tool> = match choice {
                    ToolChoice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
                    _ => tools.iter().collect(),
                };
                let call = call_schema(&named);
                match choice {
                    ToolChoice::Auto => Some(Grammar::Lark(auto_grammar(&call))),
                    _ => Some(Grammar::JsonSchema(call)),
                }
            }
        }
    }

    pub fn calls(&self) -> CallMode {
        match self {
            Shape::Calls {
                choice: ToolChoice::Auto,
                ..
            } => CallMode::Maybe,
            Shape::Calls { .. } => CallMode::Always,
            _ => CallMode::Never,
        }
    }

    /// What the system message tells the model about the tools, if any.
    pub fn instructions(&self) -> Option<String> {
        let Shape::Calls { tools, choice } = self else {
            return None;
        };
        // Short: every token of it is taken from the context the reply and
        // the conversation share.
        let mut text = String::from(
            "To call a function, answer with only {\"name\": ..., \"arguments\": {...}}",
        );
        text.push_str(match choice {
            ToolChoice::Auto => "; or answer in words.",
            _ => ".",
        });
        text.push_str("\nFunctions:");
        for tool in tools {
            let mut described = Map::new();
            described.insert("name".into(), Value::String(tool.name.clone()));
            if let Some(d) = &tool.description {
                described.insert("description".into(), Value::String(d.clone()));
            }
            let mut parameters = tool.parameters.clone();
            drop_closed(&mut parameters);
            described.insert("parameters".into(), parameters);
            text.push('\n');
            text.push_str(&Value::Object(described).to_string());
        }
        Some(text)
    }
}

/// Removes `additionalProperties: false` from a schema the model reads: the
/// grammar already allows no other key, and each one costs prompt tokens
/// (a 256-token context has few to spare).
fn drop_closed(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            for (key, value) in map.iter_mut() {
                if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    drop_closed(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_closed),
        _ => {}
    }
}

/// The schema of one call: `{"name": <a tool's name>, "arguments": <its
/// parameters>}`, an `anyOf` over the tools. Each tool's parameters move
/// under the root's `$defs` (as `tool{i}`, their own `$defs` as
/// `tool{i}_{name}`) with their `$ref`s rewritten, since a reference is
/// relative to the document's root.
fn call_schema(tools: &[&Tool]) -> Value {
    let mut defs = Map::new();
    let mut calls = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let prefix = format!("tool{i}");
        let mut parameters = tool.parameters.clone();
        let own = match &mut parameters {
            Value::Object(map) => {
                let mut own = Map::new();
                for key in ["$defs", "definitions"] {
                    if let Some(Value::Object(d)) = map.remove(key) {
                        own.extend(d);
                    }
                }
                own
            }
            _ => Map::new(),
        };
        for (name, mut def) in own {
            rewrite_refs(&mut def, &prefix);
            defs.insert(format!("{prefix}_{name}"), def);
        }
        rewrite_refs(&mut parameters, &prefix);
        defs.insert(prefix.clone(), parameters);
        calls.push(json!({
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": {"$ref": format!("#/$defs/{prefix}")}
            },
            "required": ["name", "arguments"],
            "additionalProperties": false
        }));
    }
    let mut call = if calls.len() == 1 {
        calls.remove(0)
    } else {
        json!({ "anyOf": calls })
    };
    if let Value::Object(map) = &mut call {
        map.insert("$defs".into(), Value::Object(defs));
    }
    call
}

/// `#` → `#/$defs/{prefix}`, `#/$defs/X` and `#/definitions/X` →
/// `#/$defs/{prefix}_X`, any other `#/path` → `#/$defs/{prefix}/path`.
fn rewrite_refs(schema: &mut Value, prefix: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        let rest = r.strip_prefix('#').unwrap_or(r);
                        *r = if let Some(name) = rest
                            .strip_prefix("/$defs/")
                            .or_else(|| rest.strip_prefix("/definitions/"))
                        {
                            format!("#/$defs/{prefix}_{name}")
                        } else {
                            format!("#/$defs/{prefix}{rest}")
                        };
                    }
                    // Values of these are data, not schemas.
                    ("const" | "enum" | "default" | "examples", _) => {}
                    (_, value) => rewrite_refs(value, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// A call, or text that does not start with `{` (or whitespace, which
/// would let the model put off the choice).
fn auto_grammar(call: &Value) -> String {
    let mut call = call.clone();
    if let (Value::Object(map), Ok(options)) = (&mut call, serde_json::from_str(JSON_OPTIONS)) {
        map.insert("x-guidance".into(), options);
    }
    format!("start: call | TEXT\ncall: %json {call}\nTEXT: /[^{{ \\t\\r\\n](.|\\n)*/\n")
}

/// A `response_format` (chat completions) or a `text.format` (Responses):
/// `{type: text}`, `{type: json_object}` or a JSON schema, as the schema
/// the reply is held to (`None`: free text). `nested` tells where the
/// schema is: under `json_schema` (chat completions) or beside `type`.
pub fn response_format(
    value: &Value,
    param: &str,
    nested: bool,
) -> Result<Option<Value>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param(param);
    let Value::Object(map) = value else {
        return Err(bad(format!(
            "`{param}` is {}; send {{\"type\": \"text\" | \"json_object\" | \"json_schema\"}}",
            kind(value)
        )));
    };
    match map.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => {
            let (holder, at) = if nested {
                match map.get("json_schema") {
                    Some(Value::Object(inner)) => (inner, format!("{param}.json_schema")),
                    _ => {
                        return Err(bad(format!(
                            "`{param}.json_schema` is missing; send {{\"name\", \"schema\", \"strict\"}}"
                        )))
                    }
                }
            } else {
                (map, param.to_string())
            };
            if let Some(name) = holder.get("name") {
                check_name(name, &format!("{at}.name"))?;
            }
            let schema = holder.get("schema").ok_or_else(|| {
                ApiError::invalid(format!("`{at}.schema` is missing; send a JSON Schema"))
                    .with_param(format!("{at}.schema"))
            })?;
            schema::check(schema, &format!("{at}.schema"))?;
            Ok(Some(schema.clone()))
        }
        Some(other) => Err(bad(format!(
            "`{param}.type` is {other:?}; use text, json_object or json_schema"
        ))),
        None => Err(bad(format!(
            "`{param}.type` is missing; use text, json_object or json_schema"
        ))),
    }
}

/// A function name: what OpenAI allows, 1 to 64 of `a-zA-Z0-9_-`.
fn check_name(name: &Value, param: &str) -> Result<String, ApiError> {
    match name.as_str() {
        Some(n)
            if (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(n.to_string())
        }
        _ => Err(ApiError::invalid(format!(
            "`{param}` is {name}; a name is 1 to 64 letters, digits, `_` or `-`"
        ))
        .with_param(param)),
    }
}

/// `tools`: function tools, as chat completions nest them
/// (`{type: "function", function: {name, description, parameters}}`) or
/// as the Responses API writes them (the same fields beside `type`).
pub fn tools(value: &Value, param: &str) -> Result<Vec<Tool>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(format!(
            "`{param}` is {}; send an array of function tools",
            kind(value)
        ))
        .with_param(param));
    };
    if items.len() > MAX_TOOLS {
        return Err(ApiError::too_large(format!(
            "`{param}` has {} tools; the limit is {MAX_TOOLS}",
            items.len()
        ))
        .with_param(param));
    }
    let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{param}[{i}]");
        let kind_of = item.get("type").and_then(Value::as_str);
        if kind_of != Some("function") {
            return Err(ApiError::unsupported(
                "unsupported_tool",
                format!(
                    "`{at}.type` is {}; only function tools are supported",
                    item.get("type").map_or("missing".into(), Value::to_string)
                ),
            )
            .with_param(format!("{at}.type")));
        }
        let (function, fat) = match item.get("function") {
            Some(f @ Value::Object(_)) => (f, format!("{at}.function")),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "`{at}.function` is {}; send an object",
                    kind(other)
                ))
                .with_param(format!("{at}.function")))
            }
            None => (item, at.clone()),
        };
        let name = check_name(
            function.get("name").unwrap_or(&Value::Null),
            &format!("{fat}.name"),
        )?;
        if tools.iter().any(|t| t.name == name) {
            return Err(
                ApiError::invalid(format!("`{fat}.name`: {name:?} is declared twice"))
                    .with_param(format!("{fat}.name")),
            );
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "`{fat}.description` is {}; send a string",
                    kind(other)
                ))
                .with_param(format!("{fat}.description")))
            }
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) => {
                let pat = format!("{fat}.parameters");
                schema::check(p, &pat)?;
                if p.get("type").and_then(Value::as_str) != Some("object") {
                    return Err(ApiError::unsupported(
                        "invalid_schema",
                        format!("`{pat}.type` must be \"object\": arguments are an object"),
                    )
                    .with_param(format!("{pat}.type")));
                }
                p.clone()
            }
        };
        tools.push(Tool {
            name,
            description,
            parameters,
        });
    }
    Ok(tools)
}

/// A reply's shape from the request's parts: the schema its format asked
/// for (`format_param` names that field: `response_format` or
/// `text.format`), its `tools` and its `tool_choice`. Chat completions and
/// Responses ask the same question under different names.
pub fn of(
    json: Option<Value>,
    format_param: &str,
    tools: Option<&Value>,
    choice: Option<&Value>,
) -> Result<Shape, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(tools) => self::tools(tools, "tools")?,
    };
    let choice = match (choice, tools.is_empty()) {
        // No tools and no choice: nothing to call.
        (None, true) => None,
        (choice, _) => tool_choice(choice, &tools, "tool_choice")?,
    };
    Ok(match (choice, json) {
        (None, None) => Shape::Text,
        (None, Some(schema)) => Shape::Json(schema),
        (Some(ToolChoice::Auto), Some(_)) => {
            return Err(ApiError::unsupported(
                "unsupported_combination",
                format!("`{format_param}` with `tool_choice: \"auto\"` is not supported: a reply starting with `{{` could be either; send `tool_choice: \"required\"` (or a named function) for a call, or no tools for JSON"),
            )
            .with_param("tool_choice"))
        }
        (Some(choice), _) => Shape::Calls { tools, choice },
    })
}

/// `tool_choice` over the declared `tools`: `None` for `"none"` (no call,
/// and the tools are not described to the model).
pub fn tool_choice(
    value: Option<&Value>,
    tools: &[Tool],
    param: &str,
) -> Result<Option<ToolChoice>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).with_param(param);
    let choice = match value {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "`{param}` is {other:?}; use none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )))
            }
        },
        Some(Value::Object(map)) => {
            let name = map
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| map.get("name"))
                .and_then(Value::as_str);
            match (map.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => ToolChoice::Named(name.to_string()),
                _ => {
                    return Err(bad(format!(
                        "`{param}` must name a function: {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    )))
                }
            }
        }
        Some(other) => return Err(bad(format!("`{param}` is {}", kind(other)))),
    };
    if tools.is_empty() {
        return Err(bad(format!(
            "`{param}` asks for a call but no `tools` are declared"
        )));
    }
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|t| &t.name == name) {
            return Err(ApiError::unsupported(
                "unknown_tool",
                format!("`{param}` names {name:?}, which is not among the declared tools"),
            )
            .with_param(param));
        }
    }
    Ok(Some(choice))
}

/// A call as the model writes one: `{"name":"NAME","arguments":{...}}`.
/// `arguments` is JSON text (as OpenAI's clients send it back) or a JSON
/// value; text that is not JSON is written as a string.
pub fn call_text(name: &str, arguments: &Value) -> String {
    let arguments = match arguments {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| arguments.clone()),
        other => other.clone(),
    };
    json!({"name": name, "arguments": arguments}).to_string()
}

/// What a streamed reply's text is, piece by piece, when it may be a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text of a reply that is not a call.
    Text(String),
    /// A call begins: the function's name.
    Call(String),
    /// More of the call's arguments (JSON text).
    Arguments(String),
}

/// Splits a reply's text into a call's name and arguments as it comes
/// (see the module doc for the call's form), or passes text through.
#[derive(Debug, Clone, Default)]
pub struct CallText {
    text: String,
    /// Decided: a call (true) or text (false).
    is_call: Option<bool>,
    name: Option<String>,
    /// Where the arguments start in `text`, and how much of them went out.
    args_at: usize,
    args_sent: usize,
}

const CALL_HEAD: &str = "{\"name\":\"";
const CALL_ARGS: &str = "\",\"arguments\":";

impl CallText {
    pub fn new(mode: CallMode) -> Self {
        CallText {
            is_call: match mode {
                CallMode::Never => Some(false),
                CallMode::Always => Some(true),
                CallMode::Maybe => None,
            },
            ..CallText::default()
        }
    }

    /// Whether the reply is a call (once known).
    pub fn is_call(&self) -> bool {
        self.is_call == Some(true)
    }

    /// The call's name, once read.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The pieces `more` text completes; a call's last `}` is held back
    /// (it closes the call, not the arguments).
    pub fn push(&mut self, more: &str) -> Vec<Piece> {
        self.text.push_str(more);
        let mut out = Vec::new();
        if self.is_call.is_none() {
            match self.text.trim_start().chars().next() {
                None => return out,
                Some(c) => self.is_call = Some(c == '{'),
            }
            if self.is_call == Some(false) {
                out.push(Piece::Text(self.text.clone()));
                return out;
            }
        }
        if self.is_call == Some(false) {
            if !more.is_empty() {
                out.push(Piece::Text(more.to_string()));
            }
            return out;
        }
        self.call_pieces(false, &mut out);
        out
    }

    /// What is left at the end of the reply.
    pub fn end(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.is_call == Some(true) {
            self.call_pieces(true, &mut out);
        } else if self.is_call.is_none() && !self.text.is_empty() {
            self.is_call = Some(false);
            out.push(Piece::Text(self.text.clone()));
        }
        out
    }

    /// The whole call, once ended: its name and arguments.
    pub fn call(&self) -> Option<(String, String)> {
        let name = self.name.clone()?;
        Some((name, self.arguments(true).to_string()))
    }

    fn arguments(&self, ended: bool) -> &str {
        let args = self.text.get(self.args_at..).unwrap_or("");
        match (ended, args.strip_suffix('}')) {
            (true, Some(inner)) => inner,
            (true, None) => args,
            // Hold back the last character: it may be the closing `}`.
            (false, _) => match args.char_indices().last() {
                Some((i, _)) => &args[..i],
                None => "",
            },
        }
    }

    fn call_pieces(&mut self, ended: bool, out: &mut Vec<Piece>) {
        if self.name.is_none() {
            let head = self.text.trim_start();
            let offset = self.text.len() - head.len();
            let found = head
                .strip_prefix(CALL_HEAD)
                .and_then(|rest| rest.find(CALL_ARGS).map(|end| &rest[..end]));
            match found {
                Some(name) => {
                    self.args_at = offset + CALL_HEAD.len() + name.len() + CALL_ARGS.len();
                    self.name = Some(name.to_string());
                    out.push(Piece::Call(name.to_string()));
                }
                None if ended => {
                    // Cut short before the name was whole: what there is.
                    let name = head
                        .strip_prefix(CALL_HEAD)
                        .unwrap_or("")
                        .trim_end_matches('"')
                        .to_string();
                    self.args_at = self.text.len();
                    self.name = Some(name.clone());
                    out.push(Piece::Call(name));
                }
                None => return,
            }
        }
        let args = self.arguments(ended);
        if args.len() > self.args_sent {
            let new = args[self.args_sent..].to_string();
            self.args_sent = args.len();
            out.push(Piece::Arguments(new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(mode: CallMode, parts: &[&str]) -> (Vec<Piece>, CallText) {
        let mut text = CallText::new(mode);
        let mut pieces: Vec<Piece> = parts.iter().flat_map(|p| text.push(p)).collect();
        pieces.extend(text.end());
        (pieces, text)
    }

    #[test]
    fn a_call_streams_its_name_then_its_arguments_without_the_closing_brace() {
        let (pieces, text) = split(
            CallMode::Always,
            &[
                "{\"na",
                "me\":\"get_",
                "weather\",\"argu",
                "ments\":{\"city\"",
                ":\"Paris\"}",
                "}",
            ],
        );
        let args: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Arguments(a) => Some(a.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(pieces[0], Piece::Call("get_weather".into()));
        assert_eq!(args, "{\"city\":\"Paris\"}");
        assert_eq!(
            text.call(),
            Some(("get_weather".into(), "{\"city\":\"Paris\"}".into()))
        );
    }

    #[test]
    fn auto_decides_on_the_first_character() {
        let (pieces, text) = split(CallMode::Maybe, &["", "Hel", "lo {x}"]);
        assert_eq!(
            pieces,
            [Piece::Text("Hel".into()), Piece::Text("lo {x}".into())]
        );
        assert!(!text.is_call());
        let (pieces, text) = split(CallMode::Maybe, &["{\"name\":\"f\",\"arguments\":{}}"]);
        assert!(text.is_call());
        assert_eq!(
            pieces,
            [Piece::Call("f".into()), Piece::Arguments("{}".into())]
        );
    }

    #[test]
    fn the_call_schema_moves_each_tools_defs_under_the_root() {
        let tool = Tool {
            name: "f".into(),
            description: None,
            parameters: json!({
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/P"}, "me": {"$ref": "#"}},
                "$defs": {"P": {"type": "object", "properties": {"q": {"$ref": "#/$defs/P"}}}}
            }),
        };
        let schema = call_schema(&[&tool]);
        assert_eq!(schema["properties"]["arguments"]["$ref"], "#/$defs/tool0");
        let defs = &schema["$defs"];
        assert_eq!(defs["tool0"]["properties"]["p"]["$ref"], "#/$defs/tool0_P");
        assert_eq!(defs["tool0"]["properties"]["me"]["$ref"], "#/$defs/tool0");
        assert_eq!(
            defs["tool0_P"]["properties"]["q"]["$ref"],
            "#/$defs/tool0_P"
        );
        assert!(defs["tool0"].get("$defs").is_none());
    }

    #[test]
    fn tool_choice_names_a_declared_tool_or_is_refused() {
        let tools = tools(
            &json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]),
            "tools",
        )
        .unwrap();
        assert_eq!(
            tool_choice(
                Some(&json!({"type": "function", "function": {"name": "f"}})),
                &tools,
                "tool_choice"
            )
            .unwrap(),
            Some(ToolChoice::Named("f".into()))
        );
        assert_eq!(
            tool_choice(Some(&json!("none")), &tools, "tool_choice").unwrap(),
            None
        );
        let e = tool_choice(
            Some(&json!({"type": "function", "name": "g"})),
            &tools,
            "tool_choice",
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (400, "unknown_tool"));
        let e = super::tools(&json!([{"type": "web_search"}]), "tools").unwrap_err();
        assert_eq!((e.status, e.code), (400, "unsupported_tool"));
    }
}
