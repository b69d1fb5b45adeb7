//! The benchmark: bundle size, isolate startup, cold first request, warm
//! latency in workerd, and the same requests handled natively, all measured
//! side by side in one run so that ratios hold on a noisy shared machine.
//!
//! Run with `scripts/bench [--runs N] [--requests N] [--json PATH]`.
//!
//! What each figure means:
//! - startup: spawning a fresh workerd until /healthz answers 200, which
//!   includes compiling and instantiating the wasm module. Shown next to the
//!   same figure for an empty JavaScript worker, the runtime's own floor.
//! - cold first classify: the first /v1/classify of a fresh isolate, which pays
//!   for building the model (parse + optimize the embedded graph) once.
//! - warm: HTTP round trips on loopback with keep-alive; /healthz is the HTTP
//!   floor, so `classify - healthz` estimates the in-isolate cost.
//! - native: the same request bodies through `edgeinfer::api::handle` in this
//!   process (release build), no HTTP.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use edgeinfer::api::{self, HttpRequest};
use serde_json::{json, Value};
use support::{Client, Module, Worker};

struct Args {
    runs: usize,
    requests: usize,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 7,
        requests: 300,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--requests" => {
                a.requests = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--requests N")
            }
            "--json" => a.json = Some(it.next().expect("--json PATH")),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, p99) in milliseconds.
fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}

fn median(v: Vec<f64>) -> f64 {
    quantiles(v).0
}

fn single_body() -> Value {
    json!({"model": "lande", "input": "Bonjour tout le monde, comment allez-vous aujourd'hui ?"})
}

