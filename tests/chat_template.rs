//! Models' own chat templates (the Jinja text of their GGUF files) rendered by
//! our minijinja renderer (src/decoder/jinja.rs) against transformers'
//! renderer, the one `apply_chat_template` calls: models/templates/golden.json,
//! written by models/templates/reference.py (transformers 4.57.1, Jinja2
//! 3.1.6). Two templates: SmolLM2-135M-Instruct's ChatML and
//! Qwen2.5-Coder-0.5B-Instruct's ChatML with tools (function definitions
//! through `tojson`, assistant tool calls with object and string arguments,
//! runs of tool results); 24 golden chats with and without the generation
//! prompt, system prompts first, absent and in the middle. Every rendering
//! must be the same text, character for character.

use edgeinfer::decoder::jinja::ChatTemplate;
use serde_json::Value;

#[test]
fn templates_render_as_transformers_renders_them() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/templates/golden.json");
    let golden: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON");
    let mut checked = 0;
    for model in golden["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        let template = ChatTemplate::new(
            model["template"].as_str().unwrap(),
            model["bos_token"].as_str().unwrap(),
            model["eos_token"].as_str().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, case) in model["cases"].as_array().unwrap().iter().enumerate() {
            let tools = case.get("tools").filter(|t| !t.is_null());
            let got = template.render(
                &case["messages"],
                tools,
                case["add_generation_prompt"].as_bool().unwrap(),
                0,
            );
            match (case.get("text").and_then(Value::as_str), got) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{name} case {i}"),
                (None, Err(_)) => {}
                (want, got) => panic!("{name} case {i}: transformers {want:?}, ours {got:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "{checked} renderings");
}

/// scripts/add-model takes a ChatML model's default system message from its
/// template's text (`chatml_default_system`), and the served rendering is
/// ChatML with that message: for every golden ChatML template, what
/// transformers renders for a chat without a system message starts with
/// exactly that block.
#[test]
fn the_default_system_message_read_from_a_template_is_what_it_renders() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/templates/golden.json");
    let golden: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON");
    let mut checked = 0;
    for model in golden["models"].as_array().unwrap() {
        let template = model["template"].as_str().unwrap();
        if !template.contains("<|im_start|>") {
            continue;
        }
        let system = edgeinfer_pipeline::chatml_default_system(template)
            .unwrap_or_else(|| panic!("{}: no default system message found", model["model"]));
        let block = format!("<|im_start|>system\n{system}<|im_end|>\n");
        for case in model["cases"].as_array().unwrap() {
            let messages = case["messages"].as_array().unwrap();
            if messages[0]["role"] == "system" || !case["tools"].is_null() {
                continue;
            }
            let text = case["text"].as_str().unwrap();
            assert!(
                text.starts_with(&block),
                "{}: {text:?} does not start with {block:?}",
                model["model"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} chats checked");
}
