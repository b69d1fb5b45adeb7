//! One reply generated as text deltas (src/decoder/generation.rs) on the
//! small chat model this host runs: the deltas add up to the reply, a stop
//! sequence is never shown, and the context window ends a reply. Here
//! rather than beside the code: the model comes from the registry, which
//! the decoder does not import.

use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::generation::{FinishReason, GenerateOptions, Generation};
use edgeinfer::decoder::sampling::SamplingParams;
use edgeinfer::decoder::template::{Message, Role};
use edgeinfer::registry;

fn model() -> &'static ChatModel {
    let spec = registry::find("shakespeare-llama").expect("embedded");
    registry::chat_model(spec).expect("loads").0
}

fn options(temperature: f32, seed: u64, max_tokens: usize, stop: &[&str]) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        sampling: SamplingParams {
            temperature,
            top_k: 0,
            seed,
            ..SamplingParams::default()
        },
    }
}

fn prompt(m: &ChatModel) -> Vec<u32> {
    let messages = [Message {
        role: Role::User,
        content: "Speak, and tell me all.".into(),
    }];
    m.prompt(&messages, 64).unwrap().ids
}

/// Streams a generation; returns the deltas and the final state.
fn deltas(m: &'static ChatModel, o: GenerateOptions) -> (Vec<String>, String, FinishReason, usize) {
    let mut g = Generation::new(m, prompt(m), o);
    let mut out = Vec::new();
    while let Some(d) = g.step().unwrap() {
        out.push(d.text);
    }
    (
        out,
        g.text().to_string(),
        g.finish_reason().unwrap(),
        g.completion_tokens(),
    )
}

#[test]
fn deltas_add_up_to_the_reply_and_max_tokens_holds() {
    let m = model();
    for seed in 0..8 {
        let (parts, text, finish, tokens) = deltas(m, options(1.5, seed, 40, &[]));
        assert_eq!(parts.concat(), text);
        assert!(tokens <= 40);
        assert!(finish == FinishReason::Stop || tokens == 40);
    }
}

#[test]
fn a_stop_sequence_ends_the_reply_before_it_and_is_never_shown() {
    let m = model();
    let (_, full, _, _) = deltas(m, options(0.0, 0, 60, &[]));
    // A stop sequence from the middle of the greedy reply.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "{full:?}");
    let stop = format!(" {}", words[words.len() / 2]);
    let (parts, text, finish, _) = deltas(m, options(0.0, 0, 60, &[&stop]));
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(text, full[..full.find(&stop).unwrap()]);
    assert_eq!(parts.concat(), text);
    // No delta ever showed the stop sequence's first character early.
    assert!(!parts.concat().contains(&stop));
}

#[test]
fn the_context_window_ends_a_reply_with_length() {
    let m = model();
    // A plain-text continuation 250 tokens long: 6 positions remain.
    let text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune. ".repeat(20);
    let mut ids = m.template().begin.clone();
    ids.extend(m.encode(&text).unwrap());
    ids.truncate(250);
    let mut g = Generation::new(m, ids, options(0.0, 0, 100, &[]));
    let (_, finish) = g.run_to_end().unwrap();
    assert_eq!(finish, FinishReason::Length);
    // Six tokens fed at positions 250..=255, a seventh sampled from the
    // last logits: the context, not max_tokens, ended it.
    assert_eq!(g.completion_tokens(), 7);
}
