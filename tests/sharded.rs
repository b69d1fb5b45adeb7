//! The sharded chat model (SmolLM2-135M-Instruct, cut by layers across
//! shard Workers) through workerd: the front worker and every shard Worker
//! in one workerd, bound as wrangler.toml binds them (scripts/build-shards
//! builds the shards). What is checked:
//! - greedy replies through the shards equal our engine run natively on the
//!   same GGUF whole (same kernels in wasm and natively: the same ids), and
//!   the prompt the front renders from messages is the reference's
//!   (`apply_chat_template`) token for token;
//! - streamed equals whole; `Server-Timing` names every shard hop; the
//!   caller's `traceparent` reaches every shard's log line;
//! - sessions converse on it; a conversation's next turn feeds only what
//!   is new (the shards kept the last turn's cache), answers as it would
//!   from nothing, and another caller's key never starts from it;
//! - a shard that is down is a 503 JSON before any stream, one that fails
//!   mid-stream an `error` event and `[DONE]`, and the session keeps its
//!   history either way.

use edgeinfer_pipeline as check;
#[path = "support/smollm2.rs"]
mod smollm2;
mod support;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::sse::{hang_up_after_first_token, stream, stream_text};

use support::{ensure, Bindings, BrokenShard, Client, Worker};

use check::pack_gguf::Storage;
use edgeinfer::decoder::sampling::{argmax, Sampler, SamplingParams};
use edgeinfer::decoder::template::{Message, Role};
use edgeinfer_engine::decoder::{Decoder, STAGE_ROWS};

const MODEL: &str = "smollm2-135m-instruct";
/// Tokens per golden reply (the golden file has 32 per prompt).
const MAX_TOKENS: usize = 24;
/// The control tokens that end a reply (the tokenizer's special ids 0..=16).
const CONTROLS: u32 = 17;

/// Greedy tokens after `prompt`, natively, until a control token (which
/// counts, as the API counts it) or `n` tokens.
fn native_reply(decoder: &Decoder, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = decoder.new_cache();
    let mut logits = decoder.forward(&mut cache, prompt).expect("prompt");
    let mut out = Vec::new();
    while out.len() < n {
        let next = argmax(&logits);
        out.push(next);
        if next < CONTROLS {
            break;
        }
        logits = decoder.forward(&mut cache, &[next]).expect("step");
    }
    out
}

/// Sampled tokens after `prompt`, natively, with the whole row of logits
/// every step (the sampler's own path), as [`native_reply`].
fn native_sampled(decoder: &Decoder, prompt: &[u32], n: usize, params: SamplingParams) -> Vec<u32> {
    let mut sampler = Sampler::new(params);
    let mut seen = prompt.to_vec();
    let mut cache = decoder.new_cache();
    let mut logits = decoder.forward(&mut cache, prompt).expect("prompt");
    let mut out = Vec::new();
    while out.len() < n {
        let next = sampler.pick(&mut logits, &seen);
        out.push(next);
        if next < CONTROLS {
            break;
        }
        seen.push(next);
        logits = decoder.forward(&mut cache, &[next]).expect("step");
    }
    out
}

/// SmolLM2's tokenizer, as the golden files were made with it.
fn tokenizer() -> Result<tokenizers::Tokenizer, Failed> {
    tokenizers::Tokenizer::from_file(support::root().join("models/smollm2/tokenizer.json"))
        .map_err(|e| e.to_string().into())
}

/// The text of a reply's token ids, as the API shows it (control tokens
/// left out).
fn reply_text(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String, Failed> {
    let text_ids: Vec<u32> = ids.iter().copied().filter(|&t| t >= CONTROLS).collect();
    tokenizer
        .decode(&text_ids, true)
        .map_err(|e| e.to_string().into())
}

/// The text of a whole reply's message ("" when there is none).
fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
}

fn chat(c: &Client, body: &Value) -> Result<Value, Failed> {
    support::chat_ok(c, body)
}

fn greedy_equals_the_native_engine(c: &Client) -> Result<(), Failed> {
    let decoder = smollm2::decoder(Storage::AsStored);
    let tokenizer = tokenizer()?;
    let cases = smollm2::golden()["greedy"]["cases"]
        .as_array()
        .ok_or("no cases")?;
    ensure(cases.len() >= 10, || format!("{} cases", cases.len()))?;
    let mut cached = Vec::new();
    for case in cases {
        let prompt = smollm2::ids(&case["prompt_ids"]);
        let expected = native_reply(&decoder, &prompt, MAX_TOKENS);
        let expected_text = reply_text(&tokenizer, &expected)?;
        let body = json!({ "model": MODEL, "messages": case["messages"], "temperature": 0,
                           "max_tokens": MAX_TOKENS });
        let reply = chat(c, &body)?;
        let usage = &reply["usage"];
        cached.push(usage["prompt_tokens_details"]["cached_tokens"].as_u64());
        ensure(usage["prompt_tokens"] == prompt.len(), || {
            format!(
                "the front's prompt is not the reference's: {usage} vs {} ids",
                prompt.len()
            )
        })?;
        ensure(usage["completion_tokens"] == expected.len(), || {
            format!(
                "{} tokens natively, {usage} through the shards",
                expected.len()
            )
        })?;
        let content = content(&reply);
        ensure(content == expected_text, || {
            format!("through the shards {content:?}, natively {expected_text:?}")
        })?;
        let finish = if expected.last().is_some_and(|&t| t < CONTROLS) {
            "stop"
        } else {
            "length"
        };
        ensure(reply["choices"][0]["finish_reason"] == finish, || {
            format!("{reply}")
        })?;
    }
    // Every case starts with the default system prompt: after the first,
    // the shards continue from it, and the replies above are unchanged.
    ensure(
        cached[1..].iter().all(|&c| c.is_some_and(|c| c > 0)),
        || format!("cached prompt tokens per case: {cached:?}"),
    )?;
    Ok(())
}

