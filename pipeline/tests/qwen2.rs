//! Qwen2.5-Coder-0.5B-Instruct's own GGUF (Q5_0, Q8_0, Q6_K, Q4_K blocks; Qwen2
//! with q/k/v biases) through our engine, against the same file dequantized to
//! float32 run by our engine: greedy replies to chat prompts, and the
//! perplexity of a text under both; and that float32 engine against Hugging
//! Face transformers on the same file (`greedy.json`, its reference run).
//!
//! Run: `cargo test -p edgeinfer-pipeline --test qwen2 -- --ignored --nocapture`
//! (ignored by default: packing the float32 reference takes ~4 GB of memory and
//! the runs about a minute; the file is fetched on demand, see gguf_blocks.rs).
//!
//! Tokens: the tokenizer built from the file's own vocabulary
//! (`edgeinfer_pipeline::gguf_tokenizer`, equal to llama.cpp's on 263 texts:
//! tests/gguf_tokenizer.rs), so the perplexity is comparable with other
//! tools' on the same text. Prints the blocks' decode time per token
//! (native, one thread) beside it.

mod common;

use common::fetched;

use edgeinfer_engine::decoder::Decoder;
use edgeinfer_engine::packed::leak_aligned;
use edgeinfer_pipeline::gguf_tokenizer::Vocabulary;
use edgeinfer_pipeline::pack_gguf::{Architecture, Gguf, Storage};

/// The file's tokenizer (special tokens matched: the chats are ChatML).
struct Vocab(tokenizers::Tokenizer);

impl Vocab {
    fn new(gguf: &Gguf) -> Vocab {
        let json = Vocabulary::of(gguf)
            .and_then(|v| v.tokenizer_json())
            .unwrap();
        Vocab(tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap())
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode(text, false).unwrap().get_ids().to_vec()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids, false).unwrap()
    }

    fn id(&self, token: &str) -> u32 {
        self.0.token_to_id(token).unwrap()
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0 as u32
}

fn greedy(d: &Decoder, prompt: &[u32], n: usize, stop: u32) -> Vec<u32> {
    greedy_timed(d, prompt, n, stop).0
}

/// Greedy ids, and the time per decoded token (the single-token passes).
fn greedy_timed(d: &Decoder, prompt: &[u32], n: usize, stop: u32) -> (Vec<u32>, f64) {
    let mut cache = d.new_cache();
    let mut logits = d.forward(&mut cache, prompt).unwrap();
    let mut out = Vec::new();
    let t0 = std::time::Instant::now();
    let mut steps = 0;
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        if t == stop {
            break;
        }
        logits = d.forward(&mut cache, &[t]).unwrap();
        steps += 1;
    }
    (out, t0.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64)
}

/// exp(mean negative log-likelihood) of `tokens[1..]`.
fn perplexity(d: &Decoder, tokens: &[u32]) -> f64 {
    let vocab = d.config().vocab;
    let logits = d.forward_all(&mut d.new_cache(), tokens).unwrap();
    let mut nll = 0.0f64;
    for (i, &next) in tokens[1..].iter().enumerate() {
        let row = &logits[i * vocab..(i + 1) * vocab];
        let max = row.iter().fold(f32::MIN, |m, &v| m.max(v));
        let z: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        nll += z.ln() - f64::from(row[next as usize] - max);
    }
    (nll / (tokens.len() - 1) as f64).exp()
}

const TEXT: &str = r#"def merge_sort(items):
    """Return a new list with the items in ascending order."""
    if len(items) <= 1:
        return list(items)
    middle = len(items) // 2
    left = merge_sort(items[:middle])
    right = merge_sort(items[middle:])
    merged = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged


if __name__ == "__main__":
    print(merge_sort([5, 2, 9, 1, 5, 6]))
"#;

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a Python function that checks whether a number is prime.",
    "Explain what a hash map is in one sentence.",
    "How do I reverse a string in JavaScript?",
];

