//! A GGUF a user brings (scripts/add-model), served through its shard
//! Workers in workerd, against our engine run natively on the whole file.
//!
//! Ignored by default: it needs the model added first, and the front and
//! shard Workers built with it (models/local.toml is the user's, not in
//! git). For Qwen2.5-Coder-0.5B-Instruct, whose 151,936-row vocabulary is
//! cut into slice Workers:
//!
//! ```sh
//! scripts/add-model "$(python3 models/qwen2.5-coder-0.5b/fetch.py)" --id qwen2.5-coder-0.5b-instruct \
//!     --license "Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct by Alibaba Cloud)"
//! cargo test --release --test byo_gguf -- --ignored
//! ```
//!
//! `EDGEINFER_BYO_MODEL` names another added model (its golden chats are
//! models/templates/golden.json's of the same chat template: Qwen2.5-Coder
//! 0.5B's serve the 1.5B's too). Checked:
//! - the front renders each golden chat (transformers' `apply_chat_template`
//!   text, tokenized) token for token: `usage.prompt_tokens`;
//! - greedy replies through every layer shard and vocabulary slice equal
//!   our engine on the whole file natively: layers bit for bit, and the
//!   slices' merged candidates the whole head's ranking;
//! - streamed equals whole, and `/v1/models` counts its Workers;
//! - the official openai Python client gets "Paris" for the capital of France.

use edgeinfer_pipeline as check;
mod support;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use support::sse::{stream, stream_text};

use support::{ensure, Client, Worker};

use check::gguf_tokenizer::Vocabulary;
use check::pack_gguf::{Gguf, Storage};
use edgeinfer::decoder::sampling::argmax;
use edgeinfer::registry::{self, InputSpec};
use edgeinfer_engine::decoder::Decoder;
use edgeinfer_engine::packed::leak_aligned;

/// Tokens per reply, as the issue asks: 32.
const MAX_TOKENS: usize = 32;

fn model_id() -> String {
    std::env::var("EDGEINFER_BYO_MODEL").unwrap_or_else(|_| "qwen2.5-coder-0.5b-instruct".into())
}

/// The model as the front embeds it, its GGUF, and what the test derives.
struct Byo {
    id: String,
    workers: usize,
    decoder: Decoder,
    tokenizer: tokenizers::Tokenizer,
    /// Ids that end a reply (the tokenizer's special tokens).
    controls: HashSet<u32>,
    golden: Value,
}

fn load() -> Byo {
    let id = model_id();
    let spec = registry::MODELS
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("{id} is not in the build: add it with scripts/add-model first"));
    let InputSpec::ShardedChat { shards, .. } = spec.input else {
        panic!("{id} is not served by shard Workers");
    };
    let manifest = check::read_manifests(&support::root().join("models")).expect("manifests");
    let entry = manifest
        .model
        .iter()
        .find(|m| m.id == id)
        .expect("its entry");
    let path = check::models_cache().join(&entry.artifact);
    let bytes: &'static [u8] = Box::leak(
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_boxed_slice(),
    );
    let gguf = Gguf::parse(bytes).expect("parse the GGUF");
    let packed = gguf.pack(Storage::AsStored).expect("pack the whole GGUF");
    let decoder = Decoder::parse(leak_aligned(&packed.bytes)).expect("load it");
    let template = gguf.string("tokenizer.chat_template").ok();
    let json = Vocabulary::of(&gguf)
        .and_then(|v| v.tokenizer_json())
        .expect("its tokenizer");
    let tokenizer = tokenizers::Tokenizer::from_bytes(json.as_bytes()).expect("tokenizer loads");
    let controls = tokenizer
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(&id, _)| id)
        .collect();
    let all: Value = serde_json::from_slice(
        &std::fs::read(support::root().join("models/templates/golden.json")).expect("golden"),
    )
    .expect("golden JSON");
    let golden = all["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| Some(m["template"].as_str().unwrap_or("")) == template)
        .unwrap_or_else(|| panic!("models/templates/golden.json has no chats for {id}'s template"))
        .clone();
    Byo {
        id,
        workers: shards.len(),
        decoder,
        tokenizer,
        controls,
        golden,
    }
}

impl Byo {
    /// Greedy tokens natively, until a control token (which counts, as the
    /// API counts it) or `n`.
    fn native_reply(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut cache = self.decoder.new_cache();
        let mut logits = self.decoder.forward(&mut cache, prompt).expect("prompt");
        let mut out = Vec::new();
        while out.len() < n {
            let next = argmax(&logits);
            out.push(next);
            if self.controls.contains(&next) {
                break;
            }
            logits = self.decoder.forward(&mut cache, &[next]).expect("step");
        }
        out
    }

