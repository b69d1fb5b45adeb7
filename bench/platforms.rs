//! The same build on both servers, side by side in one run: workerd and
//! the Deno server (build/deno/main.mjs, the same wasm module), each
//! without the shard Workers and without a cache, each started afresh for
//! every cold figure.
//!
//! - startup: spawn to the first 200 from /healthz, next to an empty server
//!   of the same runtime (an empty Worker; `Deno.serve` answering "ok").
//! - cold: the first request of each model in a fresh server (model load
//!   included), medians of `runs`.
//! - warm: p50 / p99 of `requests` round trips per case on one server, and
//!   the ratio Deno / workerd of the p50s.
//! - chat: time to first token, streamed, warm and cold.
//! - memory: the process's resident memory after every warm case (the
//!   whole runtime: V8, the module, its linear memory), and the linear
//!   memory the worker reports.
//!
//! - Deno's own: its bundle (the wasm and build/deno/, raw and gzip), and a
//!   Deno server with the sharded model's shards in its process: startup,
//!   its first chat reply (the shards' weights loaded on the way) and its
//!   resident memory after it (workerd's shard isolates have their figures
//!   in bench/sharded.rs).
//!
//! Servers are run one after the other, alternating, so a slow moment of
//! the shared machine falls on both alike.

use serde_json::{json, Value};

use super::support::{self, Bindings, Module, Server, Worker};
use super::{
    chat_body, long_reply_seed, median, ms, quantiles, time_to_first_token, timed_post, Case,
};

const SERVERS: [Server; 2] = [Server::Workerd, Server::Deno];

/// Both without a cache: workerd here has no `CACHE` binding, and the Deno
/// server leaves its Deno KV cache out, so every answer is computed.
fn start(server: Server) -> Worker {
    let vars = match server {
        Server::Workerd => Vec::new(),
        Server::Deno => vec![("EDGEINFER_CACHE".to_string(), "off".to_string())],
    };
    Worker::start_on(
        server,
        &Bindings {
            no_shards: true,
            vars,
            ..Bindings::default()
        },
    )
}

/// An empty server of `server`'s runtime: its own startup floor.
fn empty(server: Server) -> Worker {
    match server {
        Server::Workerd => Worker::start_modules(&[Module {
            name: "worker.js",
            kind: "esModule",
            bytes: b"export default { fetch() { return new Response('ok'); } };".to_vec(),
        }]),
        Server::Deno => Worker::start_deno_script(
            "Deno.serve({ port: Number(Deno.env.get('PORT')), hostname: '127.0.0.1' }, () => new Response('ok'));",
        ),
    }
}

