//! Block-quantized products with integer dot products: weights in blocks of
//! [`BLOCK`] values along a row, as GGUF stores them, and activations
//! quantized per block of the same width to int16 with their own scale. A
//! block's dot product is exact in i32 (`i32x4.dot_i16x8_s` on the weights
//! widened to i16: 32 products of at most 32767 x 127 sum below 2^31); the
//! float work is one multiply-add per block.
//!
//! Two weight formats share one tile (R activation rows by four weight rows):
//! - [`Q8`]: int8 with one scale per block (GGUF's Q8_0, its f16 scale
//!   widened): `w = q * d`.
//! - [`Q4_1`]: 4-bit with a scale and a minimum per block (GGUF's Q4_1, the
//!   file's bytes kept): `w = q * d + m`, `q` in 0..16. The minimum's part of
//!   a block's product is `m * sum(x)`, and `sum(x)` is known once per
//!   activation block ([`Quantized`] keeps it), so a 4-bit block costs the
//!   integer dot of an 8-bit one plus one scalar multiply-add.
//!
//! Why blocks: a block scale follows the weights' local range (4-bit needs
//! it), and the integer product does twice the multiplies per instruction of
//! [`super::rows`]' widened float path, on half (Q4_1: a quarter) of the
//! bytes. Why int16 activations, not llama.cpp's int8: the same instruction
//! count (int8 activations were widened to i16 for the dot anyway), and the
//! activations' rounding drops from 1/254 to 1/65534 of a block's largest
//! value. With int8, SmolLM2-135M's greedy replies left the float32
//! reference's on 7 of 12 golden prompts (the first token of "What is the
//! capital of France?" has a top-1 margin of 0.08); see tests/smollm2.rs.

use std::array::from_fn;

/// Values per block, for weights and activations alike.
pub const BLOCK: usize = 32;

/// Rows of activations quantized per block (scratch reused across calls).
#[derive(Debug, Default, Clone)]
pub struct Quantized {
    q: Vec<i16>,
    scales: Vec<f32>,
    /// Per block: `scale * sum(q)`, the block's sum as the products see it.
    sums: Vec<f32>,
    k: usize,
}

impl Quantized {
    /// Quantizes the rows of `x` (each `k` wide, `k` a multiple of
    /// [`BLOCK`]): per block, scale = max|x| / 32767, q = round(x / scale),
    /// half to even.
    pub fn quantize(&mut self, x: &[f32], k: usize) {
        assert!(k % BLOCK == 0 && x.len() % k == 0);
        self.k = k;
        self.q.clear();
        self.scales.clear();
        self.sums.clear();
        for block in x.chunks_exact(BLOCK) {
            let mut amax = 0.0f32;
            for &v in block {
                let a = if v < 0.0 { -v } else { v };
                if a > amax {
                    amax = a;
                }
            }
            let scale = amax / 32767.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let start = self.q.len();
            self.q
                .extend(block.iter().map(|&v| super::round_even(v * inv) as i16));
            let sum: i32 = self.q[start..].iter().map(|&q| i32::from(q)).sum();
            self.scales.push(scale);
            self.sums.push(sum as f32 * scale);
        }
    }

    /// Rows quantized, each [`Quantized::width`] wide.
    pub fn rows(&self) -> usize {
        self.q.len().checked_div(self.k).unwrap_or(0)
    }

    pub fn width(&self) -> usize {
        self.k
    }

    /// Rows `r..r + R` as a tile's activations.
    fn tile_rows<const R: usize>(&self, r: usize) -> Rows<'_, R> {
        let (k, blocks) = (self.k, self.k / BLOCK);
        let span = |i: usize| (r + i) * blocks..(r + i + 1) * blocks;
        Rows {
            q: from_fn(|i| &self.q[(r + i) * k..(r + i + 1) * k]),
            scales: from_fn(|i| &self.scales[span(i)]),
            sums: from_fn(|i| &self.sums[span(i)]),
        }
    }
}

