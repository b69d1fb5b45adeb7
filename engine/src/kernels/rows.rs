//! Matrix products with int8 weights, one float32 scale per row (per output
//! channel, as a symmetric per-channel quantizer stores them), and float32
//! activations: the decoder's projections and its tied output head.
//!
//! Why float activations here, when the encoder quantizes its own: the
//! decoder's reference (onnxruntime on the same file) dequantizes the
//! weights and computes in float, and the shipped model must match it to
//! float rounding (logits within 1e-4, greedy tokens equal). Quantizing the
//! activations per block of 32 ([`super::blocks`], the path the 4-bit
//! formats use) moved shakespeare-llama's first-step logits by 3.1e-2
//! (greedy tokens still equal on the 10 golden prompts; tests/golden.rs).
//! The weights stay int8 in memory, read in place: a quarter of float32's
//! bytes, widened in registers.
//!
//! Tiles of R activation rows by four weight rows: each weight vector loaded
//! and widened serves R rows (R = 2 for a prompt, 1 for one new token).

use std::array::from_fn;

/// `out[r * n + c] = scales[c] * dot(x[r], w[c])` for the rows of `x` (each
/// `k` wide) and the `n = scales.len()` rows of `w`. Any `k` and `n`.
pub fn linear(x: &[f32], k: usize, w: &[i8], scales: &[f32], out: &mut [f32]) {
    let n = scales.len();
    assert!(k > 0 && w.len() == n * k && x.len() % k == 0);
    let rows = x.len() / k;
    assert!(out.len() == rows * n);
    let mut r = 0;
    while r + 2 <= rows {
        block::<2>(x, r, k, w, scales, out);
        r += 2;
    }
    if r < rows {
        block::<1>(x, r, k, w, scales, out);
    }
}

fn block<const R: usize>(x: &[f32], r: usize, k: usize, w: &[i8], scales: &[f32], out: &mut [f32]) {
    let n = scales.len();
    let a: [&[f32]; R] = from_fn(|i| &x[(r + i) * k..(r + i + 1) * k]);
    let mut c = 0;
    while c + 4 <= n {
        let ws: [&[i8]; 4] = from_fn(|j| &w[(c + j) * k..(c + j + 1) * k]);
        let sums = tile::<R>(a, ws);
        for (i, row) in sums.iter().enumerate() {
            for (j, &sum) in row.iter().enumerate() {
                out[(r + i) * n + c + j] = sum * scales[c + j];
            }
        }
        c += 4;
    }
    for c in c..n {
        for (i, row) in a.iter().enumerate() {
            out[(r + i) * n + c] = dot_scalar(row, &w[c * k..(c + 1) * k]) * scales[c];
        }
    }
}

fn dot_scalar(a: &[f32], w: &[i8]) -> f32 {
    a.iter().zip(w).map(|(&x, &q)| x * f32::from(q)).sum()
}

/// Horizontal sums of the accumulators plus the scalar tail past `main`.
fn finish<const R: usize>(
    lanes: [[[f32; 4]; 4]; R],
    a: [&[f32]; R],
    w: [&[i8]; 4],
    main: usize,
) -> [[f32; 4]; R] {
    from_fn(|r| {
        from_fn(|j| {
            let l = lanes[r][j];
            (l[0] + l[1]) + (l[2] + l[3]) + dot_scalar(&a[r][main..], &w[j][main..])
        })
    })
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn tile<const R: usize>(a: [&[f32]; R], w: [&[i8]; 4]) -> [[f32; 4]; R] {
    use core::arch::wasm32::*;
    let k = a[0].len();
    assert!(a.iter().all(|x| x.len() == k) && w.iter().all(|x| x.len() == k));
    let main = k - k % 8;
    let mut acc = [[f32x4_splat(0.0); 4]; R];
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= k, the length of every slice read
        // (asserted above); v128 loads need no alignment.
        let x: [(v128, v128); R] = from_fn(|r| unsafe {
            let p = a[r].as_ptr().add(i);
            (
                v128_load(p as *const v128),
                v128_load(p.add(4) as *const v128),
            )
        });
        for j in 0..4 {
            // SAFETY: as above, 8 bytes from i.
            let w16 = unsafe { i16x8_load_extend_i8x8(w[j].as_ptr().add(i)) };
            let lo = f32x4_convert_i32x4(i32x4_extend_low_i16x8(w16));
            let hi = f32x4_convert_i32x4(i32x4_extend_high_i16x8(w16));
            for r in 0..R {
                let p = f32x4_add(f32x4_mul(x[r].0, lo), f32x4_mul(x[r].1, hi));
                acc[r][j] = f32x4_add(acc[r][j], p);
            }
        }
        i += 8;
    }
    let lanes = from_fn(|r| {
        from_fn(|j| {
            let v = acc[r][j];
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        })
    });
    finish(lanes, a, w, main)
}

