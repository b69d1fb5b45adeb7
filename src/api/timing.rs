//! Where a request's time went (`Server-Timing`) and what its model work cost
//! (`usage.cpu_ms`).
//!
//! The core has no clock of its own: `std::time::Instant` panics on
//! wasm32-unknown-unknown, and the isolate's clock is the host's to give. The
//! caller hands in a [`Clock`] (`performance.now()` in the worker, a monotonic
//! clock natively).
//!
//! On Cloudflare's edge, timers do not advance while code computes (a Spectre
//! mitigation; they move only across I/O), so a phase that only computes reads
//! as 0 ms there, while workerd run locally and the native CLI read real time.
//! `usage.cpu_ms` therefore says where its number comes from: `measured` when
//! the clock moved, otherwise `estimated` from the work done (tokens,
//! characters, generated tokens) at rates calibrated on this worker's wasm
//! build (bench/latest.json).

use serde::{Deserialize, Serialize};

use crate::registry::{InputSpec, ModelSpec};

/// Milliseconds from an arbitrary origin, monotonic.
pub type Clock = fn() -> f64;

/// A clock that never moves: the default where the host gives none.
pub fn frozen_clock() -> f64 {
    0.0
}

/// The native monotonic clock (ms since the first call).
#[cfg(not(target_arch = "wasm32"))]
pub fn native_clock() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

/// The phases of one request, in order, each with its duration.
#[derive(Debug, Clone)]
pub struct Timings {
    clock: Clock,
    last: f64,
    phases: Vec<(&'static str, f64)>,
}

impl Timings {
    pub fn start(clock: Clock) -> Self {
        Timings {
            clock,
            last: clock(),
            phases: Vec::new(),
        }
    }

    /// Ends the current phase under `name` and starts the next.
    pub fn lap(&mut self, name: &'static str) {
        let now = (self.clock)();
        self.phases.push((name, (now - self.last).max(0.0)));
        self.last = now;
    }

    /// Ends the current phase, recording it only if `happened` (a model load
    /// that only the first request of an isolate pays).
    pub fn lap_if(&mut self, happened: bool, name: &'static str) {
        if happened {
            self.lap(name);
        } else {
            self.last = (self.clock)();
        }
    }

    /// Records a phase timed elsewhere (a stream's steps, summed).
    pub fn push(&mut self, name: &'static str, ms: f64) {
        self.phases.push((name, ms));
    }

    /// Milliseconds of model work (every phase but the cache's).
    pub fn compute_ms(&self) -> f64 {
        self.phases
            .iter()
            .filter(|(name, _)| *name != "cache")
            .map(|(_, ms)| ms)
            .sum()
    }

    pub fn phases(&self) -> &[(&'static str, f64)] {
        &self.phases
    }

    /// The `Server-Timing` header value: `init;dur=…, tokenize;dur=…, …`.
    pub fn header(&self) -> String {
        server_timing(&self.phases)
    }
}

/// `Server-Timing` for `phases` (durations in ms, three decimals).
pub fn server_timing(phases: &[(&str, f64)]) -> String {
    phases
        .iter()
        .map(|(name, ms)| format!("{name};dur={ms:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the model work of a request cost, for `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    pub cpu_ms: f64,
    /// `measured` (the isolate clock ran) or `estimated` (it did not).
    pub cpu_ms_source: CpuSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuSource {
    Measured,
    Estimated,
}

/// The work a request did, in the units the estimate is calibrated on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub inputs: usize,
    pub characters: usize,
    /// Tokens read by a transformer (prompt tokens for a language model).
    pub tokens: usize,
    /// Tokens generated one pass at a time.
    pub generated: usize,
    /// Whether this request loaded the model.
    pub loaded: bool,
}

/// Per-unit costs in ms, from the wasm build's warm medians in
/// bench/latest.json (2 shared cores): minilm ~1.8 ms per token, the chat
/// model ~0.7 ms per prompt token and ~1.6 ms per generated token, lande and
/// the tf-idf model well under 0.1 ms per text. Loading costs from the cold
/// first requests of the same run.
fn estimate(spec: &ModelSpec, work: &Work) -> f64 {
    let (load, run) = match spec.input {
        InputSpec::CharNgrams { .. } => (
            15.0,
            0.02 * work.inputs as f64 + 0.0005 * work.characters as f64,
        ),
        InputSpec::TfidfWords { .. } => (
            40.0,
            0.01 * work.inputs as f64 + 0.0002 * work.characters as f64,
        ),
        InputSpec::Tokens { .. } | InputSpec::SentenceEmbedding { .. } => {
            (350.0, 0.5 * work.inputs as f64 + 1.8 * work.tokens as f64)
        }
        InputSpec::Chat { .. } => (
            400.0,
            0.7 * work.tokens as f64 + 1.6 * work.generated as f64,
        ),
    };
    let ms = run + if work.loaded { load } else { 0.0 };
    (ms * 1000.0).round() / 1000.0
}

/// `measured` compute time when the clock moved, else the estimate.
pub fn cpu_usage(timings: &Timings, spec: &ModelSpec, work: &Work) -> CpuUsage {
    let measured = timings.compute_ms();
    if measured > 0.0 {
        CpuUsage {
            cpu_ms: (measured * 1000.0).round() / 1000.0,
            cpu_ms_source: CpuSource::Measured,
        }
    } else {
        CpuUsage {
            cpu_ms: estimate(spec, work),
            cpu_ms_source: CpuSource::Estimated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn a_frozen_clock_gives_an_estimate_that_grows_with_the_work() {
        let timings = Timings::start(frozen_clock);
        let spec = registry::find("all-minilm-l6-v2").unwrap();
        let small = cpu_usage(
            &timings,
            spec,
            &Work {
                inputs: 1,
                tokens: 8,
                ..Work::default()
            },
        );
        let large = cpu_usage(
            &timings,
            spec,
            &Work {
                inputs: 1,
                tokens: 128,
                ..Work::default()
            },
        );
        assert_eq!(small.cpu_ms_source, CpuSource::Estimated);
        assert!(small.cpu_ms > 0.0 && large.cpu_ms > 10.0 * small.cpu_ms / 2.0);
    }

    #[test]
    fn a_running_clock_is_measured_and_listed_in_order() {
        let mut timings = Timings::start(native_clock);
        std::thread::sleep(std::time::Duration::from_millis(2));
        timings.lap("tokenize");
        timings.lap_if(false, "init");
        timings.lap("inference");
        let header = timings.header();
        assert!(header.starts_with("tokenize;dur="), "{header}");
        assert!(header.contains(", inference;dur="), "{header}");
        assert!(!header.contains("init"), "{header}");
        let spec = registry::find("lande").unwrap();
        let usage = cpu_usage(&timings, spec, &Work::default());
        assert_eq!(usage.cpu_ms_source, CpuSource::Measured);
        assert!(usage.cpu_ms >= 2.0, "{usage:?}");
    }
}