/// A weight matrix in blocks, `n` rows of `k`, in place in the packed bytes.
#[derive(Debug, Clone, Copy)]
pub enum BlockWeights<'a> {
    /// int8 values (`n x k`) and one scale per block (`n x k / BLOCK`).
    Q8 { values: &'a [i8], scales: &'a [f32] },
    /// 16 bytes per block (byte `i` holds element `i` in its low nibble and
    /// element `i + 16` in its high one, as GGUF does), and one scale and one
    /// minimum per block.
    Q4_1 {
        nibbles: &'a [u8],
        scales: &'a [f32],
        mins: &'a [f32],
    },
}

impl BlockWeights<'_> {
    /// Rows (outputs) of a matrix `k` wide.
    pub fn rows(&self, k: usize) -> usize {
        match self {
            BlockWeights::Q8 { values, .. } => values.len() / k,
            BlockWeights::Q4_1 { nibbles, .. } => nibbles.len() * 2 / k,
        }
    }

    /// Row `r` (`k` wide), dequantized into `out`.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let k = out.len();
        let blocks = k / BLOCK;
        match *self {
            BlockWeights::Q8 { values, scales } => {
                let row = &values[r * k..(r + 1) * k];
                for ((o, q), &d) in out
                    .chunks_exact_mut(BLOCK)
                    .zip(row.chunks_exact(BLOCK))
                    .zip(&scales[r * blocks..(r + 1) * blocks])
                {
                    for (o, &q) in o.iter_mut().zip(q) {
                        *o = f32::from(q) * d;
                    }
                }
            }
            BlockWeights::Q4_1 {
                nibbles,
                scales,
                mins,
            } => {
                let row = &nibbles[r * k / 2..(r + 1) * k / 2];
                for (b, (o, q)) in out
                    .chunks_exact_mut(BLOCK)
                    .zip(row.chunks_exact(BLOCK / 2))
                    .enumerate()
                {
                    let (d, m) = (scales[r * blocks + b], mins[r * blocks + b]);
                    for (i, &byte) in q.iter().enumerate() {
                        o[i] = f32::from(byte & 15) * d + m;
                        o[i + 16] = f32::from(byte >> 4) * d + m;
                    }
                }
            }
        }
    }
}

/// `out[r * n + c] = sum over blocks of dot(x[r], w[c])`, with the weights
/// and activations dequantized: `w` is `n x k` in blocks.
pub fn linear(x: &Quantized, w: BlockWeights, out: &mut [f32]) {
    let k = x.k;
    let blocks = k / BLOCK;
    assert!(k > 0);
    let n = w.rows(k);
    match w {
        BlockWeights::Q8 { values, scales } => {
            assert!(values.len() == n * k && scales.len() == n * blocks);
            let bytes: &[u8] = bytemuck::cast_slice(values);
            linear_in::<Q8>(x, bytes, scales, &[], out);
        }
        BlockWeights::Q4_1 {
            nibbles,
            scales,
            mins,
        } => {
            assert!(nibbles.len() * 2 == n * k);
            assert!(scales.len() == n * blocks && mins.len() == n * blocks);
            linear_in::<Q4_1>(x, nibbles, scales, mins, out);
        }
    }
}

