use super::gguf::GgufType;
use super::*;

use crate::testing::Lcg;

/// Random f16 bits of a finite value below 1 (subnormals and negative
/// values included).
fn f16_bits(r: &mut Lcg) -> [u8; 2] {
    let exp = (r.next_u32() % 15) as u16;
    ((r.next_u32() as u16 & 0x83ff) | (exp << 10)).to_le_bytes()
}

/// GGUF Q4_1 bytes of `rows x cols`.
fn gguf_q4_1(r: &mut Lcg, rows: usize, cols: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / BLOCK {
        out.extend(f16_bits(r));
        out.extend(f16_bits(r));
        out.extend((0..16).map(|_| r.next_u32() as u8));
    }
    out
}

/// Dequantized reference rows from GGUF Q4_1 bytes.
fn q4_1_rows(gguf: &[u8], rows: usize, cols: usize) -> Vec<Vec<f32>> {
    let blocks = cols / BLOCK;
    (0..rows)
        .map(|row| {
            (0..blocks)
                .flat_map(|b| {
                    let blk = &gguf[(row * blocks + b) * 20..][..20];
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                    let m = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                    (0..BLOCK).map(move |i| {
                        let q = if i < 16 {
                            blk[4 + i] & 15
                        } else {
                            blk[4 + i - 16] >> 4
                        };
                        f32::from(q) * d + m
                    })
                })
                .collect()
        })
        .collect()
}

#[test]
fn f16_conversion_is_exact_for_every_finite_value() {
    for h in 0..=u16::MAX {
        if h & 0x7c00 == 0x7c00 {
            continue;
        }
        let want = half_reference(h);
        assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
    }
}

#[test]
fn vector_f16_conversion_is_the_scalar_one() {
    assert_eq!(check_f16_conversion(), Ok(()));
}

/// f16 decoded from its definition, in float64.
fn half_reference(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    let v = if exp == 0 {
        frac * 2f64.powi(-24)
    } else {
        (1.0 + frac / 1024.0) * 2f64.powi(exp - 15)
    };
    (sign * v) as f32
}

/// Every path against the definition written out in float64-free
/// scalar code, bit for bit; and the dequantized rows against the
/// file's blocks.
#[test]
fn four_bit_panels_equal_the_definition_bit_for_bit() {
    let mut rng = Lcg(7);
    for (rows, n, k) in [
        (1, 4, 32),
        (3, 7, 64),
        (5, 9, 576),
        (4, 1, 96),
        (9, 6, 1536),
    ] {
        let gguf = gguf_q4_1(&mut rng, n, k);
        let packed = Panels::pack_q4_1(&gguf, n, k).unwrap();
        let w = Panels::new(PanelKind::Q4_1, &packed, n, k).unwrap();
        let reference = q4_1_rows(&gguf, n, k);
        let mut row = vec![0.0; k];
        for (c, want) in reference.iter().enumerate() {
            w.row(c, &mut row);
            assert_eq!(&row, want, "row {c}");
        }
        let x: Vec<f32> = (0..rows * k).map(|_| rng.unit() * 3.0).collect();
        let mut q = Quantized::default();
        q.quantize(&x, k);
        let mut out = vec![0.0; rows * n];
        linear(&q, &w, &mut out);
        for r in 0..rows {
            for c in 0..n {
                let want = definition(&q, r, &gguf, c, k);
                assert_eq!(
                    out[r * n + c].to_bits(),
                    want.to_bits(),
                    "{rows}x{n}x{k} ({r},{c})"
                );
            }
        }
    }
}

/// One output of a Q4_1 product as the module's doc defines it.
fn definition(q: &Quantized, r: usize, gguf: &[u8], c: usize, k: usize) -> f32 {
    let blocks = k / BLOCK;
    let mut acc = 0.0f32;
    for b in 0..blocks {
        let blk = &gguf[(c * blocks + b) * 20..][..20];
        let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let m = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
        let xq = &q.row_quants(r)[b * BLOCK..(b + 1) * BLOCK];
        let dot: i32 = (0..BLOCK)
            .map(|i| {
                let e = ORDER[i];
                let v = if e < 16 {
                    blk[4 + e] & 15
                } else {
                    blk[4 + e - 16] >> 4
                };
                i32::from(xq[i]) * i32::from(v)
            })
            .sum();
        acc += dot as f32 * (d * q.row_scales(r)[b]);
        acc += m * q.row_sums(r)[b];
    }
    acc
}

