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
    use edgeinfer_engine::kernels::panels::PanelKind;

    use super::common;

    extern "C" {
        fn now() -> f64;
    }

    #[no_mangle]
    pub extern "C" fn check() -> u32 {
        u32::from(common::check().is_ok())
    }

    #[no_mangle]
    pub extern "C" fn bench(kind: u32, rows: u32, n: u32, k: u32) -> f64 {
        let kind = PanelKind::ALL[kind as usize % PanelKind::ALL.len()];
        // SAFETY: an import of the host's clock, no arguments.
        let now = || unsafe { now() } / 1e3;
        common::bench(kind, rows as usize, n as usize, k as usize, &now)
    }
}
