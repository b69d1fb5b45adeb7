//! The sentence encoder's transformer, run from its packed weights (see
//! [`format`]): embeddings, post-norm layers, mean pooling, L2 normalization.
//!
//! The weights stay where the module's data segment put them; loading is
//! parsing a small header and checking that every array is in bounds and
//! aligned, so a cold isolate pays microseconds, not a graph build, and the
//! weights are in linear memory once.

pub use crate::packed::Span;

pub mod format;

use crate::error::InputError;
use crate::kernels;
use crate::packed::{self, Data, FormatError};
use format::{Header, Linear, Norm, Weights, MAGIC};

/// A packed encoder, borrowed from the embedded bytes.
#[derive(Debug)]
pub struct Bert {
    data: Data,
    header: Header,
}

impl Bert {
    /// Reads the header and checks every array once, so that running never
    /// indexes out of bounds.
    pub fn parse(bytes: &'static [u8]) -> Result<Bert, FormatError> {
        let (header, data) = packed::open(bytes, MAGIC, "encoder")?;
        let bert = Bert { data, header };
        bert.validate()?;
        Ok(bert)
    }

    pub fn dims(&self) -> usize {
        self.header.dims
    }

    /// Rows in the token table: the valid range of `rows` in [`Bert::embed`].
    pub fn table_rows(&self) -> usize {
        self.header.embedding.rows
    }

    pub fn max_positions(&self) -> usize {
        self.header.max_positions
    }

    fn validate(&self) -> Result<(), FormatError> {
        let h = &self.header;
        let d = h.dims;
        let want = |span: Span, len: usize, what: &str| -> Result<(), FormatError> {
            match what {
                "u8" => self.data.u8s(span, len).map(|_| ()),
                _ => self.data.f32s(span, len).map(|_| ()),
            }
        };
        let norm = |n: &Norm| want(n.gamma, d, "f32").and(want(n.beta, d, "f32"));
        let linear = |l: &Linear, k: usize, n: usize| -> Result<(), FormatError> {
            if l.inputs != k || l.outputs != n || k % 8 != 0 || n % 4 != 0 {
                return Err(FormatError(format!(
                    "a {}x{} linear where {k}x{n} was expected",
                    l.inputs, l.outputs
                )));
            }
            want(l.bias, n, "f32")?;
            match &l.weights {
                Weights::Int8 { weight, scales } => {
                    want(*weight, k * n, "u8")?;
                    want(*scales, n, "f32")
                }
                Weights::Float { weight } => want(*weight, k * n, "f32"),
            }
        };
        if d == 0 || h.heads == 0 || d % h.heads != 0 || h.layers.is_empty() {
            return Err("bad dimensions".into());
        }
        want(h.embedding.table, h.embedding.rows * d, "u8")?;
        want(h.positions, h.max_positions * d, "f32")?;
        norm(&h.embedding_norm)?;
        for l in &h.layers {
            for x in [&l.q, &l.k, &l.v, &l.o] {
                linear(x, d, d)?;
            }
            linear(&l.up, d, h.ffn)?;
            linear(&l.down, h.ffn, d)?;
            norm(&l.attention_norm)?;
            norm(&l.output_norm)?;
        }
        Ok(())
    }

