//! The KV cache through a running worker: answers are stored and served again
//! under `wrangler dev` (miniflare's KV, as users run locally), and a KV that
//! fails or is slow costs the request nothing but the cache (workerd with a KV
//! namespace served by a service that errors or answers late).

mod support;

use serde_json::json;
use support::{Bindings, Client, Reply, Worker};

fn classify(c: &Client, body: &serde_json::Value) -> Reply {
    let res = c.post_json("/v1/classify", body);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res
}

/// KV writes land after the response (in `waitUntil`): ask until the entry is
/// visible, a bounded number of times.
fn until_hit(c: &Client, body: &serde_json::Value) -> Reply {
    for _ in 0..100 {
        let res = classify(c, body);
        if res.header("x-edgeinfer-cache") == Some("hit") {
            return res;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no cache hit after 100 identical requests for {body}");
}

#[test]
fn answers_are_cached_per_model_and_request_under_wrangler_dev() {
    let worker = Worker::start_wrangler();
    let c = worker.client();
    let body = json!({"model": "lande", "input": "Ceci est une phrase en français.", "top_k": 2});
    let first = classify(&c, &body);
    assert_eq!(
        first.header("x-edgeinfer-cache"),
        Some("miss"),
        "{}",
        worker.log_text()
    );
    let hit = until_hit(&c, &body);
    assert_eq!(hit.body, first.body, "a hit returns the stored answer");
    assert_eq!(hit.header("x-edgeinfer-model"), Some("lande@1.0.10"));

    // The same request spelled differently is the same entry.
    let same =
        json!({"top_k": 2, "input": "Ceci est une phrase en français.", "model": "lande@1.0.10"});
    assert_eq!(classify(&c, &same).header("x-edgeinfer-cache"), Some("hit"));
    // Another input, or other options, are not.
    for other in [
        json!({"model": "lande", "input": "Ceci est une autre phrase.", "top_k": 2}),
        json!({"model": "lande", "input": "Ceci est une phrase en français.", "top_k": 3}),
    ] {
        assert_eq!(
            classify(&c, &other).header("x-edgeinfer-cache"),
            Some("miss"),
            "{other}"
        );
    }
    // Errors are never cached, and say nothing about the cache.
    let bad = c.post_json("/v1/classify", &json!({"model": "lande", "input": ""}));
    assert_eq!(bad.status, 422);
    assert_eq!(bad.header("x-edgeinfer-cache"), None);

    // Embeddings are cached the same way.
    let emb = json!({"model": "all-minilm-l6-v2", "input": ["cache me"]});
    let res = c.post_json("/v1/embeddings", &emb);
    assert_eq!(res.header("x-edgeinfer-cache"), Some("miss"));
    let mut hit = None;
    for _ in 0..100 {
        let again = c.post_json("/v1/embeddings", &emb);
        if again.header("x-edgeinfer-cache") == Some("hit") {
            hit = Some(again);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(hit.expect("embeddings hit").body, res.body);
}

/// With API keys on, the cache is scoped per key: a second key asking what
/// the first just asked is computed afresh (a hit would tell it the first
/// key's input), while the first key asking again hits.
#[test]
fn with_keys_on_one_keys_entries_never_answer_another() {
    let worker = Worker::start_wrangler_with(&[("API_KEYS", "key-alpha,key-beta")]);
    let alpha = worker
        .client()
        .with_header("authorization", "Bearer key-alpha");
    let beta = worker
        .client()
        .with_header("authorization", "Bearer key-beta");
    let body = json!({"model": "lande", "input": "Una frase que nadie más escribió."});
    assert_eq!(
        classify(&alpha, &body).header("x-edgeinfer-cache"),
        Some("miss"),
        "{}",
        worker.log_text()
    );
    until_hit(&alpha, &body);
    assert_eq!(
        classify(&beta, &body).header("x-edgeinfer-cache"),
        Some("miss"),
        "another key's entry answered: it learns the first key's input"
    );
    until_hit(&beta, &body);
}

fn with_kv_service(js: &str) -> Worker {
    Worker::start_with(&Bindings {
        kv_service: Some(js.to_string()),
        vars: vec![("CACHE_TTL_SECONDS".into(), "120".into())],
        ..Bindings::default()
    })
}

fn serves_uncached(worker: &Worker) {
    let c = worker.client();
    let body = json!({"model": "lande", "input": "Dies ist ein deutscher Satz."});
    for _ in 0..3 {
        let res = classify(&c, &body);
        assert_eq!(res.header("x-edgeinfer-cache"), Some("miss"));
        assert_eq!(res.json()["data"][0]["label"], "deu");
    }
}

/// The quickstart server (`scripts/dev` runs `wrangler dev`) after a body
/// over the limit: the 413, then the next request answered, on the same
/// connection and on a new one.
#[test]
fn wrangler_dev_serves_the_next_request_after_a_413() {
    let worker = Worker::start_wrangler();
    let c = worker.client();
    let statuses = c.oversize_body_then_get();
    assert_eq!(statuses, (413, 200), "{}", worker.log_text());
    let big = json!({"model": "lande", "input": "a".repeat(600 * 1024)});
    c.post_json("/v1/classify", &big).expect_error(413);
    let next = c.get("/healthz");
    assert_eq!(next.status, 200, "{}", String::from_utf8_lossy(&next.body));
}

#[test]
fn a_failing_kv_costs_only_the_cache() {
    let worker = with_kv_service(
        "export default { fetch() { return new Response('KV is down', { status: 503 }); } };",
    );
    serves_uncached(&worker);
    let log = worker.log_text();
    assert!(log.contains("cache_error"), "the failure is logged:\n{log}");
}

#[test]
fn a_slow_kv_costs_only_the_cache() {
    // Answers after 3 s. (A promise that never settles is cancelled by
    // workerd as hung: that is the failing case above.)
    let worker = with_kv_service(
        "export default { fetch() { return new Promise((ok) => \
         setTimeout(() => ok(new Response(null, { status: 404 })), 3000)); } };",
    );
    serves_uncached(&worker);
    let log = worker.log_text();
    assert!(
        log.contains("no answer within"),
        "the timeout is logged:\n{log}"
    );
}
