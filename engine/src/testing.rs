//! Deterministic pseudo-random test data: one generator for the engine's
//! unit tests and the workspace's integration tests, so a failing case is
//! reproduced from its seed alone and no test grows a generator of its own.
//! Not for anything but tests (it is a linear congruential stream).

/// Knuth's MMIX linear congruential generator; the high bits are used.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// 31 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}
