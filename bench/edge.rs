//! The benchmark: bundle size, isolate startup, cold first request, warm
//! latency in workerd, and the same requests handled natively, all measured
//! side by side in one run so that ratios hold on a noisy shared machine.
//!
//! Run with `scripts/bench [--runs N] [--requests N] [--load-seconds N] [--json PATH]`.
//!
//! What each figure means:
//! - startup: spawning a fresh workerd until /healthz answers 200, which
//!   includes compiling and instantiating the wasm module. Shown next to the
//!   same figure for an empty JavaScript worker, the runtime's own floor.
//! - cold first request: the first request for a model in a fresh isolate,
//!   which pays for building the model (parse + optimize the embedded graph)
//!   once; one fresh workerd per model and run.
//! - warm: HTTP round trips on loopback with keep-alive; /healthz is the HTTP
//!   floor, so `request - healthz` estimates the in-isolate cost.
//! - memory: the wasm module's bytes plus its linear memory (which only
//!   grows, so its size after every case is the peak), read from /healthz.
//! - native: the same request bodies through `edgeinfer::api::handle` in this
//!   process (release build), no HTTP.
//! - chat: one reply of a fixed number of sampled tokens (a seed found to
//!   run to `max_tokens`), minus the same request with `max_tokens: 1`,
//!   divided by the extra tokens: the cost of one generated token (one
//!   single-token pass with the KV cache, plus sampling and decoding), wasm
//!   and native. Time to first token: a streamed request until its first
//!   content event, warm, and cold (a fresh workerd, so model load included).
//!   On an otherwise idle isolate wall time is CPU time, which is what the
//!   Workers CPU limit counts.
//! - load: 1, 8 and 50 concurrent clients sending the mixed requests of
//!   tests/load.rs for `--load-seconds` each (fresh workerd per level):
//!   requests/s, p50/p90/p99 per kind, errors, lost session messages.
//! - throughput: autocannon (npm) at 1, 8 and 50 connections, one request
//!   kind at a time (lande classify, a 32-token embedding), as many requests
//!   as one client sends in `--load-seconds`: requests/s, p50/p99/max,
//!   errors, timeouts and non-2xx answers.
//! - memory per model: a fresh workerd per model, read after that model's
//!   first request (the module plus what loading that model alone grew the
//!   linear memory to).
//! - decoder: greedy ms per token and prompt (prefill) tokens/s at 16, 64
//!   and 200 tokens, natively on the engine and by onnxruntime-web on the
//!   chat model's ONNX file with its KV cache (bench/ort-web-lm.mjs), same
//!   prompt, same token count; prefill in wasm is a `max_tokens: 1` request
//!   of that prompt minus the HTTP floor.
//! - onnxruntime-web: the embedded sentence encoder's ONNX file run by
//!   onnxruntime-web (npm, wasm, one thread, SIMD) in Node on the same token
//!   rows (bench/ort-web.mjs), beside our in-isolate time (warm p50 minus the
//!   HTTP floor, so ours also pays for tokenizing and JSON).

#[path = "../tests/support/mod.rs"]
mod support;

mod byo;
mod crowd;
mod lm;
mod platforms;
mod sharded;

// build.rs's packers: the bench packs the chat model as Q8 blocks too.
use edgeinfer_pipeline as check;

use std::process::Command;
use std::time::{Duration, Instant};

use edgeinfer::api::{self, HttpRequest};
use serde_json::{json, Value};
use support::{Client, Module, Worker};

struct Args {
    runs: usize,
    requests: usize,
    /// Seconds of mixed load per concurrency level (1, 8, 50 clients).
    load_seconds: u64,
    /// Only the native decoder rows (seconds, no worker).
    decoder_only: bool,
    /// Only the sharded chat model's rows (front + shards in workerd).
    sharded_only: bool,
    /// Only a model added with scripts/add-model (its id).
    byo: Option<String>,
    /// Only workerd next to Deno (the same build on both servers).
    platforms_only: bool,
    /// Only the crowd (bench/crowd.rs), for this many seconds.
    crowd_seconds: Option<u64>,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 7,
        requests: 300,
        load_seconds: 10,
        decoder_only: false,
        sharded_only: false,
        byo: None,
        platforms_only: false,
        crowd_seconds: None,
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
            "--load-seconds" => {
                a.load_seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--load-seconds N")
            }
            "--json" => a.json = Some(it.next().expect("--json PATH")),
            "--decoder" => a.decoder_only = true,
            "--sharded" => a.sharded_only = true,
            "--byo" => a.byo = Some(it.next().expect("--byo MODEL")),
            "--deno" => a.platforms_only = true,
            "--crowd" => a.crowd_seconds = a.crowd_seconds.or(Some(60)),
            "--crowd-seconds" => {
                a.crowd_seconds = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--crowd-seconds N"),
                )
            }
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

