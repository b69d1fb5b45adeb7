//! What examples/panels.rs (native) and examples/panels_wasm.rs (wasm)
//! share: the shapes they time, random GGUF matrices, the timing loop and
//! the check of the vector kernels against the portable definition.

use edgeinfer_engine::kernels::blocks::Quantized;
use edgeinfer_engine::kernels::panels::{
    check_f16_conversion, linear, linear_portable, PanelKind, Panels,
};

/// `(rows, cols)` of the timed products: Qwen2.5-0.5B's ffn_down (whole
/// blocks of 256 for the K formats), then SmolLM2-135M's own shapes (q/o,
/// k/v, gate/up, down, the tied vocabulary head): small matrices show
/// what each panel and each call costs beyond the multiply-adds.
#[allow(dead_code)] // the wasm module takes its shapes from node
pub const SHAPES: [(usize, usize); 6] = [
    (896, 4864),
    (576, 576),
    (192, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
];

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// A `n x k` matrix of random GGUF blocks of `kind`'s type in panels
/// (`None` when `k` is not whole blocks); its f16 scales finite (each
/// exponent's top bit cleared; signs kept), subnormal ones included: what
/// the check wants. Not for timing: see [`timed_matrix`].
pub fn matrix(kind: PanelKind, n: usize, k: usize, rng: &mut Rng) -> Option<Vec<u8>> {
    random_matrix(kind, n, k, rng, Scales::Random)
}

/// [`matrix`] with every f16 scale normal (exponents 2^-12 .. 2^-1, as a
/// real file's are): a subnormal f16 becomes a subnormal float32 operand
/// in the kernels' conversion, and x86 takes a microcode assist of ~100
/// cycles for each, so random bytes (one exponent in eight zero) timed
/// the assists: Q4_1's one-row product ran at half its real rate. With
/// `subnormal_d`, every block's `d` subnormal instead, as in 99.7% of the
/// Q6_K blocks of Qwen2.5-Coder-0.5B's Q4_K_M file (and 43% of its Q4_K).
pub fn timed_matrix(
    kind: PanelKind,
    n: usize,
    k: usize,
    rng: &mut Rng,
    subnormal_d: bool,
) -> Option<Vec<u8>> {
    random_matrix(
        kind,
        n,
        k,
        rng,
        if subnormal_d {
            Scales::SubnormalD
        } else {
            Scales::Normal
        },
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Scales {
    Random,
    Normal,
    SubnormalD,
}

fn random_matrix(
    kind: PanelKind,
    n: usize,
    k: usize,
    rng: &mut Rng,
    scales: Scales,
) -> Option<Vec<u8>> {
    let t = kind.gguf();
    if k % t.span() != 0 {
        return None;
    }
    let mut gguf: Vec<u8> = (0..n * k / t.span() * t.block_bytes())
        .map(|_| rng.next() as u8)
        .collect();
    // The high bytes of the block's f16 scale (and minimum): sign, five
    // bits of exponent, two of mantissa.
    let highs: &[usize] = match kind {
        PanelKind::Q6K => &[209],
        PanelKind::Q8 | PanelKind::Q4_0 | PanelKind::Q5_0 => &[1],
        _ => &[1, 3],
    };
    for b in gguf.chunks_exact_mut(t.block_bytes()) {
        for (i, &h) in highs.iter().enumerate() {
            b[h] = match scales {
                Scales::Random => b[h] & 0xbb,
                // Exponent 0, a mantissa bit set: subnormal, not zero.
                Scales::SubnormalD if i == 0 => (b[h] & 0x80) | 1,
                _ => (b[h] & 0x83) | ((3 + b[h] % 12) << 2),
            };
        }
    }
    Some(Panels::pack(kind, &gguf, n, k).expect("pack"))
}

/// `rows` random activation rows of width `k`, quantized.
pub fn activations(rows: usize, k: usize, rng: &mut Rng) -> Quantized {
    let x: Vec<f32> = (0..rows * k)
        .map(|_| rng.next() as f32 / 4e9 - 0.5)
        .collect();
    let mut q = Quantized::default();
    q.quantize(&x, k);
    q
}

/// G multiply-adds per second of `kind` on `n x k` by `rows` activation
/// rows (best of 5 timings of at least ~20 ms each), or -1 when `k` is
/// not whole blocks. `now` is seconds.
pub fn bench(kind: PanelKind, rows: usize, n: usize, k: usize, now: &dyn Fn() -> f64) -> f64 {
    let mut rng = Rng::new(1);
    let Some(packed) = timed_matrix(kind, n, k, &mut rng, false) else {
        return -1.0;
    };
    let w = Panels::new(kind, &packed, n, k).expect("panels");
    let q = activations(rows, k, &mut rng);
    let mut out = vec![0.0f32; rows * n];
    let macs = (rows * n * k) as f64;
    let reps = (2e7 / macs).ceil().max(1.0) as usize;
    // Warm: V8 first runs a function as Liftoff's quick code, and a call
    // already running keeps it (one row's product is one call).
    for _ in 0..reps.max(4) {
        linear(&q, &w, &mut out);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = now();
        for _ in 0..reps {
            linear(&q, &w, &mut out);
        }
        best = best.min((now() - t0) / reps as f64);
        core::hint::black_box(&out);
    }
    macs / best / 1e9
}

/// Whether the vector f16 conversion is the scalar one on every finite
/// value, and the kernels in use give every format's products bit for bit as
/// the portable definition does, for tiles of 1 to 4 rows and more (5, 6
/// rows: a tile of 4 then one of 1 or 2), on shapes with a partial panel.
pub fn check() -> Result<(), String> {
    check_f16_conversion().map_err(|h| format!("f16 {h:#06x} converted differently"))?;
    let mut rng = Rng::new(3);
    for kind in PanelKind::ALL {
        for (n, k) in [(7usize, 512usize), (13, 768), (4, 256)] {
            let packed = matrix(kind, n, k, &mut rng).expect("whole blocks");
            let w = Panels::new(kind, &packed, n, k).expect("panels");
            for rows in 1..=6 {
                let q = activations(rows, k, &mut rng);
                let (mut simd, mut portable) = (vec![0.0f32; rows * n], vec![1.0f32; rows * n]);
                linear(&q, &w, &mut simd);
                linear_portable(&q, &w, &mut portable);
                let same = simd
                    .iter()
                    .zip(&portable)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                if !same {
                    return Err(format!("{kind:?} {n}x{k}, {rows} rows: differs"));
                }
            }
        }
    }
    Ok(())
}