/// x86-64: the same algorithm in SSE4.1 (checked once; portable otherwise),
/// so the native bench measures what the worker runs.
#[cfg(target_arch = "x86_64")]
fn tile<const R: usize>(a: [&[f32]; R], w: [&[i8]; 4]) -> [[f32; 4]; R] {
    let k = a[0].len();
    assert!(a.iter().all(|x| x.len() == k) && w.iter().all(|x| x.len() == k));
    if super::sse41() {
        // SAFETY: the feature was just detected; lengths asserted above.
        unsafe { tile_sse41::<R>(a, w) }
    } else {
        tile_portable::<R>(a, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn tile_sse41<const R: usize>(a: [&[f32]; R], w: [&[i8]; 4]) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let k = a[0].len();
    let main = k - k % 8;
    let mut acc = [[_mm_setzero_ps(); 4]; R];
    let mut i = 0;
    while i < main {
        // SAFETY (caller): i + 8 <= k for every slice; unaligned loads.
        let x: [(__m128, __m128); R] = from_fn(|r| {
            let p = a[r].as_ptr().add(i);
            (_mm_loadu_ps(p), _mm_loadu_ps(p.add(4)))
        });
        for j in 0..4 {
            let w16 = _mm_cvtepi8_epi16(_mm_loadl_epi64(w[j].as_ptr().add(i) as *const __m128i));
            let lo = _mm_cvtepi32_ps(_mm_cvtepi16_epi32(w16));
            let hi = _mm_cvtepi32_ps(_mm_cvtepi16_epi32(_mm_srli_si128::<8>(w16)));
            for r in 0..R {
                let p = _mm_add_ps(_mm_mul_ps(x[r].0, lo), _mm_mul_ps(x[r].1, hi));
                acc[r][j] = _mm_add_ps(acc[r][j], p);
            }
        }
        i += 8;
    }
    let lanes = from_fn(|r| {
        from_fn(|j| {
            let mut l = [0.0f32; 4];
            _mm_storeu_ps(l.as_mut_ptr(), acc[r][j]);
            l
        })
    });
    finish(lanes, a, w, main)
}

/// The same lanes and order as the SIMD kernels, in plain code.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn tile_portable<const R: usize>(a: [&[f32]; R], w: [&[i8]; 4]) -> [[f32; 4]; R] {
    let k = a[0].len();
    let main = k - k % 8;
    let mut lanes = [[[0.0f32; 4]; 4]; R];
    for i in (0..main).step_by(8) {
        for j in 0..4 {
            for r in 0..R {
                for l in 0..4 {
                    let p = a[r][i + l] * f32::from(w[j][i + l])
                        + a[r][i + 4 + l] * f32::from(w[j][i + 4 + l]);
                    lanes[r][j][l] += p;
                }
            }
        }
    }
    finish(lanes, a, w, main)
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn tile<const R: usize>(a: [&[f32]; R], w: [&[i8]; 4]) -> [[f32; 4]; R] {
    tile_portable::<R>(a, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape the driver handles: paired and single rows, column
    /// groups and leftovers, k with and without a tail.
    #[test]
    fn equals_the_plain_sum_for_any_shape() {
        for (rows, n, k) in [(1, 4, 8), (3, 9, 21), (2, 8, 256), (5, 3, 7), (1, 13, 688)] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 37) % 19) as f32 * 0.25 - 2.0)
                .collect();
            let w: Vec<i8> = (0..n * k).map(|i| ((i * 53) % 255) as i32 as i8).collect();
            let scales: Vec<f32> = (0..n).map(|c| 0.01 * (c + 1) as f32).collect();
            let mut out = vec![0.0; rows * n];
            linear(&x, k, &w, &scales, &mut out);
            for r in 0..rows {
                for c in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| f64::from(x[r * k + i]) * f64::from(w[c * k + i]))
                        .sum::<f64>()
                        * f64::from(scales[c]);
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
