//! What an operator sees, through workerd: `Server-Timing` and model headers
//! on every inference answer, `usage.cpu_ms` in every body, one JSON log
//! line per request (cold, then warm isolate), and A/B splits from
//! `MODEL_VARIANTS` that are stable per caller and near their fraction.

mod support;

use std::collections::BTreeMap;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use support::{ensure, Bindings, Client, Reply, Worker};

/// The split the A/B worker runs with.
const FRACTION: f64 = 0.3;
const VARIANTS: &str = r#"{"sentiment": {"variant": "sentiment@1.1.0", "fraction": 0.3}}"#;

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "timings_headers_usage_and_logs",
            timings_headers_usage_and_logs,
        ),
        Trial::test("ab_split_stable_and_near_fraction", ab_split),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// The phases of a `Server-Timing` header, by name.
fn phases(res: &Reply) -> BTreeMap<String, f64> {
    res.header("server-timing")
        .unwrap_or_default()
        .split(", ")
        .filter_map(|p| {
            let (name, dur) = p.split_once(";dur=")?;
            Some((name.to_string(), dur.parse().ok()?))
        })
        .collect()
}

/// The sha256 of `model` as `GET /v1/models/{model}` reports it.
fn sha256_of(c: &Client, model: &str) -> String {
    c.get(&format!("/v1/models/{model}")).json()["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn timings_headers_usage_and_logs() -> Result<(), Failed> {
    let w = Worker::start();
    let c = w.client();
    let lande_sha = sha256_of(&c, "lande");

    // The isolate's first inference loads the model: `init` is timed.
    let first = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": "Bonjour tout le monde"}),
    );
    ensure(first.status == 200, || format!("status {}", first.status))?;
    let t = phases(&first);
    for phase in ["parse", "init", "inference"] {
        ensure(t.contains_key(phase), || {
            format!("no {phase} in {:?}", first.header("server-timing"))
        })?;
    }
    ensure(
        first.header("x-edgeinfer-model") == Some("lande@1.0.10"),
        || format!("{:?}", first.header("x-edgeinfer-model")),
    )?;
    ensure(
        first.header("x-edgeinfer-model-sha256") == Some(lande_sha.as_str()),
        || format!("{:?}", first.header("x-edgeinfer-model-sha256")),
    )?;
    let again = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": "Bonjour tout le monde"}),
    );
    ensure(!phases(&again).contains_key("init"), || {
        format!(
            "a warm model has no init: {:?}",
            again.header("server-timing")
        )
    })?;

    // Every inference route: phases (workerd's clock runs locally), the
    // exact model, and usage.cpu_ms (an estimate, stable per request).
    let cases = [
        (
            "/v1/embeddings",
            json!({"model": "all-minilm-l6-v2", "input": ["a cat on a mat", "stocks fell"]}),
            vec!["tokenize", "inference"],
        ),
        (
            "/v1/similarity",
            json!({"model": "all-minilm-l6-v2", "query": "cat", "documents": ["kitten", "bond"]}),
            vec!["tokenize", "inference"],
        ),
        (
            "/v1/classify",
            json!({"model": "sentiment@1.0.0", "input": "what a lovely day"}),
            vec!["tokenize", "inference"],
        ),
        (
            "/v1/chat/completions",
            json!({"model": "shakespeare-llama", "max_tokens": 8, "temperature": 0,
                   "messages": [{"role": "user", "content": "Speak."}]}),
            vec!["tokenize", "inference"],
        ),
    ];
    for (path, body, want) in cases {
        let res = c.post_json(path, &body);
        ensure(res.status == 200, || format!("{path}: {}", res.status))?;
        let t = phases(&res);
        for phase in want {
            ensure(t.contains_key(phase), || {
                format!("{path}: no {phase} in {:?}", res.header("server-timing"))
            })?;
        }
        let model = res.header("x-edgeinfer-model").unwrap_or_default();
        let sha = res.header("x-edgeinfer-model-sha256").unwrap_or_default();
        ensure(sha == sha256_of(&c, model) && sha.len() == 64, || {
            format!("{path}: {model} {sha}")
        })?;
        let v = res.json();
        let usage = &v["usage"];
        let estimate = usage["cpu_ms"].as_f64().unwrap_or(0.0);
        ensure(estimate > 0.0, || format!("{path}: usage {usage}"))?;
        // The estimate is a function of the request: asked again, the same.
        let again = c.post_json(path, &body).json();
        ensure(again["usage"]["cpu_ms"] == usage["cpu_ms"], || {
            format!("{path}: {usage} then {}", again["usage"])
        })?;
        let measured: f64 = t.values().sum();
        eprintln!("{path}: usage.cpu_ms {estimate} (estimate), Server-Timing sum {measured:.1} ms");
        ensure(
            v["model_sha256"] == json!(sha) || path.contains("chat"),
            || format!("{path}: body names {} not {sha}", v["model_sha256"]),
        )?;
    }

    // A session turn (the default chat model: the sharded one) streams: its
    // headers name the model too.
    let session = c.post_json("/v1/sessions", &json!({})).json();
    let id = session["id"].as_str().unwrap_or_default();
    let turn = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({"content": "Speak.", "max_tokens": 4}),
    );
    ensure(turn.status == 200, || {
        format!("session turn {}", turn.status)
    })?;
    ensure(
        turn.header("x-edgeinfer-model")
            .is_some_and(|m| m.starts_with("smollm2-135m-instruct@")),
        || format!("{:?}", turn.header("x-edgeinfer-model")),
    )?;

    // One JSON line per request, cold first, then warm.
    let lines: Vec<Value> = w
        .log_text()
        .lines()
        .filter_map(|l| l.find("{\"").map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("route").is_some())
        .collect();
    let first_line = lines
        .first()
        .ok_or_else(|| format!("no request log lines in:\n{}", w.log_text()))?;
    ensure(first_line["isolate"] == "cold", || format!("{first_line}"))?;
    ensure(lines[1..].iter().all(|l| l["isolate"] == "warm"), || {
        format!("later lines not warm: {lines:?}")
    })?;
    let classify = lines
        .iter()
        .find(|l| l["route"] == "/v1/classify")
        .ok_or("no /v1/classify line")?;
    for field in [
        "method", "status", "ms", "model", "tokens", "cpu_ms", "cache", "isolate",
    ] {
        ensure(classify.get(field).is_some(), || {
            format!("log line has no {field}: {classify}")
        })?;
    }
    ensure(
        classify["model"] == "lande@1.0.10" && classify["status"] == 200,
        || format!("{classify}"),
    )?;
    let embed = lines
        .iter()
        .find(|l| l["route"] == "/v1/embeddings")
        .ok_or("no /v1/embeddings line")?;
    ensure(embed["tokens"].as_u64().is_some_and(|t| t > 0), || {
        format!("{embed}")
    })?;
    Ok(())
}

