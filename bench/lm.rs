//! The decoder's side of the benchmark: prompts of a given length, prefill
//! timed natively on the engine itself, and onnxruntime-web running the same
//! ONNX file with its key/value cache (bench/ort-web-lm.mjs) on the same
//! prompt and token count.

use std::time::Instant;

use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::engine::Decoder;
use edgeinfer::decoder::template::{Message, Role};
use serde_json::{json, Value};

use super::{median, ms, support};

pub const MODEL: &str = "shakespeare-llama";

pub fn model() -> &'static ChatModel {
    let spec = edgeinfer::registry::find(MODEL).expect("the chat model is embedded");
    edgeinfer::registry::chat_model(spec).expect("it loads").0
}

/// The same model packed as Q8 blocks (same int8 weights, activations
/// quantized per block, integer dot products): the integer path, natively.
pub fn q8_decoder() -> Decoder {
    let onnx = std::fs::read(support::root().join("models/tinylm/model.onnx"))
        .expect("read the ONNX file");
    let (packed, _, _) = super::check::pack_llama::pack_as_q8_blocks(&onnx).expect("packs");
    Decoder::parse(edgeinfer::packed::leak_aligned(&packed)).expect("parses")
}

/// The prompt ids the chat route builds for one user message.
pub fn prompt_ids(content: &str) -> Vec<u32> {
    let messages = [Message {
        role: Role::User,
        content: content.into(),
    }];
    model().prompt(&messages, 1).expect("fits").ids
}

/// A user message whose chat prompt is `tokens` tokens long (template
/// included), and those ids: a public-domain verse, cut and re-tokenized
/// until the length is exact (or the nearest found).
pub fn message_of_tokens(tokens: usize) -> (String, Vec<u32>) {
    let verse = "Of man's first disobedience, and the fruit of that forbidden tree whose mortal taste brought death into the world, and all our woe, with loss of Eden, till one greater Man restore us, and regain the blissful seat, sing, Heavenly Muse. ";
    let m = model();
    let ids = m.encode(&verse.repeat(1 + tokens / 20)).expect("encodes");
    let mut best: Option<(String, Vec<u32>)> = None;
    for k in (tokens.saturating_sub(12)..tokens).rev() {
        let content = m.decode(&ids[..k]).expect("decodes");
        let prompt = prompt_ids(&content);
        let closer = best
            .as_ref()
            .is_none_or(|(_, b)| prompt.len().abs_diff(tokens) < b.len().abs_diff(tokens));
        if closer {
            best = Some((content, prompt));
        }
        if best.as_ref().is_some_and(|(_, b)| b.len() == tokens) {
            break;
        }
    }
    best.expect("a prompt")
}

/// Median ms of one prompt pass (empty cache) on the engine, natively.
pub fn native_prefill(ids: &[u32], runs: usize) -> f64 {
    let decoder = model().decoder();
    median(
        (0..runs.max(3))
            .map(|_| {
                let mut cache = decoder.new_cache();
                let t = Instant::now();
                decoder.forward(&mut cache, ids).expect("runs");
                ms(t.elapsed())
            })
            .collect(),
    )
}

/// Median ms per greedy token on the engine natively (prompt excluded): the
/// model step and argmax only, as onnxruntime-web's figure is.
pub fn native_greedy_ms_per_token(
    decoder: &Decoder,
    prompt: &[u32],
    tokens: usize,
    runs: usize,
) -> f64 {
    median(
        (0..runs.max(3))
            .map(|_| {
                let mut cache = decoder.new_cache();
                let mut logits = decoder.forward(&mut cache, prompt).expect("runs");
                let t = Instant::now();
                for _ in 0..tokens {
                    let next = edgeinfer::decoder::sampling::argmax(&logits);
                    logits = decoder.forward(&mut cache, &[next]).expect("runs");
                }
                ms(t.elapsed()) / tokens as f64
            })
            .collect(),
    )
}

/// onnxruntime-web on the chat model's ONNX file: decoding `tokens` greedy
/// tokens after `prompt` and prompt passes of each prefill case, or None
/// (reason on stderr) when Node cannot run it.
pub fn ort_web(
    prompt: &[u32],
    tokens: usize,
    prefill: &[(String, Vec<u32>)],
    runs: usize,
) -> Option<Value> {
    let input = json!({
        "model": support::root().join("models/tinylm/model.onnx"),
        "runs": runs,
        "layers": model().decoder().layers(),
        "kv_heads": model().decoder().config().kv_heads,
        "head_dim": model().decoder().config().head_dim,
        "decode": {"prompt": prompt, "tokens": tokens},
        "prefill": prefill.iter().map(|(name, ids)| json!({"name": name, "ids": ids})).collect::<Vec<_>>(),
    });
    super::node_json("bench/ort-web-lm.mjs", &input)
}
