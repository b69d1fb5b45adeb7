//! The engine on synthetic weights, against a plain float64 transcription of
//! the architecture that recomputes the whole sequence (no cache, no
//! kernels): every weight format, both rotary styles, tied and untied heads,
//! prompts fed whole or in chunks.

use super::*;
use crate::decoder::format::{Layer, Matrix as MatrixSpec, Part, Rope};
use crate::kernels::blocks::BLOCK;
use crate::kernels::panels::{dequantize, f16_to_f32, PanelKind, Panels};
use crate::packed::{leak_aligned, Packer};

use crate::testing::Lcg;

/// Dense float64 weights of one model, `rows x cols` row-major per matrix.
struct Model {
    c: Config,
    embedding: Vec<f64>,
    head: Option<Vec<f64>>,
    final_norm: Vec<f64>,
    layers: Vec<[Vec<f64>; 9]>,
    /// Per layer, q, k and v's biases (Qwen2), or none.
    biases: Vec<Option<[Vec<f64>; 3]>>,
    /// What each rotary frequency is divided by (Llama 3.1's), or none.
    rope_factors: Option<Vec<f64>>,
}

#[derive(Clone, Copy, Debug)]
enum Format {
    F32,
    I8,
    Q8,
    Q4_1,
    /// Random GGUF blocks of the kind's type, kept in panels.
    Blocks(PanelKind),
}

/// `n` values of random GGUF blocks of `kind`'s type, scaled so weights
/// are a few tenths at most (f16 scales set, codes and 6-bit scales random).
fn random_blocks(r: &mut Lcg, kind: PanelKind, n: usize) -> Vec<u8> {
    let t = kind.gguf();
    let mut out = Vec::new();
    for _ in 0..n / t.span() {
        let start = out.len();
        out.extend((0..t.block_bytes()).map(|_| ((r.unit() + 1.0) * 128.0) as u8));
        let b = &mut out[start..];
        let mut put = |at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16_bits(v).to_le_bytes());
        match kind {
            PanelKind::Q8 => put(0, 0.3 / 127.0),
            PanelKind::Q4_0 | PanelKind::Q5_0 => put(0, 0.3 / 16.0),
            PanelKind::Q4_1 | PanelKind::Q5_1 => {
                put(0, 0.3 / 31.0);
                put(2, -0.15);
            }
            PanelKind::Q4K | PanelKind::Q5K => {
                put(0, 0.3 / 31.0 / 63.0);
                put(2, 0.15 / 63.0);
            }
            PanelKind::Q6K => put(208, 0.3 / 32.0 / 128.0),
        }
    }
    out
}

/// f16 bits of `v` rounded toward zero (the reference then uses the f16
/// value itself, so only representability matters). Normal values only.
fn f16_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let b = v.to_bits();
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!((1..31).contains(&exp), "{v} is not a normal f16");
    ((b >> 16) & 0x8000) as u16 | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

/// GGUF Q4_1 blocks of `values` (a row's runs of 32: scale = range / 15,
/// minimum = the run's smallest value, both on f16's grid), and the
/// dequantized values the reference must then use.
fn quantize_q4_1(values: &[f32]) -> (Vec<u8>, Vec<f64>) {
    let (mut bytes, mut dequant) = (Vec::new(), Vec::new());
    for chunk in values.chunks_exact(BLOCK) {
        let lo = chunk.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let hi = chunk.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let (d, m) = (f16_bits((hi - lo) / 15.0), f16_bits(lo));
        let (df, mf) = (f16_to_f32(d), f16_to_f32(m));
        let q: Vec<u8> = chunk
            .iter()
            .map(|&v| ((v - mf) / df).round().clamp(0.0, 15.0) as u8)
            .collect();
        bytes.extend(d.to_le_bytes());
        bytes.extend(m.to_le_bytes());
        bytes.extend((0..16).map(|i| q[i] | (q[i + 16] << 4)));
        dequant.extend(q.iter().map(|&q| f64::from(f32::from(q) * df + mf)));
    }
    (bytes, dequant)
}

