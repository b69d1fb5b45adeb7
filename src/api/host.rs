//! What the core takes from its host because it has none of its own: a
//! clock, the time of day, randomness. The worker's glue gives workerd's
//! (`performance.now()`, `Date.now()`, `crypto.getRandomValues`); natively
//! these are the standard library's. On wasm without a host they stand
//! still, which only [`crate::api::validate`] relies on (it draws nothing
//! that leaves it).

use super::timing::{self, Clock};

#[cfg(not(target_arch = "wasm32"))]
pub const CLOCK: Clock = timing::native_clock;
#[cfg(target_arch = "wasm32")]
pub const CLOCK: Clock = timing::frozen_clock;

/// Unix seconds.
pub fn now() -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
    #[cfg(target_arch = "wasm32")]
    {
        0
    }
}

/// Random bytes natively from the standard library's per-process random
/// hash keys, mixed with a counter: unpredictable enough for local session
/// ids and seeds, with no extra crate. (The worker uses
/// `crypto.getRandomValues`.)
pub fn random(out: &mut [u8]) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::collections::hash_map::RandomState;
        use std::hash::BuildHasher;
        use std::sync::atomic::{AtomicU64, Ordering};
        static DRAWN: AtomicU64 = AtomicU64::new(0);
        let keys = RandomState::new();
        for chunk in out.chunks_mut(8) {
            let n = DRAWN.fetch_add(1, Ordering::Relaxed);
            let word = keys.hash_one((n, now()));
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }
    #[cfg(target_arch = "wasm32")]
    out.fill(0);
}
