//! The fuzzers' checks (fuzz/checks/) on every committed input under
//! fuzz/corpus/<target>/ (the seeds and what fuzzing found worth keeping,
//! crash reproducers included), so a regression fails the plain test suite
//! without cargo-fuzz.

use std::path::PathBuf;

#[path = "../fuzz/checks/chat.rs"]
mod chat;
#[path = "../fuzz/checks/requests.rs"]
mod requests;
#[path = "../fuzz/checks/text.rs"]
mod text;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for path in &inputs {
        let data = std::fs::read(path).expect("read a corpus input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
    eprintln!("{target}: {} inputs", inputs.len());
}

#[test]
fn requests_corpus() {
    replay("requests", requests::check);
}

#[test]
fn text_corpus() {
    replay("text", text::check);
}

#[test]
fn chat_corpus() {
    replay("chat", chat::check);
}
