//! The GGUF packer (pipeline/src/pack_gguf.rs) and the engine's 4-bit blocks on a
//! small synthetic Llama GGUF written here: the file's Q4_1/Q8_0 blocks run
//! close to the same file dequantized to float32, and what the engine does
//! not implement is refused by name.

use edgeinfer_pipeline as check;

use check::pack_gguf::{Gguf, Storage};
use edgeinfer_engine::decoder::Decoder;
use edgeinfer_engine::packed::leak_aligned;
use gguf_rs_lib::prelude::{GGUFBuilder, GGUFTensorType, MetadataValue};

const DIMS: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const VOCAB: usize = 128;
const LAYERS: usize = 2;

use edgeinfer_engine::testing::Lcg as Noise;

fn f16(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// `n` weights as Q4_1 blocks: scale, minimum, 16 bytes of nibbles.
fn q4_1(noise: &mut Noise, n: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n / 32 {
        out.extend(f16(scale * (0.5 + 0.5 * noise.unit().abs()) / 8.0));
        out.extend(f16(-scale * (0.8 + 0.2 * noise.unit())));
        out.extend((0..16).map(|_| noise.next_u32() as u8));
    }
    out
}

/// `n` weights as Q8_0 blocks: scale, 32 int8.
fn q8_0(noise: &mut Noise, n: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n / 32 {
        out.extend(f16(scale / 127.0));
        out.extend((0..32).map(|_| noise.next_u32() as u8));
    }
    out
}

fn norm(noise: &mut Noise) -> Vec<u8> {
    (0..DIMS)
        .flat_map(|_| (1.0 + 0.1 * noise.unit()).to_le_bytes())
        .collect()
}

/// A two-layer Llama GGUF; `edit` may change the builder before it is
/// written, and the tensor named `iq4_nl` (if any) is stored as IQ4_NL, a
/// type without a kernel (18 bytes per 32 values).
fn synthetic_with(edit: impl FnOnce(GGUFBuilder) -> GGUFBuilder, iq4_nl: Option<&str>) -> Vec<u8> {
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
            let (kind, data) = if iq4_nl == Some(n(part).as_str()) {
                let data = (0..rows * cols / 32 * 18)
                    .map(|_| noise.next_u32() as u8)
                    .collect();
                (GGUFTensorType::IQ4_NL, data)
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

/// A tensor type without a kernel (IQ4_NL here) is named, with the tensor.
#[test]
fn a_tensor_type_without_a_kernel_is_refused() {
    let bytes = synthetic_with(|b| b, Some("blk.1.attn_v.weight"));
    let gguf = Gguf::parse(&bytes).unwrap();
    for storage in [Storage::AsStored, Storage::Float32] {
        let e = gguf.pack(storage).err().expect("packed an IQ4_NL tensor");
        assert!(
            e.contains("blk.1.attn_v.weight") && e.contains("IQ4_NL"),
            "{e}"
        );
    }
}

mod planning {
    use super::check::pack_gguf::packed_bytes;
    use super::check::plan::{plan, plan_split, Budget, Costs, Shard, SplitPlan, MOST_WORKERS};
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Cloudflare's limits, with the code and runtime this crate measures
    /// (bench: module code 3.4 MiB, an empty isolate's heap a few MiB).
    fn budget(context: usize, sessions: usize) -> Budget {
        Budget {
            isolate_bytes: 128 * MIB,
            worker_bytes: 64 * MIB,
            code_bytes: 4 * MIB,
            runtime_bytes: 8 * MIB,
            context,
            sessions,
        }
    }

    /// A Llama shape in Q4_1 with a Q8_0 embedding (tied unless `untied`).
    fn llama(layers: usize, d: usize, ffn: usize, kv: usize, vocab: usize, untied: bool) -> Costs {
        let q4 = |n: usize| packed_bytes(GGUFTensorType::Q4_1, n as u64).unwrap();
        let q8 = |n: usize| packed_bytes(GGUFTensorType::Q8_0, n as u64).unwrap();
        let layer = 2 * 4 * d as u64 + q4(2 * d * d + 2 * d * kv + 3 * d * ffn);
        Costs {
            embedding: q8(vocab * d),
            head: untied.then(|| q8(vocab * d)),
            final_norm: 4 * d as u64,
            layers: vec![layer; layers],
            kv_per_token: 2 * kv as u64 * 4,
            stage: 128 * 40 * d as u64,
            logits: 2 * 16 * 4 * vocab as u64,
        }
    }

    /// Every layer once, in order; the embedding first and the head last;
    /// every isolate and Worker within its limits; and no two neighbours
    /// could be one shard (the plan is not longer than it must be).
    fn check(costs: &Costs, b: &Budget, shards: &[Shard]) {
        let mut next = 0;
        for s in shards {
            assert_eq!(s.layers.start, next, "{shards:?}");
            next = s.layers.end;
            assert!(s.memory <= b.isolate_bytes, "{s:?}");
            assert!(s.weights + b.code_bytes <= b.worker_bytes, "{s:?}");
        }
        assert_eq!(next, costs.layers.len());
        assert!(shards[0].embedding && shards.last().unwrap().head);
        assert_eq!(shards.iter().filter(|s| s.embedding).count(), 1);
        assert_eq!(shards.iter().filter(|s| s.head).count(), 1);
        let total: u64 = shards.iter().map(|s| s.weights).sum();
        let tied_twice = if shards.len() > 1 && costs.head.is_none() {
            costs.embedding
        } else {
            0
        };
        let layers: u64 = costs.layers.iter().sum();
        assert_eq!(
            total,
            layers + costs.embedding + costs.head.unwrap_or(0) + costs.final_norm + tied_twice
        );
        for pair in shards.windows(2) {
            let merged = 2 * (pair[0].weights + pair[1].weights)
                + b.code_bytes
                + b.runtime_bytes
                + (pair[0].memory + pair[1].memory
                    - 2 * (pair[0].weights + pair[1].weights)
                    - 2 * (b.code_bytes + b.runtime_bytes));
            assert!(
                merged > b.isolate_bytes
                    || pair[0].weights + pair[1].weights + b.code_bytes > b.worker_bytes,
                "{pair:?} would fit one isolate"
            );
        }
    }

    #[test]
    fn smollm2_135m_from_its_file_shape() {
        // 30 layers, d 576, ffn 1536, 3 kv heads of 64, vocabulary 49152.
        let costs = llama(30, 576, 1536, 192, 49152, false);
        for (context, sessions) in [(2048, 1), (2048, 4), (8192, 1)] {
            let b = budget(context, sessions);
            let shards = plan(&costs, &b).unwrap();
            check(&costs, &b, &shards);
            assert!(shards.len() >= 2, "98 MB of weights in one 128 MB isolate");
        }
        // More context or sessions never means fewer shards.
        let a = plan(&costs, &budget(1024, 1)).unwrap().len();
        let z = plan(&costs, &budget(8192, 4)).unwrap().len();
        assert!(a <= z, "{a} vs {z}");
    }

    #[test]
    fn a_second_shape_smollm2_360m() {
        // 32 layers, d 960, ffn 2560, 5 kv heads of 64, vocabulary 49152.
        let costs = llama(32, 960, 2560, 320, 49152, false);
        let b = budget(2048, 1);
        let shards = plan(&costs, &b).unwrap();
        check(&costs, &b, &shards);
        assert!(shards.len() >= 5, "{} shards for ~300 MB", shards.len());
    }

    /// TinyLlama-1.1B's untied Q8_0 embedding (32000 x 2048, 70 MB) is over
    /// one Worker by itself: refused by name by the layer planner; the
    /// split planner cuts its vocabulary instead.
    #[test]
    fn an_embedding_over_one_worker_is_named() {
        let costs = llama(22, 2048, 5632, 256, 32000, true);
        let e = plan(&costs, &budget(2048, 1)).unwrap_err();
        assert!(e.contains("the embedding"), "{e}");
        let split = plan_split(&costs, &budget(2048, 1), 32000).unwrap();
        check_split(&costs, &budget(2048, 1), &split, 32000);
    }

    /// Every row once in order, every layer once in order, every isolate
    /// and Worker within its limits, no slice that could be dropped (one
    /// fewer does not fit), and within the Workers a request may reach.
    fn check_split(costs: &Costs, b: &Budget, split: &SplitPlan, vocab: usize) {
        let mut next = 0;
        for v in &split.vocab {
            assert_eq!(v.rows.start, next, "{split:?}");
            next = v.rows.end;
            assert!(
                v.memory <= b.isolate_bytes && v.weights + b.code_bytes <= b.worker_bytes,
                "{v:?}"
            );
        }
        assert_eq!(next, vocab);
        let mut next = 0;
        for s in &split.layers {
            assert_eq!(s.layers.start, next);
            next = s.layers.end;
            assert!(!s.embedding && !s.head);
            assert!(
                s.memory <= b.isolate_bytes && s.weights + b.code_bytes <= b.worker_bytes,
                "{s:?}"
            );
        }
        assert_eq!(next, costs.layers.len());
        assert!(split.workers() <= MOST_WORKERS);
        if split.vocab.len() > 1 {
            let fewer = split.vocab.len() - 1;
            let rows = vocab.div_ceil(fewer) as u64;
            let weights = ((costs.embedding + costs.head.unwrap_or(0)) * rows)
                .div_ceil(vocab as u64)
                + costs.final_norm;
            let logits = (costs.logits * rows).div_ceil(vocab as u64);
            assert!(
                2 * weights + b.code_bytes + b.runtime_bytes + costs.stage + logits
                    > b.isolate_bytes
                    || weights + b.code_bytes > b.worker_bytes,
                "{fewer} slices would do"
            );
        }
    }

    /// Qwen2.5-Coder-0.5B-Instruct from its own file (151,936 x 896 Q8_0
    /// tied embedding, 145 MB; 24 layers of Q5_0 / Q4_K / Q6_K) and the
    /// 1.5B's shape as its Q4_K_M file has it (28 layers, d 1536, ffn 8960;
    /// a Q4_K embedding and a Q6_K head, 322 MB; Q6_K attn_v and ffn_down in
    /// 14 layers): planned with SmolLM2's shard budget (context 1024, two
    /// conversations). The 0.5B takes 5 slices and 5 layer shards. The
    /// 1.5B's layers (26-30 MB, held twice: the module's bytes and the
    /// linear memory they are copied into) fit two to an isolate only when
    /// both are the smaller kind and the window is 32 rows (engine
    /// `stage_rows`; at 128 rows no two fit): at two conversations that is
    /// still over the 32 Workers a request may reach, refused with the
    /// count; at one, 6 slices and 22 layer shards, 29 Workers (what
    /// scripts/add-model plans for the real file).
    #[test]
    fn qwen_plans_with_its_vocabulary_cut() {
        let path = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/qwen2.5-coder-0.5b/fetch.py"
            ))
            .output()
            .expect("fetch.py");
        assert!(
            path.status.success(),
            "{}",
            String::from_utf8_lossy(&path.stderr)
        );
        let bytes = std::fs::read(String::from_utf8(path.stdout).unwrap().trim()).unwrap();
        let gguf = Gguf::parse(&bytes).unwrap();
        let costs = gguf.costs().unwrap();
        let b = budget(1024, 2);
        assert!(plan(&costs, &b).unwrap_err().contains("the embedding"));
        let small = plan_split(&costs, &b, 151_936).unwrap();
        check_split(&costs, &b, &small, 151_936);
        let k = |n: usize| packed_bytes(GGUFTensorType::Q4_K, n as u64).unwrap();
        let q6 = |n: usize| packed_bytes(GGUFTensorType::Q6_K, n as u64).unwrap();
        let (d, ffn, kv) = (1536, 8960, 256);
        // Q4_K_M as in the 1.5B's file: Q4_K but for attn_v and ffn_down,
        // Q6_K in these layers.
        const MORE_BITS: [usize; 14] = [0, 1, 5, 6, 7, 8, 9, 10, 13, 16, 19, 21, 24, 27];
        let layer = |i: usize| {
            let wide = |n: usize| if MORE_BITS.contains(&i) { q6(n) } else { k(n) };
            (2 * d + d + 2 * kv) as u64 * 4
                + k(2 * d * d + d * kv + 2 * d * ffn)
                + wide(d * kv)
                + wide(ffn * d)
        };
        let window = 32 * (4 * (3 * d + 2 * d + 2 * kv + 2 * ffn + ffn + 2 * d)) as u64;
        let large = Costs {
            embedding: k(151_936 * d),
            head: Some(q6(151_936 * d)),
            layers: (0..28).map(layer).collect(),
            kv_per_token: 2 * kv as u64 * 4,
            stage: window,
            logits: 2 * 16 * 4 * 151_936,
            ..costs.clone()
        };
        let e = plan_split(&large, &b, 151_936).unwrap_err();
        assert!(e.contains("over the 32"), "{e}");
        let lean = budget(1024, 1);
        let large_plan = plan_split(&large, &lean, 151_936).unwrap();
        check_split(&large, &lean, &large_plan, 151_936);
        assert_eq!(
            (
                large_plan.vocab.len(),
                large_plan.layers.len(),
                large_plan.workers()
            ),
            (6, 22, 29)
        );
        assert_eq!((small.vocab.len(), small.layers.len()), (5, 5));
        for (name, p) in [
            ("0.5B", &small),
            ("1.5B at 1024 tokens, one conversation", &large_plan),
        ] {
            println!(
                "{name}: {} vocabulary shards ({:?} MB), {} layer shards ({:?}), {} Workers a request",
                p.vocab.len(),
                p.vocab.iter().map(|v| v.memory >> 20).collect::<Vec<_>>(),
                p.layers.len(),
                p.layers.iter().map(|s| (s.layers.clone(), s.memory >> 20)).collect::<Vec<_>>(),
                p.workers()
            );
        }
    }

    #[test]
    fn a_model_that_fits_is_one_shard_and_too_big_a_layer_is_named() {
        let costs = llama(2, 64, 96, 32, 128, false);
        let shards = plan(&costs, &budget(64, 1)).unwrap();
        assert_eq!(shards.len(), 1);
        assert!(shards[0].embedding && shards[0].head);
        // Tied: one copy of the embedding when one shard holds both ends.
        assert_eq!(
            shards[0].weights,
            costs.layers.iter().sum::<u64>() + costs.embedding + costs.final_norm
        );
        let huge = llama(4, 8192, 28672, 1024, 128256, true);
        let e = plan(&huge, &budget(2048, 1)).unwrap_err();
        assert!(e.contains("layer 0"), "{e}");
    }

    /// The planner reads its costs from a GGUF as the packer packs it.
    #[test]
    fn costs_from_a_file_match_what_is_packed() {
        let bytes = synthetic(|b| b);
        let gguf = Gguf::parse(&bytes).unwrap();
        let costs = gguf.costs().unwrap();
        let packed = gguf.pack(Storage::AsStored).unwrap();
        let total: u64 = costs.layers.iter().sum::<u64>() + costs.embedding + costs.final_norm;
        let size = packed.bytes.len() as u64;
        // The container adds its header and 16-byte alignment only.
        assert!(
            size >= total && size - total < 16 * 1024,
            "{size} vs {total}"
        );
        assert_eq!(costs.kv_per_token, 2 * 32 * 4);
    }
}

/// Llama 3.1 / 3.2's rope scaling as llama.cpp's converter writes it (a
/// `rope_freqs.weight` of `head_dim / 2` factors) and a linear scaling
/// (`rope.scaling.type = "linear"`, every frequency divided by its factor)
/// are both read: factors of 1 change nothing (bit for bit), others change
/// the logits, and a linear factor equals the same factor given per
/// frequency. Yarn stays refused (above), and a factor of 0 is refused.
#[test]
fn rope_scaling_factors_are_read() {
    let half = DIMS / HEADS / 2;
    let freqs = |values: Vec<f32>| {
        move |b: GGUFBuilder| {
            b.add_tensor(
                "rope_freqs.weight",
                vec![half as u64],
                GGUFTensorType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
            .unwrap()
        }
    };
    let logits = |bytes: Vec<u8>| {
        let d = load(&bytes, Storage::AsStored);
        d.forward(&mut d.new_cache(), &[1, 17, 42, 99, 5, 64, 7, 120])
            .unwrap()
    };
    let plain = logits(synthetic(|b| b));
    assert_eq!(logits(synthetic(freqs(vec![1.0; half]))), plain);
    let stretched: Vec<f32> = (0..half).map(|i| 1.0 + 4.0 * i as f32).collect();
    let llama3 = logits(synthetic(freqs(stretched)));
    let moved = llama3
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-3, "the factors changed nothing ({moved})");
    let linear = logits(synthetic(|b| {
        b.add_metadata(
            "llama.rope.scaling.type",
            MetadataValue::String("linear".into()),
        )
        .add_metadata("llama.rope.scaling.factor", MetadataValue::F32(4.0))
    }));
    assert_eq!(linear, logits(synthetic(freqs(vec![4.0; half]))));
    assert_ne!(linear, plain);
    let e = refusal(freqs(vec![0.0; half]));
    assert!(e.contains("rope frequency factor"), "{e}");
    let e = refusal(|b| {
        b.add_metadata(
            "llama.rope.scaling.type",
            MetadataValue::String("linear".into()),
        )
    });
    assert!(e.contains("rope.scaling.factor"), "{e}");
}

/// A vocabulary cut by rows across slices (`Gguf::pack_vocab_slice`,
/// `edgeinfer_engine::decoder::vocab`), with the layers in a part that takes
/// hidden states, gives the whole model's logits bit for bit: each token's
/// embedding from the slice holding its row, each slice's logits for the
/// final hidden state side by side, and the slices' best candidates merged
/// equal to the best of the whole row. Tied (the synthetic file has no
/// output.weight) and untied heads; slices of uneven sizes, cut inside a
/// panel of four rows.
#[test]
fn a_vocabulary_cut_across_slices_gives_the_whole_models_logits() {
    use check::pack_gguf::Packed;
    use edgeinfer_engine::decoder::format::Part;
    use edgeinfer_engine::decoder::vocab::VocabSlice;
    use edgeinfer_engine::decoder::{best, merge, StageInput};

    let untied = |b: GGUFBuilder| {
        let mut noise = Noise(99);
        b.add_tensor(
            "output.weight",
            vec![DIMS as u64, VOCAB as u64],
            GGUFTensorType::Q8_0,
            q8_0(&mut noise, DIMS * VOCAB, 1.0),
        )
        .unwrap()
    };
    for (tied, bytes) in [(true, synthetic(|b| b)), (false, synthetic(untied))] {
        let gguf = Gguf::parse(&bytes).unwrap();
        let whole = load(&bytes, Storage::AsStored);
        let cuts = [0..50, 50..103, 103..VOCAB];
        let slices: Vec<VocabSlice> = cuts
            .iter()
            .map(|r| {
                let packed = gguf.pack_vocab_slice(Storage::AsStored, r.clone()).unwrap();
                VocabSlice::parse(leak_aligned(&packed)).unwrap()
            })
            .collect();
        let layers = Part {
            model_layers: LAYERS,
            first_layer: 0,
            end_layer: LAYERS,
            embeds: false,
            predicts: false,
        };
        let Packed { bytes: part, .. } = gguf.pack_part(Storage::AsStored, layers, 64).unwrap();
        let layers = Decoder::parse(leak_aligned(&part)).unwrap();
        let (mut whole_cache, mut cache) = (whole.new_cache(), layers.new_cache());
        for tokens in [
            vec![1u32, 17, 42, 99, 5, 64, 127, 50, 49, 103],
            vec![7],
            vec![102],
        ] {
            let want = whole.forward(&mut whole_cache, &tokens).unwrap();
            let mut x = Vec::new();
            for &t in &tokens {
                let slice = slices
                    .iter()
                    .find(|s| s.rows().contains(&(t as usize)))
                    .unwrap();
                x.extend(slice.embed(&[t]).unwrap());
            }
            let hidden = layers.stage(&mut cache, StageInput::Hidden(&x)).unwrap();
            let last = &hidden[hidden.len() - DIMS..];
            let got: Vec<f32> = slices
                .iter()
                .flat_map(|s| s.logits(last).unwrap())
                .collect();
            assert_eq!(got, want, "tied {tied}: logits");
            let each: Vec<_> = slices
                .iter()
                .map(|s| s.best(last, 5).unwrap().remove(0))
                .collect();
            assert_eq!(merge(&each, 5), best(&want, 5), "tied {tied}: best");
        }
        // A token outside a slice's rows is refused by it.
        assert!(slices[0].embed(&[50]).is_err());
        assert!(gguf
            .pack_vocab_slice(Storage::AsStored, 100..VOCAB + 1)
            .is_err());
    }
}
