//! GGUF's block formats as the file stores them (ggml's `block_q4_0` ..
//! `block_q6_K`), read into one plain form, [`Codes`] (a row's unsigned codes
//! and its scales, exactly), which [`write_panel_block`] lays out in panels;
//! and the scalar dequantization, in `gguf`'s order of float32 operations
//! (the reference of the tests, and the float32 reference model's weights).

use super::{f16_to_f32, PanelKind, BLOCK, ORDER, PANEL};

/// The GGUF tensor types with a panel kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgufType {
    /// Bytes of one block in the file.
    pub const fn block_bytes(self) -> usize {
        match self {
            GgufType::Q4_0 => 18,
            GgufType::Q4_1 => 20,
            GgufType::Q5_0 => 22,
            GgufType::Q5_1 => 24,
            GgufType::Q8_0 => 34,
            GgufType::Q4K => 144,
            GgufType::Q5K => 176,
            GgufType::Q6K => 210,
        }
    }

    /// Values per block.
    pub const fn span(self) -> usize {
        self.kind().span()
    }

    /// The panel kind that keeps this type's blocks.
    pub const fn kind(self) -> PanelKind {
        match self {
            GgufType::Q4_0 => PanelKind::Q4_0,
            GgufType::Q4_1 => PanelKind::Q4_1,
            GgufType::Q5_0 => PanelKind::Q5_0,
            GgufType::Q5_1 => PanelKind::Q5_1,
            GgufType::Q8_0 => PanelKind::Q8,
            GgufType::Q4K => PanelKind::Q4K,
            GgufType::Q5K => PanelKind::Q5K,
            GgufType::Q6K => PanelKind::Q6K,
        }
    }
}

/// One row's block, decoded: the stored codes (unsigned; Q8_0's int8 as
/// their bytes) in element order, and the scales as stored.
#[derive(Clone, Copy)]
pub(super) struct Codes {
    q: [u8; 256],
    /// f16 bits of `d`, or Q8_0's `d` widened to float32 bits.
    d: u32,
    /// f16 bits of the minimum (`m`, or the K formats' `dmin`).
    m: u16,
    /// Q4_K, Q5_K: the eight 6-bit scales then the eight 6-bit minimums;
    /// Q6_K: the sixteen int8 scales.
    sc: [u8; 16],
}

