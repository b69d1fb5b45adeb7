//! `scripts/bench --byo MODEL`: a GGUF added with scripts/add-model, served by
//! its shard Workers (layer shards and vocabulary slices) in workerd, beside
//! llama.cpp native (npm `node-llama-cpp`, one thread) on the same file and
//! the same prompt ids. The rows:
//! - the plan: Workers a request reaches (the front's own included, at most
//!   32), vocabulary slices and layer shards;
//! - the front isolate: its wasm module, linear memory and startup;
//! - per isolate (every shard Worker of the model): bundle (its four files:
//!   entry, logic, shard module, weights), planned memory, linear memory
//!   after the run (it only grows: the isolate's peak), its weights' bytes
//!   (held twice: the Worker's data module and the module's copy), the
//!   load time its `GET /` reports, and its startup alone in a fresh workerd
//!   (the largest layer shard and the first slice);
//! - time to first token cold (a fresh workerd: every isolate new) and warm
//!   (a prompt no shard has seen, under a fresh key), median of runs;
//! - decode tokens/s over SSE, one stream; CPU ms per output token (the
//!   shards' own time from their logs, and the OS's CPU of the workerd
//!   process tree), decode only: the cost of a 128-token reply less that of
//!   a 1-token one of the same prompt, over 127; $ per million output
//!   tokens at Workers Standard's CPU price;
//! - llama.cpp native, one thread: decode ms per token, prefill tokens/s,
//!   first token; and our decode as a multiple of its time.
//!
//! Speed figures live here, never as assertions in the tests.

use serde_json::{json, Value};

use super::sharded::{dollars, llama_case, machine, measured, mib, os, shard_startup, summarize};
use super::support::{self, Bindings, Client, Worker};
use super::{median, node_json, time_to_first_token as ttft};

/// Output tokens of the decode rows' reply.
const DECODE_TOKENS: usize = 128;

fn chat(model: &str, text: &str, max_tokens: usize, stream: bool) -> Value {
    json!({ "model": model, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{ "role": "user", "content": text }],
            "stream": stream, "stream_options": { "include_usage": stream } })
}

/// A question no earlier run asked (so no shard kept its cache).
fn fresh_question(i: usize) -> String {
    const TOPICS: [&str; 8] = [
        "binary search",
        "a linked list",
        "merge sort",
        "a hash map",
        "a stack",
        "quicksort",
        "a queue",
        "a binary tree",
    ];
    format!(
        "Explain {} in Python with a short example. (#{i})",
        TOPICS[i % TOPICS.len()]
    )
}

/// The decode rows' prompt: a reply that runs long.
const DECODE_PROMPT: &str =
    "Write a Python module that implements a priority queue with a binary heap, with docstrings and tests.";

/// The prompt ids the front makes (its tokenizer and template, natively).
fn prompt_ids(model: &str, text: &str) -> Vec<u32> {
    let spec = edgeinfer::registry::find(model).expect("the model is in the build");
    let (chat, _) = edgeinfer::registry::chat_model(spec).expect("its tokenizer loads");
    let messages: Vec<edgeinfer::decoder::template::Message> =
        serde_json::from_value(json!([{ "role": "user", "content": text }])).expect("messages");
    chat.prompt(&messages, 1).expect("fits").ids
}

fn get_json(base: &str) -> Value {
    Client::new(base).get("/").json()
}

