//! The arithmetic every engine shares: dynamic uint8 quantization and the
//! int8 x int16 product of the encoder, float32 tiles, int8-row weights with
//! float activations ([`rows`], the decoder's), norms, softmax, GELU, SiLU and
//! inline `exp`/`erf` (libm calls in wasm cost a fifth of a run).
//!
//! Each product exists as wasm simd128 and as the same algorithm in SSE4.1
//! natively (runtime-detected, portable fallback), so the native bench
//! measures what the worker runs.
//!
//! Why our own int8 product: tract 0.23.9 has no wasm int8 kernel (its
//! MatMulInteger ran at ~6 GMAC/s in wasm) and, natively, routes int8 to an
//! AVX2 i32 kernel that was 9x slower still; folding the weights to float32
//! instead costs four times the memory. Here the product is `i16 x i8 -> i32`
//! dot products, which wasm's `i32x4.dot_i16x8_s` does eight multiplies at a
//! time, with weights read in place from the module's data.
//!
//! Numerics follow onnxruntime's kernels for the same graphs (round half to
//! even, saturation, scale products in float32), so the integer sums are the
//! ones onnxruntime computes.

pub mod blocks;
pub mod panels;
pub mod rows;

/// Which dot-product kernels run: `wasm-simd128`, `x86-64-sse4.1` or
/// `portable` (reported by `/healthz`, so a build that lost the simd128
/// target feature shows it).
pub fn active() -> &'static str {
    if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        "wasm-simd128"
    } else if cfg!(target_arch = "x86_64") && sse41() {
        "x86-64-sse4.1"
    } else {
        "portable"
    }
}