fn f16_bits(b: &[u8]) -> Result<u16, String> {
    let h = u16::from_le_bytes([b[0], b[1]]);
    if h & 0x7c00 == 0x7c00 {
        return Err("a non-finite scale or minimum".into());
    }
    Ok(h)
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and minimum from
/// the 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

impl Codes {
    pub(super) const ZERO: Codes = Codes {
        q: [0; 256],
        d: 0,
        m: 0,
        sc: [0; 16],
    };

    /// Reads one block of type `t` (`t.block_bytes()` bytes).
    pub(super) fn decode(t: GgufType, b: &[u8]) -> Result<Codes, String> {
        debug_assert_eq!(b.len(), t.block_bytes());
        let mut c = Codes::ZERO;
        // Q4_0 .. Q5_1: byte i of the 16 holds element i low, i + 16 high.
        let nibbles = |c: &mut Codes, qs: &[u8]| {
            for (i, &v) in qs.iter().enumerate() {
                c.q[i] = v & 15;
                c.q[i + 16] = v >> 4;
            }
        };
        let high_bits = |c: &mut Codes, qh: &[u8]| {
            let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for e in 0..BLOCK {
                c.q[e] |= (((qh >> e) & 1) as u8) << 4;
            }
        };
        match t {
            GgufType::Q8_0 => {
                c.d = f16_to_f32(f16_bits(b)?).to_bits();
                c.q[..BLOCK].copy_from_slice(&b[2..34]);
            }
            GgufType::Q4_0 => {
                c.d = f16_bits(b)?.into();
                nibbles(&mut c, &b[2..18]);
            }
            GgufType::Q4_1 => {
                (c.d, c.m) = (f16_bits(b)?.into(), f16_bits(&b[2..])?);
                nibbles(&mut c, &b[4..20]);
            }
            GgufType::Q5_0 => {
                c.d = f16_bits(b)?.into();
                nibbles(&mut c, &b[6..22]);
                high_bits(&mut c, &b[2..6]);
            }
            GgufType::Q5_1 => {
                (c.d, c.m) = (f16_bits(b)?.into(), f16_bits(&b[2..])?);
                nibbles(&mut c, &b[8..24]);
                high_bits(&mut c, &b[4..8]);
            }
            GgufType::Q4K | GgufType::Q5K => {
                (c.d, c.m) = (f16_bits(b)?.into(), f16_bits(&b[2..])?);
                for j in 0..8 {
                    (c.sc[j], c.sc[8 + j]) = scale_min_k4(j, &b[4..16]);
                }
                // Chunk n of 64 values: 32 bytes, element l in the low
                // nibbles, 32 + l in the high ones; Q5_K's bit 2n (2n + 1)
                // of qh[l] the fifth bit of the first (second).
                let (qh, qs) = match t {
                    GgufType::Q5K => (Some(&b[16..48]), &b[48..176]),
                    _ => (None, &b[16..144]),
                };
                for n in 0..4 {
                    for l in 0..32 {
                        let v = qs[32 * n + l];
                        let (mut lo, mut hi) = (v & 15, v >> 4);
                        if let Some(qh) = qh {
                            lo |= ((qh[l] >> (2 * n)) & 1) << 4;
                            hi |= ((qh[l] >> (2 * n + 1)) & 1) << 4;
                        }
                        c.q[64 * n + l] = lo;
                        c.q[64 * n + 32 + l] = hi;
                    }
                }
            }
            GgufType::Q6K => {
                let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
                c.d = f16_bits(&b[208..])?.into();
                c.sc.copy_from_slice(scales);
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    let y = &mut c.q[128 * n..];
                    for l in 0..32 {
                        y[l] = (ql[l] & 15) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
            }
        }
        Ok(c)
    }

    /// The block's values in float32, as `gguf`'s dequantization computes
    /// them (one rounding, at the last operation).
    fn dequantize(&self, t: GgufType, out: &mut Vec<f32>) {
        let f16 = |h: u32| f16_to_f32(h as u16);
        let q = &self.q[..t.span()];
        match t {
            GgufType::Q8_0 => {
                let d = f32::from_bits(self.d);
                out.extend(q.iter().map(|&v| f32::from(v as i8) * d));
            }
            GgufType::Q4_0 => out.extend(q.iter().map(|&v| (f32::from(v) - 8.0) * f16(self.d))),
            GgufType::Q5_0 => out.extend(q.iter().map(|&v| (f32::from(v) - 16.0) * f16(self.d))),
            GgufType::Q4_1 | GgufType::Q5_1 => {
                let (d, m) = (f16(self.d), f16(self.m.into()));
                out.extend(q.iter().map(|&v| f32::from(v) * d + m));
            }
            GgufType::Q4K | GgufType::Q5K => {
                let (d, dmin) = (f16(self.d), f16(self.m.into()));
                for (j, q) in q.chunks_exact(BLOCK).enumerate() {
                    let (sc, mn) = (d * f32::from(self.sc[j]), dmin * f32::from(self.sc[8 + j]));
                    out.extend(q.iter().map(|&v| sc * f32::from(v) - mn));
                }
            }
            GgufType::Q6K => {
                let d = f16(self.d);
                for (j, q) in q.chunks_exact(16).enumerate() {
                    let sc = d * f32::from(self.sc[j] as i8);
                    out.extend(q.iter().map(|&v| sc * (f32::from(v) - 32.0)));
                }
            }
        }
    }
}

/// A tensor of `n` values of type `t`, dequantized to float32 the way
/// `gguf`'s reader does (per block: the scales' products, then the value
/// times the scale, minus or plus the minimum, in float32).
pub fn dequantize(t: GgufType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let size = t.block_bytes();
    if n % t.span() != 0 || bytes.len() != n / t.span() * size {
        return Err(format!(
            "{} bytes of {t:?} do not hold {n} values",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (i, b) in bytes.chunks_exact(size).enumerate() {
        Codes::decode(t, b)
            .map_err(|e| format!("block {i}: {e}"))?
            .dequantize(t, &mut out);
    }
    Ok(out)
}

/// Appends the panel block of four rows' blocks (see [`PanelKind`]).
pub(super) fn write_panel_block(kind: PanelKind, rows: &[Codes; PANEL], out: &mut Vec<u8>) {
    for sub in 0..kind.subs() {
        let q = |j: usize| &rows[j].q[sub * BLOCK..(sub + 1) * BLOCK];
        if kind == PanelKind::Q8 {
            for j in 0..PANEL {
                out.extend(ORDER.iter().map(|&e| q(j)[e]));
            }
            continue;
        }
        for j in 0..PANEL {
            out.extend((0..16).map(|i| (q(j)[i] & 15) | (q(j)[i + 16] & 15) << 4));
        }
        match kind {
            PanelKind::Q5_0 | PanelKind::Q5_1 | PanelKind::Q5K => {
                let mut lanes = [0u16; 8];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    for j in 0..PANEL {
                        for (v, e) in super::q5_lane_elements(l).into_iter().enumerate() {
                            let mut bit = (q(j)[e] >> 4) & 1;
                            if kind == PanelKind::Q5_0 {
                                bit ^= 1;
                            }
                            *lane |= u16::from(bit) << (4 * j + v);
                        }
                    }
                }
                lanes.iter().for_each(|l| out.extend(l.to_le_bytes()));
            }
            PanelKind::Q6K => {
                for j in 0..PANEL {
                    out.extend((0..8).map(|l| {
                        (0..4).fold(0u8, |h, run| {
                            h | ((q(j)[ORDER[8 * run + l]] >> 4) & 3) << (2 * run)
                        })
                    }));
                }
            }
            _ => {}
        }
    }
    let f16s = |out: &mut Vec<u8>, bits: &dyn Fn(&Codes) -> u16| {
        for c in rows {
            out.extend(bits(c).to_le_bytes());
        }
    };
    // The K formats' scales, one per 256 values, widened (see `PanelKind::Q4K`).
    let f32s = |out: &mut Vec<u8>, bits: &dyn Fn(&Codes) -> u16| {
        for c in rows {
            out.extend(f16_to_f32(bits(c)).to_le_bytes());
        }
    };
    match kind {
        PanelKind::Q8 => rows.iter().for_each(|c| out.extend(c.d.to_le_bytes())),
        PanelKind::Q4_0 | PanelKind::Q5_0 => f16s(out, &|c| c.d as u16),
        PanelKind::Q4_1 | PanelKind::Q5_1 => {
            f16s(out, &|c| c.d as u16);
            f16s(out, &|c| c.m);
        }
        PanelKind::Q4K | PanelKind::Q5K => {
            for half in [0, 8] {
                for sub in 0..8 {
                    out.extend(rows.iter().map(|c| c.sc[half + sub]));
                }
            }
            f32s(out, &|c| c.d as u16);
            f32s(out, &|c| c.m);
        }
        PanelKind::Q6K => {
            for sub in 0..8 {
                for half in 0..2 {
                    out.extend(rows.iter().map(|c| c.sc[2 * sub + half]));
                }
            }
            f32s(out, &|c| c.d as u16);
        }
    }
}