pub fn rows(model: &str, runs: usize) -> (Vec<(String, String)>, Value) {
    let runs = runs.clamp(1, 5);
    let (machine_line, machine_json) = machine();
    let all = support::shard_plan();
    let plan: Vec<(usize, &support::ShardPlan)> = all
        .iter()
        .enumerate()
        .filter(|(_, s)| s.model == model)
        .collect();
    assert!(
        !plan.is_empty(),
        "{model} has no shard Workers: add it with scripts/add-model, then scripts/build-shards"
    );
    support::ensure_built();
    let spec = edgeinfer::registry::find(model).expect("the model is in the build");
    let manifest =
        edgeinfer_pipeline::read_manifests(&support::root().join("models")).expect("the manifests");
    let entry = manifest
        .model
        .iter()
        .find(|m| m.id == model)
        .expect("its entry");
    let gguf = edgeinfer_pipeline::models_cache().join(&entry.artifact);
    let bindings = Bindings {
        shard_sockets: true,
        ..Bindings::default()
    };

    // Cold: a fresh workerd per run, every isolate new.
    let cold: Vec<f64> = (0..runs.min(2))
        .map(|i| {
            let w = Worker::start_with(&bindings);
            ttft(&w.client(), &chat(model, &fresh_question(100 + i), 8, true))
        })
        .collect();
    let w = Worker::start_with(&bindings);
    let front_startup = super::ms(w.startup);
    let pid = os::server_pid(&w.base);
    let c = w.client();
    // Every isolate loaded, without a figure.
    ttft(&c, &chat(model, &fresh_question(0), 2, true));
    let warm = median(
        (1..=runs)
            .map(|i| ttft(&c, &chat(model, &fresh_question(i), 8, true)))
            .collect(),
    );
    // Decode: one stream; its cost less a 1-token reply's of the same prompt.
    let shards = plan.len();
    let mut speeds = Vec::new();
    let (mut shard_ms, mut os_ms) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (_, one) = measured(&w, pid, shards, || {
            summarize(&support::sse::stream(
                &c,
                "/v1/chat/completions",
                &chat(model, DECODE_PROMPT, 1, true),
            ))
        });
        let (s, long) = measured(&w, pid, shards, || {
            summarize(&support::sse::stream(
                &c,
                "/v1/chat/completions",
                &chat(model, DECODE_PROMPT, DECODE_TOKENS, true),
            ))
        });
        let extra = (s.output_tokens - 1.0).max(1.0);
        if let Some(t) = s.tokens_per_s {
            speeds.push(t);
        }
        shard_ms.push((long.shard_ms - one.shard_ms) / extra);
        os_ms.push((long.os_ms - one.os_ms) / extra);
    }
    let (tokens_per_s, shard_ms, os_ms) = (median(speeds), median(shard_ms), median(os_ms));

    // Per isolate, after the run.
    let mut isolates = Vec::new();
    for (k, s) in &plan {
        let info = w.shards.get(*k).map(|b| get_json(b)).unwrap_or(Value::Null);
        let dir = support::root().join("build/shards").join(&s.script);
        let bundle: u64 = ["entry.mjs", "pass.mjs", "shard.wasm", "weights.bin"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        isolates.push(json!({
            "script": s.script,
            "holds": if s.layers == [0, 0] { "vocabulary slice".to_string() } else { format!("layers {}..{}", s.layers[0], s.layers[1]) },
            "bundle_bytes": bundle,
            "weights_bytes": s.weights_bytes,
            "planned_memory_bytes": s.planned_memory_bytes,
            "linear_memory_bytes": info["linear_memory_bytes"],
            "load_ms": info["load_ms"],
        }));
    }
    // The front isolate: its module (every added model's tokenizer is in it)
    // and its linear memory after the run.
    let front_memory = w.client().get("/healthz").json()["wasm_memory_bytes"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let front_bundle = std::fs::metadata(support::root().join("build/index_bg.wasm"))
        .map_or(0, |m| m.len()) as f64;
    drop(w);
    let largest_layers = plan
        .iter()
        .filter(|(_, s)| s.layers != [0, 0])
        .max_by_key(|(_, s)| s.weights_bytes)
        .map(|(_, s)| *s);
    let first_slice = plan
        .iter()
        .find(|(_, s)| s.layers == [0, 0])
        .map(|(_, s)| *s);
    let startups: Vec<(String, f64)> = [largest_layers, first_slice]
        .into_iter()
        .flatten()
        .map(|s| (s.script.clone(), shard_startup(s)))
        .collect();

    // llama.cpp native on the same file and prompt ids.
    let ids = prompt_ids(model, DECODE_PROMPT);
    let llama = node_json(
        "bench/native/llama-native.mjs",
        &json!({ "gguf": gguf, "threads": [1], "runs": runs.min(3), "cases": [
            { "name": "decode", "prompt_ids": ids, "new_tokens": DECODE_TOKENS },
        ] }),
    );
    let case = llama_case(&llama, 1, "decode");
    let figure = |k: &str| case.and_then(|c| c[k].as_f64()).unwrap_or(f64::NAN);
    let llama_ms = figure("decode_ms_per_token");
    let ours_ms = 1000.0 / tokens_per_s;

    let vocab_slices = plan.iter().filter(|(_, s)| s.layers == [0, 0]).count();
    let most = |key: &str| {
        isolates
            .iter()
            .filter_map(|i| i[key].as_f64())
            .fold(0.0, f64::max)
    };
    let mut rows = vec![
        ("machine".to_string(), machine_line),
        (
            format!("{model}: Workers a request reaches (front + vocabulary slices + layer shards; at most 32)"),
            format!("{} ({vocab_slices} + {})", plan.len() + 1, plan.len() - vocab_slices),
        ),
        (
            "largest isolate: bundle / planned memory / linear memory after the run".into(),
            format!(
                "{} / {} / {} (limits 64 MiB per Worker, 128 MB per isolate)",
                mib(most("bundle_bytes")),
                mib(most("planned_memory_bytes")),
                mib(most("linear_memory_bytes"))
            ),
        ),
    ];
    rows.push((
        "front isolate: wasm module / linear memory after the run / startup (workerd, every Worker)".into(),
        format!("{} / {} / {front_startup:.0} ms", mib(front_bundle), mib(front_memory)),
    ));
    for (script, ms) in &startups {
        rows.push((
            format!("startup alone, {script} (fresh workerd, weights loaded on first call)"),
            format!("{ms:.0} ms"),
        ));
    }
    rows.extend([
        (
            "time to first token, cold (every isolate new) / warm, median".into(),
            format!("{:.0} ms / {warm:.0} ms", median(cold.clone())),
        ),
        (
            format!("decode over SSE, one stream, {DECODE_TOKENS} tokens"),
            format!("{tokens_per_s:.1} tokens/s ({ours_ms:.1} ms per token)"),
        ),
        (
            "CPU ms per output token, decode: shards' own / OS (workerd process tree)".into(),
            format!(
                "{shard_ms:.1} / {os_ms:.1}: ${:.2} per million output tokens (OS figure)",
                dollars(os_ms, DECODE_TOKENS as f64)
            ),
        ),
        (
            "llama.cpp native, 1 thread, same file and prompt: decode ms per token / prefill tokens/s / first token".into(),
            match case {
                Some(_) => format!(
                    "{llama_ms:.1} / {:.0} / {:.0} ms; ours {:.2}x its decode time",
                    figure("prefill_tokens_per_s"),
                    figure("first_token_ms"),
                    ours_ms / llama_ms
                ),
                None => format!("not run: {}", llama.as_ref().map_or(Value::Null, |l| l["error"].clone())),
            },
        ),
    ]);
    let json = json!({
        "model": model,
        "sha256": spec.sha256,
        "machine": machine_json,
        "workers": plan.len() + 1,
        "vocabulary_slices": vocab_slices,
        "front": { "wasm_bytes": front_bundle, "linear_memory_bytes": front_memory, "startup_ms": front_startup },
        "isolates": isolates,
        "startup_alone_ms": startups.iter().map(|(s, ms)| json!({ "script": s, "ms": ms })).collect::<Vec<_>>(),
        "ttft_cold_ms": cold,
        "ttft_warm_ms": warm,
        "decode_tokens_per_s": tokens_per_s,
        "cpu_ms_per_output_token": { "shards": shard_ms, "os": os_ms },
        "dollars_per_million_output_tokens": dollars(os_ms, DECODE_TOKENS as f64),
        "llama_native": llama,
        "ratio_decode_vs_llama_native": ours_ms / llama_ms,
    });
    (rows, json)
}