pub(crate) fn sse41() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantizes `x` to uint8 with one scale and zero point for the whole
/// tensor, as ONNX DynamicQuantizeLinear does, and stores `q - zero_point`
/// (in -255..=255) as i16, the form the dot product wants. Returns the scale
/// (0 when `x` is all zeros: every product is then zero).
pub fn quantize(x: &[f32], out: &mut Vec<i16>) -> f32 {
    // Comparisons, not f32::min/max: those are libm calls in wasm (their
    // NaN rule is not wasm's), and were 8% of the encoder's time.
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in x {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    out.clear();
    let scale = (hi - lo) / 255.0;
    if !(scale > 0.0 && scale.is_finite()) {
        out.resize(x.len(), 0);
        return 0.0;
    }
    let zero = round_even(-lo / scale).clamp(0.0, 255.0);
    out.extend(x.iter().map(|&v| {
        let q = (round_even(v / scale) + zero).clamp(0.0, 255.0);
        (q - zero) as i16
    }));
    scale
}

/// Round half to even for |x| <= 2^22 (here |x| <= 255): adding and
/// subtracting 1.5 x 2^23 leaves no fraction bits, and IEEE addition rounds
/// ties to even. Inline on every target, where `round_ties_even` is a libm
/// call on baseline x86-64 (a tenth of the encoder's native time).
pub(crate) fn round_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// `out[r][c] = dot(x[r], w[c]) * x_scale * w_scales[c] + bias[c]` for the
/// rows of `x` (each `k` wide) and the `w_scales.len()` rows of `w`.
pub fn linear_i8(
    x: &[i16],
    x_scale: f32,
    k: usize,
    w: &[i8],
    w_scales: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    assert!(w_scales.len() == bias.len());
    tiled(x, w, k, out, dot_2x4, |sum, c| {
        sum as f32 * (x_scale * w_scales[c]) + bias[c]
    });
}

/// `out[r][c] = dot(x[r], w[c]) + bias[c]`, `w` one row of `k` per output.
pub fn linear_f32(x: &[f32], k: usize, w: &[f32], bias: &[f32], out: &mut [f32]) {
    tiled(x, w, k, out, dot_f32_2x4, |sum, c| sum + bias[c]);
}

/// A kernel computing one tile: two activation rows by four weight rows.
type Tile<A, W, S> = fn(&[A], &[A], [&[W]; 4]) -> [[S; 4]; 2];

/// Walks the output in tiles of two rows by four columns, so each weight
/// row loaded serves two activation rows: `kernel` returns a tile's dot
/// products, `finish(sum, column)` turns one into the output value.
fn tiled<A: Copy, W: Copy, S: Copy>(
    x: &[A],
    w: &[W],
    k: usize,
    out: &mut [f32],
    kernel: Tile<A, W, S>,
    finish: impl Fn(S, usize) -> f32,
) {
    assert!(k > 0 && k % 8 == 0 && w.len() % (4 * k) == 0 && x.len() % k == 0);
    let n = w.len() / k;
    let rows = x.len() / k;
    assert!(out.len() == rows * n);
    let mut r = 0;
    while r < rows {
        let pair = r + 1 < rows;
        let a0 = &x[r * k..(r + 1) * k];
        let a1 = if pair {
            &x[(r + 1) * k..(r + 2) * k]
        } else {
            a0
        };
        for c in (0..n).step_by(4) {
            let ws = [
                &w[c * k..(c + 1) * k],
                &w[(c + 1) * k..(c + 2) * k],
                &w[(c + 2) * k..(c + 3) * k],
                &w[(c + 3) * k..(c + 4) * k],
            ];
            let sums = kernel(a0, a1, ws);
            for (i, row) in sums.iter().enumerate().take(if pair { 2 } else { 1 }) {
                for (j, &sum) in row.iter().enumerate() {
                    out[(r + i) * n + c + j] = finish(sum, c + j);
                }
            }
        }
        r += if pair { 2 } else { 1 };
    }
}

/// Integer dot products of two activation rows with four weight rows.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dot_2x4(a0: &[i16], a1: &[i16], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
    use core::arch::wasm32::*;
    let k = a0.len();
    assert!(a1.len() == k && w.iter().all(|r| r.len() == k) && k % 8 == 0);
    let mut acc = [[i32x4_splat(0); 4]; 2];
    let mut i = 0;
    while i < k {
        // SAFETY: i + 8 <= k, the length of every slice read (asserted
        // above); v128 loads need no alignment.
        unsafe {
            let x0 = v128_load(a0.as_ptr().add(i) as *const v128);
            let x1 = v128_load(a1.as_ptr().add(i) as *const v128);
            for j in 0..4 {
                let wv = i16x8_load_extend_i8x8(w[j].as_ptr().add(i));
                acc[0][j] = i32x4_add(acc[0][j], i32x4_dot_i16x8(x0, wv));
                acc[1][j] = i32x4_add(acc[1][j], i32x4_dot_i16x8(x1, wv));
            }
        }
        i += 8;
    }
    let sum = |v: v128| {
        i32x4_extract_lane::<0>(v)
            + i32x4_extract_lane::<1>(v)
            + i32x4_extract_lane::<2>(v)
            + i32x4_extract_lane::<3>(v)
    };
    acc.map(|row| row.map(sum))
}

