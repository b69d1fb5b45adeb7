//! The C interface of the shard module, for its JavaScript entry: buffers
//! in linear memory that the entry fills and reads, status codes, and
//! answers as JSON in the one text buffer (`text_ptr`/`text_len`). One
//! isolate runs one thread, so the state is a thread-local. Times are the
//! entry's clock in ms (a float, as JavaScript has them).

use std::cell::RefCell;

use serde::Serialize;

use crate::gate::Millis;
use crate::shard::{Batch, Begun, Call, Input, Output, Ran, Shard, ShardError};

struct State {
    shard: Shard,
    /// What the entry writes: words (token ids, or the bits of hidden
    /// states), read in place.
    input: Vec<u32>,
    /// The last batch's outputs, each where `step_batch` said, until the
    /// next batch.
    outputs: Vec<Vec<f32>>,
    /// An error's message, or an answer's JSON.
    text: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        shard: Shard::new(0, 1),
        input: Vec::new(),
        outputs: Vec::new(),
        text: String::new(),
    });
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// A JavaScript time (ms) as the gate counts it: a clock that reads
/// nothing sensible counts as 0.
fn millis(now: f64) -> Millis {
    if now.is_finite() && now > 0.0 {
        now as Millis
    } else {
        0
    }
}

/// 0, or 1 with the error's text kept for `text_ptr`.
fn status(state: &mut State, result: Result<(), ShardError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            state.text = e.to_string();
            1
        }
    }
}

/// The answer to a request for a pass, as the entry reads it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    /// Its pass's handle, how much of its prompt the pass's cache holds,
    /// and how many tokens the shard keeps for every caller.
    Admitted {
        id: u32,
        cached: usize,
        public_tokens: usize,
    },
    /// Wait to be woken (its id is in `news`) or `ms` at most, then `poll`.
    Wait { id: u32, ms: u64 },
    /// Not admitted: the message for the caller, and when to retry (s).
    Refused {
        message: String,
        retry_after: Option<u32>,
    },
    /// Not a request of this instance: ask again with `begin`.
    Unknown {},
}

/// Writes `begun`'s answer as JSON to the text buffer.
fn answer(state: &mut State, begun: Begun, now: Millis) {
    let answer = match begun {
        Begun::Admitted(o) => Answer::Admitted {
            id: o.handle,
            cached: o.cached,
            public_tokens: o.public_tokens,
        },
        // At least 1 ms: a timer of 0 would ask again before anything
        // could change.
        Begun::Waiting { id, until } => Answer::Wait {
            id,
            ms: until.saturating_sub(now).max(1),
        },
        Begun::Refused {
            refusal,
            retry_after,
        } => Answer::Refused {
            message: refusal.to_string(),
            retry_after,
        },
        Begun::Unknown => Answer::Unknown {},
    };
    state.text = serde_json::to_string(&answer).unwrap_or_default();
}

/// Memory for the weights, 16-byte aligned as the packed container needs,
/// never freed (the model reads it in place for the isolate's life).
#[no_mangle]
pub extern "C" fn weights_alloc(len: usize) -> *mut u8 {
    let words = vec![0u128; len.div_ceil(16)];
    Box::leak(words.into_boxed_slice()).as_mut_ptr().cast()
}

/// Loads the weights written at `ptr` (from `weights_alloc(len)`); the open
/// passes will reserve at most `budget_tokens` in all: what the plan
/// budgeted the isolate's key/value caches for (pipeline/src/plan.rs, context x
/// sessions; the shard's wrangler.toml passes it as `TOKEN_BUDGET`). Ids
/// start at `first_id`: past every id an earlier instance of this isolate
/// handed out, which stubs may still hold.
///
/// # Safety
/// `ptr` and `len` must be those of a `weights_alloc` call.
#[no_mangle]
pub unsafe extern "C" fn load(
    ptr: *const u8,
    len: usize,
    budget_tokens: usize,
    first_id: u32,
) -> u32 {
    // SAFETY: the caller passes the leaked allocation of `weights_alloc`,
    // which lives for the rest of the instance.
    let weights: &'static [u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
    with(|s| {
        s.shard = Shard::new(budget_tokens, first_id);
        let r = s.shard.load(weights);
        status(s, r)
    })
}

