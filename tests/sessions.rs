//! Chat sessions served natively: `api::handle_with` over the native store
//! (`MemoryStore`), the same session logic the worker's `ChatSession`
//! Durable Object runs over its SQLite storage. What the design guarantees
//! is checked here without a runtime: a turn sees the history, is stored
//! whole with its reply (streamed or not) or not at all, a session belongs
//! to the key that made it, limits are enforced, and delete erases.

use edgeinfer::api::sessions::{
    MemoryStore, Session, SessionMeta, SessionStore, Staged, StoreError, StoredMessage, Write,
};
use edgeinfer::api::{self, Context, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// The small chat model this host runs itself.
const MODEL: &str = "shakespeare-llama";

mod inproc;
use inproc::{json_of, post, request};

/// A new session of [`MODEL`] with `system`; its id.
fn create(store: &mut dyn SessionStore, ctx: &Context<'_>, system: &str) -> String {
    let res = post(
        store,
        ctx,
        "/v1/sessions",
        &json!({"model": MODEL, "system": system}),
    );
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    json_of(&res)["id"].as_str().unwrap().to_string()
}

fn say(store: &mut dyn SessionStore, ctx: &Context<'_>, id: &str, content: &str) -> HttpResponse {
    post(
        store,
        ctx,
        &format!("/v1/sessions/{id}/messages"),
        &json!({"content": content, "max_tokens": 8, "temperature": 0}),
    )
}

/// A fresh store holding one new session that is told to be brief.
fn brief_session() -> (MemoryStore, Context<'static>, String) {
    let mut store = MemoryStore::new();
    let ctx = Context::default();
    let id = create(&mut store, &ctx, "Be brief.");
    (store, ctx, id)
}

/// A short streamed turn of session `id`.
fn say_streamed(store: &mut dyn SessionStore, ctx: &Context<'_>, id: &str) -> HttpResponse {
    post(
        store,
        ctx,
        &format!("/v1/sessions/{id}/messages"),
        &json!({"content": "Hail.", "stream": true, "max_tokens": 6}),
    )
}

fn messages(store: &mut dyn SessionStore, ctx: &Context<'_>, id: &str) -> Vec<Value> {
    let res = request(store, ctx, "GET", &format!("/v1/sessions/{id}"));
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    json_of(&res)["messages"].as_array().unwrap().clone()
}

#[test]
fn a_turn_sees_the_history_and_is_stored_with_its_reply() {
    let mut store = MemoryStore::new();
    let ctx = Context::default();
    let id = create(&mut store, &ctx, "Speak as a king.");
    let first = say(&mut store, &ctx, &id, "Who art thou?");
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = json_of(&first);
    assert_eq!(first["session"], id);
    let history = messages(&mut store, &ctx, &id);
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[0]["content"], "Who art thou?");
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(
        history[1]["content"],
        first["choices"][0]["message"]["content"]
    );

    // Turn 2's prompt holds turn 1: more prompt tokens than turn 1's whole
    // prompt and reply.
    let second = json_of(&say(&mut store, &ctx, &id, "And whence?"));
    let used = first["usage"]["total_tokens"].as_u64().unwrap();
    assert!(
        second["usage"]["prompt_tokens"].as_u64().unwrap() > used,
        "{second}"
    );

    // The same conversation sent whole to /v1/chat/completions gets the
    // same greedy reply: the session added exactly its history.
    let whole = post(
        &mut store,
        &ctx,
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 8, "temperature": 0, "messages": [
            {"role": "system", "content": "Speak as a king."},
            {"role": "user", "content": "Who art thou?"},
            {"role": "assistant", "content": history[1]["content"]},
            {"role": "user", "content": "And whence?"},
        ]}),
    );
    assert_eq!(
        json_of(&whole)["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
    assert_eq!(messages(&mut store, &ctx, &id).len(), 4);
}

#[test]
fn a_chat_completion_naming_the_session_is_a_turn_of_it() {
    let (mut store, ctx, id) = brief_session();
    let res = post(
        &mut store,
        &ctx,
        "/v1/chat/completions",
        &json!({"model": MODEL, "session": id, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hail."}]}),
    );
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(messages(&mut store, &ctx, &id).len(), 2);
    // The header names it as well; a different one in the body is refused.
    let bytes = serde_json::to_vec(&json!({"model": MODEL, "session": id,
        "messages": [{"role": "user", "content": "Hail."}]}))
    .unwrap();
    let other = "f".repeat(32);
    let mut req = HttpRequest::post_json("/v1/chat/completions", &bytes);
    req.session = Some(&other);
    let res = api::handle_with(&req, &ctx, &mut store);
    assert_eq!(res.status, 422);
    assert_eq!(messages(&mut store, &ctx, &id).len(), 2);
}

#[test]
fn a_streamed_turn_is_stored_before_its_end_goes_out() {
    let (mut store, ctx, id) = brief_session();
    let res = say_streamed(&mut store, &ctx, &id);
    assert_eq!(res.status, 200);
    let body = String::from_utf8(res.body).unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let text: String = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let history = messages(&mut store, &ctx, &id);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["content"], text);
}

/// A store whose writes of turns fail: what a full disk or a lost
/// database does.
struct FailingAppends(MemoryStore);

impl SessionStore for FailingAppends {
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError> {
        self.0.create(meta)
    }
    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.0.load(id)
    }
    fn append(&mut self, _: &str, _: &[StoredMessage]) -> Result<(), StoreError> {
        Err(StoreError("the disk is full".into()))
    }
    fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.0.delete(id)
    }
}