/// x86-64 with SSE4.1 (every x86-64 CPU of the last fifteen years): the
/// same 128-bit kernel as wasm's, instruction for instruction, so the native
/// bench measures the same algorithm. Checked once; portable otherwise.
#[cfg(target_arch = "x86_64")]
fn dot_2x4(a0: &[i16], a1: &[i16], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let k = a0.len();
    assert!(a1.len() == k && w.iter().all(|r| r.len() == k) && k % 8 == 0);
    if sse41() {
        // SAFETY: the feature was just detected; lengths asserted above.
        unsafe { dot_2x4_sse41(a0, a1, w) }
    } else {
        dot_2x4_portable(a0, a1, w)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn dot_2x4_sse41(a0: &[i16], a1: &[i16], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
    use std::arch::x86_64::*;
    let k = a0.len();
    let mut acc = [[_mm_setzero_si128(); 4]; 2];
    let mut i = 0;
    while i < k {
        // SAFETY (caller): i + 8 <= k for every slice; unaligned loads.
        let x0 = _mm_loadu_si128(a0.as_ptr().add(i) as *const __m128i);
        let x1 = _mm_loadu_si128(a1.as_ptr().add(i) as *const __m128i);
        for j in 0..4 {
            let wv = _mm_cvtepi8_epi16(_mm_loadl_epi64(w[j].as_ptr().add(i) as *const __m128i));
            acc[0][j] = _mm_add_epi32(acc[0][j], _mm_madd_epi16(x0, wv));
            acc[1][j] = _mm_add_epi32(acc[1][j], _mm_madd_epi16(x1, wv));
        }
        i += 8;
    }
    let mut out = [[0; 4]; 2];
    for r in 0..2 {
        for j in 0..4 {
            let mut lanes = [0i32; 4];
            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, acc[r][j]);
            out[r][j] = lanes.iter().sum();
        }
    }
    out
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn dot_2x4_portable(a0: &[i16], a1: &[i16], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
    let dot = |a: &[i16], b: &[i8]| -> i32 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum()
    };
    let mut out = [[0; 4]; 2];
    for j in 0..4 {
        out[0][j] = dot(a0, w[j]);
        out[1][j] = dot(a1, w[j]);
    }
    out
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn dot_2x4(a0: &[i16], a1: &[i16], w: [&[i8]; 4]) -> [[i32; 4]; 2] {
    dot_2x4_portable(a0, a1, w)
}

/// Float dot products of two activation rows with four weight rows.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dot_f32_2x4(a0: &[f32], a1: &[f32], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    use core::arch::wasm32::*;
    let k = a0.len();
    assert!(a1.len() == k && w.iter().all(|r| r.len() == k) && k % 4 == 0);
    let mut acc = [[f32x4_splat(0.0); 4]; 2];
    let mut i = 0;
    while i < k {
        // SAFETY: i + 4 <= k, the length of every slice read (asserted
        // above); v128 loads need no alignment.
        unsafe {
            let x0 = v128_load(a0.as_ptr().add(i) as *const v128);
            let x1 = v128_load(a1.as_ptr().add(i) as *const v128);
            for j in 0..4 {
                let wv = v128_load(w[j].as_ptr().add(i) as *const v128);
                acc[0][j] = f32x4_add(acc[0][j], f32x4_mul(x0, wv));
                acc[1][j] = f32x4_add(acc[1][j], f32x4_mul(x1, wv));
            }
        }
        i += 4;
    }
    let sum = |v: v128| {
        (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<1>(v))
            + (f32x4_extract_lane::<2>(v) + f32x4_extract_lane::<3>(v))
    };
    acc.map(|row| row.map(sum))
}

/// The same kernel in SSE (part of every x86-64 CPU).
#[cfg(target_arch = "x86_64")]
fn dot_f32_2x4(a0: &[f32], a1: &[f32], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let k = a0.len();
    assert!(a1.len() == k && w.iter().all(|r| r.len() == k) && k % 4 == 0);
    let mut out = [[0.0; 4]; 2];
    // SAFETY: SSE is in the x86-64 baseline; i + 4 <= k for every slice
    // read (asserted above); unaligned loads.
    unsafe {
        let mut acc = [[_mm_setzero_ps(); 4]; 2];
        let mut i = 0;
        while i < k {
            let x0 = _mm_loadu_ps(a0.as_ptr().add(i));
            let x1 = _mm_loadu_ps(a1.as_ptr().add(i));
            for j in 0..4 {
                let wv = _mm_loadu_ps(w[j].as_ptr().add(i));
                acc[0][j] = _mm_add_ps(acc[0][j], _mm_mul_ps(x0, wv));
                acc[1][j] = _mm_add_ps(acc[1][j], _mm_mul_ps(x1, wv));
            }
            i += 4;
        }
        for r in 0..2 {
            for j in 0..4 {
                let mut lanes = [0.0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), acc[r][j]);
                out[r][j] = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
            }
        }
    }
    out
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn dot_f32_2x4(a0: &[f32], a1: &[f32], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let mut out = [[0.0; 4]; 2];
    for j in 0..4 {
        out[0][j] = dot(a0, w[j]);
        out[1][j] = dot(a1, w[j]);
    }
    out
}

/// Float dot product in eight lanes (vectorized on both targets).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Layer normalization of each `gamma.len()`-wide row, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// RMS normalization of each `weight.len()`-wide row, in place, as the
/// Llama graphs compute it: `x / sqrt(mean(x^2) + eps) * weight` (a division,
/// not a multiplication by the reciprocal, to round as the reference does).
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let den = (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v / den * w;
        }
    }
}