/// Holds calls for the passes in step with them `hold_ms` per such pass at
/// most, `MERGE` times that on the first shard (`Shard::set_hold`; the
/// shard's `BATCH_HOLD_MS`, when set).
#[no_mangle]
pub extern "C" fn set_hold(hold_ms: u32) {
    with(|s| s.shard.set_hold(Millis::from(hold_ms)));
}

/// The shard's config, part and state as JSON in the text buffer, or the
/// reason it has none.
#[no_mangle]
pub extern "C" fn info() -> u32 {
    with(|s| match s.shard.info() {
        Ok(info) => {
            s.text = serde_json::to_string(&info).unwrap_or_default();
            0
        }
        Err(e) => {
            s.text = e.to_string();
            1
        }
    })
}

/// The input buffer's first `count` words (as many as it has).
fn words(input: &[u32], count: usize) -> &[u32] {
    &input[..count.min(input.len())]
}

/// Words as the floats whose bits they are, in place: a prompt's hidden
/// states are megabytes, and a copy is memory the shard's plan does not
/// have.
fn floats(words: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have one size and alignment, and every bit
    // pattern of a u32 is an f32.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f32>(), words.len()) }
}

/// Asks at `now` for a pass of at most `tokens` fed tokens. The input
/// buffer holds its prompt (`prompt_count` token ids) and then its scope
/// (`scope_len` bytes of UTF-8). 0 with the answer's JSON in the text
/// buffer (admitted, wait or refused), or 1 with an error.
#[no_mangle]
pub extern "C" fn begin(tokens: usize, prompt_count: usize, scope_len: usize, now: f64) -> u32 {
    with(|s| {
        let prompt = words(&s.input, prompt_count);
        let scope: Vec<u8> = s.input[prompt.len()..]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(scope_len)
            .collect();
        let scope = String::from_utf8_lossy(&scope).into_owned();
        let now = millis(now);
        match s.shard.begin(tokens, &scope, prompt, now) {
            Ok(begun) => {
                answer(s, begun, now);
                0
            }
            Err(e) => {
                s.text = e.to_string();
                1
            }
        }
    })
}

/// How late a timer fired, in ms; none (not a timer) when negative or not
/// a number.
fn lateness(late: f64) -> Option<Millis> {
    (late >= 0.0).then(|| millis(late))
}

/// Where request `id` (told to wait) stands at `now`: the answer's JSON in
/// the text buffer, as `begin`'s. `late`: how late the entry's timer woke
/// it (ms), or -1 when another request's end woke it.
#[no_mangle]
pub extern "C" fn poll(id: u32, now: f64, late: f64) {
    with(|s| {
        let now_ms = millis(now);
        let begun = s.shard.poll(id, now_ms, lateness(late));
        answer(s, begun, now_ms);
    })
}

/// Pass `id`'s caller is still there (its timer fired `late` ms after it
/// was due): 1, or 0 if the pass is not open.
#[no_mangle]
pub extern "C" fn touch(id: u32, now: f64, late: f64) -> u32 {
    with(|s| u32::from(s.shard.touch(id, millis(now), lateness(late).unwrap_or(0))))
}

/// A timer of the entry's fired at `now`, `late` ms after it was due.
#[no_mangle]
pub extern "C" fn tick(now: f64, late: f64) {
    with(|s| s.shard.tick(millis(now), lateness(late).unwrap_or(0)))
}

/// Ends request `id` at `now` (a pass, or a wait); with `keep_count` > 0,
/// keeps a pass's cache for a later prompt that starts with the
/// `keep_count` token ids in the input buffer (the ids it was fed).
#[no_mangle]
pub extern "C" fn close(id: u32, keep_count: usize, now: f64) {
    with(|s| {
        let keep = (keep_count > 0).then(|| words(&s.input, keep_count));
        s.shard.close(id, keep, millis(now));
    })
}

/// 1 with `{"wake": [ids], "ended": [ids]}` in the text buffer when the
/// last calls decided for others (requests to wake, passes the shard
/// ended), else 0.
#[no_mangle]
pub extern "C" fn news() -> u32 {
    with(|s| {
        let news = s.shard.take_news();
        if news.is_empty() {
            return 0;
        }
        s.text = serde_json::to_string(&news).unwrap_or_default();
        1
    })
}

/// A buffer of `bytes` for the next call's input.
#[no_mangle]
pub extern "C" fn input_buffer(bytes: usize) -> *mut u8 {
    with(|s| {
        // u32 and f32 inputs: words, 4-byte aligned.
        s.input.clear();
        s.input.resize(bytes.div_ceil(4), 0);
        s.input.as_mut_ptr().cast::<u8>()
    })
}

