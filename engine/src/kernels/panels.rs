//! Block-quantized weight matrices laid out in panels of [`PANEL`] rows, and
//! their products with activations quantized per block ([`Quantized`]).
//!
//! GGUF stores a matrix row by row, each row a run of blocks of 32 values
//! with their scales. The packer (build time) re-lays the same bytes out so
//! that one block of four consecutive rows sits together: their quantized
//! values, then their scales (and minimums). The values are the file's, bit
//! for bit: only their order changes. Why:
//! - **One stream.** A product reads the matrix front to back once, one
//!   sequential stream, where four rows with separate scale and minimum
//!   arrays were twelve: what a memory-bound single-token pass needs.
//! - **Columns in lanes.** A block's four integer dot products are reduced
//!   into one vector with a lane per output row, so the float work per block
//!   (scale, minimum, accumulate) is one vector operation for four outputs,
//!   not four scalar ones, and the scales load as one vector.
//! - **Every activation row per weight load.** A tile runs up to four
//!   activation rows (a prompt's tokens, or the tokens of several
//!   conversations batched in one step) over each panel block it loads.
//!
//! Each row of the output is computed by the same operations in the same
//! order whatever the other rows of the tile are, so a row's result does
//! not depend on what it was batched with (tested bit for bit).
//!
//! The arithmetic of one output, the definition every path (wasm simd128,
//! SSE4.1, portable) follows exactly: per block `b`, the integer dot `i` of
//! the activation's int16 quants with the weight's quants (exact in i32),
//! then `acc = acc + f32(i) * (d_b * s_b)` and, for formats with a minimum,
//! `acc = acc + m_b * sum_b` (`s_b` the activation block's scale, `sum_b` its
//! sum as the products see it), in float32, no fused multiply-add.

use super::blocks::{Quantized, BLOCK, ORDER};

/// Weight rows per panel.
pub const PANEL: usize = 4;

/// The quantized formats stored in panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelKind {
    /// GGUF's Q8_0 (or int8 rows with a per-block scale): per panel block,
    /// four rows of 32 int8 values (each row's in the activations' [`ORDER`],
    /// so plain sign extension unpacks them), then their four scales as
    /// float32 (the file's f16 widened, exactly).
    Q8,
    /// GGUF's Q4_1: per panel block, four rows of 16 bytes (byte `i` holds
    /// element `i` in its low nibble and `i + 16` in its high one, as the
    /// file does), then the four f16 scales `d`, then the four f16
    /// minimums `m`, as stored: `w = q * d + m`. Read as eight int16 lanes,
    /// the bytes give the activations' [`ORDER`] by masks and shifts alone.
    Q4_1,
}

impl PanelKind {
    /// Bytes of one panel block (four rows by [`BLOCK`] values).
    pub const fn block_bytes(self) -> usize {
        match self {
            PanelKind::Q8 => PANEL * BLOCK + PANEL * 4,
            PanelKind::Q4_1 => PANEL * BLOCK / 2 + PANEL * 2 + PANEL * 2,
        }
    }

    /// Bytes of a `rows x cols` matrix in panels (rows padded to whole
    /// panels with zeros).
    pub const fn matrix_bytes(self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(PANEL) * (cols / BLOCK) * self.block_bytes()
    }
}

/// A matrix in panels, `rows x cols`, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Panels<'a> {
    kind: PanelKind,
    bytes: &'a [u8],
    rows: usize,
    cols: usize,
}

impl<'a> Panels<'a> {
    /// Views `bytes` as a `rows x cols` matrix of `kind`; `None` unless the
    /// shape is whole blocks and the length is exactly the matrix's.
    pub fn new(kind: PanelKind, bytes: &'a [u8], rows: usize, cols: usize) -> Option<Self> {
        (rows > 0 && cols > 0 && cols % BLOCK == 0 && bytes.len() == kind.matrix_bytes(rows, cols))
            .then_some(Panels {
                kind,
                bytes,
                rows,
                cols,
            })
    }

    pub fn kind(&self) -> PanelKind {
        self.kind
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// Panel `p`'s bytes: its blocks, in order.
    fn panel(&self, p: usize) -> &'a [u8] {
        let size = self.blocks() * self.kind.block_bytes();
        &self.bytes[p * size..(p + 1) * size]
    }

