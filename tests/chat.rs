//! Chat through workerd: `/v1/chat/completions` (whole and streamed), the
//! `ChatSession` Durable Objects (create, converse, concurrent turns, delete,
//! restart on persisted state), the golden decodings, every 4xx of the chat
//! routes, and the official `openai` Python client.

mod support;

use std::io::{BufRead, BufReader};

use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};
use support::sse::{stream, stream_text};
use support::{ensure, Bindings, Check, Client, Server, TempDir, Worker};

const MODEL: &str = "shakespeare-llama";

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("completion_whole", completion_whole),
        ("completion_seed_reproducible", seed_reproducible),
        ("completion_content_parts_and_stop", content_parts_and_stop),
        ("golden_greedy_through_workerd", golden_greedy),
        ("stream_events_and_usage", stream_events),
        ("stream_first_chunk_before_the_end", stream_is_incremental),
        ("context_drops_oldest_turns", context_drops_oldest_turns),
        ("errors_chat_4xx", chat_errors),
        ("session_lifecycle", session_lifecycle),
        ("session_via_chat_completions", session_via_chat_completions),
        ("session_concurrent_turns_in_order", session_concurrent),
        ("session_stream_stores_after_the_end", session_stream),
        (
            "session_interrupted_stream_stores_nothing_partial",
            session_interrupted,
        ),
        ("session_limits_413_nothing_lost", session_limits),
        ("session_errors_4xx", session_errors),
        ("session_turn_keeps_a_64_bit_seed", session_seed_exact),
        ("openai_python_client", openai_python_client),
    ]
}

