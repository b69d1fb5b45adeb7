//! The worker through workerd: every route and every error of the API
//! contract, spoken over HTTP to the built worker in workerd on 127.0.0.1.
//!
//! One worker serves every test of this file (starting workerd costs seconds),
//! which also proves that no bad request poisons the isolate for later ones.

mod support;

use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};
use support::{Bindings, Check, Client, Worker};

/// lande sums in f64, our dense engine in f32 (see models/lande/to_onnx.py).
const PROB_TOLERANCE: f64 = 2e-4;

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("healthz", healthz),
        ("cors_preflight_and_headers_for_any_origin", cors_any_origin),
        ("head_wherever_get_is_served", head_like_get),
        ("models_list", models_list),
        ("model_by_id", model_by_id),
        ("classify_french", classify_french),
        ("classify_batch_top_k", classify_batch_top_k),
        ("classify_id_at_version", classify_id_at_version),
        ("golden_lande_through_workerd", golden_lande),
        ("error_malformed_json_400", malformed_json),
        ("error_invalid_utf8_400", invalid_utf8),
        ("error_wrong_types_422", wrong_types),
        ("error_empty_input_422", empty_input),
        ("error_unknown_model_404", unknown_model),
        ("error_unknown_route_404", unknown_route),
        ("error_wrong_method_405", wrong_method),
        ("error_wrong_content_type_415", wrong_content_type),
        ("error_oversize_body_413", oversize_body),
        ("error_too_many_inputs_413", too_many_inputs),
        ("error_oversize_text_413", oversize_text),
        ("embeddings_float", embeddings_float),
        ("embeddings_base64_equals_float", embeddings_base64),
        ("embeddings_truncation_in_usage", embeddings_truncation),
        ("embeddings_dimensions", embeddings_dimensions),
        ("golden_minilm_through_workerd", golden_minilm),
        ("similarity_ranks_by_meaning", similarity_ranks),
        ("error_embeddings_bad_fields_422", embeddings_bad_fields),
        ("error_embeddings_token_limit_413", embeddings_token_limit),
        ("error_similarity_bad_fields_422", similarity_bad_fields),
        ("no_cache_header_without_kv", no_cache_without_kv),
        ("golden_profanity_through_workerd", golden_profanity),
        ("openai_npm_client", openai_npm_client),
        ("vercel_ai_sdk_client", ai_sdk_client),
        ("langchain_client", langchain_client),
    ]
}

const MINILM: &str = "all-minilm-l6-v2";

