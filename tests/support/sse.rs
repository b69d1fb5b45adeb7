//! Streamed replies (`text/event-stream`) as the tests read them.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Client;

/// One streamed request: each `data:` payload with its arrival time.
pub struct Events {
    pub status: u16,
    pub content_type: String,
    pub started: Instant,
    pub events: Vec<(Duration, String)>,
}

/// `body` posted to `path` as `c` sends it (its headers too), 120 s at most.
fn post(
    c: &Client,
    path: &str,
    body: &Value,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut req = agent
        .post(format!("{}{path}", c.base()))
        .header("content-type", "application/json");
    for (name, value) in c.headers() {
        req = req.header(name, value);
    }
    req.send(body.to_string())
}

/// A streamed request read until its first token, then hung up (the
/// connection dropped), as a client that lost interest or its network does.
pub fn hang_up_after_first_token(c: &Client, path: &str, body: &Value) -> Result<(), String> {
    let res = post(c, path, body).map_err(|e| format!("{path}: {e}"))?;
    let status = res.status().as_u16();
    let mut reader = BufReader::new(res.into_body().into_reader());
    if status != 200 {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut text);
        return Err(format!("{path}: {status} {text}"));
    }
    for line in reader.lines() {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if line.starts_with("data: ")
            && line.contains("\"content\":\"")
            && !line.contains("\"content\":\"\"")
        {
            return Ok(());
        }
    }
    Err(format!("{path}: the stream ended before its first token"))
}

pub fn stream(c: &Client, path: &str, body: &Value) -> Events {
    let started = Instant::now();
    let res = post(c, path, body).expect("send");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let mut events = Vec::new();
    let reader = BufReader::new(res.into_body().into_reader());
    for line in reader.lines() {
        let line = line.expect("read stream");
        if let Some(data) = line.strip_prefix("data: ") {
            events.push((started.elapsed(), data.to_string()));
        }
    }
    Events {
        status,
        content_type,
        started,
        events,
    }
}

pub fn stream_text(events: &Events) -> (String, Option<String>, Option<Value>) {
    let mut text = String::new();
    let (mut finish, mut usage) = (None, None);
    for (_, data) in &events.events {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(choice) = v["choices"].get(0) {
            text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, finish, usage)
}