#[test]
fn a_turn_that_cannot_be_stored_is_not_answered_as_done() {
    let mut store = FailingAppends(MemoryStore::new());
    let ctx = Context::default();
    let id = create(&mut store, &ctx, "Be brief.");
    let res = say(&mut store, &ctx, &id, "Hail.");
    assert_eq!(res.status, 500);
    assert_eq!(json_of(&res)["error"]["code"], "internal_error");
    assert!(res.internal_error.unwrap().contains("the disk is full"));

    let res = say_streamed(&mut store, &ctx, &id);
    let body = String::from_utf8(res.body).unwrap();
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    // The reply's last chunk is replaced by the error; no finish_reason
    // reaches the client, and the session holds nothing.
    assert!(
        events.iter().any(|e| e.contains("\"internal_error\"")),
        "{body}"
    );
    assert!(
        !body.contains("\"finish_reason\":\"stop\"")
            && !body.contains("\"finish_reason\":\"length\""),
        "{body}"
    );
    assert_eq!(messages(&mut store, &ctx, &id).len(), 0);
}

#[test]
fn a_session_belongs_to_the_key_that_made_it() {
    let mut store = MemoryStore::new();
    let alice = Context::owned_by("alice-digest");
    let bob = Context::owned_by("bob-digest");
    let id = create(&mut store, &alice, "Be brief.");
    let path = format!("/v1/sessions/{id}");
    for res in [
        request(&mut store, &bob, "GET", &path),
        say(&mut store, &bob, &id, "Hail."),
        request(&mut store, &bob, "DELETE", &path),
        request(&mut store, &Context::default(), "GET", &path),
    ] {
        assert_eq!(res.status, 404);
        assert_eq!(json_of(&res)["error"]["code"], "session_not_found");
    }
    assert_eq!(request(&mut store, &alice, "GET", &path).status, 200);
}

#[test]
fn limits_and_bad_ids() {
    let (mut store, ctx, id) = brief_session();
    // Fill the session to one short of its message limit directly.
    let row = |role: &str| StoredMessage {
        role: role.into(),
        content: "x".into(),
        created: 0,
        finish_reason: None,
        prompt_tokens: None,
        completion_tokens: None,
    };
    let rows: Vec<StoredMessage> = (0..api::limits::MAX_SESSION_MESSAGES - 1)
        .map(|i| row(if i % 2 == 0 { "user" } else { "assistant" }))
        .collect();
    store.append(&id, &rows).unwrap();
    let res = say(&mut store, &ctx, &id, "Hail.");
    assert_eq!(res.status, 413);
    assert_eq!(json_of(&res)["error"]["code"], "session_full");
    assert_eq!(messages(&mut store, &ctx, &id).len(), rows.len());

    for bad in ["nope", "0123456789ABCDEF0123456789ABCDEF", &"a".repeat(33)] {
        let res = request(&mut store, &ctx, "GET", &format!("/v1/sessions/{bad}"));
        assert_eq!(res.status, 404, "{bad}");
    }
    let res = request(
        &mut store,
        &ctx,
        "GET",
        &format!("/v1/sessions/{}", "0".repeat(32)),
    );
    assert_eq!(res.status, 404);
    let res = post(&mut store, &ctx, "/v1/sessions", &json!({"model": "lande"}));
    assert_eq!(res.status, 422);
    let res = post(
        &mut store,
        &ctx,
        "/v1/sessions",
        &json!({"defaults": {"temperature": 9}}),
    );
    assert_eq!(res.status, 422);
    assert_eq!(json_of(&res)["error"]["param"], "defaults.temperature");
}

#[test]
fn delete_erases_and_head_answers_without_a_body() {
    let (mut store, ctx, id) = brief_session();
    let path = format!("/v1/sessions/{id}");
    let head = request(&mut store, &ctx, "HEAD", &path);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let gone = request(&mut store, &ctx, "DELETE", &path);
    assert_eq!(gone.status, 200);
    assert_eq!(json_of(&gone)["deleted"], true);
    assert_eq!(request(&mut store, &ctx, "GET", &path).status, 404);
    assert_eq!(say(&mut store, &ctx, &id, "Hail.").status, 404);
    assert_eq!(store.ids().count(), 0);
}