fn embeddings(c: &Client, body: Value) -> Value {
    let res = c.post_json("/v1/embeddings", &body);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn embeddings_float(c: &Client) -> Result<(), Failed> {
    let res = c.post_json(
        "/v1/embeddings",
        &json!({"model": MINILM, "input": "The quick brown fox jumps over the lazy dog."}),
    );
    check(res.status == 200, format!("status {}", res.status))?;
    check(
        res.header("x-edgeinfer-model")
            .is_some_and(|m| m.starts_with(&format!("{MINILM}@"))),
        format!("{:?}", res.header("x-edgeinfer-model")),
    )?;
    let body = res.json();
    check(
        body["object"] == "list" && body["model"] == MINILM,
        format!("{body}"),
    )?;
    let data = body["data"].as_array().ok_or("data")?;
    check(
        data.len() == 1 && data[0]["object"] == "embedding" && data[0]["index"] == 0,
        "data[0]",
    )?;
    let e = floats(&data[0]["embedding"]);
    check(e.len() == 384, format!("{} dims", e.len()))?;
    let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    check((norm - 1.0).abs() < 1e-3, format!("norm {norm}"))?;
    let usage = &body["usage"];
    check(
        usage["prompt_tokens"].as_u64().is_some_and(|t| t > 5)
            && usage["total_tokens"] == usage["prompt_tokens"],
        format!("usage {usage}"),
    )
}

fn embeddings_base64(c: &Client) -> Result<(), Failed> {
    use base64::Engine as _;
    let input = json!(["first text", "a second, different text"]);
    let float = embeddings(
        c,
        json!({"model": MINILM, "input": input, "encoding_format": "float"}),
    );
    let b64 = embeddings(
        c,
        json!({"model": MINILM, "input": input, "encoding_format": "base64"}),
    );
    for i in 0..2 {
        let text = b64["data"][i]["embedding"]
            .as_str()
            .ok_or("base64 string")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let decoded: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect();
        let want = floats(&float["data"][i]["embedding"]);
        check(decoded.len() == 384, format!("{} floats", decoded.len()))?;
        // The same f32s: JSON's shortest decimal form, read back by a parser
        // that may be 1 ulp off in f64, is far within 1e-7.
        let diff = decoded
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        check(
            diff < 1e-7,
            format!("item {i}: base64 differs from float by {diff}"),
        )?;
    }
    Ok(())
}

fn embeddings_truncation(c: &Client) -> Result<(), Failed> {
    let long = "word ".repeat(600);
    let body = embeddings(c, json!({"model": MINILM, "input": ["short", long]}));
    let usage = &body["usage"];
    check(
        usage["truncated_inputs"] == json!([1]),
        format!("usage {usage}"),
    )?;
    // [CLS] short [SEP] = 3, and the long one is cut to 256.
    check(usage["prompt_tokens"] == 3 + 256, format!("usage {usage}"))
}

fn embeddings_dimensions(c: &Client) -> Result<(), Failed> {
    embeddings(
        c,
        json!({"model": MINILM, "input": "x y", "dimensions": 384}),
    );
    let e = c
        .post_json(
            "/v1/embeddings",
            &json!({"model": MINILM, "input": "x y", "dimensions": 128}),
        )
        .expect_error(422);
    check(
        e["param"] == "dimensions" && e["message"].as_str().unwrap_or("").contains("384"),
        format!("{e}"),
    )
}

fn golden_minilm(c: &Client) -> Result<(), Failed> {
    let golden = golden_file("minilm")?;
    let cases = nonblank_cases(&golden)?;
    let (mut worst, mut sum) = (1.0f64, 0.0f64);
    for chunk in cases.chunks(32) {
        let texts: Vec<&str> = chunk.iter().filter_map(|c| c["text"].as_str()).collect();
        let body = embeddings(c, json!({"model": MINILM, "input": texts}));
        let tokens: u64 = chunk
            .iter()
            .map(|c| c["ids"].as_array().map_or(0, |a| a.len() as u64))
            .sum();
        check(
            body["usage"]["prompt_tokens"] == tokens,
            format!(
                "prompt_tokens {} want {tokens}",
                body["usage"]["prompt_tokens"]
            ),
        )?;
        for (case, got) in chunk.iter().zip(body["data"].as_array().ok_or("data")?) {
            let c = cosine(&floats(&got["embedding"]), &floats(&case["embedding"]));
            worst = worst.min(c);
            sum += c;
        }
    }
    // The quality bar of tests/golden.rs, against sentence-transformers fp32.
    let mean = sum / cases.len() as f64;
    check(
        worst >= 0.97 && mean >= 0.99,
        format!("cosine vs fp32: mean {mean}, min {worst}"),
    )
}

fn similarity_ranks(c: &Client) -> Result<(), Failed> {
    let docs = [
        "The recipe needs two cups of flour and an egg.",
        "To change your password, open Settings and choose Security.",
        "The match ended in a draw after extra time.",
    ];
    let res = c.post_json(
        "/v1/similarity",
        &json!({"model": MINILM, "query": "How do I reset my password?", "documents": docs}),
    );
    check(res.status == 200, format!("status {}", res.status))?;
    let body = res.json();
    let data = body["data"].as_array().ok_or("data")?;
    check(data.len() == 3 && data[0]["index"] == 1, format!("{body}"))?;
    let scores: Vec<f64> = data.iter().filter_map(|m| m["score"].as_f64()).collect();
    check(
        scores.windows(2).all(|w| w[0] >= w[1]),
        format!("not sorted: {scores:?}"),
    )?;
    let top = c
        .post_json(
            "/v1/similarity",
            &json!({"model": MINILM, "query": "football result", "documents": docs, "top_k": 1}),
        )
        .json();
    check(
        top["data"].as_array().map(Vec::len) == Some(1) && top["data"][0]["index"] == 2,
        format!("{top}"),
    )
}

fn embeddings_bad_fields(c: &Client) -> Result<(), Failed> {
    let cases = [
        (
            json!({"model": MINILM, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"model": MINILM, "input": [1, 2, 3]}), "input[0]"),
        (json!({"model": MINILM, "input": ""}), "input"),
        (json!({"model": MINILM, "input": []}), "input"),
        (json!({"model": "lande", "input": "x"}), "model"),
    ];
    for (body, param) in cases {
        let e = c.post_json("/v1/embeddings", &body).expect_error(422);
        check(e["param"] == param, format!("{body}: {e}"))?;
    }
    c.post_json(
        "/v1/embeddings",
        &json!({"model": MINILM, "input": "x", "colour": 1}),
    )
    .expect_error(422);
    c.post_json("/v1/embeddings", &json!({"model": "nope", "input": "x"}))
        .expect_error(404);
    // An encoder is not a classifier either.
    let e = c
        .post_json("/v1/classify", &json!({"model": MINILM, "input": "x"}))
        .expect_error(422);
    check(e["param"] == "model", format!("{e}"))
}

fn embeddings_token_limit(c: &Client) -> Result<(), Failed> {
    // 100 texts of ~200 tokens: over the 8192-token request limit, under the
    // body and item limits.
    let text = "tokens ".repeat(200);
    let input: Vec<&str> = vec![text.as_str(); 100];
    let e = c
        .post_json("/v1/embeddings", &json!({"model": MINILM, "input": input}))
        .expect_error(413);
    check(
        e["message"].as_str().unwrap_or("").contains("8192"),
        format!("{e}"),
    )
}

fn similarity_bad_fields(c: &Client) -> Result<(), Failed> {
    let cases = [
        (
            json!({"model": MINILM, "query": ["a"], "documents": ["b"]}),
            "query",
        ),
        (
            json!({"model": MINILM, "query": "a", "documents": "b"}),
            "documents",
        ),
        (
            json!({"model": MINILM, "query": "a", "documents": []}),
            "documents",
        ),
        (
            json!({"model": MINILM, "query": "a", "documents": ["b", 3]}),
            "documents[1]",
        ),
        (
            json!({"model": MINILM, "query": "a", "documents": ["b"], "top_k": 0}),
            "top_k",
        ),
    ];
    for (body, param) in cases {
        let e = c.post_json("/v1/similarity", &body).expect_error(422);
        check(e["param"] == param, format!("{body}: {e}"))?;
    }
    let many: Vec<&str> = vec!["d"; 128];
    c.post_json(
        "/v1/similarity",
        &json!({"model": MINILM, "query": "q", "documents": many}),
    )
    .expect_error(413);
    Ok(())
}

fn no_cache_without_kv(c: &Client) -> Result<(), Failed> {
    // This worker has no CACHE binding: answers are computed, never cached.
    let res = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": "Hallo Welt"}),
    );
    check(res.status == 200, format!("status {}", res.status))?;
    let cache = res.header("x-edgeinfer-cache");
    match support::server() {
        support::Server::Workerd => check(cache.is_none(), format!("{cache:?}")),
        // The Deno server always has its cache (Deno KV).
        support::Server::Deno => check(matches!(cache, Some("hit" | "miss")), format!("{cache:?}")),
    }
}

