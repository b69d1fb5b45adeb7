//! The sharded chat model (SmolLM2-135M-Instruct across its shard Workers)
//! measured in workerd, end to end over HTTP, with every shard isolate's own
//! budgets (`scripts/bench --sharded` prints only these rows).
//!
//! What each figure means:
//! - per shard isolate: bundle (entry + shard module + weights, raw and
//!   gzip, as `wrangler deploy` uploads it); startup (a fresh workerd with
//!   that shard alone until its `GET /` answers, which instantiates the
//!   module and copies and parses its weights), next to an empty JavaScript
//!   worker's; memory (the data module's bytes + the wasm module's + the
//!   linear memory, which only grows, read after every other measurement).
//! - time to first token: a streamed reply until its first content event;
//!   cold = a fresh workerd (every shard isolate new, weights loaded by the
//!   request), warm = a new conversation on the same isolates, turn 10 = a
//!   conversation with 9 earlier exchanges, twice: through a session whose
//!   9 turns just ran (the shards kept the last turn's cache: only the new
//!   message is fed) and sent whole by a caller the shards hold nothing of
//!   (the history is fed again). Every measurement that must start from
//!   nothing runs under an API key of its own (kept caches are matched
//!   within a key), so no figure is flattered by an earlier run.
//! - decode: a streamed 128-token reply, (last content event - first) /
//!   (events - 1): tokens/s as a client sees them.
//! - hop: per model pass, the front's time minus the shards' own (from
//!   `Server-Timing`), over the number of shards: what one RPC hop costs.
//! - CPU per output token: the shards' own time per decoded token (a
//!   128-token reply minus a 1-token one), plus the front's sampling of one
//!   token (measured natively): on an idle machine, wall time of compute is
//!   CPU time. Dollars at Workers Standard ($0.02 per million CPU-ms, $0.30
//!   per million requests, one request per 128-token turn; shard calls over
//!   service bindings are not billed as requests) next to Workers AI's
//!   `llama-3.2-1b-instruct` at $0.201 per million output tokens.
//! - budget after the last request: a streamed chat whose client hangs up
//!   after its first token, then 5 s, then every shard's `GET /`: the tokens
//!   still reserved and the passes still open (both 0 once the shards have
//!   reclaimed the abandoned passes: docs/chat.md, hang-ups and leases).
//! - wllama: the same GGUF in `@wllama/wllama` (llama.cpp in wasm, one
//!   thread) in Node (bench/wllama.mjs), the same prompt ids, greedy.

use std::process::Command;

use serde_json::{json, Value};

use super::support::sse::{hang_up_after_first_token, stream, stream_text};
use super::support::{self, Bindings, Client, Module, Worker};
use super::{median, ms, node_json, time_to_first_token as ttft};

const MODEL: &str = "smollm2-135m-instruct";
/// Workers Standard: dollars per million CPU-ms and per million requests.
const CPU_MS_PRICE: f64 = 0.02;
const REQUEST_PRICE: f64 = 0.30;
/// Workers AI `llama-3.2-1b-instruct`, dollars per million output tokens.
const WORKERS_AI_OUTPUT: f64 = 0.201;
const DECODE_TOKENS: usize = 128;