fn chat(c: &Client, body: Value) -> Value {
    let res = c.post_json("/v1/chat/completions", &body);
    assert_eq!(
        res.status,
        200,
        "{body}: {}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()
}

fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {reply}"))
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

fn completion_whole(c: &Client) -> Result<(), Failed> {
    let r = chat(
        c,
        json!({ "model": MODEL, "messages": user("Good morrow, friend."), "max_tokens": 30, "seed": 3 }),
    );
    ensure(r["object"] == "chat.completion", || format!("{r}"))?;
    ensure(
        r["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        || format!("id {r}"),
    )?;
    ensure(r["model"] == "shakespeare-llama@0.1.0", || format!("{r}"))?;
    ensure(r["choices"][0]["message"]["role"] == "assistant", || {
        format!("{r}")
    })?;
    let finish = r["choices"][0]["finish_reason"].as_str().unwrap_or("");
    ensure(finish == "stop" || finish == "length", || format!("{r}"))?;
    let u = &r["usage"];
    let (p, comp) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    ensure(p > 3 && (1..=30).contains(&comp), || format!("{u}"))?;
    ensure(u["total_tokens"].as_u64() == Some(p + comp), || {
        format!("{u}")
    })?;
    ensure(finish == "stop" || comp == 30, || {
        format!("length before max_tokens: {r}")
    })?;
    Ok(())
}

fn seed_reproducible(c: &Client) -> Result<(), Failed> {
    let body = |seed: u64| {
        json!({ "model": MODEL, "messages": user("What news from the court?"), "max_tokens": 40,
                "temperature": 1.2, "top_k": 0, "seed": seed })
    };
    let a = content(&chat(c, body(11))).to_string();
    let b = content(&chat(c, body(11))).to_string();
    ensure(a == b, || {
        format!("same seed, different text: {a:?} vs {b:?}")
    })?;
    let others: Vec<String> = (12..16)
        .map(|s| content(&chat(c, body(s))).to_string())
        .collect();
    ensure(others.iter().any(|o| *o != a), || {
        format!("five seeds gave one text {a:?}: sampling ignores the seed")
    })
}

fn content_parts_and_stop(c: &Client) -> Result<(), Failed> {
    // Array-of-parts content is the same text as a string.
    let greedy = |messages: Value, stop: Value| {
        chat(
            c,
            json!({ "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 40, "stop": stop }),
        )
    };
    let parts = json!([{ "role": "user", "content": [{ "type": "text", "text": "Good morrow, " }, { "type": "text", "text": "friend." }] }]);
    let a = greedy(parts, Value::Null);
    let b = greedy(user("Good morrow, friend."), Value::Null);
    ensure(content(&a) == content(&b), || format!("{a} vs {b}"))?;
    // A stop sequence taken from the middle of the greedy reply cuts it there.
    let text = content(&b).to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    ensure(words.len() >= 3, || {
        format!("greedy reply too short to test stop: {text:?}")
    })?;
    let stop = words[words.len() / 2];
    let cut = greedy(user("Good morrow, friend."), json!([stop]));
    let expected = &text[..text.find(stop).unwrap()];
    ensure(content(&cut) == expected, || {
        format!("stop {stop:?}: {cut} (expected {expected:?})")
    })?;
    ensure(cut["choices"][0]["finish_reason"] == "stop", || {
        format!("{cut}")
    })
}

/// The golden chat prompts, greedy, through the whole HTTP path: the reply
/// is the reference decoding up to its first control token.
fn golden_greedy(c: &Client) -> Result<(), Failed> {
    let path = support::root().join("models/tinylm/golden.json");
    let golden: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        if case["kind"] != "chat" {
            continue;
        }
        let ids: Vec<u64> = case["shipped_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let first_control = ids.iter().position(|&t| t <= 5);
        let text = case["shipped_text"].as_str().unwrap();
        let expected = &text[..text.find("<|").unwrap_or(text.len())];
        let r = chat(
            c,
            json!({ "model": MODEL, "messages": case["messages"], "temperature": 0, "max_tokens": ids.len() }),
        );
        ensure(content(&r) == expected, || {
            format!("{}: {r} expected {expected:?}", case["prompt"])
        })?;
        let (finish, tokens) = match first_control {
            Some(i) => ("stop", i + 1),
            None => ("length", ids.len()),
        };
        ensure(r["choices"][0]["finish_reason"] == finish, || {
            format!("{r}")
        })?;
        ensure(r["usage"]["completion_tokens"] == tokens, || format!("{r}"))?;
        ensure(
            r["usage"]["prompt_tokens"] == case["prompt_ids"].as_array().unwrap().len(),
            || format!("{r}"),
        )?;
        checked += 1;
    }
    ensure(checked == 6, || format!("{checked} chat cases"))
}

fn stream_events(c: &Client) -> Result<(), Failed> {
    let body = json!({ "model": MODEL, "messages": user("Good morrow, friend."), "temperature": 0,
                       "max_tokens": 40, "stream": true, "stream_options": { "include_usage": true } });
    let s = stream(c, "/v1/chat/completions", &body);
    ensure(s.status == 200, || format!("status {}", s.status))?;
    ensure(s.content_type.starts_with("text/event-stream"), || {
        s.content_type.clone()
    })?;
    ensure(
        s.events.last().map(|e| e.1.as_str()) == Some("[DONE]"),
        || "no [DONE] at the end".into(),
    )?;
    let first: Value = serde_json::from_str(&s.events[0].1).unwrap();
    ensure(first["object"] == "chat.completion.chunk", || {
        format!("{first}")
    })?;
    ensure(first["choices"][0]["delta"]["role"] == "assistant", || {
        format!("{first}")
    })?;
    let (text, finish, usage) = stream_text(&s);
    // The same request whole: same text, same usage.
    let mut whole_body = body.clone();
    whole_body["stream"] = json!(false);
    whole_body.as_object_mut().unwrap().remove("stream_options");
    let whole = chat(c, whole_body);
    ensure(text == content(&whole), || {
        format!("streamed {text:?} vs whole {whole}")
    })?;
    ensure(
        finish.as_deref() == whole["choices"][0]["finish_reason"].as_str(),
        || format!("{finish:?}"),
    )?;
    let usage = usage.ok_or("no usage chunk")?;
    ensure(
        usage["completion_tokens"] == whole["usage"]["completion_tokens"],
        || format!("{usage}"),
    )?;
    // The usage chunk has no choices and comes last before [DONE].
    let last: Value = serde_json::from_str(&s.events[s.events.len() - 2].1).unwrap();
    ensure(
        last["choices"].as_array().is_some_and(|c| c.is_empty()),
        || format!("{last}"),
    )
}

/// Long generations (a high temperature makes the end token rare): the first
/// content arrives well before the stream ends, so tokens are flushed as
/// they are produced, not buffered to the end.
fn stream_is_incremental(c: &Client) -> Result<(), Failed> {
    for seed in 0..20 {
        let body = json!({ "model": MODEL, "messages": user("Speak on."), "temperature": 2.0, "top_k": 0,
                           "max_tokens": 200, "seed": seed, "stream": true,
                           "stream_options": { "include_usage": true } });
        let s = stream(c, "/v1/chat/completions", &body);
        let (_, _, usage) = stream_text(&s);
        let tokens = usage
            .as_ref()
            .and_then(|u| u["completion_tokens"].as_u64())
            .unwrap_or(0);
        if tokens < 150 {
            continue; // ended early; try another seed
        }
        let first_content = s
            .events
            .iter()
            .find(|(_, d)| d.contains("\"content\"") && !d.contains("\"content\":\"\""))
            .map(|(t, _)| *t)
            .ok_or("no content event")?;
        let end = s.events.last().unwrap().0;
        let _ = s.started;
        // Half of the generation still to come when the first text arrived.
        return ensure(
            first_content.as_secs_f64() < end.as_secs_f64() * 0.5,
            || format!("first content at {first_content:?}, end at {end:?}: not streamed"),
        );
    }
    Err("no seed of 20 generated 150 tokens".into())
}

fn context_drops_oldest_turns(c: &Client) -> Result<(), Failed> {
    // ~40 turns of ~12 tokens do not fit in 256 - 32 tokens: the oldest go.
    let mut messages = vec![
        json!({ "role": "system", "content": "A scene from Hamlet, by William Shakespeare." }),
    ];
    for i in 0..40 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({ "role": role, "content": format!("Line {i}: my lord, the night is cold and dark.") }));
    }
    messages.push(json!({ "role": "user", "content": "Who goes there?" }));
    let r = chat(
        c,
        json!({ "model": MODEL, "messages": messages, "max_tokens": 32, "seed": 1 }),
    );
    let dropped = r["usage"]["dropped_messages"].as_u64().unwrap();
    ensure(dropped > 10 && dropped < 41, || format!("{r}"))?;
    ensure(r["usage"]["prompt_tokens"].as_u64().unwrap() <= 224, || {
        format!("{r}")
    })?;
    // The system message and the last message alone too long: 413, not a cut.
    let long = "Now is the winter of our discontent ".repeat(60);
    let res = c.post_json(
        "/v1/chat/completions",
        &json!({ "model": MODEL, "messages": user(&long) }),
    );
    let e = res.expect_error(413);
    ensure(e["code"] == "context_length_exceeded", || format!("{e}"))
}

fn chat_errors(c: &Client) -> Result<(), Failed> {
    let path = "/v1/chat/completions";
    let mut cases: Vec<(Value, u16, &str)> = vec![
        (json!({ "model": MODEL }), 422, "missing messages"),
        (
            json!({ "model": MODEL, "messages": [] }),
            422,
            "empty messages",
        ),
        (
            json!({ "model": MODEL, "messages": "hi" }),
            422,
            "messages not an array",
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "wizard", "content": "hi" }] }),
            422,
            "unknown role",
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": 5 }] }),
            422,
            "content a number",
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": {} }] }] }),
            422,
            "image part",
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "  " }] }),
            422,
            "blank last message",
        ),
        (
            json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }, { "role": "assistant", "content": "yes" }] }),
            422,
            "last is assistant",
        ),
        (
            // The legacy `functions` (tools are served: tests/structured.rs).
            json!({ "model": MODEL, "messages": user("hi"), "functions": [] }),
            422,
            "unknown field",
        ),
        (
            json!({ "model": "no-such-model", "messages": user("hi") }),
            404,
            "unknown model",
        ),
        (
            json!({ "model": "lande", "messages": user("hi") }),
            422,
            "not a chat model",
        ),
        (json!({ "messages": user("hi") }), 422, "no model"),
        (
            json!({ "model": MODEL, "messages": user("hi"), "session": "0123" }),
            404,
            "malformed session",
        ),
        (
            json!({ "model": MODEL, "messages": user("hi"), "session": "0123456789abcdef0123456789abcdef" }),
            404,
            "unknown session",
        ),
    ];
    // A valid request but for one field, each refused.
    let fields: [(&str, Value, &str); 12] = [
        ("max_tokens", json!(0), "max_tokens 0"),
        ("max_tokens", json!(100000), "max_tokens huge"),
        ("max_tokens", json!(-1), "max_tokens negative"),
        ("max_tokens", json!("10"), "max_tokens string"),
        ("temperature", json!(3), "temperature"),
        ("top_p", json!(-0.1), "top_p negative"),
        (
            "repetition_penalty",
            json!(1e-50),
            "repetition_penalty tiny",
        ),
        ("stop", json!(["a", "b", "c", "d", "e"]), "5 stops"),
        ("stop", json!(7), "stop number"),
        ("n", json!(2), "n 2"),
        ("frequency_penalty", json!(1), "frequency_penalty"),
        ("stream", json!("yes"), "stream string"),
    ];
    for (field, value, what) in fields {
        let mut body = json!({ "model": MODEL, "messages": user("hi") });
        body[field] = value;
        cases.push((body, 422, what));
    }
    for (body, status, what) in cases {
        let res = c.post_json(path, &body);
        if res.status != status {
            return Err(format!(
                "{what}: expected {status}, got {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            )
            .into());
        }
        res.expect_error(status);
    }
    c.send("POST", path, Some("application/json"), b"{\"model\": ")
        .expect_error(400);
    c.send("POST", path, Some("application/json"), b"\xff\xfe")
        .expect_error(400);
    c.send("POST", path, Some("text/plain"), b"{}")
        .expect_error(415);
    let r = c.send("GET", path, None, b"");
    r.expect_error(405);
    ensure(r.header("allow") == Some("POST, OPTIONS"), || {
        format!("{:?}", r.headers)
    })?;
    // The isolate still serves; top_p 0 is accepted (the most likely token).
    chat(
        c,
        json!({ "model": MODEL, "messages": user("Still there?"), "max_tokens": 5, "top_p": 0 }),
    );
    Ok(())
}