#[test]
fn a_model_of_shard_workers_is_a_503_here_not_a_500() {
    let mut store = MemoryStore::new();
    let ctx = Context::default();
    let sharded = edgeinfer::registry::MODELS
        .iter()
        .find(|m| matches!(m.input, edgeinfer::registry::InputSpec::ShardedChat { .. }))
        .expect("the default chat model is sharded");
    let res = post(
        &mut store,
        &ctx,
        "/v1/chat/completions",
        &json!({"model": sharded.id, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(res.status, 503, "{}", String::from_utf8_lossy(&res.body));
    assert!(json_of(&res)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shard Workers"));
}

#[test]
fn errors_carry_the_headers_a_client_acts_on() {
    let res = api::handle(&HttpRequest::bodiless("PUT", "/v1/models"));
    assert_eq!(res.status, 405);
    assert!(res
        .headers
        .contains(&("allow", "GET, HEAD, OPTIONS".into())));
    let keys = api::auth::ApiKeys::parse(Some("k1"));
    let refused = keys.authorize("/v1/models", None).unwrap_err();
    assert!(refused
        .headers
        .contains(&("www-authenticate", "Bearer".into())));
    let res = HttpResponse::error(refused);
    assert_eq!(res.status, 401);
    assert!(res.headers.contains(&("www-authenticate", "Bearer".into())));
    let limit = api::rate_limit::RateLimit {
        per_minute: 60,
        burst: 1,
        on_error: api::rate_limit::OnError::Open,
    };
    let res = HttpResponse::error(limit.refusal(3));
    assert_eq!(res.status, 429);
    assert!(res.headers.contains(&("retry-after", "3".into())));
}

#[test]
fn validate_names_the_real_failure_of_the_model_routes() {
    let e = api::validate(&HttpRequest::bodiless("GET", "/v1/models/nope")).unwrap_err();
    assert_eq!((e.status, e.code), (404, "model_not_found"));
    let e = api::validate(&HttpRequest::bodiless("POST", "/healthz")).unwrap_err();
    assert_eq!((e.status, e.code), (405, "method_not_allowed"));
    assert!(api::validate(&HttpRequest::bodiless("GET", "/healthz")).is_ok());
    assert!(api::validate(&HttpRequest::bodiless("HEAD", "/v1/models/lande")).is_ok());
}

/// Applies a staged call's writes to `store`, as the Deno server's KV
/// commit does to its entries.
fn replay(writes: Vec<Write>, id: &str, store: &mut dyn SessionStore) {
    for write in writes {
        match write {
            Write::Create { meta } => store.create(&meta).unwrap(),
            Write::Append { rows } => store.append(id, &rows).unwrap(),
            Write::Delete => store.delete(id).unwrap(),
        }
    }
}

/// A host whose storage only answers asynchronously (Deno KV) runs each
/// call over a `Staged` copy of its session and commits the writes after:
/// those writes, replayed, must hold exactly what the call did, turn by
/// turn (whole and streamed), and a delete.
#[test]
fn staged_writes_hold_what_each_call_did() {
    let ctx = Context::default();
    let mut direct = MemoryStore::new();
    let mut committed = MemoryStore::new();
    let created = post(
        &mut direct,
        &ctx,
        "/v1/sessions",
        &json!({"model": MODEL, "system": "Be brief."}),
    );
    let id = json_of(&created)["id"].as_str().unwrap().to_string();
    let mut staged = Staged::new(&id, None);
    staged
        .create(&direct.load(&id).unwrap().unwrap().meta)
        .unwrap();
    replay(staged.take_writes(), &id, &mut committed);
    for content in ["Hail.", "What news from the court?"] {
        let mut call = Staged::new(&id, committed.load(&id).unwrap());
        let here = say(&mut direct, &ctx, &id, content);
        let there = say(&mut call, &ctx, &id, content);
        assert_eq!((here.status, there.status), (200, 200));
        assert_eq!(
            json_of(&here)["choices"][0]["message"],
            json_of(&there)["choices"][0]["message"]
        );
        let writes = call.take_writes();
        assert!(
            matches!(&writes[..], [Write::Append { rows }] if rows.len() == 2),
            "{writes:?}"
        );
        replay(writes, &id, &mut committed);
        assert_eq!(committed.load(&id).unwrap(), call.load(&id).unwrap());
    }
    let mut call = Staged::new(&id, committed.load(&id).unwrap());
    let streamed = say_streamed(&mut call, &ctx, &id);
    assert_eq!(streamed.status, 200);
    replay(call.take_writes(), &id, &mut committed);
    let history: Vec<Value> = messages(&mut committed, &ctx, &id);
    assert_eq!(history.len(), 6, "{history:?}");
    // A copy holds one session: another id is a store failure, not a miss.
    assert!(call.load(&"0".repeat(32)).is_err());
    let mut call = Staged::new(&id, committed.load(&id).unwrap());
    let res = request(&mut call, &ctx, "DELETE", &format!("/v1/sessions/{id}"));
    assert_eq!(res.status, 200);
    let writes = call.take_writes();
    assert_eq!(writes, vec![Write::Delete]);
    replay(writes, &id, &mut committed);
    assert_eq!(committed.load(&id).unwrap(), None);
}