/// One measured request: a route, a body, and a name for the table.
struct Case {
    name: String,
    /// The model id, for the cold-start runs (one per model).
    model: &'static str,
    path: &'static str,
    body: Value,
    /// For a single-text sentence-encoder case: the token-table rows of the
    /// text, which onnxruntime-web is given as `input_ids`.
    ort_rows: Option<Vec<u32>>,
}

fn golden_texts(model_dir: &str, min_chars: usize, n: usize) -> Vec<String> {
    let golden: Value = serde_json::from_slice(
        &std::fs::read(
            support::root()
                .join("models")
                .join(model_dir)
                .join("golden.json"),
        )
        .unwrap(),
    )
    .unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .filter(|t| t.trim().chars().count() > min_chars && t.len() < 400)
        .take(n)
        .map(String::from)
        .collect()
}

/// An English text of exactly `tokens` tokens (special tokens included) for
/// the sentence encoder, built from a plain sentence cycle.
fn text_of_tokens(tokens: usize) -> String {
    let spec = edgeinfer::registry::find(MINILM).unwrap();
    let (encoder, _) = edgeinfer::registry::encoder(spec).unwrap();
    let words =
        "the quick brown fox jumps over the lazy dog while a small bird sings in the old oak tree"
            .split(' ')
            .cycle();
    let mut text = String::new();
    for w in words {
        let candidate = if text.is_empty() {
            w.to_string()
        } else {
            format!("{text} {w}")
        };
        let n = encoder.tokenize(&[&candidate]).unwrap()[0].ids.len();
        if n > tokens {
            break;
        }
        text = candidate;
        if n == tokens {
            break;
        }
    }
    text
}

const MINILM: &str = "all-minilm-l6-v2";

fn cases() -> Vec<Case> {
    let case = |name: &str, model: &'static str, path: &'static str, body: Value| Case {
        name: name.to_string(),
        model,
        path,
        body,
        ort_rows: None,
    };
    let mut cases = vec![
        case(
            "lande classify, 1 text",
            "lande",
            "/v1/classify",
            json!({"model": "lande", "input": "Bonjour tout le monde, comment allez-vous aujourd'hui ?"}),
        ),
        case(
            "lande classify, 64 texts",
            "lande",
            "/v1/classify",
            json!({"model": "lande", "input": golden_texts("lande", 20, 64)}),
        ),
        case(
            "profanity classify, 1 text",
            "profanity",
            "/v1/classify",
            json!({"model": "profanity", "input": "You are a wonderful person, thanks for the help!"}),
        ),
    ];
    if edgeinfer::registry::find(MINILM).is_ok() {
        let spec = edgeinfer::registry::find(MINILM).unwrap();
        let (encoder, _) = edgeinfer::registry::encoder(spec).unwrap();
        for tokens in [8, 32, 128] {
            let text = text_of_tokens(tokens);
            let tokenized = encoder.tokenize(&[&text]).unwrap();
            let mut c = case(
                &format!("minilm embeddings, {tokens} tokens"),
                MINILM,
                "/v1/embeddings",
                json!({"model": MINILM, "input": text}),
            );
            c.ort_rows = Some(encoder.table_rows(&tokenized[0]).unwrap());
            cases.push(c);
        }
        cases.push(case(
            "minilm embeddings, 16 x 32 tokens",
            MINILM,
            "/v1/embeddings",
            json!({"model": MINILM, "input": vec![text_of_tokens(32); 16]}),
        ));
    }
    cases.push(case(
        "chat, prompt + 16 greedy tokens",
        CHAT_MODEL,
        "/v1/chat/completions",
        json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Good morrow, friend."}],
               "temperature": 0, "max_tokens": 16}),
    ));
    if edgeinfer::registry::find("sentiment").is_ok() {
        cases.push(case(
            "sentiment classify, 1 text",
            "sentiment",
            "/v1/classify",
            json!({"model": "sentiment", "input": "I love this phone, the battery lasts forever!"}),
        ));
    }
    cases
}

fn timed_post(c: &Client, path: &str, body: &Value) -> f64 {
    let t = Instant::now();
    let res = c.post_json(path, body);
    let elapsed = ms(t.elapsed());
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    elapsed
}