/// `EDGEINFER_CACHE=off` (the bench's setting) leaves the Deno server's
/// cache out: the same request twice is computed twice, as by a Worker
/// without a `CACHE` binding.
fn deno_cache_off() -> Result<(), Failed> {
    let w = Worker::start_with(&Bindings {
        vars: vec![("EDGEINFER_CACHE".into(), "off".into())],
        ..Bindings::default()
    });
    let c = w.client();
    for _ in 0..2 {
        let res = c.post_json(
            "/v1/classify",
            &json!({"model": "lande", "input": "Hallo Welt"}),
        );
        check(res.status == 200, format!("status {}", res.status))?;
        let cache = res.header("x-edgeinfer-cache");
        check(cache.is_none(), format!("x-edgeinfer-cache {cache:?}"))?;
    }
    Ok(())
}

fn main() {
    support::run_checks(&Bindings::default(), checks(), |base| {
        let base = base.to_string();
        vec![
            Trial::test("cors_only_for_the_configured_origins", cors_configured),
            support::only_on(
                support::Server::Deno,
                Trial::test("deno_cache_off_computes_every_answer", deno_cache_off),
            ),
            Trial::test("built_module_links_no_tract", no_tract_in_module),
            // After every hostile request above, the same isolate still serves.
            Trial::test("zz_still_serving_after_bad_requests", move || {
                classify_french(&Client::new(&base))
            }),
        ]
    })
}

/// No model runtime in the worker: every default model runs on our engines.
/// The module has no name section, but the source paths of the crates
/// linked into it stay in its data (panic locations:
/// `<crate>-<version>/src/...`); none may be one of tract's, while ours and
/// the ones we use are there (so the check would see tract if it were
/// linked in).
fn no_tract_in_module() -> Result<(), Failed> {
    let modules = support::built_modules();
    let wasm = modules
        .iter()
        .find(|m| m.kind == "wasm")
        .ok_or("no wasm module built")?;
    let text = String::from_utf8_lossy(&wasm.bytes);
    let crates: std::collections::BTreeSet<&str> = text
        .match_indices("/src/")
        .filter_map(|(i, _)| {
            let before = &text[..i];
            let start =
                before.rfind(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))?;
            let (name, version) = before[start + 1..].rsplit_once('-')?;
            version
                .starts_with(|c: char| c.is_ascii_digit())
                .then_some(name)
        })
        .collect();
    check(
        crates.contains("tokenizers") && crates.contains("worker"),
        format!("crates seen in the module: {crates:?}"),
    )?;
    let tract: Vec<&&str> = crates.iter().filter(|c| c.starts_with("tract")).collect();
    check(
        tract.is_empty(),
        format!("tract crates linked in: {tract:?}"),
    )
}

