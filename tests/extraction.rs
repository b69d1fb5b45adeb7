//! SmolLM2-135M-Instruct itself (our engine on its GGUF, natively) on 50
//! extraction prompts, with and without a JSON Schema: every constrained
//! reply must parse and validate; the unconstrained share is measured and
//! printed, as is what the grammar's masks cost per token (JSON Schema,
//! any JSON object, a tool call) against the model's own time per token.
//! `EDGEINFER_MEASURE=1 cargo test --test extraction -- --nocapture`
//! prints the figures docs/chat.md quotes (the nested orders' unconstrained
//! replies only with EDGEINFER_MEASURE: they take minutes).

use edgeinfer_pipeline as check;
#[path = "support/smollm2.rs"]
mod smollm2;
mod support;

use std::sync::OnceLock;
use std::time::Instant;

use check::pack_gguf::Storage;
use edgeinfer::api::chat::shape::{Shape, Tool, ToolChoice};
use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::constraint::Grammar;
use edgeinfer::decoder::generation::{FinishReason, GenerateOptions, Generation};
use edgeinfer::decoder::sampling::Logits;
use edgeinfer::decoder::template::{Message, Role};
use edgeinfer_engine::decoder::Decoder;
use serde_json::{json, Value};

/// Milliseconds since the first call: the generation's clock for its masks.
fn clock() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

struct Run {
    text: String,
    finish: FinishReason,
    tokens: usize,
    mask_ms: f64,
    model_ms: f64,
}

/// A greedy reply to `messages`, under `grammar` if any.
fn run(
    model: &'static ChatModel,
    decoder: &Decoder,
    messages: &[Message],
    grammar: Option<&Grammar>,
    max_tokens: usize,
) -> Run {
    let prompt = model.prompt(messages, max_tokens).unwrap().ids;
    let options = GenerateOptions::greedy(max_tokens);
    let mut generation = Generation::new(model, prompt, options);
    if let Some(grammar) = grammar {
        let constraint = model.constraints().unwrap().compile(grammar).unwrap();
        generation.constrain(constraint, clock);
    }
    let mut cache = decoder.new_cache();
    let mut model_ms = 0.0;
    let mut tokens = 0;
    loop {
        if let Some(ids) = generation.wants() {
            let started = clock();
            let logits = decoder.forward(&mut cache, &ids).unwrap();
            if ids.len() == 1 {
                // Decode steps only: the prompt's pass is another cost.
                model_ms += clock() - started;
            }
            generation.supply(Logits::All(logits)).unwrap();
        }
        match generation.step().unwrap() {
            Some(_) => tokens += 1,
            None => break,
        }
    }
    Run {
        text: generation.text().to_string(),
        finish: generation.finish_reason().unwrap(),
        tokens,
        mask_ms: generation.constraint_ms(),
        model_ms,
    }
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "city": {"type": "string", "maxLength": 40}
        },
        "required": ["name", "age", "city"],
        "additionalProperties": false
    })
}

fn is_person(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 3
            && o.get("name")
                .and_then(Value::as_str)
                .is_some_and(|s| s.chars().count() <= 40)
            && o.get("age")
                .and_then(Value::as_i64)
                .is_some_and(|a| (0..=130).contains(&a))
            && o.get("city")
                .and_then(Value::as_str)
                .is_some_and(|s| s.chars().count() <= 40)
    })
}

/// 50 short texts about a person, each with a name, an age and a city.
fn texts() -> Vec<String> {
    let names = [
        "Ada Lovelace",
        "Bob",
        "Chen Wei",
        "Dana",
        "Émile Zola",
        "Farah",
        "Gus",
        "Hana Sato",
        "Ivan",
        "Jo",
    ];
    let cities = ["London", "Paris", "Tokyo", "Lagos", "Lima"];
    let forms = [
        "{name} is {age} years old and lives in {city}.",
        "Meet {name}, {age}, from {city}.",
        "Our new colleague {name} ({age}) just moved to {city}.",
        "{city} resident {name} turned {age} last week.",
        "Name: {name}. Age: {age}. Home town: {city}.",
    ];
    (0..50)
        .map(|i| {
            forms[i % forms.len()]
                .replace("{name}", names[i % names.len()])
                .replace("{age}", &(18 + (i * 7) % 60).to_string())
                .replace("{city}", cities[(i / 2) % cities.len()])
        })
        .collect()
}