/// Column groups outside, activation rows inside: a group's weights (four
/// rows of blocks, a few KiB) stay in cache while every activation row
/// passes them, so a prompt of S tokens reads the matrix once, not S / 2
/// times (what made prefill memory-bound).
fn linear_in<F: Format>(x: &Quantized, w: &[u8], sw: &[f32], mw: &[f32], out: &mut [f32]) {
    let k = x.k;
    let blocks = k / BLOCK;
    let row_bytes = blocks * F::BYTES;
    let n = w.len() / row_bytes;
    let rows = x.rows();
    assert!(out.len() == rows * n);
    let mut c = 0;
    while c < n {
        let cols = (n - c).min(4);
        // A short last group repeats its first column (computed, not stored).
        let col = |j: usize| c + if j < cols { j } else { 0 };
        let per = |j: usize| col(j) * blocks..(col(j) + 1) * blocks;
        let ws = Cols {
            bytes: from_fn(|j| &w[col(j) * row_bytes..(col(j) + 1) * row_bytes]),
            scales: from_fn(|j| &sw[per(j)]),
            mins: from_fn(|j| if F::HAS_MIN { &mw[per(j)] } else { &[] }),
        };
        let mut r = 0;
        while r < rows {
            if r + 2 <= rows {
                store(
                    &tile::<F, 2>(&x.tile_rows(r), &ws, blocks),
                    r,
                    c,
                    cols,
                    n,
                    out,
                );
                r += 2;
            } else {
                store(
                    &tile::<F, 1>(&x.tile_rows(r), &ws, blocks),
                    r,
                    c,
                    cols,
                    n,
                    out,
                );
                r += 1;
            }
        }
        c += 4;
    }
}

fn store<const R: usize>(
    sums: &[[f32; 4]; R],
    r: usize,
    c: usize,
    cols: usize,
    n: usize,
    out: &mut [f32],
) {
    for (i, row) in sums.iter().enumerate() {
        out[(r + i) * n + c..(r + i) * n + c + cols].copy_from_slice(&row[..cols]);
    }
}