struct Measured {
    startup: Vec<f64>,
    empty_startup: Vec<f64>,
    /// Per model: the cold first request of each run.
    cold: Vec<(&'static str, Vec<f64>)>,
    warm: Vec<(f64, f64)>,
    ttft_warm: f64,
    ttft_cold: Vec<f64>,
    rss_bytes: u64,
    linear_memory: u64,
}

/// The rows, the side-by-side table, and the JSON of both servers.
pub fn rows(
    cases: &[Case],
    runs: usize,
    requests: usize,
) -> (Vec<(String, String)>, String, Value) {
    let mut models: Vec<&'static str> = Vec::new();
    for case in cases {
        if !models.contains(&case.model) {
            models.push(case.model);
        }
    }
    let seed = long_reply_seed();
    let mut measured: Vec<Measured> = SERVERS
        .iter()
        .map(|_| Measured {
            startup: Vec::new(),
            empty_startup: Vec::new(),
            cold: models.iter().map(|m| (*m, Vec::new())).collect(),
            warm: Vec::new(),
            ttft_warm: 0.0,
            ttft_cold: Vec::new(),
            rss_bytes: 0,
            linear_memory: 0,
        })
        .collect();
    for _ in 0..runs {
        for (server, m) in SERVERS.iter().zip(measured.iter_mut()) {
            m.empty_startup.push(ms(empty(*server).startup));
            for (model, times) in m.cold.iter_mut() {
                let w = start(*server);
                m.startup.push(ms(w.startup));
                let case = cases.iter().find(|c| c.model == *model).expect("a case");
                times.push(timed_post(&w.client(), case.path, &case.body));
            }
            let w = start(*server);
            m.ttft_cold
                .push(time_to_first_token(&w.client(), &chat_body(seed, 8, true)));
        }
    }
    for (server, m) in SERVERS.iter().zip(measured.iter_mut()) {
        let w = start(*server);
        let c = w.client();
        for case in cases {
            for _ in 0..10 {
                timed_post(&c, case.path, &case.body);
            }
        }
        m.warm = cases
            .iter()
            .map(|case| {
                quantiles(
                    (0..requests)
                        .map(|_| timed_post(&c, case.path, &case.body))
                        .collect(),
                )
            })
            .collect();
        m.ttft_warm = median(
            (0..(requests / 10).max(5))
                .map(|_| time_to_first_token(&c, &chat_body(seed, 8, true)))
                .collect(),
        );
        m.rss_bytes = w.rss_bytes();
        m.linear_memory = c.get("/healthz").json()["wasm_memory_bytes"]
            .as_u64()
            .unwrap_or(0);
    }
    let deno_files: Vec<std::path::PathBuf> =
        std::iter::once(support::root().join("build/index_bg.wasm"))
            .chain(
                std::fs::read_dir(support::root().join("build/deno"))
                    .expect("build/deno")
                    .filter_map(|e| e.ok().map(|e| e.path())),
            )
            .collect();
    let deno_raw: u64 = deno_files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let deno_gzip = super::sharded::gzip_bytes(&deno_files);
    let sharded = Worker::start_on(Server::Deno, &Bindings::default());
    let reply_ms = timed_post(
        &sharded.client(),
        "/v1/chat/completions",
        &json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0, "max_tokens": 8}),
    );
    let sharded_startup = ms(sharded.startup);
    let sharded_rss = sharded.rss_bytes();
    drop(sharded);
    let [wd, dn] = &measured[..] else {
        unreachable!("two servers")
    };
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut rows = vec![
        (
            "workerd vs Deno: startup, edgeinfer (median) / empty server".into(),
            format!(
                "{:.1} / {:.1} ms vs {:.1} / {:.1} ms",
                median(wd.startup.clone()),
                median(wd.empty_startup.clone()),
                median(dn.startup.clone()),
                median(dn.empty_startup.clone())
            ),
        ),
        (
            "workerd vs Deno: process memory after every case (resident) / linear memory".into(),
            format!(
                "{:.1} / {:.1} MiB vs {:.1} / {:.1} MiB",
                mib(wd.rss_bytes),
                mib(wd.linear_memory),
                mib(dn.rss_bytes),
                mib(dn.linear_memory)
            ),
        ),
        (
            "workerd vs Deno: chat time to first token, warm / cold".into(),
            format!(
                "{:.1} / {:.1} ms vs {:.1} / {:.1} ms",
                wd.ttft_warm,
                median(wd.ttft_cold.clone()),
                dn.ttft_warm,
                median(dn.ttft_cold.clone())
            ),
        ),
    ];
    rows.push((
        "Deno: bundle (index_bg.wasm + build/deno/), raw / gzip".into(),
        format!("{:.2} / {:.2} MiB", mib(deno_raw), mib(deno_gzip)),
    ));
    rows.push((
        "Deno with the sharded model's 4 shards in process: startup / first chat reply (shards loaded) / resident memory after it".into(),
        format!(
            "{sharded_startup:.1} ms / {reply_ms:.1} ms / {:.1} MiB",
            mib(sharded_rss)
        ),
    ));
    for ((model, w), (_, d)) in wd.cold.iter().zip(&dn.cold) {
        rows.push((
            format!("workerd vs Deno: cold first request, {model} (median)"),
            format!("{:.1} vs {:.1} ms", median(w.clone()), median(d.clone())),
        ));
    }
    let mut table = String::from(
        "| case | workerd warm p50 / p99 | Deno warm p50 / p99 | Deno / workerd (p50) |\n|---|---|---|---|\n",
    );
    for ((case, w), d) in cases.iter().zip(&wd.warm).zip(&dn.warm) {
        table.push_str(&format!(
            "| {} | {:.3} / {:.3} ms | {:.3} / {:.3} ms | {:.2}x |\n",
            case.name,
            w.0,
            w.1,
            d.0,
            d.1,
            d.0 / w.0
        ));
    }
    let report = |m: &Measured| {
        json!({
            "startup_ms": {"edgeinfer": m.startup, "empty_server": m.empty_startup},
            "cold_first_request_ms": m.cold.iter().map(|(k, t)| (k.to_string(), json!(t))).collect::<serde_json::Map<_, _>>(),
            "time_to_first_token_ms": {"warm": m.ttft_warm, "cold": m.ttft_cold},
            "memory_bytes": {"resident": m.rss_bytes, "linear_memory": m.linear_memory},
            "warm_ms": cases.iter().zip(&m.warm).map(|(c, w)| json!({"case": c.name, "p50": w.0, "p99": w.1})).collect::<Vec<_>>(),
        })
    };
    let json = json!({
        "deno": support::deno_version(),
        "deno_bundle_bytes": {"raw": deno_raw, "gzip": deno_gzip},
        "deno_sharded": {"startup_ms": sharded_startup, "first_chat_reply_ms": reply_ms, "resident_bytes": sharded_rss},
        "workerd": report(wd),
        "deno_server": report(dn),
        "warm_p50_ratio_deno_over_workerd": cases.iter().zip(wd.warm.iter().zip(&dn.warm)).map(|(c, (w, d))| json!({"case": c.name, "ratio": d.0 / w.0})).collect::<Vec<_>>(),
    });
    (rows, table, json)
}
