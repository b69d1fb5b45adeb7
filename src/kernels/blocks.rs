//! Block-quantized products with integer dot products: weights in blocks of
//! [`BLOCK`] int8 values with one float32 scale per block (GGUF's Q8_0
//! layout, its f16 scale widened), activations quantized per block of the
//! same width to int8 with their own scale. A block's dot product is exact
//! in i32 (`i32x4.dot_i16x8_s` on int8 widened to i16); the float work is
//! one multiply-add per block: `sum * (x_scale * w_scale)`.
//!
//! Why blocks: a block scale follows the weights' local range (4-bit
//! formats need it), and the integer product does twice the multiplies per
//! instruction of [`super::rows`]' widened float path. The price is the
//! activations' rounding (about 1/254 of a block's largest value): logits
//! within a few 1e-2 of a float reference instead of 1e-4; see `rows` for
//! the exact case. The tile is the same (R activation rows by four
//! weight rows), so a 4-bit block format only changes how a weight block is
//! widened to int8.

use std::array::from_fn;

/// Values per block, for weights and activations alike.
pub const BLOCK: usize = 32;

/// Rows of activations quantized per block (scratch reused across calls).
#[derive(Debug, Default, Clone)]
pub struct Quantized {
    q: Vec<i8>,
    scales: Vec<f32>,
    k: usize,
}

impl Quantized {
    /// Quantizes the rows of `x` (each `k` wide, `k` a multiple of
    /// [`BLOCK`]): per block, scale = max|x| / 127, q = round(x / scale),
    /// half to even.
    pub fn quantize(&mut self, x: &[f32], k: usize) {
        assert!(k % BLOCK == 0 && x.len() % k == 0);
        self.k = k;
        self.q.clear();
        self.scales.clear();
        for block in x.chunks_exact(BLOCK) {
            let mut amax = 0.0f32;
            for &v in block {
                let a = if v < 0.0 { -v } else { v };
                if a > amax {
                    amax = a;
                }
            }
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            self.scales.push(scale);
            self.q
                .extend(block.iter().map(|&v| super::round_even(v * inv) as i8));
        }
    }

    fn rows(&self) -> usize {
        self.q.len().checked_div(self.k).unwrap_or(0)
    }
}

/// `out[r * n + c] = sum over blocks b of dot(x[r][b], w[c][b]) * x_scale *
/// w_scale`: `w` is `n x k` int8 and `w_scales` `n x k / BLOCK`.
pub fn linear(x: &Quantized, w: &[i8], w_scales: &[f32], out: &mut [f32]) {
    let k = x.k;
    let blocks = k / BLOCK;
    assert!(k > 0 && w.len() % k == 0);
    let n = w.len() / k;
    assert!(w_scales.len() == n * blocks && out.len() == x.rows() * n);
    let rows = x.rows();
    let mut r = 0;
    while r < rows {
        if r + 2 <= rows {
            block_rows::<2>(x, r, w, w_scales, out);
            r += 2;
        } else {
            block_rows::<1>(x, r, w, w_scales, out);
            r += 1;
        }
    }
}

fn block_rows<const R: usize>(
    x: &Quantized,
    r: usize,
    w: &[i8],
    w_scales: &[f32],
    out: &mut [f32],
) {
    let k = x.k;
    let blocks = k / BLOCK;
    let n = w.len() / k;
    let a: [&[i8]; R] = from_fn(|i| &x.q[(r + i) * k..(r + i + 1) * k]);
    let sa: [&[f32]; R] = from_fn(|i| &x.scales[(r + i) * blocks..(r + i + 1) * blocks]);
    let mut c = 0;
    while c < n {
        let cols = (n - c).min(4);
        // A short last group repeats its first column (computed, not stored).
        let ws: [&[i8]; 4] = from_fn(|j| {
            let cc = c + if j < cols { j } else { 0 };
            &w[cc * k..(cc + 1) * k]
        });
        let ss: [&[f32]; 4] = from_fn(|j| {
            let cc = c + if j < cols { j } else { 0 };
            &w_scales[cc * blocks..(cc + 1) * blocks]
        });
        let sums = tile::<R>(a, sa, ws, ss);
        for (i, row) in sums.iter().enumerate() {
            for (j, &sum) in row.iter().enumerate().take(cols) {
                out[(r + i) * n + c + j] = sum;
            }
        }
        c += 4;
    }
}

