//! Speed of every panel format's product, in G multiply-adds per second:
//! one token (the decode step) and tiles of four (prefill), on a
//! `896 x 4864` matrix (Qwen2.5-0.5B's ffn_down; 4864 is whole blocks of
//! 256 for the K formats). The weights are random GGUF blocks, which is all
//! the speed depends on.
//!
//! `cargo run -p edgeinfer-engine --release --example panels`; for wasm
//! (node >= 20, simd128):
//! `cargo build -p edgeinfer-engine --release --example panels --target wasm32-wasip1`
//! then run it with node's WASI (scripts/bench-panels-wasm.mjs).

use std::time::Instant;

use edgeinfer_engine::kernels::blocks::Quantized;
use edgeinfer_engine::kernels::panels::{linear, PanelKind, Panels};

fn main() {
    let (n, k) = (896usize, 4864usize);
    let mut seed = 1u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    println!("kernels: {}", edgeinfer_engine::kernels::active());
    println!(
        "{:<6} {:>10} {:>10} {:>12}",
        "format", "1 row", "4 rows", "bytes/weight"
    );
    for kind in PanelKind::ALL {
        let t = kind.gguf();
        let blocks = n * k / t.span();
        let mut gguf: Vec<u8> = (0..blocks * t.block_bytes())
            .map(|_| next() as u8)
            .collect();
        // Finite f16 scales: clear each block's scale exponents' top bit.
        for b in gguf.chunks_exact_mut(t.block_bytes()) {
            let at = if kind == PanelKind::Q6K { 208 } else { 0 };
            b[at + 1] &= 0x3b;
            if !matches!(
                kind,
                PanelKind::Q8 | PanelKind::Q4_0 | PanelKind::Q5_0 | PanelKind::Q6K
            ) {
                b[3] &= 0x3b;
            }
        }
        let packed = Panels::pack(kind, &gguf, n, k).expect("pack");
        let w = Panels::new(kind, &packed, n, k).expect("panels");
        let mut rates = Vec::new();
        for rows in [1usize, 4] {
            let x: Vec<f32> = (0..rows * k).map(|_| next() as f32 / 4e9 - 0.5).collect();
            let mut q = Quantized::default();
            q.quantize(&x, k);
            let mut out = vec![0.0f32; rows * n];
            let mut best = f64::MAX;
            for _ in 0..7 {
                let reps = 20;
                let t0 = Instant::now();
                for _ in 0..reps {
                    linear(&q, &w, &mut out);
                }
                best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            std::hint::black_box(&out);
            rates.push((rows * n * k) as f64 / best / 1e9);
        }
        println!(
            "{:<6} {:>10.2} {:>10.2} {:>12.3}",
            format!("{kind:?}"),
            rates[0],
            rates[1],
            packed.len() as f64 / (n * k) as f64
        );
    }
}
