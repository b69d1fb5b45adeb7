//! The panel kernels in wasm simd128, what a Worker runs: a module whose
//! one import is `env.now` (milliseconds), exporting `check()` (1 when the
//! kernels give every format's products bit for bit as the portable
//! definition: the tests do not run in wasm) and `bench(kind, rows, n, k)`
//! (G multiply-adds per second of [`PanelKind::ALL`]`[kind]` on an `n x k`
//! matrix; -1 when `k` is not whole blocks). Run by
//! engine/examples/panels_wasm.mjs (node), on examples/common/panels.rs's
//! shapes:
//! `cargo build -p edgeinfer-engine --release --example panels_wasm --target wasm32-unknown-unknown`
//! `node engine/examples/panels_wasm.mjs $CARGO_TARGET_DIR/wasm32-unknown-unknown/release/examples/panels_wasm.wasm [all]`

#[cfg(target_arch = "wasm32")]
#[path = "common/panels.rs"]
mod common;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use edgeinfer_engine::kernels::blocks::Quantized;
    use edgeinfer_engine::kernels::panels::{linear, PanelKind, Panels};

    use super::common;

    extern "C" {
        fn now() -> f64;
    }

    #[no_mangle]
    pub extern "C" fn check() -> u32 {
        u32::from(common::check().is_ok())
    }

    /// A matrix and activations made by [`prepare`], for [`run`].
    static mut PREPARED: Option<(PanelKind, Vec<u8>, usize, usize, Quantized)> = None;

    /// Makes the operands [`run`] multiplies (where the clock does not
    /// move while the code runs, as in workerd, the host times `run`).
    #[no_mangle]
    pub extern "C" fn prepare(kind: u32, rows: u32, n: u32, k: u32, subnormal_d: u32) -> u32 {
        let kind = PanelKind::ALL[kind as usize % PanelKind::ALL.len()];
        let (n, k) = (n as usize, k as usize);
        let mut rng = common::Rng::new(1);
        let Some(packed) = common::timed_matrix(kind, n, k, &mut rng, subnormal_d != 0) else {
            return 0;
        };
        let q = common::activations(rows as usize, k, &mut rng);
        // SAFETY: a single-threaded module; nothing else holds PREPARED.
        unsafe { *core::ptr::addr_of_mut!(PREPARED) = Some((kind, packed, n, k, q)) };
        1
    }

    /// `reps` products of the operands of the last [`prepare`].
    #[no_mangle]
    pub extern "C" fn run(reps: u32) -> f32 {
        // SAFETY: as in `prepare`.
        let Some((kind, packed, n, k, q)) = (unsafe { &*core::ptr::addr_of!(PREPARED) }) else {
            return f32::NAN;
        };
        let w = Panels::new(*kind, packed, *n, *k).expect("panels");
        let mut out = vec![0.0f32; q.rows() * n];
        for _ in 0..reps {
            linear(q, &w, &mut out);
            core::hint::black_box(&out);
        }
        out[0]
    }

    #[no_mangle]
    pub extern "C" fn bench(kind: u32, rows: u32, n: u32, k: u32) -> f64 {
        let kind = PanelKind::ALL[kind as usize % PanelKind::ALL.len()];
        // SAFETY: an import of the host's clock, no arguments.
        let now = || unsafe { now() } / 1e3;
        common::bench(kind, rows as usize, n as usize, k as usize, &now)
    }
}