/// The activations of a tile: R rows of quants, scales and block sums.
struct Rows<'a, const R: usize> {
    q: [&'a [i16]; R],
    scales: [&'a [f32]; R],
    sums: [&'a [f32]; R],
}

/// Four weight rows: their block bytes, scales and minimums (empty for
/// formats without one).
struct Cols<'a> {
    bytes: [&'a [u8]; 4],
    scales: [&'a [f32]; 4],
    mins: [&'a [f32]; 4],
}

/// How a weight block is laid out and widened to i16 (in element order).
trait Format {
    /// Bytes per block of [`BLOCK`] values.
    const BYTES: usize;
    /// Whether a block has a minimum (`w = q * d + m`).
    const HAS_MIN: bool;
    /// The block's 32 values (portable).
    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code)
    )]
    fn values(block: &[u8]) -> [i16; BLOCK];
    /// The block's values as four i16x8.
    ///
    /// # Safety
    /// `p` must be valid for [`Format::BYTES`] bytes.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    unsafe fn widen(p: *const u8) -> [core::arch::wasm32::v128; 4];
    /// As above, in SSE4.1 (the caller has checked the feature).
    ///
    /// # Safety
    /// `p` must be valid for [`Format::BYTES`] bytes, and SSE4.1 present.
    #[cfg(target_arch = "x86_64")]
    unsafe fn widen_sse41(p: *const u8) -> [std::arch::x86_64::__m128i; 4];
}

/// GGUF Q8_0's values: 32 int8.
struct Q8;
/// GGUF Q4_1's values: 32 nibbles in 16 bytes.
#[allow(non_camel_case_types)]
struct Q4_1;

impl Format for Q8 {
    const BYTES: usize = BLOCK;
    const HAS_MIN: bool = false;

    fn values(block: &[u8]) -> [i16; BLOCK] {
        from_fn(|i| i16::from(block[i] as i8))
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    unsafe fn widen(p: *const u8) -> [core::arch::wasm32::v128; 4] {
        use core::arch::wasm32::*;
        let lo = v128_load(p as *const v128);
        let hi = v128_load(p.add(16) as *const v128);
        [
            i16x8_extend_low_i8x16(lo),
            i16x8_extend_high_i8x16(lo),
            i16x8_extend_low_i8x16(hi),
            i16x8_extend_high_i8x16(hi),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1")]
    unsafe fn widen_sse41(p: *const u8) -> [std::arch::x86_64::__m128i; 4] {
        use std::arch::x86_64::*;
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_loadu_si128(p.add(16) as *const __m128i);
        [
            _mm_cvtepi8_epi16(lo),
            _mm_cvtepi8_epi16(_mm_srli_si128::<8>(lo)),
            _mm_cvtepi8_epi16(hi),
            _mm_cvtepi8_epi16(_mm_srli_si128::<8>(hi)),
        ]
    }
}

impl Format for Q4_1 {
    const BYTES: usize = BLOCK / 2;
    const HAS_MIN: bool = true;

    fn values(block: &[u8]) -> [i16; BLOCK] {
        from_fn(|i| {
            i16::from(if i < 16 {
                block[i] & 15
            } else {
                block[i - 16] >> 4
            })
        })
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    unsafe fn widen(p: *const u8) -> [core::arch::wasm32::v128; 4] {
        use core::arch::wasm32::*;
        let v = v128_load(p as *const v128);
        let lo = v128_and(v, u8x16_splat(15));
        let hi = u8x16_shr(v, 4);
        [
            u16x8_extend_low_u8x16(lo),
            u16x8_extend_high_u8x16(lo),
            u16x8_extend_low_u8x16(hi),
            u16x8_extend_high_u8x16(hi),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.1")]
    unsafe fn widen_sse41(p: *const u8) -> [std::arch::x86_64::__m128i; 4] {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(15);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
        [
            _mm_cvtepu8_epi16(lo),
            _mm_cvtepu8_epi16(_mm_srli_si128::<8>(lo)),
            _mm_cvtepu8_epi16(hi),
            _mm_cvtepu8_epi16(_mm_srli_si128::<8>(hi)),
        ]
    }
}

/// Checks a tile's slices once, so the SIMD loads below stay in bounds.
fn check_tile<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) {
    assert!(a.q.iter().all(|x| x.len() == blocks * BLOCK));
    assert!(a.scales.iter().chain(&a.sums).all(|s| s.len() == blocks));
    assert!(w.bytes.iter().all(|x| x.len() == blocks * F::BYTES));
    assert!(w.scales.iter().all(|s| s.len() == blocks));
    assert!(!F::HAS_MIN || w.mins.iter().all(|s| s.len() == blocks));
}

/// The minimums' part of a tile: `sum over blocks of m * sum(x)`.
fn min_terms<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) -> [[f32; 4]; R] {
    from_fn(|r| {
        from_fn(|j| {
            if F::HAS_MIN {
                (0..blocks).map(|b| a.sums[r][b] * w.mins[j][b]).sum()
            } else {
                0.0
            }
        })
    })
}

// Four weight rows by R activation rows, indexed as the tile is drawn.
#[allow(clippy::needless_range_loop)]
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn tile<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) -> [[f32; 4]; R] {
    use core::arch::wasm32::*;
    check_tile::<F, R>(a, w, blocks);
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    for b in 0..blocks {
        // SAFETY: every slice holds `blocks` whole blocks (checked above);
        // v128 loads need no alignment.
        let x: [[v128; 4]; R] = from_fn(|r| {
            from_fn(|i| unsafe { v128_load(a.q[r].as_ptr().add(b * BLOCK + 8 * i) as *const v128) })
        });
        for j in 0..4 {
            // SAFETY: as above.
            let wv = unsafe { F::widen(w.bytes[j].as_ptr().add(b * F::BYTES)) };
            for r in 0..R {
                let s = i32x4_add(
                    i32x4_add(
                        i32x4_dot_i16x8(x[r][0], wv[0]),
                        i32x4_dot_i16x8(x[r][1], wv[1]),
                    ),
                    i32x4_add(
                        i32x4_dot_i16x8(x[r][2], wv[2]),
                        i32x4_dot_i16x8(x[r][3], wv[3]),
                    ),
                );
                let scale = f32x4_splat(a.scales[r][b] * w.scales[j][b]);
                acc[r][j] = f32x4_add(acc[r][j], f32x4_mul(f32x4_convert_i32x4(s), scale));
            }
        }
    }
    let mins = min_terms::<F, R>(a, w, blocks);
    from_fn(|r| {
        from_fn(|j| {
            let v = acc[r][j];
            (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
                + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
                + mins[r][j]
        })
    })
}

/// x86-64: the same algorithm in SSE4.1 (checked once; portable otherwise).
#[cfg(target_arch = "x86_64")]
fn tile<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) -> [[f32; 4]; R] {
    check_tile::<F, R>(a, w, blocks);
    if super::sse41() {
        // SAFETY: the feature was just detected; lengths checked above.
        unsafe { tile_sse41::<F, R>(a, w, blocks) }
    } else {
        tile_portable::<F, R>(a, w, blocks)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_sse41<F: Format, const R: usize>(
    a: &Rows<R>,
    w: &Cols,
    blocks: usize,
) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm_setzero_ps(); 4]; R];
    for b in 0..blocks {
        let x: [[__m128i; 4]; R] = from_fn(|r| {
            from_fn(|i| _mm_loadu_si128(a.q[r].as_ptr().add(b * BLOCK + 8 * i) as *const __m128i))
        });
        for j in 0..4 {
            let wv = F::widen_sse41(w.bytes[j].as_ptr().add(b * F::BYTES));
            for r in 0..R {
                let s = _mm_add_epi32(
                    _mm_add_epi32(
                        _mm_madd_epi16(x[r][0], wv[0]),
                        _mm_madd_epi16(x[r][1], wv[1]),
                    ),
                    _mm_add_epi32(
                        _mm_madd_epi16(x[r][2], wv[2]),
                        _mm_madd_epi16(x[r][3], wv[3]),
                    ),
                );
                let scale = _mm_set1_ps(a.scales[r][b] * w.scales[j][b]);
                acc[r][j] = _mm_add_ps(acc[r][j], _mm_mul_ps(_mm_cvtepi32_ps(s), scale));
            }
        }
    }
    let mins = min_terms::<F, R>(a, w, blocks);
    from_fn(|r| {
        from_fn(|j| {
            let mut l = [0.0f32; 4];
            _mm_storeu_ps(l.as_mut_ptr(), acc[r][j]);
            (l[0] + l[1]) + (l[2] + l[3]) + mins[r][j]
        })
    })
}

/// Plain code: block sums in i32, then the scaled sum per block.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn tile_portable<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) -> [[f32; 4]; R] {
    let mins = min_terms::<F, R>(a, w, blocks);
    from_fn(|r| {
        from_fn(|j| {
            let dots: f32 = (0..blocks)
                .map(|b| {
                    let values = F::values(&w.bytes[j][b * F::BYTES..(b + 1) * F::BYTES]);
                    let x = &a.q[r][b * BLOCK..(b + 1) * BLOCK];
                    let sum: i32 = x
                        .iter()
                        .zip(values)
                        .map(|(&x, v)| i32::from(x) * i32::from(v))
                        .sum();
                    sum as f32 * (a.scales[r][b] * w.scales[j][b])
                })
                .sum();
            dots + mins[r][j]
        })
    })
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn tile<F: Format, const R: usize>(a: &Rows<R>, w: &Cols, blocks: usize) -> [[f32; 4]; R] {
    check_tile::<F, R>(a, w, blocks);
    tile_portable::<F, R>(a, w, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_per_block_and_symmetric() {
        let mut x: Vec<f32> = (0..64).map(|i| i as f32 * 0.1).collect();
        x[40] = -12.7;
        let mut q = Quantized::default();
        q.quantize(&x, 64);
        assert_eq!(q.scales.len(), 2);
        assert!((q.scales[0] - 3.1 / 32767.0).abs() < 1e-9);
        assert!((q.scales[1] - 12.7 / 32767.0).abs() < 1e-9);
        assert_eq!(q.q[31], 32767);
        assert_eq!(q.q[40], -32767);
        q.quantize(&[0.0; 32], 32);
        assert_eq!((q.scales[0], q.q.iter().all(|&v| v == 0)), (0.0, true));
    }

    /// The block sums are the exact integers; only the scaled sum rounds.
    #[test]
    fn equals_the_blockwise_sum_for_any_row_and_column_count() {
        for (rows, n, k) in [(1, 4, 32), (3, 7, 64), (2, 8, 256), (5, 1, 96)] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 37) % 19) as f32 * 0.25 - 2.0)
                .collect();
            let w: Vec<i8> = (0..n * k).map(|i| ((i * 53) % 255) as i32 as i8).collect();
            let sw: Vec<f32> = (0..n * k / BLOCK)
                .map(|i| 0.01 * (i % 5 + 1) as f32)
                .collect();
            let mut q = Quantized::default();
            q.quantize(&x, k);
            let mut out = vec![0.0; rows * n];
            linear(
                &q,
                BlockWeights::Q8 {
                    values: &w,
                    scales: &sw,
                },
                &mut out,
            );
            for r in 0..rows {
                for c in 0..n {
                    let want: f64 = (0..k / BLOCK)
                        .map(|b| {
                            let s: i64 = (0..BLOCK)
                                .map(|i| {
                                    i64::from(q.q[r * k + b * BLOCK + i])
                                        * i64::from(w[c * k + b * BLOCK + i])
                                })
                                .sum();
                            s as f64
                                * f64::from(q.scales[r * k / BLOCK + b])
                                * f64::from(sw[c * k / BLOCK + b])
                        })
                        .sum();
                    let got = f64::from(out[r * n + c]);
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{rows}x{n}x{k} ({r},{c}): {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Q4_1: the integer dot of the nibbles plus the minimum times the
    /// block's sum, against the blocks dequantized in float64; and a row
    /// dequantized is the nibbles in GGUF's order.
    #[test]
    fn four_bit_blocks_with_minimums() {
        for (rows, n, k) in [(1, 4, 32), (3, 7, 64), (2, 9, 576), (5, 1, 96)] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 29) % 23) as f32 * 0.2 - 2.1)
                .collect();
            let blocks = k / BLOCK;
            let nibbles: Vec<u8> = (0..n * k / 2)
                .map(|i| ((i * 97 + 13) % 256) as u8)
                .collect();
            let d: Vec<f32> = (0..n * blocks).map(|i| 0.01 * (i % 7 + 1) as f32).collect();
            let m: Vec<f32> = (0..n * blocks).map(|i| -0.05 * (i % 3) as f32).collect();
            let w = BlockWeights::Q4_1 {
                nibbles: &nibbles,
                scales: &d,
                mins: &m,
            };
            let mut q = Quantized::default();
            q.quantize(&x, k);
            let mut out = vec![0.0; rows * n];
            linear(&q, w, &mut out);
            let mut row = vec![0.0f32; k];
            for c in 0..n {
                w.row(c, &mut row);
                for b in 0..blocks {
                    let byte = nibbles[c * k / 2 + b * 16 + 3];
                    let (dd, mm) = (d[c * blocks + b], m[c * blocks + b]);
                    assert_eq!(row[b * BLOCK + 3], f32::from(byte & 15) * dd + mm);
                    assert_eq!(row[b * BLOCK + 19], f32::from(byte >> 4) * dd + mm);
                }
                for r in 0..rows {
                    let want: f64 = (0..k)
                        .map(|i| {
                            let sa = f64::from(q.scales[r * blocks + i / BLOCK]);
                            f64::from(q.q[r * k + i]) * sa * f64::from(row[i])
                        })
                        .sum();
                    let got = f64::from(out[r * n + c]);
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{rows}x{n}x{k} ({r},{c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
