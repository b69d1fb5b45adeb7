//! The panel kernels, written once over the few vector operations they use
//! ([`Isa`]), and those operations in wasm simd128 and in SSE4.1: the x86-64
//! path is the wasm path instruction for instruction, so the native bench
//! and tests measure and check what the worker runs.
//!
//! What V8 makes of the wasm matters as much as the wasm (read with
//! `node --print-wasm-code`, and workerd's code copied out of its memory):
//! workerd bounds-checks every load (a compare and branch each), rebuilds a
//! vector constant where it is used unless it comes from outside the loop,
//! and node 20's V8 issues a loop's loads before its arithmetic, so what is
//! loaded stays live (and spills). Hence: few loads a block, constants made
//! once ([`Consts`]), each kernel a function of its own (`tile_wasm`,
//! `row_wasm`), and nothing per panel that V8 turns into a call. The
//! integer work itself (per row and 32 weights: unpacking, four pairwise
//! products, three additions, then the folds) is already about as short as
//! int16 activations allow; other layouts measured (rows in lanes, with
//! activation pairs splatted) did no better in either V8.

use super::{Acts, PanelKind, BLOCK, PANEL};

/// 128-bit vector operations (all `unsafe`: they read raw pointers or need
/// the target feature). `I` holds integers (i16x8 or i32x4), `F` f32x4.
pub(super) trait Isa {
    type I: Copy;
    type F: Copy;
    /// 16 bytes.
    unsafe fn load(p: *const u8) -> Self::I;
    /// 8 bytes zero-extended to u16x8.
    unsafe fn load_u8x8(p: *const u8) -> Self::I;
    /// 4 bytes zero-extended to i32x4.
    unsafe fn u8x4(p: *const u8) -> Self::I;
    /// 4 bytes sign-extended to i32x4.
    unsafe fn i8x4(p: *const u8) -> Self::I;
    unsafe fn f32x4(p: *const u8) -> Self::F;
    /// Four f16 as float32 (see [`super::f16_to_f32`]), given
    /// [`F16_BITS`] and [`super::F16_SCALE`] splatted.
    unsafe fn f16x4(p: *const u8, bits: Self::I, scale: Self::F) -> Self::F;
    unsafe fn splat32(v: u32) -> Self::I;
    unsafe fn splat16(v: i16) -> Self::I;
    /// Bytes 0..8 (8..16) sign-extended to i16x8.
    unsafe fn widen_lo(v: Self::I) -> Self::I;
    unsafe fn widen_hi(v: Self::I) -> Self::I;
    unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn sub16(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn shr16<const N: i32>(a: Self::I) -> Self::I;
    unsafe fn shl16<const N: i32>(a: Self::I) -> Self::I;
    /// Pairwise i16 products summed into i32x4.
    unsafe fn madd(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn add32(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn mul32(a: Self::I, b: Self::I) -> Self::I;
    /// Two rows' partial sums folded, lanes `[a0+a2, b0+b2, a1+a3, b1+b3]`.
    unsafe fn fold(a: Self::I, b: Self::I) -> Self::I;
    /// Two folds into the four rows' sums `[s0, s1, s2, s3]`.
    unsafe fn join(p01: Self::I, p23: Self::I) -> Self::I;
    unsafe fn cvt(a: Self::I) -> Self::F;
    unsafe fn fmul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fadd(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fsub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn fsplat(v: f32) -> Self::F;
    unsafe fn lanes(a: Self::F) -> [f32; PANEL];
}

/// f16 bits sign-extended to i32 and shifted left by 13 hold the sign at
/// bit 31 and the magnitude's 15 bits at 13..27 (where
/// [`super::f16_to_f32`] places them): this keeps just those. Times 2^112
/// that is the f16's value, the sign carried through the exact product:
/// three operations where masking sign and magnitude apart took seven.
const F16_BITS: u32 = 0x8fff_e000;

/// The vector constants of the kernels, made once per tile and hidden from
/// the compilers: V8 otherwise built each one again (three instructions) in
/// every iteration of the block loop.
struct Consts<S: Isa> {
    nibble: S::I,
    sixteen: S::I,
    f16_bits: S::I,
    f16_scale: S::F,
}

impl<S: Isa> Consts<S> {
    #[inline(always)]
    unsafe fn new() -> Self {
        core::hint::black_box(Consts {
            nibble: S::splat16(15),
            sixteen: S::splat16(16),
            f16_bits: S::splat32(F16_BITS),
            f16_scale: S::fsplat(super::F16_SCALE),
        })
    }

    #[inline(always)]
    unsafe fn f16x4(&self, p: *const u8) -> S::F {
        S::f16x4(p, self.f16_bits, self.f16_scale)
    }
}

/// The 32 int16 quants of activation block `b` of a row.
#[inline(always)]
unsafe fn acts<S: Isa>(q: &[i16], b: usize) -> [S::I; 4] {
    let p = opaque(q.as_ptr() as *const u8, 2 * b * BLOCK);
    [
        S::load(p),
        S::load(p.add(16)),
        S::load(p.add(32)),
        S::load(p.add(48)),
    ]
}

/// Bit `p` of each i16 lane moved to bit 4 (the other bits are masked
/// off by the caller): one shift by a constant.
#[inline(always)]
unsafe fn to_bit4<S: Isa>(h: S::I, p: usize) -> S::I {
    match p {
        0 => S::shl16::<4>(h),
        1 => S::shl16::<3>(h),
        2 => S::shl16::<2>(h),
        3 => S::shl16::<1>(h),
        4 => h,
        5 => S::shr16::<1>(h),
        6 => S::shr16::<2>(h),
        7 => S::shr16::<3>(h),
        8 => S::shr16::<4>(h),
        9 => S::shr16::<5>(h),
        10 => S::shr16::<6>(h),
        11 => S::shr16::<7>(h),
        12 => S::shr16::<8>(h),
        13 => S::shr16::<9>(h),
        14 => S::shr16::<10>(h),
        _ => S::shr16::<11>(h),
    }
}

/// Row `j`'s 32 integer weights of the four rows' values at `q`, as four
/// int16x8 in [`super::ORDER`].
#[inline(always)]
unsafe fn weights<S: Isa>(kind: PanelKind, k: &Consts<S>, q: *const u8, j: usize) -> [S::I; 4] {
    if kind == PanelKind::Q8 {
        let lo = S::load(q.add(j * BLOCK));
        let hi = S::load(q.add(j * BLOCK + 16));
        return [
            S::widen_lo(lo),
            S::widen_hi(lo),
            S::widen_lo(hi),
            S::widen_hi(hi),
        ];
    }
    // As int16 lanes each holding bytes 2l and 2l + 1: the low nibbles of
    // the even bytes, their high nibbles, the low nibbles of the odd bytes,
    // their high nibbles.
    let v = S::load(q.add(j * BLOCK / 2));
    let nibble = k.nibble;
    let n = [
        S::and(v, nibble),
        S::and(S::shr16::<4>(v), nibble),
        S::and(S::shr16::<8>(v), nibble),
        S::shr16::<12>(v),
    ];
    let high = q.add(PANEL * BLOCK / 2);
    match kind {
        PanelKind::Q4_0 => n.map(|n| S::sub16(n, S::splat16(8))),
        PanelKind::Q5_0 | PanelKind::Q5_1 | PanelKind::Q5K => {
            // The four rows' fifth bits, bit 4j + v of lane l for row j's
            // vector v (see `PanelKind::Q5_0`): a shift and a mask each.
            let h = S::load(high);
            let v = |v: usize| S::and(to_bit4::<S>(h, 4 * j + v), k.sixteen);
            match kind {
                // Stored inverted: code - 16 = nibble - 16 (1 - bit).
                PanelKind::Q5_0 => [0, 1, 2, 3].map(|i| S::sub16(n[i], v(i))),
                _ => [0, 1, 2, 3].map(|i| S::or(n[i], v(i))),
            }
        }
        PanelKind::Q6K => {
            let h = S::load_u8x8(high.add(8 * j));
            let w = [
                S::or(n[0], S::shl16::<4>(S::and(h, S::splat16(3)))),
                S::or(n[1], S::shl16::<2>(S::and(h, S::splat16(12)))),
                S::or(n[2], S::and(h, S::splat16(48))),
                S::or(n[3], S::shr16::<2>(S::and(h, S::splat16(192)))),
            ];
            w.map(|w| S::sub16(w, S::splat16(32)))
        }
        _ => n,
    }
}

/// A row's dot with one weight row: the whole block's partial sums, or
/// (Q6_K) the two halves' (runs 0 and 2 are elements 0..16).
#[inline(always)]
unsafe fn dot<S: Isa>(split: bool, x: &[S::I; 4], w: &[S::I; 4]) -> (S::I, S::I) {
    let (m0, m1, m2, m3) = (
        S::madd(x[0], w[0]),
        S::madd(x[1], w[1]),
        S::madd(x[2], w[2]),
        S::madd(x[3], w[3]),
    );
    if split {
        (S::add32(m0, m2), S::add32(m1, m3))
    } else {
        let all = S::add32(S::add32(m0, m1), S::add32(m2, m3));
        (all, all)
    }
}

/// The panel block's per-row scale vectors: `d` and the minimum (`m`, or
/// `dmin`; zero when the format has none).
#[inline(always)]
unsafe fn scales<S: Isa>(kind: PanelKind, k: &Consts<S>, tail: *const u8) -> (S::F, S::F) {
    match kind {
        PanelKind::Q8 => (S::f32x4(tail), S::fsplat(0.0)),
        PanelKind::Q4_0 | PanelKind::Q5_0 => (k.f16x4(tail), S::fsplat(0.0)),
        PanelKind::Q4_1 | PanelKind::Q5_1 => (k.f16x4(tail), k.f16x4(tail.add(2 * PANEL))),
        PanelKind::Q4K | PanelKind::Q5K => (
            S::f32x4(tail.add(16 * PANEL)),
            S::f32x4(tail.add(20 * PANEL)),
        ),
        PanelKind::Q6K => (S::f32x4(tail.add(16 * PANEL)), S::fsplat(0.0)),
    }
}

/// One block's four sums (`lo`; `hi` the second halves' for Q6_K) into
/// the accumulator, as the module's definition says.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn finish<S: Isa>(
    kind: PanelKind,
    acc: S::F,
    tail: *const u8,
    sub: usize,
    (d, m): (S::F, S::F),
    (lo, hi): (S::I, S::I),
    scale: f32,
    sum: f32,
) -> S::F {
    let scale = S::fmul(d, S::fsplat(scale));
    match kind {
        PanelKind::Q4_1 | PanelKind::Q5_1 => {
            let acc = S::fadd(acc, S::fmul(S::cvt(lo), scale));
            S::fadd(acc, S::fmul(m, S::fsplat(sum)))
        }
        PanelKind::Q4K | PanelKind::Q5K => {
            let sc = S::u8x4(tail.add(PANEL * sub));
            let mn = S::u8x4(tail.add(8 * PANEL + PANEL * sub));
            let acc = S::fadd(acc, S::fmul(S::cvt(S::mul32(lo, sc)), scale));
            S::fsub(acc, S::fmul(S::fmul(m, S::cvt(mn)), S::fsplat(sum)))
        }
        PanelKind::Q6K => {
            let a = S::i8x4(tail.add(2 * PANEL * sub));
            let b = S::i8x4(tail.add(2 * PANEL * sub + PANEL));
            let i = S::fadd(S::cvt(S::mul32(lo, a)), S::cvt(S::mul32(hi, b)));
            S::fadd(acc, S::fmul(i, scale))
        }
        _ => S::fadd(acc, S::fmul(S::cvt(lo), scale)),
    }
}

/// One panel by `R` activation rows, kind `K` ([`PanelKind::from_id`]).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) unsafe fn tile<S: Isa, const K: u8, const R: usize>(
    panel: &[u8],
    a: &Acts<R>,
    blocks: usize,
) -> [[f32; PANEL]; R] {
    let kind = PanelKind::from_id(K);
    let (subs, sub_bytes, bb) = (kind.subs(), kind.sub_bytes(), kind.block_bytes());
    let split = kind == PanelKind::Q6K;
    let mut acc = [S::fsplat(0.0); R];
    let k = Consts::<S>::new();
    for pb in 0..blocks / subs {
        let block = opaque(panel.as_ptr(), pb * bb);
        let tail = block.add(subs * sub_bytes);
        let dm = scales::<S>(kind, &k, tail);
        for sub in 0..subs {
            let b = pb * subs + sub;
            let q = block.add(sub * sub_bytes);
            // One weight row at a time, each row's sums folded as soon as
            // a pair is done: few vectors live at once.
            let pair = |x: (S::I, S::I), y: (S::I, S::I)| match split {
                true => (S::fold(x.0, y.0), S::fold(x.1, y.1)),
                false => (S::fold(x.0, y.0), S::fold(x.0, y.0)),
            };
            let w = weights::<S>(kind, &k, q, 0);
            let s0: [_; R] = core::array::from_fn(|r| dot::<S>(split, &acts::<S>(a.q[r], b), &w));
            let w = weights::<S>(kind, &k, q, 1);
            let p01: [_; R] =
                core::array::from_fn(|r| pair(s0[r], dot::<S>(split, &acts::<S>(a.q[r], b), &w)));
            let w = weights::<S>(kind, &k, q, 2);
            let s2: [_; R] = core::array::from_fn(|r| dot::<S>(split, &acts::<S>(a.q[r], b), &w));
            let w = weights::<S>(kind, &k, q, 3);
            for r in 0..R {
                let p23 = pair(s2[r], dot::<S>(split, &acts::<S>(a.q[r], b), &w));
                let lo = S::join(p01[r].0, p23.0);
                let hi = match split {
                    true => S::join(p01[r].1, p23.1),
                    false => lo,
                };
                acc[r] = finish::<S>(
                    kind,
                    acc[r],
                    tail,
                    sub,
                    dm,
                    (lo, hi),
                    // SAFETY: `Acts::new` checked each row has `blocks`.
                    *a.scales[r].get_unchecked(b),
                    *a.sums[r].get_unchecked(b),
                );
            }
        }
    }
    core::array::from_fn(|r| S::lanes(acc[r]))
}

/// `base + offset`, hidden from LLVM's loop strength reduction: the
/// addresses it rebuilds lose the no-wrap flag wasm32 needs to fold a
/// load's constant offset into the instruction, so every load of a block
/// cost an extra add (and in V8 an extra `lea` and a register). Through an
/// integer the block's base is opaque to it and the offsets stay folded.
#[inline(always)]
fn opaque(base: *const u8, offset: usize) -> *const u8 {
    core::ptr::with_exposed_provenance(base.expose_provenance() + offset)
}

/// One activation row by every panel of `panels` (`n` weight rows), into
/// `out`: [`tile`] panel after panel inside one function, so the per-call
/// work (a call, the activation row's views and checks, the constants) is
/// paid once per product instead of once per panel, which on SmolLM2's
/// 576-wide matrices is 18 blocks.
#[inline(always)]
pub(super) unsafe fn row<S: Isa, const K: u8>(
    panels: &[u8],
    a: &Acts<1>,
    blocks: usize,
    out: &mut [f32],
) {
    let kind = PanelKind::from_id(K);
    let panel_bytes = blocks / kind.subs() * kind.block_bytes();
    for (p, panel) in panels.chunks_exact(panel_bytes).enumerate() {
        let [sums] = tile::<S, K, 1>(panel, a, blocks);
        super::store(out, p * PANEL, &sums);
    }
}

/// [`row`] in wasm, a function of its own (see [`tile_wasm`]).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(never)]
pub(super) unsafe fn row_wasm<const K: u8>(
    panels: &[u8],
    a: &Acts<1>,
    blocks: usize,
    out: &mut [f32],
) {
    row::<Wasm, K>(panels, a, blocks, out)
}

/// The wasm kernel of one kind and tile height, as a function of its own:
/// inlined into [`super::linear`] with every other kind's, V8's register
/// allocator spilled even the accumulator of the one-row loop.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(never)]
pub(super) unsafe fn tile_wasm<const K: u8, const R: usize>(
    panel: &[u8],
    a: &Acts<R>,
    blocks: usize,
) -> [[f32; PANEL]; R] {
    tile::<Wasm, K, R>(panel, a, blocks)
}

/// The vector path's f16 conversion of the four f16 at `p` (`None` where
/// there is none): checked against [`super::f16_to_f32`] on every value.
pub(super) fn f16x4(p: &[u8; 8]) -> Option<[f32; PANEL]> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: 8 bytes are read; simd128 is enabled.
        Some(unsafe { Wasm::lanes(Consts::<Wasm>::new().f16x4(p.as_ptr())) })
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "sse4.1")]
        unsafe fn f16x4_sse41(p: &[u8; 8]) -> [f32; PANEL] {
            sse::Sse41::lanes(Consts::<sse::Sse41>::new().f16x4(p.as_ptr()))
        }
        // SAFETY: 8 bytes are read; SSE4.1 is detected first.
        super::super::sse41().then(|| unsafe { f16x4_sse41(p) })
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = p;
        None
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(super) use wasm::Wasm;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;

    use super::super::PANEL;
    use super::Isa;

    pub(in super::super) struct Wasm;

    impl Isa for Wasm {
        type I = v128;
        type F = v128;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> v128 {
            v128_load(p as *const v128)
        }
        #[inline(always)]
        unsafe fn load_u8x8(p: *const u8) -> v128 {
            u16x8_load_extend_u8x8(p)
        }
        #[inline(always)]
        unsafe fn u8x4(p: *const u8) -> v128 {
            u32x4_extend_low_u16x8(u16x8_extend_low_u8x16(v128_load32_zero(p as *const u32)))
        }
        #[inline(always)]
        unsafe fn i8x4(p: *const u8) -> v128 {
            i32x4_extend_low_i16x8(i16x8_extend_low_i8x16(v128_load32_zero(p as *const u32)))
        }
        #[inline(always)]
        unsafe fn f32x4(p: *const u8) -> v128 {
            v128_load(p as *const v128)
        }
        #[inline(always)]
        unsafe fn f16x4(p: *const u8, bits: v128, scale: v128) -> v128 {
            let w = i32x4_shl(i32x4_load_extend_i16x4(p as *const i16), 13);
            f32x4_mul(v128_and(w, bits), scale)
        }
        #[inline(always)]
        unsafe fn splat32(v: u32) -> v128 {
            u32x4_splat(v)
        }
        #[inline(always)]
        unsafe fn splat16(v: i16) -> v128 {
            i16x8_splat(v)
        }
        #[inline(always)]
        unsafe fn widen_lo(v: v128) -> v128 {
            i16x8_extend_low_i8x16(v)
        }
        #[inline(always)]
        unsafe fn widen_hi(v: v128) -> v128 {
            i16x8_extend_high_i8x16(v)
        }
        #[inline(always)]
        unsafe fn and(a: v128, b: v128) -> v128 {
            v128_and(a, b)
        }
        #[inline(always)]
        unsafe fn or(a: v128, b: v128) -> v128 {
            v128_or(a, b)
        }
        #[inline(always)]
        unsafe fn sub16(a: v128, b: v128) -> v128 {
            i16x8_sub(a, b)
        }
        #[inline(always)]
        unsafe fn shr16<const N: i32>(a: v128) -> v128 {
            u16x8_shr(a, N as u32)
        }
        #[inline(always)]
        unsafe fn shl16<const N: i32>(a: v128) -> v128 {
            i16x8_shl(a, N as u32)
        }
        #[inline(always)]
        unsafe fn madd(a: v128, b: v128) -> v128 {
            i32x4_dot_i16x8(a, b)
        }
        #[inline(always)]
        unsafe fn add32(a: v128, b: v128) -> v128 {
            i32x4_add(a, b)
        }
        #[inline(always)]
        unsafe fn mul32(a: v128, b: v128) -> v128 {
            i32x4_mul(a, b)
        }
        #[inline(always)]
        unsafe fn fold(a: v128, b: v128) -> v128 {
            i32x4_add(
                i32x4_shuffle::<0, 4, 1, 5>(a, b),
                i32x4_shuffle::<2, 6, 3, 7>(a, b),
            )
        }
        #[inline(always)]
        unsafe fn join(p01: v128, p23: v128) -> v128 {
            i32x4_add(
                i64x2_shuffle::<0, 2>(p01, p23),
                i64x2_shuffle::<1, 3>(p01, p23),
            )
        }
        #[inline(always)]
        unsafe fn cvt(a: v128) -> v128 {
            f32x4_convert_i32x4(a)
        }
        #[inline(always)]
        unsafe fn fmul(a: v128, b: v128) -> v128 {
            f32x4_mul(a, b)
        }
        #[inline(always)]
        unsafe fn fadd(a: v128, b: v128) -> v128 {
            f32x4_add(a, b)
        }
        #[inline(always)]
        unsafe fn fsub(a: v128, b: v128) -> v128 {
            f32x4_sub(a, b)
        }
        #[inline(always)]
        unsafe fn fsplat(v: f32) -> v128 {
            f32x4_splat(v)
        }
        #[inline(always)]
        unsafe fn lanes(a: v128) -> [f32; PANEL] {
            [
                f32x4_extract_lane::<0>(a),
                f32x4_extract_lane::<1>(a),
                f32x4_extract_lane::<2>(a),
                f32x4_extract_lane::<3>(a),
            ]
        }
    }
}

