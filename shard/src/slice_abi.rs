//! The C interface of a vocabulary slice (engine/src/decoder/vocab.rs), for
//! its JavaScript entry (shard/slice.mjs): the same module as a layer
//! shard's, loaded with a slice's weights (`EIVOCAB1`) instead. A slice
//! holds no state per request: it answers the embeddings of its rows and
//! the logits (or the best of them) of a final hidden state, so its calls
//! need no pass, no cache and no gate.
//!
//! Buffers as in [`crate::abi`]: the entry writes the input into
//! `slice_input(bytes)`, calls, and reads the output at `slice_out_ptr`
//! (`slice_out_len` floats; after the best logits, as many token ids) or an
//! error's text at `slice_text_ptr`.

use std::cell::RefCell;

use edgeinfer_engine::decoder::vocab::VocabSlice;
use edgeinfer_engine::decoder::MOST_BEST;
use serde::Serialize;

#[derive(Default)]
struct State {
    slice: Option<VocabSlice>,
    input: Vec<u32>,
    out: Vec<f32>,
    /// Floats of `out` that are the answer (logits, or embeddings); the ids
    /// of the best logits follow them.
    out_len: usize,
    text: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// What a slice tells its entry about itself.
#[derive(Serialize)]
struct Info<'a> {
    config: &'a edgeinfer_engine::decoder::format::Config,
    first: usize,
    end: usize,
}

fn fail(s: &mut State, message: String) -> u32 {
    s.text = message;
    1
}

/// Loads the slice written at `ptr` (from `crate::abi::weights_alloc`);
/// 0 with its info's JSON in the text buffer, or 1 with the reason.
///
/// # Safety
/// `ptr` and `len` must be those of a `weights_alloc` call.
#[no_mangle]
pub unsafe extern "C" fn slice_load(ptr: *const u8, len: usize) -> u32 {
    // SAFETY: the caller passes the leaked allocation of `weights_alloc`,
    // which lives for the rest of the instance.
    let weights: &'static [u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
    with(|s| match VocabSlice::parse(weights) {
        Ok(slice) => {
            let rows = slice.rows();
            s.text = serde_json::to_string(&Info {
                config: slice.config(),
                first: rows.start,
                end: rows.end,
            })
            .unwrap_or_default();
            s.slice = Some(slice);
            0
        }
        Err(e) => fail(s, format!("the slice's weights do not load: {e}")),
    })
}

/// A buffer of `bytes` for the next call's input (words: ids or floats).
#[no_mangle]
pub extern "C" fn slice_input(bytes: usize) -> *mut u8 {
    with(|s| {
        s.input.clear();
        s.input.resize(bytes.div_ceil(4), 0);
        s.input.as_mut_ptr().cast::<u8>()
    })
}

/// The embeddings of the `count` token ids in the input buffer (each one of
/// the slice's rows): 0 with `count x dims` floats out, or 1 with an error.
#[no_mangle]
pub extern "C" fn slice_embed(count: usize) -> u32 {
    with(|s| {
        let Some(slice) = &s.slice else {
            return fail(s, "the slice's weights are not loaded".into());
        };
        let ids = &s.input[..count.min(s.input.len())];
        match slice.embed(ids) {
            Ok(out) => {
                s.out_len = out.len();
                s.out = out;
                0
            }
            Err(e) => fail(s, e.to_string()),
        }
    })
}

/// The logits of the slice's rows for the `words` floats of final hidden
/// states in the input buffer (whole rows of `dims`): with `best` 0, every
/// row's logits (`rows x (end - first)` floats out); else each row's
/// `best` best (at most [`MOST_BEST`]), best first, `rows x best` floats
/// and then as many token ids (u32, the model's ids). 0, or 1 with an
/// error.
#[no_mangle]
pub extern "C" fn slice_logits(words: usize, best: usize) -> u32 {
    with(|s| {
        let Some(slice) = &s.slice else {
            return fail(s, "the slice's weights are not loaded".into());
        };
        let words = &s.input[..words.min(s.input.len())];
        // SAFETY: f32 and u32 have one size and alignment, and every bit
        // pattern of a u32 is an f32.
        let hidden: &[f32] =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<f32>(), words.len()) };
        let result = if best == 0 {
            slice.logits(hidden).map(|out| (out.len(), out))
        } else {
            slice.best(hidden, best.min(MOST_BEST)).map(|rows| {
                let top: Vec<_> = rows.into_iter().flatten().collect();
                let mut out: Vec<f32> = top.iter().map(|c| c.1).collect();
                out.extend(top.iter().map(|c| f32::from_bits(c.0)));
                (top.len(), out)
            })
        };
        match result {
            Ok((len, out)) => {
                s.out_len = len;
                s.out = out;
                0
            }
            Err(e) => fail(s, e.to_string()),
        }
    })
}

#[no_mangle]
pub extern "C" fn slice_out_ptr() -> *const f32 {
    with(|s| s.out.as_ptr())
}

#[no_mangle]
pub extern "C" fn slice_out_len() -> usize {
    with(|s| s.out_len)
}

#[no_mangle]
pub extern "C" fn slice_text_ptr() -> *const u8 {
    with(|s| s.text.as_ptr())
}

#[no_mangle]
pub extern "C" fn slice_text_len() -> usize {
    with(|s| s.text.len())
}