fn batch_body() -> Value {
    let golden: Value = serde_json::from_slice(
        &std::fs::read(support::root().join("models/lande/golden.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .filter(|t| t.trim().len() > 20)
        .take(64)
        .collect();
    json!({"model": "lande", "input": texts})
}

fn timed_post(c: &Client, body: &Value) -> f64 {
    let t = Instant::now();
    let res = c.post_json("/v1/classify", body);
    let elapsed = ms(t.elapsed());
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    elapsed
}

fn native(body: &Value, n: usize) -> (f64, (f64, f64)) {
    let bytes = body.to_string().into_bytes();
    let req = HttpRequest {
        method: "POST",
        path: "/v1/classify",
        content_type: Some("application/json"),
        body: &bytes,
        body_complete: true,
    };
    let run = || {
        let t = Instant::now();
        let res = api::handle(&req);
        assert_eq!(res.status, 200);
        ms(t.elapsed())
    };
    let first = run();
    (first, quantiles((0..n).map(|_| run()).collect()))
}

/// Raw and gzip bytes of the bundle `wrangler deploy --dry-run` would upload.
fn bundle() -> (u64, u64, String) {
    let out_dir = support::root().join("target/edgeinfer-bench/dist");
    let out = Command::new(support::root().join("scripts/bundle-size"))
        .arg(&out_dir)
        .output()
        .expect("run scripts/bundle-size");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/bundle-size failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("bundle:"))
        .expect("bundle line")
        .to_string();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let wrangler = text
        .lines()
        .find(|l| l.contains("Total Upload"))
        .unwrap_or("")
        .trim()
        .to_string();
    (nums[0], nums[1], wrangler)
}

fn main() {
    let a = args();
    support::ensure_built();
    let (raw, gzip, wrangler_line) = bundle();

    let empty = vec![Module {
        name: "worker.js",
        kind: "esModule",
        bytes: b"export default { fetch() { return new Response('ok'); } };".to_vec(),
    }];
    let mut js_startup = Vec::new();
    let mut startup = Vec::new();
    let mut cold_first = Vec::new();
    let modules = support::built_modules();
    for _ in 0..a.runs {
        js_startup.push(ms(Worker::start_modules(&empty).startup));
        let w = Worker::start_modules(&modules);
        startup.push(ms(w.startup));
        cold_first.push(timed_post(&w.client(), &single_body()));
    }

    let w = Worker::start_modules(&modules);
    let c = w.client();
    let single = single_body();
    let batch = batch_body();
    for _ in 0..20 {
        timed_post(&c, &single);
        timed_post(&c, &batch);
    }
    let floor = quantiles(
        (0..a.requests)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(c.get("/healthz").status, 200);
                ms(t.elapsed())
            })
            .collect(),
    );
    let warm_single = quantiles((0..a.requests).map(|_| timed_post(&c, &single)).collect());
    let warm_batch = quantiles(
        (0..a.requests / 4)
            .map(|_| timed_post(&c, &batch))
            .collect(),
    );
    drop(w);

    let (native_first, native_single) = native(&single, a.requests);
    let (_, native_batch) = native(&batch, a.requests / 4);
    let ratio = |wasm: f64, nat: f64| (wasm - floor.0).max(0.0) / nat;

    let rows: Vec<(&str, String)> = vec![
        (
            "bundle raw",
            format!("{:.2} MiB ({raw} bytes)", raw as f64 / 1048576.0),
        ),
        (
            "bundle gzip",
            format!("{:.2} MiB ({gzip} bytes)", gzip as f64 / 1048576.0),
        ),
        ("wrangler says", wrangler_line.clone()),
        (
            "startup, empty JS worker (median)",
            format!("{:.1} ms", median(js_startup.clone())),
        ),
        (
            "startup, edgeinfer (median)",
            format!("{:.1} ms", median(startup.clone())),
        ),
        (
            "cold first classify (median)",
            format!("{:.1} ms", median(cold_first.clone())),
        ),
        (
            "warm /healthz p50 / p99 (HTTP floor)",
            format!("{:.3} / {:.3} ms", floor.0, floor.1),
        ),
        (
            "warm classify 1 text p50 / p99",
            format!("{:.3} / {:.3} ms", warm_single.0, warm_single.1),
        ),
        (
            "warm classify 64 texts p50 / p99",
            format!("{:.3} / {:.3} ms", warm_batch.0, warm_batch.1),
        ),
        (
            "native first classify (model load)",
            format!("{native_first:.3} ms"),
        ),
        (
            "native classify 1 text p50 / p99",
            format!("{:.3} / {:.3} ms", native_single.0, native_single.1),
        ),
        (
            "native classify 64 texts p50 / p99",
            format!("{:.3} / {:.3} ms", native_batch.0, native_batch.1),
        ),
        (
            "wasm/native, 1 text (p50 - floor)",
            format!("{:.2}x", ratio(warm_single.0, native_single.0)),
        ),
        (
            "wasm/native, 64 texts (p50 - floor)",
            format!("{:.2}x", ratio(warm_batch.0, native_batch.0)),
        ),
    ];
    println!(
        "\nedgeinfer bench: {} cold runs, {} warm requests\n",
        a.runs, a.requests
    );
    println!("| metric | value |\n|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }

    if let Some(path) = a.json {
        let report = json!({
            "runs": a.runs,
            "requests": a.requests,
            "bundle": {"raw_bytes": raw, "gzip_bytes": gzip, "wrangler": wrangler_line},
            "startup_ms": {"empty_js_worker": js_startup, "edgeinfer": startup},
            "cold_first_classify_ms": cold_first,
            "warm_ms": {
                "healthz": {"p50": floor.0, "p99": floor.1},
                "classify_1": {"p50": warm_single.0, "p99": warm_single.1},
                "classify_64": {"p50": warm_batch.0, "p99": warm_batch.1},
            },
            "native_ms": {
                "first_classify": native_first,
                "classify_1": {"p50": native_single.0, "p99": native_single.1},
                "classify_64": {"p50": native_batch.0, "p99": native_batch.1},
            },
            "ratio_wasm_over_native": {
                "classify_1": ratio(warm_single.0, native_single.0),
                "classify_64": ratio(warm_batch.0, native_batch.0),
            },
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).expect("write JSON");
        println!("\nwrote {path}");
    }
}
