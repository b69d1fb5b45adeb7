//! cargo-fuzz entry point; the checks are in fuzz/checks/requests.rs, which
//! tests/fuzz_corpus.rs also runs on the committed corpus.
#![no_main]

#[path = "../checks/requests.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
