//! Activations quantized per block of [`BLOCK`] values, the form the
//! block-quantized weight products take them in ([`super::panels`]): int16
//! with one scale per block, and each block's sum (what a weight format with
//! a minimum multiplies). A block's dot product with the weights is then
//! exact in i32 (32 products of at most 32767 x 127 sum below 2^31) and the
//! float work is one multiply-add per block.
//!
//! Why int16 activations, not llama.cpp's int8: the same instruction count
//! on wasm simd128 without relaxed SIMD (int8 activations were widened to
//! i16 for `i32x4.dot_i16x8_s` anyway), and the activations' rounding drops
//! from 1/254 to 1/65534 of a block's largest value. With int8,
//! SmolLM2-135M's greedy replies left the float32 reference's on 7 of 12
//! golden prompts (the first token of "What is the capital of France?" has
//! a top-1 margin of 0.08); see tests/smollm2.rs.

/// Values per block, for weights and activations alike.
pub const BLOCK: usize = 32;

/// The order a block's quants are stored in: element `ORDER[i]` at `i`.
/// Evens of the first half, evens of the second, odds of the first, odds of
/// the second: the order in which the weight kernels unpack a block without
/// widening instructions ([`super::panels`]: GGUF's 4-bit bytes read as
/// int16 lanes and masked give exactly these runs of eight). A dot product
/// is the same sum in any order; only the pairing must agree.
pub const ORDER: [usize; BLOCK] = {
    let mut order = [0; BLOCK];
    let mut i = 0;
    while i < BLOCK {
        let run = i / 8;
        order[i] = (i % 8) * 2 + [0, 16, 1, 17][run];
        i += 1;
    }
    order
};

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
    /// half to even, stored in [`ORDER`].
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
            self.q.extend(
                ORDER
                    .iter()
                    .map(|&e| super::round_even(block[e] * inv) as i16),
            );
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

    /// Row `r`'s int16 quants (`width` of them, each block in [`ORDER`]).
    pub fn row_quants(&self, r: usize) -> &[i16] {
        &self.q[r * self.k..(r + 1) * self.k]
    }

    /// Row `r`'s block scales (`width / BLOCK`).
    pub fn row_scales(&self, r: usize) -> &[f32] {
        let blocks = self.k / BLOCK;
        &self.scales[r * blocks..(r + 1) * blocks]
    }

    /// Row `r`'s block sums as the products see them (`scale * sum(q)`).
    pub fn row_sums(&self, r: usize) -> &[f32] {
        let blocks = self.k / BLOCK;
        &self.sums[r * blocks..(r + 1) * blocks]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_a_permutation_in_runs_of_eight() {
        let mut seen = [false; BLOCK];
        for &e in &ORDER {
            assert!(!seen[e]);
            seen[e] = true;
        }
        assert_eq!(ORDER[..8], [0, 2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(ORDER[8..16], [16, 18, 20, 22, 24, 26, 28, 30]);
        assert_eq!(ORDER[16..24], [1, 3, 5, 7, 9, 11, 13, 15]);
        assert_eq!(ORDER[24..], [17, 19, 21, 23, 25, 27, 29, 31]);
    }

    #[test]
    fn quantization_is_per_block_and_symmetric() {
        let mut x: Vec<f32> = (0..64).map(|i| i as f32 * 0.1).collect();
        x[40] = -12.7;
        let mut q = Quantized::default();
        q.quantize(&x, 64);
        assert_eq!(q.scales.len(), 2);
        assert!((q.scales[0] - 3.1 / 32767.0).abs() < 1e-9);
        assert!((q.scales[1] - 12.7 / 32767.0).abs() < 1e-9);
        // Element 31 is stored at 31, element 40 (block 1's 8th) at 32 + 4.
        assert_eq!(q.q[31], 32767);
        assert_eq!(q.q[36], -32767);
        // Element 33 (block 1's 2nd, an odd one) at 32 + 16: 3.3 / 12.7 * 32767.
        assert_eq!(q.q[32 + 16], 8514);

        q.quantize(&[0.0; 32], 32);
        assert_eq!((q.scales[0], q.q.iter().all(|&v| v == 0)), (0.0, true));
    }
}
