//! The decoder's side of the benchmark: prompts of a given length, prefill
//! timed natively on the engine itself, and onnxruntime-web running the same
//! ONNX file with its key/value cache (bench/ort-web-lm.mjs) on the same
//! prompt and token count.

use std::time::Instant;

use edgeinfer::decoder::chat::ChatModel;
use edgeinfer::decoder::template::{Message, Role};
use edgeinfer_engine::decoder::Decoder;
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
    Decoder::parse(edgeinfer_engine::packed::leak_aligned(&packed)).expect("parses")
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

/// Where one generated token's time goes, natively, at position `past`:
/// the whole single-token pass, its matrix products alone (the same kernel
/// on the same shapes), and the norms and SwiGLU alone; attention (rotary,
/// scores, softmax, values) is what the pass spends beyond those. Medians in
/// microseconds: (pass, matrix products, norms + SwiGLU).
pub fn token_parts(past: usize, runs: usize) -> (f64, f64, f64) {
    use edgeinfer_engine::kernels;
    let decoder = model().decoder();
    let c = *decoder.config();
    let prompt: Vec<u32> = (0..past as u32).map(|i| 7 + (i * 131) % 4000).collect();
    let mut base = decoder.new_cache();
    decoder.forward(&mut base, &prompt).expect("runs");
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    let pass = median(
        (0..runs)
            .map(|_| {
                let mut cache = base.clone();
                let t = Instant::now();
                decoder.forward(&mut cache, &[42]).expect("runs");
                us(t)
            })
            .collect(),
    );
    // The pass's 7 products per layer and the head, on int8 rows.
    let (d, qd, kvd) = (c.dims, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let shapes: Vec<(usize, usize)> = (0..decoder.layers())
        .flat_map(|_| {
            [
                (qd, d),
                (kvd, d),
                (kvd, d),
                (d, qd),
                (c.ffn, d),
                (c.ffn, d),
                (d, c.ffn),
            ]
        })
        .chain([(c.vocab, d)])
        .collect();
    /// One product's operands, allocated before timing.
    struct Product {
        w: Vec<i8>,
        scales: Vec<f32>,
        x: Vec<f32>,
        out: Vec<f32>,
        k: usize,
    }
    let mut products: Vec<Product> = shapes
        .iter()
        .map(|&(n, k)| Product {
            w: (0..n * k).map(|i| (i % 251) as i8).collect(),
            scales: vec![0.01; n],
            x: vec![0.5; k],
            out: vec![0.0; n],
            k,
        })
        .collect();
    let products = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                for p in products.iter_mut() {
                    kernels::rows::linear(&p.x, p.k, &p.w, &p.scales, &mut p.out);
                    std::hint::black_box(&p.out);
                }
                us(t)
            })
            .collect(),
    );
    let (norm_w, mut x, up) = (vec![1.0f32; d], vec![0.5f32; d], vec![0.5f32; c.ffn]);
    let norms = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..2 * decoder.layers() + 1 {
                    kernels::rms_norm(&mut x, &norm_w, c.norm_eps);
                }
                for _ in 0..decoder.layers() {
                    let mut gate = up.clone();
                    kernels::swiglu(&mut gate, &up);
                    std::hint::black_box(&gate);
                }
                us(t)
            })
            .collect(),
    );
    (pass, products, norms)
}

/// Per-token overheads before and after this engine, natively, in
/// microseconds per token: (sort of every id by logit, as the previous
/// sampler did each step; `Sampler::pick` with top-k 40) at `vocab`.
pub fn sampling_us(vocab: usize, runs: usize) -> (f64, f64) {
    use edgeinfer::decoder::sampling::{Sampler, SamplingParams};
    let logits: Vec<f32> = (0..vocab)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01)
        .collect();
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    let full_sort = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut order: Vec<u32> = (0..vocab as u32).collect();
                order.sort_by(|&a, &b| {
                    logits[b as usize]
                        .total_cmp(&logits[a as usize])
                        .then(a.cmp(&b))
                });
                std::hint::black_box(&order);
                us(t)
            })
            .collect(),
    );
    let mut sampler = Sampler::new(SamplingParams {
        temperature: 0.8,
        top_k: 40,
        ..SamplingParams::default()
    });
    let mut scratch = logits.clone();
    let pick = median(
        (0..runs)
            .map(|_| {
                scratch.copy_from_slice(&logits);
                let t = Instant::now();
                std::hint::black_box(sampler.pick(&mut scratch, &[]));
                us(t)
            })
            .collect(),
    );
    (full_sort, pick)
}