/// Symmetric int8 with one scale per `group` values: (q, scales, the
/// dequantized values the reference must then use).
fn quantize(values: &[f32], group: usize) -> (Vec<i8>, Vec<f32>, Vec<f64>) {
    let (mut q, mut scales, mut dequant) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in values.chunks_exact(group) {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        scales.push(s);
        for &v in chunk {
            let qi = (v / s).round().clamp(-127.0, 127.0) as i8;
            q.push(qi);
            dequant.push(f64::from(f32::from(qi) * s));
        }
    }
    (q, scales, dequant)
}

/// Packs `rows x cols` values in format `f`; the returned values are what
/// the reference must use (quantized ones dequantized).
fn pack_matrix(
    p: &mut Packer,
    values: &[f32],
    rows: usize,
    cols: usize,
    f: Format,
) -> (MatrixSpec, Vec<f64>) {
    let (weights, used) = match f {
        Format::F32 => (
            Weights::F32 {
                values: p.push_f32(values),
            },
            values.iter().map(|&v| f64::from(v)).collect(),
        ),
        Format::I8 => {
            let (q, scales, dequant) = quantize(values, cols);
            let (values, scales) = (p.push_i8(&q), p.push_f32(&scales));
            (Weights::I8Rows { values, scales }, dequant)
        }
        Format::Q8 => {
            let (q, scales, dequant) = quantize(values, BLOCK);
            let panels = Panels::pack_q8(&q, &scales, rows, cols);
            let panels = p.push(&panels, panels.len());
            (Weights::Q8Panels { panels }, dequant)
        }
        Format::Q4_1 => {
            let (gguf, dequant) = quantize_q4_1(values);
            let panels = Panels::pack_q4_1(&gguf, rows, cols).unwrap();
            let panels = p.push(&panels, panels.len());
            (Weights::Q4_1Panels { panels }, dequant)
        }
        Format::Blocks(kind) => {
            // The values only seed the blocks: random codes stand in.
            let mut r = Lcg(values[0].to_bits().into());
            let gguf = random_blocks(&mut r, kind, rows * cols);
            let dequant = dequantize(kind.gguf(), &gguf, rows * cols).unwrap();
            let panels = Panels::pack(kind, &gguf, rows, cols).unwrap();
            let panels = p.push(&panels, panels.len());
            (
                Weights::Panels { kind, panels },
                dequant.iter().map(|&v| f64::from(v)).collect(),
            )
        }
    };
    (
        MatrixSpec {
            rows,
            cols,
            weights,
        },
        used,
    )
}

fn build(c: Config, layers: usize, tied: bool, f: Format, seed: u64) -> (Decoder, Model) {
    load(pack(c, layers, tied, f, seed))
}

/// The decoder of a packed model (from [`pack`] or [`pack_with`]), and its
/// transcription.
fn load((p, header, model): (Packer, Header, Model)) -> (Decoder, Model) {
    let bytes = leak_aligned(&p.finish(MAGIC, &header).unwrap());
    (Decoder::parse(bytes).unwrap(), model)
}

/// A random model's packed data and whole-model header, and its float64
/// transcription.
fn pack(c: Config, layers: usize, tied: bool, f: Format, seed: u64) -> (Packer, Header, Model) {
    pack_with(c, layers, tied, f, seed, false)
}

