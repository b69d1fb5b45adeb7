//! Abuse, garbage and faults, against the built worker in workerd: API keys
//! and session ownership, rate limits, more than fifty hostile requests, a
//! panic, and workerd killed in the middle of a streamed reply.

mod support;

use std::io::{BufRead, BufReader};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use support::{ensure, Bindings, Client, Reply, Server, TempDir, Worker};

fn text(r: &Reply) -> String {
    format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
}

fn vars(pairs: &[(&str, &str)]) -> Bindings {
    Bindings {
        vars: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Bindings::default()
    }
}

/// A JSON request with extra headers (an API key, a client IP, ...).
fn call(c: &Client, method: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let body = if method == "GET" || method == "DELETE" {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    c.send_with_headers(method, path, &all, &body)
}

const ALPHA: (&str, &str) = ("authorization", "Bearer key-alpha");

/// A session of key alpha's: its id, its path and its messages' path.
fn alpha_session(c: &Client) -> Result<(String, String, String), Failed> {
    let r = call(c, "POST", "/v1/sessions", &[ALPHA], &json!({}));
    ensure(r.status == 201, || text(&r))?;
    let id = r.json()["id"].as_str().unwrap_or_default().to_string();
    let path = format!("/v1/sessions/{id}");
    let messages = format!("{path}/messages");
    Ok((id, path, messages))
}
const BETA: (&str, &str) = ("authorization", "Bearer key-beta");

fn lande(c: &Client, headers: &[(&str, &str)]) -> Reply {
    call(
        c,
        "POST",
        "/v1/classify",
        headers,
        &json!({ "model": "lande", "input": "Bonjour tout le monde, comment allez-vous ?" }),
    )
}

fn api_keys() -> Result<(), Failed> {
    let w = Worker::start_with(&vars(&[("API_KEYS", "key-alpha, key-beta")]));
    let c = w.client();
    ensure(c.get("/healthz").status == 200, || {
        "/healthz must stay open".into()
    })?;
    let r = c.get("/v1/models");
    let e = r.expect_error(401);
    ensure(e["code"] == "invalid_api_key", || format!("{e}"))?;
    ensure(r.header("www-authenticate") == Some("Bearer"), || {
        format!("{:?}", r.headers)
    })?;
    for bad in [
        "Bearer nope",
        "Bearer key-alph",
        "Bearer key-alpha-and-more",
        "Basic a2V5LWFscGhh",
        "key-alpha",
        "Bearer",
    ] {
        let r = call(
            &c,
            "GET",
            "/v1/models",
            &[("authorization", bad)],
            &json!({}),
        );
        r.expect_error(401);
    }
    // No key, no body read, no route revealed.
    lande(&c, &[]).expect_error(401);
    call(&c, "GET", "/v1/nothing-here", &[], &json!({})).expect_error(401);
    call(&c, "GET", "/v1/nothing-here", &[ALPHA], &json!({})).expect_error(404);
    for key in [ALPHA, BETA, ("authorization", "bearer  key-beta ")] {
        let r = lande(&c, &[key]);
        ensure(r.status == 200, || text(&r))?;
    }
    let r = call(&c, "GET", "/v1/models", &[ALPHA], &json!({}));
    ensure(r.status == 200, || text(&r))?;
    Ok(())
}

fn sessions_belong_to_their_key() -> Result<(), Failed> {
    let w = Worker::start_with(&vars(&[("API_KEYS", "key-alpha,key-beta")]));
    let c = w.client();
    let (id, path, messages) = alpha_session(&c)?;
    let r = call(
        &c,
        "POST",
        &messages,
        &[ALPHA],
        &json!({ "content": "Who is there?", "max_tokens": 6 }),
    );
    ensure(r.status == 200, || text(&r))?;
    // What another key sees is exactly what a session that never existed gives.
    let missing = "0123456789abcdef0123456789abcdef";
    let never = call(
        &c,
        "GET",
        &format!("/v1/sessions/{missing}"),
        &[BETA],
        &json!({}),
    );
    let never = never.expect_error(404);
    let attempts = [
        call(&c, "GET", &path, &[BETA], &json!({})),
        call(
            &c,
            "POST",
            &messages,
            &[BETA],
            &json!({ "content": "Mine now." }),
        ),
        call(&c, "DELETE", &path, &[BETA], &json!({})),
        call(
            &c,
            "POST",
            "/v1/chat/completions",
            &[BETA],
            &json!({ "model": "shakespeare-llama", "session": id, "messages": [{ "role": "user", "content": "Hi" }] }),
        ),
        call(
            &c,
            "POST",
            "/v1/chat/completions",
            &[BETA, ("x-session-id", &id)],
            &json!({ "model": "shakespeare-llama", "messages": [{ "role": "user", "content": "Hi" }] }),
        ),
    ];
    for r in &attempts {
        let e = r.expect_error(404);
        ensure(
            e["code"] == never["code"] && e["type"] == never["type"],
            || format!("{e} vs {never}"),
        )?;
        ensure(
            !String::from_utf8_lossy(&r.body).contains("Who is there"),
            || text(r),
        )?;
    }
    call(&c, "GET", &path, &[], &json!({})).expect_error(401);
    // The owner's session is untouched by all of that.
    let r = call(&c, "GET", &path, &[ALPHA], &json!({}));
    ensure(r.status == 200, || text(&r))?;
    let h = r.json()["messages"].as_array().cloned().unwrap_or_default();
    ensure(h.len() == 2 && h[0]["content"] == "Who is there?", || {
        format!("{h:?}")
    })?;
    let r = call(&c, "DELETE", &path, &[ALPHA], &json!({}));
    ensure(r.status == 200, || text(&r))?;
    Ok(())
}

fn rate_limit_per_key() -> Result<(), Failed> {
    // One token a minute and bursts of 5: the sixth request is refused
    // unless these six took over a minute.
    let w = Worker::start_with(&vars(&[
        ("API_KEYS", "key-alpha,key-beta"),
        ("RATE_LIMIT_PER_MINUTE", "1"),
        ("RATE_LIMIT_BURST", "5"),
    ]));
    let c = w.client();
    for i in 0..5 {
        let r = lande(&c, &[ALPHA]);
        ensure(r.status == 200, || format!("request {i}: {}", text(&r)))?;
    }
    let r = lande(&c, &[ALPHA]);
    let e = r.expect_error(429);
    ensure(e["code"] == "rate_limit_exceeded", || format!("{e}"))?;
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Retry-After: {:?}", r.headers))?;
    ensure((1..=60).contains(&retry), || format!("Retry-After {retry}"))?;
    // Every route under /v1 draws from the bucket; the other key has its own;
    // the health check is not limited.
    call(&c, "GET", "/v1/models", &[ALPHA], &json!({})).expect_error(429);
    let r = lande(&c, &[BETA]);
    ensure(r.status == 200, || text(&r))?;
    for _ in 0..10 {
        ensure(c.get("/healthz").status == 200, || "healthz limited".into())?;
    }
    Ok(())
}

fn rate_limit_per_ip_without_keys() -> Result<(), Failed> {
    let w = Worker::start_with(&vars(&[
        ("RATE_LIMIT_PER_MINUTE", "1"),
        ("RATE_LIMIT_BURST", "3"),
    ]));
    let c = w.client();
    let one = ("cf-connecting-ip", "203.0.113.7");
    let two = ("cf-connecting-ip", "2001:db8::2");
    for _ in 0..3 {
        let r = lande(&c, &[one]);
        ensure(r.status == 200, || text(&r))?;
    }
    lande(&c, &[one]).expect_error(429);
    let r = lande(&c, &[two]);
    match support::server() {
        // Cloudflare's edge sets the header: another address, another bucket.
        Server::Workerd => ensure(r.status == 200, || text(&r)),
        // The Deno server is the edge: it takes the socket's peer and
        // overwrites what a client sends, so a forged address is the same
        // caller.
        Server::Deno => ensure(r.status == 429, || {
            format!("a client-sent cf-connecting-ip was trusted: {}", text(&r))
        }),
    }
}

/// The limiter's objects down: by default requests are served (and a log
/// line says the limiter is unavailable); with `RATE_LIMIT_ON_ERROR =
/// closed` they get a 503 with Retry-After, never a 500 or a hang.
fn a_failed_limiter_opens_or_closes_as_configured() -> Result<(), Failed> {
    for (mode, want) in [(None, 200), (Some("closed"), 503)] {
        let mut pairs = vec![("RATE_LIMIT_PER_MINUTE", "60"), ("RATE_LIMIT_BURST", "5")];
        if let Some(mode) = mode {
            pairs.push(("RATE_LIMIT_ON_ERROR", mode));
        }
        let w = Worker::start_with(&Bindings {
            broken_limiter: true,
            ..vars(&pairs)
        });
        let c = w.client();
        for _ in 0..3 {
            let r = lande(&c, &[]);
            ensure(r.status == want, || format!("{mode:?}: {}", text(&r)))?;
            if want == 503 {
                let e = r.expect_error(503);
                ensure(e["code"] == "rate_limiter_unavailable", || format!("{e}"))?;
                ensure(r.header("retry-after") == Some("5"), || {
                    format!("{:?}", r.headers)
                })?;
            }
        }
        let log = w.log_text();
        ensure(log.contains("\"rate_limit\":\"unavailable\""), || {
            format!("no log line of the failed limiter:\n{log}")
        })?;
    }
    Ok(())
}

fn panic_costs_one_request() -> Result<(), Failed> {
    let w = Worker::start_test_panic();
    let c = w.client();
    let before = lande(&c, &[]);
    ensure(before.status == 200, || text(&before))?;
    for round in 0..3 {
        let r = c.get("/__test/panic");
        ensure(r.header("content-type") == Some("application/json"), || {
            format!("{} {:?}\n{}", text(&r), r.headers, w.log_text())
        })?;
        let e = r.expect_error(500);
        ensure(e["code"] == "internal_error", || format!("{e}"))?;
        // The next requests are served, with the same answers.
        ensure(c.get("/healthz").status == 200, || {
            format!("round {round}: healthz after a panic")
        })?;
        let after = lande(&c, &[]);
        ensure(after.status == 200 && after.body == before.body, || {
            format!("round {round}: {}", text(&after))
        })?;
    }
    let log = w.log_text();
    ensure(
        log.contains("test-panic: a panic on the request path"),
        || format!("the panic message is not in the log:\n{log}"),
    )?;
    Ok(())
}

/// One hostile request and the status it must get.
struct Hostile {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
}

fn hostile(
    what: &'static str,
    method: &'static str,
    path: &str,
    body: &[u8],
    status: u16,
) -> Hostile {
    Hostile {
        what,
        method,
        path: path.to_string(),
        headers: vec![("content-type", "application/json".to_string())],
        body: body.to_vec(),
        status,
    }
}

fn with_header(mut h: Hostile, name: &'static str, value: &str) -> Hostile {
    h.headers.retain(|(n, _)| *n != name);
    h.headers.push((name, value.to_string()));
    h
}

fn without_header(mut h: Hostile, name: &str) -> Hostile {
    h.headers.retain(|(n, _)| *n != name);
    h
}

fn hostile_requests() -> Vec<Hostile> {
    let chat = |extra: &str| -> Vec<u8> {
        format!(r#"{{"model":"shakespeare-llama","messages":[{{"role":"user","content":"Hi"}}]{extra}}}"#)
            .into_bytes()
    };
    let nested = |depth: usize| -> Vec<u8> {
        let mut s = String::from(r#"{"model":"lande","input":"#);
        s.push_str(&"[".repeat(depth));
        s.push_str(&"]".repeat(depth));
        s.push('}');
        s.into_bytes()
    };
    let long_text = "a".repeat(20_001);
    let many_inputs: Vec<String> = (0..129).map(|i| format!("text {i}")).collect();
    let c = "/v1/classify";
    let e = "/v1/embeddings";
    let s = "/v1/similarity";
    let ch = "/v1/chat/completions";
    let ss = "/v1/sessions";
    vec![
        // Malformed and truncated JSON.
        hostile("lone brace", "POST", c, b"{", 400),
        hostile(
            "truncated object",
            "POST",
            c,
            br#"{"model":"lande","input":"hi""#,
            400,
        ),
        hostile("trailing comma", "POST", e, br#"{"input": ["a", ]}"#, 400),
        hostile(
            "truncated chat",
            "POST",
            ch,
            br#"{"messages":[{"role":"user","content":"hi"}"#,
            400,
        ),
        hostile("truncated array", "POST", s, b"[1,2,", 400),
        hostile("empty body", "POST", c, b"", 400),
        hostile(
            "NaN literal",
            "POST",
            ch,
            &chat(r#","temperature":NaN"#),
            400,
        ),
        hostile(
            "single quotes",
            "POST",
            c,
            b"{'model':'lande','input':'x'}",
            400,
        ),
        hostile(
            "two documents",
            "POST",
            c,
            br#"{"model":"lande","input":"a"}{"x":1}"#,
            400,
        ),
        hostile(
            "raw control characters in a string",
            "POST",
            c,
            b"{\"model\":\"lande\",\"input\":\"a\x01\x1b[31m\x00\"}",
            400,
        ),
        hostile(
            "lone surrogate escape",
            "POST",
            c,
            br#"{"model":"lande","input":"\ud800"}"#,
            400,
        ),
        hostile(
            "number too large for a double",
            "POST",
            e,
            br#"{"input":"x","dimensions":1e400}"#,
            400,
        ),
        hostile("deeply nested arrays", "POST", c, &nested(100_000), 400),
        hostile(
            "nested past the parser's depth",
            "POST",
            c,
            &nested(200),
            400,
        ),
        // Invalid UTF-8.
        hostile(
            "invalid UTF-8 in a string",
            "POST",
            c,
            b"{\"model\":\"lande\",\"input\":\"\xff\xfe\"}",
            400,
        ),
        hostile(
            "invalid UTF-8 in chat",
            "POST",
            ch,
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}",
            400,
        ),
        hostile("UTF-16 body", "POST", c, b"\xff\xfe{\x00}\x00", 400),
        // Wrong types and nulls.
        hostile("null body", "POST", c, b"null", 422),
        hostile("string body", "POST", c, br#""just a string""#, 422),
        hostile("array body", "POST", e, b"[1,2,3]", 422),
        hostile(
            "model is a number",
            "POST",
            c,
            br#"{"model":5,"input":"x"}"#,
            422,
        ),
        hostile(
            "input is a number",
            "POST",
            c,
            br#"{"model":"lande","input":42}"#,
            422,
        ),
        hostile(
            "input is null",
            "POST",
            c,
            br#"{"model":"lande","input":null}"#,
            422,
        ),
        hostile(
            "input holds null",
            "POST",
            c,
            br#"{"model":"lande","input":[null]}"#,
            422,
        ),
        hostile(
            "input is an object",
            "POST",
            c,
            br#"{"model":"lande","input":{"a":1}}"#,
            422,
        ),
        hostile(
            "top_k is fractional",
            "POST",
            c,
            br#"{"model":"lande","input":"x","top_k":1.5}"#,
            422,
        ),
        hostile(
            "temperature is a string",
            "POST",
            ch,
            &chat(r#","temperature":"hot""#),
            422,
        ),
        hostile(
            "content is null",
            "POST",
            ch,
            br#"{"messages":[{"role":"user","content":null}]}"#,
            422,
        ),
        hostile("messages is empty", "POST", ch, br#"{"messages":[]}"#, 422),
        hostile(
            "unknown role",
            "POST",
            ch,
            br#"{"messages":[{"role":"wizard","content":"hi"}]}"#,
            422,
        ),
        hostile(
            "encoding_format hex",
            "POST",
            e,
            br#"{"input":"x","encoding_format":"hex"}"#,
            422,
        ),
        // Huge and negative numbers.
        hostile(
            "negative top_k",
            "POST",
            c,
            br#"{"model":"lande","input":"x","top_k":-5}"#,
            422,
        ),
        hostile(
            "top_k past u64",
            "POST",
            c,
            br#"{"model":"lande","input":"x","top_k":18446744073709551616}"#,
            422,
        ),
        hostile(
            "negative dimensions",
            "POST",
            e,
            br#"{"input":"x","dimensions":-1}"#,
            422,
        ),
        hostile(
            "negative max_tokens",
            "POST",
            ch,
            &chat(r#","max_tokens":-1"#),
            422,
        ),
        hostile(
            "huge max_tokens",
            "POST",
            ch,
            &chat(r#","max_tokens":1000000000"#),
            422,
        ),
        hostile("n of 3", "POST", ch, &chat(r#","n":3"#), 422),
        hostile(
            "ten stop sequences",
            "POST",
            ch,
            &chat(r#","stop":["a","b","c","d","e","f","g","h","i","j"]"#),
            422,
        ),
        hostile(
            "negative session default",
            "POST",
            ss,
            br#"{"defaults":{"max_tokens":-3}}"#,
            422,
        ),
        // Unknown fields and models.
        hostile(
            "unknown chat field",
            "POST",
            ch,
            &chat(r#","frobnicate":1"#),
            422,
        ),
        hostile(
            "unknown model",
            "POST",
            c,
            br#"{"model":"gpt-5","input":"x"}"#,
            404,
        ),
        hostile(
            "unknown version",
            "POST",
            c,
            br#"{"model":"lande@9.9.9","input":"x"}"#,
            404,
        ),
        hostile(
            "path in a model name",
            "POST",
            c,
            br#"{"model":"../../etc/passwd","input":"x"}"#,
            404,
        ),
        hostile(
            "classify with a chat model",
            "POST",
            c,
            br#"{"model":"shakespeare-llama","input":"x"}"#,
            422,
        ),
        hostile(
            "chat with an embedding model",
            "POST",
            ch,
            &chat(r#","model":"all-minilm-l6-v2""#),
            422,
        ),
        // Over the limits.
        hostile(
            "text over 20,000 characters",
            "POST",
            c,
            format!(r#"{{"model":"lande","input":"{long_text}"}}"#).as_bytes(),
            413,
        ),
        hostile(
            "129 inputs",
            "POST",
            c,
            json!({ "model": "lande", "input": many_inputs })
                .to_string()
                .as_bytes(),
            413,
        ),
        hostile(
            "system prompt over 4,000 characters",
            "POST",
            ss,
            json!({ "system": "x".repeat(4_001) })
                .to_string()
                .as_bytes(),
            413,
        ),
        // Session ids: traversal, malformed, unknown.
        hostile(
            "encoded traversal as a session id",
            "GET",
            "/v1/sessions/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            b"",
            404,
        ),
        hostile(
            "33-digit session id",
            "GET",
            "/v1/sessions/0123456789abcdef0123456789abcdef0",
            b"",
            404,
        ),
        hostile(
            "non-hex session id",
            "GET",
            "/v1/sessions/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            b"",
            404,
        ),
        hostile(
            "session that was never created",
            "POST",
            "/v1/sessions/0123456789abcdef0123456789abcdef/messages",
            br#"{"content":"hi"}"#,
            404,
        ),
        hostile(
            "session id with a NUL",
            "DELETE",
            "/v1/sessions/%00",
            b"",
            404,
        ),
        with_header(
            hostile("traversal in X-Session-Id", "POST", ch, &chat(""), 404),
            "x-session-id",
            "../../etc/passwd",
        ),
        with_header(
            hostile("4 KB X-Session-Id", "POST", ch, &chat(""), 404),
            "x-session-id",
            &"f".repeat(4096),
        ),
        hostile(
            "traversal in the session field",
            "POST",
            ch,
            &chat(r#","session":"../0123456789abcdef0123456789abcde""#),
            404,
        ),
        // Header abuse, methods, routes.
        with_header(
            hostile(
                "text/plain body",
                "POST",
                c,
                br#"{"model":"lande","input":"x"}"#,
                415,
            ),
            "content-type",
            "text/plain",
        ),
        without_header(
            hostile("no content type", "POST", e, br#"{"input":"x"}"#, 415),
            "content-type",
        ),
        with_header(
            hostile(
                "lookalike content type",
                "POST",
                c,
                br#"{"model":"lande","input":"x"}"#,
                415,
            ),
            "content-type",
            "application/jsonx",
        ),
        with_header(
            hostile("form content type", "POST", ch, &chat(""), 415),
            "content-type",
            "application/x-www-form-urlencoded",
        ),
        hostile(
            "PUT on classify",
            "PUT",
            c,
            br#"{"model":"lande","input":"x"}"#,
            405,
        ),
        hostile("DELETE on models", "DELETE", "/v1/models", b"", 405),
        hostile("GET on chat", "GET", ch, b"", 405),
        hostile(
            "PATCH on a session",
            "PATCH",
            "/v1/sessions/0123456789abcdef0123456789abcdef",
            b"{}",
            405,
        ),
        hostile("unknown route", "GET", "/v1/unknown", b"", 404),
        hostile(
            "encoded NUL in a route",
            "POST",
            "/v1/classify%00",
            br#"{"model":"lande","input":"x"}"#,
            404,
        ),
        hostile(
            "route with a traversal",
            "GET",
            "/v1/models/..%2f..%2fetc%2fpasswd",
            b"",
            404,
        ),
    ]
}

fn hostile_requests_get_4xx_json() -> Result<(), Failed> {
    let w = Worker::start();
    let c = w.client();
    let list = hostile_requests();
    ensure(list.len() >= 50, || {
        format!("only {} hostile requests", list.len())
    })?;
    let baseline = lande(&c, &[]);
    ensure(baseline.status == 200, || text(&baseline))?;
    let mut failures = Vec::new();
    for h in &list {
        let headers: Vec<(&str, &str)> = h.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = c.send_with_headers(h.method, &h.path, &headers, &h.body);
        let json = serde_json::from_slice::<Value>(&r.body).ok();
        let contract = r.header("content-type") == Some("application/json")
            && json.as_ref().is_some_and(|v| {
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            });
        if r.status != h.status || !contract {
            failures.push(format!(
                "{}: expected {}, got {}",
                h.what,
                h.status,
                text(&r)
            ));
        }
        // The isolate keeps serving, with the same answer.
        let after = lande(&c, &[]);
        if after.status != 200 || after.body != baseline.body {
            failures.push(format!("after {}: {}", h.what, text(&after)));
        }
    }
    // Bodies far over the limit: answered 413 without being read whole.
    for path in ["/v1/classify", "/v1/chat/completions", "/v1/sessions"] {
        let body = vec![b'x'; 10 * 1024 * 1024];
        let status = c.raw_status(
            &format!(
                "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
                body.len()
            ),
            body,
        );
        if status != 413 {
            failures.push(format!("10 MB body on {path}: {status}"));
        }
    }
    let after = lande(&c, &[]);
    ensure(after.status == 200, || text(&after))?;
    eprintln!(
        "{} hostile requests + 3 bodies of 10 MB: {} failures",
        list.len(),
        failures.len()
    );
    ensure(failures.is_empty(), || failures.join("\n"))
}

/// Another key's call on a session whose turn is streaming is answered
/// the session-not-found 404 at once, as an id that never existed is: it
/// does not wait for the turn (which told it the session exists and is
/// busy). Ordered by arrival, not timed: every 404 is in before the owner's
/// stream has sent its last event.
fn another_key_is_not_kept_waiting_by_a_turn_in_progress() -> Result<(), Failed> {
    use std::sync::mpsc;
    use std::time::Instant;
    let w = Worker::start_with(&vars(&[("API_KEYS", "key-alpha,key-beta")]));
    let c = w.client();
    let (_, path, messages) = alpha_session(&c)?;
    // The owner's long streamed turn (the default model, through its
    // shards: seconds), read in a thread that notes when each event came.
    let (started, first_event) = mpsc::channel();
    let base = c.base().to_string();
    let stream_messages = messages.clone();
    let owner = std::thread::spawn(move || -> Result<(Vec<Instant>, String), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let res = agent
            .post(format!("{base}{stream_messages}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer key-alpha")
            .send(json!({ "content": "Tell me a long story.", "stream": true, "max_tokens": 160, "temperature": 0.0 }).to_string())
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(res.into_body().into_reader());
        let mut arrivals = Vec::new();
        let mut last = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                break;
            }
            if line.starts_with("data: ") {
                if arrivals.is_empty() {
                    let _ = started.send(());
                }
                arrivals.push(Instant::now());
                last = line;
            }
        }
        Ok((arrivals, last))
    });
    first_event
        .recv_timeout(std::time::Duration::from_secs(120))
        .map_err(|_| "the owner's stream sent no event".to_string())?;
    let never = format!("/v1/sessions/{}", "fedcba9876543210fedcba9876543210");
    let mut answered = Vec::new();
    for (method, p, body) in [
        ("GET", path.as_str(), json!({})),
        (
            "POST",
            messages.as_str(),
            json!({ "content": "Mine now.", "max_tokens": 2 }),
        ),
        ("DELETE", path.as_str(), json!({})),
        ("GET", never.as_str(), json!({})),
    ] {
        let r = call(&c, method, p, &[BETA], &body);
        let e = r.expect_error(404);
        ensure(e["code"] == "session_not_found", || {
            format!("{method} {p}: {e}")
        })?;
        answered.push(Instant::now());
    }
    let (arrivals, last) = owner.join().map_err(|_| "the owner's stream panicked")??;
    ensure(last.trim() == "data: [DONE]", || {
        format!("the owner's stream ended with {last:?}")
    })?;
    let done = *arrivals.last().ok_or("no events")?;
    ensure(answered.iter().all(|&t| t < done), || {
        format!(
            "another key's 404 waited for the turn: answered {:?} after the stream began, its end at {:?}",
            answered.iter().map(|t| t.duration_since(arrivals[0])).collect::<Vec<_>>(),
            done.duration_since(arrivals[0])
        )
    })?;
    // The owner's history has the turn; the other key's calls changed nothing.
    let h = call(&c, "GET", &path, &[ALPHA], &json!({})).json()["messages"].clone();
    ensure(h.as_array().map_or(0, Vec::len) == 2, || format!("{h}"))
}

/// Probing well-formed ids of sessions never created (reads, deletes,
/// turns) answers 404 and stores nothing: no object storage is made.
fn probing_session_ids_stores_nothing() -> Result<(), Failed> {
    let storage = TempDir::new("sessions-probe");
    let w = Worker::start_with(&Bindings {
        sessions_dir: Some(storage.0.clone()),
        ..Bindings::default()
    });
    let c = w.client();
    fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push((path, entry.metadata().map_or(0, |m| m.len())));
            }
        }
        out.sort();
        out
    }
    let before = files(&storage.0);
    for i in 0..12 {
        let id = format!("{:032x}", 0x5eed_0000_u128 + i * 7919);
        let path = format!("/v1/sessions/{id}");
        for r in [
            c.get(&path),
            c.send_with_headers("DELETE", &path, &[], b""),
            c.post_json(&format!("{path}/messages"), &json!({ "content": "Anyone?" })),
            c.post_json(
                "/v1/chat/completions",
                &json!({ "model": "shakespeare-llama", "session": id, "messages": [{ "role": "user", "content": "Hi" }] }),
            ),
        ] {
            r.expect_error(404);
        }
    }
    // workerd's local storage opens an object's SQLite file as soon as the
    // object reads its storage (asking whether the session was created is
    // such a read), so a probed id leaves a file behind; what must not be
    // there is anything in it: no table (page 1, the schema's b-tree, has
    // no cells) and nothing waiting in its write-ahead log. Cloudflare keeps
    // no storage for an object that never wrote.
    fn holds_something(path: &std::path::Path) -> Option<String> {
        let bytes = std::fs::read(path).unwrap_or_default();
        if bytes.len() < 108 || !bytes.starts_with(b"SQLite format 3\0") {
            return Some(format!("{} is not an SQLite database", path.display()));
        }
        // Page 1's b-tree header follows the 100-byte file header; its
        // cell count is at offset 3 (big-endian u16).
        let schema_entries = u16::from_be_bytes([bytes[103], bytes[104]]);
        let wal = std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
        (schema_entries != 0 || wal != 0).then(|| {
            format!(
                "{}: {schema_entries} schema entries, {wal} bytes of log",
                path.display()
            )
        })
    }
    let after = files(&storage.0);
    let stored: Vec<String> = after
        .iter()
        .filter(|(path, _)| !before.iter().any(|(p, _)| p == path))
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "sqlite"))
        .filter_map(|(path, _)| holds_something(path))
        .collect();
    ensure(stored.is_empty(), || {
        format!("probes stored something:\n{}", stored.join("\n"))
    })
}

fn crash_mid_stream_keeps_history() -> Result<(), Failed> {
    let storage = TempDir::new("sessions-crash");
    let bindings = Bindings {
        sessions_dir: Some(storage.0.clone()),
        ..Bindings::default()
    };
    let w = Worker::start_with(&bindings);
    let c = w.client();
    let r = c.post_json("/v1/sessions", &json!({}));
    ensure(r.status == 201, || text(&r))?;
    let id = r.json()["id"].as_str().unwrap_or_default().to_string();
    let r = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Speak the speech, I pray you.", "max_tokens": 6 }),
    );
    ensure(r.status == 200, || text(&r))?;
    let before = c.get(&format!("/v1/sessions/{id}")).json()["messages"].clone();
    // A long streamed reply; workerd is killed once its first words are out.
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let res = agent
        .post(format!("{}/v1/sessions/{id}/messages", c.base()))
        .header("content-type", "application/json")
        .send(json!({ "content": "Go on.", "stream": true, "max_tokens": 220, "temperature": 2.0, "top_k": 0, "seed": 1 }).to_string())
        .map_err(|e| format!("stream: {e}"))?;
    let mut reader = BufReader::new(res.into_body().into_reader());
    let mut seen = String::new();
    let mut words = false;
    while !words {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        let event = line.strip_prefix("data: ").unwrap_or("");
        words = serde_json::from_str::<Value>(event).is_ok_and(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        });
    }
    ensure(words, || {
        format!("no generated text before the end: {seen}")
    })?;
    w.crash();
    drop(reader);
    let w = Worker::start_with(&bindings);
    let c = w.client();
    let after = c.get(&format!("/v1/sessions/{id}")).json()["messages"].clone();
    ensure(after == before, || {
        format!("history changed by the crash:\n{before}\n{after}")
    })?;
    let r = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Again.", "max_tokens": 4 }),
    );
    ensure(r.status == 200, || text(&r))?;
    let n = c.get(&format!("/v1/sessions/{id}")).json()["messages"]
        .as_array()
        .map_or(0, Vec::len);
    ensure(n == 4, || format!("{n} messages after the next turn"))?;
    Ok(())
}

/// A check that starts its own worker (each needs different bindings).
type Check = fn() -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let checks: Vec<(&str, Check)> = vec![
        ("api_keys", api_keys),
        ("sessions_belong_to_their_key", sessions_belong_to_their_key),
        (
            "another_key_is_not_kept_waiting_by_a_turn_in_progress",
            another_key_is_not_kept_waiting_by_a_turn_in_progress,
        ),
        (
            "probing_session_ids_stores_nothing",
            probing_session_ids_stores_nothing,
        ),
        ("rate_limit_per_key", rate_limit_per_key),
        (
            "rate_limit_per_ip_without_keys",
            rate_limit_per_ip_without_keys,
        ),
        ("panic_costs_one_request", panic_costs_one_request),
        (
            "hostile_requests_get_4xx_json",
            hostile_requests_get_4xx_json,
        ),
        (
            "crash_mid_stream_keeps_history",
            crash_mid_stream_keeps_history,
        ),
    ];
    if !args.list {
        support::ensure_built();
    }
    let mut trials: Vec<Trial> = checks
        .into_iter()
        .map(|(name, check)| Trial::test(name, check))
        .collect();
    trials.push(support::only_on(
        Server::Workerd,
        Trial::test(
            "a_failed_limiter_opens_or_closes_as_configured",
            a_failed_limiter_opens_or_closes_as_configured,
        ),
    ));
    libtest_mimic::run(&args, trials).exit();
}
