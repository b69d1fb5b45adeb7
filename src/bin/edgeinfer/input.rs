//! Reading JSONL input and turning each line into the fields of an API
//! request. A line that cannot become a request is kept as an error in its
//! place, so the output has exactly one line per input line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use edgeinfer::api::{kind, ApiError};
use serde_json::{Map, Value};

use crate::route::ApiRoute;

/// One input line (or one TEXT argument), ready for the engine.
#[derive(Debug)]
pub struct Job {
    /// 1-based line number (or argument position).
    pub line: usize,
    /// The line's own `id`, else its line number: what the output carries.
    pub id: Value,
    pub work: Result<Work, ApiError>,
}

/// A valid line: the request it becomes.
#[derive(Debug)]
pub struct Work {
    /// The request body; for the batch routes, without `input`, so that
    /// lines with equal fields can share one request.
    pub fields: Map<String, Value>,
    /// The text, for the batch routes (classify, embeddings).
    pub text: Option<String>,
}

/// The command line's settings, applied to every line that does not set
/// them itself.
#[derive(Debug, Default)]
pub struct Defaults {
    pub fields: Map<String, Value>,
    /// Chat: a system message before a plain-string line's user message.
    pub system: Option<String>,
}

/// Parses one raw line (without its newline).
pub fn parse_line(route: ApiRoute, line: usize, raw: &[u8], defaults: &Defaults) -> Job {
    let mut job = Job {
        line,
        id: Value::from(line),
        work: Err(ApiError::internal("unparsed")),
    };
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let value = match std::str::from_utf8(raw) {
        Err(e) => Err(ApiError::malformed(format!(
            "line {line} is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
        .with_code("malformed_line")),
        Ok(text) => serde_json::from_str::<Value>(text).map_err(|e| {
            ApiError::malformed(format!("line {line} is not valid JSON: {e}"))
                .with_code("malformed_line")
        }),
    };
    job.work = value.and_then(|value| match value {
        Value::String(text) => Ok(from_string(route, text, defaults)),
        Value::Object(mut fields) => {
            if let Some(id) = fields.remove("id") {
                job.id = id;
            }
            from_object(route, fields, defaults)
        }
        other => Err(ApiError::invalid(format!(
            "line {line} is {}; send a string or an object ({})",
            kind(&other),
            route.line_shape()
        ))),
    });
    job
}

/// A TEXT argument: the same as a JSONL line holding that string.
pub fn from_argument(route: ApiRoute, position: usize, text: String, defaults: &Defaults) -> Job {
    Job {
        line: position,
        id: Value::from(position),
        work: Ok(from_string(route, text, defaults)),
    }
}

fn from_string(route: ApiRoute, text: String, defaults: &Defaults) -> Work {
    match route {
        ApiRoute::Classify | ApiRoute::Embed => Work {
            fields: defaults.fields.clone(),
            text: Some(text),
        },
        ApiRoute::Chat => {
            let mut messages = Vec::new();
            if let Some(system) = &defaults.system {
                messages.push(serde_json::json!({"role": "system", "content": system}));
            }
            messages.push(serde_json::json!({"role": "user", "content": text}));
            let mut fields = Map::new();
            fields.insert("messages".into(), Value::Array(messages));
            with_chat_defaults(&mut fields, defaults);
            Work { fields, text: None }
        }
    }
}

fn from_object(
    route: ApiRoute,
    mut fields: Map<String, Value>,
    defaults: &Defaults,
) -> Result<Work, ApiError> {
    match route {
        ApiRoute::Classify | ApiRoute::Embed => {
            let text = match fields.remove("input") {
                Some(Value::String(text)) => text,
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "`input` is {}; send one text per line, as a string",
                        kind(&other)
                    ))
                    .with_param("input"))
                }
                None => {
                    return Err(ApiError::invalid(format!(
                        "the line has no `input`; send {}",
                        route.line_shape()
                    ))
                    .with_param("input"))
                }
            };
            for (k, v) in &defaults.fields {
                fields.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Ok(Work {
                fields,
                text: Some(text),
            })
        }
        ApiRoute::Chat => {
            if !fields.contains_key("messages") {
                return Err(ApiError::invalid(format!(
                    "the line has no `messages`; send {}",
                    route.line_shape()
                ))
                .with_param("messages"));
            }
            // One JSON line per reply: an event stream has no place in it.
            if fields
                .get("stream")
                .is_some_and(|s| s != &Value::Bool(false))
            {
                return Err(ApiError::invalid(
                    "`stream` is not available in batch mode; each reply is one output line",
                )
                .with_param("stream"));
            }
            with_chat_defaults(&mut fields, defaults);
            Ok(Work { fields, text: None })
        }
    }
}

fn with_chat_defaults(fields: &mut Map<String, Value>, defaults: &Defaults) {
    let has_length =
        fields.contains_key("max_tokens") || fields.contains_key("max_completion_tokens");
    for (k, v) in &defaults.fields {
        if k == "max_tokens" && has_length {
            continue;
        }
        fields.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Where lines come from: a file (whose lines are counted first, for the
/// progress total) or stdin (streamed; no total).
pub struct Source {
    reader: Box<dyn BufRead>,
    pub total: Option<u64>,
    buf: Vec<u8>,
}

impl Source {
    pub fn open(path: &Path) -> io::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Source {
                reader: Box::new(BufReader::new(io::stdin())),
                total: None,
                buf: Vec::new(),
            });
        }
        let total = count_lines(File::open(path)?)?;
        Ok(Source {
            reader: Box::new(BufReader::with_capacity(1 << 16, File::open(path)?)),
            total: Some(total),
            buf: Vec::new(),
        })
    }

    /// The next line without its `\n`, or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(Some(&self.buf))
    }
}

/// Lines as [`Source::next_line`] will return them: a last line without a
/// newline still counts.
fn count_lines(mut file: File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}