/// What became of one call of a batch, as the entry reads it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Its output: `len` floats at address `ptr`.
    Out { ptr: usize, len: usize },
    /// The best logits it asked for: `len` logits at address `ptr`, best
    /// first, then their `len` token ids (u32).
    Best { ptr: usize, len: usize },
    /// It failed alone, for this reason.
    Error { message: String },
    /// It did not run this time: ask again with it first.
    Later {},
}

/// A batch's outcomes, and how long the entry may hold the calls before it
/// asks again when none ran (it asks at once when another call comes).
#[derive(Serialize)]
struct Outcomes {
    outcomes: Vec<Outcome>,
    hold_ms: Option<u64>,
}

/// One record of a batch in the input buffer: pass, position, kind
/// (1: token ids, 0: hidden states), length in words, best logits asked
/// for (0: the whole row).
const RECORD: usize = 5;

/// Runs a batch of calls at `now` (see `Shard::step_batch`: the module
/// decides how many go together). The input buffer holds `count` records
/// of five little-endian words (handle, first row's position, 1 for token
/// ids or 0 for hidden states, length in words, best logits asked for),
/// then each record's input in that order (u32 ids or f32 bits). 0 with
/// `{"outcomes": [...], "hold_ms": ...}` in the text buffer, one outcome per
/// record (`out` or `best` at an address, valid until the next batch,
/// `error`, or `later`; after `later`, ask
/// again at once, or within `hold_ms` when it is set), or 1 with an error
/// when the buffer does not hold what the records say.
#[no_mangle]
pub extern "C" fn step_batch(count: usize, now: f64) -> u32 {
    with(|s| {
        let now = millis(now);
        let Some(inputs) = records(&s.input, count) else {
            s.text = format!("the input buffer does not hold {count} records and their inputs");
            return 1;
        };
        let calls: Vec<Call> = inputs
            .into_iter()
            .map(|(handle, at, input, best)| Call {
                handle,
                at,
                input,
                best,
            })
            .collect();
        let Batch { ran, hold } = s.shard.step_batch(&calls, now);
        s.outputs.clear();
        let outcomes: Vec<Outcome> = ran
            .into_iter()
            .map(|r: Ran| match r {
                Some(Ok(Output::Floats(out))) => {
                    let (ptr, len) = (out.as_ptr() as usize, out.len());
                    s.outputs.push(out);
                    Outcome::Out { ptr, len }
                }
                Some(Ok(Output::Best(top))) => {
                    let mut out: Vec<f32> = top.iter().map(|c| c.1).collect();
                    out.extend(top.iter().map(|c| f32::from_bits(c.0)));
                    let (ptr, len) = (out.as_ptr() as usize, top.len());
                    s.outputs.push(out);
                    Outcome::Best { ptr, len }
                }
                Some(Err(e)) => Outcome::Error {
                    message: e.to_string(),
                },
                None => Outcome::Later {},
            })
            .collect();
        let answer = Outcomes {
            outcomes,
            hold_ms: hold,
        };
        s.text = serde_json::to_string(&answer).unwrap_or_default();
        0
    })
}

/// The `count` records at the start of `input` and their inputs (read in
/// place), or none when the buffer is shorter than they say.
fn records(input: &[u32], count: usize) -> Option<Vec<(u32, usize, Input<'_>, usize)>> {
    let head = count.checked_mul(RECORD)?;
    let mut next = head;
    let mut out = Vec::with_capacity(count);
    for record in input.get(..head)?.chunks_exact(RECORD) {
        let [handle, at, kind, len, best] = [record[0], record[1], record[2], record[3], record[4]];
        let body = input.get(next..next.checked_add(len as usize)?)?;
        next += len as usize;
        let input = if kind == 1 {
            Input::Tokens(body)
        } else {
            Input::Hidden(floats(body))
        };
        out.push((handle, at as usize, input, best as usize));
    }
    Some(out)
}

/// The text buffer (an error's message, or JSON), UTF-8.
#[no_mangle]
pub extern "C" fn text_ptr() -> *const u8 {
    with(|s| s.text.as_ptr())
}

#[no_mangle]
pub extern "C" fn text_len() -> usize {
    with(|s| s.text.len())
}