/// The kernel compiled for SSE4.1 (the generic body and every [`Isa`]
/// operation inlined into this one function with the feature enabled).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
pub(super) unsafe fn tile_sse41<const K: u8, const R: usize>(
    panel: &[u8],
    a: &Acts<R>,
    blocks: usize,
) -> [[f32; PANEL]; R] {
    tile::<sse::Sse41, K, R>(panel, a, blocks)
}

/// [`row`] compiled for SSE4.1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
pub(super) unsafe fn row_sse41<const K: u8>(
    panels: &[u8],
    a: &Acts<1>,
    blocks: usize,
    out: &mut [f32],
) {
    row::<sse::Sse41, K>(panels, a, blocks, out)
}

#[cfg(target_arch = "x86_64")]
mod sse {
    use std::arch::x86_64::*;

    use super::super::PANEL;
    use super::Isa;

    pub(super) struct Sse41;

    impl Isa for Sse41 {
        type I = __m128i;
        type F = __m128;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m128i {
            _mm_loadu_si128(p as *const __m128i)
        }
        #[inline(always)]
        unsafe fn load_u8x8(p: *const u8) -> __m128i {
            _mm_cvtepu8_epi16(_mm_loadl_epi64(p as *const __m128i))
        }
        #[inline(always)]
        unsafe fn u8x4(p: *const u8) -> __m128i {
            _mm_cvtepu8_epi32(_mm_cvtsi32_si128((p as *const i32).read_unaligned()))
        }
        #[inline(always)]
        unsafe fn i8x4(p: *const u8) -> __m128i {
            _mm_cvtepi8_epi32(_mm_cvtsi32_si128((p as *const i32).read_unaligned()))
        }
        #[inline(always)]
        unsafe fn f32x4(p: *const u8) -> __m128 {
            _mm_loadu_ps(p as *const f32)
        }
        #[inline(always)]
        unsafe fn f16x4(p: *const u8, bits: __m128i, scale: __m128) -> __m128 {
            let w = _mm_slli_epi32::<13>(_mm_cvtepi16_epi32(_mm_loadl_epi64(p as *const __m128i)));
            _mm_mul_ps(_mm_castsi128_ps(_mm_and_si128(w, bits)), scale)
        }
        #[inline(always)]
        unsafe fn splat32(v: u32) -> __m128i {
            _mm_set1_epi32(v as i32)
        }
        #[inline(always)]
        unsafe fn splat16(v: i16) -> __m128i {
            _mm_set1_epi16(v)
        }
        #[inline(always)]
        unsafe fn widen_lo(v: __m128i) -> __m128i {
            _mm_cvtepi8_epi16(v)
        }
        #[inline(always)]
        unsafe fn widen_hi(v: __m128i) -> __m128i {
            _mm_cvtepi8_epi16(_mm_srli_si128::<8>(v))
        }
        #[inline(always)]
        unsafe fn and(a: __m128i, b: __m128i) -> __m128i {
            _mm_and_si128(a, b)
        }
        #[inline(always)]
        unsafe fn or(a: __m128i, b: __m128i) -> __m128i {
            _mm_or_si128(a, b)
        }
        #[inline(always)]
        unsafe fn sub16(a: __m128i, b: __m128i) -> __m128i {
            _mm_sub_epi16(a, b)
        }
        #[inline(always)]
        unsafe fn shr16<const N: i32>(a: __m128i) -> __m128i {
            _mm_srli_epi16::<N>(a)
        }
        #[inline(always)]
        unsafe fn shl16<const N: i32>(a: __m128i) -> __m128i {
            _mm_slli_epi16::<N>(a)
        }
        #[inline(always)]
        unsafe fn madd(a: __m128i, b: __m128i) -> __m128i {
            _mm_madd_epi16(a, b)
        }
        #[inline(always)]
        unsafe fn add32(a: __m128i, b: __m128i) -> __m128i {
            _mm_add_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn mul32(a: __m128i, b: __m128i) -> __m128i {
            _mm_mullo_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn fold(a: __m128i, b: __m128i) -> __m128i {
            _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b))
        }
        #[inline(always)]
        unsafe fn join(p01: __m128i, p23: __m128i) -> __m128i {
            _mm_add_epi32(_mm_unpacklo_epi64(p01, p23), _mm_unpackhi_epi64(p01, p23))
        }
        #[inline(always)]
        unsafe fn cvt(a: __m128i) -> __m128 {
            _mm_cvtepi32_ps(a)
        }
        #[inline(always)]
        unsafe fn fmul(a: __m128, b: __m128) -> __m128 {
            _mm_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fadd(a: __m128, b: __m128) -> __m128 {
            _mm_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fsub(a: __m128, b: __m128) -> __m128 {
            _mm_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fsplat(v: f32) -> __m128 {
            _mm_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn lanes(a: __m128) -> [f32; PANEL] {
            let mut lanes = [0.0f32; PANEL];
            _mm_storeu_ps(lanes.as_mut_ptr(), a);
            lanes
        }
    }
}