/// A session of `MODEL` unless `body` names a model (the default chat
/// model, the sharded one, has its own checks in tests/sharded.rs).
fn create_session(c: &Client, mut body: Value) -> String {
    if body.get("model").is_none() {
        body["model"] = json!(MODEL);
    }
    let res = c.post_json("/v1/sessions", &body);
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    let v = res.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id
}

fn history(c: &Client, id: &str) -> Vec<Value> {
    let res = c.get(&format!("/v1/sessions/{id}"));
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()["messages"].as_array().unwrap().clone()
}

fn send_message(c: &Client, id: &str, body: Value) -> Value {
    let res = c.post_json(&format!("/v1/sessions/{id}/messages"), &body);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()
}

/// A turn travels to its session's object as parsed JSON: a seed near
/// 2^63 must arrive exact (JavaScript numbers would round it, and a sampled
/// reply would change): the session's reply equals the same conversation's
/// sessionless one, sampled with the same seed.
fn session_seed_exact(c: &Client) -> Result<(), Failed> {
    let seed = 9_223_372_036_854_775_806_i64;
    let sampling = json!({ "max_tokens": 16, "temperature": 1.0, "seed": seed });
    let id = create_session(c, json!({}));
    let mut body = sampling.clone();
    body["content"] = json!("Good morrow!");
    let turn = send_message(c, &id, body);
    let mut whole = sampling;
    whole["model"] = json!(MODEL);
    whole["messages"] = json!([{ "role": "user", "content": "Good morrow!" }]);
    let alone = c.post_json("/v1/chat/completions", &whole).json();
    let text = |v: &Value| v["choices"][0]["message"]["content"].clone();
    ensure(
        text(&turn) == text(&alone) && text(&turn).is_string(),
        || format!("{turn} vs {alone}"),
    )
}

