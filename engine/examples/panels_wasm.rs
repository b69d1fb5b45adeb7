//! The panel kernels' speed in wasm simd128, what a Worker runs: a module
//! whose one import is `env.now` (milliseconds) and whose export
//! `bench(kind, rows)` returns G multiply-adds per second of
//! [`PanelKind::ALL`]`[kind]` on the matrix of examples/panels.rs. Run by
//! engine/examples/panels_wasm.mjs (node):
//! `cargo build -p edgeinfer-engine --release --example panels_wasm --target wasm32-unknown-unknown`
//! `node engine/examples/panels_wasm.mjs $CARGO_TARGET_DIR/wasm32-unknown-unknown/release/examples/panels_wasm.wasm`

#[cfg(target_arch = "wasm32")]
mod wasm {
    use edgeinfer_engine::kernels::blocks::Quantized;
    use edgeinfer_engine::kernels::panels::{linear, PanelKind, Panels};

    extern "C" {
        fn now() -> f64;
    }

    #[no_mangle]
    pub extern "C" fn bench(kind: u32, rows: u32) -> f64 {
        let kind = PanelKind::ALL[kind as usize % PanelKind::ALL.len()];
        let (n, k, rows) = (896usize, 4864usize, rows as usize);
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let t = kind.gguf();
        let mut gguf: Vec<u8> = (0..n * k / t.span() * t.block_bytes())
            .map(|_| next() as u8)
            .collect();
        for b in gguf.chunks_exact_mut(t.block_bytes()) {
            let at = if kind == PanelKind::Q6K { 208 } else { 0 };
            b[at + 1] &= 0x3b;
            b[3] &= 0x3b;
        }
        let Ok(packed) = Panels::pack(kind, &gguf, n, k) else {
            return -1.0;
        };
        let Some(w) = Panels::new(kind, &packed, n, k) else {
            return -1.0;
        };
        let x: Vec<f32> = (0..rows * k).map(|_| next() as f32 / 4e9 - 0.5).collect();
        let mut q = Quantized::default();
        q.quantize(&x, k);
        let mut out = vec![0.0f32; rows * n];
        let mut best = f64::MAX;
        for _ in 0..7 {
            let reps = 20;
            // SAFETY: an import of the host's clock, no arguments.
            let t0 = unsafe { now() };
            for _ in 0..reps {
                linear(&q, &w, &mut out);
            }
            best = best.min((unsafe { now() } - t0) / 1e3 / reps as f64);
        }
        core::hint::black_box(&out);
        (rows * n * k) as f64 / best / 1e9
    }
}