/// As [`pack`], with biases on q, k and v when `biased` (Qwen2's block).
fn pack_with(
    c: Config,
    layers: usize,
    tied: bool,
    f: Format,
    seed: u64,
    biased: bool,
) -> (Packer, Header, Model) {
    let mut r = Lcg(seed);
    let mut p = Packer::default();
    let (d, qd, kvd) = (c.dims, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let (embedding_spec, embedding) = pack_matrix(&mut p, &r.vec(c.vocab * d, 1.0), c.vocab, d, f);
    let mut specs = Vec::new();
    let mut dense = Vec::new();
    let mut biases = Vec::new();
    for _ in 0..layers {
        let bias = biased.then(|| [r.vec(qd, 0.5), r.vec(kvd, 0.5), r.vec(kvd, 0.5)]);
        let norm1 = r.vec(d, 0.5).iter().map(|v| v + 1.0).collect::<Vec<_>>();
        let norm2 = r.vec(d, 0.5).iter().map(|v| v + 1.0).collect::<Vec<_>>();
        let mut m =
            |rows: usize, cols: usize| pack_matrix(&mut p, &r.vec(rows * cols, 0.3), rows, cols, f);
        let (q, qv) = m(qd, d);
        let (k, kv) = m(kvd, d);
        let (v, vv) = m(kvd, d);
        let (o, ov) = m(d, qd);
        let (gate, gv) = m(c.ffn, d);
        let (up, uv) = m(c.ffn, d);
        let (down, dv) = m(d, c.ffn);
        let to64 = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
        dense.push([to64(&norm1), qv, kv, vv, ov, to64(&norm2), gv, uv, dv]);
        let spans = bias.as_ref().map(|b| b.each_ref().map(|b| p.push_f32(b)));
        biases.push(bias.map(|b| b.map(|b| to64(&b))));
        specs.push(Layer {
            attention_norm: p.push_f32(&norm1),
            q,
            k,
            v,
            q_bias: spans.map(|s| s[0]),
            k_bias: spans.map(|s| s[1]),
            v_bias: spans.map(|s| s[2]),
            o,
            mlp_norm: p.push_f32(&norm2),
            gate,
            up,
            down,
        });
    }
    let final_norm: Vec<f32> = r.vec(d, 0.5).iter().map(|v| v + 1.0).collect();
    let final_span = p.push_f32(&final_norm);
    let (head_spec, head) = if tied {
        (None, None)
    } else {
        let (s, v) = pack_matrix(&mut p, &r.vec(c.vocab * d, 1.0), c.vocab, d, f);
        (Some(s), Some(v))
    };
    let header = Header {
        config: c,
        part: Part::whole(layers),
        embedding: Some(embedding_spec),
        layers: specs,
        final_norm: Some(final_span),
        head: head_spec,
        rope_factors: None,
    };
    let model = Model {
        c,
        embedding,
        head,
        final_norm: final_norm.iter().map(|&v| f64::from(v)).collect(),
        layers: dense,
        biases,
        rope_factors: None,
    };
    (p, header, model)
}

/// The shard of `whole` holding `layers`, over the same packed data.
fn shard(p: &Packer, whole: &Header, layers: std::ops::Range<usize>) -> Decoder {
    let n = whole.layers.len();
    let part = Part {
        model_layers: n,
        first_layer: layers.start,
        end_layer: layers.end,
        embeds: layers.start == 0,
        predicts: layers.end == n,
    };
    let tied = whole.head.is_none();
    let header = Header {
        config: whole.config,
        part,
        embedding: (part.embeds || (part.predicts && tied))
            .then(|| whole.embedding.clone())
            .flatten(),
        layers: whole.layers[layers].to_vec(),
        final_norm: whole.final_norm.filter(|_| part.predicts),
        head: whole.head.clone().filter(|_| part.predicts),
        rope_factors: None,
    };
    Decoder::parse(leak_aligned(&p.clone().finish(MAGIC, &header).unwrap())).unwrap()
}

fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rms(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let den = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v / den * w).collect()
}

fn rotate(x: &mut [f64], pos: usize, c: &Config, factors: Option<&[f64]>) {
    let hd = c.head_dim;
    for head in x.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let factor = factors.map_or(1.0, |f| f[i]);
            let a = pos as f64 / c.rope.theta.powf(2.0 * i as f64 / hd as f64) / factor;
            let (p, q) = match c.rope.style {
                RopeStyle::HalfSplit => (i, i + hd / 2),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (xp, xq) = (head[p], head[q]);
            head[p] = xp * a.cos() - xq * a.sin();
            head[q] = xq * a.cos() + xp * a.sin();
        }
    }
}