#[test]
fn eight_bit_panels_equal_the_definition_bit_for_bit() {
    let mut rng = Lcg(11);
    for (rows, n, k) in [(1, 4, 32), (2, 7, 64), (6, 5, 576), (4, 13, 128)] {
        let values: Vec<i8> = (0..n * k)
            .map(|_| (rng.next_u32() % 255) as i32 as i8)
            .collect();
        let scales: Vec<f32> = (0..n * k / BLOCK).map(|_| rng.unit() * 0.01).collect();
        let packed = Panels::pack_q8(&values, &scales, n, k);
        let w = Panels::new(PanelKind::Q8, &packed, n, k).unwrap();
        let x: Vec<f32> = (0..rows * k).map(|_| rng.unit() * 3.0).collect();
        let mut q = Quantized::default();
        q.quantize(&x, k);
        let mut out = vec![0.0; rows * n];
        linear(&q, &w, &mut out);
        let blocks = k / BLOCK;
        let mut row = vec![0.0; k];
        for c in 0..n {
            w.row(c, &mut row);
            for i in 0..k {
                assert_eq!(
                    row[i],
                    f32::from(values[c * k + i]) * scales[c * blocks + i / BLOCK]
                );
            }
            for r in 0..rows {
                let mut acc = 0.0f32;
                for b in 0..blocks {
                    let xq = &q.row_quants(r)[b * BLOCK..(b + 1) * BLOCK];
                    let dot: i32 = (0..BLOCK)
                        .map(|i| i32::from(xq[i]) * i32::from(values[c * k + b * BLOCK + ORDER[i]]))
                        .sum();
                    acc += dot as f32 * (scales[c * blocks + b] * q.row_scales(r)[b]);
                }
                assert_eq!(out[r * n + c].to_bits(), acc.to_bits(), "({r},{c})");
            }
        }
    }
}

