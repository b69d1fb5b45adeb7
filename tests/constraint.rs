//! Constrained decoding (src/decoder/constraint.rs) as a property: under
//! hundreds of random schemas of the served subset (src/api/schema.rs), a
//! reply generated through the real `Generation` on SmolLM2's vocabulary
//! always parses and validates, checked by an independent JSON Schema
//! implementation (the `jsonschema` crate). The logits are made up (random,
//! seeded), so every step's choice is an arbitrary token the mask allows:
//! far harder on the grammar than a model's likely ones. Tool calls too:
//! random tools, `required` and `auto`, split back into name and arguments
//! by the renderers' own `CallText`.

use edgeinfer_pipeline as check;
#[path = "support/smollm2.rs"]
mod smollm2;
mod support;

use edgeinfer::api::chat::shape::{CallMode, CallText, Shape, Tool, ToolChoice};
use edgeinfer::api::schema;
use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::constraint::{Constraint, Grammar};
use edgeinfer::decoder::generation::{FinishReason, GenerateOptions, Generation};
use edgeinfer::decoder::sampling::Logits as Row;
use edgeinfer::decoder::template::{Message, Role};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Map, Value};

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// A random schema of the served subset, `depth` levels deep at most.
fn random_schema(rng: &mut ChaCha8Rng, depth: u32, defs: &mut Map<String, Value>) -> Value {
    let leaf = depth == 0;
    match below(rng, if leaf { 9 } else { 14 }) {
        0 => json!({"type": "string"}),
        1 => json!({"type": "string", "maxLength": below(rng, 12) + 1}),
        2 => json!({"type": "integer", "minimum": -5, "maximum": below(rng, 1000)}),
        3 => json!({"type": "number"}),
        4 => json!({"type": "boolean"}),
        5 => json!({"type": ["string", "null"]}),
        6 => json!({"enum": ["red", "green", 3, null, "blue sky"]}),
        7 => {
            let format = ["date", "uuid", "date-time", "email", "time"][below(rng, 5) as usize];
            json!({"type": "string", "format": format})
        }
        8 => json!({"const": "fixed"}),
        9 | 10 => random_object(rng, depth - 1, defs),
        11 => {
            let items = random_schema(rng, depth - 1, defs);
            let mut array = json!({"type": "array", "items": items});
            if below(rng, 2) == 0 {
                array["maxItems"] = json!(below(rng, 4) + 1);
            }
            array
        }
        12 => {
            json!({"anyOf": [random_schema(rng, depth - 1, defs), random_schema(rng, depth - 1, defs)]})
        }
        _ => {
            // The name is taken before the definition is made, so one made
            // inside it gets another: a def that refers to itself through a
            // required property would have no finite instance.
            let name = format!("D{}", defs.len());
            defs.insert(name.clone(), Value::Null);
            let def = random_object(rng, depth - 1, defs);
            defs.insert(name.clone(), def);
            json!({"$ref": format!("#/$defs/{name}")})
        }
    }
}