fn ask(text: &str) -> Vec<Message> {
    vec![Message {
        role: Role::User,
        content: format!(
            "Extract the person from this text as JSON with the keys name, age and city. Answer with the JSON only.\n\nText: {text}"
        ),
    }]
}

/// What the unconstrained reply holds: JSON as is, or inside a code fence.
fn loose_parse(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    let start = trimmed.find('{')?;
    let end = trimmed.rfind('}')?;
    serde_json::from_str(trimmed.get(start..=end)?).ok()
}

#[test]
fn extraction_with_a_schema_always_parses_and_validates() {
    let model = smollm2::chat_model();
    let decoder = smollm2::decoder(Storage::AsStored);
    let grammar = Grammar::JsonSchema(person_schema());
    let texts = texts();
    let (mut strict_ok, mut loose_ok, mut free_valid) = (0, 0, 0);
    let (mut mask_ms, mut model_ms, mut tokens) = (0.0, 0.0, 0);
    for text in &texts {
        let free = run(model, &decoder, &ask(text), None, 80);
        if let Ok(v) = serde_json::from_str::<Value>(free.text.trim()) {
            strict_ok += 1;
            free_valid += is_person(&v) as usize;
        }
        loose_ok += loose_parse(&free.text).is_some_and(|v| is_person(&v)) as usize;

        let held = run(model, &decoder, &ask(text), Some(&grammar), 80);
        assert_eq!(held.finish, FinishReason::Stop, "{text}: {}", held.text);
        let value: Value = serde_json::from_str(&held.text)
            .unwrap_or_else(|e| panic!("{text}: {e}: {}", held.text));
        assert!(is_person(&value), "{text}: {}", held.text);
        mask_ms += held.mask_ms;
        model_ms += held.model_ms;
        tokens += held.tokens;
    }
    let n = texts.len();
    println!(
        "extraction, {n} prompts: without a schema {strict_ok} parse as JSON ({free_valid} of them validate), {loose_ok} validate once a fence or prose around the JSON is cut; with the schema {n} of {n} parse and validate"
    );
    println!(
        "mask (JSON Schema): {:.0} us/token over {tokens} tokens; the model's decode step {:.1} ms/token: {:.2}% of a token",
        mask_ms * 1e3 / tokens as f64,
        model_ms / tokens as f64,
        mask_ms / model_ms * 100.0
    );
}

#[test]
fn mask_cost_of_json_and_a_tool_call() {
    let model = smollm2::chat_model();
    let decoder = smollm2::decoder(Storage::AsStored);
    let tools = Shape::Calls {
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("The weather in a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false}),
            },
            Tool {
                name: "search".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["query"], "additionalProperties": false}),
            },
        ],
        choice: ToolChoice::Required,
    };
    let instructions = tools.instructions().unwrap();
    for (what, grammar, question) in [
        (
            "any JSON object",
            Grammar::JsonSchema(json!({"type": "object"})),
            "Describe a cat as a JSON object.",
        ),
        (
            "a tool call",
            tools.grammar().unwrap(),
            "What's the weather in Oslo?",
        ),
    ] {
        let messages = vec![
            Message {
                role: Role::System,
                content: instructions.clone(),
            },
            Message {
                role: Role::User,
                content: question.into(),
            },
        ];
        let held = run(model, &decoder, &messages, Some(&grammar), 60);
        assert!(held.tokens > 0);
        println!(
            "mask ({what}): {:.0} us/token over {} tokens, {:.2}% of the model's {:.1} ms/token; reply {}",
            held.mask_ms * 1e3 / held.tokens as f64,
            held.tokens,
            held.mask_ms / held.model_ms * 100.0,
            held.model_ms / held.tokens as f64,
            held.text
        );
    }
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "customer": {"type": "string", "maxLength": 30},
            "items": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}, "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["name", "qty"], "additionalProperties": false}},
            "day": {"enum": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]},
            "gift": {"type": "boolean"}
        },
        "required": ["customer", "items", "day", "gift"],
        "additionalProperties": false
    })
}