fn session_lifecycle(c: &Client) -> Result<(), Failed> {
    let id = create_session(
        c,
        json!({ "system": "A scene from Hamlet, by William Shakespeare.", "defaults": { "max_tokens": 24, "temperature": 0 } }),
    );
    let s = c.get(&format!("/v1/sessions/{id}")).json();
    ensure(
        s["system"] == "A scene from Hamlet, by William Shakespeare.",
        || format!("{s}"),
    )?;
    ensure(
        s["messages"].as_array().is_some_and(|m| m.is_empty()),
        || format!("{s}"),
    )?;
    let r1 = send_message(c, &id, json!({ "content": "Who's there?" }));
    ensure(r1["session"] == id.as_str(), || format!("{r1}"))?;
    // Session defaults apply: greedy, at most 24 tokens, so the same as the
    // stateless route with the same system prompt.
    let stateless = chat(
        c,
        json!({ "model": MODEL, "temperature": 0, "max_tokens": 24, "messages": [
            { "role": "system", "content": "A scene from Hamlet, by William Shakespeare." },
            { "role": "user", "content": "Who's there?" }] }),
    );
    ensure(content(&r1) == content(&stateless), || {
        format!("{r1} vs {stateless}")
    })?;
    let r2 = send_message(
        c,
        &id,
        json!({ "content": "Nay, answer me.", "max_tokens": 8 }),
    );
    ensure(
        r2["usage"]["completion_tokens"].as_u64().unwrap() <= 8,
        || format!("{r2}"),
    )?;
    // The second turn's prompt holds the first turn.
    ensure(
        r2["usage"]["prompt_tokens"].as_u64().unwrap()
            > r1["usage"]["prompt_tokens"].as_u64().unwrap() + 5,
        || format!("{r1} {r2}"),
    )?;
    let h = history(c, &id);
    let roles: Vec<&str> = h.iter().map(|m| m["role"].as_str().unwrap()).collect();
    ensure(roles == ["user", "assistant", "user", "assistant"], || {
        format!("{h:?}")
    })?;
    ensure(
        h[1]["content"] == content(&r1) && h[3]["content"] == content(&r2),
        || format!("{h:?}"),
    )?;
    ensure(h[1]["finish_reason"].is_string(), || format!("{h:?}"))?;
    let d = c.send("DELETE", &format!("/v1/sessions/{id}"), None, b"");
    ensure(d.status == 200 && d.json()["deleted"] == true, || {
        format!("{d:?}")
    })?;
    c.get(&format!("/v1/sessions/{id}")).expect_error(404);
    c.send("DELETE", &format!("/v1/sessions/{id}"), None, b"")
        .expect_error(404);
    c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Hello?" }),
    )
    .expect_error(404);
    Ok(())
}

