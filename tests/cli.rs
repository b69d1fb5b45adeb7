//! The `edgeinfer` command-line tool: batch files of every kind of line,
//! results equal to what `api::handle` answers for the same request, and
//! refusals of unusable arguments. The binary is run as a user would; the
//! references come from `api::handle` in this process.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use edgeinfer::api::{self, HttpRequest};
use serde::Deserialize;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_edgeinfer");

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgeinfer");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("wait for edgeinfer")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A file path of this test run, under cargo's scratch directory.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}-{name}", std::process::id()))
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `api::handle` for a POST of `body`, as the worker serves it.
fn api_post(path: &str, body: &Value) -> Value {
    let bytes = serde_json::to_vec(body).expect("body");
    let res = api::handle(&HttpRequest::post_json(path, &bytes));
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    serde_json::from_slice(&res.body).expect("response JSON")
}

/// The sentiment golden file's cases (what this test reads of them).
#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    top1: String,
}

/// What line `i` of the classify file is, and what its output must say.
enum Expect {
    Label(String),
    Model(&'static str),
    Error(u16, &'static str),
}

#[test]
fn classify_batch_of_1000_lines_keeps_order_ids_and_errors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/lande/golden.json");
    let golden: Cases = serde_json::from_slice(&std::fs::read(path).expect("golden")).unwrap();
    // lande's own top label on these sentences, in ~50 languages.
    let cases: Vec<&Case> = golden
        .cases
        .iter()
        .filter(|c| !c.text.trim().is_empty() && c.text.len() < 400)
        .collect();
    let french = "Bonjour tout le monde, comment allez-vous aujourd'hui ?";
    let mut lines = Vec::new();
    let mut expect = Vec::new();
    for i in 0..1000usize {
        let case = cases[i % cases.len()];
        let (line, e) = match i {
            0 => (json!(french).to_string(), Expect::Label("fra".into())),
            500 => (String::new(), Expect::Error(400, "malformed_line")),
            _ if i % 50 == 7 => (
                format!("{{\"input\": \"unterminated {i}\""),
                Expect::Error(400, "malformed_line"),
            ),
            _ if i % 50 == 19 => (
                json!({"id": format!("c{i}"), "input": " \t"}).to_string(),
                Expect::Error(422, "invalid_value"),
            ),
            _ if i % 50 == 31 => (
                json!({"id": format!("c{i}"), "input": 42}).to_string(),
                Expect::Error(422, "invalid_value"),
            ),
            _ if i % 50 == 43 => (
                json!({"id": format!("c{i}"), "input": "hello", "model": "no-such-model"})
                    .to_string(),
                Expect::Error(404, "model_not_found"),
            ),
            _ if i % 50 == 47 => (
                json!({"id": format!("c{i}"), "input": case.text, "top_k": 0}).to_string(),
                Expect::Error(422, "invalid_value"),
            ),
            _ if i % 20 == 5 => (
                json!({"id": format!("c{i}"), "input": case.text, "model": "profanity"})
                    .to_string(),
                Expect::Model("profanity"),
            ),
            _ if i % 3 == 0 => (
                json!(case.text).to_string(),
                Expect::Label(case.top1.clone()),
            ),
            _ => (
                json!({"id": format!("c{i}"), "input": case.text}).to_string(),
                Expect::Label(case.top1.clone()),
            ),
        };
        lines.push(line);
        expect.push(e);
    }
    let input = scratch("classify-in.jsonl");
    let output = scratch("classify-out.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = run(
        &[
            "classify",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let results = json_lines(&std::fs::read(&output).unwrap());
    assert_eq!(results.len(), 1000);
    let mut failed = 0;
    for (i, (r, e)) in results.iter().zip(&expect).enumerate() {
        assert_eq!(r["line"], json!(i + 1), "{r}");
        let id = match lines[i].starts_with("{\"id\"") {
            true => json!(format!("c{i}")),
            false => json!(i + 1),
        };
        assert_eq!(r["id"], id, "line {}: {r}", i + 1);
        match e {
            Expect::Label(label) => {
                assert_eq!(r["label"], json!(label), "line {}: {}", i + 1, lines[i]);
                assert!(r["model"].as_str().unwrap().starts_with("lande@"), "{r}");
                assert_eq!(r["labels"].as_array().map(Vec::len), Some(3));
            }
            Expect::Model(m) => {
                assert!(r["model"].as_str().unwrap().starts_with(m), "{r}");
                assert!(r["label"].is_string(), "{r}");
            }
            Expect::Error(status, code) => {
                failed += 1;
                assert_eq!(r["status"], json!(status), "line {}: {r}", i + 1);
                assert_eq!(r["error"]["code"], json!(code), "line {}: {r}", i + 1);
                assert!(r.get("label").is_none());
            }
        }
    }
    // The API's answer for the text alone: the same labels; the scores to
    // float precision (lande scores a batch as one matrix, whose shape can
    // move the last digit).
    let reference = api_post("/v1/classify", &json!({"model": "lande", "input": french}));
    let (got, want) = (&results[0]["labels"], &reference["data"][0]["labels"]);
    for k in 0..3 {
        assert_eq!(got[k]["label"], want[k]["label"]);
        let (a, b) = (got[k]["score"].as_f64(), want[k]["score"].as_f64());
        assert!((a.unwrap() - b.unwrap()).abs() < 1e-5, "{got} {want}");
    }
    // Not a terminal: a plain summary line, with the failed count.
    let err = stderr(&out);
    assert!(
        err.contains("1000 lines in") && err.contains(&format!("{failed} failed")),
        "{err}"
    );
    // The requests depend on the file alone, not on the threads: same bytes.
    let one_thread = run(
        &[
            "classify",
            "--quiet",
            "--jobs",
            "1",
            "--input",
            input.to_str().unwrap(),
        ],
        None,
    );
    assert!(one_thread.status.success(), "{}", stderr(&one_thread));
    assert!(one_thread.stdout == std::fs::read(&output).unwrap());
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(output);
}

#[test]
fn embed_batch_matches_the_api_and_is_unit_length() {
    let mut texts: Vec<String> = [
        "a cat on a mat",
        "A kitten sleeps on the rug.",
        "How do I reset my password?",
        "Change your password under Settings > Security.",
        "Das Wetter ist schön heute.",
        "東京は日本の首都です。",
        "emoji 🙂 and punctuation!?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Past the model's 256 tokens: truncated, as by the API.
    texts.push("many words in a very long sentence ".repeat(60));
    for i in 0..8 {
        texts.push(format!("sentence number {i} about topic {}", i % 7));
    }
    let mut input = String::new();
    for (i, t) in texts.iter().enumerate() {
        let line = match i % 2 {
            0 => json!(t),
            _ => json!({"id": i, "input": t}),
        };
        input.push_str(&format!("{line}\n"));
    }
    // stdin in, stdout out, quiet: only results on stdout, nothing on stderr.
    let out = run(
        &["embed", "--input", "-", "--quiet", "--jobs", "2"],
        Some(input.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), texts.len());
    for (i, (r, text)) in results.iter().zip(&texts).enumerate() {
        assert_eq!(r["id"], json!(if i % 2 == 0 { i + 1 } else { i }), "{i}");
        let got: Vec<f64> = serde_json::from_value(r["embedding"].clone()).expect("floats");
        let want = api_post(
            "/v1/embeddings",
            &json!({"model": "all-minilm-l6-v2", "input": text}),
        );
        let want: Vec<f64> = serde_json::from_value(want["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(got.len(), 384);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-6, "line {}: differs by {worst}", i + 1);
        let norm = got.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "line {}: norm {norm}", i + 1);
        assert_eq!(r["truncated"], json!(i == 7), "line {}", i + 1);
    }
}

#[test]
fn chat_matches_the_api_greedy_and_seeded() {
    // Greedy, one message: the reply printed as text.
    let out = run(
        &[
            "chat",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
            "Good morrow!",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = api_post(
        "/v1/chat/completions",
        &json!({"model": "shakespeare-llama", "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content": "Good morrow!"}]}),
    );
    let text = reference["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!text.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{text}\n"));

    // Sampled with a seed, as a batch: each line as the API answers it.
    let lines = [
        json!("What news from Rome?"),
        json!({"id": "two", "messages": [
            {"role": "system", "content": "A scene from Hamlet."},
            {"role": "user", "content": "Who's there?"}], "max_tokens": 12}),
        json!({"id": "bad", "messages": []}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = run(
        &["chat", "--seed", "7", "--max-tokens", "20", "--input", "-"],
        Some(input.as_bytes()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let results = json_lines(&out.stdout);
    assert_eq!(results.len(), 3);
    let bodies = [
        json!({"model": "shakespeare-llama", "seed": 7, "max_tokens": 20,
               "messages": [{"role": "user", "content": "What news from Rome?"}]}),
        json!({"model": "shakespeare-llama", "seed": 7, "max_tokens": 12,
               "messages": lines[1]["messages"]}),
    ];
    for (r, body) in results.iter().zip(&bodies) {
        let want = api_post("/v1/chat/completions", body);
        assert_eq!(
            r["content"], want["choices"][0]["message"]["content"],
            "{r}"
        );
        assert_eq!(r["finish_reason"], want["choices"][0]["finish_reason"]);
        // Token counts; not `cpu_ms`, which is measured per run.
        for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(r["usage"][field], want["usage"][field], "{field}: {r}");
        }
        assert_eq!(r["model"], want["model"]);
    }
    assert_eq!(results[1]["id"], "two");
    assert_eq!(results[2]["id"], "bad");
    assert_eq!(results[2]["error"]["param"], "messages");
    assert!(stderr(&out).contains("1 failed"), "{}", stderr(&out));
}

#[test]
fn unusable_arguments_fail_with_a_helpful_message() {
    let missing = scratch("does-not-exist.jsonl");
    let cases: [(&[&str], i32, &str); 7] = [
        (&[], 2, "Usage"),
        (
            &["classify", "--model", "no-such-model", "x"],
            2,
            "edgeinfer models",
        ),
        (&["embed", "--model", "lande", "x"], 2, "--model"),
        (&["chat", "--temperature", "3", "hi"], 2, "between 0 and 2"),
        (&["classify"], 2, "--input FILE.jsonl"),
        (
            &["classify", "--input", "-", "text"],
            2,
            "cannot be used with",
        ),
        (
            &["embed", "--input", missing.to_str().unwrap()],
            1,
            "does-not-exist",
        ),
    ];
    for (args, code, needle) in cases {
        let out = run(args, Some(b""));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
