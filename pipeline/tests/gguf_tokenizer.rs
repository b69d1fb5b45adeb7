//! The tokenizer.json built from a GGUF file's own vocabulary
//! (`edgeinfer_pipeline::gguf_tokenizer`) against llama.cpp's tokenizer on the
//! same file, on the 263 golden texts of models/smollm2/golden.json (239 texts
//! in 15 languages, code, numbers, emoji, whitespace runs; 24 chats written in
//! ChatML, whose markers are control tokens of both files):
//! - SmolLM2-135M-Instruct (pre-tokenizer "smollm"): its golden ids, which
//!   llama.cpp's tokenizer (npm node-llama-cpp 3.22.1, tokens.mjs) gives too,
//!   all 263;
//! - Qwen2.5-Coder-0.5B-Instruct (pre-tokenizer "qwen2", 151,936 tokens,
//!   151,387 merges): models/qwen2.5-coder-0.5b/tokens.json, written by
//!   `node models/qwen2.5-coder-0.5b/tokens.mjs GGUF tokens.json` with llama.cpp.
//!
//! Exact equality, every id; and the ids decode to the text again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fetched, root};

use edgeinfer_pipeline::gguf_tokenizer::Vocabulary;
use edgeinfer_pipeline::pack_gguf::Gguf;
use serde_json::Value;

fn read_json(path: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON")
}

/// Builds the tokenizer from the file and checks every case's ids.
fn check(gguf: &Path, cases: &[Value]) {
    let bytes = std::fs::read(gguf).expect("read the GGUF");
    let file = Gguf::parse(&bytes).expect("parse");
    let json = Vocabulary::of(&file)
        .and_then(|v| v.tokenizer_json())
        .expect("build tokenizer.json");
    let tokenizer =
        tokenizers::Tokenizer::from_bytes(json.as_bytes()).expect("tokenizers loads it");
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tokenizer
            .encode(text, false)
            .expect("encode")
            .get_ids()
            .to_vec();
        if got != want {
            wrong.push(format!(
                "{text:?}\n  llama.cpp {want:?}\n  ours      {got:?}"
            ));
            continue;
        }
        assert_eq!(tokenizer.decode(&got, false).expect("decode"), text);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} texts differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn smollm2_equals_llama_cpp_and_the_golden_ids() {
    let golden = read_json(root().join("models/smollm2/golden.json"));
    check(
        &fetched("smollm2"),
        golden["tokenizer"]["cases"].as_array().unwrap(),
    );
}

#[test]
fn qwen2_equals_llama_cpp() {
    let reference = read_json(root().join("models/qwen2.5-coder-0.5b/tokens.json"));
    assert_eq!(
        reference["gguf_sha256"],
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "tokens.json was made from another file"
    );
    check(
        &fetched("qwen2.5-coder-0.5b"),
        reference["cases"].as_array().unwrap(),
    );
}

/// The command writes what the library builds, and the tokenizers crate
/// loads it; a file that is not a GGUF is refused with a message.
#[test]
fn the_command_writes_the_tokenizer() {
    let gguf = fetched("smollm2");
    let out = std::env::temp_dir().join(format!("gguf-tokenizer-{}.json", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_gguf-tokenizer"))
        .arg(&gguf)
        .arg(&out)
        .output()
        .expect("run gguf-tokenizer");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("49152 tokens"));
    let written = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let bytes = std::fs::read(&gguf).unwrap();
    let want = Vocabulary::of(&Gguf::parse(&bytes).unwrap())
        .unwrap()
        .tokenizer_json()
        .unwrap();
    assert_eq!(written, want.as_bytes());
    let bad = Command::new(env!("CARGO_BIN_EXE_gguf-tokenizer"))
        .arg(root().join("README.md"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success() && !out.exists());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("gguf-tokenizer:"));
}