    fn text(&self, ids: &[u32]) -> String {
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|t| !self.controls.contains(t))
            .collect();
        self.tokenizer.decode(&ids, true).expect("decode")
    }

    /// The golden chats a ChatML front renders as the template does: with
    /// the generation prompt, no tools (the front writes its own tool
    /// block), no control token typed inside a message (the front keeps it
    /// text; transformers' text, tokenized, makes it a control), and a last
    /// message with text (the API refuses an empty one).
    fn chats(&self) -> Vec<(&Value, Vec<u32>)> {
        self.golden["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .filter(|c| c["add_generation_prompt"] == true && c["tools"].is_null())
            .filter(|c| {
                let messages = c["messages"].as_array().expect("messages");
                let text = |m: &Value| m["content"].as_str().unwrap_or("").to_string();
                !messages.iter().any(|m| text(m).contains("<|"))
                    && messages.last().is_some_and(|m| !text(m).is_empty())
            })
            .map(|c| {
                let text = c["text"].as_str().expect("text");
                let ids = self.tokenizer.encode(text, false).expect("encode");
                (&c["messages"], ids.get_ids().to_vec())
            })
            .collect()
    }
}

fn chat(c: &Client, body: &Value) -> Result<Value, Failed> {
    support::chat_ok(c, body)
}

fn greedy_equals_the_native_engine(byo: &Byo, c: &Client) -> Result<(), Failed> {
    let chats = byo.chats();
    ensure(chats.len() >= 10, || {
        format!("{} golden chats", chats.len())
    })?;
    for (messages, prompt) in chats {
        let expected = byo.native_reply(&prompt, MAX_TOKENS);
        let expected_text = byo.text(&expected);
        let body = json!({ "model": byo.id, "messages": messages, "temperature": 0,
                           "max_tokens": MAX_TOKENS });
        let reply = chat(c, &body)?;
        let usage = &reply["usage"];
        ensure(usage["prompt_tokens"] == prompt.len(), || {
            format!(
                "{messages}: the front's prompt is not the template's: {usage} vs {} ids",
                prompt.len()
            )
        })?;
        let content = reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("");
        ensure(content == expected_text, || {
            format!("{messages}: through the shards {content:?}, natively {expected_text:?}")
        })?;
        ensure(usage["completion_tokens"] == expected.len(), || {
            format!(
                "{} tokens natively, {usage} through the shards",
                expected.len()
            )
        })?;
    }
    Ok(())
}

fn streamed_equals_whole(byo: &Byo, c: &Client) -> Result<(), Failed> {
    let body = json!({ "model": byo.id, "temperature": 0, "max_tokens": 16,
                       "messages": [{ "role": "user", "content": "What is the capital of France?" }] });
    let whole = chat(c, &body)?;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (text, _, _) = stream_text(&stream(c, "/v1/chat/completions", &streamed));
    let content = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    ensure(text == content, || {
        format!("streamed {text:?}, whole {content:?}")
    })?;
    ensure(content.contains("Paris"), || format!("{content:?}"))
}

fn listed_with_its_workers(byo: &Byo, c: &Client) -> Result<(), Failed> {
    let res = c.get("/v1/models");
    let models = res.json();
    let listed = models["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == byo.id.as_str()))
        .ok_or_else(|| format!("{} not in /v1/models", byo.id))?;
    ensure(listed["shards"] == byo.workers, || format!("{listed}"))?;
    // The front's own invocation and one per shard Worker: within 32.
    ensure(byo.workers < 32, || format!("{} Workers", byo.workers + 1))
}

/// The official openai Python client, unmodified but for its base URL:
/// whole and streamed alike, naming Paris, sessions and the models list.
fn openai_python_client(byo: &Byo, c: &Client) -> Result<(), Failed> {
    support::openai_python_client(
        c,
        &[
            ("EDGEINFER_CHAT_MODEL", byo.id.as_str()),
            ("EDGEINFER_EXPECT_PARIS", "1"),
        ],
    )
}

type Check = fn(&Byo, &Client) -> Result<(), Failed>;

fn main() {
    let mut args = Arguments::from_args();
    // One conversation at a time: a large model's plan may give each shard
    // room for one only (the 1.5B's), and a second would wait its turn.
    args.test_threads = Some(1);
    let checks: Vec<(&str, Check)> = vec![
        (
            "greedy_equals_the_native_engine",
            greedy_equals_the_native_engine,
        ),
        ("streamed_equals_whole", streamed_equals_whole),
        ("listed_with_its_workers", listed_with_its_workers),
        ("openai_python_client", openai_python_client),
    ];
    let ignored = !args.ignored && !args.include_ignored;
    let state = (!args.list && !ignored).then(|| Arc::new((load(), Worker::start())));
    let trials = checks
        .into_iter()
        .map(|(name, check)| {
            let state = state.clone();
            Trial::test(name, move || {
                let (byo, worker) = state.as_deref().expect("started");
                check(byo, &worker.client())
            })
            .with_ignored_flag(true)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