fn random_object(rng: &mut ChaCha8Rng, depth: u32, defs: &mut Map<String, Value>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for i in 0..below(rng, 4) + 1 {
        let name = ["name", "age", "tags", "city", "ok", "x y", "über"][below(rng, 7) as usize];
        let name = format!("{name}{i}");
        properties.insert(name.clone(), random_schema(rng, depth, defs));
        if below(rng, 3) != 0 {
            required.push(name);
        }
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn random_top(rng: &mut ChaCha8Rng) -> Value {
    let mut defs = Map::new();
    let mut schema = random_object(rng, 3, &mut defs);
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// Made-up logits: random, with a lean towards tokens that close strings,
/// arrays and objects (most of all those that start by closing: inside a
/// string, the thousands of tokens holding a `}` would otherwise outvote
/// the few that end it; an `email`'s local part takes `}` too, so `@`
/// as well) so replies end in a few hundred tokens.
struct Logits {
    rng: ChaCha8Rng,
    lean: Vec<f32>,
}

impl Logits {
    fn new(model: &ChatModel, seed: u64) -> Self {
        let vocab = model.decoder().config().vocab;
        let lean = (0..vocab as u32)
            .map(|id| match model.decode(&[id]) {
                Ok(t) if t.starts_with(['"', ']', '}', ',', '@']) => 5.0,
                Ok(t) if t.contains(['"', ']', '}', ',']) => 3.0,
                _ => 0.0,
            })
            .collect();
        Logits {
            rng: ChaCha8Rng::seed_from_u64(seed),
            lean,
        }
    }

    fn next(&mut self) -> Vec<f32> {
        self.lean
            .iter()
            .map(|l| l + (self.rng.next_u32() >> 8) as f32 / (1 << 24) as f32 * 4.0)
            .collect()
    }
}

/// Generates a reply under `constraint` with made-up logits.
fn generate(
    model: &'static ChatModel,
    constraint: Constraint,
    logits: &mut Logits,
    max_tokens: usize,
) -> (String, FinishReason) {
    let prompt = model
        .prompt(
            &[Message {
                role: Role::User,
                content: "Answer in JSON.".into(),
            }],
            max_tokens,
        )
        .unwrap()
        .ids;
    let options = GenerateOptions::greedy(max_tokens);
    let mut generation = Generation::new(model, prompt, options);
    generation.constrain(constraint, || 0.0);
    loop {
        if generation.wants().is_some() {
            generation.supply(Row::All(logits.next())).unwrap();
        }
        if generation.step().unwrap().is_none() {
            break;
        }
    }
    (
        generation.text().to_string(),
        generation.finish_reason().unwrap(),
    )
}

fn validates(schema: &Value, instance: &Value) -> Result<(), String> {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("the validator refused the schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

#[test]
fn replies_under_random_schemas_always_parse_and_validate() {
    let model = smollm2::chat_model();
    let constraints = model.constraints().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(28);
    let mut logits = Logits::new(model, 7);
    let cases = 300;
    for case in 0..cases {
        let schema = random_top(&mut rng);
        schema::check(&schema, "schema").unwrap_or_else(|e| panic!("{schema}: {e:?}"));
        let constraint = constraints
            .compile(&Grammar::JsonSchema(schema.clone()))
            .unwrap_or_else(|e| panic!("case {case}: {schema} does not compile: {e}"));
        let (text, finish) = generate(model, constraint, &mut logits, 900);
        assert_eq!(finish, FinishReason::Stop, "case {case}: {schema}\n{text}");
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("case {case}: {e}: {schema}\n{text}"));
        if let Err(e) = validates(&schema, &value) {
            panic!("case {case}: {e}\nschema {schema}\nreply {text}");
        }
    }
}

#[test]
fn any_json_object_parses() {
    let model = smollm2::chat_model();
    let constraints = model.constraints().unwrap();
    let mut logits = Logits::new(model, 11);
    for _ in 0..20 {
        let constraint = constraints
            .compile(&Grammar::JsonSchema(json!({"type": "object"})))
            .unwrap();
        let (text, finish) = generate(model, constraint, &mut logits, 900);
        assert_eq!(finish, FinishReason::Stop, "{text}");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(value.is_object(), "{text}");
    }
}

#[test]
fn tool_calls_name_a_declared_tool_with_valid_arguments() {
    let model = smollm2::chat_model();
    let constraints = model.constraints().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut logits = Logits::new(model, 3);
    let (mut calls, mut texts) = (0, 0);
    for case in 0..60 {
        let tools: Vec<Tool> = (0..below(&mut rng, 3) + 1)
            .map(|i| Tool {
                name: format!("tool_{i}"),
                description: Some("does a thing".into()),
                parameters: random_top(&mut rng),
            })
            .collect();
        let choice = match case % 3 {
            0 => ToolChoice::Required,
            1 => ToolChoice::Named(tools[tools.len() - 1].name.clone()),
            _ => ToolChoice::Auto,
        };
        let shape = Shape::Calls {
            tools: tools.clone(),
            choice: choice.clone(),
        };
        let grammar = shape.grammar().unwrap();
        let constraint = constraints
            .compile(&grammar)
            .unwrap_or_else(|e| panic!("case {case}: {grammar:?}: {e}"));
        let (text, finish) = generate(model, constraint, &mut logits, 900);
        let mut split = CallText::new(shape.calls());
        split.push(&text);
        split.end();
        if !split.is_call() {
            assert_eq!(shape.calls(), CallMode::Maybe, "{text}");
            assert!(!text.starts_with('{'), "{text}");
            texts += 1;
            continue;
        }
        assert_eq!(finish, FinishReason::Stop, "case {case}: {text}");
        calls += 1;
        let (name, arguments) = split.call().unwrap();
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("case {case}: {name} is not declared: {text}"));
        if let ToolChoice::Named(named) = &choice {
            assert_eq!(&name, named);
        }
        let arguments: Value =
            serde_json::from_str(&arguments).unwrap_or_else(|e| panic!("{e}: {text}"));
        if let Err(e) = validates(&tool.parameters, &arguments) {
            panic!(
                "case {case}: {e}\nparameters {}\nreply {text}",
                tool.parameters
            );
        }
    }
    assert!(calls >= 40, "{calls} calls, {texts} texts");
}
