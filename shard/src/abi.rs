//! The C interface of the shard module, for its JavaScript entry: buffers
//! in linear memory that the entry fills and reads, and status codes (0 =
//! done; otherwise the message is at `error_ptr`/`error_len`). One isolate
//! runs one thread, so the state is a thread-local.

use std::cell::RefCell;

use crate::shard::{Input, Shard, ShardError};

struct State {
    shard: Shard,
    input: Vec<u8>,
    output: Vec<f32>,
    error: String,
    /// `cached` of the last pass opened.
    cached: usize,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        shard: Shard::new(0),
        input: Vec::new(),
        output: Vec::new(),
        error: String::new(),
        cached: 0,
    });
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// 0, or 1 with the error's text kept for `error_ptr`.
fn status(state: &mut State, result: Result<(), ShardError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            state.error = e.to_string();
            1
        }
    }
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
/// sessions; the shard's wrangler.toml passes it as `TOKEN_BUDGET`).
///
/// # Safety
/// `ptr` and `len` must be those of a `weights_alloc` call.
#[no_mangle]
pub unsafe extern "C" fn load(ptr: *const u8, len: usize, budget_tokens: usize) -> u32 {
    // SAFETY: the caller passes the leaked allocation of `weights_alloc`,
    // which lives for the rest of the instance.
    let weights: &'static [u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
    with(|s| {
        s.shard = Shard::new(budget_tokens);
        let r = s.shard.load(weights);
        status(s, r)
    })
}

/// The shard's config and part as JSON, at `error_ptr` / `error_len` (the
/// one text buffer), or the reason it has none.
#[no_mangle]
pub extern "C" fn info() -> u32 {
    with(|s| match s.shard.info() {
        Ok(info) => {
            s.error = serde_json::to_string(&info).unwrap_or_default();
            0
        }
        Err(e) => {
            s.error = e.to_string();
            1
        }
    })
}

/// The input buffer's first `count` little-endian words.
fn words(input: &[u8], count: usize) -> Vec<u32> {
    input
        .chunks_exact(4)
        .take(count)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Opens a pass of at most `tokens` fed tokens: its handle (> 0), or 0
/// with the reason in the error text. The input buffer holds its prompt
/// (`prompt_count` token ids) and then its scope (`scope_len` bytes of
/// UTF-8); `cached` then tells how much of the prompt its cache holds.
#[no_mangle]
pub extern "C" fn open(tokens: usize, prompt_count: usize, scope_len: usize) -> u32 {
    with(|s| {
        let prompt = words(&s.input, prompt_count);
        let from = (prompt_count * 4).min(s.input.len());
        let to = (from + scope_len).min(s.input.len());
        let scope = String::from_utf8_lossy(&s.input[from..to]).into_owned();
        match s.shard.open(tokens, &scope, &prompt) {
            Ok(opened) => {
                s.cached = opened.cached;
                opened.handle
            }
            Err(e) => {
                s.error = e.to_string();
                0
            }
        }
    })
}

/// How many of its prompt's first tokens the last opened pass's cache
/// holds: its first input starts there.
#[no_mangle]
pub extern "C" fn cached() -> usize {
    with(|s| s.cached)
}

/// Tokens a new pass may still reserve.
#[no_mangle]
pub extern "C" fn free_tokens() -> usize {
    with(|s| s.shard.free_tokens())
}

/// Ends pass `handle`; with `keep_count` > 0, keeps its cache for a later
/// prompt that starts with the `keep_count` token ids in the input buffer
/// (the ids it was fed).
#[no_mangle]
pub extern "C" fn close(handle: u32, keep_count: usize) {
    with(|s| {
        let keep = (keep_count > 0).then(|| words(&s.input, keep_count));
        s.shard.close(handle, keep.as_deref());
    })
}

/// A buffer of `bytes` for the next `step`'s input.
#[no_mangle]
pub extern "C" fn input_buffer(bytes: usize) -> *mut u8 {
    with(|s| {
        // u32 and f32 inputs: 4-byte aligned.
        s.input.clear();
        s.input.resize(bytes, 0);
        s.input.as_mut_ptr()
    })
}

/// Runs pass `handle` on the input buffer, its first row at position
/// `at`: `count` token ids (u32) when `tokens` is 1, else `count` floats of
/// hidden states. The result is in the output buffer.
#[no_mangle]
pub extern "C" fn step(handle: u32, at: usize, tokens: u32, count: usize) -> u32 {
    with(|s| {
        let result = if tokens == 1 {
            let ids = words(&s.input, count);
            s.shard.step(handle, at, Input::Tokens(&ids))
        } else {
            let hidden: Vec<f32> = words(&s.input, count)
                .into_iter()
                .map(f32::from_bits)
                .collect();
            s.shard.step(handle, at, Input::Hidden(&hidden))
        };
        let result = result.map(|out| s.output = out);
        status(s, result)
    })
}

#[no_mangle]
pub extern "C" fn output_ptr() -> *const f32 {
    with(|s| s.output.as_ptr())
}

#[no_mangle]
pub extern "C" fn output_len() -> usize {
    with(|s| s.output.len())
}

/// The last error's text (or `info`'s JSON), UTF-8.
#[no_mangle]
pub extern "C" fn error_ptr() -> *const u8 {
    with(|s| s.error.as_ptr())
}

#[no_mangle]
pub extern "C" fn error_len() -> usize {
    with(|s| s.error.len())
}
