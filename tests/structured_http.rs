//! Structured outputs, tool calls and the Responses API through workerd,
//! on the default chat model (SmolLM2-135M-Instruct, its layers in the
//! shard Workers): JSON under a schema and a forced call, whole and
//! streamed; the 4xx of bad schemas, unknown tools and orphan tool
//! messages; stored responses in their Durable Objects (continued, read,
//! deleted, scoped to the API key, nothing stored by a refused request);
//! and the clients people use, unmodified but for their base URL: the
//! official openai Python (tests/clients/openai_structured.py) and npm
//! packages, the Vercel AI SDK's OpenAI provider and LangChain
//! (tests/clients/structured.mjs).

mod support;

use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};
use support::sse;
use support::{ensure, Bindings, Client};

const MODEL: &str = "smollm2-135m-instruct";
const ALPHA: (&str, &str) = ("authorization", "Bearer key-alpha");
const BETA: (&str, &str) = ("authorization", "Bearer key-beta");

fn checks() -> Vec<(&'static str, support::Check)> {
    vec![
        ("json_schema_whole_and_streamed", json_schema),
        ("tool_call_required_whole_and_streamed", tool_call),
        ("errors_4xx_name_the_problem", errors),
        ("responses_stored_continued_deleted", responses_lifecycle),
        ("openai_python_client_structured", openai_python),
        ("node_clients_structured", node_clients),
    ]
}

/// The JSON events of a streamed POST (`[DONE]` left out).
fn stream(c: &Client, path: &str, body: &Value) -> Result<Vec<Value>, Failed> {
    let got = sse::stream(c, path, body);
    ensure(got.status == 200, || {
        format!("{path} {body}: {}", got.status)
    })?;
    got.events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).map_err(|e| Failed::from(format!("{e}: {d}"))))
        .collect()
}

fn keyed(c: &Client, key: (&str, &str)) -> Client {
    Client::new(c.base()).with_header(key.0, key.1)
}

fn post(c: &Client, path: &str, body: &Value) -> Result<Value, Failed> {
    let res = c.post_json(path, body);
    ensure(res.status == 200, || {
        format!(
            "{path} {body}: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })?;
    if let Some(timing) = res.header("server-timing") {
        // The masks' share of the reply in the worker's wasm (workerd's
        // local clock advances during compute; production's does not).
        let ms = |name: &str| {
            timing
                .split(',')
                .find(|m| m.trim().starts_with(&format!("{name};")))
                .and_then(|m| m.split("dur=").nth(1))
                .and_then(|d| d.trim().parse::<f64>().ok())
        };
        if let (Some(mask), Some(total)) = (ms("constrain"), ms("inference")) {
            let tokens = res.json()["usage"]["completion_tokens"]
                .as_u64()
                .unwrap_or(1);
            eprintln!(
                "wasm mask: {:.0} us/token over {tokens} tokens ({:.1}% of inference, {:.1} ms/token; {timing})",
                mask * 1e3 / tokens as f64,
                mask / total * 100.0,
                total / tokens as f64
            );
        }
    }
    Ok(res.json())
}

fn invoice_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "customer": {"type": "string", "maxLength": 40},
            "total": {"type": "number", "minimum": 0},
            "currency": {"enum": ["EUR", "USD", "GBP"]},
            "paid": {"type": "boolean"},
            "items": {"type": "array", "maxItems": 3, "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 30}, "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["name", "qty"], "additionalProperties": false}}
        },
        "required": ["customer", "total", "currency", "paid", "items"],
        "additionalProperties": false
    })
}

fn is_invoice(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.len() == 5
        && o["customer"]
            .as_str()
            .is_some_and(|s| s.chars().count() <= 40)
        && o["total"].as_f64().is_some_and(|t| t >= 0.0)
        && ["EUR", "USD", "GBP"].contains(&o["currency"].as_str().unwrap_or(""))
        && o["paid"].is_boolean()
        && o["items"].as_array().is_some_and(|items| {
            items.len() <= 3
                && items.iter().all(|i| {
                    i["name"].is_string()
                        && i["qty"].as_i64().is_some_and(|q| (1..=99).contains(&q))
                })
        })
}