fn golden_file(model_dir: &str) -> Result<Value, Failed> {
    let path = support::root()
        .join("models")
        .join(model_dir)
        .join("golden.json");
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// The golden cases the API accepts: blank texts are refused (422), so those
/// are covered by the native golden tests only.
fn nonblank_cases(golden: &Value) -> Result<Vec<&Value>, Failed> {
    Ok(golden["cases"]
        .as_array()
        .ok_or("cases")?
        .iter()
        .filter(|c| !c["text"].as_str().unwrap_or("").trim().is_empty())
        .collect())
}

const ORIGIN: &str = "https://app.example";

/// A browser's preflight of an OpenAI-style call: the methods, the headers
/// its client sends (echoed: a wildcard does not cover `authorization`);
/// then the answers themselves carry the origin, streams and errors too.
/// By default (`CORS_ALLOW_ORIGINS` unset) any origin may call.
fn cors_any_origin(c: &Client) -> Result<(), Failed> {
    let asked = "authorization, content-type, x-stainless-os";
    let res = c.send_with_headers(
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", asked),
        ],
        b"",
    );
    check(
        res.status == 204 && res.body.is_empty(),
        format!("preflight {}", res.status),
    )?;
    for (name, want) in [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "POST, OPTIONS"),
        ("access-control-allow-headers", asked),
        ("allow", "POST, OPTIONS"),
    ] {
        check(
            res.header(name) == Some(want),
            format!("{name}: {:?}", res.header(name)),
        )?;
    }
    let unknown = c.send_with_headers("OPTIONS", "/v1/nope", &[("origin", ORIGIN)], b"");
    check(
        unknown.status == 404,
        format!("OPTIONS of no route: {}", unknown.status),
    )?;
    let body = br#"{"model":"lande","input":"Bonjour tout le monde"}"#;
    let headers = [("origin", ORIGIN), ("content-type", "application/json")];
    let stream = br#"{"model":"shakespeare-llama","messages":[{"role":"user","content":"Hi"}],"max_tokens":2,"stream":true}"#;
    for (method, path, body) in [
        ("GET", "/v1/models", &b""[..]),
        ("POST", "/v1/classify", &body[..]),
        ("POST", "/v1/classify", &b"{"[..]),
        ("POST", "/v1/chat/completions", &stream[..]),
    ] {
        let res = c.send_with_headers(method, path, &headers, body);
        check(
            res.header("access-control-allow-origin") == Some("*")
                && res.header("access-control-expose-headers") == Some("*"),
            format!("{method} {path} {}: {:?}", res.status, res.headers),
        )?;
    }
    let plain = c.get("/v1/models");
    check(
        plain.header("access-control-allow-origin").is_none(),
        "no Origin, no CORS headers",
    )?;
    Ok(())
}

/// `CORS_ALLOW_ORIGINS` set to a list: those origins are echoed (with
/// `Vary: Origin`), any other gets no CORS headers, so the browser keeps
/// the answer from the page; an empty value turns CORS off.
fn cors_configured() -> Result<(), Failed> {
    let start = |origins: &str| {
        Worker::start_with(&Bindings {
            vars: vec![("CORS_ALLOW_ORIGINS".into(), origins.into())],
            ..Bindings::default()
        })
    };
    let w = start("https://app.example/, http://localhost:5173");
    let c = w.client();
    let preflight = |origin: &str| {
        c.send_with_headers(
            "OPTIONS",
            "/v1/embeddings",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
            b"",
        )
    };
    for origin in [ORIGIN, "http://localhost:5173"] {
        let res = preflight(origin);
        check(
            res.status == 204
                && res.header("access-control-allow-origin") == Some(origin)
                && res.header("vary") == Some("origin"),
            format!("{origin}: {:?}", res.headers),
        )?;
    }
    let other = preflight("https://evil.example");
    check(
        other.status == 204 && other.header("access-control-allow-origin").is_none(),
        format!("another origin: {:?}", other.headers),
    )?;
    let get = c.send_with_headers("GET", "/v1/models", &[("origin", ORIGIN)], b"");
    check(
        get.header("access-control-allow-origin") == Some(ORIGIN),
        format!("{:?}", get.headers),
    )?;
    drop(w);
    let off = start("");
    let res = off
        .client()
        .send_with_headers("GET", "/v1/models", &[("origin", ORIGIN)], b"");
    check(
        res.status == 200 && res.header("access-control-allow-origin").is_none(),
        format!("CORS off: {:?}", res.headers),
    )?;
    Ok(())
}