fn session_via_chat_completions(c: &Client) -> Result<(), Failed> {
    let id = create_session(c, json!({}));
    chat(
        c,
        json!({ "model": MODEL, "session": id, "messages": user("Good morrow."), "max_tokens": 10 }),
    );
    // The header names the session too.
    let res = support::Client::new(c.base());
    let reply = res.send_with_headers(
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json"), ("x-session-id", &id)],
        json!({ "model": MODEL, "messages": user("And to you."), "max_tokens": 10 })
            .to_string()
            .as_bytes(),
    );
    ensure(reply.status == 200, || {
        String::from_utf8_lossy(&reply.body).into_owned()
    })?;
    let h = history(c, &id);
    ensure(h.len() == 4, || format!("{h:?}"))?;
    ensure(
        h[0]["content"] == "Good morrow." && h[2]["content"] == "And to you.",
        || format!("{h:?}"),
    )
}

fn session_concurrent(c: &Client) -> Result<(), Failed> {
    let id = create_session(c, json!({ "defaults": { "max_tokens": 40 } }));
    let base = c.base().to_string();
    let senders: Vec<_> = (0..2)
        .map(|i| {
            let (base, id) = (base.clone(), id.clone());
            std::thread::spawn(move || {
                let c = Client::new(&base);
                send_message(
                    &c,
                    &id,
                    json!({ "content": format!("Message number {i}.") }),
                )
            })
        })
        .collect();
    let replies: Vec<Value> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let h = history(c, &id);
    ensure(h.len() == 4, || format!("{h:?}"))?;
    let roles: Vec<&str> = h.iter().map(|m| m["role"].as_str().unwrap()).collect();
    ensure(roles == ["user", "assistant", "user", "assistant"], || {
        format!("{h:?}")
    })?;
    // Each reply follows its own message, and the second turn saw the first.
    for pair in h.chunks(2) {
        let i: usize = pair[0]["content"].as_str().unwrap()[15..16]
            .parse()
            .unwrap();
        ensure(pair[1]["content"] == content(&replies[i]), || {
            format!("{h:?} {replies:?}")
        })?;
    }
    let prompts: Vec<u64> = replies
        .iter()
        .map(|r| r["usage"]["prompt_tokens"].as_u64().unwrap())
        .collect();
    ensure(prompts[0] != prompts[1], || {
        format!("both turns saw the same history: {prompts:?}")
    })
}