fn json_schema(c: &Client) -> Result<(), Failed> {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Invoice: Acme Ltd bought 3 chairs and 1 desk for 420 EUR, not paid yet. Extract it as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "invoice", "schema": invoice_schema(), "strict": true}},
        "max_tokens": 120, "temperature": 0
    });
    let reply = post(c, "/v1/chat/completions", &body)?;
    let choice = &reply["choices"][0];
    ensure(choice["finish_reason"] == "stop", || reply.to_string())?;
    let text = choice["message"]["content"].as_str().unwrap_or("");
    let value: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
    ensure(is_invoice(&value), || text.to_string())?;

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let joined: String = stream(c, "/v1/chat/completions", &streamed)?
        .iter()
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    ensure(joined == text, || {
        format!("streamed {joined:?} vs whole {text:?}")
    })
}

fn tool_call(c: &Client) -> Result<(), Failed> {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What's the weather like in Lisbon, in celsius?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                           "required": ["city", "unit"], "additionalProperties": false}}}],
        "tool_choice": "required",
        "max_tokens": 60, "temperature": 0
    });
    let reply = post(c, "/v1/chat/completions", &body)?;
    let choice = &reply["choices"][0];
    ensure(choice["finish_reason"] == "tool_calls", || {
        reply.to_string()
    })?;
    let call = &choice["message"]["tool_calls"][0];
    ensure(call["function"]["name"] == "get_weather", || {
        reply.to_string()
    })?;
    let arguments = call["function"]["arguments"].as_str().unwrap_or("");
    let args: Value = serde_json::from_str(arguments).map_err(|e| format!("{e}: {arguments}"))?;
    ensure(
        args["city"].is_string()
            && ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap_or("")),
        || args.to_string(),
    )?;

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = stream(c, "/v1/chat/completions", &streamed)?;
    let deltas: Vec<&Value> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"].get("tool_calls"))
        .collect();
    ensure(
        deltas
            .first()
            .is_some_and(|d| d[0]["function"]["name"] == "get_weather"),
        || format!("{events:?}"),
    )?;
    let joined: String = deltas
        .iter()
        .filter_map(|d| d[0]["function"]["arguments"].as_str())
        .collect();
    ensure(joined == arguments, || {
        format!("streamed {joined:?} vs whole {arguments:?}")
    })?;
    ensure(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"),
        || format!("{events:?}"),
    )
}

fn refused(c: &Client, path: &str, body: Value) -> Result<(u16, Value), Failed> {
    let res = c.post_json(path, &body);
    ensure((400..500).contains(&res.status), || {
        format!(
            "{body}: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })?;
    let error = res.json()["error"].clone();
    ensure(
        error["message"].is_string() && error["type"].is_string(),
        || error.to_string(),
    )?;
    Ok((res.status, error))
}

fn errors(c: &Client) -> Result<(), Failed> {
    let user = json!([{"role": "user", "content": "hi"}]);
    let (status, e) = refused(
        c,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": user,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}}}}),
    )?;
    ensure(
        status == 400
            && e["param"] == "response_format.json_schema.schema.properties.a.uniqueItems"
            && e["message"].as_str().unwrap_or("").contains("uniqueItems"),
        || e.to_string(),
    )?;
    let (status, e) = refused(
        c,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": user,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}),
    )?;
    ensure(status == 400 && e["code"] == "unknown_tool", || {
        e.to_string()
    })?;
    let (status, e) = refused(
        c,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]}),
    )?;
    ensure(status == 400 && e["code"] == "invalid_tool_message", || {
        e.to_string()
    })?;
    let (status, e) = refused(
        c,
        "/v1/responses",
        json!({"model": MODEL, "input": "hi",
        "tools": [{"type": "web_search_preview"}]}),
    )?;
    ensure(status == 400 && e["code"] == "unsupported_tool", || {
        e.to_string()
    })?;
    let (status, e) = refused(
        c,
        "/v1/responses",
        json!({"model": MODEL, "input": "hi",
        "previous_response_id": "resp_00000000000000000000000000000000"}),
    )?;
    ensure(
        status == 404 && e["param"] == "previous_response_id",
        || e.to_string(),
    )
}