/// The first call (which loads the model in this process) and warm quantiles.
fn native(path: &str, body: &Value, n: usize) -> (f64, (f64, f64)) {
    let bytes = body.to_string().into_bytes();
    let req = HttpRequest::post_json(path, &bytes);
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
        .find(|l| l.starts_with("bundle edgeinfer:"))
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

const CHAT_MODEL: &str = "shakespeare-llama";
const CHAT_TOKENS: usize = 128;

fn chat_body(seed: u64, max_tokens: usize, stream: bool) -> Value {
    json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Speak on, good sir."}],
           "temperature": 2.0, "top_k": 0, "seed": seed, "max_tokens": max_tokens, "stream": stream})
}

/// A seed whose reply runs to `CHAT_TOKENS` (found natively; the worker
/// runs the same code on the same logits).
fn long_reply_seed() -> u64 {
    (0..200)
        .find(|&seed| {
            let body = chat_body(seed, CHAT_TOKENS, false).to_string().into_bytes();
            let res = api::handle(&HttpRequest::post_json("/v1/chat/completions", &body));
            let v: Value = serde_json::from_slice(&res.body).unwrap();
            v["usage"]["completion_tokens"] == CHAT_TOKENS
        })
        .expect("a seed that samples 128 tokens")
}

/// Milliseconds until the first content event of a streamed reply.
fn time_to_first_token(c: &Client, body: &Value) -> f64 {
    let s = support::sse::stream(c, "/v1/chat/completions", body);
    assert_eq!(s.status, 200, "{body}");
    s.events
        .iter()
        .find(|(_, d)| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
        .map(|(t, _)| ms(*t))
        .expect("a content event")
}

/// ms per generated token: (t(n tokens) - t(1 token)) / (n - 1), medians.
fn per_token(mut time: impl FnMut(&Value) -> f64, seed: u64, runs: usize) -> (f64, f64) {
    let long = chat_body(seed, CHAT_TOKENS, false);
    let one = chat_body(seed, 1, false);
    let t_long = median((0..runs).map(|_| time(&long)).collect());
    let t_one = median((0..runs).map(|_| time(&one)).collect());
    ((t_long - t_one) / (CHAT_TOKENS - 1) as f64, t_one)
}

/// onnxruntime-web on the sentence encoder's ONNX file, for the cases that
/// have token rows: `{ort_version, load_ms, cases: [{name, first_ms, p50_ms,
/// p99_ms}]}`, or None (with the reason on stderr) when Node cannot run it.
fn ort_web(cases: &[Case], runs: usize) -> Option<Value> {
    let spec = edgeinfer::registry::find(MINILM).ok()?;
    let input = json!({
        "model": support::root().join("models").join(onnx_path(spec.id)?),
        "runs": runs,
        "cases": cases.iter().filter_map(|c| c.ort_rows.as_ref().map(|rows| json!({"name": c.name, "rows": rows}))).collect::<Vec<_>>(),
    });
    node_json("bench/ort-web.mjs", &input)
}

/// Runs a Node script of bench/ with `input` as JSON on stdin and returns
/// the JSON it prints, or None (the reason on stderr).
fn node_json(script: &str, input: &Value) -> Option<Value> {
    let mut child = Command::new("node")
        .arg(support::root().join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| eprintln!("bench: cannot run node for {script}: {e}"))
        .ok()?;
    use std::io::Write as _;
    child
        .stdin
        .take()?
        .write_all(input.to_string().as_bytes())
        .ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        eprintln!("bench: {script} failed ({})", out.status);
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Bytes a model puts in the module: its embedded artifact (packed or as
/// is) and the input files build.rs embeds beside it.
fn embedded_bytes(spec: &edgeinfer::registry::ModelSpec) -> usize {
    use edgeinfer::registry::InputSpec;
    spec.artifact.len()
        + match &spec.input {
            InputSpec::Tokens {
                tokenizer, rows, ..
            } => tokenizer.len() + rows.len(),
            InputSpec::TfidfWords { vocab, unicode } => vocab.len() + unicode.len(),
            InputSpec::Chat { tokenizer, .. } | InputSpec::ShardedChat { tokenizer, .. } => {
                tokenizer.len()
            }
            InputSpec::CharNgrams { vocab, .. } => {
                vocab.iter().flat_map(|l| l.iter()).map(|g| g.len()).sum()
            }
            InputSpec::SentenceEmbedding { .. } => 0,
        }
}

/// The manifest's artifact path of a model (the file build.rs packed).
fn onnx_path(id: &str) -> Option<String> {
    let text = std::fs::read_to_string(support::root().join("models/manifest.toml")).ok()?;
    let manifest = check::parse_manifest(&text).ok()?;
    manifest
        .model
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.artifact)
}

/// autocannon (npm) against one route: `connections` clients sending
/// `amount` requests in all (the same work at every level), with a 60 s
/// timeout instead of autocannon's 10 s: one isolate serves requests one at a
/// time, so at 50 connections a request may wait behind 49 others.
fn autocannon(base: &str, path: &str, body: &Value, connections: usize, amount: usize) -> Value {
    let out = Command::new(support::root().join("node_modules/.bin/autocannon"))
        .args([
            "--json",
            "-c",
            &connections.to_string(),
            "-a",
            &amount.to_string(),
        ])
        .args(["--timeout", "60"])
        .args([
            "-m",
            "POST",
            "-H",
            "content-type=application/json",
            "-b",
            &body.to_string(),
        ])
        .arg(format!("{base}{path}"))
        .output()
        .expect("run node_modules/.bin/autocannon (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "autocannon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("autocannon --json output");
    let total = r["requests"]["total"].as_f64().unwrap_or(0.0);
    let seconds = r["duration"].as_f64().unwrap_or(f64::NAN);
    json!({
        "connections": connections,
        "seconds": seconds,
        "requests": total,
        "requests_per_s": total / seconds,
        "latency_ms": {"p50": r["latency"]["p50"], "p99": r["latency"]["p99"], "max": r["latency"]["max"]},
        "errors": r["errors"],
        "timeouts": r["timeouts"],
        "non_2xx": r["non2xx"],
    })
}

/// A partial bench's output: its rows as a table (and a second table after
/// them, if any), and its JSON where `--json` says.
fn report(rows: &[(String, String)], table: Option<&str>, json: &Value, path: Option<&str>) {
    println!("| metric | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    if let Some(table) = table {
        println!("\n{table}");
    }
    if let Some(path) = path {
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, serde_json::to_vec_pretty(json).unwrap()).expect("write JSON");
    }
}

fn main() {
    let a = args();
    if a.decoder_only {
        println!("| metric | value |\n|---|---|");
        for (k, v) in lm::native_rows(a.requests) {
            println!("| {k} | {v} |");
        }
        return;
    }
    if let Some(seconds) = a.crowd_seconds {
        let (rows, json) = crowd::rows(seconds);
        report(&rows, None, &json, a.json.as_deref());
        return;
    }
    if let Some(model) = &a.byo {
        let (rows, json) = byo::rows(model, a.runs);
        report(&rows, None, &json, a.json.as_deref());
        return;
    }
    if a.sharded_only {
        let (rows, json) = sharded::rows(a.runs);
        report(&rows, None, &json, a.json.as_deref());
        return;
    }
    support::ensure_built();
    if a.platforms_only {
        let (rows, table, json) = platforms::rows(&cases(), a.runs, a.requests);
        report(&rows, Some(&table), &json, a.json.as_deref());
        return;
    }
    let (raw, gzip, wrangler_line) = bundle();
    let modules = support::built_modules();
    let wasm = modules.iter().find(|m| m.kind == "wasm");
    let wasm_bytes = wasm.map_or(0, |m| m.bytes.len());
    let embedded: usize = edgeinfer::registry::MODELS.iter().map(embedded_bytes).sum();
    let code_bytes = wasm_bytes.saturating_sub(embedded);
    // Function names of tract's crates (tract_core, tract_linalg, ...) in
    // the name section: 0 when no tract code was linked in.
    let tract_names = wasm.map_or(0, |m| m.bytes.windows(6).filter(|w| w == b"tract_").count());
    let cases = cases();

    // Startup, and the cold first request of each model in a fresh isolate.
    let empty = vec![Module {
        name: "worker.js",
        kind: "esModule",
        bytes: b"export default { fetch() { return new Response('ok'); } };".to_vec(),
    }];
    let mut js_startup = Vec::new();
    let mut startup = Vec::new();
    let mut cold: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut alone: Vec<(&str, u64)> = Vec::new();
    for case in &cases {
        if !cold.iter().any(|(m, _)| *m == case.model) {
            cold.push((case.model, Vec::new()));
        }
    }
    for _ in 0..a.runs {
        js_startup.push(ms(Worker::start_modules(&empty).startup));
        for (model, times) in cold.iter_mut() {
            let w = Worker::start_modules(&modules);
            startup.push(ms(w.startup));
            let case = cases.iter().find(|c| c.model == *model).unwrap();
            times.push(timed_post(&w.client(), case.path, &case.body));
            let memory = w.client().get("/healthz").json()["wasm_memory_bytes"]
                .as_u64()
                .unwrap_or(0);
            match alone.iter_mut().find(|(m, _)| m == model) {
                Some((_, peak)) => *peak = (*peak).max(memory),
                None => alone.push((model, memory)),
            }
        }
    }

    // Warm, every case in one isolate; then its memory, now at its peak.
    let w = Worker::start_modules(&modules);
    let c = w.client();
    for case in &cases {
        for _ in 0..10 {
            timed_post(&c, case.path, &case.body);
        }
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
    let warm: Vec<(f64, f64)> = cases
        .iter()
        .map(|case| {
            quantiles(
                (0..a.requests)
                    .map(|_| timed_post(&c, case.path, &case.body))
                    .collect(),
            )
        })
        .collect();
    // Chat: per-token cost and time to first token, warm.
    let seed = long_reply_seed();
    let chat_runs = (a.requests / 10).max(5);
    for _ in 0..3 {
        timed_post(
            &c,
            "/v1/chat/completions",
            &chat_body(seed, CHAT_TOKENS, false),
        );
    }
    let (wasm_token_ms, wasm_prompt_ms) = per_token(
        |b| timed_post(&c, "/v1/chat/completions", b),
        seed,
        chat_runs,
    );
    let ttft_warm = median(
        (0..chat_runs)
            .map(|_| time_to_first_token(&c, &chat_body(seed, 8, true)))
            .collect(),
    );
    let linear_memory = c.get("/healthz").json()["wasm_memory_bytes"]
        .as_u64()
        .unwrap_or(0);
    drop(w);
    let ttft_cold = median(
        (0..a.runs)
            .map(|_| {
                let w = Worker::start_modules(&modules);
                time_to_first_token(&w.client(), &chat_body(seed, 8, true))
            })
            .collect(),
    );
    let (native_token_ms, native_prompt_ms) = per_token(
        |b| {
            let bytes = b.to_string().into_bytes();
            let t = Instant::now();
            let res = api::handle(&HttpRequest::post_json("/v1/chat/completions", &bytes));
            assert_eq!(res.status, 200);
            ms(t.elapsed())
        },
        seed,
        chat_runs,
    );

    // The decoder against onnxruntime-web on the same ONNX file: the chat
    // prompt above and as many tokens; prefill at three prompt lengths, in
    // wasm too (a fresh isolate per length would add model load: warm).
    let chat_prompt = lm::prompt_ids("Speak on, good sir.");
    let prefill: Vec<(String, Vec<u32>, String)> = [16, 64, 200]
        .iter()
        .map(|&n| {
            let (content, ids) = lm::message_of_tokens(n);
            (ids.len().to_string(), ids, content)
        })
        .collect();
    let native_greedy =
        lm::native_greedy_ms_per_token(lm::model().decoder(), &chat_prompt, CHAT_TOKENS, chat_runs);
    let native_greedy_q8 =
        lm::native_greedy_ms_per_token(&lm::q8_decoder(), &chat_prompt, CHAT_TOKENS, chat_runs);
    let native_prefill: Vec<f64> = prefill
        .iter()
        .map(|(_, ids, _)| lm::native_prefill(ids, chat_runs))
        .collect();
    let wasm_prefill: Vec<f64> = {
        let w = Worker::start_modules(&modules);
        let c = w.client();
        let floor = median(
            (0..20)
                .map(|_| {
                    let t = Instant::now();
                    c.get("/healthz");
                    ms(t.elapsed())
                })
                .collect(),
        );
        prefill
            .iter()
            .map(|(_, _, content)| {
                let body = json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}],
                                  "temperature": 0, "max_tokens": 1});
                timed_post(&c, "/v1/chat/completions", &body);
                (median((0..chat_runs).map(|_| timed_post(&c, "/v1/chat/completions", &body)).collect()) - floor).max(0.0)
            })
            .collect()
    };
    let decoder_rows = lm::native_rows(chat_runs.max(20));
    let ort_lm = lm::ort_web(
        &chat_prompt,
        CHAT_TOKENS,
        &prefill
            .iter()
            .map(|(n, ids, _)| (n.clone(), ids.clone()))
            .collect::<Vec<_>>(),
        chat_runs,
    );
    let ort_token_ms = ort_lm
        .as_ref()
        .and_then(|o| o["decode"]["ms_per_token_p50"].as_f64());
    let ort_prefill = |name: &str| -> Option<f64> {
        ort_lm.as_ref()?["prefill"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)?["p50_ms"]
            .as_f64()
    };

    // Throughput and latency under concurrent clients: the mixed load of
    // tests/load.rs, on a fresh workerd per level.
    let load: Vec<support::load::Report> = [1, 8, 50]
        .iter()
        .map(|&clients| {
            let w = Worker::start_modules(&modules);
            support::load::run(&w.base, clients, Duration::from_secs(a.load_seconds))
        })
        .collect();

    // The same kinds of request one at a time through autocannon, each
    // level on a fresh workerd warmed by a few requests.
    let cannon_cases: Vec<&Case> = cases
        .iter()
        .filter(|c| c.name == "lande classify, 1 text" || c.name == "minilm embeddings, 32 tokens")
        .collect();
    let cannon: Vec<(String, Value)> = cannon_cases
        .iter()
        .flat_map(|case| {
            // About `--load-seconds` of work for one client at the warm p50.
            let p50 = cases
                .iter()
                .zip(&warm)
                .find(|(c, _)| c.name == case.name)
                .map_or(10.0, |(_, w)| w.0);
            let amount = (a.load_seconds as f64 * 1000.0 / p50) as usize;
            [1, 8, 50].map(|connections| {
                let w = Worker::start_modules(&modules);
                for _ in 0..5 {
                    timed_post(&w.client(), case.path, &case.body);
                }
                let r = autocannon(
                    &w.base,
                    case.path,
                    &case.body,
                    connections,
                    amount.max(4 * connections),
                );
                (case.name.clone(), r)
            })
        })
        .collect();
    let ort = ort_web(&cases, a.requests);
    let (platform_rows, platform_table, platform_json) =
        platforms::rows(&cases, a.runs, a.requests);

    let natives: Vec<(f64, (f64, f64))> = cases
        .iter()
        .map(|case| native(case.path, &case.body, a.requests))
        .collect();
    // The request's in-isolate time is its time minus the HTTP floor; when
    // the floor is the larger (noise on a fast route), that estimate is
    // unknown, not 0: `None`, shown as "below floor", next to the
    // floor-free ratio that is always measured.
    let ratio = |wasm: f64, nat: f64| (wasm > floor.0).then(|| (wasm - floor.0) / nat);
    let shown = |r: Option<f64>| r.map_or("below floor".to_string(), |r| format!("{r:.2}x"));
    let mib = |b: u64| b as f64 / 1048576.0;

    let mut rows: Vec<(String, String)> = vec![
        (
            "bundle raw".into(),
            format!("{:.2} MiB ({raw} bytes)", mib(raw)),
        ),
        (
            "bundle gzip".into(),
            format!("{:.2} MiB ({gzip} bytes)", mib(gzip)),
        ),
        ("wrangler says".into(), wrangler_line.clone()),
        (
            "bundle contribution per model (embedded bytes)".into(),
            edgeinfer::registry::MODELS
                .iter()
                .map(|m| {
                    format!(
                        "{} {:.2} MiB",
                        m.qualified_name(),
                        mib(embedded_bytes(m) as u64)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "startup, empty JS worker (median)".into(),
            format!("{:.1} ms", median(js_startup.clone())),
        ),
        (
            "startup, edgeinfer (median)".into(),
            format!("{:.1} ms", median(startup.clone())),
        ),
        (
            "isolate memory after every case: wasm module + linear memory".into(),
            format!(
                "{:.1} MiB + {:.1} MiB = {:.1} MiB",
                mib(wasm_bytes as u64),
                mib(linear_memory),
                mib(wasm_bytes as u64 + linear_memory)
            ),
        ),
        (
            "isolate memory, one model loaded (fresh workerd): module + linear memory".into(),
            alone
                .iter()
                .map(|(m, b)| format!("{m} {:.1} MiB", mib(wasm_bytes as u64 + b)))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "wasm code and names (module minus embedded model bytes); tract in the module".into(),
            format!(
                "{:.2} MiB; {}",
                mib(code_bytes as u64),
                if tract_names == 0 {
                    "none".to_string()
                } else {
                    format!("{tract_names} tract_ names")
                }
            ),
        ),
        (
            "warm /healthz p50 / p99 (HTTP floor)".into(),
            format!("{:.3} / {:.3} ms", floor.0, floor.1),
        ),
    ];
    for (model, times) in &cold {
        rows.push((
            format!("cold first request, {model} (median)"),
            format!("{:.1} ms", median(times.clone())),
        ));
    }
    rows.push((
        format!("chat {CHAT_MODEL}: ms per generated token, wasm / native (ratio)"),
        format!(
            "{wasm_token_ms:.2} / {native_token_ms:.2} ms ({:.2}x); {:.0} / {:.0} tokens/s",
            wasm_token_ms / native_token_ms,
            1e3 / wasm_token_ms,
            1e3 / native_token_ms
        ),
    ));
    rows.push((
        "chat: prompt (12 tokens) + first token, warm wasm (incl. HTTP) / native".into(),
        format!("{wasm_prompt_ms:.2} / {native_prompt_ms:.2} ms"),
    ));
    rows.push((
        "chat: time to first token, streamed, warm / cold (fresh workerd, model load included)"
            .into(),
        format!("{ttft_warm:.1} / {ttft_cold:.1} ms"),
    ));
    rows.push((
        "chat: CPU per reply of 128 tokens in wasm (Workers Free: 10 ms, Paid: 30 s default)"
            .into(),
        format!(
            "{:.0} ms",
            wasm_prompt_ms + wasm_token_ms * (CHAT_TOKENS - 1) as f64
        ),
    ));
    let ratio_text = |ours: f64, theirs: Option<f64>| {
        theirs.map_or("-".to_string(), |t| format!("{:.2}x", ours / t))
    };
    rows.push((
        format!("decoder {CHAT_MODEL}: greedy ms per token after the chat prompt, native engine / onnxruntime-web (ours/ORT-web)"),
        format!(
            "{native_greedy:.3} / {} ms ({}); wasm per sampled token above: {wasm_token_ms:.2} ms ({} vs ORT-web)",
            ort_token_ms.map_or("-".into(), |t| format!("{t:.3}")),
            ratio_text(native_greedy, ort_token_ms),
            ratio_text(wasm_token_ms, ort_token_ms),
        ),
    ));
    rows.push((
        "decoder: greedy ms per token natively, int8 rows x float activations (shipped) / Q8 blocks, integer dots".into(),
        format!("{native_greedy:.3} / {native_greedy_q8:.3} ms ({:.2}x)", native_greedy_q8 / native_greedy),
    ));
    rows.extend(decoder_rows.iter().cloned());
    for ((name, ids, _), (nat, wasm)) in
        prefill.iter().zip(native_prefill.iter().zip(&wasm_prefill))
    {
        let n = ids.len() as f64;
        rows.push((
            format!("decoder prefill, {name}-token prompt: tokens/s wasm (request - floor) / native / onnxruntime-web"),
            format!(
                "{:.0} / {:.0} / {} (ours wasm/ORT-web time {})",
                n / wasm * 1e3,
                n / nat * 1e3,
                ort_prefill(name).map_or("-".into(), |t| format!("{:.0}", n / t * 1e3)),
                ratio_text(*wasm, ort_prefill(name)),
            ),
        ));
    }
    let ort_case = |name: &str| -> Option<&Value> {
        ort.as_ref()?["cases"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
    };
    if let Some(o) = &ort {
        rows.push((
            format!(
                "onnxruntime-web {} (wasm, 1 thread): session create for the encoder's ONNX",
                o["ort_version"].as_str().unwrap_or("?")
            ),
            format!("{:.1} ms", o["load_ms"].as_f64().unwrap_or(f64::NAN)),
        ));
    }
    let mut table = String::from("| case | warm wasm p50 / p99 | native p50 / p99 | native first (load) | wasm/native (p50 - floor) | wasm/native (p50) | onnxruntime-web p50 | ours/ORT-web |\n|---|---|---|---|---|---|---|---|\n");
    for ((case, w), (first, n)) in cases.iter().zip(&warm).zip(&natives) {
        let (ort_p50, vs_ort) = match ort_case(&case.name).and_then(|c| c["p50_ms"].as_f64()) {
            Some(p50) => (format!("{p50:.3} ms"), shown(ratio(w.0, p50))),
            None => ("-".into(), "-".into()),
        };
        table.push_str(&format!(
            "| {} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.2} ms | {} | {:.2}x | {ort_p50} | {vs_ort} |\n",
            case.name,
            w.0,
            w.1,
            n.0,
            n.1,
            first,
            shown(ratio(w.0, n.0)),
            w.0 / n.0
        ));
    }
    let mut cannon_table = String::from("| autocannon | connections | requests | requests/s | p50 / p99 / max | errors + timeouts | non-2xx |\n|---|---|---|---|---|---|---|\n");
    for (name, r) in &cannon {
        cannon_table.push_str(&format!(
            "| {name} | {} | {} | {:.1} | {} / {} / {} ms | {} + {} | {} |\n",
            r["connections"],
            r["requests"],
            r["requests_per_s"].as_f64().unwrap_or(f64::NAN),
            r["latency_ms"]["p50"],
            r["latency_ms"]["p99"],
            r["latency_ms"]["max"],
            r["errors"],
            r["timeouts"],
            r["non_2xx"]
        ));
    }
    println!(
        "\nedgeinfer bench: {} cold runs, {} warm requests per case\n",
        a.runs, a.requests
    );
    // The sharded chat model last: its workerd runs the front and 4 shards.
    let (sharded_rows, sharded_json) = sharded::rows(a.runs);
    rows.extend(sharded_rows);
    rows.extend(platform_rows);
    println!("| metric | value |\n|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    println!("\n{table}");
    println!("{platform_table}");
    println!("{cannon_table}");
    for report in &load {
        println!(
            "mixed load (classify / embeddings / chat / session), {}",
            report.table()
        );
    }

    if let Some(path) = a.json {
        let report = json!({
            "runs": a.runs,
            "requests": a.requests,
            "bundle": {"raw_bytes": raw, "gzip_bytes": gzip, "wrangler": wrangler_line,
                       "per_model_bytes": edgeinfer::registry::MODELS.iter().map(|m| (m.qualified_name(), json!(embedded_bytes(m)))).collect::<serde_json::Map<_, _>>()},
            "startup_ms": {"empty_js_worker": js_startup, "edgeinfer": startup},
            "memory_bytes": {"wasm_module": wasm_bytes, "linear_memory": linear_memory,
                             "linear_memory_one_model": alone.iter().map(|(m, b)| (m.to_string(), json!(b))).collect::<serde_json::Map<_, _>>()},
            "code_bytes": code_bytes,
            "tract_names_in_wasm": tract_names,
            "decoder": {
                "greedy_ms_per_token": {"native": native_greedy, "native_q8_blocks": native_greedy_q8,
                                        "onnxruntime_web": ort_token_ms,
                                        "wasm_sampled": wasm_token_ms},
                "prefill": prefill.iter().zip(native_prefill.iter().zip(&wasm_prefill)).map(|((name, ids, _), (nat, wasm))| json!({
                    "tokens": ids.len(), "wasm_ms": wasm, "native_ms": nat, "onnxruntime_web_ms": ort_prefill(name)})).collect::<Vec<_>>(),
                "onnxruntime_web": ort_lm,
                "native_parts_and_overheads": decoder_rows.iter().map(|(k, v)| json!({"metric": k, "value": v})).collect::<Vec<_>>(),
            },
            "cold_first_request_ms": cold.iter().map(|(m, t)| (m.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
            "warm_healthz_ms": {"p50": floor.0, "p99": floor.1},
            "chat": {
                "model": CHAT_MODEL,
                "tokens": CHAT_TOKENS,
                "ms_per_token": {"wasm": wasm_token_ms, "native": native_token_ms, "ratio": wasm_token_ms / native_token_ms},
                "prompt_and_first_token_ms": {"wasm_http": wasm_prompt_ms, "native": native_prompt_ms},
                "time_to_first_token_ms": {"warm": ttft_warm, "cold": ttft_cold},
            },
            "load": load.iter().map(support::load::Report::json).collect::<Vec<_>>(),
            "autocannon": cannon.iter().map(|(name, r)| json!({"case": name, "result": r})).collect::<Vec<_>>(),
            "onnxruntime_web": ort,
            "sharded": sharded_json,
            "workerd_and_deno": platform_json,
            "cases": cases.iter().zip(&warm).zip(&natives).map(|((case, w), (first, n))| json!({
                "name": case.name,
                "path": case.path,
                "model": case.model,
                "warm_wasm_ms": {"p50": w.0, "p99": w.1},
                "native_ms": {"first": first, "p50": n.0, "p99": n.1},
                "ratio_wasm_over_native": ratio(w.0, n.0),
                "ratio_wasm_over_native_with_floor": w.0 / n.0,
                "onnxruntime_web_ms": ort_case(&case.name).map(|c| json!({"first": c["first_ms"], "p50": c["p50_ms"], "p99": c["p99_ms"]})),
                "ratio_ours_over_onnxruntime_web": ort_case(&case.name).and_then(|c| c["p50_ms"].as_f64()).and_then(|p| ratio(w.0, p)),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).expect("write JSON");
        println!("\nwrote {path}");
    }
}