    // Every span was checked in `validate`; these cannot fail after it,
    // and an empty slice (never used) stands for the impossible error.
    fn u8s(&self, span: Span) -> &'static [u8] {
        self.data.u8s(span, span.len).unwrap_or_default()
    }

    fn f32s(&self, span: Span) -> &'static [f32] {
        self.data.f32s(span, span.len).unwrap_or_default()
    }

    fn i8s(&self, span: Span) -> &'static [i8] {
        self.data.i8s(span, span.len).unwrap_or_default()
    }

    /// The unit-length sentence embedding of one text, given the table row
    /// of each of its tokens (at most [`Bert::max_positions`], each below
    /// [`Bert::table_rows`]).
    pub fn embed(&self, rows: &[u32]) -> Result<Vec<f32>, InputError> {
        let h = &self.header;
        let d = h.dims;
        let t = rows.len();
        if t == 0 || t > h.max_positions {
            return Err(InputError(format!(
                "{t} tokens; 1 to {} fit",
                h.max_positions
            )));
        }
        let table = self.u8s(h.embedding.table);
        let positions = self.f32s(h.positions);
        let (scale, zero) = (h.embedding.scale, f32::from(h.embedding.zero_point));
        let mut x = Vec::with_capacity(t * d);
        for (pos, &row) in rows.iter().enumerate() {
            let row = row as usize;
            let q = table
                .get(row * d..(row + 1) * d)
                .ok_or_else(|| InputError(format!("token row {row} is outside the table")))?;
            let p = &positions[pos * d..(pos + 1) * d];
            x.extend(
                q.iter()
                    .zip(p)
                    .map(|(&q, &p)| (f32::from(q) - zero) * scale + p),
            );
        }
        self.norm(&mut x, &h.embedding_norm);

        let mut scratch = Scratch::default();
        for layer in &h.layers {
            let q = self.linear(&layer.q, &x, &mut scratch);
            let k = self.linear(&layer.k, &x, &mut scratch);
            let v = self.linear(&layer.v, &x, &mut scratch);
            let context = attention(&q, &k, &v, t, h.heads);
            let mut y = self.linear(&layer.o, &context, &mut scratch);
            kernels::add(&mut y, &x);
            self.norm(&mut y, &layer.attention_norm);
            x = y;
            let mut up = self.linear(&layer.up, &x, &mut scratch);
            kernels::gelu(&mut up);
            let mut y = self.linear(&layer.down, &up, &mut scratch);
            kernels::add(&mut y, &x);
            self.norm(&mut y, &layer.output_norm);
            x = y;
        }

        // Mean over tokens, then unit length (the graph clips the norm at 1e-12).
        let mut pooled = vec![0.0f32; d];
        for row in x.chunks_exact(d) {
            kernels::add(&mut pooled, row);
        }
        for v in &mut pooled {
            *v /= t as f32;
        }
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in &mut pooled {
            *v /= norm;
        }
        Ok(pooled)
    }

    fn norm(&self, x: &mut [f32], n: &Norm) {
        kernels::layer_norm(x, self.f32s(n.gamma), self.f32s(n.beta), self.header.eps);
    }

    fn linear(&self, l: &Linear, x: &[f32], scratch: &mut Scratch) -> Vec<f32> {
        let rows = x.len() / l.inputs;
        let mut out = vec![0.0; rows * l.outputs];
        let bias = self.f32s(l.bias);
        match &l.weights {
            Weights::Int8 { weight, scales } => {
                let scale = kernels::quantize(x, &mut scratch.quantized);
                kernels::linear_i8(
                    &scratch.quantized,
                    scale,
                    l.inputs,
                    self.i8s(*weight),
                    self.f32s(*scales),
                    bias,
                    &mut out,
                );
            }
            Weights::Float { weight } => {
                kernels::linear_f32(x, l.inputs, self.f32s(*weight), bias, &mut out)
            }
        }
        out
    }
}

/// Buffers reused across one text's layers.
#[derive(Default)]
struct Scratch {
    quantized: Vec<i16>,
}

/// Multi-head self-attention over `t` tokens (no padding: one text per
/// run). Per head, scores = Q K^T and context = P V run on the tiled float
/// kernel; K's rows and V^T's columns are padded with zeros to a multiple
/// of 8 tokens, the kernel's tile, and padded scores are zero after softmax.
fn attention(q: &[f32], k: &[f32], v: &[f32], t: usize, heads: usize) -> Vec<f32> {
    let d = q.len() / t;
    let hd = d / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let tp = t.next_multiple_of(8);
    let mut out = vec![0.0f32; t * d];
    let (mut qh, mut kh, mut vt) = (vec![0.0; t * hd], vec![0.0; tp * hd], vec![0.0; hd * tp]);
    let (mut scores, mut context) = (vec![0.0; t * tp], vec![0.0; t * hd]);
    let (no_bias_t, no_bias_d) = (vec![0.0; tp], vec![0.0; hd]);
    for h in 0..heads {
        for i in 0..t {
            let head = i * d + h * hd..i * d + (h + 1) * hd;
            qh[i * hd..(i + 1) * hd].copy_from_slice(&q[head.clone()]);
            kh[i * hd..(i + 1) * hd].copy_from_slice(&k[head.clone()]);
            for (c, &x) in v[head].iter().enumerate() {
                vt[c * tp + i] = x;
            }
        }
        kernels::linear_f32(&qh, hd, &kh, &no_bias_t, &mut scores);
        for row in scores.chunks_exact_mut(tp) {
            let (live, padding) = row.split_at_mut(t);
            for s in live.iter_mut() {
                *s *= scale;
            }
            kernels::softmax(live);
            padding.fill(0.0);
        }
        kernels::linear_f32(&scores, tp, &vt, &no_bias_d, &mut context);
        for i in 0..t {
            out[i * d + h * hd..i * d + (h + 1) * hd]
                .copy_from_slice(&context[i * hd..(i + 1) * hd]);
        }
    }
    out
}