    /// Row `r`, dequantized into `out` (`cols` wide): a token's embedding.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let (p, j) = (r / PANEL, r % PANEL);
        let bb = self.kind.block_bytes();
        for (block, o) in self
            .panel(p)
            .chunks_exact(bb)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let (values, d, m) = block_parts(self.kind, block, j);
            for (o, v) in o.iter_mut().zip(values) {
                *o = f32::from(v) * d + m;
            }
        }
    }

    /// Packs a `rows x cols` matrix of int8 values (row-major) with one
    /// float32 scale per block of [`BLOCK`] along a row (`rows x cols / 32`)
    /// into panels of [`PanelKind::Q8`].
    pub fn pack_q8(values: &[i8], scales: &[f32], rows: usize, cols: usize) -> Vec<u8> {
        assert!(cols % BLOCK == 0 && values.len() == rows * cols);
        let blocks = cols / BLOCK;
        assert!(scales.len() == rows * blocks);
        let mut out = Vec::with_capacity(PanelKind::Q8.matrix_bytes(rows, cols));
        for p in 0..rows.div_ceil(PANEL) {
            for b in 0..blocks {
                for j in 0..PANEL {
                    let r = p * PANEL + j;
                    if r < rows {
                        let at = r * cols + b * BLOCK;
                        out.extend(ORDER.iter().map(|&e| values[at + e] as u8));
                    } else {
                        out.extend([0u8; BLOCK]);
                    }
                }
                for j in 0..PANEL {
                    let r = p * PANEL + j;
                    let s = if r < rows {
                        scales[r * blocks + b]
                    } else {
                        0.0
                    };
                    out.extend(s.to_le_bytes());
                }
            }
        }
        out
    }

    /// Packs a `rows x cols` matrix of GGUF Q4_1 blocks (20 bytes each: f16
    /// `d`, f16 `m`, 16 bytes of nibbles; row-major, as the file stores
    /// them) into panels of [`PanelKind::Q4_1`]. Refuses a non-finite scale
    /// or minimum (the kernels' f16 conversion is exact for finite values
    /// only; a file with one is broken).
    pub fn pack_q4_1(gguf: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
        const GGUF_BLOCK: usize = 20;
        assert!(cols % BLOCK == 0);
        let blocks = cols / BLOCK;
        if gguf.len() != rows * blocks * GGUF_BLOCK {
            return Err(format!(
                "{} bytes of Q4_1 for a {rows}x{cols} matrix ({} expected)",
                gguf.len(),
                rows * blocks * GGUF_BLOCK
            ));
        }
        let block = |r: usize, b: usize| {
            let at = (r * blocks + b) * GGUF_BLOCK;
            &gguf[at..at + GGUF_BLOCK]
        };
        let mut out = Vec::with_capacity(PanelKind::Q4_1.matrix_bytes(rows, cols));
        for p in 0..rows.div_ceil(PANEL) {
            let present = |j: usize| p * PANEL + j < rows;
            for b in 0..blocks {
                for j in 0..PANEL {
                    match present(j) {
                        true => out.extend_from_slice(&block(p * PANEL + j, b)[4..]),
                        false => out.extend([0u8; BLOCK / 2]),
                    }
                }
                for half in [0..2, 2..4] {
                    for j in 0..PANEL {
                        let bits = match present(j) {
                            true => &block(p * PANEL + j, b)[half.clone()],
                            false => &[0u8, 0][..],
                        };
                        if u16::from_le_bytes([bits[0], bits[1]]) & 0x7c00 == 0x7c00 {
                            return Err(format!(
                                "row {} block {b} has a non-finite scale or minimum",
                                p * PANEL + j
                            ));
                        }
                        out.extend_from_slice(bits);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// f16 bits to float32, exactly for every finite value (normal or not):
/// the magnitude's bits moved into float32's fields read as a number
/// 2^112 times too small (a subnormal stays exact, being scaled by a power
/// of two into the normal range), then the sign. What the vector paths do
/// lane by lane; non-finite values are refused when packing.
pub fn f16_to_f32(h: u16) -> f32 {
    let magnitude = f32::from_bits(u32::from(h & 0x7fff) << 13) * F16_SCALE;
    f32::from_bits(magnitude.to_bits() | (u32::from(h & 0x8000) << 16))
}

/// 2^112: float32's exponent bias minus f16's, as a factor.
const F16_SCALE: f32 = 5.192_297e33;

/// Row `j` of a panel block: its 32 values in element order, its scale and
/// its minimum (0 for a format without).
fn block_parts(kind: PanelKind, block: &[u8], j: usize) -> ([i16; BLOCK], f32, f32) {
    match kind {
        PanelKind::Q8 => {
            let v = &block[j * BLOCK..(j + 1) * BLOCK];
            let at = PANEL * BLOCK + 4 * j;
            let d = f32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let mut values = [0i16; BLOCK];
            for (i, &e) in ORDER.iter().enumerate() {
                values[e] = i16::from(v[i] as i8);
            }
            (values, d, 0.0)
        }
        PanelKind::Q4_1 => {
            let v = &block[j * BLOCK / 2..(j + 1) * BLOCK / 2];
            let f16 = |at: usize| f16_to_f32(u16::from_le_bytes([block[at], block[at + 1]]));
            let scales = PANEL * BLOCK / 2;
            let values =
                std::array::from_fn(|i| i16::from(if i < 16 { v[i] & 15 } else { v[i - 16] >> 4 }));
            (values, f16(scales + 2 * j), f16(scales + 2 * PANEL + 2 * j))
        }
    }
}

/// `out[r * rows + c] = sum over blocks of x[r] . w[c]` for every activation
/// row `r` of `x` and weight row `c` of `w` (see the module's definition).
pub fn linear(x: &Quantized, w: &Panels, out: &mut [f32]) {
    match w.kind {
        PanelKind::Q8 => linear_in::<false>(x, w, out),
        PanelKind::Q4_1 => linear_in::<true>(x, w, out),
    }
}

/// The kind of a panel block, as a type-level flag: `Q4` is
/// [`PanelKind::Q4_1`], else [`PanelKind::Q8`] (each kernel is compiled
/// for one, no branch per block).
const fn kind_of(q4: bool) -> PanelKind {
    if q4 {
        PanelKind::Q4_1
    } else {
        PanelKind::Q8
    }
}

fn linear_in<const Q4: bool>(x: &Quantized, w: &Panels, out: &mut [f32]) {
    let (k, rows, n) = (w.cols, x.rows(), w.rows);
    assert!(x.width() == k && out.len() == rows * n);
    for p in 0..n.div_ceil(PANEL) {
        let panel = w.panel(p);
        let cols = (n - p * PANEL).min(PANEL);
        let mut r = 0;
        while r < rows {
            let take = (rows - r).min(4);
            let sums: [[f32; PANEL]; 4] = match take {
                4 => tile::<4, Q4>(panel, x, r),
                3 => widen(tile::<3, Q4>(panel, x, r)),
                2 => widen(tile::<2, Q4>(panel, x, r)),
                _ => widen(tile::<1, Q4>(panel, x, r)),
            };
            for (i, row) in sums.iter().enumerate().take(take) {
                let at = (r + i) * n + p * PANEL;
                out[at..at + cols].copy_from_slice(&row[..cols]);
            }
            r += take;
        }
    }
}

fn widen<const R: usize>(t: [[f32; PANEL]; R]) -> [[f32; PANEL]; 4] {
    std::array::from_fn(|i| if i < R { t[i] } else { [0.0; PANEL] })
}

/// One panel by activation rows `r..r + R`: the four outputs of each row.
fn tile<const R: usize, const Q4: bool>(
    panel: &[u8],
    x: &Quantized,
    r: usize,
) -> [[f32; PANEL]; R] {
    let kind = kind_of(Q4);
    let blocks = x.width() / BLOCK;
    assert!(panel.len() == blocks * kind.block_bytes() && r + R <= x.rows());
    let a = Acts::<R>::new(x, r);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: the panel holds `blocks` whole blocks and the activation
        // rows `blocks` blocks each (asserted above and by `Acts::new`).
        unsafe { simd::tile::<R, Q4>(panel, &a, blocks) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::sse41() {
            // SAFETY: as above; SSE4.1 was just detected.
            return unsafe { sse::tile::<R, Q4>(panel, &a, blocks) };
        }
        tile_portable::<R>(kind, panel, &a, blocks)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        tile_portable::<R>(kind, panel, &a, blocks)
    }
}

/// The activation rows of a tile: quants, block scales and block sums.
struct Acts<'a, const R: usize> {
    q: [&'a [i16]; R],
    scales: [&'a [f32]; R],
    sums: [&'a [f32]; R],
}

impl<'a, const R: usize> Acts<'a, R> {
    fn new(x: &'a Quantized, r: usize) -> Self {
        let a = Acts {
            q: std::array::from_fn(|i| x.row_quants(r + i)),
            scales: std::array::from_fn(|i| x.row_scales(r + i)),
            sums: std::array::from_fn(|i| x.row_sums(r + i)),
        };
        let blocks = x.width() / BLOCK;
        assert!(a.q.iter().all(|q| q.len() == blocks * BLOCK));
        assert!(a.scales.iter().chain(&a.sums).all(|s| s.len() == blocks));
        a
    }
}

/// The definition, element by element (and the path of other targets).
#[cfg_attr(
    all(target_arch = "wasm32", target_feature = "simd128"),
    allow(dead_code)
)]
fn tile_portable<const R: usize>(
    kind: PanelKind,
    panel: &[u8],
    a: &Acts<R>,
    blocks: usize,
) -> [[f32; PANEL]; R] {
    let bb = kind.block_bytes();
    let mut acc = [[0.0f32; PANEL]; R];
    for b in 0..blocks {
        let block = &panel[b * bb..(b + 1) * bb];
        for j in 0..PANEL {
            let (values, d, m) = block_parts(kind, block, j);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = &a.q[r][b * BLOCK..(b + 1) * BLOCK];
                let dot: i32 = x
                    .iter()
                    .zip(ORDER)
                    .map(|(&x, e)| i32::from(x) * i32::from(values[e]))
                    .sum();
                acc[j] += dot as f32 * (d * a.scales[r][b]);
                if kind == PanelKind::Q4_1 {
                    acc[j] += m * a.sums[r][b];
                }
            }
        }
    }
    acc
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    use super::{kind_of, Acts, PanelKind, BLOCK, F16_SCALE, PANEL};

    /// Four f16 at `p` as float32 (see [`super::f16_to_f32`]).
    #[inline(always)]
    unsafe fn f16x4(p: *const u8) -> v128 {
        let w = u32x4_extend_low_u16x8(v128_load64_zero(p as *const u64));
        let sign = i32x4_shl(v128_and(w, u32x4_splat(0x8000)), 16);
        let magnitude = i32x4_shl(v128_and(w, u32x4_splat(0x7fff)), 13);
        v128_or(f32x4_mul(magnitude, f32x4_splat(F16_SCALE)), sign)
    }

    /// The 32 int16 quants of activation block `b` of a row.
    #[inline(always)]
    unsafe fn acts(q: &[i16], b: usize) -> [v128; 4] {
        let p = q.as_ptr().add(b * BLOCK);
        [
            v128_load(p as *const v128),
            v128_load(p.add(8) as *const v128),
            v128_load(p.add(16) as *const v128),
            v128_load(p.add(24) as *const v128),
        ]
    }

    /// A weight row's 32 values (one block) as four int16x8, in [`ORDER`].
    #[inline(always)]
    unsafe fn weights<const Q4: bool>(block: *const u8, j: usize) -> [v128; 4] {
        match kind_of(Q4) {
            PanelKind::Q8 => {
                let lo = v128_load(block.add(j * BLOCK) as *const v128);
                let hi = v128_load(block.add(j * BLOCK + 16) as *const v128);
                [
                    i16x8_extend_low_i8x16(lo),
                    i16x8_extend_high_i8x16(lo),
                    i16x8_extend_low_i8x16(hi),
                    i16x8_extend_high_i8x16(hi),
                ]
            }
            PanelKind::Q4_1 => {
                // As int16 lanes each holding bytes 2i and 2i + 1: the low
                // nibbles of the even bytes, their high nibbles, the low
                // nibbles of the odd bytes, their high nibbles.
                let v = v128_load(block.add(j * BLOCK / 2) as *const v128);
                let nibble = u16x8_splat(15);
                [
                    v128_and(v, nibble),
                    v128_and(u16x8_shr(v, 4), nibble),
                    v128_and(u16x8_shr(v, 8), nibble),
                    u16x8_shr(v, 12),
                ]
            }
        }
    }

    #[inline(always)]
    fn dot(x: &[v128; 4], w: &[v128; 4]) -> v128 {
        i32x4_add(
            i32x4_add(i32x4_dot_i16x8(x[0], w[0]), i32x4_dot_i16x8(x[1], w[1])),
            i32x4_add(i32x4_dot_i16x8(x[2], w[2]), i32x4_dot_i16x8(x[3], w[3])),
        )
    }

    /// Two rows' partial sums folded into one vector, lanes
    /// `[a0+a2, b0+b2, a1+a3, b1+b3]` (single-instruction shuffles).
    #[inline(always)]
    fn fold(a: v128, b: v128) -> v128 {
        i32x4_add(
            i32x4_shuffle::<0, 4, 1, 5>(a, b),
            i32x4_shuffle::<2, 6, 3, 7>(a, b),
        )
    }

    /// Two folds into the four rows' sums `[s0, s1, s2, s3]`.
    #[inline(always)]
    fn join(p01: v128, p23: v128) -> v128 {
        i32x4_add(
            i64x2_shuffle::<0, 2>(p01, p23),
            i64x2_shuffle::<1, 3>(p01, p23),
        )
    }

    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn tile<const R: usize, const Q4: bool>(
        panel: &[u8],
        a: &Acts<R>,
        blocks: usize,
    ) -> [[f32; PANEL]; R] {
        let kind = kind_of(Q4);
        let bb = kind.block_bytes();
        let mut acc = [f32x4_splat(0.0); R];
        for b in 0..blocks {
            let block = panel.as_ptr().add(b * bb);
            let (d, m) = match kind {
                PanelKind::Q8 => (
                    v128_load(block.add(PANEL * BLOCK) as *const v128),
                    f32x4_splat(0.0),
                ),
                PanelKind::Q4_1 => (
                    f16x4(block.add(PANEL * BLOCK / 2)),
                    f16x4(block.add(PANEL * BLOCK / 2 + 2 * PANEL)),
                ),
            };
            // One weight row at a time, each row's sums folded as soon as
            // a pair is done: few vectors live at once.
            let w = weights::<Q4>(block, 0);
            let s0: [v128; R] = core::array::from_fn(|r| dot(&acts(a.q[r], b), &w));
            let w = weights::<Q4>(block, 1);
            let p01: [v128; R] = core::array::from_fn(|r| fold(s0[r], dot(&acts(a.q[r], b), &w)));
            let w = weights::<Q4>(block, 2);
            let s2: [v128; R] = core::array::from_fn(|r| dot(&acts(a.q[r], b), &w));
            let w = weights::<Q4>(block, 3);
            for r in 0..R {
                let p23 = fold(s2[r], dot(&acts(a.q[r], b), &w));
                let sums = f32x4_convert_i32x4(join(p01[r], p23));
                let scale = f32x4_mul(d, f32x4_splat(a.scales[r][b]));
                acc[r] = f32x4_add(acc[r], f32x4_mul(sums, scale));
                if kind == PanelKind::Q4_1 {
                    acc[r] = f32x4_add(acc[r], f32x4_mul(m, f32x4_splat(a.sums[r][b])));
                }
            }
        }
        core::array::from_fn(|r| {
            [
                f32x4_extract_lane::<0>(acc[r]),
                f32x4_extract_lane::<1>(acc[r]),
                f32x4_extract_lane::<2>(acc[r]),
                f32x4_extract_lane::<3>(acc[r]),
            ]
        })
    }
}

/// x86-64: the wasm path instruction for instruction in SSE4.1, so the
/// native bench and tests measure and check what the worker runs.
#[cfg(target_arch = "x86_64")]
mod sse {
    use std::arch::x86_64::*;

    use super::{kind_of, Acts, PanelKind, BLOCK, F16_SCALE, PANEL};

    #[inline(always)]
    unsafe fn f16x4(p: *const u8) -> __m128 {
        let w = _mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i));
        let sign = _mm_slli_epi32::<16>(_mm_and_si128(w, _mm_set1_epi32(0x8000)));
        let magnitude = _mm_slli_epi32::<13>(_mm_and_si128(w, _mm_set1_epi32(0x7fff)));
        _mm_or_ps(
            _mm_mul_ps(_mm_castsi128_ps(magnitude), _mm_set1_ps(F16_SCALE)),
            _mm_castsi128_ps(sign),
        )
    }

    #[inline(always)]
    unsafe fn acts(q: &[i16], b: usize) -> [__m128i; 4] {
        let p = q.as_ptr().add(b * BLOCK);
        [
            _mm_loadu_si128(p as *const __m128i),
            _mm_loadu_si128(p.add(8) as *const __m128i),
            _mm_loadu_si128(p.add(16) as *const __m128i),
            _mm_loadu_si128(p.add(24) as *const __m128i),
        ]
    }

    #[inline(always)]
    unsafe fn weights<const Q4: bool>(block: *const u8, j: usize) -> [__m128i; 4] {
        match kind_of(Q4) {
            PanelKind::Q8 => {
                let lo = _mm_loadu_si128(block.add(j * BLOCK) as *const __m128i);
                let hi = _mm_loadu_si128(block.add(j * BLOCK + 16) as *const __m128i);
                [
                    _mm_cvtepi8_epi16(lo),
                    _mm_cvtepi8_epi16(_mm_srli_si128::<8>(lo)),
                    _mm_cvtepi8_epi16(hi),
                    _mm_cvtepi8_epi16(_mm_srli_si128::<8>(hi)),
                ]
            }
            PanelKind::Q4_1 => {
                let v = _mm_loadu_si128(block.add(j * BLOCK / 2) as *const __m128i);
                let nibble = _mm_set1_epi16(15);
                [
                    _mm_and_si128(v, nibble),
                    _mm_and_si128(_mm_srli_epi16::<4>(v), nibble),
                    _mm_and_si128(_mm_srli_epi16::<8>(v), nibble),
                    _mm_srli_epi16::<12>(v),
                ]
            }
        }
    }

    #[inline(always)]
    unsafe fn dot(x: &[__m128i; 4], w: &[__m128i; 4]) -> __m128i {
        _mm_add_epi32(
            _mm_add_epi32(_mm_madd_epi16(x[0], w[0]), _mm_madd_epi16(x[1], w[1])),
            _mm_add_epi32(_mm_madd_epi16(x[2], w[2]), _mm_madd_epi16(x[3], w[3])),
        )
    }

    #[inline(always)]
    unsafe fn fold(a: __m128i, b: __m128i) -> __m128i {
        _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b))
    }

    #[inline(always)]
    unsafe fn join(p01: __m128i, p23: __m128i) -> __m128i {
        _mm_add_epi32(_mm_unpacklo_epi64(p01, p23), _mm_unpackhi_epi64(p01, p23))
    }

    #[target_feature(enable = "sse4.1")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn tile<const R: usize, const Q4: bool>(
        panel: &[u8],
        a: &Acts<R>,
        blocks: usize,
    ) -> [[f32; PANEL]; R] {
        let kind = kind_of(Q4);
        let bb = kind.block_bytes();
        let mut acc = [_mm_setzero_ps(); R];
        for b in 0..blocks {
            let block = panel.as_ptr().add(b * bb);
            let (d, m) = match kind {
                PanelKind::Q8 => (
                    _mm_loadu_ps(block.add(PANEL * BLOCK) as *const f32),
                    _mm_setzero_ps(),
                ),
                PanelKind::Q4_1 => (
                    f16x4(block.add(PANEL * BLOCK / 2)),
                    f16x4(block.add(PANEL * BLOCK / 2 + 2 * PANEL)),
                ),
            };
            let w = weights::<Q4>(block, 0);
            let s0: [__m128i; R] = std::array::from_fn(|r| dot(&acts(a.q[r], b), &w));
            let w = weights::<Q4>(block, 1);
            let p01: [__m128i; R] = std::array::from_fn(|r| fold(s0[r], dot(&acts(a.q[r], b), &w)));
            let w = weights::<Q4>(block, 2);
            let s2: [__m128i; R] = std::array::from_fn(|r| dot(&acts(a.q[r], b), &w));
            let w = weights::<Q4>(block, 3);
            for r in 0..R {
                let p23 = fold(s2[r], dot(&acts(a.q[r], b), &w));
                let sums = _mm_cvtepi32_ps(join(p01[r], p23));
                let scale = _mm_mul_ps(d, _mm_set1_ps(a.scales[r][b]));
                acc[r] = _mm_add_ps(acc[r], _mm_mul_ps(sums, scale));
                if kind == PanelKind::Q4_1 {
                    acc[r] = _mm_add_ps(acc[r], _mm_mul_ps(m, _mm_set1_ps(a.sums[r][b])));
                }
            }
        }
        std::array::from_fn(|r| {
            let mut lanes = [0.0f32; PANEL];
            _mm_storeu_ps(lanes.as_mut_ptr(), acc[r]);
            lanes
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::Lcg;

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
                            .map(|i| {
                                i32::from(xq[i]) * i32::from(values[c * k + b * BLOCK + ORDER[i]])
                            })
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
}
