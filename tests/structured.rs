//! Structured outputs, tool calls and the Responses API served natively:
//! `api::handle_with` over the native store (`MemoryStore`), the same
//! parse, turn, renderers and stored responses the worker runs. The model
//! is the small one this host runs itself (shakespeare-llama): it writes
//! pastiche, never JSON of its own accord, so a reply that parses and
//! validates here does so because of the grammar.
//!
//! Bad input is checked too: each refusal's status, code and `param`, and
//! that nothing was stored by a refused request.

use edgeinfer::api::sessions::MemoryStore;
use edgeinfer::api::{Context, HttpResponse};
use serde_json::{json, Value};

const MODEL: &str = "shakespeare-llama";

mod inproc;
use inproc::{json_of, post, request};

fn ok(res: HttpResponse) -> Value {
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    json_of(&res)
}

/// The error of a refused request: its status, `code` and `param`.
fn refused(res: HttpResponse) -> (u16, String, String, String) {
    let body = json_of(&res);
    let error = &body["error"];
    (
        res.status,
        error["code"].as_str().unwrap_or("").to_string(),
        error["param"].as_str().unwrap_or("").to_string(),
        error["message"].as_str().unwrap_or("").to_string(),
    )
}

fn chat(body: Value) -> HttpResponse {
    post(
        &mut MemoryStore::new(),
        &Context::default(),
        "/v1/chat/completions",
        &body,
    )
}

/// The `data:` payloads of an SSE body (`[DONE]` left out).
fn events(res: &HttpResponse) -> Vec<Value> {
    String::from_utf8_lossy(&res.body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "mood": {"enum": ["glad", "sad"]},
            "pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 2}
        },
        "required": ["name", "age", "mood", "pets"],
        "additionalProperties": false,
        "$defs": {"pet": {
            "type": "object",
            "properties": {"kind": {"type": "string", "maxLength": 10}, "legs": {"type": "integer", "minimum": 0, "maximum": 8}},
            "required": ["kind", "legs"],
            "additionalProperties": false
        }}
    })
}

/// A value against [`person_schema`], checked by hand.
fn is_person(v: &Value) -> bool {
    let o = v.as_object().unwrap();
    o.len() == 4
        && o["name"].as_str().is_some_and(|n| n.chars().count() <= 20)
        && o["age"].as_i64().is_some_and(|a| (0..=130).contains(&a))
        && ["glad", "sad"].contains(&o["mood"].as_str().unwrap_or(""))
        && o["pets"].as_array().is_some_and(|p| {
            p.len() <= 2
                && p.iter()
                    .all(|pet| pet["kind"].as_str().is_some() && pet["legs"].as_i64().is_some())
        })
}

#[test]
fn json_schema_replies_parse_and_validate_whole_and_streamed() {
    for seed in 0..6 {
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Describe a person."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": person_schema(), "strict": true}},
            "max_tokens": 200, "temperature": 1.0, "seed": seed
        });
        let reply = ok(chat(body.clone()));
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{reply}");
        let text = choice["message"]["content"].as_str().unwrap();
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(is_person(&value), "{text}");

        let mut streamed = body;
        streamed["stream"] = json!(true);
        let res = chat(streamed);
        assert_eq!(res.status, 200);
        let chunks = events(&res);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        // The same seed: the same reply, whole or streamed.
        assert_eq!(text, choice["message"]["content"].as_str().unwrap());
    }
}

/// Two tiny tools: shakespeare-llama's context is 256 tokens, its
/// tokenizer spends about a token per character of JSON, and the tools are
/// described to the model in the prompt. (`json_object` and bigger schemas
/// are tests/constraint.rs's, on SmolLM2's vocabulary.)
fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "sky",
            "parameters": {"type": "object", "properties": {"c": {"type": "string", "maxLength": 4}}, "required": ["c"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "hour", "parameters": {"type": "object", "properties": {"z": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["z"], "additionalProperties": false}}}
    ])
}

