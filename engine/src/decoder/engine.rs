//! A Llama-family decoder run from its packed weights ([`super::format`]):
//! token embedding, pre-norm blocks of RMSNorm, rotary grouped-query
//! attention with a key/value cache and a SwiGLU MLP, a final RMSNorm and
//! the output head (tied to the embedding or not).
//!
//! The model ([`Decoder`]) is immutable and borrows its weights from the
//! embedded bytes, so one copy serves every generation of an isolate; each
//! generation owns its [`KvCache`] ([`super::kv`]). A prompt is one pass over all its tokens
//! (matrix-matrix products), each new token one single-row pass.

use thiserror::Error;

use super::format::{Config, Header, Matrix as MatrixSpec, Part, RopeStyle, Weights, MAGIC};
use super::kv::KvCache;
use crate::kernels;
use crate::kernels::blocks::Quantized;
use crate::kernels::panels::{self, PanelKind, Panels};
use crate::packed::{self, Data, FormatError};

#[derive(Debug, Error, PartialEq)]
pub enum DecoderError {
    /// The packed bytes are not a decoder this engine runs (a build bug).
    #[error("malformed packed decoder: {0}")]
    Malformed(#[from] FormatError),
    #[error("no tokens to feed")]
    NoTokens,
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    /// A vocabulary slice asked for a row it does not hold.
    #[error("token id {token} is not in this vocabulary slice's rows {first}..{end}")]
    TokenNotInSlice {
        token: u32,
        first: usize,
        end: usize,
    },
    #[error("{needed} tokens exceed the model's context of {context}")]
    ContextFull { needed: usize, context: usize },
    /// A shard was given the other kind of input (token ids to one that
    /// does not hold the embedding, or hidden states to one that does), or
    /// hidden states that are not whole rows.
    #[error("this part of the model takes {expected}")]
    WrongInput { expected: &'static str },
}

/// One sequence of a batched pass ([`Decoder::stage_batch`]): its cache,
/// and what it is fed after the positions the cache holds.
pub struct Step<'a, 'c> {
    pub cache: &'c mut KvCache,
    pub input: StageInput<'a>,
}

/// What one part of a model is fed: token ids (the part that holds the
/// embedding) or the previous part's hidden states (`rows x dims`).
#[derive(Debug, Clone, Copy)]
pub enum StageInput<'a> {
    Tokens(&'a [u32]),
    Hidden(&'a [f32]),
}

/// A weight matrix, one row per output, in place in the packed bytes.
#[derive(Debug)]
pub(super) enum Matrix {
    F32 {
        values: &'static [f32],
        cols: usize,
        /// The tiled float kernel adds a bias; these models have none.
        zeros: Vec<f32>,
    },
    I8Rows {
        values: &'static [i8],
        scales: &'static [f32],
        cols: usize,
    },
    /// GGUF's blocks (Q8_0, Q4_1, Q4_K, ...) in panels of four rows:
    /// activations quantized per block.
    Panels(Panels<'static>),
}

/// The rows a matrix multiplies, quantized per block at most once however
/// many block matrices read them (q, k and v share one input).
pub(super) struct Input<'a> {
    x: &'a [f32],
    quantized: &'a mut Quantized,
    ready: bool,
}

impl<'a> Input<'a> {
    pub(super) fn new(x: &'a [f32], quantized: &'a mut Quantized) -> Self {
        Input {
            x,
            quantized,
            ready: false,
        }
    }

    fn quantized(&mut self, k: usize) -> &Quantized {
        if !self.ready || self.quantized.width() != k {
            self.quantized.quantize(self.x, k);
            self.ready = true;
        }
        self.quantized
    }
}

impl Matrix {
    pub(super) fn load(
        data: &Data,
        spec: &MatrixSpec,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<Self, FormatError> {
        if spec.rows != rows || spec.cols != cols {
            return Err(FormatError(format!(
                "{what} is {}x{}, the config says {rows}x{cols}",
                spec.rows, spec.cols
            )));
        }
        let n = rows * cols;
        let named = |e: FormatError| FormatError(format!("{what}: {e}"));
        Ok(match &spec.weights {
            Weights::F32 { values } => {
                // The tiled float kernel's shape (reference models only).
                if cols % 8 != 0 || rows % 4 != 0 {
                    return Err(FormatError(format!(
                        "{what}: float32 {rows}x{cols} is not a multiple of 4x8"
                    )));
                }
                Matrix::F32 {
                    values: data.f32s(*values, n).map_err(named)?,
                    cols,
                    zeros: vec![0.0; rows],
                }
            }
            Weights::I8Rows { values, scales } => Matrix::I8Rows {
                values: data.i8s(*values, n).map_err(named)?,
                scales: data.f32s(*scales, rows).map_err(named)?,
                cols,
            },
            Weights::Q8Panels { panels } => {
                Self::panels(data, *panels, PanelKind::Q8, rows, cols, what)?
            }
            Weights::Q4_1Panels { panels } => {
                Self::panels(data, *panels, PanelKind::Q4_1, rows, cols, what)?
            }
            Weights::Panels { kind, panels } => {
                Self::panels(data, *panels, *kind, rows, cols, what)?
            }
        })
    }

    fn panels(
        data: &Data,
        span: crate::packed::Span,
        kind: PanelKind,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<Self, FormatError> {
        whole_blocks(cols, kind.span(), what)?;
        let bytes = data
            .u8s(span, kind.matrix_bytes(rows, cols))
            .map_err(|e| FormatError(format!("{what}: {e}")))?;
        Panels::new(kind, bytes, rows, cols)
            .map(Matrix::Panels)
            .ok_or_else(|| FormatError(format!("{what}: not a {rows}x{cols} matrix in panels")))
    }

    /// `out = x W^T` for the rows of `x`.
    pub(super) fn apply(&self, x: &mut Input, out: &mut [f32]) {
        match self {
            Matrix::F32 {
                values,
                cols,
                zeros,
            } => kernels::linear_f32(x.x, *cols, values, zeros, out),
            Matrix::I8Rows {
                values,
                scales,
                cols,
            } => kernels::rows::linear(x.x, *cols, values, scales, out),
            Matrix::Panels(w) => panels::linear(x.quantized(w.cols()), w, out),
        }
    }

    /// Row `r`, dequantized (a token's embedding).
    pub(super) fn row(&self, r: usize, out: &mut [f32]) {
        match self {
            Matrix::F32 { values, cols, .. } => {
                out.copy_from_slice(&values[r * cols..(r + 1) * cols])
            }
            Matrix::I8Rows {
                values,
                scales,
                cols,
            } => {
                let scale = scales[r];
                for (o, &q) in out.iter_mut().zip(&values[r * cols..(r + 1) * cols]) {
                    *o = f32::from(q) * scale;
                }
            }
            Matrix::Panels(w) => w.row(r, out),
        }
    }
}

/// Adds `bias` to every row of `x` (rows of `bias.len()`).
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        kernels::add(row, bias);
    }
}

fn whole_blocks(cols: usize, span: usize, what: &str) -> Result<(), FormatError> {
    if cols % span == 0 {
        Ok(())
    } else {
        Err(FormatError(format!(
            "{what}: {cols} columns are not whole blocks of {span}"
        )))
    }
}

#[derive(Debug)]
struct Block {
    attention_norm: &'static [f32],
    q: Matrix,
    k: Matrix,
    v: Matrix,
    /// q, k, v's biases (Qwen2), or none.
    qkv_bias: Option<[&'static [f32]; 3]>,
    o: Matrix,
    mlp_norm: &'static [f32],
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// A loaded decoder, or one part of one (a shard): the config and views
/// into the packed weights.
#[derive(Debug)]
pub struct Decoder {
    config: Config,
    part: Part,
    embedding: Option<Matrix>,
    blocks: Vec<Block>,
    /// The final norm and the head, in a part that predicts (the head is
    /// `None` when tied to the embedding).
    final_norm: Option<&'static [f32]>,
    head: Option<Matrix>,
    /// `theta^(-2i / head_dim)` for each pair, in float64 as the reference
    /// tables were computed, so the angles round to the same float32.
    inv_freq: Vec<f64>,
}

/// The most rows a pass runs through the blocks at once: a longer input (a
/// prompt, or many conversations' rows) goes through in windows of this
/// many, so the activations a pass holds stay bounded (about 29 KB a row
/// for SmolLM2: 3.7 MB at 128) whatever the prompt's length. In one window
/// a 1,024-token prompt held 24 MB of them, room a shard's memory plan
/// does not have. Every product computes each row alone and attention
/// reads the cache, so the rows come out bit for bit as in one window; and
/// 128 rows still share each weight read 32 times over in the four-row
/// tiles.
pub const STAGE_ROWS: usize = 128;

/// The most activation bytes a window holds ([`stage_rows`]): SmolLM2's
/// 128 rows (4.6 MB) fit, a wider model's window is cut to fit, so that a
/// shard's room goes to layers. Qwen2.5-1.5B's 128 rows held 19.5 MB, and
/// no two of its ~26 MB layers (held twice: the Worker's copy and the
/// module's) then fit one isolate beside them: 28 layer shards, more
/// Workers than a request may reach.
pub const STAGE_BYTES: u64 = 6 << 20;

/// The rows of a window for a model of config `c`: [`STAGE_ROWS`], halved
/// (to 8 at the least) until they hold at most [`STAGE_BYTES`]. A shard and
/// the front that cuts passes into pieces compute it alike.
pub fn stage_rows(c: &Config) -> usize {
    let mut rows = STAGE_ROWS;
    while rows > 8 && rows as u64 * stage_row_bytes(c) > STAGE_BYTES {
        rows /= 2;
    }
    rows
}

/// The most sequences a pass of a part that predicts should run at once
/// (a shard's batches keep to it): each holds a row of logits twice (the
/// head's output, then its own), 196 KB a row for SmolLM2, so 33
/// conversations held 13 MB. The shard plans count this many
/// (`pipeline/src/plan.rs`).
pub const PREDICT_ROWS: usize = 16;

/// Bytes one row holds while a pass runs it (see [`STAGE_ROWS`]): its
/// activations through a block, its quantized copy for the integer
/// products, and the row in flight as the pass's input and output. What a
/// shard's plan counts per row of a window.
pub fn stage_row_bytes(c: &Config) -> u64 {
    let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let activations = 3 * c.dims + 2 * qd + 2 * kvd + 2 * c.ffn;
    let widest = c.dims.max(qd).max(c.ffn);
    (4 * (activations + widest + 2 * c.dims)) as u64
}

impl Decoder {
    /// Reads the header and checks every array once (shapes, bounds,
    /// alignment), so running never indexes out of bounds. Microseconds:
    /// nothing is copied.
    pub fn parse(bytes: &'static [u8]) -> Result<Decoder, DecoderError> {
        Ok(Self::parse_inner(bytes)?)
    }

    fn parse_inner(bytes: &'static [u8]) -> Result<Decoder, FormatError> {
        let (h, data): (Header, Data) = packed::open(bytes, MAGIC, "decoder")?;
        let (c, part) = (h.config, h.part);
        if c.dims == 0
            || c.heads == 0
            || c.kv_heads == 0
            || c.heads % c.kv_heads != 0
            || c.head_dim == 0
            || c.head_dim % 2 != 0
            || c.vocab == 0
            || c.context == 0
            || c.rope.theta.is_nan()
            || c.rope.theta <= 1.0
        {
            return Err(FormatError(format!("bad config {c:?}")));
        }
        let tied = part.predicts && h.head.is_none();
        if part.first_layer > part.end_layer
            || part.end_layer > part.model_layers
            || h.layers.len() != part.end_layer - part.first_layer
            || (part.is_whole() && h.layers.is_empty())
            || h.embedding.is_some() != (part.embeds || tied)
            || h.final_norm.is_some() != part.predicts
            || (!part.predicts && h.head.is_some())
        {
            return Err(FormatError(format!(
                "{part:?} does not match the packed parts ({} layers, embedding {}, final norm {}, head {})",
                h.layers.len(),
                h.embedding.is_some(),
                h.final_norm.is_some(),
                h.head.is_some()
            )));
        }
        let (d, qd, kvd) = (c.dims, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let floats = |span, n, what: &str| {
            data.f32s(span, n)
                .map_err(|e| FormatError(format!("{what}: {e}")))
        };
        let norm = |span, what: &str| floats(span, d, what);
        let mut blocks = Vec::with_capacity(h.layers.len());
        for (l, i) in h.layers.iter().zip(part.first_layer..) {
            let m = |spec, rows, cols, what: &str| {
                Matrix::load(&data, spec, rows, cols, &format!("layer {i} {what}"))
            };
            let qkv_bias = match (l.q_bias, l.k_bias, l.v_bias) {
                (None, None, None) => None,
                (Some(q), Some(k), Some(v)) => Some([
                    floats(q, qd, &format!("layer {i} q bias"))?,
                    floats(k, kvd, &format!("layer {i} k bias"))?,
                    floats(v, kvd, &format!("layer {i} v bias"))?,
                ]),
                _ => {
                    return Err(FormatError(format!(
                        "layer {i}: biases on some of q, k, v but not all"
                    )))
                }
            };
            blocks.push(Block {
                attention_norm: norm(l.attention_norm, "attention norm")?,
                q: m(&l.q, qd, d, "q")?,
                k: m(&l.k, kvd, d, "k")?,
                v: m(&l.v, kvd, d, "v")?,
                qkv_bias,
                o: m(&l.o, d, qd, "o")?,
                mlp_norm: norm(l.mlp_norm, "mlp norm")?,
                gate: m(&l.gate, c.ffn, d, "gate")?,
                up: m(&l.up, c.ffn, d, "up")?,
                down: m(&l.down, d, c.ffn, "down")?,
            });
        }
        let half = c.head_dim / 2;
        let rope_factors = h
            .rope_factors
            .map(|span| floats(span, half, "rope factors"))
            .transpose()?;
        if let Some(f) = &rope_factors {
            if let Some(bad) = f.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(FormatError(format!("a rope factor of {bad}")));
            }
        }
        Ok(Decoder {
            embedding: h
                .embedding
                .as_ref()
                .map(|m| Matrix::load(&data, m, c.vocab, d, "embedding"))
                .transpose()?,
            head: h
                .head
                .as_ref()
                .map(|m| Matrix::load(&data, m, c.vocab, d, "head"))
                .transpose()?,
            final_norm: h
                .final_norm
                .map(|span| norm(span, "final norm"))
                .transpose()?,
            blocks,
            inv_freq: (0..half)
                .map(|i| {
                    let f = 1.0 / c.rope.theta.powf(i as f64 * 2.0 / c.head_dim as f64);
                    match &rope_factors {
                        Some(factors) => f / f64::from(factors[i]),
                        None => f,
                    }
                })
                .collect(),
            config: c,
            part,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decoder blocks (of this part).
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Which part of the model this is (all of it, or a shard).
    pub fn part(&self) -> &Part {
        &self.part
    }

    /// An empty cache (no token seen) for this part's layers.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.blocks.len(),
            self.config.kv_heads * self.config.head_dim,
        )
    }

    /// Feeds `tokens` after the ones in `cache` (one pass for all of them),
    /// extends the cache, and returns the logits that predict the next
    /// token. On an error the cache is unchanged. Needs the whole model.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, DecoderError> {
        self.whole()?;
        self.run(cache, StageInput::Tokens(tokens), false)
    }

    /// As [`Decoder::forward`], with the logits of every position fed
    /// (`tokens.len() x vocab`): what scoring a text (perplexity) needs.
    pub fn forward_all(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, DecoderError> {
        self.whole()?;
        self.run(cache, StageInput::Tokens(tokens), true)
    }

    /// One part's pass (a shard's): its input after the ones in `cache`
    /// through its blocks, giving the next token's logits if the part
    /// predicts, else the hidden states of every row fed (for the next
    /// part). Chaining every part of a model gives what [`Decoder::forward`]
    /// gives with the whole of it, bit for bit.
    pub fn stage(&self, cache: &mut KvCache, input: StageInput) -> Result<Vec<f32>, DecoderError> {
        self.run(cache, input, false)
    }

    fn whole(&self) -> Result<(), DecoderError> {
        if self.part.is_whole() {
            Ok(())
        } else {
            Err(DecoderError::WrongInput {
                expected: "its part of a pass (Decoder::stage), not a whole one",
            })
        }
    }

    /// How many rows `input` brings, once checked against this part: token
    /// ids within the vocabulary for the first part, whole rows of hidden
    /// states for the others.
    fn rows_in(&self, input: StageInput) -> Result<usize, DecoderError> {
        let c = &self.config;
        match (input, &self.embedding, self.part.embeds) {
            (StageInput::Tokens(tokens), Some(_), true) => {
                if tokens.is_empty() {
                    return Err(DecoderError::NoTokens);
                }
                if let Some(&token) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
                    return Err(DecoderError::TokenOutOfRange {
                        token,
                        vocab: c.vocab,
                    });
                }
                Ok(tokens.len())
            }
            (StageInput::Hidden(h), _, false) => {
                if h.is_empty() {
                    Err(DecoderError::NoTokens)
                } else if h.len() % c.dims != 0 {
                    Err(DecoderError::WrongInput {
                        expected: "whole rows of hidden states",
                    })
                } else {
                    Ok(h.len() / c.dims)
                }
            }
            (_, _, true) => Err(DecoderError::WrongInput {
                expected: "token ids",
            }),
            (_, _, false) => Err(DecoderError::WrongInput {
                expected: "hidden states",
            }),
        }
    }

    /// Appends rows `from..from + n` of a checked `input` ([`Self::rows_in`])
    /// to `x`: looked up from the tokens, or the previous part's hidden
    /// states. A window's rows only: a long prompt is never copied whole.
    fn append_rows(&self, input: StageInput, from: usize, n: usize, x: &mut Vec<f32>) {
        let d = self.config.dims;
        match (input, &self.embedding) {
            (StageInput::Tokens(tokens), Some(embedding)) => {
                for &t in &tokens[from..from + n] {
                    let at = x.len();
                    x.resize(at + d, 0.0);
                    embedding.row(t as usize, &mut x[at..]);
                }
            }
            (StageInput::Hidden(h), _) => x.extend_from_slice(&h[from * d..(from + n) * d]),
            (StageInput::Tokens(_), None) => unreachable!("checked by rows_in"),
        }
    }

    fn run(
        &self,
        cache: &mut KvCache,
        input: StageInput,
        all: bool,
    ) -> Result<Vec<f32>, DecoderError> {
        let mut one = [Step { cache, input }];
        let mut results = self.run_batch(&mut one, all);
        results.pop().unwrap_or(Err(DecoderError::NoTokens))
    }

    /// One pass over several sequences at once (a shard's concurrent
    /// conversations): every matrix product runs on the rows of all of
    /// them, so each weight is read once per pass, not once per sequence;
    /// rotary positions and attention stay each sequence's own. A
    /// sequence's result is bit for bit what [`Decoder::stage`] gives it
    /// alone (every product computes a row the same way whatever rows share
    /// its tile), and one sequence's bad input fails it alone, its cache
    /// unchanged.
    pub fn stage_batch(&self, steps: &mut [Step]) -> Vec<Result<Vec<f32>, DecoderError>> {
        self.run_batch(steps, false)
    }

    fn run_batch(&self, steps: &mut [Step], all: bool) -> Vec<Result<Vec<f32>, DecoderError>> {
        let c = &self.config;
        let d = c.dims;
        let mut results: Vec<Result<Vec<f32>, DecoderError>> = Vec::with_capacity(steps.len());
        // The sequences that run: which step, its rows, how many of them
        // went through already.
        let mut seqs: Vec<(usize, usize, usize)> = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let fed = self.rows_in(step.input).and_then(|rows| {
                let needed = step.cache.len + rows;
                if needed > c.context || step.cache.layers.len() != self.blocks.len() {
                    Err(DecoderError::ContextFull {
                        needed,
                        context: c.context,
                    })
                } else {
                    Ok(rows)
                }
            });
            match fed {
                Ok(rows) => {
                    seqs.push((i, rows, 0));
                    // Sized once: an output grown window by window would
                    // hold up to twice its bytes.
                    let floats = match (self.final_norm.is_some(), all) {
                        (false, _) => rows * d,
                        (true, true) => rows * c.vocab,
                        (true, false) => c.vocab,
                    };
                    results.push(Ok(Vec::with_capacity(floats)));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let window_rows = stage_rows(c);
        let mut x = Vec::with_capacity(window_rows.min(seqs.iter().map(|s| s.1).sum()) * d);
        loop {
            // The next window: each sequence's next rows, in order, while
            // it has room; (step, first row in `x`, rows, positions before).
            x.clear();
            let mut window: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(seqs.len());
            // Sequences whose last row is in this window (they predict).
            let mut ending: Vec<usize> = Vec::with_capacity(seqs.len());
            for (i, rows, done) in seqs.iter_mut() {
                let (at, left) = (x.len() / d, *rows - *done);
                let take = left.min(window_rows - at);
                if take == 0 {
                    continue;
                }
                window.push((*i, at, take, steps[*i].cache.len));
                self.append_rows(steps[*i].input, *done, take, &mut x);
                *done += take;
                if take == left {
                    ending.push(window.len() - 1);
                }
            }
            if window.is_empty() {
                return results;
            }
            self.blocks_over(&mut x, steps, &window);
            let (Some(final_norm), Some(head)) = (
                self.final_norm,
                self.head.as_ref().or(self.embedding.as_ref()),
            ) else {
                // Not the last part: the next one continues from these rows.
                for &(i, start, rows, _) in &window {
                    if let Ok(out) = &mut results[i] {
                        out.extend_from_slice(&x[start * d..(start + rows) * d]);
                    }
                }
                continue;
            };
            // Only each sequence's last position predicts its next token
            // (every position, for scoring).
            let picked: Vec<(usize, usize, usize)> = match all {
                true => window
                    .iter()
                    .map(|&(i, start, rows, _)| (i, start, rows))
                    .collect(),
                false => ending
                    .iter()
                    .map(|&w| (window[w].0, window[w].1 + window[w].2 - 1, 1))
                    .collect(),
            };
            if picked.is_empty() {
                continue;
            }
            let mut last = Vec::with_capacity(picked.iter().map(|p| p.2).sum::<usize>() * d);
            for &(_, start, rows) in &picked {
                last.extend_from_slice(&x[start * d..(start + rows) * d]);
            }
            kernels::rms_norm(&mut last, final_norm, c.norm_eps);
            let mut logits = vec![0.0f32; last.len() / d * c.vocab];
            head.apply(
                &mut Input::new(&last, &mut Quantized::default()),
                &mut logits,
            );
            let mut at = 0;
            for &(i, _, rows) in &picked {
                if let Ok(out) = &mut results[i] {
                    out.extend_from_slice(&logits[at * c.vocab..(at + rows) * c.vocab]);
                }
                at += rows;
            }
        }
    }

    /// One window's rows `x` through every block: `window` says whose rows
    /// they are ((step, first row, rows, positions before)); each step's
    /// cache takes their keys and values.
    fn blocks_over(
        &self,
        x: &mut [f32],
        steps: &mut [Step],
        window: &[(usize, usize, usize, usize)],
    ) {
        let c = &self.config;
        let d = c.dims;
        let s = x.len() / d;
        let (qd, kvd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &(_, _, rows, past) in window {
            self.angles(past, rows, &mut cos, &mut sin);
        }
        let mut h = vec![0.0f32; s * d];
        let (mut q, mut k, mut v) = (vec![0.0; s * qd], vec![0.0; s * kvd], vec![0.0; s * kvd]);
        let mut attended = vec![0.0f32; s * qd];
        let mut out = vec![0.0f32; s * d];
        let (mut gate, mut up) = (vec![0.0f32; s * c.ffn], vec![0.0f32; s * c.ffn]);
        let mut scratch = Quantized::default();
        for (l, block) in self.blocks.iter().enumerate() {
            h.copy_from_slice(x);
            kernels::rms_norm(&mut h, block.attention_norm, c.norm_eps);
            let mut input = Input::new(&h, &mut scratch);
            block.q.apply(&mut input, &mut q);
            block.k.apply(&mut input, &mut k);
            block.v.apply(&mut input, &mut v);
            if let Some([qb, kb, vb]) = block.qkv_bias {
                add_rows(&mut q, qb);
                add_rows(&mut k, kb);
                add_rows(&mut v, vb);
            }
            self.rotate(&mut q, &cos, &sin);
            self.rotate(&mut k, &cos, &sin);
            for &(i, start, rows, past) in window {
                let (keys, values) = &mut steps[i].cache.layers[l];
                keys.extend_from_slice(&k[start * kvd..(start + rows) * kvd]);
                values.extend_from_slice(&v[start * kvd..(start + rows) * kvd]);
                self.attend(
                    &q[start * qd..(start + rows) * qd],
                    keys,
                    values,
                    past,
                    &mut attended[start * qd..(start + rows) * qd],
                );
            }
            block
                .o
                .apply(&mut Input::new(&attended, &mut scratch), &mut out);
            kernels::add(x, &out);

            h.copy_from_slice(x);
            kernels::rms_norm(&mut h, block.mlp_norm, c.norm_eps);
            let mut input = Input::new(&h, &mut scratch);
            block.gate.apply(&mut input, &mut gate);
            block.up.apply(&mut input, &mut up);
            kernels::swiglu(&mut gate, &up);
            block
                .down
                .apply(&mut Input::new(&gate, &mut scratch), &mut out);
            kernels::add(x, &out);
        }
        for &(i, _, rows, _) in window {
            steps[i].cache.len += rows;
        }
    }

    /// Appends cos and sin of every pair's angle at positions
    /// `start..start + n` (`n x head_dim / 2` each).
    fn angles(&self, start: usize, n: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        for pos in start..start + n {
            for &f in &self.inv_freq {
                let a = pos as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
    }

    /// Rotates every head of every row of `x` (row `i` at position
    /// `start + i`, whose angles are row `i` of `cos` / `sin`).
    fn rotate(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let per_row = x.len() / (cos.len() / half);
        for (row, (c, s)) in x
            .chunks_exact_mut(per_row)
            .zip(cos.chunks_exact(half).zip(sin.chunks_exact(half)))
        {
            for head in row.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (a, b) = match self.config.rope.style {
                        RopeStyle::HalfSplit => (i, i + half),
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (xa, xb) = (head[a], head[b]);
                    // x * cos + rotate(x) * sin, as the reference graph adds them.
                    head[a] = xa * c[i] + (-xb) * s[i];
                    head[b] = xb * c[i] + xa * s[i];
                }
            }
        }
    }

    /// Causal grouped-query attention of the new rows of `q` (row `i` at
    /// position `past + i`) over the cached keys and values.
    fn attend(&self, q: &[f32], keys: &[f32], values: &[f32], past: usize, out: &mut [f32]) {
        let c = &self.config;
        let (hd, group) = (c.head_dim, c.heads / c.kv_heads);
        let (qd, kvd) = (c.heads * hd, c.kv_heads * hd);
        // q is scaled before the product, as the reference graph does.
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let mut scores = Vec::with_capacity(past + q.len() / qd);
        let mut qh = vec![0.0f32; hd];
        for (i, (q_row, out_row)) in q.chunks_exact(qd).zip(out.chunks_exact_mut(qd)).enumerate() {
            let seen = past + i + 1;
            for head in 0..c.heads {
                let kv = head / group;
                for (dst, &src) in qh.iter_mut().zip(&q_row[head * hd..(head + 1) * hd]) {
                    *dst = src * scale;
                }
                scores.clear();
                scores.extend(
                    (0..seen).map(|t| {
                        kernels::dot(&qh, &keys[t * kvd + kv * hd..t * kvd + (kv + 1) * hd])
                    }),
                );
                kernels::softmax(&mut scores);
                let o = &mut out_row[head * hd..(head + 1) * hd];
                o.fill(0.0);
                for (t, &p) in scores.iter().enumerate() {
                    let v = &values[t * kvd + kv * hd..t * kvd + (kv + 1) * hd];
                    for (acc, &vv) in o.iter_mut().zip(v) {
                        *acc += p * vv;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