/// Logits after the last of `tokens`, the whole sequence recomputed.
fn reference(m: &Model, tokens: &[u32]) -> Vec<f64> {
    let c = &m.c;
    let (d, hd) = (c.dims, c.head_dim);
    let eps = f64::from(c.norm_eps);
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| m.embedding[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    for (l, bias) in m.layers.iter().zip(&m.biases) {
        let hs: Vec<Vec<f64>> = xs.iter().map(|x| rms(x, &l[0], eps)).collect();
        let biased = |w: &[f64], h: &[f64], b: usize| {
            let mut y = matvec(w, h);
            if let Some(bias) = bias {
                y.iter_mut().zip(&bias[b]).for_each(|(y, b)| *y += b);
            }
            y
        };
        let mut qs: Vec<Vec<f64>> = hs.iter().map(|h| biased(&l[1], h, 0)).collect();
        let mut ks: Vec<Vec<f64>> = hs.iter().map(|h| biased(&l[2], h, 1)).collect();
        let vs: Vec<Vec<f64>> = hs.iter().map(|h| biased(&l[3], h, 2)).collect();
        for (pos, (q, k)) in qs.iter_mut().zip(&mut ks).enumerate() {
            rotate(q, pos, c, m.rope_factors.as_deref());
            rotate(k, pos, c, m.rope_factors.as_deref());
        }
        for (i, x) in xs.iter_mut().enumerate() {
            let mut att = vec![0.0; c.heads * hd];
            for h in 0..c.heads {
                let kv = h / (c.heads / c.kv_heads);
                let q = &qs[i][h * hd..(h + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|t| {
                        q.iter()
                            .zip(&ks[t][kv * hd..(kv + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (t, p) in e.iter().enumerate() {
                    for j in 0..hd {
                        att[h * hd + j] += p / z * vs[t][kv * hd + j];
                    }
                }
            }
            for (a, b) in x.iter_mut().zip(matvec(&l[4], &att)) {
                *a += b;
            }
            let h2 = rms(x, &l[5], eps);
            let gate = matvec(&l[6], &h2);
            let up = matvec(&l[7], &h2);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            for (a, b) in x.iter_mut().zip(matvec(&l[8], &act)) {
                *a += b;
            }
        }
    }
    let h = rms(xs.last().unwrap(), &m.final_norm, eps);
    matvec(m.head.as_ref().unwrap_or(&m.embedding), &h)
}

fn config(style: RopeStyle) -> Config {
    Config {
        vocab: 52,
        dims: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        ffn: 64,
        context: 32,
        norm_eps: 1e-5,
        rope: Rope {
            theta: 500.0,
            style,
        },
    }
}

fn worst(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

/// Two models in each of two formats: both rope styles, tied and untied
/// heads, seeds counted from `seed`.
fn four_models(formats: [Format; 2], seed: u64) -> [(RopeStyle, bool, Format, u64); 4] {
    [
        (RopeStyle::HalfSplit, true, formats[0], seed),
        (RopeStyle::Interleaved, false, formats[0], seed + 1),
        (RopeStyle::HalfSplit, false, formats[1], seed + 2),
        (RopeStyle::Interleaved, true, formats[1], seed + 3),
    ]
}

/// Our logits for `tokens` and the float64 transcription's, on a fresh
/// two-layer model of this shape, with the transcription's largest |logit|
/// (the scale a tolerance is relative to).
fn both_logits(
    style: RopeStyle,
    tied: bool,
    f: Format,
    seed: u64,
    tokens: &[u32],
) -> (Vec<f32>, Vec<f64>, f64) {
    let (decoder, model) = build(config(style), 2, tied, f, seed);
    let mut cache = decoder.new_cache();
    let logits = decoder.forward(&mut cache, tokens).unwrap();
    assert_eq!(cache.len(), tokens.len());
    let want = reference(&model, tokens);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    (logits, want, scale)
}

/// Llama 3.1's rope scaling as GGUF files carry it (`rope_freqs.weight`):
/// each pair's frequency divided by its factor, in both rope styles; and
/// the factors matter (the same model without them is far off).
#[test]
fn rope_factors_divide_each_frequency() {
    let tokens: Vec<u32> = (0..13).map(|i| (i * 3 + 2) % 52).collect();
    for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
        let (mut p, mut header, mut model) = pack(config(style), 2, true, Format::F32, 21);
        let plain = load((
            p.clone(),
            header.clone(),
            pack(config(style), 2, true, Format::F32, 21).2,
        ))
        .0;
        let factors = [1.0f32, 2.5, 8.0, 32.0];
        header.rope_factors = Some(p.push_f32(&factors));
        model.rope_factors = Some(factors.iter().map(|&f| f64::from(f)).collect());
        let (decoder, model) = load((p, header, model));
        let logits = decoder.forward(&mut decoder.new_cache(), &tokens).unwrap();
        let want = reference(&model, &tokens);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            worst(&logits, &want) <= 1e-4 * scale,
            "{style:?}: {}",
            worst(&logits, &want)
        );
        let without = plain.forward(&mut plain.new_cache(), &tokens).unwrap();
        assert!(
            worst(&without, &want) > 1e-2 * scale,
            "{style:?}: the factors changed nothing"
        );
    }
}

#[test]
fn matches_the_float64_transcription_in_every_format() {
    let tokens: Vec<u32> = (0..11).map(|i| (i * 7 + 3) % 52).collect();
    for (style, tied, f, seed) in four_models([Format::F32, Format::I8], 1) {
        let (logits, want, scale) = both_logits(style, tied, f, seed, &tokens);
        assert!(scale > 0.1, "logits are not trivial");
        assert!(
            worst(&logits, &want) <= 1e-4 * scale,
            "{style:?} tied={tied}: {}",
            worst(&logits, &want)
        );
    }
}

/// Block formats quantize the activations too (per block of 32, int16):
/// the logits follow the float64 transcription of the same weights to that
/// rounding, within half a percent of their range, and are not identical.
#[test]
fn block_formats_follow_the_transcription_within_activation_rounding() {
    let tokens: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 52).collect();
    for (style, tied, f, seed) in four_models([Format::Q8, Format::Q4_1], 7) {
        let (logits, want, scale) = both_logits(style, tied, f, seed, &tokens);
        let err = worst(&logits, &want);
        println!("{f:?} {style:?}: max |logit diff| {err:.2e} of {scale:.2}");
        assert!(
            err <= 0.005 * scale && err > 1e-7,
            "{style:?}: {err} of {scale}"
        );
    }
}

/// Every GGUF block format in panels, and Qwen2's biases on q, k and v:
/// the engine follows the float64 transcription of the same weights (the
/// file's blocks dequantized) within the activations' rounding. The K
/// formats' blocks span 256 columns, so their model is 256 wide.
#[test]
fn every_gguf_format_and_qkv_biases_follow_the_transcription() {
    let tokens: Vec<u32> = (0..7).map(|i| (i * 5 + 2) % 52).collect();
    let wide = Config {
        dims: 256,
        head_dim: 64,
        ffn: 256,
        ..config(RopeStyle::HalfSplit)
    };
    for (i, kind) in PanelKind::ALL.into_iter().enumerate() {
        for biased in [false, true] {
            let c = match kind.span() {
                32 => config(RopeStyle::HalfSplit),
                _ => wide,
            };
            let (decoder, model) = load(pack_with(
                c,
                2,
                i % 2 == 0,
                Format::Blocks(kind),
                40 + i as u64,
                biased,
            ));
            let logits = decoder.forward(&mut decoder.new_cache(), &tokens).unwrap();
            let want = reference(&model, &tokens);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = worst(&logits, &want);
            println!("{kind:?} biased {biased}: max |logit diff| {err:.2e} of {scale:.2}");
            assert!(scale > 0.1, "{kind:?}: degenerate logits");
            assert!(
                err <= 0.005 * scale,
                "{kind:?} biased {biased}: {err} of {scale}"
            );
        }
    }
}

#[test]
fn the_cache_gives_the_logits_of_one_pass_whatever_the_chunks() {
    let (decoder, model) = build(config(RopeStyle::HalfSplit), 3, true, Format::I8, 9);
    let tokens: Vec<u32> = (0..20).map(|i| (i * 11 + 5) % 52).collect();
    let mut one = decoder.new_cache();
    let all = decoder.forward(&mut one, &tokens).unwrap();
    let mut chunked = decoder.new_cache();
    let mut last = Vec::new();
    for chunk in [&tokens[..1], &tokens[1..7], &tokens[7..8], &tokens[8..]] {
        last = decoder.forward(&mut chunked, chunk).unwrap();
        let want = reference(&model, &tokens[..chunked.len()]);
        assert!(worst(&last, &want) < 1e-3);
    }
    assert!(
        worst(
            &last,
            &all.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()
        ) < 1e-5
    );
}

#[test]
fn a_truncated_cache_continues_as_if_only_its_tokens_were_fed() {
    let (decoder, model) = build(config(RopeStyle::HalfSplit), 3, true, Format::I8, 4);
    let history: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 52).collect();
    let mut cache = decoder.new_cache();
    decoder.forward(&mut cache, &history).unwrap();
    cache.truncate(99);
    assert_eq!(cache.len(), 16);
    cache.truncate(10);
    assert_eq!(cache.len(), 10);
    // The next turn shares the first 10 tokens and then differs.
    let next = [&history[..10], &[1, 2, 3][..]].concat();
    let continued = decoder.forward(&mut cache, &next[10..]).unwrap();
    let fresh = decoder.forward(&mut decoder.new_cache(), &next).unwrap();
    assert!(worst(&continued, &reference(&model, &next)) < 1e-3);
    assert!(
        worst(
            &continued,
            &fresh.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()
        ) < 1e-5
    );
    cache.truncate(0);
    assert!(cache.is_empty() && cache.bytes() > 0);
    assert_eq!(decoder.forward(&mut cache, &next).unwrap(), fresh);
}

#[test]
fn bad_input_is_refused_and_leaves_the_cache_as_it_was() {
    let (decoder, _) = build(config(RopeStyle::HalfSplit), 1, true, Format::F32, 5);
    let mut cache = decoder.new_cache();
    decoder.forward(&mut cache, &[1, 2, 3]).unwrap();
    let before = cache.bytes();
    assert_eq!(
        decoder.forward(&mut cache, &[]),
        Err(DecoderError::NoTokens)
    );
    assert_eq!(
        decoder.forward(&mut cache, &[4, 52]),
        Err(DecoderError::TokenOutOfRange {
            token: 52,
            vocab: 52
        })
    );
    assert_eq!(
        decoder.forward(&mut cache, &[0; 30]),
        Err(DecoderError::ContextFull {
            needed: 33,
            context: 32
        })
    );
    assert_eq!((cache.len(), cache.bytes()), (3, before));
    // Up to the context exactly, then full.
    decoder.forward(&mut cache, &[0; 29]).unwrap();
    assert!(decoder.forward(&mut cache, &[0]).is_err());
}

#[test]
fn malformed_packed_bytes_are_refused() {
    let (_, _) = build(config(RopeStyle::HalfSplit), 1, true, Format::F32, 6);
    assert!(matches!(
        Decoder::parse(leak_aligned(b"EILLAMA1")),
        Err(DecoderError::Malformed(_))
    ));
    assert!(matches!(
        Decoder::parse(leak_aligned(b"EIBERT01\0\0\0\0")),
        Err(DecoderError::Malformed(_))
    ));
    // A header whose matrix points past the data.
    let mut p = Packer::default();
    let span = p.push_f32(&[1.0; 4]);
    let bad = MatrixSpec {
        rows: 52,
        cols: 24,
        weights: Weights::F32 { values: span },
    };
    let header = Header {
        config: config(RopeStyle::HalfSplit),
        part: Part::whole(0),
        embedding: Some(bad),
        layers: Vec::new(),
        final_norm: Some(span),
        head: None,
        rope_factors: None,
    };
    let bytes = leak_aligned(&p.finish(MAGIC, &header).unwrap());
    assert!(matches!(
        Decoder::parse(bytes),
        Err(DecoderError::Malformed(_))
    ));
}

#[test]
fn shards_chained_give_the_whole_models_logits_bit_for_bit() {
    for tied in [true, false] {
        let (p, header, _) = pack(config(RopeStyle::Interleaved), 4, tied, Format::Q8, 7);
        let whole =
            Decoder::parse(leak_aligned(&p.clone().finish(MAGIC, &header).unwrap())).unwrap();
        let parts: Vec<Decoder> = [0..1, 1..3, 3..4]
            .into_iter()
            .map(|layers| shard(&p, &header, layers))
            .collect();
        let mut caches: Vec<KvCache> = parts.iter().map(Decoder::new_cache).collect();
        let mut cache = whole.new_cache();
        for feed in [&[3u32, 9, 1, 40, 7][..], &[11], &[2], &[50]] {
            let expected = whole.forward(&mut cache, feed).unwrap();
            let mut x = parts[0]
                .stage(&mut caches[0], StageInput::Tokens(feed))
                .unwrap();
            assert_eq!(x.len(), feed.len() * header.config.dims);
            for (part, cache) in parts[1..].iter().zip(&mut caches[1..]) {
                x = part.stage(cache, StageInput::Hidden(&x)).unwrap();
            }
            assert_eq!(x, expected, "tied {tied}");
        }
        assert!(caches.iter().all(|c| c.len() == cache.len()));
    }
}

#[test]
fn a_shard_refuses_the_other_kind_of_input_and_a_whole_pass() {
    let (p, header, _) = pack(config(RopeStyle::HalfSplit), 3, true, Format::F32, 3);
    let first = shard(&p, &header, 0..1);
    let middle = shard(&p, &header, 1..2);
    let d = header.config.dims;
    let wrong =
        |r: Result<Vec<f32>, DecoderError>| matches!(r, Err(DecoderError::WrongInput { .. }));
    assert!(wrong(first.stage(
        &mut first.new_cache(),
        StageInput::Hidden(&vec![0.5; d])
    )));
    assert!(wrong(
        middle.stage(&mut middle.new_cache(), StageInput::Tokens(&[1]))
    ));
    assert!(wrong(middle.stage(
        &mut middle.new_cache(),
        StageInput::Hidden(&vec![0.5; d + 1])
    )));
    assert!(wrong(first.forward(&mut first.new_cache(), &[1])));
    let mut cache = middle.new_cache();
    assert_eq!(
        middle.stage(&mut cache, StageInput::Hidden(&[])),
        Err(DecoderError::NoTokens)
    );
    assert!(cache.is_empty());
}

/// Conversations batched in one pass get the bits they get alone, in every
/// weight format: prompts of different lengths at different positions, a
/// shard's hidden states as well as tokens, and a bad input in the batch
/// failing alone without touching its cache.
#[test]
fn a_batched_pass_gives_each_sequence_its_own_logits_bit_for_bit() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for f in [Format::F32, Format::I8, Format::Q8, Format::Q4_1] {
        let (decoder, _) = build(config(RopeStyle::HalfSplit), 2, false, f, 21);
        let histories: [&[u32]; 3] = [&[1, 2, 3], &[], &[9, 8, 7, 6, 5, 4]];
        let feeds: [&[u32]; 3] = [&[4], &[11, 12, 13, 14], &[3]];
        let mut alone = Vec::new();
        let mut caches = Vec::new();
        for (history, feed) in histories.iter().zip(feeds) {
            let mut cache = decoder.new_cache();
            if !history.is_empty() {
                decoder.forward(&mut cache, history).unwrap();
            }
            caches.push(cache.clone());
            alone.push(decoder.forward(&mut cache, feed).unwrap());
        }
        let mut bad = decoder.new_cache();
        let [a, b, c] = &mut caches[..] else {
            unreachable!()
        };
        let mut steps = [
            Step {
                cache: a,
                input: StageInput::Tokens(feeds[0]),
            },
            Step {
                cache: &mut bad,
                input: StageInput::Tokens(&[999]),
            },
            Step {
                cache: b,
                input: StageInput::Tokens(feeds[1]),
            },
            Step {
                cache: c,
                input: StageInput::Tokens(feeds[2]),
            },
        ];
        let got = decoder.stage_batch(&mut steps);
        assert!(
            matches!(got[1], Err(DecoderError::TokenOutOfRange { .. })),
            "{f:?}"
        );
        assert!(bad.is_empty());
        for (i, want) in [(0, &alone[0]), (2, &alone[1]), (3, &alone[2])] {
            assert_eq!(
                bits(got[i].as_ref().unwrap()),
                bits(want),
                "{f:?} sequence {i}"
            );
        }
        assert_eq!(
            caches.iter().map(KvCache::len).collect::<Vec<_>>(),
            [4, 4, 7]
        );
    }
}

/// Inputs longer than a window ([`STAGE_ROWS`]) go through in windows and
/// come out bit for bit as fed in any other cut: a prompt of 2.5 windows
/// whole, token by token, and in uneven chunks give the same logits (and
/// every position's, scoring), as do the hidden states of a first shard
/// and a batch of two long prompts beside a single row, in every format.
#[test]
fn windows_of_a_long_input_give_the_bits_of_any_other_cut() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let n = STAGE_ROWS * 5 / 2;
    let c = Config {
        context: 3 * STAGE_ROWS,
        ..config(RopeStyle::HalfSplit)
    };
    let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 29 + 7) % 52).collect();
    for f in [Format::I8, Format::Q8, Format::Q4_1] {
        let (p, header, model) = pack(c, 3, true, f, 17);
        let (decoder, _) = load((p.clone(), header.clone(), model));
        let whole = decoder.forward(&mut decoder.new_cache(), &tokens).unwrap();
        let mut one_by_one = decoder.new_cache();
        let mut last = Vec::new();
        for t in &tokens {
            last = decoder.forward(&mut one_by_one, &[*t]).unwrap();
        }
        assert_eq!(bits(&whole), bits(&last), "{f:?} token by token");
        let mut chunked = decoder.new_cache();
        for cut in [0..5, 5..STAGE_ROWS + 9, STAGE_ROWS + 9..n] {
            last = decoder.forward(&mut chunked, &tokens[cut]).unwrap();
        }
        assert_eq!(bits(&whole), bits(&last), "{f:?} chunks");
        let scored = decoder
            .forward_all(&mut decoder.new_cache(), &tokens)
            .unwrap();
        assert_eq!(scored.len(), n * c.vocab);
        assert_eq!(bits(&scored[(n - 1) * c.vocab..]), bits(&whole), "{f:?}");
        let mut prefix = decoder.new_cache();
        let at = decoder.forward_all(&mut prefix, &tokens[..7]).unwrap();
        assert_eq!(bits(&scored[..7 * c.vocab]), bits(&at), "{f:?} scored");
        // A first shard's hidden states, and a batch across windows.
        let first = shard(&p, &header, 0..1);
        let mut cache = first.new_cache();
        let hidden = first
            .stage(&mut cache, StageInput::Tokens(&tokens))
            .unwrap();
        let mut cache = first.new_cache();
        let mut pieces = first
            .stage(&mut cache, StageInput::Tokens(&tokens[..STAGE_ROWS + 1]))
            .unwrap();
        pieces.extend(
            first
                .stage(&mut cache, StageInput::Tokens(&tokens[STAGE_ROWS + 1..]))
                .unwrap(),
        );
        assert_eq!(bits(&hidden), bits(&pieces), "{f:?} hidden");
        let (mut a, mut b, mut d) = (
            decoder.new_cache(),
            decoder.new_cache(),
            decoder.new_cache(),
        );
        decoder.forward(&mut d, &tokens[..3]).unwrap();
        let mut steps = [
            Step {
                cache: &mut a,
                input: StageInput::Tokens(&tokens),
            },
            Step {
                cache: &mut d,
                input: StageInput::Tokens(&tokens[3..4]),
            },
            Step {
                cache: &mut b,
                input: StageInput::Tokens(&tokens[..STAGE_ROWS + 3]),
            },
        ];
        let got = decoder.stage_batch(&mut steps);
        let alone = |feed: &[u32]| decoder.forward(&mut decoder.new_cache(), feed).unwrap();
        assert_eq!(
            bits(got[0].as_ref().unwrap()),
            bits(&whole),
            "{f:?} batched"
        );
        assert_eq!(
            bits(got[1].as_ref().unwrap()),
            bits(&alone(&tokens[..4])),
            "{f:?}"
        );
        assert_eq!(
            bits(got[2].as_ref().unwrap()),
            bits(&alone(&tokens[..STAGE_ROWS + 3])),
            "{f:?}"
        );
        assert_eq!([a.len(), d.len(), b.len()], [n, 4, STAGE_ROWS + 3]);
    }
}

