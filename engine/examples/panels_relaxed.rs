//! An experiment, not the engine's arithmetic: the one-row Q4_1 product
//! with int8 activations and wasm's `i32x4.relaxed_dot_i8x16_i7x16_add_s`
//! (16 multiply-adds an instruction where `i32x4.dot_i16x8_s` does 8), to
//! weigh its speed against the bit-exact int16 kernels. Int8 activations
//! change the results (an earlier measurement: perplexity +0.03%, but
//! greedy replies equal in 5 of 12 instead of 12 of 12), and without
//! AVX-VNNI V8 lowers the instruction to pmaddubsw, pmaddwd, paddd.
//!
//! The module has panels_wasm.rs's exports (`check`, `prepare`, `run`), so
//! examples/panels_workerd.mjs times it beside that module; `prepare`
//! accepts Q4_1 and one row only. Needs an engine with relaxed SIMD
//! (workerd; node 20 with `--experimental-wasm-relaxed-simd`):
//! `cargo build -p edgeinfer-engine --release --example panels_relaxed --target wasm32-unknown-unknown`

#[cfg(target_arch = "wasm32")]
#[path = "common/panels.rs"]
#[allow(dead_code)]
mod common;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use core::arch::wasm32::*;

    use edgeinfer_engine::kernels::panels::{f16_to_f32, PanelKind};

    use super::common;

    const BLOCK: usize = 32;
    /// Q4_1 panel block: four rows of 16 nibble bytes (byte `i`: element
    /// `i` low, `i + 16` high), four f16 `d`, four f16 `m`.
    const BLOCK_BYTES: usize = 80;

    /// Int8 activations, elements in their natural order, per block of 32
    /// a scale and the sum as the products see it.
    struct Acts8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        sums: Vec<f32>,
    }

    fn quantize(x: &[f32]) -> Acts8 {
        let mut a = Acts8 {
            q: Vec::new(),
            scales: Vec::new(),
            sums: Vec::new(),
        };
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let q: Vec<i8> = block.iter().map(|v| (v * inv).round() as i8).collect();
            a.sums
                .push(q.iter().map(|&v| i32::from(v)).sum::<i32>() as f32 * scale);
            a.q.extend(q);
            a.scales.push(scale);
        }
        a
    }

    /// `out[c] = x . w[c]` for one int8 activation row and a Q4_1 panel matrix.
    #[target_feature(enable = "simd128,relaxed-simd")]
    unsafe fn linear(panels: &[u8], n: usize, k: usize, a: &Acts8, out: &mut [f32]) {
        let blocks = k / BLOCK;
        assert!(panels.len() == n.div_ceil(4) * blocks * BLOCK_BYTES && a.q.len() == k);
        let (nibble, zero) = (u8x16_splat(15), i32x4_splat(0));
        let (bits, scale2) = (u32x4_splat(0x8fff_e000), f32x4_splat(5.192_297e33));
        let f16x4 = |p: *const u8| {
            let w = i32x4_shl(i32x4_load_extend_i16x4(p as *const i16), 13);
            f32x4_mul(v128_and(w, bits), scale2)
        };
        for (p, panel) in panels.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let mut acc = f32x4_splat(0.0);
            for b in 0..blocks {
                let q = panel.as_ptr().add(b * BLOCK_BYTES);
                let x = a.q.as_ptr().add(b * BLOCK) as *const v128;
                let (lo, hi) = (v128_load(x), v128_load(x.add(1)));
                let row = |j: usize| {
                    let v = v128_load(q.add(16 * j) as *const v128);
                    let w_lo = v128_and(v, nibble);
                    let w_hi = v128_and(u16x8_shr(v, 4), nibble);
                    let s = i32x4_relaxed_dot_i8x16_i7x16_add(lo, w_lo, zero);
                    i32x4_relaxed_dot_i8x16_i7x16_add(hi, w_hi, s)
                };
                let fold = |a: v128, b: v128| {
                    i32x4_add(
                        i32x4_shuffle::<0, 4, 1, 5>(a, b),
                        i32x4_shuffle::<2, 6, 3, 7>(a, b),
                    )
                };
                let (p01, p23) = (fold(row(0), row(1)), fold(row(2), row(3)));
                let i = i32x4_add(
                    i64x2_shuffle::<0, 2>(p01, p23),
                    i64x2_shuffle::<1, 3>(p01, p23),
                );
                let (d, m) = (f16x4(q.add(64)), f16x4(q.add(72)));
                let scale = f32x4_mul(d, f32x4_splat(*a.scales.get_unchecked(b)));
                acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(i), scale));
                acc = f32x4_add(acc, f32x4_mul(m, f32x4_splat(*a.sums.get_unchecked(b))));
            }
            let lanes = [
                f32x4_extract_lane::<0>(acc),
                f32x4_extract_lane::<1>(acc),
                f32x4_extract_lane::<2>(acc),
                f32x4_extract_lane::<3>(acc),
            ];
            let cols = (n - 4 * p).min(4);
            out[4 * p..4 * p + cols].copy_from_slice(&lanes[..cols]);
        }
    }

    /// The same products element by element (`f64`, to compare with).
    fn reference(panels: &[u8], n: usize, k: usize, a: &Acts8) -> Vec<f64> {
        let blocks = k / BLOCK;
        (0..n)
            .map(|c| {
                let panel = &panels[c / 4 * blocks * BLOCK_BYTES..];
                let j = c % 4;
                (0..blocks)
                    .map(|b| {
                        let q = &panel[b * BLOCK_BYTES..];
                        let f16 = |at: usize| {
                            f64::from(f16_to_f32(u16::from_le_bytes([q[at], q[at + 1]])))
                        };
                        let (d, m) = (f16(64 + 2 * j), f16(72 + 2 * j));
                        (0..BLOCK)
                            .map(|e| {
                                let byte = q[16 * j + e % 16];
                                let code = if e < 16 { byte & 15 } else { byte >> 4 };
                                let x = f64::from(a.q[b * BLOCK + e]) * f64::from(a.scales[b]);
                                x * (f64::from(code) * d + m)
                            })
                            .sum::<f64>()
                    })
                    .sum()
            })
            .collect()
    }

    static mut PREPARED: Option<(Vec<u8>, usize, usize, Acts8)> = None;

    fn operands(n: usize, k: usize) -> (Vec<u8>, Acts8) {
        let mut rng = common::Rng::new(1);
        let packed =
            common::timed_matrix(PanelKind::Q4_1, n, k, &mut rng, false).expect("whole blocks");
        let x: Vec<f32> = (0..k).map(|_| rng.next() as f32 / 4e9 - 0.5).collect();
        (packed, quantize(&x))
    }

    /// 1 when the kernel computes its (int8) products to float32 accuracy.
    #[no_mangle]
    pub extern "C" fn check() -> u32 {
        let (n, k) = (13, 256);
        let (packed, a) = operands(n, k);
        let mut out = vec![0.0f32; n];
        // SAFETY: the module is built for wasm with simd128; relaxed SIMD
        // is validated by the engine when the module compiles.
        unsafe { linear(&packed, n, k, &a, &mut out) };
        let want = reference(&packed, n, k, &a);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let close = out
            .iter()
            .zip(&want)
            .all(|(&o, &w)| (f64::from(o) - w).abs() <= 1e-5 * scale.max(1e-30));
        u32::from(close)
    }

    #[no_mangle]
    pub extern "C" fn prepare(kind: u32, rows: u32, n: u32, k: u32) -> u32 {
        let (n, k) = (n as usize, k as usize);
        if PanelKind::ALL.get(kind as usize) != Some(&PanelKind::Q4_1)
            || rows != 1
            || k % BLOCK != 0
        {
            return 0;
        }
        let (packed, a) = operands(n, k);
        // SAFETY: a single-threaded module; nothing else holds PREPARED.
        unsafe { *core::ptr::addr_of_mut!(PREPARED) = Some((packed, n, k, a)) };
        1
    }

    #[no_mangle]
    pub extern "C" fn run(reps: u32) -> f32 {
        // SAFETY: as in `prepare`.
        let Some((packed, n, k, a)) = (unsafe { &*core::ptr::addr_of!(PREPARED) }) else {
            return f32::NAN;
        };
        let mut out = vec![0.0f32; *n];
        for _ in 0..reps {
            // SAFETY: as in `check`.
            unsafe { linear(packed, *n, *k, a, &mut out) };
            core::hint::black_box(&out);
        }
        out[0]
    }
}