fn chat(messages: Value, max_tokens: usize, stream: bool) -> Value {
    json!({ "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": max_tokens,
            "stream": stream, "stream_options": { "include_usage": stream } })
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

/// A prompt of about 50 tokens (system message included).
fn prompt_50() -> Value {
    user("Explain in two sentences why the sky is blue, for a child.")
}

/// API keys of the bench's worker: one per measurement that must find no
/// kept cache.
const KEYS: usize = 64;

/// A client under a key no request has used yet.
fn fresh(base: &str, next: &mut usize) -> Client {
    assert!(*next < KEYS, "the bench needs more API keys");
    *next += 1;
    Client::new(base).with_header("authorization", &format!("Bearer bench-{}", *next - 1))
}

/// The 10th turn of a session whose 9 turns just ran (as `turn_10`'s
/// user messages): time to its first streamed token, its prompt tokens
/// and how many of them the shards had kept.
fn session_turn_10(c: &Client) -> (f64, f64, f64) {
    let created = c.post_json(
        "/v1/sessions",
        &json!({ "model": MODEL,
        "defaults": { "temperature": 0, "max_tokens": 24 } }),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = created.json()["id"].as_str().expect("id").to_string();
    let path = format!("/v1/sessions/{id}/messages");
    for i in 1..10 {
        let res = c.post_json(
            &path,
            &json!({ "content": format!("Give me fact number {i} about the ocean.") }),
        );
        assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    }
    let s = stream(
        c,
        &path,
        &json!({ "content": "Now summarize them in one sentence.",
        "max_tokens": 8, "stream": true, "stream_options": { "include_usage": true } }),
    );
    assert_eq!(s.status, 200);
    let first = s
        .events
        .iter()
        .find(|(_, d)| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
        .map(|(t, _)| ms(*t))
        .expect("a content event");
    let usage = stream_text(&s).2.unwrap_or_default();
    (
        first,
        usage["prompt_tokens"].as_f64().unwrap_or(0.0),
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_f64()
            .unwrap_or(0.0),
    )
}

/// A conversation at its 10th user turn: 9 earlier exchanges.
fn turn_10() -> Value {
    let mut messages = Vec::new();
    for i in 1..10 {
        messages.push(json!({ "role": "user", "content": format!("Give me fact number {i} about the ocean.") }));
        messages.push(json!({ "role": "assistant", "content": format!("Fact {i}: the ocean covers most of the Earth and holds most of its water, and much of it is still unexplored.") }));
    }
    messages.push(json!({ "role": "user", "content": "Now summarize them in one sentence." }));
    Value::Array(messages)
}

/// `Server-Timing` of a whole reply: (inference ms, the shards' ms summed,
/// completion tokens, prompt tokens).
fn timed(c: &Client, body: &Value) -> (f64, f64, f64, f64) {
    let res = c.post_json("/v1/chat/completions", body);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let header = res.header("server-timing").unwrap_or("").to_string();
    let dur = |entry: &str| {
        entry
            .split(";dur=")
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (mut inference, mut shards) = (0.0, 0.0);
    for entry in header.split(", ") {
        if entry.starts_with("inference;") {
            inference = dur(entry);
        } else if entry.starts_with("edgeinfer-") {
            shards += dur(entry);
        }
    }
    let usage = &res.json()["usage"];
    let n = |k: &str| usage[k].as_f64().unwrap_or(0.0);
    (
        inference,
        shards,
        n("completion_tokens"),
        n("prompt_tokens"),
    )
}

/// Bytes of `paths` concatenated and gzipped (-9), as an upload is sized.
pub(super) fn gzip_bytes(paths: &[std::path::PathBuf]) -> u64 {
    let cat = paths
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect::<Vec<_>>()
        .join(" ");
    Command::new("sh")
        .arg("-c")
        .arg(format!("cat {cat} | gzip -9 | wc -c"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / 1048576.0)
}

/// One shard alone in a fresh workerd: its startup including the weights'
/// load (ms).
fn shard_startup(shard: &support::ShardPlan) -> f64 {
    let dir = support::root().join("build/shards").join(&shard.script);
    let read = |f: &str| std::fs::read(dir.join(f)).expect("a built shard");
    let modules = [
        Module {
            name: "entry.mjs",
            kind: "esModule",
            bytes: read("entry.mjs"),
        },
        Module {
            name: "pass.mjs",
            kind: "esModule",
            bytes: read("pass.mjs"),
        },
        Module {
            name: "shard.wasm",
            kind: "wasm",
            bytes: read("shard.wasm"),
        },
        Module {
            name: "weights.bin",
            kind: "data",
            bytes: read("weights.bin"),
        },
    ];
    let w = Worker::start_modules_with(
        &modules,
        &Bindings {
            no_shards: true,
            vars: vec![("TOKEN_BUDGET".into(), shard.token_budget.to_string())],
            ..Bindings::default()
        },
    );
    ms(w.startup)
}

pub fn rows(runs: usize) -> (Vec<(String, String)>, Value) {
    let runs = runs.clamp(1, 5);
    let plan = support::shard_plan();
    support::ensure_built();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("bench-{i}")).collect();
    let bindings = Bindings {
        shard_sockets: true,
        vars: vec![("API_KEYS".into(), keys.join(","))],
        ..Bindings::default()
    };

    // Cold: every isolate new, then warm and turn 10 on the last ones.
    let mut cold = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let w = Worker::start_with(&bindings);
        cold.push(ttft(&fresh(&w.base, &mut 0), &chat(prompt_50(), 8, true)));
        last = Some(w);
    }
    let w = last.expect("a run");
    let mut key = 1;
    let warm = median(
        (0..runs)
            .map(|_| ttft(&fresh(&w.base, &mut key), &chat(prompt_50(), 8, true)))
            .collect(),
    );
    let (_, _, _, prompt_tokens_50) =
        timed(&fresh(&w.base, &mut key), &chat(prompt_50(), 1, false));
    let turn10 = median(
        (0..runs)
            .map(|_| ttft(&fresh(&w.base, &mut key), &chat(turn_10(), 8, true)))
            .collect(),
    );
    let (_, _, _, prompt_tokens_10) = timed(&fresh(&w.base, &mut key), &chat(turn_10(), 1, false));
    let kept: Vec<(f64, f64, f64)> = (0..runs)
        .map(|_| session_turn_10(&fresh(&w.base, &mut key)))
        .collect();
    let turn10_kept = median(kept.iter().map(|k| k.0).collect());
    let (kept_prompt, kept_cached) = (kept[0].1, kept[0].2);
    let c = fresh(&w.base, &mut key);

    // Decode over SSE, as a client sees it.
    let story = user("Write a long story about a dragon who learns to bake bread.");
    let decode: Vec<(f64, usize)> = (0..runs)
        .map(|_| {
            let s = stream(
                &c,
                "/v1/chat/completions",
                &chat(story.clone(), DECODE_TOKENS, true),
            );
            let times: Vec<f64> = s
                .events
                .iter()
                .filter(|(_, d)| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
                .map(|(t, _)| ms(*t))
                .collect();
            let n = times.len();
            ((times[n - 1] - times[0]) / (n - 1) as f64, n)
        })
        .collect();
    let decode_ms = median(decode.iter().map(|d| d.0).collect());

    // Shards' own time, per pass and per decoded token; hops.
    let long = (0..runs)
        .map(|_| timed(&c, &chat(story.clone(), DECODE_TOKENS, false)))
        .collect::<Vec<_>>();
    let one = (0..runs)
        .map(|_| timed(&c, &chat(story.clone(), 1, false)))
        .collect::<Vec<_>>();
    let pick = |v: &[(f64, f64, f64, f64)], f: fn(&(f64, f64, f64, f64)) -> f64| {
        median(v.iter().map(f).collect())
    };
    let tokens = pick(&long, |t| t.2);
    let shard_ms_per_token = (pick(&long, |t| t.1) - pick(&one, |t| t.1)) / (tokens - 1.0);
    let front_ms_per_token = (pick(&long, |t| t.0) - pick(&one, |t| t.0)) / (tokens - 1.0);
    let hop_ms = (front_ms_per_token - shard_ms_per_token) / plan.len() as f64;
    let (sample_us, _) = super::lm::sampling_us(49152, 20);
    let cpu_ms_per_token = shard_ms_per_token + sample_us / 1000.0;
    let dollars = cpu_ms_per_token * CPU_MS_PRICE + REQUEST_PRICE / DECODE_TOKENS as f64;

    // Prefill in workerd: a ~200-token prompt, one token of reply.
    let long_prompt =
        user(&"The quick brown fox jumps over the lazy dog near the river bank. ".repeat(14));
    let prefill = (0..runs)
        .map(|_| {
            timed(
                &fresh(&w.base, &mut key),
                &chat(long_prompt.clone(), 1, false),
            )
        })
        .collect::<Vec<_>>();
    let prefill_tokens = pick(&prefill, |t| t.3);
    let prefill_ms = pick(&prefill, |t| t.0);

    // The wllama comparison's prompt, prefilled here (one token of reply).
    let golden: Value = serde_json::from_slice(
        &std::fs::read(support::root().join("models/smollm2/golden.json")).expect("golden"),
    )
    .expect("golden json");
    let case = &golden["greedy"]["cases"][0];
    let case_prefill = median(
        (0..runs)
            .map(|_| {
                timed(
                    &fresh(&w.base, &mut key),
                    &chat(case["messages"].clone(), 1, false),
                )
                .0
            })
            .collect(),
    );

    // The last request: a streamed chat whose client hangs up after its
    // first token; what the shards still reserve 5 s later.
    let hung_up = fresh(&w.base, &mut key);
    hang_up_after_first_token(
        &hung_up,
        "/v1/chat/completions",
        &chat(prompt_50(), 128, true),
    )
    .expect("a streamed chat");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let left: Vec<(f64, f64)> = w
        .shards
        .iter()
        .map(|base| {
            let info = Client::new(base).get("/").json();
            let n = |k: &str| info[k].as_f64().unwrap_or(f64::NAN);
            (n("reserved_tokens"), n("open_passes"))
        })
        .collect();
    let left_tokens: f64 = left.iter().map(|l| l.0).sum();
    let left_passes: f64 = left.iter().map(|l| l.1).sum();

    // Each shard isolate: bundle, memory (now at its peak), startup.
    let empty = [Module {
        name: "worker.js",
        kind: "esModule",
        bytes: b"export default { fetch() { return new Response('ok'); } };".to_vec(),
    }];
    let js_startup = median(
        (0..runs)
            .map(|_| ms(Worker::start_modules(&empty).startup))
            .collect(),
    );
    let mut shard_rows = Vec::new();
    let mut shard_json = Vec::new();
    for (shard, base) in plan.iter().zip(&w.shards) {
        let info = Client::new(base).get("/").json();
        let dir = support::root().join("build/shards").join(&shard.script);
        let files: Vec<_> = ["entry.mjs", "pass.mjs", "shard.wasm", "weights.bin"]
            .iter()
            .map(|f| dir.join(f))
            .collect();
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let raw: u64 = files.iter().map(|p| size(p)).sum();
        let gz = gzip_bytes(&files);
        let linear = info["linear_memory_bytes"].as_f64().unwrap_or(0.0);
        let memory = linear + size(&files[2]) as f64 + size(&files[3]) as f64;
        let startup = median((0..runs).map(|_| shard_startup(shard)).collect());
        shard_rows.push((
            format!(
                "shard {} (layers {}..{}): bundle raw / gzip; memory (weights + module + linear memory, planned); startup alone (weights loaded) vs empty JS worker",
                shard.index, shard.layers[0], shard.layers[1]
            ),
            format!(
                "{} / {}; {} (planned {}); {startup:.0} ms vs {js_startup:.0} ms (load {:.0} ms in the request path)",
                mib(raw as f64),
                mib(gz as f64),
                mib(memory),
                mib(shard.planned_memory_bytes as f64),
                info["load_ms"].as_f64().unwrap_or(0.0)
            ),
        ));
        shard_json.push(json!({
            "script": shard.script, "layers": shard.layers, "bundle_bytes": raw, "bundle_gzip_bytes": gz,
            "memory_bytes": memory, "linear_memory_bytes": linear, "planned_memory_bytes": shard.planned_memory_bytes,
            "startup_ms": startup, "load_ms": info["load_ms"], "empty_js_startup_ms": js_startup,
        }));
    }
    drop(w);

    // wllama on the same GGUF and prompt ids.
    let wllama = node_json(
        "bench/wllama.mjs",
        &json!({ "gguf": support::smollm2_gguf(), "prompt_ids": case["prompt_ids"], "new_tokens": 32, "runs": runs }),
    );

    let mut rows = vec![
        (
            "SmolLM2-135M-Instruct in workerd, front + shards: time to first token, 50-token prompt: cold (every isolate new) / warm (a new conversation) / turn 10 (history fed again)".into(),
            format!(
                "{:.0} / {warm:.0} / {turn10:.0} ms ({prompt_tokens_50:.0} and {prompt_tokens_10:.0} prompt tokens)",
                median(cold.clone())
            ),
        ),
        (
            "SmolLM2-135M-Instruct in workerd: time to first token at turn 10, history kept by the shards (a session's turns in a row) vs fed again (nothing kept)".into(),
            format!(
                "{turn10_kept:.0} vs {turn10:.0} ms ({:.2}x; {kept_cached:.0} of {kept_prompt:.0} prompt tokens kept)",
                turn10_kept / turn10
            ),
        ),
        (
            "SmolLM2-135M-Instruct in workerd: decode over SSE, one stream".into(),
            format!("{decode_ms:.1} ms per token ({:.1} tokens/s)", 1000.0 / decode_ms),
        ),
        (
            "SmolLM2-135M-Instruct in workerd: prefill (front's inference time)".into(),
            format!(
                "{prefill_tokens:.0} tokens in {prefill_ms:.0} ms ({:.0} tokens/s)",
                prefill_tokens * 1000.0 / prefill_ms
            ),
        ),
        (
            format!("SmolLM2-135M-Instruct in workerd: per decoded token, the shards' own time / the front's / one hop ({} shards)", plan.len()),
            format!("{shard_ms_per_token:.1} / {front_ms_per_token:.1} / {hop_ms:.2} ms"),
        ),
        (
            "SmolLM2-135M-Instruct: CPU ms per output token over every isolate -> $ per million output tokens (Workers Standard) vs Workers AI llama-3.2-1b-instruct".into(),
            format!(
                "{cpu_ms_per_token:.1} ms -> ${dollars:.3} vs ${WORKERS_AI_OUTPUT:.3} ({:.2}x)",
                dollars / WORKERS_AI_OUTPUT
            ),
        ),
    ];
    rows.push((
        "SmolLM2-135M-Instruct in workerd: the shards' budget in use 5 s after the last request (a streamed chat hung up after its first token), all shards".into(),
        format!(
            "{left_tokens:.0} tokens reserved, {left_passes:.0} passes open (of {} tokens per shard)",
            plan.first().map_or(0, |s| s.token_budget)
        ),
    ));
    rows.extend(shard_rows);
    let wllama_row = match &wllama {
        Some(v) if v["decode_ms_per_token"].is_number() => {
            let wd = v["decode_ms_per_token"].as_f64().unwrap_or(0.0);
            let wp = v["prefill_ms"].as_f64().unwrap_or(0.0);
            format!(
                "@wllama/wllama {}: prefill of {} tokens {wp:.0} ms, decode {wd:.1} ms per token; ours in workerd / wllama: prefill {:.2}x ({case_prefill:.0} ms), decode {:.2}x",
                v["version"].as_str().unwrap_or("?"),
                v["prompt_tokens"],
                case_prefill / wp,
                decode_ms / wd
            )
        }
        other => format!("not measured: {other:?}"),
    };
    rows.push((
        "the same GGUF and prompt in @wllama/wllama (llama.cpp wasm, one thread, Node)".into(),
        wllama_row,
    ));
    let json = json!({
        "model": MODEL,
        "shards": shard_json,
        "ttft_ms": { "cold": cold, "warm": warm, "turn_10": turn10,
                     "prompt_tokens": prompt_tokens_50, "turn_10_prompt_tokens": prompt_tokens_10,
                     "turn_10_kept": turn10_kept, "turn_10_kept_prompt_tokens": kept_prompt,
                     "turn_10_kept_cached_tokens": kept_cached },
        "decode_ms_per_token_sse": decode_ms,
        "prefill": { "tokens": prefill_tokens, "ms": prefill_ms },
        "per_token_ms": { "shards": shard_ms_per_token, "front": front_ms_per_token, "hop": hop_ms,
                          "sampling_us": sample_us },
        "after_hang_up_5s": { "reserved_tokens": left_tokens, "open_passes": left_passes },
        "cpu_ms_per_output_token": cpu_ms_per_token,
        "dollars_per_million_output_tokens": dollars,
        "workers_ai_llama_3_2_1b_output_dollars": WORKERS_AI_OUTPUT,
        "wllama": wllama,
    });
    (rows, json)
}
