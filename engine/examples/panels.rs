//! Speed of every panel format's product, in G multiply-adds per second:
//! one token (the decode step) and tiles of four (prefill), on the shapes
//! of examples/common/panels.rs; first a check that the vector kernels give
//! the portable definition's results bit for bit.
//!
//! `cargo run -p edgeinfer-engine --release --example panels [-- all]`
//! (`all`: every shape; by default the first). The same in wasm:
//! examples/panels_wasm.rs.

#[path = "common/panels.rs"]
mod common;

use std::time::Instant;

use edgeinfer_engine::kernels::panels::PanelKind;

fn main() {
    let all = std::env::args().any(|a| a == "all");
    println!("kernels: {}", edgeinfer_engine::kernels::active());
    match common::check() {
        Ok(()) => println!("check: every format, 1..6 rows, bit for bit as the portable path"),
        Err(e) => {
            println!("check FAILED: {e}");
            std::process::exit(1);
        }
    }
    let now = cpu_seconds();
    let shapes = if all {
        &common::SHAPES[..]
    } else {
        &common::SHAPES[..1]
    };
    println!(
        "{:<6} {:>12} {:>8} {:>8}",
        "format", "shape", "1 row", "4 rows"
    );
    for &(n, k) in shapes {
        for kind in PanelKind::ALL {
            let one = common::bench(kind, 1, n, k, &now);
            if one < 0.0 {
                continue;
            }
            let four = common::bench(kind, 4, n, k, &now);
            let shape = format!("{n}x{k}");
            println!(
                "{:<6} {shape:>12} {one:>8.2} {four:>8.2}",
                format!("{kind:?}")
            );
        }
    }
}

/// A clock of this thread's CPU time on 64-bit Linux (the machine may be
/// shared: time spent descheduled is not the kernel's), else the wall
/// clock.
fn cpu_seconds() -> impl Fn() -> f64 {
    let t0 = Instant::now();
    move || {
        #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
        {
            #[repr(C)]
            struct Timespec {
                sec: i64,
                nsec: i64,
            }
            extern "C" {
                fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
            }
            const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
            let mut t = Timespec { sec: 0, nsec: 0 };
            // SAFETY: libc's clock_gettime writes one timespec.
            if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0 {
                return t.sec as f64 + t.nsec as f64 * 1e-9;
            }
        }
        t0.elapsed().as_secs_f64()
    }
}
