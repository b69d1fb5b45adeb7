//! Load through workerd: `LOAD_CLIENTS` concurrent clients (default 50) send
//! mixed classify / embeddings / chat / session requests for `LOAD_SECONDS`
//! (default 10 in the suite; `LOAD_SECONDS=30 cargo test --test load` is the
//! documented full run). Every request must be answered 200 and every
//! session must hold exactly the messages of its answered turns. Latency
//! percentiles are printed (and written to `LOAD_JSON` when set), never
//! asserted: this machine is shared.

mod support;

use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use support::Worker;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mixed_load() -> Result<(), Failed> {
    let clients = env_number("LOAD_CLIENTS", 50) as usize;
    let seconds = env_number("LOAD_SECONDS", 10);
    let w = Worker::start();
    let report = support::load::run(&w.base, clients, Duration::from_secs(seconds));
    eprintln!("{}", report.table());
    if let Ok(path) = std::env::var("LOAD_JSON") {
        std::fs::write(&path, report.json().to_string()).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut problems = Vec::new();
    let answered = report.requests() - report.errors.len();
    if answered < clients {
        problems.push(format!("only {answered} requests were answered"));
    }
    problems.extend(report.errors.iter().take(20).cloned());
    problems.extend(report.lost.iter().cloned());
    if report.turns == 0 {
        problems.push("no session turn was answered".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} errors, {} sessions lost messages:\n{}\n--- workerd log ---\n{}",
            report.errors.len(),
            report.lost.len(),
            problems.join("\n"),
            w.log_text()
        )
        .into())
    }
}

fn main() {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, vec![Trial::test("mixed_load", mixed_load)]).exit();
}