/// `HEAD` answers what `GET` does, without the body: the status, the
/// content type, the model headers; a session's (in its object) too.
fn head_like_get(c: &Client) -> Result<(), Failed> {
    for path in [
        "/healthz",
        "/v1/models",
        "/v1/models/lande",
        "/openapi.json",
        "/",
    ] {
        let get = c.get(path);
        let head = c.send("HEAD", path, None, b"");
        check(
            head.status == get.status
                && head.body.is_empty()
                && head.header("content-type") == get.header("content-type"),
            format!(
                "HEAD {path}: {} {:?} vs GET {}",
                head.status, head.headers, get.status
            ),
        )?;
    }
    check(
        c.send("HEAD", "/v1/models/nope", None, b"").status == 404,
        "HEAD of no model",
    )?;
    check(
        c.send("HEAD", "/v1/classify", None, b"").status == 405,
        "HEAD of a POST route",
    )?;
    let created = c.post_json(
        "/v1/sessions",
        &serde_json::json!({ "model": "shakespeare-llama" }),
    );
    check(created.status == 201, format!("create {}", created.status))?;
    let id = created.json()["id"].as_str().unwrap_or("").to_string();
    let head = c.send("HEAD", &format!("/v1/sessions/{id}"), None, b"");
    check(
        head.status == 200 && head.body.is_empty(),
        format!("HEAD session {}", head.status),
    )?;
    Ok(())
}