/// SwiGLU's gate: `gate = silu(gate) * up`, with `silu(g) = g * sigmoid(g)`
/// and the inline `exp` (the sigmoid is 1 / (1 + e^-g)).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g * (1.0 / (1.0 + exp(-*g))) * u;
    }
}

/// `x += y`, element by element (residual connections).
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Softmax of one row, in place.
pub fn softmax(row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for &v in row.iter() {
        if v > max {
            max = v;
        }
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// GELU as the graph computes it: `x * 0.5 * (1 + erf(x / sqrt 2))`.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = *v * (erf(*v / std::f32::consts::SQRT_2) + 1.0) * 0.5;
    }
}

/// e^x within a few ulps, inline and branch-free (so it vectorizes):
/// `f32::exp` is a libm call in wasm, and softmax and GELU spent a fifth of
/// a 128-token embedding in it. e^x = 2^n e^r with n = round(x / ln 2) and
/// |r| <= ln(2)/2, where a degree-6 Taylor polynomial is exact to 1.2e-7.
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let n = round_even(x * std::f32::consts::LOG2_E);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7 in exact
/// arithmetic, < 5e-7 evaluated in float32: a few ulps of `1 + erf`, which is
/// all GELU uses): one `exp` and a division, where libm's `erff` was 10% of
/// the encoder's wasm time.
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_matches_the_onnx_definition() {
        // min -1, max 2: scale 3/255, zero point round(255/3) = 85.
        let mut q = Vec::new();
        let s = quantize(&[-1.0, 0.0, 2.0, 0.5], &mut q);
        assert!((s - 3.0 / 255.0).abs() < 1e-9);
        assert_eq!(q, vec![-85, 0, 170, 42]);
        assert_eq!(quantize(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, vec![0; 4]);
    }

    #[test]
    fn exp_is_within_4_ulp_of_std() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0 + 0.003;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want,
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn erf_is_within_5e_7_of_libm() {
        let worst = (-4000..=4000)
            .map(|i| i as f32 / 800.0)
            .map(|x| (erf(x) - libm::erff(x)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 5e-7, "worst {worst}");
    }

    #[test]
    fn rounding_is_half_to_even() {
        for x in [
            -255.0f32, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4999, 254.5, 3.7,
        ] {
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn float_product_equals_the_plain_sum() {
        let (k, n, rows) = (16, 8, 3);
        let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32).collect();
        let mut out = vec![0.0; rows * n];
        linear_f32(&x, k, &w, &bias, &mut out);
        for r in 0..rows {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + bias[c];
                assert_eq!(out[r * n + c], want, "row {r} col {c}");
            }
        }
    }

    #[test]
    fn int8_product_equals_the_plain_sum() {
        let (k, n, rows) = (16, 8, 3);
        let x: Vec<i16> = (0..rows * k).map(|i| (i as i16 * 37 % 511) - 255).collect();
        let w: Vec<i8> = (0..n * k)
            .map(|i| (i as i32 * 53 % 255 - 127) as i8)
            .collect();
        let scales: Vec<f32> = (0..n).map(|c| 0.01 * (c + 1) as f32).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32).collect();
        let mut out = vec![0.0; rows * n];
        linear_i8(&x, 0.5, k, &w, &scales, &bias, &mut out);
        for r in 0..rows {
            for c in 0..n {
                let sum: i32 = (0..k)
                    .map(|i| i32::from(x[r * k + i]) * i32::from(w[c * k + i]))
                    .sum();
                let want = sum as f32 * (0.5 * scales[c]) + bias[c];
                assert_eq!(out[r * n + c], want, "row {r} col {c}");
            }
        }
    }
}
