//! Block-quantized weight matrices laid out in panels of [`PANEL`] rows, and
//! their products with activations quantized per block ([`Quantized`]).
//!
//! GGUF stores a matrix row by row, each row a run of blocks (32 values for
//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0; 256 for the "K" formats Q4_K, Q5_K and
//! Q6_K) with their scales. The packer (build time, [`Panels::pack`]) re-lays
//! the same numbers out so that one block of four consecutive rows sits
//! together: their quantized values, then their scales (and minimums). The
//! values and scales are the file's, exactly: only their order and their
//! bit packing change (no second quantization). Why:
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
//! - **One unpacking for every format.** Each 32 values of a row are 16
//!   bytes of low nibbles (byte `i`: element `i` low, `i + 16` high: Q4_0's
//!   and Q4_1's own layout; the K formats' nibbles are regrouped into it),
//!   plus, for 5- and 6-bit codes, their high bits beside them. Read as
//!   int16 lanes, masks and shifts give the activations' [`ORDER`] with no
//!   widening or shuffling instruction.
//!
//! Each row of the output is computed by the same operations in the same
//! order whatever the other rows of the tile are, so a row's result does
//! not depend on what it was batched with (tested bit for bit).
//!
//! The arithmetic of one output, the definition every path (wasm simd128,
//! SSE4.1, portable) follows exactly. Per block `b` of 32 values, `s_b` the
//! activation block's scale and `sum_b` its sum as the products see it, `i`
//! the integer dot of the activation's int16 quants with the weight's
//! integer values (exact in i32), in float32 with no fused multiply-add:
//! - Q8_0, Q4_0, Q5_0 (`w = d q`, `q` signed): `acc = acc + f32(i) * (d * s_b)`;
//! - Q4_1, Q5_1 (`w = d q + m`): that, then `acc = acc + m * sum_b`;
//! - Q4_K, Q5_K (`w = (d sc) q - (dmin mn)` with 6-bit `sc`, `mn` per 32):
//!   `acc = acc + f32(i * sc) * (d * s_b)`, then
//!   `acc = acc - (dmin * f32(mn)) * sum_b` (`i * sc` is exact in i32:
//!   at most 32 x 32767 x 31 x 63 < 2^31);
//! - Q6_K (`w = (d sc) q`, `q` in -32..31, an int8 `sc` per 16 values): `i`
//!   split into its two halves' dots `i_a`, `i_b` (each 16 x 32767 x 32 x
//!   128 < 2^31 once scaled), `acc = acc + (f32(i_a * sc_a) + f32(i_b *
//!   sc_b)) * (d * s_b)`: the two scaled halves together could pass 2^31.
//!
//! Every product the scales form (`d sc`, `dmin mn`) is exact in float32
//! (11 bits of f16 times at most 8), so the weights the dot sees are the
//! ones `gguf`'s dequantization gives, up to the one rounding of its final
//! multiply (tested against it on real files: tests/gguf.rs).

mod gguf;
mod isa;
#[cfg(test)]
mod tests;

pub use gguf::{dequantize, GgufType};

use super::blocks::{Quantized, BLOCK, ORDER};

/// Weight rows per panel.
pub const PANEL: usize = 4;

