//! Any conversation through the chat template (tokenized contents, the
//! context budget, dropping of old turns), any id sequence through the
//! decoder, and any logits through the sampler with any request-valid
//! settings. Oracles: no panic, prompts within the context, and a sampled
//! id always inside the vocabulary.

use edgeinfer::chat_template::{Message, Role};
use edgeinfer::registry::{self, Task, MODELS};
use edgeinfer::sampling::{Sampler, SamplingParams};

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

/// One input; panics on a finding.
pub fn check(data: &[u8]) {
    let spec = MODELS
        .iter()
        .find(|m| m.task == Task::TextGeneration)
        .expect("a chat model is embedded");
    let (model, _) = registry::chat_model(spec).expect("the chat model loads");
    let context = model.context();

    // A conversation: chunks split at 0xFF, the first byte of each its role.
    let messages: Vec<Message> = data
        .split(|&b| b == 0xFF)
        .filter_map(|chunk| {
            let (&role, content) = chunk.split_first()?;
            let role = [Role::System, Role::User, Role::Assistant][usize::from(role % 3)];
            Some(Message {
                role,
                content: String::from_utf8_lossy(content).into_owned(),
            })
        })
        .collect();
    let max_tokens = usize::from(byte(data, 0)) % (context + 8);
    if let Ok(prompt) = model.prompt(&messages, max_tokens) {
        assert!(
            prompt.ids.len() + max_tokens <= context,
            "{} + {max_tokens}",
            prompt.ids.len()
        );
    }

    // Any ids, in and out of the vocabulary: an error or text, never a panic.
    let ids: Vec<u32> = data
        .chunks(2)
        .map(|c| u32::from(c[0]) | u32::from(byte(c, 1)) << 8)
        .collect();
    let _ = model.decode(&ids);

    // Any logits (NaN and infinities included) with settings the API accepts.
    let mut logits: Vec<f32> = data
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], byte(c, 1), byte(c, 2), byte(c, 3)]))
        .collect();
    if logits.is_empty() {
        return;
    }
    let params = SamplingParams {
        temperature: f32::from(byte(data, 1)) / 127.5,
        top_k: usize::from(byte(data, 2)),
        top_p: f32::from(byte(data, 3)) / 255.0,
        repetition_penalty: 0.01 + f32::from(byte(data, 4)) / 25.6,
        seed: u64::from(byte(data, 5)),
    };
    let seen: Vec<u32> = ids.iter().map(|&i| i % 64).collect();
    let picked = Sampler::new(params).pick(&mut logits, &seen);
    assert!(
        (picked as usize) < logits.len(),
        "{picked} of {}",
        logits.len()
    );
}
