//! Where a request's time went (`Server-Timing`) and what its model work
//! costs (`usage.cpu_ms`).
//!
//! The core has no clock of its own: `std::time::Instant` panics on
//! wasm32-unknown-unknown, and the isolate's clock is the host's to give. The
//! caller hands in a [`Clock`] (`performance.now()` in the worker, a monotonic
//! clock natively). On Cloudflare's edge, timers do not advance while code
//! computes (a Spectre mitigation; they move only across I/O), so there a
//! phase that only computes reads 0 ms, while workerd run locally and the
//! native CLI read real time (workerd's at 1 ms resolution).
//!
//! `usage.cpu_ms` is therefore not a clock reading but an estimate from the
//! work done (tokens, characters, generated tokens) at rates measured on this
//! worker's wasm build: the same number locally and on the edge, and a pure
//! function of the request, so answers stay byte-identical and cacheable.

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

/// The work a request did, in the units the estimate is calibrated on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub inputs: usize,
    pub characters: usize,
    /// Tokens read by a transformer (prompt tokens for a language model).
    pub tokens: usize,
    /// Tokens generated one pass at a time.
    pub generated: usize,
}

/// CPU ms of a sharded model (SmolLM2-135M-Instruct) per token, summed
/// over its shard isolates and the front's sampling: measured in workerd by
/// `scripts/bench --sharded` (227 prompt tokens in 2,730 ms; 26.2 ms of
/// shard time + 1.3 ms of sampling per generated token).
pub const SHARDED_MS_PER_PROMPT_TOKEN: f64 = 12.0;
pub const SHARDED_MS_PER_GENERATED_TOKEN: f64 = 27.5;

/// Estimated CPU ms of `work` on `spec` in the worker, not counting a
/// one-time model load (that shows as `init` in `Server-Timing`). Per-unit
/// costs from the wasm build's warm medians in bench/latest.json (2 shared
/// cores): minilm ~0.75 ms per token (its int8 kernel, engine/src/bert), the chat
/// model (src/decoder) ~0.36 ms per prompt token (2,776 tokens/s at 200)
/// and ~0.85 ms per generated token, lande and the tf-idf model well under
/// 0.1 ms per text. Three decimals: a stable number, not a false precision.
pub fn estimate_cpu_ms(spec: &ModelSpec, work: &Work) -> f64 {
    let ms = match spec.input {
        InputSpec::CharNgrams { .. } => 0.02 * work.inputs as f64 + 0.0005 * work.characters as f64,
        InputSpec::TfidfWords { .. } => 0.01 * work.inputs as f64 + 0.0002 * work.characters as f64,
        InputSpec::Tokens { .. } | InputSpec::SentenceEmbedding { .. } => {
            0.5 * work.inputs as f64 + 0.75 * work.tokens as f64
        }
        InputSpec::Chat { .. } => 0.36 * work.tokens as f64 + 0.85 * work.generated as f64,
        // Summed over every shard isolate (SmolLM2-135M, scripts/bench --decoder).
        InputSpec::ShardedChat { .. } => {
            SHARDED_MS_PER_PROMPT_TOKEN * work.tokens as f64
                + SHARDED_MS_PER_GENERATED_TOKEN * work.generated as f64
        }
    };
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn the_estimate_grows_with_the_work_and_depends_on_nothing_else() {
        let spec = registry::find("all-minilm-l6-v2").unwrap();
        let work = |tokens| Work {
            inputs: 1,
            tokens,
            ..Work::default()
        };
        let small = estimate_cpu_ms(spec, &work(8));
        let large = estimate_cpu_ms(spec, &work(128));
        assert!(small > 0.0 && large > 10.0 * small, "{small} {large}");
        assert_eq!(small, estimate_cpu_ms(spec, &work(8)));
    }

    #[test]
    fn a_running_clock_times_the_phases_in_order() {
        let mut timings = Timings::start(native_clock);
        std::thread::sleep(std::time::Duration::from_millis(2));
        timings.lap("tokenize");
        timings.lap_if(false, "init");
        timings.lap("inference");
        let header = timings.header();
        assert!(header.starts_with("tokenize;dur="), "{header}");
        assert!(header.contains(", inference;dur="), "{header}");
        assert!(!header.contains("init"), "{header}");
        assert!(timings.phases()[0].1 >= 2.0, "{header}");
    }
}