fn session_stream(c: &Client) -> Result<(), Failed> {
    let id = create_session(c, json!({}));
    let s = stream(
        c,
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Speak.", "stream": true, "max_tokens": 30, "seed": 5 }),
    );
    ensure(s.status == 200, || format!("{}", s.status))?;
    let (text, finish, _) = stream_text(&s);
    let h = history(c, &id);
    ensure(h.len() == 2 && h[1]["content"] == text.as_str(), || {
        format!("{h:?} vs {text:?}")
    })?;
    ensure(h[1]["finish_reason"].as_str() == finish.as_deref(), || {
        format!("{h:?}")
    })
}

fn session_interrupted(c: &Client) -> Result<(), Failed> {
    let id = create_session(c, json!({}));
    send_message(c, &id, json!({ "content": "First.", "max_tokens": 5 }));
    // Read the first event of a long streamed reply, then hang up.
    {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let res = agent
            .post(format!("{}/v1/sessions/{id}/messages", c.base()))
            .header("content-type", "application/json")
            .send(json!({ "content": "Speak on.", "stream": true, "max_tokens": 220, "temperature": 2.0, "top_k": 0, "seed": 1 }).to_string())
            .expect("send");
        let mut reader = BufReader::new(res.into_body().into_reader());
        let mut line = String::new();
        reader.read_line(&mut line).expect("first event");
    }
    // The hang-up cancels the reply's stream, which drops the turn in
    // progress (and the session's turn lock with it): the next message is
    // served, and the history holds no trace of the interrupted turn, not
    // even its user message. (Its 220 tokens through the default model's
    // shard Workers take seconds, far longer than the hang-up.)
    send_message(
        c,
        &id,
        json!({ "content": "Still there?", "max_tokens": 5 }),
    );
    let h = history(c, &id);
    let contents: Vec<&str> = h
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    ensure(
        h.len() == 4 && contents[0] == "First." && contents[2] == "Still there?",
        || format!("{h:?}"),
    )?;
    for m in h.iter().filter(|m| m["role"] == "assistant") {
        ensure(m["finish_reason"].is_string(), || format!("{m}"))?;
    }
    Ok(())
}

fn session_limits(c: &Client) -> Result<(), Failed> {
    let id = create_session(c, json!({ "defaults": { "max_tokens": 1 } }));
    for i in 0..100 {
        send_message(c, &id, json!({ "content": format!("Turn {i}.") }));
    }
    let res = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "One more." }),
    );
    let e = res.expect_error(413);
    ensure(e["code"] == "session_full", || format!("{e}"))?;
    let h = history(c, &id);
    ensure(h.len() == 200, || format!("{} messages", h.len()))?;
    ensure(
        h[0]["content"] == "Turn 0." && h[198]["content"] == "Turn 99.",
        || "order lost".into(),
    )
}

