//! A load generator: `clients` threads, each with its own chat session,
//! sending a mix of classify, embeddings, chat and session requests back to
//! back for `duration` (`LOAD_KINDS=classify,chat` narrows the mix).
//! Afterwards every session's history is read back and its messages counted
//! against the turns that were answered 200, so a lost message shows up.
//!
//! Each request opens its own connection. With keep-alive, workerd's own HTTP
//! server (the one `wrangler dev` and these tests listen on) closes a
//! connection whose next request it has not started reading within about 5 s
//! of the previous response, which happens once 50 clients queue on one
//! saturated isolate: the client sees "peer disconnected" for a request the
//! worker never received (measured: 1-2 of ~100 requests at 50 clients with
//! keep-alive, none with a connection per request). In production requests
//! reach the isolate through Cloudflare's front line, not this server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Client;

/// The kinds of request in the mix, in rotation.
pub const KINDS: [&str; 4] = ["classify", "embeddings", "chat", "session"];

#[derive(Debug, Default)]
pub struct Report {
    pub clients: usize,
    pub seconds: f64,
    /// Latencies in ms per kind, in `KINDS` order.
    pub latencies: Vec<Vec<f64>>,
    /// Requests not answered 200 (201 for a session's creation), described;
    /// they are counted in `latencies` too (the time until they failed).
    pub errors: Vec<String>,
    /// Session turns answered 200, and stored messages found afterwards.
    pub turns: usize,
    pub stored_messages: usize,
    /// Sessions whose stored messages are not exactly two per answered turn.
    pub lost: Vec<String>,
}

fn body(kind: &str, client: usize, n: usize) -> Value {
    let text = format!("Request {n} from client {client}: is the weather fine today?");
    match kind {
        "classify" => json!({ "model": "lande", "input": text }),
        "embeddings" => json!({ "model": "all-minilm-l6-v2", "input": text }),
        "chat" => json!({
            "model": "shakespeare-llama",
            "messages": [{ "role": "user", "content": text }],
            "max_tokens": 8, "seed": n,
        }),
        _ => json!({ "content": text, "max_tokens": 4, "seed": n }),
    }
}

fn path(kind: &str, session: &str) -> String {
    match kind {
        "classify" => "/v1/classify".into(),
        "embeddings" => "/v1/embeddings".into(),
        "chat" => "/v1/chat/completions".into(),
        _ => format!("/v1/sessions/{session}/messages"),
    }
}

/// Runs the load against the worker at `base`.
pub fn run(base: &str, clients: usize, duration: Duration) -> Report {
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let base = base.to_string();
            std::thread::spawn(move || {
                let c = Client::new(&base);
                let mut latencies = vec![Vec::new(); KINDS.len()];
                let mut errors = Vec::new();
                // The small in-isolate chat model: this load is about the
                // front worker (the sharded model's one-thread shard
                // isolates are measured apart, in scripts/bench).
                let created = c.post_json("/v1/sessions", &json!({ "model": "shakespeare-llama" }));
                if created.status != 201 {
                    errors.push(format!("create session: {}", created.status));
                    return (latencies, errors, None, 0);
                }
                let session = created.json()["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let mut turns = 0;
                let mut n = client;
                let mix: Vec<usize> = match std::env::var("LOAD_KINDS") {
                    Ok(list) => KINDS
                        .iter()
                        .enumerate()
                        .filter(|(_, k)| list.split(',').any(|l| l == **k))
                        .map(|(i, _)| i)
                        .collect(),
                    Err(_) => (0..KINDS.len()).collect(),
                };
                while Instant::now() < deadline {
                    let k = mix[n % mix.len()];
                    let kind = KINDS[k];
                    let t = Instant::now();
                    // A connection per request: see the module's doc.
                    let sent = Client::new(&base).try_send(
                        "POST",
                        &path(kind, &session),
                        Some("application/json"),
                        body(kind, client, n).to_string().as_bytes(),
                    );
                    latencies[k].push(t.elapsed().as_secs_f64() * 1000.0);
                    let res = match sent {
                        Ok(res) => res,
                        Err(e) => {
                            errors.push(format!(
                                "{kind}: {e} after {:?} (POST {})",
                                t.elapsed(),
                                path(kind, &session)
                            ));
                            n += 1;
                            continue;
                        }
                    };
                    if res.status == 200 {
                        turns += usize::from(kind == "session");
                    } else {
                        errors.push(format!(
                            "{kind}: {} {}",
                            res.status,
                            String::from_utf8_lossy(&res.body)
                        ));
                    }
                    n += 1;
                }
                (latencies, errors, Some(session), turns)
            })
        })
        .collect();
    let mut report = Report {
        clients,
        latencies: vec![Vec::new(); KINDS.len()],
        ..Report::default()
    };
    let mut sessions = Vec::new();
    for t in threads {
        let (latencies, errors, session, turns) = t.join().expect("a load client panicked");
        for (all, mine) in report.latencies.iter_mut().zip(latencies) {
            all.extend(mine);
        }
        report.errors.extend(errors);
        if let Some(id) = session {
            sessions.push((id, turns));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    let c = Client::new(base);
    for (id, turns) in sessions {
        let res = c.get(&format!("/v1/sessions/{id}"));
        let stored = if res.status == 200 {
            res.json()["messages"].as_array().map_or(0, Vec::len)
        } else {
            0
        };
        report.turns += turns;
        report.stored_messages += stored;
        if stored != 2 * turns {
            report
                .lost
                .push(format!("session {id}: {turns} turns, {stored} messages"));
        }
    }
    report
}

/// The `q` quantile (0..=1) of unsorted samples, nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl Report {
    pub fn requests(&self) -> usize {
        self.latencies.iter().map(Vec::len).sum()
    }

    /// A table: one row per kind and one for all, with p50/p90/p99/max.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} clients, {:.1} s: {} requests, {:.1} req/s, {} errors, {} session turns, {} stored messages, {} sessions with lost messages\n",
            self.clients,
            self.seconds,
            self.requests(),
            self.requests() as f64 / self.seconds,
            self.errors.len(),
            self.turns,
            self.stored_messages,
            self.lost.len()
        );
        out.push_str(&format!(
            "{:<12} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "kind", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms"
        ));
        let all: Vec<f64> = self.latencies.concat();
        let rows = KINDS
            .iter()
            .zip(&self.latencies)
            .map(|(k, v)| (*k, v.as_slice()))
            .chain([("all", all.as_slice())]);
        for (kind, v) in rows {
            out.push_str(&format!(
                "{:<12} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
                kind,
                v.len(),
                quantile(v, 0.5),
                quantile(v, 0.9),
                quantile(v, 0.99),
                quantile(v, 1.0)
            ));
        }
        out
    }

    pub fn json(&self) -> Value {
        let kinds: serde_json::Map<String, Value> = KINDS
            .iter()
            .zip(&self.latencies)
            .map(|(k, v)| {
                (
                    k.to_string(),
                    json!({
                        "requests": v.len(),
                        "p50_ms": quantile(v, 0.5),
                        "p90_ms": quantile(v, 0.9),
                        "p99_ms": quantile(v, 0.99),
                    }),
                )
            })
            .collect();
        json!({
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": self.requests(),
            "requests_per_second": self.requests() as f64 / self.seconds,
            "errors": self.errors.len(),
            "session_turns": self.turns,
            "stored_messages": self.stored_messages,
            "lost_sessions": self.lost.len(),
            "kinds": kinds,
        })
    }
}