fn ab_split() -> Result<(), Failed> {
    let w = Worker::start_with(&Bindings {
        vars: vec![("MODEL_VARIANTS".into(), VARIANTS.into())],
        ..Bindings::default()
    });
    let c = w.client();
    let control_sha = sha256_of(&c, "sentiment");
    let variant_sha = sha256_of(&c, "sentiment@1.1.0");
    ensure(
        control_sha != variant_sha && variant_sha.len() == 64,
        || format!("{control_sha} vs {variant_sha}"),
    )?;
    let body =
        json!({"model": "sentiment", "input": "the service was slow but the food was great"})
            .to_string();
    let ask = |ip: &str| {
        c.send_with_headers(
            "POST",
            "/v1/classify",
            &[
                ("content-type", "application/json"),
                ("cf-connecting-ip", ip),
            ],
            body.as_bytes(),
        )
    };
    let callers = 300;
    let mut arms = Vec::new();
    for i in 0..callers {
        let ip = format!("198.51.{}.{}", i / 250, i % 250 + 1);
        let res = ask(&ip);
        ensure(res.status == 200, || format!("{ip}: {}", res.status))?;
        let arm = res
            .header("x-edgeinfer-variant")
            .unwrap_or("none")
            .to_string();
        let sha = res.header("x-edgeinfer-model-sha256").unwrap_or_default();
        let v = res.json();
        let (want_sha, want_version) = match arm.as_str() {
            "variant" => (&variant_sha, "1.1.0"),
            "control" => (&control_sha, "1.0.0"),
            other => return Err(format!("{ip}: arm {other:?}").into()),
        };
        ensure(
            sha == want_sha
                && v["model_version"] == want_version
                && v["model_sha256"] == json!(sha),
            || format!("{ip} ({arm}): header {sha}, body {v}"),
        )?;
        arms.push((ip, arm));
    }
    let variant = arms.iter().filter(|(_, a)| a == "variant").count();
    // Binomial(300, 0.3): mean 90, sd 7.9; 60..=120 is beyond 3.7 sd.
    let expected = callers as f64 * FRACTION;
    ensure((variant as f64 - expected).abs() <= 30.0, || {
        format!("{variant} of {callers} callers got the variant; expected about {expected}")
    })?;
    // Stable: the same callers land on the same arm again.
    for (ip, arm) in arms.iter().step_by(6) {
        let again = ask(ip);
        ensure(
            again.header("x-edgeinfer-variant") == Some(arm.as_str()),
            || {
                format!(
                    "{ip} moved from {arm} to {:?}",
                    again.header("x-edgeinfer-variant")
                )
            },
        )?;
    }
    // A pinned version bypasses the split, whoever asks.
    let pinned = c.send_with_headers(
        "POST",
        "/v1/classify",
        &[
            ("content-type", "application/json"),
            ("cf-connecting-ip", &arms[0].0),
        ],
        json!({"model": "sentiment@1.1.0", "input": "fine"})
            .to_string()
            .as_bytes(),
    );
    ensure(
        pinned.status == 200 && pinned.header("x-edgeinfer-variant").is_none(),
        || {
            format!(
                "pinned: {} {:?}",
                pinned.status,
                pinned.header("x-edgeinfer-variant")
            )
        },
    )?;
    eprintln!("A/B: {variant} of {callers} callers on the variant (configured {FRACTION})");
    Ok(())
}