/// The quantized formats stored in panels, each GGUF's type of the same
/// name. Per panel block (four rows by [`PanelKind::span`] values): for
/// each 32 values, the four rows' quantized values ([`PanelKind::sub_bytes`]
/// in all), then the tail of scales; see [`PanelKind::block_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PanelKind {
    /// GGUF's Q8_0 (or int8 rows with a per-block scale): four rows of 32
    /// int8 values, each row's in the activations' [`ORDER`] (so plain sign
    /// extension unpacks them); tail: the four scales as float32 (the
    /// file's f16 widened, exactly).
    Q8,
    /// GGUF's Q4_1: four rows of 16 nibble bytes; tail: the four f16 scales
    /// `d`, then the four f16 minimums `m`, as stored: `w = q d + m`.
    Q4_1,
    /// GGUF's Q4_0: nibbles; tail: four f16 `d`: `w = (q - 8) d`.
    Q4_0,
    /// GGUF's Q5_0: nibbles, then the four rows' fifth bits as eight u16
    /// lanes, lane `l` bit `4j + v` for row `j`'s element
    /// [`q5_lane_elements`]`(l)[v]`, *inverted* (1 where the code's fifth bit
    /// is 0); tail: four f16 `d`: `w = (q - 16) d`. The lanes are the
    /// int16 lanes of the kernels' four weight vectors, so a vector's fifth
    /// bits are one shift and one mask of one load for all four rows (and
    /// with the bit inverted, `q - 16` is the nibble minus it): the file's
    /// `qh` per row took a splat, a mask, a compare, a mask and an `or`
    /// per vector, and made 5-bit products a third of 4-bit ones.
    Q5_0,
    /// GGUF's Q5_1: as Q5_0 (the fifth bits not inverted), tail four f16
    /// `d` then four f16 `m`: `w = q d + m`.
    Q5_1,
    /// GGUF's Q4_K (256 values a block): eight times four rows of nibbles;
    /// tail: the 6-bit scales (eight times four bytes: 32 values' four
    /// rows), the 6-bit minimums (likewise), four `d`, four `dmin`, each
    /// the file's f16 widened to float32 (exactly): `w = (d sc) q - (dmin
    /// mn)`. Widened because real files' `d` are often subnormal f16 (43%
    /// of Qwen2.5-Coder-0.5B's Q4_K blocks), which the kernels' conversion
    /// would make subnormal float32 operands, a microcode assist each on
    /// x86; at 16 bytes per 4 x 256 values the widening costs 2.7%.
    Q4K,
    /// GGUF's Q5_K: as Q4_K, each 32 values' nibbles followed by the four
    /// rows' fifth bits as Q5_1's.
    Q5K,
    /// GGUF's Q6_K: eight times (four rows of nibbles, then four rows of 8
    /// bytes holding the high two bits: byte `l`, bits `2r..2r + 2`, for
    /// element `ORDER[8r + l]`); tail: eight times (the four rows' int8
    /// scale of the first 16 values, then of the last 16), four `d` as
    /// float32 (see Q4_K; 99.7% of Qwen2.5-Coder-0.5B's Q6_K `d` are
    /// subnormal f16): `w = (d sc) (q - 32)`.
    Q6K,
}

impl PanelKind {
    pub const ALL: [PanelKind; 8] = [
        PanelKind::Q8,
        PanelKind::Q4_1,
        PanelKind::Q4_0,
        PanelKind::Q5_0,
        PanelKind::Q5_1,
        PanelKind::Q4K,
        PanelKind::Q5K,
        PanelKind::Q6K,
    ];

    /// Columns one block spans: 32, or 256 for the K formats.
    pub const fn span(self) -> usize {
        match self {
            PanelKind::Q4K | PanelKind::Q5K | PanelKind::Q6K => 8 * BLOCK,
            _ => BLOCK,
        }
    }

    /// Blocks of 32 values in one panel block.
    const fn subs(self) -> usize {
        self.span() / BLOCK
    }

    /// Bytes of four rows' 32 quantized values (and their high bits).
    const fn sub_bytes(self) -> usize {
        match self {
            PanelKind::Q8 => PANEL * BLOCK,
            PanelKind::Q4_1 | PanelKind::Q4_0 | PanelKind::Q4K => PANEL * BLOCK / 2,
            PanelKind::Q5_0 | PanelKind::Q5_1 | PanelKind::Q5K => PANEL * (BLOCK / 2 + 4),
            PanelKind::Q6K => PANEL * (BLOCK / 2 + 8),
        }
    }