#[test]
#[ignore = "~4 GB and a minute: run with --ignored"]
fn the_files_own_blocks_follow_its_float32_dequantization() {
    let bytes = std::fs::read(fetched("qwen2.5-coder-0.5b")).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    assert_eq!(gguf.architecture().unwrap(), Architecture::Qwen2);
    let c = gguf.config().unwrap();
    assert_eq!(
        (c.dims, c.heads, c.kv_heads, c.vocab, c.ffn),
        (896, 14, 2, 151_936, 4864)
    );
    let vocab = Vocab::new(&gguf);
    let t0 = std::time::Instant::now();
    let blocks = gguf.pack(Storage::AsStored).unwrap();
    println!(
        "packed as stored: {:.1} MB in {:.1?}",
        blocks.bytes.len() as f64 / 1e6,
        t0.elapsed()
    );
    let blocks = Decoder::parse(leak_aligned(&blocks.bytes)).unwrap();
    let float = gguf.pack(Storage::Float32).unwrap();
    println!("packed float32: {:.1} MB", float.bytes.len() as f64 / 1e6);
    let float = Decoder::parse(leak_aligned(&float.bytes)).unwrap();
    drop(bytes);

    let text = vocab.encode(TEXT);
    assert_eq!(vocab.decode(&text), TEXT);
    let t0 = std::time::Instant::now();
    let (pb, t_blocks) = (perplexity(&blocks, &text), t0.elapsed());
    let pf = perplexity(&float, &text);
    println!(
        "perplexity of a {}-token Python text: blocks {pb:.4}, float32 {pf:.4} ({t_blocks:.1?} for the blocks' pass)",
        text.len()
    );
    assert!(pb < 1.05 * pf && pf < 20.0, "blocks {pb} float32 {pf}");

    let end = vocab.id("<|im_end|>");
    let (mut agree, mut total) = (0, 0);
    for p in PROMPTS {
        let chat = format!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
        );
        let prompt = vocab.encode(&chat);
        let (a, ms) = greedy_timed(&blocks, &prompt, 32, end);
        println!(
            "blocks decode, native: {ms:.1} ms per token ({:.1} tokens/s)",
            1e3 / ms
        );
        let b = greedy(&float, &prompt, 32, end);
        let same = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        println!(
            "{p}\n  blocks:  {:?}\n  float32: {:?}\n  first {same} of {} tokens equal",
            vocab.decode(&a),
            vocab.decode(&b),
            b.len()
        );
        agree += same;
        total += b.len();
    }
    println!("greedy agreement: {agree} of {total} tokens before the first difference");
    let france = vocab.encode(&format!(
        "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
        PROMPTS[0]
    ));
    let reply = vocab.decode(&greedy(&blocks, &france, 16, end));
    assert!(reply.contains("Paris"), "{reply}");
}

/// Our engine on the file dequantized to float32 against Hugging Face
/// transformers on the same file (its GGUF loader dequantizes to float32
/// too): 32 greedy tokens after each chat of
/// `models/qwen2.5-coder-0.5b/greedy.json` (written by
/// `transformers_greedy.py` in that folder, transformers 4.57.1 + torch on
/// CPU). The prompt ids are transformers' tokenization of its own chat
/// template's text; ours must be the same ids, then the same replies. Two
/// float32 implementations sum in different orders, so a step whose top two
/// logits are within 1e-3 in transformers (`min_margin`) may pick either:
/// a case is compared up to its first such step.
#[test]
#[ignore = "~3 GB and a minute: run with --ignored"]
fn float32_greedy_equals_transformers() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::root().join("models/qwen2.5-coder-0.5b/greedy.json"))
            .expect("models/qwen2.5-coder-0.5b/greedy.json (transformers_greedy.py writes it)"),
    )
    .unwrap();
    let bytes = std::fs::read(fetched("qwen2.5-coder-0.5b")).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap();
    let vocab = Vocab::new(&gguf);
    let float = gguf.pack(Storage::Float32).unwrap();
    let float = Decoder::parse(leak_aligned(&float.bytes)).unwrap();
    drop(bytes);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let (mut compared, mut equal) = (0, 0);
    for case in cases {
        let prompt = ids(&case["prompt_ids"]);
        let expected = ids(&case["greedy_ids"]);
        // Steps up to the first near-tie, when the reference has one.
        let sure = case["margins"]
            .as_array()
            .map(|m| {
                m.iter()
                    .position(|x| x.as_f64().unwrap_or(0.0) < 0.01)
                    .unwrap_or(m.len())
            })
            .unwrap_or(expected.len());
        let ours = greedy(&float, &prompt, expected.len(), u32::MAX);
        println!(
            "{:?}: {:?}",
            case["messages"].as_array().unwrap().last().unwrap()["content"],
            vocab.decode(&ours)
        );
        assert_eq!(
            ours[..sure],
            expected[..sure],
            "{}: ours {:?}, transformers {:?}",
            case["messages"],
            vocab.decode(&ours),
            vocab.decode(&expected)
        );
        compared += sure;
        equal += ours
            .iter()
            .zip(&expected)
            .take_while(|(a, b)| a == b)
            .count();
    }
    println!(
        "{} chats: {equal} of {} greedy tokens equal before a first difference ({compared} compared up to near-ties)",
        cases.len(),
        cases.len() * 32
    );
}