/// Seeded sampled replies through the shards equal the same sampler run
/// natively on the whole row of logits: where the front asks the last
/// shard for the best candidates only (greedy is above; here top-k, the
/// default 40 and a small one with top-p), and where it needs every logit
/// (a repetition penalty, top-p alone). Each shard's `GET /` counts the
/// calls it answered with candidates: only the last shard, and only for
/// the settings that need no more.
fn sampled_equals_the_native_sampler(c: &Client, worker: &Worker) -> Result<(), Failed> {
    let ranked = || -> Vec<u64> {
        shard_infos(worker)
            .iter()
            .map(|i| i["ranked_calls"].as_u64().unwrap_or(u64::MAX))
            .collect()
    };
    let decoder = smollm2::decoder(Storage::AsStored);
    let tokenizer = tokenizer()?;
    let cases = smollm2::golden()["greedy"]["cases"]
        .as_array()
        .ok_or("no cases")?;
    let settings = [
        json!({ "temperature": 0.8, "seed": 7 }),
        json!({ "temperature": 1.2, "top_k": 5, "top_p": 0.9, "seed": 11 }),
        json!({ "temperature": 0.9, "repetition_penalty": 1.3, "seed": 3 }),
        json!({ "temperature": 1.0, "top_k": 0, "top_p": 0.95, "seed": 5 }),
    ];
    for (n, setting) in settings.iter().enumerate() {
        let before = ranked();
        let number = |name: &str, default: f64| setting[name].as_f64().unwrap_or(default);
        let params = SamplingParams {
            temperature: number("temperature", 0.8) as f32,
            top_k: number("top_k", 40.0) as usize,
            top_p: number("top_p", 1.0) as f32,
            repetition_penalty: number("repetition_penalty", 1.0) as f32,
            seed: number("seed", 0.0) as u64,
        };
        for case in cases.iter().skip(n).take(3) {
            let prompt = smollm2::ids(&case["prompt_ids"]);
            let expected = native_sampled(&decoder, &prompt, MAX_TOKENS, params);
            let expected_text = reply_text(&tokenizer, &expected)?;
            let mut body = json!({ "model": MODEL, "messages": case["messages"],
                                   "max_tokens": MAX_TOKENS });
            for (k, v) in setting.as_object().ok_or("setting")? {
                body[k] = v.clone();
            }
            let reply = chat(c, &body)?;
            let content = content(&reply);
            let tokens = expected.len();
            ensure(
                content == expected_text && reply["usage"]["completion_tokens"] == tokens,
                || {
                    format!(
                        "{setting}: shards {reply}, natively {expected_text:?} ({tokens} tokens)"
                    )
                },
            )?;
        }
        let after = ranked();
        let last = after.len() - 1;
        let grew: Vec<bool> = before.iter().zip(&after).map(|(b, a)| a > b).collect();
        let want: Vec<bool> = (0..after.len()).map(|i| i == last && n < 2).collect();
        ensure(grew == want, || {
            format!("{setting}: calls answered with candidates per shard {before:?} -> {after:?}")
        })?;
    }
    Ok(())
}

/// A prompt of several pieces (the front sends at most `STAGE_ROWS`
/// tokens per call, each piece through every shard before the next) gives
/// the greedy reply of the native engine fed the prompt whole, in each
/// of a fresh conversation and one whose start a shard kept.
fn a_long_prompt_goes_in_pieces(c: &Client) -> Result<(), Failed> {
    let decoder = smollm2::decoder(Storage::AsStored);
    let model = smollm2::chat_model();
    for i in [0, 1] {
        let text = format!("{} {}", long_message(i), long_message(i + 7));
        let messages = json!([{ "role": "user", "content": text }]);
        let parsed: Vec<Message> = serde_json::from_value(messages.clone())?;
        let prompt = model.prompt(&parsed, 1).map_err(|e| e.to_string())?.ids;
        ensure(prompt.len() > 2 * STAGE_ROWS, || {
            format!("{} prompt tokens", prompt.len())
        })?;
        let expected = native_reply(&decoder, &prompt, 8);
        let body = json!({ "model": MODEL, "messages": messages, "temperature": 0,
                           "max_tokens": 8 });
        let reply = chat(c, &body)?;
        let usage = &reply["usage"];
        ensure(
            usage["prompt_tokens"] == prompt.len() && usage["completion_tokens"] == expected.len(),
            || format!("{usage} vs {} prompt ids, {expected:?}", prompt.len()),
        )?;
        let want = reply_text(&tokenizer()?, &expected)?;
        let got = content(&reply);
        ensure(got == want, || {
            format!("through the shards {got:?}, natively {want:?}")
        })?;
    }
    Ok(())
}