fn check(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

fn classify(c: &Client, body: Value) -> Value {
    let res = c.post_json("/v1/classify", &body);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    res.json()
}

fn healthz(c: &Client) -> Result<(), Failed> {
    let res = c.get("/healthz");
    check(res.status == 200, format!("status {}", res.status))?;
    let body = res.json();
    check(
        body["status"] == "ok" && body["models"].as_u64() >= Some(1),
        format!("{body}"),
    )?;
    // The encoder's SIMD kernels are compiled in only with the wasm
    // simd128 target feature (.cargo/config.toml): losing the flag would
    // silently run the portable loops.
    check(
        body["kernels"] == "wasm-simd128",
        format!("kernels: {body}"),
    )
}

fn models_list(c: &Client) -> Result<(), Failed> {
    let body = c.get("/v1/models").json();
    check(body["object"] == "list", "object must be list")?;
    let data = body["data"].as_array().ok_or("data must be an array")?;
    let lande = data
        .iter()
        .find(|m| m["id"] == "lande")
        .ok_or("lande missing")?;
    check(lande["object"] == "model", "object must be model")?;
    check(lande["task"] == "language-identification", "task")?;
    check(lande["version"] == "1.0.10", "version")?;
    check(
        lande["sha256"].as_str().is_some_and(|s| s.len() == 64),
        "sha256",
    )?;
    check(
        lande["bytes"].as_u64().is_some_and(|b| b > 100_000),
        "bytes",
    )?;
    check(
        lande["owned_by"].is_string() && lande["created"].is_u64(),
        "OpenAI model fields",
    )?;
    check(
        lande["labels"].as_array().map(Vec::len) == Some(50),
        "50 labels",
    )?;
    // A sharded model's size is its weights across the shards (tens of
    // MB), not the header the front embeds of it.
    let sharded = data
        .iter()
        .find(|m| m["shards"].as_u64().is_some_and(|n| n > 1))
        .ok_or("no sharded model listed")?;
    check(
        sharded["bytes"].as_u64().is_some_and(|b| b > 10_000_000),
        format!("a sharded model's bytes: {sharded}"),
    )
}

fn model_by_id(c: &Client) -> Result<(), Failed> {
    let body = c.get("/v1/models/lande").json();
    check(
        body["id"] == "lande" && body["object"] == "model",
        format!("{body}"),
    )?;
    let err = c.get("/v1/models/nope").expect_error(404);
    check(err["code"] == "model_not_found", format!("{err}"))
}

fn classify_french(c: &Client) -> Result<(), Failed> {
    let res = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": "Bonjour tout le monde"}),
    );
    check(res.status == 200, format!("status {}", res.status))?;
    check(
        res.header("x-edgeinfer-model") == Some("lande@1.0.10"),
        "x-edgeinfer-model header",
    )?;
    let body = res.json();
    check(
        body["object"] == "list" && body["model"] == "lande" && body["model_version"] == "1.0.10",
        format!("{body}"),
    )?;
    check(
        body["model_sha256"].as_str().is_some_and(|s| s.len() == 64),
        "model_sha256",
    )?;
    let first = &body["data"][0];
    check(first["label"] == "fra", format!("expected fra: {body}"))?;
    check(
        first["labels"].as_array().map(Vec::len) == Some(3),
        "default top_k is 3",
    )?;
    let usage = &body["usage"];
    check(
        usage["inputs"] == 1
            && usage["characters"] == 21
            && usage["cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        format!("usage: {usage}"),
    )
}

fn classify_batch_top_k(c: &Client) -> Result<(), Failed> {
    let body = classify(
        c,
        json!({"model": "lande", "input": ["The weather is nice today", "Das Wetter ist heute schön", "El tiempo es bueno hoy"], "top_k": 5}),
    );
    let data = body["data"].as_array().ok_or("data")?;
    let labels: Vec<&str> = data
        .iter()
        .map(|d| d["label"].as_str().unwrap_or(""))
        .collect();
    check(labels == ["eng", "deu", "spa"], format!("{labels:?}"))?;
    for (i, d) in data.iter().enumerate() {
        check(d["index"] == i, "index")?;
        let scores: Vec<f64> = d["labels"]
            .as_array()
            .ok_or("labels")?
            .iter()
            .filter_map(|l| l["score"].as_f64())
            .collect();
        check(scores.len() == 5, "top_k 5")?;
        check(scores.windows(2).all(|w| w[0] >= w[1]), "sorted best first")?;
        check(
            d["score"].as_f64() == Some(scores[0]),
            "score is the best label's",
        )?;
    }
    let all = classify(
        c,
        json!({"model": "lande", "input": "hei maailma", "top_k": 50}),
    );
    let sum: f64 = all["data"][0]["labels"]
        .as_array()
        .ok_or("labels")?
        .iter()
        .filter_map(|l| l["score"].as_f64())
        .sum();
    check(
        (sum - 1.0).abs() < 1e-3,
        format!("the 50 scores sum to {sum}"),
    )
}

fn classify_id_at_version(c: &Client) -> Result<(), Failed> {
    let body = classify(c, json!({"model": "lande@1.0.10", "input": "Hola mundo"}));
    check(body["model_version"] == "1.0.10", "version")?;
    let err = c
        .post_json(
            "/v1/classify",
            &json!({"model": "lande@9.9.9", "input": "Hola"}),
        )
        .expect_error(404);
    check(err["param"] == "model", format!("{err}"))
}

fn golden_lande(c: &Client) -> Result<(), Failed> {
    let golden = golden_file("lande")?;
    let labels: Vec<&str> = golden["labels"]
        .as_array()
        .ok_or("labels")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cases = nonblank_cases(&golden)?;
    let mut worst = 0.0f64;
    for chunk in cases.chunks(100) {
        let texts: Vec<&str> = chunk.iter().filter_map(|c| c["text"].as_str()).collect();
        let body = classify(
            c,
            json!({"model": "lande", "input": texts, "top_k": labels.len()}),
        );
        for (case, got) in chunk.iter().zip(body["data"].as_array().ok_or("data")?) {
            check(
                got["label"] == case["top1"],
                format!(
                    "{:?}: got {} want {}",
                    case["text"], got["label"], case["top1"]
                ),
            )?;
            for l in got["labels"].as_array().ok_or("labels")? {
                let i = labels
                    .iter()
                    .position(|x| l["label"] == *x)
                    .ok_or("unknown label")?;
                let want = case["probabilities"][i].as_f64().ok_or("probability")?;
                worst = worst.max((l["score"].as_f64().ok_or("score")? - want).abs());
            }
        }
    }
    check(
        worst <= PROB_TOLERANCE,
        format!("max |score - lande| = {worst} > {PROB_TOLERANCE}"),
    )
}

fn malformed_json(c: &Client) -> Result<(), Failed> {
    let bodies: [&[u8]; 6] = [
        b"{",
        b"{\"model\": \"lande\", \"input\": }",
        b"not json",
        b"{\"model\":\"lande\",\"input\":\"x\"} trailing",
        b"{\"model\":",
        b"",
    ];
    for body in bodies {
        let err = c
            .send("POST", "/v1/classify", Some("application/json"), body)
            .expect_error(400);
        check(err["type"] == "invalid_request_error", format!("{err}"))?;
    }
    // A POST with no body at all (no Content-Length, no chunks).
    let status = c.raw_status(
        "POST /v1/classify HTTP/1.1\r\nContent-Type: application/json",
        Vec::new(),
    );
    check(
        status == 400,
        format!("POST without a body: status {status}"),
    )?;
    // Nesting deeper than the parser's recursion limit is refused, not followed.
    let deep = format!(
        "{{\"model\":\"lande\",\"input\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let err = c
        .send(
            "POST",
            "/v1/classify",
            Some("application/json"),
            deep.as_bytes(),
        )
        .expect_error(400);
    check(
        err["message"].as_str().unwrap_or("").contains("recursion"),
        format!("{err}"),
    )
}

fn invalid_utf8(c: &Client) -> Result<(), Failed> {
    let err = c
        .send(
            "POST",
            "/v1/classify",
            Some("application/json"),
            b"{\"model\":\"lande\",\"input\":\"caf\xe9\"}",
        )
        .expect_error(400);
    check(
        err["message"].as_str().unwrap_or("").contains("UTF-8"),
        format!("{err}"),
    )
}

fn wrong_types(c: &Client) -> Result<(), Failed> {
    let cases = [
        (json!({"model": "lande", "input": 5}), "input"),
        (json!({"model": "lande", "input": null}), "input"),
        (json!({"model": "lande", "input": {"text": "hi"}}), "input"),
        (json!({"model": "lande", "input": ["ok", 3]}), "input[1]"),
        (json!({"model": 7, "input": "hi"}), ""),
        (json!({"input": "hi"}), ""),
        (json!({"model": "lande"}), ""),
        (json!({"model": "lande", "input": "hi", "top_k": "3"}), ""),
        (json!({"model": "lande", "input": "hi", "top_k": -1}), ""),
        (
            json!({"model": "lande", "input": "hi", "top_k": 0}),
            "top_k",
        ),
        (
            json!({"model": "lande", "input": "hi", "top_k": 51}),
            "top_k",
        ),
        (json!({"model": "lande", "input": "hi", "top_k": 1e40}), ""),
        (
            json!({"model": "lande", "input": "hi", "inptu": "typo"}),
            "",
        ),
        (json!(["lande", "hi"]), ""),
        (json!("just a string"), ""),
    ];
    for (body, param) in cases {
        let err = c.post_json("/v1/classify", &body).expect_error(422);
        if !param.is_empty() {
            check(
                err["param"] == param,
                format!("{body}: param {} != {param}", err["param"]),
            )?;
        }
    }
    Ok(())
}

fn empty_input(c: &Client) -> Result<(), Failed> {
    for body in [
        json!({"model": "lande", "input": ""}),
        json!({"model": "lande", "input": "   \n"}),
        json!({"model": "lande", "input": []}),
        json!({"model": "lande", "input": ["fine", ""]}),
    ] {
        c.post_json("/v1/classify", &body).expect_error(422);
    }
    Ok(())
}

fn unknown_model(c: &Client) -> Result<(), Failed> {
    let err = c
        .post_json("/v1/classify", &json!({"model": "gpt-4", "input": "hi"}))
        .expect_error(404);
    check(
        err["type"] == "not_found_error" && err["param"] == "model",
        format!("{err}"),
    )?;
    check(
        err["message"].as_str().unwrap_or("").contains("/v1/models"),
        "message points at /v1/models",
    )
}

fn unknown_route(c: &Client) -> Result<(), Failed> {
    for path in [
        "/index.html",
        "/v1",
        "/v1/nope",
        "/v1/classify/extra",
        "/../etc/passwd",
        "/v1/models/a/b",
    ] {
        let err = c.get(path).expect_error(404);
        check(err["code"] == "route_not_found", format!("{path}: {err}"))?;
    }
    Ok(())
}

fn wrong_method(c: &Client) -> Result<(), Failed> {
    for (method, path, allow) in [
        ("GET", "/v1/classify", "POST, OPTIONS"),
        ("PUT", "/v1/classify", "POST, OPTIONS"),
        ("DELETE", "/v1/models", "GET, HEAD, OPTIONS"),
        ("POST", "/healthz", "GET, HEAD, OPTIONS"),
        ("PATCH", "/v1/models/lande", "GET, HEAD, OPTIONS"),
    ] {
        let res = c.send(method, path, Some("application/json"), b"{}");
        res.expect_error(405);
        check(
            res.header("allow") == Some(allow),
            format!("{method} {path}: Allow {:?}", res.header("allow")),
        )?;
    }
    Ok(())
}

fn wrong_content_type(c: &Client) -> Result<(), Failed> {
    let body = br#"{"model":"lande","input":"hi"}"#;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        c.send("POST", "/v1/classify", ct, body).expect_error(415);
    }
    let ok = c.send(
        "POST",
        "/v1/classify",
        Some("application/json; charset=utf-8"),
        body,
    );
    check(
        ok.status == 200,
        format!("charset parameter must be accepted: {}", ok.status),
    )
}

fn oversize_body(c: &Client) -> Result<(), Failed> {
    let big = "a".repeat(600 * 1024);
    let body = json!({"model": "lande", "input": big}).to_string();
    let err = c
        .send(
            "POST",
            "/v1/classify",
            Some("application/json"),
            body.as_bytes(),
        )
        .expect_error(413);
    check(
        err["message"].as_str().unwrap_or("").contains("524288"),
        format!("names the limit: {err}"),
    )?;
    // 10 MB is refused the same way, without reading it all.
    let huge = vec![b' '; 10 << 20];
    let head = format!(
        "POST /v1/classify HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        huge.len()
    );
    let status = c.raw_status(&head, huge);
    check(status == 413, format!("10 MB body: status {status}"))?;
    // The connection that carried the refused body carries the next request.
    let statuses = c.oversize_body_then_get();
    check(
        statuses == (413, 200),
        format!("413 then GET on one connection: {statuses:?}"),
    )
}

fn too_many_inputs(c: &Client) -> Result<(), Failed> {
    let inputs = vec!["hello"; 129];
    let err = c
        .post_json("/v1/classify", &json!({"model": "lande", "input": inputs}))
        .expect_error(413);
    check(
        err["message"].as_str().unwrap_or("").contains("128"),
        format!("names the limit: {err}"),
    )?;
    let ok = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": vec!["hello"; 128]}),
    );
    check(
        ok.status == 200,
        format!("128 inputs must pass: {}", ok.status),
    )
}

