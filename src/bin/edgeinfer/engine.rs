//! Turning jobs into `api::handle` calls and answers into output lines.
//!
//! Lines of the batch routes are packed into requests as large as the API
//! takes (its input, body and token limits), which saves the per-request
//! work (parsing, model lookup) without changing any number: the encoder
//! runs each text on its own, never as a padded batch. A refused request is
//! split in halves until the lines at fault stand alone, so each bad line
//! gets exactly the error the API gives that line by itself and the good
//! lines around it are still served.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use edgeinfer::api::limits::{MAX_BODY_BYTES, MAX_INPUTS, MAX_TOTAL_TOKENS};
use edgeinfer::api::{self, ApiError, HttpRequest, HttpResponse};
use edgeinfer::registry::{self, InputSpec, MODELS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::input::Job;
use crate::route::ApiRoute;

/// What becomes of one line: the result's fields, or the API's status and
/// error object.
pub type Outcome = Result<Map<String, Value>, (u16, Value)>;

/// Calls the API as the worker would, with a complete JSON body. A panic
/// (which `handle` promises not to raise) becomes a 500 for these lines
/// rather than the end of the batch.
pub fn call(method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let req = HttpRequest {
        method,
        path,
        content_type: Some("application/json"),
        body,
        body_complete: true,
        session: None,
    };
    catch_unwind(AssertUnwindSafe(|| api::handle(&req))).unwrap_or_else(|_| {
        HttpResponse::error(ApiError::internal("the request panicked; see stderr"))
    })
}

fn error_outcome(e: &ApiError) -> Outcome {
    Err((e.status, error_object(&e.body())))
}

/// The `error` object of an API error body.
fn error_object(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("error").map(Value::take))
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// One request's worth of jobs (indices into the window).
struct Unit {
    jobs: Vec<usize>,
}

/// Texts per embeddings request: a fixed number, like every grouping here,
/// so the output does not depend on `--jobs`.
const EMBED_TEXTS: usize = 16;

/// Texts per request, bounded so that a request of valid lines is one the
/// API accepts: [`MAX_INPUTS`] texts, a body under [`MAX_BODY_BYTES`], and
/// for token models [`MAX_TOTAL_TOKENS`], estimated from above (a word
/// piece covers at least one character; two special tokens per text).
struct Budget {
    texts: usize,
    bytes: usize,
    tokens: Option<(usize, usize)>,
}

impl Budget {
    fn for_fields(route: ApiRoute, fields: &Map<String, Value>) -> Self {
        let fields_bytes = serde_json::to_vec(fields).map_or(0, |b| b.len());
        Budget {
            texts: match route {
                // The encoder runs text by text (no batch math to share) at
                // ~0.5 s a text natively: small requests spread over threads.
                ApiRoute::Embed => EMBED_TEXTS,
                ApiRoute::Classify | ApiRoute::Chat => MAX_INPUTS,
            },
            bytes: MAX_BODY_BYTES.saturating_sub(fields_bytes + 64),
            tokens: fields
                .get("model")
                .and_then(Value::as_str)
                .and_then(|m| registry::find(m).ok())
                .and_then(|spec| token_limit(&spec.input))
                .map(|per_text| (per_text, MAX_TOTAL_TOKENS)),
        }
    }

    /// Takes `text` if it fits; false when the request is full.
    fn take(&mut self, text: &str) -> bool {
        let bytes = serde_json::to_string(text).map_or(text.len(), |s| s.len()) + 1;
        let tokens = self
            .tokens
            .map(|(per_text, _)| per_text.min(text.chars().count() + 2));
        let fits = self.texts > 0
            && bytes <= self.bytes
            && match (tokens, self.tokens) {
                (Some(t), Some((_, left))) => t <= left,
                _ => true,
            };
        if fits {
            self.texts -= 1;
            self.bytes -= bytes;
            if let (Some(t), Some((_, left))) = (tokens, self.tokens.as_mut()) {
                *left -= t;
            }
        }
        fits
    }
}

/// The most tokens one text becomes in `input`'s model (longer inputs are
/// truncated).
fn token_limit(input: &InputSpec) -> Option<usize> {
    match input {
        InputSpec::Tokens { max_tokens, .. } => Some(*max_tokens),
        InputSpec::SentenceEmbedding { encoder, .. } => {
            MODELS.get(*encoder).and_then(|m| token_limit(&m.input))
        }
        _ => None,
    }
}

/// Groups the window's valid jobs into requests: same fields, in order of
/// appearance, each within its [`Budget`]. The grouping depends on the
/// input alone, never on `--jobs`: lande scores a batch as one matrix, and
/// its last digit can depend on the batch's shape, so the same file must
/// always make the same requests to give the same bytes.
fn plan(route: ApiRoute, window: &[Job]) -> Vec<Unit> {
    let valid: Vec<usize> = (0..window.len())
        .filter(|&i| window[i].work.is_ok())
        .collect();
    if !route.batches() {
        return valid.into_iter().map(|i| Unit { jobs: vec![i] }).collect();
    }
    // (fields, open unit index, its budget), one per distinct field set.
    let mut open: Vec<(&Map<String, Value>, usize, Budget)> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    for i in valid {
        let Ok(work) = &window[i].work else { continue };
        let text = work.text.as_deref().unwrap_or_default();
        let slot = match open.iter().position(|(f, _, _)| **f == work.fields) {
            Some(slot) => slot,
            None => {
                units.push(Unit { jobs: Vec::new() });
                open.push((
                    &work.fields,
                    units.len() - 1,
                    Budget::for_fields(route, &work.fields),
                ));
                open.len() - 1
            }
        };
        let (_, unit, budget) = &mut open[slot];
        if !budget.take(text) && !units[*unit].jobs.is_empty() {
            units.push(Unit { jobs: Vec::new() });
            *unit = units.len() - 1;
            *budget = Budget::for_fields(route, &work.fields);
            // Over budget alone (e.g. too long): sent alone, for the API's verdict.
            budget.take(text);
        }
        units[*unit].jobs.push(i);
    }
    units
}

#[derive(Deserialize)]
struct Listed {
    model: String,
    model_version: String,
    data: Vec<Map<String, Value>>,
    #[serde(default)]
    usage: Option<ListedUsage>,
}

#[derive(Deserialize)]
struct ListedUsage {
    #[serde(default)]
    truncated_inputs: Option<Vec<usize>>,
}

/// Sends `jobs` (all with the same fields) as one request; splits it when
/// refused. Returns each job's outcome, in `jobs` order.
fn run_batch(route: ApiRoute, window: &[Job], jobs: &[usize]) -> Vec<Outcome> {
    let work = |i: usize| window[i].work.as_ref().expect("planned jobs are valid");
    let mut body = work(jobs[0]).fields.clone();
    let texts: Vec<Value> = jobs
        .iter()
        .map(|&i| Value::String(work(i).text.clone().unwrap_or_default()))
        .collect();
    // One text goes as a string, so its error names `input` as it would alone.
    let input = match <[Value; 1]>::try_from(texts) {
        Ok([one]) => one,
        Err(many) => Value::Array(many),
    };
    body.insert("input".into(), input);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let res = call("POST", route.path(), &bytes);
    if res.status != 200 {
        if jobs.len() > 1 {
            let (a, b) = jobs.split_at(jobs.len() / 2);
            let mut out = run_batch(route, window, a);
            out.extend(run_batch(route, window, b));
            return out;
        }
        return vec![Err((res.status, error_object(&res.body)))];
    }
    let listed = match serde_json::from_slice::<Listed>(&res.body) {
        Ok(l) if l.data.len() == jobs.len() => l,
        _ => {
            let e = ApiError::internal("the API's answer did not list one result per input");
            return jobs.iter().map(|_| error_outcome(&e)).collect();
        }
    };
    let truncated = listed.usage.and_then(|u| u.truncated_inputs);
    // From the body, not `res.model`: the body is the API's public contract.
    let model = Value::String(format!("{}@{}", listed.model, listed.model_version));
    listed
        .data
        .into_iter()
        .enumerate()
        .map(|(i, mut element)| {
            // Its place in our request, which means nothing to the line.
            element.remove("index");
            element.insert("model".into(), model.clone());
            if let Some(t) = &truncated {
                element.insert("truncated".into(), Value::Bool(t.contains(&i)));
            }
            Ok(element)
        })
        .collect()
}

#[derive(Deserialize)]
struct Completion {
    model: String,
    choices: Vec<Choice>,
    usage: Value,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Value,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: String,
}

fn run_chat(job: &Job) -> Outcome {
    let work = job.work.as_ref().expect("planned jobs are valid");
    let bytes = serde_json::to_vec(&work.fields).unwrap_or_default();
    let res = call("POST", ApiRoute::Chat.path(), &bytes);
    if res.status != 200 {
        return Err((res.status, error_object(&res.body)));
    }
    let Ok(mut c) = serde_json::from_slice::<Completion>(&res.body) else {
        return error_outcome(&ApiError::internal(
            "the API's answer was not a chat completion",
        ));
    };
    let Some(choice) = c.choices.pop() else {
        return error_outcome(&ApiError::internal("the API's answer had no choice"));
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(c.model));
    out.insert("content".into(), Value::String(choice.message.content));
    out.insert("finish_reason".into(), choice.finish_reason);
    out.insert("usage".into(), c.usage);
    Ok(out)
}

fn run_unit(route: ApiRoute, window: &[Job], unit: &Unit) -> Vec<Outcome> {
    match route {
        ApiRoute::Chat => unit.jobs.iter().map(|&i| run_chat(&window[i])).collect(),
        ApiRoute::Classify | ApiRoute::Embed => run_batch(route, window, &unit.jobs),
    }
}

/// Runs a window of jobs on `threads` threads; outcomes come back in window
/// order. `tick(done, failed)` is called as lines finish.
pub fn process(
    route: ApiRoute,
    window: &[Job],
    threads: usize,
    tick: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = window
        .iter()
        .map(|job| job.work.as_ref().err().map(error_outcome))
        .collect();
    let invalid = outcomes.iter().filter(|o| o.is_some()).count();
    if invalid > 0 {
        tick(invalid, invalid);
    }
    let units = plan(route, window);
    let next = AtomicUsize::new(0);
    let finished = Mutex::new(Vec::new());
    let worker = || {
        while let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
            let results = run_unit(route, window, unit);
            tick(results.len(), results.iter().filter(|r| r.is_err()).count());
            let mut finished = finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.extend(unit.jobs.iter().copied().zip(results));
        }
    };
    let threads = threads.min(units.len()).max(1);
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                // The main thread's stack size: loading a model optimizes
                // its graph, which may run here first.
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(s, worker)
                    .expect("spawning a worker thread");
            }
        });
    }
    for (i, outcome) in finished.into_inner().unwrap_or_else(|e| e.into_inner()) {
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| error_outcome(&ApiError::internal("line not processed"))))
        .collect()
}

#[derive(Serialize)]
struct OutputLine<'a> {
    id: &'a Value,
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
    #[serde(flatten)]
    result: Option<&'a Map<String, Value>>,
}

/// The JSON line for `job`, without its newline.
pub fn output_line(job: &Job, outcome: &Outcome) -> String {
    let line = match outcome {
        Ok(result) => OutputLine {
            id: &job.id,
            line: job.line,
            status: None,
            error: None,
            result: Some(result),
        },
        Err((status, error)) => OutputLine {
            id: &job.id,
            line: job.line,
            status: Some(*status),
            error: Some(error),
            result: None,
        },
    };
    serde_json::to_string(&line).unwrap_or_else(|e| {
        serde_json::json!({"line": job.line, "status": 500, "error": {"message": e.to_string()}})
            .to_string()
    })
}