fn session_errors(c: &Client) -> Result<(), Failed> {
    c.get("/v1/sessions/0123456789abcdef0123456789abcdef")
        .expect_error(404);
    c.get("/v1/sessions/..%2F..%2Fetc").expect_error(404);
    c.get("/v1/sessions/ZZZ").expect_error(404);
    c.post_json("/v1/sessions", &json!({ "model": "lande" }))
        .expect_error(422);
    c.post_json("/v1/sessions", &json!({ "model": "nope" }))
        .expect_error(404);
    c.post_json("/v1/sessions", &json!({ "color": "red" }))
        .expect_error(422);
    c.post_json("/v1/sessions", &json!({ "defaults": { "temperature": 9 } }))
        .expect_error(422);
    let typo = c
        .post_json(
            "/v1/sessions",
            &json!({ "defaults": { "temprature": 0.1 } }),
        )
        .expect_error(422);
    ensure(typo["param"] == "defaults.temprature", || format!("{typo}"))?;
    // Under the character limit but too many tokens for the context (of
    // this 256-token model): refused at creation, not at every turn.
    let long_system = "Now is the winter of our discontent made glorious summer. ".repeat(17);
    let e = c
        .post_json(
            "/v1/sessions",
            &json!({ "model": MODEL, "system": long_system }),
        )
        .expect_error(413);
    ensure(e["code"] == "context_length_exceeded", || format!("{e}"))?;
    c.post_json("/v1/sessions", &json!({ "system": "x".repeat(5000) }))
        .expect_error(413);
    c.send("POST", "/v1/sessions", Some("application/json"), b"[")
        .expect_error(400);
    c.send("PUT", "/v1/sessions", None, b"").expect_error(405);
    let id = create_session(c, json!({}));
    let path = format!("/v1/sessions/{id}/messages");
    c.post_json(&path, &json!({})).expect_error(422);
    c.post_json(&path, &json!({ "content": "" }))
        .expect_error(422);
    c.post_json(&path, &json!({ "content": ["x"] }))
        .expect_error(422);
    c.post_json(&path, &json!({ "content": "hi", "max_tokens": 0 }))
        .expect_error(422);
    c.post_json(&path, &json!({ "content": "hi", "messages": [] }))
        .expect_error(422);
    c.send("POST", &path, Some("text/plain"), b"hi")
        .expect_error(415);
    // Over the body limit: 413, not a truncated body that happens to parse.
    let mut big = br#"{"content": "hi"}"#.to_vec();
    big.extend(vec![b' '; 600 * 1024]);
    c.send("POST", &path, Some("application/json"), &big)
        .expect_error(413);
    c.send("GET", &path, None, b"").expect_error(405);
    let r = c.send("PATCH", &format!("/v1/sessions/{id}"), None, b"");
    r.expect_error(405);
    ensure(
        r.header("allow") == Some("GET, HEAD, DELETE, OPTIONS"),
        || format!("{:?}", r.headers),
    )?;
    // Nothing was stored by the refused requests.
    ensure(history(c, &id).is_empty(), || {
        "a refused request stored something".into()
    })
}

/// The official Python client, unmodified: whole, streamed, with a session.
fn openai_python_client(c: &Client) -> Result<(), Failed> {
    support::openai_python_client(c, &[])
}

/// Sessions survive a restart of workerd on the same storage directory.
fn restart_keeps_history() -> Result<(), Failed> {
    let storage = TempDir::new("sessions-restart");
    let bindings = Bindings {
        sessions_dir: Some(storage.0.clone()),
        ..Bindings::default()
    };
    let (id, before) = {
        let w = Worker::start_with(&bindings);
        let c = w.client();
        let id = create_session(
            &c,
            json!({ "system": "A scene from Macbeth, by William Shakespeare." }),
        );
        send_message(
            &c,
            &id,
            json!({ "content": "My lord, the queen is dead.", "max_tokens": 12 }),
        );
        let h = history(&c, &id);
        (id, h)
    };
    let w = Worker::start_with(&bindings);
    let c = w.client();
    let after = history(&c, &id);
    ensure(after == before && after.len() == 2, || {
        format!("{before:?} vs {after:?}")
    })?;
    send_message(
        &c,
        &id,
        json!({ "content": "Tomorrow, and tomorrow.", "max_tokens": 8 }),
    );
    ensure(history(&c, &id).len() == 4, || {
        "the restored session does not take turns".into()
    })?;
    c.send("DELETE", &format!("/v1/sessions/{id}"), None, b"");
    ensure(c.get(&format!("/v1/sessions/{id}")).status == 404, || {
        "a deleted session still answers".into()
    })
}