/// The integer sum of one block of `a` and `w` (portable; the SIMD tiles
/// compute the same integers).
#[cfg_attr(
    all(target_arch = "wasm32", target_feature = "simd128"),
    allow(dead_code)
)]
fn block_dot(a: &[i8], w: &[i8]) -> i32 {
    a.iter()
        .zip(w)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn tile<const R: usize>(
    a: [&[i8]; R],
    sa: [&[f32]; R],
    w: [&[i8]; 4],
    sw: [&[f32]; 4],
) -> [[f32; 4]; R] {
    use core::arch::wasm32::*;
    let k = a[0].len();
    assert!(a.iter().all(|x| x.len() == k) && w.iter().all(|x| x.len() == k) && k % BLOCK == 0);
    let blocks = k / BLOCK;
    assert!(sa.iter().all(|s| s.len() == blocks) && sw.iter().all(|s| s.len() == blocks));
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    for b in 0..blocks {
        let i = b * BLOCK;
        // SAFETY: i + BLOCK <= k, the length of every slice (asserted above);
        // v128 loads need no alignment.
        let x: [[v128; 4]; R] = from_fn(|r| unsafe {
            let lo = v128_load(a[r].as_ptr().add(i) as *const v128);
            let hi = v128_load(a[r].as_ptr().add(i + 16) as *const v128);
            [
                i16x8_extend_low_i8x16(lo),
                i16x8_extend_high_i8x16(lo),
                i16x8_extend_low_i8x16(hi),
                i16x8_extend_high_i8x16(hi),
            ]
        });
        for j in 0..4 {
            // SAFETY: as above.
            let (lo, hi) = unsafe {
                (
                    v128_load(w[j].as_ptr().add(i) as *const v128),
                    v128_load(w[j].as_ptr().add(i + 16) as *const v128),
                )
            };
            let wv = [
                i16x8_extend_low_i8x16(lo),
                i16x8_extend_high_i8x16(lo),
                i16x8_extend_low_i8x16(hi),
                i16x8_extend_high_i8x16(hi),
            ];
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
                let scale = f32x4_splat(sa[r][b] * sw[j][b]);
                acc[r][j] = f32x4_add(acc[r][j], f32x4_mul(f32x4_convert_i32x4(s), scale));
            }
        }
    }
    from_fn(|r| {
        from_fn(|j| {
            let v = acc[r][j];
            (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
                + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
        })
    })
}

/// x86-64: the same algorithm in SSE4.1 (checked once; portable otherwise).
#[cfg(target_arch = "x86_64")]
fn tile<const R: usize>(
    a: [&[i8]; R],
    sa: [&[f32]; R],
    w: [&[i8]; 4],
    sw: [&[f32]; 4],
) -> [[f32; 4]; R] {
    let k = a[0].len();
    assert!(a.iter().all(|x| x.len() == k) && w.iter().all(|x| x.len() == k) && k % BLOCK == 0);
    let blocks = k / BLOCK;
    assert!(sa.iter().all(|s| s.len() == blocks) && sw.iter().all(|s| s.len() == blocks));
    if super::sse41() {
        // SAFETY: the feature was just detected; lengths asserted above.
        unsafe { tile_sse41::<R>(a, sa, w, sw) }
    } else {
        tile_portable::<R>(a, sa, w, sw)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn tile_sse41<const R: usize>(
    a: [&[i8]; R],
    sa: [&[f32]; R],
    w: [&[i8]; 4],
    sw: [&[f32]; 4],
) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let blocks = a[0].len() / BLOCK;
    let widen = |p: *const i8| -> [__m128i; 4] {
        // SAFETY (caller): 32 bytes from p are in bounds; unaligned loads.
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_loadu_si128(p.add(16) as *const __m128i);
        [
            _mm_cvtepi8_epi16(lo),
            _mm_cvtepi8_epi16(_mm_srli_si128::<8>(lo)),
            _mm_cvtepi8_epi16(hi),
            _mm_cvtepi8_epi16(_mm_srli_si128::<8>(hi)),
        ]
    };
    let mut acc = [[_mm_setzero_ps(); 4]; R];
    for b in 0..blocks {
        let i = b * BLOCK;
        let x: [[__m128i; 4]; R] = from_fn(|r| widen(a[r].as_ptr().add(i)));
        for j in 0..4 {
            let wv = widen(w[j].as_ptr().add(i));
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
                let scale = _mm_set1_ps(sa[r][b] * sw[j][b]);
                acc[r][j] = _mm_add_ps(acc[r][j], _mm_mul_ps(_mm_cvtepi32_ps(s), scale));
            }
        }
    }
    from_fn(|r| {
        from_fn(|j| {
            let mut l = [0.0f32; 4];
            _mm_storeu_ps(l.as_mut_ptr(), acc[r][j]);
            (l[0] + l[1]) + (l[2] + l[3])
        })
    })
}

/// Plain code: block sums in i32, then the scaled sum per block.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn tile_portable<const R: usize>(
    a: [&[i8]; R],
    sa: [&[f32]; R],
    w: [&[i8]; 4],
    sw: [&[f32]; 4],
) -> [[f32; 4]; R] {
    from_fn(|r| {
        from_fn(|j| {
            (0..sa[r].len())
                .map(|b| {
                    let span = b * BLOCK..(b + 1) * BLOCK;
                    block_dot(&a[r][span.clone()], &w[j][span]) as f32 * (sa[r][b] * sw[j][b])
                })
                .sum()
        })
    })
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn tile<const R: usize>(
    a: [&[i8]; R],
    sa: [&[f32]; R],
    w: [&[i8]; 4],
    sw: [&[f32]; 4],
) -> [[f32; 4]; R] {
    tile_portable::<R>(a, sa, w, sw)
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
        assert!((q.scales[0] - 3.1 / 127.0).abs() < 1e-7);
        assert!((q.scales[1] - 12.7 / 127.0).abs() < 1e-7);
        assert_eq!(q.q[31], 127);
        assert_eq!(q.q[40], -127);
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
            linear(&q, &w, &sw, &mut out);
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
}