fn is_order(v: &Value) -> bool {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    v.as_object().is_some_and(|o| {
        o.len() == 4
            && o.get("customer")
                .and_then(Value::as_str)
                .is_some_and(|s| s.chars().count() <= 30)
            && o.get("items")
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    (1..=4).contains(&items.len())
                        && items.iter().all(|i| {
                            i.as_object().is_some_and(|i| i.len() == 2)
                                && i["name"].as_str().is_some_and(|n| n.chars().count() <= 20)
                                && i["qty"].as_i64().is_some_and(|q| (1..=99).contains(&q))
                        })
                })
            && DAYS.contains(&o.get("day").and_then(Value::as_str).unwrap_or(""))
            && o.get("gift").is_some_and(Value::is_boolean)
    })
}

/// 50 orders: a customer, two items with quantities, a weekday, maybe a gift.
fn orders() -> Vec<(String, String)> {
    let names = ["Ann", "Bruno", "Chloé", "Dev", "Eun-ji"];
    let goods = [
        "apples",
        "pears",
        "notebooks",
        "candles",
        "mugs",
        "socks",
        "lemons",
    ];
    let days = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    (0..50)
        .map(|i| {
            let text = format!(
                "{} ordered {} {} and {} {}, to be delivered on {}{}.",
                names[i % names.len()],
                1 + i % 9,
                goods[i % goods.len()],
                2 + (i * 3) % 11,
                goods[(i + 3) % goods.len()],
                days[(i * 2) % days.len()],
                if i % 3 == 0 { ", wrapped as a gift" } else { "" }
            );
            let ask = format!(
                "Extract the order as JSON with the keys customer, items (a list of objects with name and qty), day (the weekday in lowercase) and gift (true or false). Answer with the JSON only.\n\nText: {text}"
            );
            (text, ask)
        })
        .collect()
}

#[test]
fn nested_extraction_with_a_schema_always_parses_and_validates() {
    let model = smollm2::chat_model();
    let decoder = smollm2::decoder(Storage::AsStored);
    let grammar = Grammar::JsonSchema(order_schema());
    let (mut parsed, mut valid, mut loose) = (0, 0, 0);
    let orders = orders();
    // The unconstrained replies run to max_tokens (about 7 minutes for the
    // 50): measured only when asked.
    let compare = std::env::var_os("EDGEINFER_MEASURE").is_some();
    for (text, ask) in &orders {
        let messages = [Message {
            role: Role::User,
            content: ask.clone(),
        }];
        if compare {
            let free = run(model, &decoder, &messages, None, 120);
            if let Ok(v) = serde_json::from_str::<Value>(free.text.trim()) {
                parsed += 1;
                valid += is_order(&v) as usize;
            }
            loose += loose_parse(&free.text).is_some_and(|v| is_order(&v)) as usize;
        }
        let held = run(model, &decoder, &messages, Some(&grammar), 120);
        assert_eq!(held.finish, FinishReason::Stop, "{text}: {}", held.text);
        let value: Value = serde_json::from_str(&held.text)
            .unwrap_or_else(|e| panic!("{text}: {e}: {}", held.text));
        assert!(is_order(&value), "{text}: {}", held.text);
    }
    let n = orders.len();
    if !compare {
        println!("nested extraction, {n} orders: with the schema {n} of {n} parse and validate (EDGEINFER_MEASURE=1 compares without)");
        return;
    }
    println!(
        "nested extraction, {n} orders: without a schema {parsed} parse as JSON, {valid} validate ({loose} once prose or a fence around the JSON is cut); with the schema {n} of {n} parse and validate"
    );
}
