//! The GGUF packer (models/pack_gguf.rs) and the engine's 4-bit blocks on a
//! small synthetic Llama GGUF written here: the file's Q4_1/Q8_0 blocks run
//! close to the same file dequantized to float32, and what the engine does
//! not implement is refused by name.

#[allow(dead_code)]
#[path = "../models/check.rs"]
mod check;

use check::pack_gguf::{Gguf, Storage};
use edgeinfer::decoder::engine::Decoder;
use edgeinfer::packed::leak_aligned;
use gguf_rs_lib::prelude::{GGUFBuilder, GGUFTensorType, MetadataValue};

const DIMS: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const VOCAB: usize = 128;
const LAYERS: usize = 2;

/// Deterministic bytes: a small linear congruential stream.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

fn f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `n` weights as Q4_1 blocks: scale, minimum, 16 bytes of nibbles.
fn q4_1(noise: &mut Noise, n: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n / 32 {
        out.extend(f16(scale * (0.5 + 0.5 * noise.unit().abs()) / 8.0));
        out.extend(f16(-scale * (0.8 + 0.2 * noise.unit())));
        out.extend((0..16).map(|_| noise.next() as u8));
    }
    out
}

/// `n` weights as Q8_0 blocks: scale, 32 int8.
fn q8_0(noise: &mut Noise, n: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n / 32 {
        out.extend(f16(scale / 127.0));
        out.extend((0..32).map(|_| noise.next() as u8));
    }
    out
}

fn norm(noise: &mut Noise) -> Vec<u8> {
    (0..DIMS)
        .flat_map(|_| (1.0 + 0.1 * noise.unit()).to_le_bytes())
        .collect()
}