fn stream_equals_whole_with_hops_and_trace(c: &Client, worker: &Worker) -> Result<(), Failed> {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = json!({ "model": MODEL, "temperature": 0, "max_tokens": 16,
                       "messages": [{ "role": "user", "content": "Name three colors." }] });
    let res = c.send_with_headers(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01")),
        ],
        body.to_string().as_bytes(),
    );
    ensure(res.status == 200, || {
        String::from_utf8_lossy(&res.body).into_owned()
    })?;
    let whole = res.json();
    let timing = res.header("server-timing").unwrap_or("").to_string();
    for shard in support::shard_plan() {
        ensure(timing.contains(&format!("{};dur=", shard.script)), || {
            format!("Server-Timing {timing:?} has no hop {}", shard.script)
        })?;
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let s = stream(c, "/v1/chat/completions", &streamed);
    ensure(s.status == 200, || format!("status {}", s.status))?;
    let (text, finish, _) = stream_text(&s);
    ensure(
        text == whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("-"),
        || format!("streamed {text:?}, whole {whole}"),
    )?;
    ensure(
        finish.as_deref() == whole["choices"][0]["finish_reason"].as_str(),
        || format!("{finish:?}"),
    )?;
    ensure(s.events.len() > 4, || format!("{} events", s.events.len()))?;
    // Every shard logged its pass of the traced request (on dispose).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = worker.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"shard\":true") && l.contains(trace_id))
            .collect();
        if lines.len() >= support::shard_plan().len() {
            for shard in support::shard_plan() {
                let layers = format!("\"layers\":\"{}..{}\"", shard.layers[0], shard.layers[1]);
                ensure(lines.iter().any(|l| l.contains(&layers)), || {
                    format!("no log line of shard {layers} with the trace: {lines:?}")
                })?;
            }
            return Ok(());
        }
        ensure(std::time::Instant::now() < deadline, || {
            format!("shard log lines with the trace id: {lines:?}")
        })?;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A session on the sharded model, greedy, 12 tokens per reply: its id.
fn greedy_session(c: &Client) -> Result<String, Failed> {
    let created = c.post_json(
        "/v1/sessions",
        &json!({ "model": MODEL, "defaults": { "temperature": 0, "max_tokens": 12 } }),
    );
    ensure(created.status == 201, || {
        String::from_utf8_lossy(&created.body).into_owned()
    })?;
    Ok(created.json()["id"].as_str().ok_or("no id")?.to_string())
}

fn session_converses(c: &Client) -> Result<(), Failed> {
    let id = greedy_session(c)?;
    for (turn, text) in ["Hi! My name is Ada.", "What is my name?"]
        .into_iter()
        .enumerate()
    {
        let res = c.post_json(
            &format!("/v1/sessions/{id}/messages"),
            &json!({ "content": text }),
        );
        ensure(res.status == 200, || {
            String::from_utf8_lossy(&res.body).into_owned()
        })?;
        let usage = &res.json()["usage"];
        // The second turn's prompt holds the first turn.
        ensure(
            turn == 0 || usage["prompt_tokens"].as_u64() > Some(40),
            || format!("{usage}"),
        )?;
    }
    let view = c.get(&format!("/v1/sessions/{id}")).json();
    ensure(view["messages"].as_array().map(Vec::len) == Some(4), || {
        format!("{view}")
    })?;
    Ok(())
}

/// The front's own view of the model: its template and tokenizer.
fn front_model() -> Result<&'static edgeinfer::decoder::chat::ChatModel, Failed> {
    let spec = edgeinfer::registry::find(MODEL).map_err(|e| e.to_string())?;
    Ok(edgeinfer::registry::chat_model(spec)
        .map_err(|e| e.to_string())?
        .0)
}

/// How many tokens the template's default system message takes (what every
/// shard pins for every caller: shard/src/shard.rs `PUBLIC`).
fn public_start_len() -> Result<u64, Failed> {
    let n = front_model()?.public_start().len() as u64;
    ensure(n > 0, || "the model has no public start".to_string())?;
    Ok(n)
}

/// How many first ids the prompt of `messages` shares with the public start.
fn public_start_shared(messages: &[(Role, &str)]) -> Result<u64, Failed> {
    let model = front_model()?;
    let messages: Vec<Message> = messages
        .iter()
        .map(|&(role, content)| Message {
            role,
            content: content.into(),
        })
        .collect();
    let prompt = model.prompt(&messages, 12).map_err(|e| e.to_string())?;
    let start = model.public_start();
    Ok(start
        .iter()
        .zip(&prompt.ids)
        .take_while(|(a, b)| a == b)
        .count() as u64)
}

fn cached_tokens(usage: &Value) -> Option<u64> {
    usage["prompt_tokens_details"]["cached_tokens"].as_u64()
}