    /// Bytes of the scales after a panel block's values.
    const fn tail_bytes(self) -> usize {
        match self {
            PanelKind::Q8 => PANEL * 4,
            PanelKind::Q4_0 | PanelKind::Q5_0 => PANEL * 2,
            PanelKind::Q4_1 | PanelKind::Q5_1 => PANEL * 4,
            PanelKind::Q4K | PanelKind::Q5K => 2 * 8 * PANEL + PANEL * 8,
            PanelKind::Q6K => 2 * 8 * PANEL + PANEL * 4,
        }
    }

    /// Bytes of one panel block (four rows by [`PanelKind::span`] values).
    pub const fn block_bytes(self) -> usize {
        self.subs() * self.sub_bytes() + self.tail_bytes()
    }

    /// Bytes of a `rows x cols` matrix in panels (rows padded to whole
    /// panels with zeros).
    pub const fn matrix_bytes(self, rows: usize, cols: usize) -> usize {
        rows.div_ceil(PANEL) * (cols / self.span()) * self.block_bytes()
    }

    /// The kind as a const generic parameter: each kernel is compiled for
    /// one, so its `match`es on the kind cost nothing per block.
    const fn id(self) -> u8 {
        self as u8
    }

    const fn from_id(id: u8) -> PanelKind {
        match id {
            0 => PanelKind::Q8,
            1 => PanelKind::Q4_1,
            2 => PanelKind::Q4_0,
            3 => PanelKind::Q5_0,
            4 => PanelKind::Q5_1,
            5 => PanelKind::Q4K,
            6 => PanelKind::Q5K,
            _ => PanelKind::Q6K,
        }
    }

    /// The GGUF tensor type whose blocks this kind keeps.
    pub const fn gguf(self) -> GgufType {
        match self {
            PanelKind::Q8 => GgufType::Q8_0,
            PanelKind::Q4_1 => GgufType::Q4_1,
            PanelKind::Q4_0 => GgufType::Q4_0,
            PanelKind::Q5_0 => GgufType::Q5_0,
            PanelKind::Q5_1 => GgufType::Q5_1,
            PanelKind::Q4K => GgufType::Q4K,
            PanelKind::Q5K => GgufType::Q5K,
            PanelKind::Q6K => GgufType::Q6K,
        }
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
        (rows > 0
            && cols > 0
            && cols % kind.span() == 0
            && bytes.len() == kind.matrix_bytes(rows, cols))
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

    /// Panel `p`'s bytes: its blocks, in order.
    fn panel(&self, p: usize) -> &'a [u8] {
        let size = self.cols / self.kind.span() * self.kind.block_bytes();
        &self.bytes[p * size..(p + 1) * size]
    }