/// Decoding a `tokens`-token reply to text, in ms for the whole reply:
/// (the whole reply decoded again at every token, as before; the window of
/// the last two tokens per step, as `Generation` now does for byte-level BPE).
pub fn reply_decoding_ms(tokens: usize) -> (f64, f64) {
    let m = model();
    let verse = "Of man's first disobedience, and the fruit of that forbidden tree whose mortal taste brought death into the world. ";
    let ids = m.encode(&verse.repeat(1 + tokens / 20)).expect("encodes");
    let reply = &ids[..tokens.min(ids.len())];
    let t = Instant::now();
    for n in 1..=reply.len() {
        std::hint::black_box(m.decode(&reply[..n]).expect("decodes"));
    }
    let whole = ms(t.elapsed());
    let t = Instant::now();
    for n in 1..=reply.len() {
        std::hint::black_box(
            m.decode(&reply[n.saturating_sub(2)..n - 1])
                .expect("decodes"),
        );
        std::hint::black_box(m.decode(&reply[n.saturating_sub(2)..n]).expect("decodes"));
    }
    (whole, ms(t.elapsed()))
}

/// SmolLM2-135M-Instruct natively on our kernels, from its GGUF as stored
/// (Q4_1 layers, Q8_0 tied head): prefill of a 50-token prompt and greedy
/// decoding after it, the limit the sharded workers are measured against.
pub fn instruct_rows(runs: usize) -> Vec<(String, String)> {
    let path = support::smollm2_gguf();
    let Ok(bytes) = std::fs::read(&path) else {
        return vec![(
            "SmolLM2-135M-Instruct natively".into(),
            format!(
                "not measured: no {} (run models/smollm2/export.sh)",
                path.display()
            ),
        )];
    };
    let gguf = super::check::pack_gguf::Gguf::parse(&bytes).expect("parses");
    let packed = gguf
        .pack(super::check::pack_gguf::Storage::AsStored)
        .expect("packs");
    let decoder =
        Decoder::parse(edgeinfer_engine::packed::leak_aligned(&packed.bytes)).expect("loads");
    let prompt: Vec<u32> = (0..50).map(|i| 1000 + 37 * i).collect();
    let runs = runs.clamp(1, 5);
    let prefill = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut cache = decoder.new_cache();
                decoder.forward(&mut cache, &prompt).expect("runs");
                ms(t.elapsed())
            })
            .collect(),
    );
    let decode = native_greedy_ms_per_token(&decoder, &prompt, 32, runs);
    vec![
        (
            "SmolLM2-135M-Instruct natively (Q4_1 + Q8_0 as in its GGUF): packed bytes".into(),
            format!("{:.1} MiB", packed.bytes.len() as f64 / 1048576.0),
        ),
        (
            "SmolLM2-135M-Instruct natively: prefill of 50 tokens / greedy ms per token after it"
                .into(),
            format!(
                "{prefill:.0} ms ({:.0} tokens/s) / {decode:.1} ms ({:.1} tokens/s)",
                50.0 * 1000.0 / prefill,
                1000.0 / decode
            ),
        ),
    ]
}

/// The rows of the native decoder measurements above (`scripts/bench
/// --decoder` prints only these).
pub fn native_rows(runs: usize) -> Vec<(String, String)> {
    let mut rows = instruct_rows(runs);
    for past in [16, 200] {
        let (pass, products, norms) = token_parts(past, runs);
        rows.push((
            format!("decoder, one token at position {past}, native: pass / its matrix products / norms + SwiGLU / the rest (rotary, attention, residuals)"),
            format!(
                "{pass:.0} / {products:.0} / {norms:.1} / {:.0} us ({:.0}% outside the products)",
                (pass - products - norms).max(0.0),
                100.0 * (pass - products).max(0.0) / pass
            ),
        ));
    }
    for vocab in [4096, 49152] {
        let (sort, pick) = sampling_us(vocab, runs);
        rows.push((
            format!("sampling per token, vocabulary {vocab}: full sort (before) / top-k 40 selection (now)"),
            format!("{sort:.1} / {pick:.1} us ({:.1}x)", sort / pick),
        ));
    }
    let (whole, window) = reply_decoding_ms(128);
    rows.push((
        "text of a 128-token reply: whole reply decoded per token (before) / two-token window (now)".into(),
        format!("{whole:.2} / {window:.2} ms ({:.1}x)", whole / window),
    ));
    rows
}