/// A window holds at most STAGE_BYTES of activations: SmolLM2's shape keeps
/// the whole 128 rows (its shards' plans and prefill are as before), wider
/// models run fewer rows at once, and a window never drops below 8 rows.
#[test]
fn a_window_fits_its_activation_bytes() {
    let shape = |dims, heads, kv_heads, head_dim, ffn| Config {
        vocab: 49_152,
        dims,
        heads,
        kv_heads,
        head_dim,
        ffn,
        context: 1024,
        norm_eps: 1e-5,
        rope: Rope {
            theta: 1e4,
            style: RopeStyle::HalfSplit,
        },
    };
    // (SmolLM2-135M, Qwen2.5-0.5B, Qwen2.5-1.5B, a very wide model): rows.
    for (c, rows) in [
        (shape(576, 9, 3, 64, 1536), 128),
        (shape(896, 14, 2, 64, 4864), 64),
        (shape(1536, 12, 2, 128, 8960), 32),
        (shape(16_384, 128, 8, 128, 65_536), 8),
    ] {
        let got = stage_rows(&c);
        assert_eq!(got, rows, "{c:?}");
        assert!(got == 8 || got as u64 * stage_row_bytes(&c) <= STAGE_BYTES);
        assert!(got == STAGE_ROWS || 2 * got as u64 * stage_row_bytes(&c) > STAGE_BYTES);
    }
}