    /// Row `r`, dequantized into `out` (`cols` wide): a token's embedding.
    /// The same float32 values as [`dequantize`] of the file's row.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let (p, j) = (r / PANEL, r % PANEL);
        let kind = self.kind;
        for (block, o) in self
            .panel(p)
            .chunks_exact(kind.block_bytes())
            .zip(out.chunks_exact_mut(kind.span()))
        {
            for (sub, o) in o.chunks_exact_mut(BLOCK).enumerate() {
                let values = sub_values(kind, block, sub, j);
                let s = sub_scales(kind, block, sub, j);
                for (e, (o, v)) in o.iter_mut().zip(values).enumerate() {
                    let v = f32::from(v);
                    *o = match kind {
                        PanelKind::Q4K | PanelKind::Q5K => {
                            s.d * s.sc[0] as f32 * v - s.m * s.mn as f32
                        }
                        PanelKind::Q6K => s.d * s.sc[e / 16] as f32 * v,
                        PanelKind::Q4_1 | PanelKind::Q5_1 => v * s.d + s.m,
                        _ => v * s.d,
                    };
                }
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

    /// Packs a `rows x cols` matrix of GGUF Q4_1 blocks into panels of
    /// [`PanelKind::Q4_1`] (see [`Panels::pack`]).
    pub fn pack_q4_1(gguf: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
        Self::pack(PanelKind::Q4_1, gguf, rows, cols)
    }

    /// Packs a `rows x cols` matrix of the GGUF blocks of `kind`'s type
    /// (row-major, as the file stores them) into panels of `kind`. Refuses a
    /// length that is not the matrix's, a row that is not whole blocks, and
    /// a non-finite f16 scale or minimum (the kernels' f16 conversion is
    /// exact for finite values only; a file with one is broken).
    pub fn pack(kind: PanelKind, gguf: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>, String> {
        let t = kind.gguf();
        let span = kind.span();
        if cols % span != 0 {
            return Err(format!(
                "{t:?} rows of {cols} values are not whole blocks of {span}"
            ));
        }
        let blocks = cols / span;
        let size = t.block_bytes();
        if gguf.len() != rows * blocks * size {
            return Err(format!(
                "{} bytes of {t:?} for a {rows}x{cols} matrix ({} expected)",
                gguf.len(),
                rows * blocks * size
            ));
        }
        let mut out = Vec::with_capacity(kind.matrix_bytes(rows, cols));
        for p in 0..rows.div_ceil(PANEL) {
            for b in 0..blocks {
                let mut four = [gguf::Codes::ZERO; PANEL];
                for (j, codes) in four.iter_mut().enumerate() {
                    let r = p * PANEL + j;
                    if r < rows {
                        let at = (r * blocks + b) * size;
                        *codes = gguf::Codes::decode(t, &gguf[at..at + size])
                            .map_err(|e| format!("row {r} block {b}: {e}"))?;
                    }
                }
                gguf::write_panel_block(kind, &four, &mut out);
            }
        }
        debug_assert_eq!(out.len(), kind.matrix_bytes(rows, cols));
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

/// Whether the vector path's f16 conversion (if there is one) gives
/// [`f16_to_f32`]'s float32 bits for every finite f16: run by the tests,
/// and in wasm by examples/panels_wasm.rs. The first value that differs.
#[doc(hidden)]
pub fn check_f16_conversion() -> Result<(), u16> {
    let finite = (0..=u16::MAX).filter(|h| h & 0x7c00 != 0x7c00);
    let all: Vec<u16> = finite.collect();
    for four in all.chunks(4) {
        let mut bytes = [0u8; 8];
        for (b, h) in bytes.chunks_exact_mut(2).zip(four) {
            b.copy_from_slice(&h.to_le_bytes());
        }
        let Some(got) = isa::f16x4(&bytes) else {
            return Ok(());
        };
        for (&h, g) in four.iter().zip(got) {
            if g.to_bits() != f16_to_f32(h).to_bits() {
                return Err(h);
            }
        }
    }
    Ok(())
}

/// 2^112: float32's exponent bias minus f16's, as a factor.
const F16_SCALE: f32 = 5.192_297e33;

/// The scales of one row's 32 values in a panel block, as float32 (exact).
#[derive(Debug, Clone, Copy)]
struct SubScales {
    /// `d` (Q8_0's float32, else the f16).
    d: f32,
    /// The legacy formats' minimum `m` (0 without one), or the K formats'
    /// `dmin`.
    m: f32,
    /// Q4_K, Q5_K: `[sc, _]`; Q6_K: the two halves' scales.
    sc: [i32; 2],
    /// Q4_K, Q5_K: the 6-bit minimum.
    mn: i32,
}

/// The elements of 32 whose codes int16 lane `l` of the kernels' four
/// weight vectors holds: each lane of the 16 nibble bytes holds bytes `2l`
/// and `2l + 1`, i.e. elements `2l` and `2l + 16` (their low and high
/// nibbles), then `2l + 1` and `2l + 17`.
pub(crate) const fn q5_lane_elements(l: usize) -> [usize; 4] {
    [2 * l, 2 * l + 16, 2 * l + 1, 2 * l + 17]
}

/// Row `j`'s 32 integer weight values of block `sub` of a panel block, in
/// element order: the code minus the format's offset (Q4_0's 8, Q5_0's
/// 16, Q6_K's 32); Q8_0's int8 as they are.
fn sub_values(kind: PanelKind, block: &[u8], sub: usize, j: usize) -> [i16; BLOCK] {
    let q = &block[sub * kind.sub_bytes()..(sub + 1) * kind.sub_bytes()];
    if kind == PanelKind::Q8 {
        let v = &q[j * BLOCK..(j + 1) * BLOCK];
        let mut values = [0i16; BLOCK];
        for (i, &e) in ORDER.iter().enumerate() {
            values[e] = i16::from(v[i] as i8);
        }
        return values;
    }
    let v = &q[j * BLOCK / 2..(j + 1) * BLOCK / 2];
    let nibble = |e: usize| i16::from(if e < 16 { v[e] & 15 } else { v[e - 16] >> 4 });
    let high = &q[PANEL * BLOCK / 2..];
    std::array::from_fn(|e| match kind {
        PanelKind::Q4_0 => nibble(e) - 8,
        PanelKind::Q5_0 | PanelKind::Q5_1 | PanelKind::Q5K => {
            let (l, v) = (e % 16 / 2, e / 16 + 2 * (e % 2));
            debug_assert_eq!(q5_lane_elements(l)[v], e);
            let lane = u16::from_le_bytes([high[2 * l], high[2 * l + 1]]);
            let bit = ((lane >> (4 * j + v)) & 1) as i16;
            if kind == PanelKind::Q5_0 {
                nibble(e) - 16 * bit
            } else {
                nibble(e) | bit << 4
            }
        }
        PanelKind::Q6K => {
            let i = ORDER.iter().position(|&o| o == e).unwrap();
            let (run, lane) = (i / 8, i % 8);
            let bits = (high[8 * j + lane] >> (2 * run)) & 3;
            (nibble(e) | i16::from(bits) << 4) - 32
        }
        _ => nibble(e),
    })
}

/// Row `j`'s scales for block `sub` of a panel block.
fn sub_scales(kind: PanelKind, block: &[u8], sub: usize, j: usize) -> SubScales {
    let tail = &block[kind.subs() * kind.sub_bytes()..];
    let f16 = |at: usize| f16_to_f32(u16::from_le_bytes([tail[at], tail[at + 1]]));
    let f32 = |at: usize| f32::from_le_bytes(tail[at..at + 4].try_into().unwrap());
    let mut s = SubScales {
        d: 0.0,
        m: 0.0,
        sc: [0; 2],
        mn: 0,
    };
    match kind {
        PanelKind::Q8 => s.d = f32(4 * j),
        PanelKind::Q4_0 | PanelKind::Q5_0 => s.d = f16(2 * j),
        PanelKind::Q4_1 | PanelKind::Q5_1 => (s.d, s.m) = (f16(2 * j), f16(2 * PANEL + 2 * j)),
        PanelKind::Q4K | PanelKind::Q5K => {
            s.sc[0] = i32::from(tail[PANEL * sub + j]);
            s.mn = i32::from(tail[8 * PANEL + PANEL * sub + j]);
            (s.d, s.m) = (f32(16 * PANEL + 4 * j), f32(20 * PANEL + 4 * j));
        }
        PanelKind::Q6K => {
            s.sc = [
                i32::from(tail[2 * PANEL * sub + j] as i8),
                i32::from(tail[2 * PANEL * sub + PANEL + j] as i8),
            ];
            s.d = f32(16 * PANEL + 4 * j);
        }
    }
    s
}

/// `out[r * rows + c] = sum over blocks of x[r] . w[c]` for every activation
/// row `r` of `x` and weight row `c` of `w` (see the module's definition).
pub fn linear(x: &Quantized, w: &Panels, out: &mut [f32]) {
    linear_with::<false>(x, w, out)
}

/// [`linear`] by the portable path whatever the target: what the vector
/// kernels are checked against bit for bit, in wasm too
/// (examples/panels_wasm.rs), where the tests do not run.
#[doc(hidden)]
pub fn linear_portable(x: &Quantized, w: &Panels, out: &mut [f32]) {
    linear_with::<true>(x, w, out)
}

fn linear_with<const PORTABLE: bool>(x: &Quantized, w: &Panels, out: &mut [f32]) {
    const fn id(kind: PanelKind) -> u8 {
        kind.id()
    }
    match w.kind {
        PanelKind::Q8 => linear_in::<{ id(PanelKind::Q8) }, PORTABLE>(x, w, out),
        PanelKind::Q4_1 => linear_in::<{ id(PanelKind::Q4_1) }, PORTABLE>(x, w, out),
        PanelKind::Q4_0 => linear_in::<{ id(PanelKind::Q4_0) }, PORTABLE>(x, w, out),
        PanelKind::Q5_0 => linear_in::<{ id(PanelKind::Q5_0) }, PORTABLE>(x, w, out),
        PanelKind::Q5_1 => linear_in::<{ id(PanelKind::Q5_1) }, PORTABLE>(x, w, out),
        PanelKind::Q4K => linear_in::<{ id(PanelKind::Q4K) }, PORTABLE>(x, w, out),
        PanelKind::Q5K => linear_in::<{ id(PanelKind::Q5K) }, PORTABLE>(x, w, out),
        PanelKind::Q6K => linear_in::<{ id(PanelKind::Q6K) }, PORTABLE>(x, w, out),
    }
}

fn linear_in<const K: u8, const PORTABLE: bool>(x: &Quantized, w: &Panels, out: &mut [f32]) {
    let (k, rows, n) = (w.cols, x.rows(), w.rows);
    assert!(x.width() == k && out.len() == rows * n);
    if rows == 1 && !PORTABLE && row::<K>(x, w, out) {
        return;
    }
    for p in 0..n.div_ceil(PANEL) {
        let panel = w.panel(p);
        let mut r = 0;
        while r < rows {
            let take = (rows - r).min(4);
            let sums: [[f32; PANEL]; 4] = match take {
                4 => tile::<K, 4, PORTABLE>(panel, x, r),
                3 => widen(tile::<K, 3, PORTABLE>(panel, x, r)),
                2 => widen(tile::<K, 2, PORTABLE>(panel, x, r)),
                _ => widen(tile::<K, 1, PORTABLE>(panel, x, r)),
            };
            for (i, row) in sums.iter().enumerate().take(take) {
                store(&mut out[(r + i) * n..(r + i + 1) * n], p * PANEL, row);
            }
            r += take;
        }
    }
}

/// A panel's four outputs into `out` at `at`, fewer where the matrix ends.
/// A whole panel as a fixed-size copy (one vector store): a copy of
/// variable length became wasm's `memory.copy`, which V8 runs as a call
/// into C, once per panel.
#[inline(always)]
fn store(out: &mut [f32], at: usize, sums: &[f32; PANEL]) {
    match out.get_mut(at..at + PANEL) {
        Some(whole) => whole.copy_from_slice(sums),
        // One by one, unrolled: LLVM makes a loop of copies memory.copy.
        None => {
            let rest = &mut out[at..];
            for (i, &s) in sums.iter().enumerate().take(PANEL - 1) {
                if let Some(o) = rest.get_mut(i) {
                    *o = s;
                }
            }
        }
    }
}

fn widen<const R: usize>(t: [[f32; PANEL]; R]) -> [[f32; PANEL]; 4] {
    std::array::from_fn(|i| if i < R { t[i] } else { [0.0; PANEL] })
}

/// One panel by activation rows `r..r + R`: the four outputs of each row.
fn tile<const K: u8, const R: usize, const PORTABLE: bool>(
    panel: &[u8],
    x: &Quantized,
    r: usize,
) -> [[f32; PANEL]; R] {
    let kind = PanelKind::from_id(K);
    let blocks = x.width() / BLOCK;
    assert!(
        blocks % kind.subs() == 0
            && panel.len() == blocks / kind.subs() * kind.block_bytes()
            && r + R <= x.rows()
    );
    let a = Acts::<R>::new(x, r);
    if PORTABLE {
        return tile_portable::<R>(kind, panel, &a, blocks);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: the panel holds `blocks` whole blocks and the activation
        // rows `blocks` blocks each (asserted above and by `Acts::new`).
        unsafe { isa::tile_wasm::<K, R>(panel, &a, blocks) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::sse41() {
            // SAFETY: as above; SSE4.1 was just detected.
            return unsafe { isa::tile_sse41::<K, R>(panel, &a, blocks) };
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

/// One activation row (a decode step) by the whole matrix with the vector
/// kernel, panel after panel in one call (`false` where there is none, or
/// for the formats that do not gain by it).
/// The same per-panel tile as [`linear_in`]'s, so the same bits.
fn row<const K: u8>(x: &Quantized, w: &Panels, out: &mut [f32]) -> bool {
    let kind = PanelKind::from_id(K);
    // Only the plain formats: with the high bits' unpacking inside the
    // panel loop, node 20's V8 spilled in the block loop (Q5_1 a third
    // slower), where workerd gained nothing. Measured again with the
    // fifth bits in lanes (2026-12-07): Q5_0, Q5_1, Q4_K and Q5_K one row
    // 0-13% slower in workerd and 5-18% in node this way.
    if !matches!(kind, PanelKind::Q8 | PanelKind::Q4_0 | PanelKind::Q4_1) {
        return false;
    }
    let blocks = x.width() / BLOCK;
    assert!(blocks % kind.subs() == 0 && w.bytes.len() == kind.matrix_bytes(w.rows, w.cols));
    let a = Acts::<1>::new(x, 0);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: the matrix is whole panels of `blocks` blocks and the
        // activation row `blocks` blocks (asserted above and by `Acts::new`).
        unsafe { isa::row_wasm::<K>(w.bytes, &a, blocks, out) };
        true
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::sse41() {
            // SAFETY: as above; SSE4.1 was just detected.
            unsafe { isa::row_sse41::<K>(w.bytes, &a, blocks, out) };
            return true;
        }
        false
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        let _ = (a, out);
        false
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
fn tile_portable<const R: usize>(
    kind: PanelKind,
    panel: &[u8],
    a: &Acts<R>,
    blocks: usize,
) -> [[f32; PANEL]; R] {
    let (bb, subs) = (kind.block_bytes(), kind.subs());
    let mut acc = [[0.0f32; PANEL]; R];
    for b in 0..blocks {
        let (block, sub) = (&panel[b / subs * bb..(b / subs + 1) * bb], b % subs);
        for j in 0..PANEL {
            let values = sub_values(kind, block, sub, j);
            let s = sub_scales(kind, block, sub, j);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = &a.q[r][b * BLOCK..(b + 1) * BLOCK];
                // The two halves' dots (elements 0..16 and 16..32).
                let mut dots = [0i32; 2];
                for (&x, e) in x.iter().zip(ORDER) {
                    dots[e / 16] += i32::from(x) * i32::from(values[e]);
                }
                let scale = s.d * a.scales[r][b];
                acc[j] = match kind {
                    PanelKind::Q6K => {
                        let i = (dots[0] * s.sc[0]) as f32 + (dots[1] * s.sc[1]) as f32;
                        acc[j] + i * scale
                    }
                    PanelKind::Q4K | PanelKind::Q5K => {
                        let acc = acc[j] + ((dots[0] + dots[1]) * s.sc[0]) as f32 * scale;
                        acc - (s.m * s.mn as f32) * a.sums[r][b]
                    }
                    PanelKind::Q4_1 | PanelKind::Q5_1 => {
                        let acc = acc[j] + (dots[0] + dots[1]) as f32 * scale;
                        acc + s.m * a.sums[r][b]
                    }
                    _ => acc[j] + (dots[0] + dots[1]) as f32 * scale,
                };
            }
        }
    }
    acc
}
