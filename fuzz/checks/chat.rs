//! Any conversation through the chat template and its context policy (which
//! old turns to drop to fit the budget), any id sequence through the
//! decoder, and any logits (NaN and infinities included) through the sampler
//! with any setting the API accepts. Oracles: no panic; a prompt within its
//! budget that keeps every system message and the last turn, opens with
//! `<|bos|>` and ends with `<|assistant|>`; a sampled id always inside the
//! vocabulary. Contents come as token ids: the tokenizer that makes them from
//! text is fuzzed by the `text` target, so this one stays fast.

use edgeinfer::decoder::sampling::{Sampler, SamplingParams};
use edgeinfer::decoder::template::{self as chat_template, Message, Role};
use edgeinfer::registry::{self, Task, MODELS};

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

fn ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(2)
        .map(|c| u32::from(c[0]) | (u32::from(byte(c, 1)) << 8))
        .collect()
}

/// One input; panics on a finding.
pub fn check(data: &[u8]) {
    let spec = MODELS
        .iter()
        .find(|m| m.task == Task::TextGeneration)
        .expect("a chat model is embedded");
    let (model, _) = registry::chat_model(spec).expect("the chat model loads");
    let tokens = model.template();

    // A conversation: chunks split at 0xFF, the first byte of each its role,
    // the rest its content's ids.
    let (messages, contents): (Vec<Message>, Vec<Vec<u32>>) = data
        .split(|&b| b == 0xFF)
        .filter_map(|chunk| {
            let (&role, content) = chunk.split_first()?;
            let role = [Role::System, Role::User, Role::Assistant][usize::from(role % 3)];
            let message = Message {
                role,
                content: String::new(),
            };
            Some((message, ids(content)))
        })
        .unzip();
    let budget = usize::from(byte(data, 0)) + usize::from(byte(data, 1));
    match chat_template::render(tokens, &messages, &contents, budget) {
        Ok(prompt) => {
            let ids = &prompt.ids;
            assert!(ids.len() <= budget, "{} > {budget}", ids.len());
            assert!(ids.starts_with(&tokens.begin));
            assert!(ids.ends_with(&tokens.reply));
            let systems = messages.iter().filter(|m| m.role == Role::System).count();
            let kept = messages.len() - prompt.dropped_messages;
            assert!(kept > systems, "the last turn was dropped");
        }
        Err(_) => {
            // Refused only when there is no turn, or the system messages and
            // the last turn alone are over the budget.
            let last = messages.iter().rposition(|m| m.role != Role::System);
            if let Some(last) = last {
                let role = |r: Role| tokens.prefixes[r as usize].len() + tokens.suffix.len();
                let default_system = tokens
                    .default_system
                    .as_ref()
                    .filter(|_| messages[0].role != Role::System)
                    .map_or(0, |c| c.len() + role(Role::System));
                let needed: usize = tokens.begin.len()
                    + tokens.reply.len()
                    + default_system
                    + messages
                        .iter()
                        .zip(&contents)
                        .enumerate()
                        .filter(|(i, (m, _))| m.role == Role::System || *i == last)
                        .map(|(_, (m, c))| c.len() + role(m.role))
                        .sum::<usize>();
                assert!(needed > budget, "refused although {needed} <= {budget}");
            }
        }
    }

    // Any ids, in and out of the vocabulary: an error or text, never a panic.
    let _ = model.decode(&ids(&data[..data.len().min(128)]));

    // Any logits with settings the API accepts.
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
    let seen: Vec<u32> = ids(data).iter().map(|&i| i % 64).collect();
    let picked = Sampler::new(params).pick(&mut logits, &seen);
    assert!(
        (picked as usize) < logits.len(),
        "{picked} of {}",
        logits.len()
    );
}