#[test]
fn a_required_call_names_a_tool_with_valid_arguments_whole_and_streamed() {
    for (choice, name) in [
        (json!("required"), None),
        (
            json!({"type": "function", "function": {"name": "hour"}}),
            Some("hour"),
        ),
    ] {
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Sky?"}],
            "tools": weather_tools(), "tool_choice": choice,
            "max_tokens": 36, "temperature": 0.7, "seed": 11
        });
        let reply = ok(chat(body.clone()));
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
        assert!(choice["message"]["content"].is_null(), "{reply}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        let called = call["function"]["name"].as_str().unwrap();
        if let Some(name) = name {
            assert_eq!(called, name);
        }
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        match called {
            "sky" => assert!(
                arguments["c"]
                    .as_str()
                    .is_some_and(|c| c.chars().count() <= 4),
                "{arguments}"
            ),
            "hour" => assert!(
                arguments["z"]
                    .as_i64()
                    .is_some_and(|z| (0..=9).contains(&z)),
                "{arguments}"
            ),
            other => panic!("{other} was not declared"),
        }

        // Streamed: OpenAI's deltas, the name first, the arguments in
        // pieces that join to the whole call's.
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let chunks = events(&chat(streamed));
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(calls[0][0]["function"]["name"], called);
        assert!(calls[0][0]["id"].as_str().unwrap().starts_with("call_"));
        let joined: String = calls
            .iter()
            .filter_map(|c| c[0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(joined, call["function"]["arguments"].as_str().unwrap());
        let last = chunks
            .iter()
            .rev()
            .find(|c| !c["choices"][0]["finish_reason"].is_null())
            .unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    }
}

#[test]
fn auto_answers_with_text_or_a_valid_call_and_none_never_calls() {
    let (mut texts, mut calls) = (0, 0);
    for seed in 0..12 {
        let reply = ok(chat(json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": weather_tools(),
            "max_tokens": 30, "temperature": 1.0, "seed": seed
        })));
        let choice = &reply["choices"][0];
        match choice["message"]["tool_calls"].as_array() {
            Some(made) => {
                calls += 1;
                assert_eq!(choice["finish_reason"], "tool_calls");
                serde_json::from_str::<Value>(made[0]["function"]["arguments"].as_str().unwrap())
                    .unwrap();
            }
            None => {
                texts += 1;
                assert!(!choice["message"]["content"]
                    .as_str()
                    .unwrap()
                    .starts_with('{'));
            }
        }
    }
    assert_eq!(texts + calls, 12);
    let reply = ok(chat(json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Weather?"}],
        "tools": weather_tools(), "tool_choice": "none", "max_tokens": 10, "seed": 1
    })));
    assert!(reply["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn a_tool_result_in_the_history_is_answered() {
    let reply = ok(chat(json!({
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "sky", "arguments": "{\"c\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees, sunny"}
        ],
        "tools": weather_tools(), "tool_choice": "none",
        "max_tokens": 8, "temperature": 0
    })));
    assert!(reply["choices"][0]["message"]["content"].is_string());
    // The history is in the prompt: more tokens than the question alone.
    let alone = ok(chat(json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 8, "temperature": 0
    })));
    assert!(
        reply["usage"]["prompt_tokens"].as_u64() > alone["usage"]["prompt_tokens"].as_u64(),
        "{reply} vs {alone}"
    );
}