fn oversize_text(c: &Client) -> Result<(), Failed> {
    let err = c
        .post_json(
            "/v1/classify",
            &json!({"model": "lande", "input": "é".repeat(20_001)}),
        )
        .expect_error(413);
    check(err["param"] == "input", format!("{err}"))?;
    let ok = c.post_json(
        "/v1/classify",
        &json!({"model": "lande", "input": "é".repeat(20_000)}),
    );
    check(
        ok.status == 200,
        format!("20000 characters must pass: {}", ok.status),
    )
}

fn golden_profanity(c: &Client) -> Result<(), Failed> {
    let golden = golden_file("profanity")?;
    let cases = nonblank_cases(&golden)?;
    let mut worst = 0.0f64;
    // Small chunks: some golden texts are 20,000 characters long.
    for chunk in cases.chunks(16) {
        let texts: Vec<&str> = chunk.iter().filter_map(|c| c["text"].as_str()).collect();
        let body = classify(c, json!({"model": "profanity", "input": texts, "top_k": 2}));
        for (case, got) in chunk.iter().zip(body["data"].as_array().ok_or("data")?) {
            let profane = got["labels"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["label"] == "profane"))
                .and_then(|l| l["score"].as_f64())
                .ok_or("no profane score")?;
            worst = worst.max((profane - case["probability"].as_f64().ok_or("p")?).abs());
        }
    }
    // The model computes in f64; the response carries f32 scores.
    check(worst <= 1e-5, format!("max |p - package| = {worst}"))
}

/// A client's script from tests/clients/ (its npm packages pinned in
/// package.json), run against this worker.
fn node_client(c: &Client, script: &str) -> Result<(), Failed> {
    let out = std::process::Command::new("node")
        .arg(support::root().join("tests/clients").join(script))
        .arg(c.base())
        .current_dir(support::root())
        .output()?;
    check(
        out.status.success(),
        format!(
            "tests/clients/{script} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The official `openai` npm package, unmodified but for its base URL.
fn openai_npm_client(c: &Client) -> Result<(), Failed> {
    node_client(c, "openai.mjs")
}

/// The Vercel AI SDK with its OpenAI-compatible provider.
fn ai_sdk_client(c: &Client) -> Result<(), Failed> {
    node_client(c, "ai_sdk.mjs")
}

/// LangChain's `@langchain/openai` chat model and embeddings.
fn langchain_client(c: &Client) -> Result<(), Failed> {
    node_client(c, "langchain.mjs")
}