/// A row's outputs are the same bits alone and in any tile: what lets
/// conversations be batched without changing their tokens.
#[test]
fn a_row_is_the_same_alone_and_batched() {
    let mut rng = Lcg(5);
    let (n, k) = (10, 192);
    let gguf = gguf_q4_1(&mut rng, n, k);
    let packed = Panels::pack_q4_1(&gguf, n, k).unwrap();
    let w = Panels::new(PanelKind::Q4_1, &packed, n, k).unwrap();
    let x: Vec<f32> = (0..7 * k).map(|_| rng.unit()).collect();
    let mut all = Quantized::default();
    all.quantize(&x, k);
    let mut batched = vec![0.0; 7 * n];
    linear(&all, &w, &mut batched);
    for r in 0..7 {
        let mut one = Quantized::default();
        one.quantize(&x[r * k..(r + 1) * k], k);
        let mut alone = vec![0.0; n];
        linear(&one, &w, &mut alone);
        assert_eq!(
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            batched[r * n..(r + 1) * n]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }
}

/// The portable path (other targets) gives the SIMD path's bits.
#[test]
fn the_portable_path_gives_the_same_bits() {
    let mut rng = Lcg(13);
    let (rows, n, k) = (3, 8, 320);
    let gguf = gguf_q4_1(&mut rng, n, k);
    let q4 = Panels::pack_q4_1(&gguf, n, k).unwrap();
    let values: Vec<i8> = (0..n * k)
        .map(|_| (rng.next_u32() % 255) as i32 as i8)
        .collect();
    let scales: Vec<f32> = (0..n * k / BLOCK).map(|_| rng.unit() * 0.01).collect();
    let q8 = Panels::pack_q8(&values, &scales, n, k);
    let x: Vec<f32> = (0..rows * k).map(|_| rng.unit()).collect();
    let mut q = Quantized::default();
    q.quantize(&x, k);
    for (kind, bytes) in [(PanelKind::Q4_1, &q4), (PanelKind::Q8, &q8)] {
        let w = Panels::new(kind, bytes, n, k).unwrap();
        let mut out = vec![0.0; rows * n];
        linear(&q, &w, &mut out);
        for r in 0..rows {
            for p in 0..n / PANEL {
                let a = Acts::<1>::new(&q, r);
                let got = tile_portable::<1>(kind, w.panel(p), &a, k / BLOCK)[0];
                for j in 0..PANEL {
                    assert_eq!(got[j].to_bits(), out[r * n + p * PANEL + j].to_bits());
                }
            }
        }
    }
}

#[test]
fn packing_refuses_bad_input() {
    assert!(Panels::pack_q4_1(&[0u8; 19], 1, 32).is_err());
    let mut block = [0u8; 20];
    block[1] = 0x7c; // d = inf
    assert!(Panels::pack_q4_1(&block, 1, 32).is_err());
    assert!(Panels::new(PanelKind::Q8, &[0u8; 143], 1, 32).is_none());
    assert!(Panels::new(PanelKind::Q8, &[0u8; 144], 1, 32).is_some());
    assert!(Panels::new(PanelKind::Q8, &[0u8; 144], 1, 31).is_none());
}

/// Random bytes of `blocks` GGUF blocks of type `t` with finite f16 scales
/// of every size (subnormal to 65504); with `extreme`, every code at its
/// most negative or most positive and every 6-bit or int8 scale at its
/// largest magnitude, the integer sums' worst case.
fn gguf_blocks(r: &mut Lcg, t: GgufType, blocks: usize, extreme: bool) -> Vec<u8> {
    let f16 = |r: &mut Lcg| -> [u8; 2] {
        let exp = (r.next_u32() % 31) as u16;
        ((r.next_u32() as u16 & 0x83ff) | (exp << 10)).to_le_bytes()
    };
    let mut out = Vec::new();
    for _ in 0..blocks {
        let start = out.len();
        let fill = if r.next_u32() % 2 == 0 { 0x00u8 } else { 0xff };
        out.extend((0..t.block_bytes()).map(|_| match extreme {
            true => fill,
            false => r.next_u32() as u8,
        }));
        let b = &mut out[start..];
        let mut put = |at: usize, r: &mut Lcg| {
            let h = f16(r);
            b[at..at + 2].copy_from_slice(&h);
        };
        match t {
            GgufType::Q4_0 | GgufType::Q5_0 | GgufType::Q8_0 => put(0, r),
            GgufType::Q4_1 | GgufType::Q5_1 | GgufType::Q4K | GgufType::Q5K => {
                put(0, r);
                put(2, r);
            }
            GgufType::Q6K => {
                put(208, r);
                if extreme {
                    b[192..208].fill(0x80);
                }
            }
        }
        if extreme && matches!(t, GgufType::Q4K | GgufType::Q5K) {
            b[4..16].fill(0xff);
        }
    }
    out
}

const TYPES: [GgufType; 8] = [
    GgufType::Q4_0,
    GgufType::Q4_1,
    GgufType::Q5_0,
    GgufType::Q5_1,
    GgufType::Q8_0,
    GgufType::Q4K,
    GgufType::Q5K,
    GgufType::Q6K,
];

/// Activations of `rows x k`: random, or (extreme) every block constant
/// with a random sign per element (every quant at +-32767).
fn activations(r: &mut Lcg, rows: usize, k: usize, extreme: bool) -> Vec<f32> {
    (0..rows * k)
        .map(|_| match extreme {
            true => [1.5f32, -1.5][r.next_u32() as usize % 2],
            false => r.unit() * 3.0,
        })
        .collect()
}

/// Every format: the packed rows dequantize to exactly `dequantize`'s
/// values of the file's blocks, and each product is the float64 dot of
/// those weights with the activations as quantized, within float32's
/// rounding of the sum.
#[test]
fn every_format_equals_dequantize_then_dot() {
    let mut rng = Lcg(17);
    for t in TYPES {
        let span = t.span();
        for (rows, n, blocks, extreme) in [
            (1, 4, 1, false),
            (3, 7, 2, false),
            (5, 9, 3, false),
            (4, 6, 1, true),
            (2, 5, 2, true),
        ] {
            let k = blocks * span;
            let gguf = gguf_blocks(&mut rng, t, n * blocks, extreme);
            let packed = Panels::pack(t.kind(), &gguf, n, k).unwrap();
            let w = Panels::new(t.kind(), &packed, n, k).unwrap();
            let dense = dequantize(t, &gguf, n * k).unwrap();
            let mut row = vec![0.0; k];
            for c in 0..n {
                w.row(c, &mut row);
                let want = &dense[c * k..(c + 1) * k];
                for i in 0..k {
                    assert_eq!(row[i].to_bits(), want[i].to_bits(), "{t:?} row {c} [{i}]");
                }
            }
            let x = activations(&mut rng, rows, k, extreme);
            let mut q = Quantized::default();
            q.quantize(&x, k);
            let mut out = vec![0.0; rows * n];
            linear(&q, &w, &mut out);
            for r in 0..rows {
                let xs: Vec<f64> = (0..k)
                    .map(|e| {
                        let b = e / BLOCK;
                        let i = ORDER.iter().position(|&o| o == e % BLOCK).unwrap();
                        f64::from(q.row_quants(r)[b * BLOCK + i]) * f64::from(q.row_scales(r)[b])
                    })
                    .collect();
                for c in 0..n {
                    let ws = &dense[c * k..(c + 1) * k];
                    let want: f64 = xs.iter().zip(ws).map(|(&x, &w)| x * f64::from(w)).sum();
                    let size: f64 = xs
                        .iter()
                        .zip(ws)
                        .map(|(&x, &w)| (x * f64::from(w)).abs())
                        .sum();
                    let got = f64::from(out[r * n + c]);
                    assert!(
                        (got - want).abs() <= 1e-5 * size + 1e-30,
                        "{t:?} {rows}x{n}x{k} extreme {extreme} ({r},{c}): {got} vs {want} (size {size})"
                    );
                }
            }
        }
    }
}

/// Every format: the SIMD path gives the portable definition's bits, for
/// tiles of 1 to 4 activation rows (a row alone and batched alike).
#[test]
fn every_format_simd_equals_portable_in_every_tile() {
    let mut rng = Lcg(23);
    for t in TYPES {
        for extreme in [false, true] {
            let (n, blocks) = (9, 2);
            let k = blocks * t.span();
            let gguf = gguf_blocks(&mut rng, t, n * blocks, extreme);
            let packed = Panels::pack(t.kind(), &gguf, n, k).unwrap();
            let w = Panels::new(t.kind(), &packed, n, k).unwrap();
            let x = activations(&mut rng, 7, k, extreme);
            let mut q = Quantized::default();
            q.quantize(&x, k);
            let mut all = vec![0.0; 7 * n];
            linear(&q, &w, &mut all);
            for r in 0..7 {
                for p in 0..n.div_ceil(PANEL) {
                    let a = Acts::<1>::new(&q, r);
                    let want = tile_portable::<1>(t.kind(), w.panel(p), &a, k / BLOCK)[0];
                    for j in 0..PANEL.min(n - p * PANEL) {
                        let got = all[r * n + p * PANEL + j];
                        assert_eq!(
                            got.to_bits(),
                            want[j].to_bits(),
                            "{t:?} ({r},{})",
                            p * PANEL + j
                        );
                    }
                }
                let mut one = Quantized::default();
                one.quantize(&x[r * k..(r + 1) * k], k);
                let mut alone = vec![0.0; n];
                linear(&one, &w, &mut alone);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&alone),
                    bits(&all[r * n..(r + 1) * n]),
                    "{t:?} row {r}"
                );
            }
        }
    }
}

#[test]
fn packing_refuses_what_it_cannot_keep() {
    // Q4_K rows must be whole blocks of 256.
    assert!(Panels::pack(PanelKind::Q4K, &[0u8; 144], 1, 32).is_err());
    assert!(Panels::pack(PanelKind::Q4K, &[0u8; 143], 1, 256).is_err());
    assert!(Panels::pack(PanelKind::Q4K, &[0u8; 144], 1, 256).is_ok());
    let mut q6 = [0u8; 210];
    q6[209] = 0x7c; // d = inf
    assert!(Panels::pack(PanelKind::Q6K, &q6, 1, 256).is_err());
    // Four rows of one Q6_K block: 8 x 96 bytes of codes, 64 of scales,
    // four float32 `d`.
    assert!(Panels::new(PanelKind::Q6K, &[0u8; 848], 4, 256).is_some());
    assert!(Panels::new(PanelKind::Q6K, &[0u8; 840], 4, 256).is_none());
    assert!(Panels::new(PanelKind::Q6K, &[0u8; 848], 4, 32).is_none());
}