#[test]
fn bad_schemas_tools_and_tool_messages_are_refused_by_name() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let with_schema = |schema: Value| {
        chat(json!({"model": MODEL, "messages": user,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}))
    };
    let (status, code, param, message) = refused(with_schema(json!({
        "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}
    })));
    assert_eq!((status, code.as_str()), (400, "unsupported_schema"));
    assert_eq!(
        param,
        "response_format.json_schema.schema.properties.tags.uniqueItems"
    );
    assert!(message.contains("uniqueItems"), "{message}");
    for (schema, keyword) in [
        (
            json!({"type": "object", "patternProperties": {"^a": {}}}),
            "patternProperties",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string", "format": "ipv8"}}}),
            "format",
        ),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}),
            "$ref",
        ),
        (
            json!({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}),
            "oneOf",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "decimal"}}}),
            "type",
        ),
    ] {
        let (status, _, param, message) = refused(with_schema(schema.clone()));
        assert_eq!(status, 400, "{schema}: {message}");
        assert!(
            param.ends_with(keyword) || message.contains(keyword),
            "{schema}: {param} {message}"
        );
    }
    let (status, _, param, _) = refused(with_schema(json!(["not", "a", "schema"])));
    assert_eq!(
        (status, param.as_str()),
        (400, "response_format.json_schema.schema")
    );

    let (status, code, param, _) = refused(chat(json!({"model": MODEL, "messages": user,
        "tools": weather_tools(), "tool_choice": {"type": "function", "function": {"name": "launch"}}})));
    assert_eq!(
        (status, code.as_str(), param.as_str()),
        (400, "unknown_tool", "tool_choice")
    );

    let (status, code, _, _) = refused(chat(json!({"model": MODEL, "messages": user,
        "tools": [{"type": "web_search"}]})));
    assert_eq!((status, code.as_str()), (400, "unsupported_tool"));

    let (status, _, param, _) = refused(chat(json!({"model": MODEL, "messages": user,
        "tools": [{"type": "function", "function": {"name": "bad name!"}}]})));
    assert_eq!((status, param.as_str()), (422, "tools[0].function.name"));

    let (status, code, param, _) = refused(chat(json!({"model": MODEL, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_9", "content": "42"}
    ]})));
    assert_eq!(
        (status, code.as_str(), param.as_str()),
        (400, "invalid_tool_message", "messages[1].tool_call_id")
    );

    let (status, _, param, _) = refused(chat(json!({"model": MODEL, "messages": user,
        "response_format": {"type": "xml"}})));
    assert_eq!((status, param.as_str()), (422, "response_format"));
}

// ---- The Responses API -------------------------------------------------

fn respond(store: &mut MemoryStore, ctx: &Context<'_>, body: Value) -> HttpResponse {
    post(store, ctx, "/v1/responses", &body)
}

#[test]
fn a_stored_response_is_read_continued_and_deleted() {
    let mut store = MemoryStore::new();
    let ctx = Context::default();
    let first = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "Good morrow, my lord.", "max_output_tokens": 8, "temperature": 0}),
    ));
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"), "{first}");
    assert_eq!(first["object"], "response");
    assert!(["completed", "incomplete"].contains(&first["status"].as_str().unwrap()));
    assert_eq!(first["store"], true);
    let text = first["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty(), "{first}");
    assert_eq!(store.ids().count(), 1);

    let again = ok(request(
        &mut store,
        &ctx,
        "GET",
        &format!("/v1/responses/{id}"),
    ));
    assert_eq!(again["output"], first["output"]);
    assert_eq!(again["usage"], first["usage"]);

    // A continuation sees the first turn: its prompt holds it.
    let second = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "And thou?", "previous_response_id": id, "max_output_tokens": 8, "temperature": 0}),
    ));
    assert_eq!(second["previous_response_id"], id.as_str());
    let alone = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "And thou?", "max_output_tokens": 8, "temperature": 0, "store": false}),
    ));
    assert!(
        second["usage"]["input_tokens"].as_u64().unwrap()
            > alone["usage"]["input_tokens"].as_u64().unwrap() + 5,
        "{second} vs {alone}"
    );
    // `store: false` kept nothing; the continuation is a response of its own.
    assert_eq!(store.ids().count(), 2);
    let unstored = alone["id"].as_str().unwrap();
    assert_eq!(
        request(
            &mut store,
            &ctx,
            "GET",
            &format!("/v1/responses/{unstored}")
        )
        .status,
        404
    );

    let deleted = ok(request(
        &mut store,
        &ctx,
        "DELETE",
        &format!("/v1/responses/{id}"),
    ));
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(
        request(&mut store, &ctx, "GET", &format!("/v1/responses/{id}")).status,
        404
    );
    // The continuation stored its own conversation: it outlives the first.
    let second_id = second["id"].as_str().unwrap();
    ok(request(
        &mut store,
        &ctx,
        "GET",
        &format!("/v1/responses/{second_id}"),
    ));
    let (status, code, param, _) = refused(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "Again?", "previous_response_id": id}),
    ));
    assert_eq!(
        (status, code.as_str(), param.as_str()),
        (404, "response_not_found", "previous_response_id")
    );
}