/// Two Deno servers on one Deno KV (as Deno Deploy's isolates share one):
/// each process has its own session objects, so two turns of one session
/// sent to both at once are not queued; the later commit finds the session
/// changed and is refused with 409 `session_busy`, and the history holds the
/// earlier turn whole and nothing of the refused one. Sent again, it is
/// stored after the first.
fn session_turns_from_two_deno_processes() -> Result<(), Failed> {
    let storage = TempDir::new("sessions-shared");
    let bindings = Bindings {
        sessions_dir: Some(storage.0.clone()),
        no_shards: true,
        ..Bindings::default()
    };
    let (one, two) = (Worker::start_with(&bindings), Worker::start_with(&bindings));
    let id = create_session(&one.client(), json!({}));
    // Long enough replies (a fixed seed that runs to max_tokens) that the
    // two turns overlap.
    let turn = |i: usize| {
        json!({ "content": format!("Message number {i}."), "max_tokens": 200,
                                   "temperature": 2.0, "top_k": 0, "seed": 1 })
    };
    let sent: Vec<_> = [one.base.clone(), two.base.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, base)| {
            let (id, body) = (id.clone(), turn(i));
            std::thread::spawn(move || {
                Client::new(&base).post_json(&format!("/v1/sessions/{id}/messages"), &body)
            })
        })
        .collect();
    let replies: Vec<support::Reply> = sent.into_iter().map(|t| t.join().unwrap()).collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    ensure(statuses.contains(&200) && statuses.contains(&409), || {
        format!("expected one 200 and one 409, got {statuses:?}")
    })?;
    let refused = replies.iter().position(|r| r.status == 409).unwrap_or(0);
    let e = replies[refused].expect_error(409);
    ensure(e["code"] == "session_busy", || format!("{e}"))?;
    let h = history(&two.client(), &id);
    ensure(
        h.len() == 2 && h[0]["content"] == format!("Message number {}.", 1 - refused),
        || format!("{h:?}"),
    )?;
    let again = [&one, &two][refused].client();
    send_message(&again, &id, turn(refused));
    let h = history(&one.client(), &id);
    ensure(
        h.len() == 4 && h[2]["content"] == format!("Message number {refused}."),
        || format!("{h:?}"),
    )
}

/// Deleting really empties the object's storage: no message text is left
/// in its SQLite files (the object wipes them). Only on workerd: Deno KV has
/// no such wipe, its SQLite file keeps deleted bytes in free pages and its
/// WAL until they are reused (docs/deno.md).
fn delete_leaves_no_text_on_disk() -> Result<(), Failed> {
    let storage = TempDir::new("sessions-erase");
    let w = Worker::start_with(&Bindings {
        sessions_dir: Some(storage.0.clone()),
        ..Bindings::default()
    });
    let c = w.client();
    let id = create_session(&c, json!({}));
    send_message(
        &c,
        &id,
        json!({ "content": "My lord, the queen is dead.", "max_tokens": 4 }),
    );
    c.send("DELETE", &format!("/v1/sessions/{id}"), None, b"");
    drop(w);
    let mut leftovers = Vec::new();
    for entry in walk(&storage.0) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if bytes.windows(14).any(|w| w == b"queen is dead.") {
            leftovers.push(entry);
        }
    }
    ensure(leftovers.is_empty(), || {
        format!("deleted text still on disk in {leftovers:?}")
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn main() {
    support::run_checks(&Bindings::default(), checks(), |_| {
        vec![
            Trial::test(
                "session_restart_keeps_history_and_delete_erases",
                restart_keeps_history,
            ),
            support::only_on(
                Server::Workerd,
                Trial::test(
                    "session_delete_leaves_no_text_on_disk",
                    delete_leaves_no_text_on_disk,
                ),
            ),
            support::only_on(
                Server::Deno,
                Trial::test(
                    "session_turns_from_two_deno_processes",
                    session_turns_from_two_deno_processes,
                ),
            ),
        ]
    })
}