/// API keys on: a session's second turn starts from the first turn's cache
/// (all of its prompt at least) and answers what the same conversation
/// gets from nothing, which is what another key gets: kept caches are
/// matched only within the caller's key, but for the public start (the
/// default system message) that every key starts from.
fn next_turn_feeds_only_what_is_new(base: &str) -> Result<(), Failed> {
    let a = Client::new(base).with_header("authorization", "Bearer key-alpha");
    let b = Client::new(base).with_header("authorization", "Bearer key-beta");
    let id = greedy_session(&a)?;
    let mut usages = Vec::new();
    let mut last = Value::Null;
    for text in ["Hi! My name is Ada and I like tea.", "What do I like?"] {
        let res = a.post_json(
            &format!("/v1/sessions/{id}/messages"),
            &json!({ "content": text }),
        );
        ensure(res.status == 200, || {
            String::from_utf8_lossy(&res.body).into_owned()
        })?;
        last = res.json();
        usages.push(last["usage"].clone());
    }
    let first_prompt = usages[0]["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = cached_tokens(&usages[1]).unwrap_or(0);
    ensure(
        first_prompt > 0
            && cached >= first_prompt
            && cached < usages[1]["prompt_tokens"].as_u64().unwrap_or(0),
        || format!("turn 1 {}, turn 2 {}", usages[0], usages[1]),
    )?;
    // The same conversation, sent whole: from nothing under another key
    // (even the system prompt), from the kept cache under the same one.
    let view = a.get(&format!("/v1/sessions/{id}")).json();
    let mut messages: Vec<Value> = view["messages"]
        .as_array()
        .ok_or("no messages")?
        .iter()
        .map(|m| json!({ "role": m["role"], "content": m["content"] }))
        .collect();
    messages.pop();
    let body = json!({ "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 12 });
    let other = chat(&b, &body)?;
    ensure(
        cached_tokens(&other["usage"]) == Some(public_start_len()?),
        || {
            format!(
                "another key's request started from more than the public start \
                 (the default system message, {} tokens): {}",
                public_start_len().unwrap_or(0),
                other["usage"]
            )
        },
    )?;
    // A system message of its own: only the ids it shares with the public
    // start (the template's opening) come from it.
    let (system, user) = (
        "You answer in one word.",
        "Hi! My name is Ada and I like tea.",
    );
    let mut own = body.clone();
    own["messages"] = json!([{ "role": "system", "content": system },
                             { "role": "user", "content": user }]);
    let first = chat(&b, &own)?;
    let shared = public_start_shared(&[(Role::System, system), (Role::User, user)])?;
    ensure(
        shared < public_start_len()? && cached_tokens(&first["usage"]) == Some(shared),
        || {
            format!(
                "{shared} ids shared with the public start: {}",
                first["usage"]
            )
        },
    )?;
    let same = chat(&a, &body)?;
    ensure(cached_tokens(&same["usage"]) > Some(first_prompt), || {
        format!("{}", same["usage"])
    })?;
    let content = |v: &Value| v["choices"][0]["message"]["content"].clone();
    let session_reply = last["choices"][0]["message"]["content"].clone();
    ensure(
        content(&other) == session_reply && content(&same) == session_reply,
        || {
            format!(
                "from nothing {}, kept {}, session {session_reply}",
                content(&other),
                content(&same)
            )
        },
    )?;
    Ok(())
}

/// Two conversations at once: each shard admits both (their reservations
/// fit its token budget) and both get the reply they get alone.
fn concurrent_turns(c: &Client) -> Result<(), Failed> {
    let body = |text: &str| {
        json!({ "model": MODEL, "temperature": 0, "max_tokens": 12,
                "messages": [{ "role": "user", "content": text }] })
    };
    let questions = ["What is 2 + 2?", "Name a fruit."];
    let alone: Vec<Value> = questions
        .iter()
        .map(|q| chat(c, &body(q)))
        .collect::<Result<_, _>>()?;
    let together: Vec<Result<Value, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| scope.spawn(|| chat(c, &body(q)).map_err(|e| format!("{e:?}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (a, t) in alone.iter().zip(together) {
        let t = t?;
        ensure(
            a["choices"][0]["message"] == t["choices"][0]["message"],
            || format!("alone {a}, concurrently {t}"),
        )?;
    }
    Ok(())
}

/// Questions for concurrent conversations: distinct prompts of different
/// lengths, so a batch holds prefills of different sizes and then single
/// decode rows at different positions.
const QUESTIONS: [&str; 6] = [
    "What is 2 + 2?",
    "Name a fruit.",
    "Write one sentence about the sea.",
    "Which planet is the largest in the solar system? Answer briefly.",
    "Say hello in French.",
    "List three animals that live in the forest, with one word about each.",
];

/// Each shard's `GET /` of `worker`.
fn shard_infos(worker: &Worker) -> Vec<Value> {
    worker
        .shards
        .iter()
        .map(|base| Client::new(base).get("/").json())
        .collect()
}

/// Concurrent greedy streams, each with a prompt of its own: every one
/// streams exactly the text it streams alone (a call's output in a batch
/// is bit for bit its output alone, end to end), and every shard shows
/// that batches formed (its `GET /`: stages that ran several calls).
fn concurrent_streams_are_batched_and_equal_alone(
    c: &Client,
    worker: &Worker,
) -> Result<(), Failed> {
    let body = |q: &str| {
        json!({ "model": MODEL, "temperature": 0, "max_tokens": 24, "stream": true,
                "messages": [{ "role": "user", "content": q }] })
    };
    let read = |q: &str| {
        let s = stream(c, "/v1/chat/completions", &body(q));
        let (text, finish, _) = stream_text(&s);
        (s.status, text, finish)
    };
    let alone: Vec<_> = QUESTIONS.iter().map(|q| read(q)).collect();
    let before = shard_infos(worker);
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = QUESTIONS
            .iter()
            .map(|q| scope.spawn(move || read(q)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (q, (a, t)) in QUESTIONS.iter().zip(alone.iter().zip(&together)) {
        ensure(a.0 == 200 && a.1.len() > 4, || format!("{q}: alone {a:?}"))?;
        ensure(a == t, || format!("{q}: alone {a:?}, concurrently {t:?}"))?;
    }
    let after = shard_infos(worker);
    for (b, a) in before.iter().zip(&after) {
        let grew = |field: &str| {
            a[field]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(b[field].as_u64().unwrap_or(0))
        };
        ensure(
            grew("batched_stages") > 0 && a["max_batch"].as_u64() >= Some(2),
            || {
                format!(
                    "no batch formed on shard {}: before {b}, after {a}",
                    a["layers"]
                )
            },
        )?;
    }
    Ok(())
}

/// A client that hangs up mid-stream: nothing partial is stored, the
/// session still converses, and every shard frees the abandoned pass's
/// reservation (its `GET /` shows none left once the turns are over).
fn interrupted_stream_frees_the_shards(c: &Client, worker: &Worker) -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    let created = c.post_json("/v1/sessions", &json!({ "model": MODEL }));
    let id = created.json()["id"].as_str().ok_or("no id")?.to_string();
    {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let res = agent
            .post(format!("{}/v1/sessions/{id}/messages", c.base()))
            .header("content-type", "application/json")
            .send(
                json!({ "content": "Tell me a long story.", "stream": true, "max_tokens": 200 })
                    .to_string(),
            )
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(res.into_body().into_reader());
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let view = c.get(&format!("/v1/sessions/{id}")).json();
    let stored = view["messages"].as_array().map(Vec::len).unwrap_or(9);
    ensure(stored == 0 || stored == 2, || format!("{view}"))?;
    let res = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Hi", "max_tokens": 4 }),
    );
    ensure(res.status == 200, || {
        String::from_utf8_lossy(&res.body).into_owned()
    })?;
    shards_free(worker, 10)
}

/// Waits until every shard of `worker` holds no pass and no reservation
/// (its `GET /`), polling; fails after `seconds` with what is still held.
fn shards_free(worker: &Worker, seconds: u64) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for base in &worker.shards {
        loop {
            let info = Client::new(base).get("/").json();
            if info["reserved_tokens"] == 0 && info["open_passes"] == 0 {
                break;
            }
            ensure(Instant::now() < deadline, || {
                format!("shard {base} still holds passes {seconds} s later: {info}")
            })?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// A long streamed reply: the most tokens a reply may have, sampled wide
/// so that it runs to them rather than stopping early.
fn long_reply() -> Value {
    json!({ "stream": true, "max_tokens": 224, "temperature": 2.0, "top_k": 0, "seed": 7 })
}

/// A message of ~260 tokens: with the longest reply a pass reserves ~510
/// tokens on every shard, four of which fill a shard's 2,048-token budget.
fn long_message(i: usize) -> String {
    format!(
        "Here is story number {i}. {}Tell it again, longer.",
        "Once upon a time a dragon learned to bake bread in a small village by the sea. "
            .repeat(14)
    )
}

/// `n` streamed chats of long replies, one after another, each hung up
/// after its first token.
fn hang_up_long_chats(worker: &Worker, n: usize) -> Result<(), Failed> {
    for i in 0..n {
        let mut body = long_reply();
        body["model"] = json!(MODEL);
        body["messages"] = json!([{ "role": "user", "content": long_message(i) }]);
        hang_up_after_first_token(&worker.client(), "/v1/chat/completions", &body)
            .map_err(|e| format!("hung-up chat {i}: {e}"))?;
    }
    Ok(())
}

/// Issue 30, as a new user tried it: ten streamed chats whose client hung
/// up after the first token, then ordinary chats one at a time, with
/// nothing else running. Every one is answered (no `503
/// shard_unavailable` from reservations the hung-up turns left behind),
/// and the shards hold nothing soon after.
fn hung_up_chats_leave_nothing_behind(worker: &Worker) -> Result<(), Failed> {
    hang_up_long_chats(worker, 10)?;
    for i in 0..3 {
        let body = json!({ "model": MODEL, "max_tokens": 8, "temperature": 0,
                           "messages": [{ "role": "user", "content": format!("Say {i}.") }] });
        let res = worker.client().post_json("/v1/chat/completions", &body);
        ensure(res.status == 200, || {
            format!(
                "ordinary chat {i} after the hang-ups: {} {}",
                res.status,
                String::from_utf8_lossy(&res.body)
            )
        })?;
    }
    shards_free(worker, 20)
}

/// Sends a request on a raw connection and hangs up after `wait`, having
/// read at most the status line: what a client that gives up early does.
fn hang_up_after(c: &Client, path: &str, body: &Value, wait: Duration) -> Result<String, Failed> {
    use std::io::{BufRead, BufReader, Write};
    let addr = c.base().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let _ = BufReader::new(&stream).read_line(&mut line);
    Ok(line)
}

/// `DELETE` of session `id`, answered 200, on a connection of its own
/// (workerd drops a kept-alive connection left idle while it was busy).
fn delete_session(worker: &Worker, id: &str, after: &str) -> Result<(), Failed> {
    let deleted = worker
        .client()
        .try_send("DELETE", &format!("/v1/sessions/{id}"), None, b"")
        .map_err(|e| format!("DELETE after a hang-up {after}: {e}"))?;
    ensure(deleted.status == 200, || {
        format!(
            "DELETE after a hang-up {after}: {} {}",
            deleted.status,
            String::from_utf8_lossy(&deleted.body)
        )
    })
}

/// Session turns whose client hangs up mid-turn: while the turn waits for
/// the shards' room (three hung-up chats left it taken), right after its
/// status line (during its prefill), and after its first token. The
/// session is never left stuck: its next turn is answered, a DELETE of it
/// answers, and the shards hold nothing soon after.
fn hung_up_session_turns_leave_the_session_usable(worker: &Worker) -> Result<(), Failed> {
    hang_up_long_chats(worker, 3)?;
    // Two long messages reserve more than the hung-up chats left free.
    let turn = json!({ "content": format!("{}{}", long_message(8), long_message(9)),
                       "stream": true, "max_tokens": 200 });
    for (when, wait) in [("while waiting for room", 1), ("during its prefill", 60)] {
        let id = greedy_session(&worker.client())?;
        let path = format!("/v1/sessions/{id}/messages");
        let line = hang_up_after(&worker.client(), &path, &turn, Duration::from_secs(wait))?;
        delete_session(worker, &id, &format!("{when} ({line:?})"))?;
    }
    let id = greedy_session(&worker.client())?;
    let path = format!("/v1/sessions/{id}/messages");
    let mut body = long_reply();
    body["content"] = json!(long_message(7));
    hang_up_after_first_token(&worker.client(), &path, &body)?;
    let res = worker
        .client()
        .try_send(
            "POST",
            &path,
            Some("application/json"),
            json!({ "content": "Hi", "max_tokens": 4 })
                .to_string()
                .as_bytes(),
        )
        .map_err(|e| format!("the turn after a hang-up: {e}"))?;
    ensure(res.status == 200, || {
        format!(
            "the turn after a hang-up: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })?;
    delete_session(worker, &id, "after the first token")?;
    shards_free(worker, 20)
}

/// A trap in the shard module (tests/shard_trap.mjs makes one): the passes
/// of the trapped instance end, the next pass is on a new instance, and its
/// handle is none an old stub holds, so a stale close cannot close it. The
/// public start pinned before is gone with the instance, and the new one's
/// admissions say so (`public_tokens` 0).
fn a_trap_never_reuses_a_handle() -> Result<(), Failed> {
    let shard = support::shard_plan()
        .into_iter()
        .find(|s| s.index == 0)
        .ok_or("no shard 0")?;
    let dir = support::root().join("build/shards").join(&shard.script);
    let seen = support::node_result("tests/shard_trap.mjs", &[dir.as_os_str()])?;
    let handles: Vec<u64> = seen["handles"]
        .as_array()
        .map(|h| h.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    ensure(
        seen["trapped"] == true
            && seen["after_trap"]
                .as_str()
                .is_some_and(|m| m.contains("ended"))
            && handles.len() == 3
            && handles[2] > handles[0].max(handles[1])
            && seen["still_open"] == true
            && seen["open_passes"] == 1
            && seen["instances"] == 2
            // The pinned public start is reported until the trap, then
            // not: what tells the front to feed it again.
            && seen["public_tokens"] == json!([3, 3, 0]),
        || format!("{seen}"),
    )
}

/// A vocabulary slice's Worker (shard/pass.mjs `sliceEntrypoint` on the
/// shard module's slice ABI, tests/shard_slice.mjs in Node) answers as the
/// engine's `VocabSlice` natively, bit for bit: the embeddings of its rows,
/// its best candidates (model ids) and its whole row of logits for a
/// hidden state handed over as a view into a larger buffer; and refuses an
/// id outside its rows, a hidden state of no whole rows, ids that are not a
/// Uint32Array, and calls after its pass closed, with a message each.
fn a_vocabulary_slice_answers_as_the_engine() -> Result<(), Failed> {
    use edgeinfer_engine::decoder::vocab::VocabSlice;
    let shard = support::shard_plan().into_iter().next().ok_or("no shard")?;
    let built = support::root().join("build/shards").join(&shard.script);
    let dir = support::TempDir::new("slice");
    let rows = 1000..1256;
    let gguf = check::pack_gguf::Gguf::parse(smollm2::gguf_bytes()).map_err(|e| e.to_string())?;
    let packed = gguf.pack_vocab_slice(Storage::AsStored, rows.clone())?;
    std::fs::write(dir.0.join("weights.bin"), &packed).map_err(|e| e.to_string())?;
    std::fs::copy(built.join("shard.wasm"), dir.0.join("shard.wasm")).map_err(|e| e.to_string())?;
    std::fs::copy(
        support::root().join("shard/pass.mjs"),
        dir.0.join("pass.mjs"),
    )
    .map_err(|e| e.to_string())?;
    let slice = VocabSlice::parse(edgeinfer_engine::packed::leak_aligned(&packed))
        .map_err(|e| e.to_string())?;
    let dims = slice.config().dims;
    let ids: Vec<u32> = vec![1000, 1255, 1100, 1000];
    let mut noise = 0x2545_f491_u32;
    let hidden: Vec<f32> = (0..dims)
        .map(|_| {
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (noise >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let input = json!({ "ids": ids, "hidden": hidden, "outside": rows.end });
    // The slice logs its pass's end before its result line.
    let input = input.to_string();
    let seen = support::node_result(
        "tests/shard_slice.mjs",
        &[dir.0.as_os_str(), std::ffi::OsStr::new(&input)],
    )?;
    let floats = |v: &Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| (x.as_f64().unwrap_or(f64::NAN) as f32).to_bits())
                    .collect()
            })
            .unwrap_or_default()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let embed = slice.embed(&ids).map_err(|e| e.to_string())?;
    ensure(floats(&seen["embed"]) == bits(&embed), || {
        "embeddings differ".into()
    })?;
    let logits = slice.logits(&hidden).map_err(|e| e.to_string())?;
    ensure(floats(&seen["logits"]) == bits(&logits), || {
        "logits differ".into()
    })?;
    let best = slice.best(&hidden, 5).map_err(|e| e.to_string())?.remove(0);
    let best_ids: Vec<u64> = best.iter().map(|c| u64::from(c.0)).collect();
    let best_logits: Vec<f32> = best.iter().map(|c| c.1).collect();
    ensure(
        seen["best_ids"] == json!(best_ids) && floats(&seen["best_logits"]) == bits(&best_logits),
        || {
            format!(
                "best: {} {} vs {best:?}",
                seen["best_ids"], seen["best_logits"]
            )
        },
    )?;
    let says = |k: &str, what: &str| seen[k].as_str().is_some_and(|m| m.contains(what));
    ensure(
        seen["cached"] == 4
            && says(
                "out_of_range",
                "1256 is not in this vocabulary slice's rows 1000..1256",
            )
            && says("wrong_size", "whole rows")
            && says("not_ids", "Uint32Array")
            && says("after_close", "ended")
            && seen["info"]["first"] == rows.start
            && seen["info"]["end"] == rows.end,
        || format!("{seen}"),
    )
}

/// Shards whose budget a turn can never fit (64 tokens): the front gets
/// their refusal and answers 503 `shard_unavailable` with their reason,
/// streamed or not, before any stream starts.
fn a_shards_refusal_is_a_503_before_the_stream() -> Result<(), Failed> {
    let worker = Worker::start_with(&Bindings {
        shard_budget: Some(64),
        ..Bindings::default()
    });
    for stream in [false, true] {
        let body = json!({ "model": MODEL, "stream": stream, "max_tokens": 100,
                           "messages": [{ "role": "user", "content": "Hi" }] });
        let res = worker.client().post_json("/v1/chat/completions", &body);
        let error = res.expect_error(503);
        ensure(
            error["code"] == "shard_unavailable"
                && error["message"].as_str().is_some_and(|m| {
                    // 64, less the public start the shards pinned.
                    let budget = 64 - public_start_len().unwrap_or(0);
                    m.contains(&format!("in its budget of {budget}"))
                }),
            || format!("{error}"),
        )?;
    }
    Ok(())
}

/// A shard whose `open` fails (it is down): 503 JSON with `Retry-After`
/// (the crowd bench found these without one), stream or not, and a session
/// turn stores nothing.
fn shard_down(c: &Client) -> Result<(), Failed> {
    let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "Hi" }] });
    for stream in [false, true] {
        let mut b = body.clone();
        b["stream"] = json!(stream);
        let res = c.post_json("/v1/chat/completions", &b);
        ensure(res.header("retry-after").is_some(), || {
            format!("a 503 without Retry-After: {:?}", res.headers)
        })?;
        let error = res.expect_error(503);
        ensure(error["code"] == "shard_unavailable", || format!("{error}"))?;
        let message = error["message"].as_str().unwrap_or("");
        ensure(
            message.contains("edgeinfer-smollm2-135m-instruct-2"),
            || message.to_string(),
        )?;
    }
    let created = c.post_json("/v1/sessions", &json!({ "model": MODEL }));
    let id = created.json()["id"].as_str().ok_or("no id")?.to_string();
    let res = c.post_json(
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Hi" }),
    );
    ensure(res.header("retry-after").is_some(), || {
        format!("a session's 503 without Retry-After: {:?}", res.headers)
    })?;
    res.expect_error(503);
    let view = c.get(&format!("/v1/sessions/{id}")).json();
    ensure(view["messages"].as_array().map(Vec::len) == Some(0), || {
        format!("{view}")
    })?;
    Ok(())
}

/// A shard that opens but fails its first pass: the stream has begun, so
/// the failure is an `error` event, then `[DONE]`; nothing is stored.
fn shard_fails_mid_stream(c: &Client) -> Result<(), Failed> {
    let created = c.post_json("/v1/sessions", &json!({ "model": MODEL }));
    let id = created.json()["id"].as_str().ok_or("no id")?.to_string();
    let s = stream(
        c,
        &format!("/v1/sessions/{id}/messages"),
        &json!({ "content": "Hi", "stream": true }),
    );
    ensure(s.status == 200, || format!("status {}", s.status))?;
    let errors: Vec<&String> = s
        .events
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d.contains("\"error\""))
        .collect();
    ensure(
        errors.len() == 1 && errors[0].contains("shard_unavailable"),
        || format!("{:?}", s.events),
    )?;
    ensure(
        s.events.last().map(|e| e.1.as_str()) == Some("[DONE]"),
        || format!("{:?}", s.events),
    )?;
    let view = c.get(&format!("/v1/sessions/{id}")).json();
    ensure(view["messages"].as_array().map(Vec::len) == Some(0), || {
        format!("{view}")
    })?;
    Ok(())
}

/// `check` on a worker of its own with every shard up (and on sockets of
/// its own), for checks that must start from shards holding nothing; its
/// log is in the failure.
fn on_a_fresh_worker(check: fn(&Worker) -> Result<(), Failed>) -> Result<(), Failed> {
    let worker = Worker::start_with(&Bindings {
        shard_sockets: true,
        ..Bindings::default()
    });
    check(&worker).map_err(|e| {
        format!(
            "{}\n--- workerd log ---\n{}",
            e.message().unwrap_or_default(),
            worker.log_text()
        )
        .into()
    })
}

/// The servers: every shard up (with and without API keys), shard 2 down,
/// shard 1 failing its passes.
struct Servers {
    all: Worker,
    keyed: Worker,
    down: Worker,
    failing: Worker,
}

type Check = fn(&Servers) -> Result<(), Failed>;

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("greedy_through_the_shards_equals_the_native_engine", |s| {
            greedy_equals_the_native_engine(&s.all.client())
        }),
        (
            "a_long_prompt_goes_in_pieces_and_equals_the_native_engine",
            |s| a_long_prompt_goes_in_pieces(&s.all.client()),
        ),
        (
            "sampled_through_the_shards_equals_the_native_sampler",
            |s| sampled_equals_the_native_sampler(&s.all.client(), &s.all),
        ),
        (
            "stream_equals_whole_hops_in_server_timing_trace_in_shard_logs",
            |s| stream_equals_whole_with_hops_and_trace(&s.all.client(), &s.all),
        ),
        ("session_converses_on_the_shards", |s| {
            session_converses(&s.all.client())
        }),
        ("a_conversations_next_turn_feeds_only_what_is_new", |s| {
            next_turn_feeds_only_what_is_new(&s.keyed.base)
        }),
        ("concurrent_turns_share_the_shards", |s| {
            concurrent_turns(&s.all.client())
        }),
        ("concurrent_streams_are_batched_and_equal_alone", |s| {
            concurrent_streams_are_batched_and_equal_alone(&s.all.client(), &s.all)
        }),
        ("an_interrupted_stream_frees_the_shards", |s| {
            interrupted_stream_frees_the_shards(&s.all.client(), &s.all)
        }),
        ("hung_up_chats_leave_nothing_behind", |_| {
            on_a_fresh_worker(hung_up_chats_leave_nothing_behind)
        }),
        ("hung_up_session_turns_leave_the_session_usable", |_| {
            on_a_fresh_worker(hung_up_session_turns_leave_the_session_usable)
        }),
        ("a_trap_never_reuses_a_handle", |_| {
            a_trap_never_reuses_a_handle()
        }),
        ("a_vocabulary_slice_answers_as_the_engine", |_| {
            a_vocabulary_slice_answers_as_the_engine()
        }),
        ("a_shards_refusal_is_a_503_before_the_stream", |_| {
            a_shards_refusal_is_a_503_before_the_stream()
        }),
        ("a_shard_down_is_a_503_and_nothing_is_stored", |s| {
            shard_down(&s.down.client())
        }),
        ("a_shard_failing_mid_stream_is_an_error_event", |s| {
            shard_fails_mid_stream(&s.failing.client())
        }),
    ]
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let with = |broken| {
        Worker::start_with(&Bindings {
            broken_shards: broken,
            shard_sockets: true,
            ..Bindings::default()
        })
    };
    let servers = (!args.list).then(|| {
        Arc::new(Servers {
            all: with(Vec::new()),
            keyed: Worker::start_with(&Bindings {
                vars: vec![("API_KEYS".into(), "key-alpha,key-beta".into())],
                ..Bindings::default()
            }),
            down: with(vec![(2, BrokenShard::Down)]),
            failing: with(vec![(1, BrokenShard::FailsPasses)]),
        })
    });
    let trials = checks()
        .into_iter()
        .map(|(name, check)| {
            let servers = servers.clone();
            Trial::test(name, move || {
                check(servers.as_ref().expect("servers started"))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        if let Some(s) = &servers {
            eprintln!("--- workerd log ---\n{}", s.all.log_text());
        }
    }
    drop(servers);
    conclusion.exit();
}
