//! `edgeinfer chat --session FILE MESSAGE`: one turn of a conversation kept
//! in a file. The file is the native session store ([`MemoryStore`]) as
//! JSON, and the turn goes through the API's own session routes
//! (`POST /v1/sessions`, `POST /v1/sessions/{id}/messages`) via
//! [`api::handle_with`]: the same limits, history and stored rows as a
//! session in the worker's Durable Object.

use std::io::ErrorKind;
use std::path::Path;

use edgeinfer::api::sessions::MemoryStore;
use edgeinfer::api::{self, Context, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

/// Why a turn was not taken: a refusal of the API (its status and message)
/// or a file that cannot be read or written.
pub enum TurnError {
    Refused(u16, String),
    File(String),
}

/// Takes one turn of the conversation in `path` and returns the reply.
/// `new_session` is the body of `POST /v1/sessions` when the file holds
/// none yet; `fields` are the turn's sampling settings.
pub fn take_turn(
    path: &Path,
    new_session: &Map<String, Value>,
    message: &str,
    fields: &Map<String, Value>,
) -> Result<String, TurnError> {
    let mut store = load(path)?;
    let ctx = Context::default();
    let existing = store.ids().next().map(str::to_string);
    let id = match existing {
        Some(id) => id,
        None => {
            let body = to_bytes(&Value::Object(new_session.clone()));
            let res = api::handle_with(
                &HttpRequest::post_json("/v1/sessions", &body),
                &ctx,
                &mut store,
            );
            let created = answer(&res, 201)?;
            created["id"].as_str().unwrap_or_default().to_string()
        }
    };
    let mut body = fields.clone();
    body.insert("content".into(), json!(message));
    let body = to_bytes(&Value::Object(body));
    let route = format!("/v1/sessions/{id}/messages");
    let res = api::handle_with(&HttpRequest::post_json(&route, &body), &ctx, &mut store);
    let reply = answer(&res, 200)?;
    save(path, &store)?;
    Ok(reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The body of a `want` answer, or the refusal.
fn answer(res: &HttpResponse, want: u16) -> Result<Value, TurnError> {
    let body: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    if res.status == want {
        return Ok(body);
    }
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("the request failed")
        .to_string();
    Err(TurnError::Refused(res.status, message))
}

fn load(path: &Path) -> Result<MemoryStore, TurnError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            TurnError::File(format!(
                "{} is not an edgeinfer session file: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(MemoryStore::new()),
        Err(e) => Err(TurnError::File(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the file whole or not at all: a new file, then renamed over the
/// old one, so a crash never leaves half a conversation.
fn save(path: &Path, store: &MemoryStore) -> Result<(), TurnError> {
    let failed =
        |e: std::io::Error| TurnError::File(format!("cannot write {}: {e}", path.display()));
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let bytes = serde_json::to_vec_pretty(store).unwrap_or_default();
    std::fs::write(&partial, bytes).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}