fn responses_lifecycle(c: &Client) -> Result<(), Failed> {
    let first = post(
        c,
        "/v1/responses",
        &json!({"model": MODEL, "input": "My name is Ada. Say hello to me.",
        "max_output_tokens": 16, "temperature": 0}),
    )?;
    let id = first["id"].as_str().unwrap_or("").to_string();
    ensure(id.starts_with("resp_") && first["store"] == true, || {
        first.to_string()
    })?;
    let got = c.get(&format!("/v1/responses/{id}"));
    ensure(
        got.status == 200 && got.json()["output"] == first["output"],
        || format!("{}: {}", got.status, String::from_utf8_lossy(&got.body)),
    )?;

    // Streamed continuation: the semantic events, in order, and the
    // history of the first response in its prompt.
    let events = stream(
        c,
        "/v1/responses",
        &json!({"model": MODEL, "input": "What is my name?",
        "previous_response_id": id, "stream": true, "max_output_tokens": 16, "temperature": 0}),
    )?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    ensure(
        kinds.first() == Some(&"response.created")
            && kinds.contains(&"response.output_text.delta")
            && kinds
                .last()
                .is_some_and(|k| ["response.completed", "response.incomplete"].contains(k)),
        || format!("{kinds:?}"),
    )?;
    let last = &events[events.len() - 1]["response"];
    ensure(last["previous_response_id"] == id.as_str(), || {
        last.to_string()
    })?;
    ensure(
        last["usage"]["input_tokens"].as_u64() > first["usage"]["input_tokens"].as_u64(),
        || format!("{} vs {}", last["usage"], first["usage"]),
    )?;
    let second = last["id"].as_str().unwrap_or("").to_string();
    let stored = c.get(&format!("/v1/responses/{second}"));
    ensure(
        stored.status == 200 && stored.json()["output"] == last["output"],
        || String::from_utf8_lossy(&stored.body).to_string(),
    )?;

    let deleted = c.send("DELETE", &format!("/v1/responses/{id}"), None, b"");
    ensure(
        deleted.status == 200 && deleted.json()["deleted"] == true,
        || deleted.status.to_string(),
    )?;
    ensure(c.get(&format!("/v1/responses/{id}")).status == 404, || {
        "read after delete".into()
    })?;
    // `store: false`: answered, kept nowhere.
    let unstored = post(
        c,
        "/v1/responses",
        &json!({"model": MODEL, "input": "Hi", "store": false, "max_output_tokens": 4}),
    )?;
    let unstored_id = unstored["id"].as_str().unwrap_or("");
    ensure(
        c.get(&format!("/v1/responses/{unstored_id}")).status == 404,
        || unstored.to_string(),
    )
}

/// A worker with API keys: a response belongs to the key that made it.
fn responses_scoped() -> Result<(), Failed> {
    let worker = support::Worker::start_with(&Bindings {
        vars: vec![("API_KEYS".into(), "key-alpha,key-beta".into())],
        ..Bindings::default()
    });
    let base = Client::new(&worker.base);
    let (alpha, beta) = (keyed(&base, ALPHA), keyed(&base, BETA));
    let first = post(
        &alpha,
        "/v1/responses",
        &json!({"model": MODEL, "input": "The code is 7741.", "max_output_tokens": 4}),
    )?;
    let id = first["id"].as_str().unwrap_or("").to_string();
    for (what, status) in [
        ("GET", beta.get(&format!("/v1/responses/{id}")).status),
        (
            "DELETE",
            beta.send("DELETE", &format!("/v1/responses/{id}"), None, b"")
                .status,
        ),
        (
            "continue",
            beta.post_json(
                "/v1/responses",
                &json!({"model": MODEL, "input": "What was the code?", "previous_response_id": id}),
            )
            .status,
        ),
    ] {
        ensure(status == 404, || {
            format!("{what} with another key: {status}")
        })?;
    }
    ensure(
        alpha.get(&format!("/v1/responses/{id}")).status == 200,
        || "alpha lost its response".into(),
    )?;
    Ok(())
}

fn openai_python(c: &Client) -> Result<(), Failed> {
    let Some(python) = support::client_python() else {
        return Err("the openai Python client is not installed: run scripts/setup".into());
    };
    let out = std::process::Command::new(python)
        .arg(support::root().join("tests/clients/openai_structured.py"))
        .env("EDGEINFER_BASE_URL", format!("{}/v1", c.base()))
        .output()?;
    ensure(out.status.success(), || {
        format!(
            "openai_structured.py failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn node_clients(c: &Client) -> Result<(), Failed> {
    let out = std::process::Command::new("node")
        .arg(support::root().join("tests/clients/structured.mjs"))
        .arg(c.base())
        .current_dir(support::root())
        .output()?;
    ensure(out.status.success(), || {
        format!(
            "tests/clients/structured.mjs failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn main() {
    support::run_checks(&Bindings::default(), checks(), |_| {
        vec![Trial::test(
            "responses_scoped_to_the_api_key",
            responses_scoped,
        )]
    })
}