/// A two-layer Llama GGUF; `edit` may change the builder before it is
/// written, and the tensor named `q5_0` (if any) is stored as Q5_0.
fn synthetic_with(edit: impl FnOnce(GGUFBuilder) -> GGUFBuilder, q5_0: Option<&str>) -> Vec<u8> {
    let mut noise = Noise(7);
    let hd = DIMS / HEADS;
    let kvd = KV_HEADS * hd;
    let meta: [(&str, MetadataValue); 9] = [
        (
            "general.architecture",
            MetadataValue::String("llama".into()),
        ),
        ("llama.block_count", MetadataValue::U32(LAYERS as u32)),
        ("llama.embedding_length", MetadataValue::U32(DIMS as u32)),
        ("llama.feed_forward_length", MetadataValue::U32(FFN as u32)),
        (
            "llama.attention.head_count",
            MetadataValue::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv",
            MetadataValue::U32(KV_HEADS as u32),
        ),
        ("llama.context_length", MetadataValue::U32(64)),
        ("llama.rope.freq_base", MetadataValue::F32(100_000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetadataValue::F32(1e-5),
        ),
    ];
    let mut b = GGUFBuilder::new();
    for (k, v) in meta {
        b = b.add_metadata(k, v);
    }
    let t = |b: GGUFBuilder, name: &str, shape: [usize; 2], kind, data| {
        b.add_tensor(name, shape.iter().map(|&v| v as u64).collect(), kind, data)
            .expect("add tensor")
    };
    let embd = q8_0(&mut noise, DIMS * VOCAB, 1.0);
    b = t(
        b,
        "token_embd.weight",
        [DIMS, VOCAB],
        GGUFTensorType::Q8_0,
        embd,
    );
    for i in 0..LAYERS {
        let n = |part: &str| format!("blk.{i}.{part}.weight");
        let an = norm(&mut noise);
        b = b
            .add_tensor(n("attn_norm"), vec![DIMS as u64], GGUFTensorType::F32, an)
            .expect("norm");
        for (part, cols, rows, scale) in [
            ("attn_q", DIMS, DIMS, 0.3),
            ("attn_k", DIMS, kvd, 0.3),
            ("attn_v", DIMS, kvd, 0.3),
            ("attn_output", DIMS, DIMS, 0.2),
            ("ffn_gate", DIMS, FFN, 0.3),
            ("ffn_up", DIMS, FFN, 0.3),
            ("ffn_down", FFN, DIMS, 0.2),
        ] {
            let (kind, data) = if q5_0 == Some(n(part).as_str()) {
                let data = (0..rows * cols / 32 * 22)
                    .map(|_| noise.next() as u8)
                    .collect();
                (GGUFTensorType::Q5_0, data)
            } else {
                (GGUFTensorType::Q4_1, q4_1(&mut noise, rows * cols, scale))
            };
            b = t(b, &n(part), [cols, rows], kind, data);
        }
        let mn = norm(&mut noise);
        b = b
            .add_tensor(n("ffn_norm"), vec![DIMS as u64], GGUFTensorType::F32, mn)
            .expect("norm");
    }
    let on = norm(&mut noise);
    b = b
        .add_tensor(
            "output_norm.weight",
            vec![DIMS as u64],
            GGUFTensorType::F32,
            on,
        )
        .expect("norm");
    edit(b).build_to_bytes().expect("write GGUF").0
}

fn synthetic(edit: impl FnOnce(GGUFBuilder) -> GGUFBuilder) -> Vec<u8> {
    synthetic_with(edit, None)
}

fn load(bytes: &[u8], storage: Storage) -> Decoder {
    let gguf = Gguf::parse(bytes).expect("parse GGUF");
    let packed = gguf.pack(storage).expect("pack");
    Decoder::parse(leak_aligned(&packed.bytes)).expect("load packed")
}

#[test]
fn blocks_run_close_to_the_file_dequantized() {
    let bytes = synthetic(|b| b);
    let config = Gguf::parse(&bytes).unwrap().config().unwrap();
    assert_eq!(
        (
            config.vocab,
            config.dims,
            config.heads,
            config.kv_heads,
            config.head_dim
        ),
        (VOCAB, DIMS, HEADS, KV_HEADS, DIMS / HEADS)
    );
    assert_eq!(config.rope.theta, 100_000.0);
    let quantized = load(&bytes, Storage::AsStored);
    let float = load(&bytes, Storage::Float32);
    let (mut cq, mut cf) = (quantized.new_cache(), float.new_cache());
    // A prompt in one pass, then tokens one at a time.
    let mut feed: Vec<Vec<u32>> = vec![vec![1, 17, 42, 99, 5, 64]];
    feed.extend([[7], [120], [33]].map(|t| t.to_vec()));
    for tokens in feed {
        let a = quantized.forward(&mut cq, &tokens).unwrap();
        let b = float.forward(&mut cf, &tokens).unwrap();
        let range = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(range > 0.1, "degenerate logits: {range}");
        // Activations rounded per block of 32 (about 1/254 of its largest
        // value), through two layers: a few percent of the logits' range.
        assert!(
            worst <= 0.05 * range,
            "block logits {worst} from float32 (range {range})"
        );
    }
}

fn refusal(edit: impl FnOnce(GGUFBuilder) -> GGUFBuilder) -> String {
    let bytes = synthetic(edit);
    match Gguf::parse(&bytes).and_then(|g| g.pack(Storage::AsStored)) {
        Ok(_) => panic!("packed a GGUF the engine does not implement"),
        Err(e) => e,
    }
}

#[test]
fn what_the_engine_does_not_run_is_refused_by_name() {
    let e =
        refusal(|b| b.add_metadata("general.architecture", MetadataValue::String("gpt2".into())));
    assert!(e.contains("gpt2"), "{e}");
    let e = refusal(|b| {
        b.add_metadata(
            "llama.rope.scaling.type",
            MetadataValue::String("yarn".into()),
        )
    });
    assert!(e.contains("yarn"), "{e}");
    let e = refusal(|b| {
        b.add_tensor(
            "blk.0.attn_q.bias",
            vec![DIMS as u64],
            GGUFTensorType::F32,
            vec![0; DIMS * 4],
        )
        .unwrap()
    });
    assert!(e.contains("blk.0.attn_q.bias"), "{e}");
    let e = refusal(|b| b.add_metadata("llama.block_count", MetadataValue::U32(3)));
    assert!(e.contains("blk.2.attn_norm.weight"), "{e}");
    let e = refusal(|b| b.add_metadata("llama.feed_forward_length", MetadataValue::U32(128)));
    assert!(e.contains("ffn_gate"), "{e}");
}

/// A tensor type without a kernel (Q5_0 here) is named, with the tensor.
#[test]
fn a_tensor_type_without_a_kernel_is_refused() {
    let bytes = synthetic_with(|b| b, Some("blk.1.attn_v.weight"));
    let gguf = Gguf::parse(&bytes).unwrap();
    for storage in [Storage::AsStored, Storage::Float32] {
        let e = gguf.pack(storage).err().expect("packed a Q5_0 tensor");
        assert!(
            e.contains("blk.1.attn_v.weight") && e.contains("Q5_0"),
            "{e}"
        );
    }
}