#[test]
fn another_keys_response_is_a_404_and_nothing_is_stored() {
    let mut store = MemoryStore::new();
    let alice = Context::owned_by("alice-digest");
    let bob = Context::owned_by("bob-digest");
    let first = ok(respond(
        &mut store,
        &alice,
        json!({"model": MODEL, "input": "A secret.", "max_output_tokens": 4}),
    ));
    let id = first["id"].as_str().unwrap();
    assert_eq!(store.ids().count(), 1);
    for res in [
        request(&mut store, &bob, "GET", &format!("/v1/responses/{id}")),
        request(&mut store, &bob, "DELETE", &format!("/v1/responses/{id}")),
        respond(
            &mut store,
            &bob,
            json!({"model": MODEL, "input": "Tell me.", "previous_response_id": id}),
        ),
    ] {
        let (status, code, _, _) = refused(res);
        assert_eq!((status, code.as_str()), (404, "response_not_found"));
    }
    // Bob's refused continuation stored nothing; Alice's response is intact.
    assert_eq!(store.ids().count(), 1);
    ok(request(
        &mut store,
        &alice,
        "GET",
        &format!("/v1/responses/{id}"),
    ));

    // Refused bodies store nothing either.
    for body in [
        json!({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}),
        json!({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object", "not": {}}}}}),
        json!({"model": MODEL, "input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
        json!({"model": MODEL, "input": "x", "reasoning": {"effort": "low"}}),
        json!({"model": MODEL, "input": "x", "previous_response_id": "resp_0123456789abcdef0123456789abcdef"}),
    ] {
        let res = respond(&mut store, &alice, body.clone());
        assert!((400..500).contains(&res.status), "{body}: {}", res.status);
        assert!(json_of(&res)["error"]["message"].is_string());
    }
    assert_eq!(store.ids().count(), 1);
}

#[test]
fn responses_stream_semantic_events_and_structured_text() {
    let mut store = MemoryStore::new();
    let ctx = Context::default();
    let res = respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "Speak.", "stream": true, "max_output_tokens": 6, "temperature": 0}),
    );
    assert_eq!(res.status, 200);
    let got = events(&res);
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert!(kinds.contains(&"response.output_text.delta"), "{kinds:?}");
    assert!(["response.completed", "response.incomplete"].contains(kinds.last().unwrap()));
    let deltas: String = got
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let done = got
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], deltas.as_str());
    let id = got[0]["response"]["id"].as_str().unwrap();
    // Stored once the stream ended, with what was streamed.
    let stored = ok(request(
        &mut store,
        &ctx,
        "GET",
        &format!("/v1/responses/{id}"),
    ));
    assert_eq!(stored["output"][0]["content"][0]["text"], deltas.as_str());

    // `text.format`: JSON under a schema, parsed by the client.
    let reply = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "A person.", "max_output_tokens": 200, "temperature": 0.9,
               "text": {"format": {"type": "json_schema", "name": "person", "schema": person_schema(), "strict": true}}}),
    ));
    let text = reply["output"][0]["content"][0]["text"].as_str().unwrap();
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(is_person(&value), "{text}");

    // A forced call: a function_call item; its output continues the chain.
    let called = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "input": "Weather in Rome?", "max_output_tokens": 60, "temperature": 0,
               "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"], "additionalProperties": false}}],
               "tool_choice": "required"}),
    ));
    let item = &called["output"][0];
    assert_eq!(item["type"], "function_call", "{called}");
    assert_eq!(item["name"], "get_weather");
    let arguments: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string());
    let answered = ok(respond(
        &mut store,
        &ctx,
        json!({"model": MODEL, "previous_response_id": called["id"], "max_output_tokens": 6, "temperature": 0,
               "input": [{"type": "function_call_output", "call_id": item["call_id"], "output": "sunny"}]}),
    ));
    assert_eq!(answered["output"][0]["type"], "message", "{answered}");
}
