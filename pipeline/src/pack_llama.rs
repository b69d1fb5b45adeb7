//! Build time: a Llama-family decoder's ONNX graph (the interface of
//! models/tinylm/README.md) into the packed form of `engine/src/decoder/format.rs`.
//!
//! The graph is read, not run. It is matched backwards from `logits`, node
//! by node, against the architecture the engine implements: the output head
//! (tied: the embedding transposed), the final RMSNorm, then per block the
//! SwiGLU MLP and its residual, the attention (q/k/v projections, fused or
//! not; rotary embedding by `rotate_half` with cos/sin tables gathered by
//! position; the cache concatenated with the new keys and values; q scaled
//! by 1/sqrt(head_dim); the causal mask; softmax; the output projection)
//! and its residual, down to the token embedding. The rotary base is
//! recovered from the tables and checked to reproduce them. Every node of
//! the graph must be part of that match: one that is not, or one of another
//! kind than expected, fails the build with its name.
//!
//! Weights keep their own quantization (float32, or int8 per output channel
//! behind a DequantizeLinear) and are written one row per output.

use std::collections::{HashMap, HashSet};

use crate::onnx::NodeProto;

use super::pack_bert::{with_graph, Const, Graph, Packer, Span, FLOAT};

pub use edgeinfer_engine::decoder::format;
use edgeinfer_engine::kernels::panels::Panels;
use format::{Config, Header, Layer, Matrix, Part, Rope, RopeStyle, Weights, MAGIC};

const INT8: i32 = 3;

/// The packed bytes of the decoder in `onnx`, its config and its number of
/// layers.
pub fn pack(onnx: &[u8]) -> Result<(Vec<u8>, Config, usize), String> {
    with_graph(onnx, |g| Matcher::new(g, false).pack())
}

/// The same, with each int8 row written as Q8 blocks of 32 (every block
/// scale the row's: the same weights), so the engine also quantizes the
/// activations: what the golden test and the bench measure that path with.
#[allow(dead_code)] // build.rs packs the shipped form only
pub fn pack_as_q8_blocks(onnx: &[u8]) -> Result<(Vec<u8>, Config, usize), String> {
    with_graph(onnx, |g| Matcher::new(g, true).pack())
}

struct Matcher<'a> {
    g: &'a Graph<'a>,
    producers: HashMap<&'a str, &'a NodeProto>,
    matched: HashSet<&'a str>,
    p: Packer,
    eps: Option<f32>,
    /// The rotary cos and sin tables (constant names).
    tables: Option<(String, String)>,
    /// Int8 rows written as Q8 blocks.
    blocks: bool,
}

/// A weight matrix as the graph holds it, before packing.
struct Weight {
    /// float32 values, or int8 values with one scale per output.
    values: Vec<u8>,
    scales: Option<Vec<f32>>,
    /// Rows of the stored tensor, columns of it.
    dims: [usize; 2],
    /// Whether the stored tensor is `outputs x inputs` already (the token
    /// table) or `inputs x outputs` (a MatMul's right-hand side).
    rows_are_outputs: bool,
}

struct Attention {
    norm: Span,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layer: usize,
    input: String,
}

impl<'a> Matcher<'a> {
    fn new(g: &'a Graph<'a>, blocks: bool) -> Self {
        let mut producers = HashMap::new();
        for n in g.nodes {
            for o in &n.output {
                producers.insert(o.as_str(), n);
            }
        }
        Matcher {
            g,
            producers,
            matched: HashSet::new(),
            p: Packer::default(),
            eps: None,
            tables: None,
            blocks,
        }
    }

    /// The node of kind `op` that produces `tensor`, marked as matched.
    fn node(&mut self, tensor: &str, op: &str) -> Result<&'a NodeProto, String> {
        match self.producers.get(tensor) {
            Some(n) if n.op_type == op => {
                self.matched.insert(n.output[0].as_str());
                Ok(n)
            }
            Some(n) => Err(format!(
                "node {:?} ({}) where the architecture has a {op} producing {tensor:?}",
                n.name, n.op_type
            )),
            None => Err(format!(
                "{tensor:?} is not produced by a node where the architecture has a {op}"
            )),
        }
    }

    fn input(n: &NodeProto, i: usize) -> Result<&str, String> {
        n.input
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("node {:?} ({}) lacks input {i}", n.name, n.op_type))
    }

    fn constant(&self, name: &str) -> Result<&'a Const, String> {
        self.g.constant(name)
    }

    fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        let c = self.constant(name)?;
        if c.data_type != 7 {
            return Err(format!("{name:?} is not an int64 constant"));
        }
        Ok(c.bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect())
    }

    fn scalar(&self, name: &str) -> Result<f32, String> {
        match self.constant(name)?.f32s()?.as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("{name:?} is not one float")),
        }
    }

    fn attr(n: &NodeProto, name: &str) -> Option<i64> {
        n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
    }

    fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    }

    fn pack(mut self) -> Result<(Vec<u8>, Config, usize), String> {
        let logits = self.node("logits", "MatMul")?;
        let head_in = Self::input(logits, 1)?;
        let (embedding_name, head) = match self.producers.get(head_in) {
            Some(t) if t.op_type == "Transpose" => {
                self.matched.insert(t.output[0].as_str());
                if Self::attr_ints(t, "perm") != Some(vec![1, 0]) {
                    return Err(format!(
                        "node {:?}: the tied head is not the embedding transposed",
                        t.name
                    ));
                }
                (Self::input(t, 0)?.to_string(), None)
            }
            _ => (String::new(), Some(self.weight(head_in, false)?)),
        };
        let (mut x, final_norm) = self.rms_norm(Self::input(logits, 0)?)?;

        let mut blocks = Vec::new();
        while let Some(n) = self
            .producers
            .get(x.as_str())
            .copied()
            .filter(|n| n.op_type == "Add")
        {
            self.matched.insert(n.output[0].as_str());
            let mlp = self.mlp(n)?;
            let add = self.node(&mlp.input, "Add")?;
            let attention = self.attention(add)?;
            x = attention.input.clone();
            blocks.push((attention, mlp));
        }
        blocks.reverse();
        let Some((a0, m0)) = blocks.first() else {
            return Err("no decoder block found below the final norm".into());
        };
        let (heads, kv_heads, head_dim, ffn) = (a0.heads, a0.kv_heads, a0.head_dim, m0.down.cols);

        let gather = self.node(&x, "Gather")?;
        if Self::input(gather, 1)? != "input_ids" || Self::attr(gather, "axis").unwrap_or(0) != 0 {
            return Err(format!(
                "node {:?}: the embedding is not a Gather of input_ids",
                gather.name
            ));
        }
        let table = Self::input(gather, 0)?;
        if head.is_none() && table != embedding_name {
            return Err("the tied head is not the token embedding".into());
        }
        let embedding = self.weight(table, true)?;
        let embedding = self.matrix(embedding)?;
        let head = head.map(|w| self.matrix(w)).transpose()?;
        let (vocab, dims) = (embedding.rows, embedding.cols);

        let mut layers = Vec::new();
        for (i, (a, m)) in blocks.into_iter().enumerate() {
            if a.layer != i || (a.heads, a.kv_heads, a.head_dim) != (heads, kv_heads, head_dim) {
                return Err(format!(
                    "block {i} differs from block 0 (layer index or head shape)"
                ));
            }
            let shapes = [
                (&a.q, heads * head_dim, dims),
                (&a.k, kv_heads * head_dim, dims),
                (&a.v, kv_heads * head_dim, dims),
                (&a.o, dims, heads * head_dim),
                (&m.gate, ffn, dims),
                (&m.up, ffn, dims),
                (&m.down, dims, ffn),
            ];
            if let Some((m, r, c)) = shapes.iter().find(|(m, r, c)| (m.rows, m.cols) != (*r, *c)) {
                return Err(format!(
                    "block {i}: a {}x{} projection where {r}x{c} was expected",
                    m.rows, m.cols
                ));
            }
            layers.push(Layer {
                attention_norm: a.norm,
                q: a.q,
                k: a.k,
                v: a.v,
                // The ONNX export is Llama's: no biases.
                q_bias: None,
                k_bias: None,
                v_bias: None,
                o: a.o,
                mlp_norm: m.norm,
                gate: m.gate,
                up: m.up,
                down: m.down,
            });
        }
        if head
            .as_ref()
            .is_some_and(|h| (h.rows, h.cols) != (vocab, dims))
        {
            return Err("the output head is not vocab x dims".into());
        }
        let (context, rope) = self.rope(head_dim)?;
        self.everything_matched()?;
        let config = Config {
            vocab,
            dims,
            heads,
            kv_heads,
            head_dim,
            ffn,
            context,
            norm_eps: self.eps.ok_or("no RMSNorm found")?,
            rope,
        };
        let header = Header {
            config,
            part: Part::whole(layers.len()),
            embedding: Some(embedding),
            layers,
            final_norm: Some(final_norm),
            head,
            rope_factors: None,
        };
        let layers = header.layers.len();
        Ok((self.p.finish(MAGIC, &header)?, config, layers))
    }

    /// `x / sqrt(mean(x^2) + eps) * weight`: returns x and the packed weight.
    fn rms_norm(&mut self, out: &str) -> Result<(String, Span), String> {
        let mul = self.node(out, "Mul")?;
        let (a, b) = (Self::input(mul, 0)?, Self::input(mul, 1)?);
        let (xn, w) = if self.g.consts.contains_key(b) {
            (a, b)
        } else {
            (b, a)
        };
        let weight = self.constant(w)?.f32s()?;
        let div = self.node(xn, "Div")?;
        let x = Self::input(div, 0)?;
        let sqrt = self.node(Self::input(div, 1)?, "Sqrt")?;
        let add = self.node(Self::input(sqrt, 0)?, "Add")?;
        let eps = self.scalar(Self::input(add, 1)?)?;
        let mean = self.node(Self::input(add, 0)?, "ReduceMean")?;
        let axes = Self::attr_ints(mean, "axes").unwrap_or_default();
        if axes != [-1] || Self::attr(mean, "keepdims") == Some(0) {
            return Err(format!(
                "node {:?}: not a mean over the last axis",
                mean.name
            ));
        }
        let sq = self.node(Self::input(mean, 0)?, "Mul")?;
        if Self::input(sq, 0)? != x || Self::input(sq, 1)? != x {
            return Err(format!(
                "node {:?}: not the square of the normalized input",
                sq.name
            ));
        }
        match self.eps {
            Some(e) if e != eps => {
                return Err(format!("node {:?}: eps {eps}, other norms {e}", add.name))
            }
            _ => self.eps = Some(eps),
        }
        Ok((x.to_string(), self.p.push_f32(&weight)))
    }

    /// A constant weight: float32, or int8 behind a symmetric
    /// DequantizeLinear with one scale per output. A `table` (the token
    /// embedding) is tokens x dims; any other weight is the right-hand side
    /// of a MatMul, inputs x outputs.
    fn weight(&mut self, name: &str, table: bool) -> Result<Weight, String> {
        if let Ok(c) = self.constant(name) {
            let [r, c2] = c.dims[..] else {
                return Err(format!("weight {name:?} is not a matrix"));
            };
            if c.data_type != FLOAT {
                return Err(format!(
                    "weight {name:?} is neither float32 nor dequantized int8"
                ));
            }
            return Ok(Weight {
                values: c.bytes.clone(),
                scales: None,
                dims: [r, c2],
                rows_are_outputs: table,
            });
        }
        let dq = self.node(name, "DequantizeLinear")?;
        let q = self.constant(Self::input(dq, 0)?)?;
        let scales = self.constant(Self::input(dq, 1)?)?.f32s()?;
        let zero = self.constant(Self::input(dq, 2)?)?;
        let [r, c] = q.dims[..] else {
            return Err(format!("weight {name:?} is not a matrix"));
        };
        if q.data_type != INT8 || zero.bytes.iter().any(|&z| z != 0) {
            return Err(format!(
                "node {:?}: weights are not symmetric int8",
                dq.name
            ));
        }
        let axis = Self::attr(dq, "axis").unwrap_or(1);
        // A matrix multiplied from the right is inputs x outputs (per-output
        // scales on axis 1); the token table is tokens x dims (axis 0).
        let per_output = match table {
            true => axis == 0 && scales.len() == r,
            false => axis == 1 && scales.len() == c,
        };
        if !per_output {
            return Err(format!(
                "node {:?}: scales are not one per output channel",
                dq.name
            ));
        }
        let rows_are_outputs = table;
        Ok(Weight {
            values: q.bytes.clone(),
            scales: Some(scales),
            dims: [r, c],
            rows_are_outputs,
        })
    }

    /// Packs a weight one row per output.
    fn matrix(&mut self, w: Weight) -> Result<Matrix, String> {
        let bytes_per = if w.scales.is_some() { 1 } else { 4 };
        let [rows, cols] = if w.rows_are_outputs {
            w.dims
        } else {
            [w.dims[1], w.dims[0]]
        };
        let values = if w.rows_are_outputs {
            w.values
        } else {
            let mut t = Vec::with_capacity(w.values.len());
            for o in 0..rows {
                for i in 0..cols {
                    let at = (i * rows + o) * bytes_per;
                    t.extend_from_slice(&w.values[at..at + bytes_per]);
                }
            }
            t
        };
        let weights = match w.scales {
            Some(scales) if self.blocks && cols % 32 == 0 => {
                let per_block: Vec<f32> = scales
                    .iter()
                    .flat_map(|&s| std::iter::repeat_n(s, cols / 32))
                    .collect();
                let values: Vec<i8> = values.iter().map(|&v| v as i8).collect();
                let panels = Panels::pack_q8(&values, &per_block, rows, cols);
                Weights::Q8Panels {
                    panels: self.p.push(&panels, panels.len()),
                }
            }
            Some(scales) => Weights::I8Rows {
                values: self.p.push(&values, rows * cols),
                scales: self.p.push_f32(&scales),
            },
            None => Weights::F32 {
                values: self.p.push(&values, rows * cols),
            },
        };
        Ok(Matrix {
            rows,
            cols,
            weights,
        })
    }

    /// The right-hand side of a MatMul producing `out` from `input`, packed.
    fn projection(&mut self, out: &str) -> Result<(String, Matrix), String> {
        let mm = self.node(out, "MatMul")?;
        let w = self.weight(Self::input(mm, 1)?, false)?;
        Ok((Self::input(mm, 0)?.to_string(), self.matrix(w)?))
    }

    /// The columns `[start, end)` of the last axis that a Slice takes.
    fn last_axis_slice(&mut self, tensor: &str) -> Result<(&'a str, usize, usize), String> {
        let s = self.node(tensor, "Slice")?;
        let start = self.ints(Self::input(s, 1)?)?;
        let end = self.ints(Self::input(s, 2)?)?;
        let axes = self.ints(Self::input(s, 3)?)?;
        match (&start[..], &end[..], &axes[..]) {
            ([a], [b], [-1]) if *a >= 0 && b > a => {
                Ok((Self::input(s, 0)?, *a as usize, *b as usize))
            }
            _ => Err(format!("node {:?}: not a slice of the last axis", s.name)),
        }
    }

    /// A projection that may be one slice of a fused MatMul (q/k/v, gate/up):
    /// returns the MatMul's input and the sliced weight, packed.
    fn sliced_projection(&mut self, tensor: &str) -> Result<(String, Matrix), String> {
        match self.producers.get(tensor).map(|n| n.op_type.as_str()) {
            Some("MatMul") => self.projection(tensor),
            _ => {
                let (fused, start, end) = self.last_axis_slice(tensor)?;
                let mm = self.node(fused, "MatMul")?;
                let mut w = self.weight(Self::input(mm, 1)?, false)?;
                if w.rows_are_outputs || end > w.dims[1] {
                    return Err(format!("node {:?}: slice past the fused weight", mm.name));
                }
                // Keep columns start..end of the inputs x outputs matrix.
                let (inputs, outputs) = (w.dims[0], w.dims[1]);
                let per = if w.scales.is_some() { 1 } else { 4 };
                let mut kept = Vec::with_capacity(inputs * (end - start) * per);
                for i in 0..inputs {
                    kept.extend_from_slice(
                        &w.values[(i * outputs + start) * per..(i * outputs + end) * per],
                    );
                }
                w.values = kept;
                w.dims = [inputs, end - start];
                w.scales = w.scales.map(|s| s[start..end].to_vec());
                Ok((Self::input(mm, 0)?.to_string(), self.matrix(w)?))
            }
        }
    }

    /// Below a residual Add: `x + down(silu(gate h) * up h)`, h = norm(x).
    fn mlp(&mut self, add: &'a NodeProto) -> Result<Mlp, String> {
        let (x, branch) = (Self::input(add, 0)?, Self::input(add, 1)?);
        let (act, down) = self.projection(branch)?;
        let mul = self.node(&act, "Mul")?;
        let silu = self.node(Self::input(mul, 0)?, "Mul")?;
        let gate_t = Self::input(silu, 0)?;
        let sig = self.node(Self::input(silu, 1)?, "Sigmoid")?;
        if Self::input(sig, 0)? != gate_t {
            return Err(format!(
                "node {:?}: not silu(gate) = gate * sigmoid(gate)",
                silu.name
            ));
        }
        let (h_gate, gate) = self.sliced_projection(gate_t)?;
        let (h_up, up) = self.sliced_projection(Self::input(mul, 1)?)?;
        if h_gate != h_up {
            return Err(format!(
                "node {:?}: gate and up read different inputs",
                mul.name
            ));
        }
        let (normed, norm) = self.rms_norm(&h_gate)?;
        if normed != x {
            return Err(format!(
                "node {:?}: the MLP does not read the residual stream",
                add.name
            ));
        }
        Ok(Mlp {
            norm,
            gate,
            up,
            down,
            input: x.to_string(),
        })
    }

    /// Below a residual Add: `x + o(attention(norm(x)))`.
    fn attention(&mut self, add: &'a NodeProto) -> Result<Attention, String> {
        let (x, branch) = (Self::input(add, 0)?, Self::input(add, 1)?);
        let (merged, o) = self.projection(branch)?;
        let merge = self.node(&merged, "Reshape")?;
        let t = self.node(Self::input(merge, 0)?, "Transpose")?;
        let heads_r = self.node(Self::input(t, 0)?, "Reshape")?;
        let pv = self.node(Self::input(heads_r, 0)?, "MatMul")?;
        let probs = self.node(Self::input(pv, 0)?, "Softmax")?;
        if !matches!(Self::attr(probs, "axis"), Some(-1) | Some(3) | None) {
            return Err(format!("node {:?}: softmax not over the keys", probs.name));
        }
        let masked = self.node(Self::input(probs, 0)?, "Where")?;
        if self.scalar(Self::input(masked, 1)?)? > -1e4 {
            return Err(format!(
                "node {:?}: masked scores are not set to a large negative",
                masked.name
            ));
        }
        let scores = self.node(Self::input(masked, 2)?, "MatMul")?;
        let group = self.node(Self::input(scores, 0)?, "Reshape")?;
        let scaled = self.node(Self::input(group, 0)?, "Mul")?;
        let scale = self.scalar(Self::input(scaled, 1)?)?;
        let kt = self.node(Self::input(scores, 1)?, "Transpose")?;
        if Self::attr_ints(kt, "perm") != Some(vec![0, 1, 3, 2]) {
            return Err(format!("node {:?}: keys not transposed for q k^T", kt.name));
        }
        let (k_all, v_all) = (Self::input(kt, 0)?, Self::input(pv, 1)?);
        let k_cat = self.node(k_all, "Concat")?;
        let v_cat = self.node(v_all, "Concat")?;
        let past_k = Self::input(k_cat, 0)?;
        let layer: usize = past_k
            .strip_prefix("past_key_")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| {
                format!(
                    "node {:?}: keys not concatenated after past_key_<i>",
                    k_cat.name
                )
            })?;
        if Self::input(v_cat, 0)? != format!("past_value_{layer}")
            || k_all != format!("present_key_{layer}")
            || v_all != format!("present_value_{layer}")
            || Self::attr(k_cat, "axis") != Some(2)
            || Self::attr(v_cat, "axis") != Some(2)
        {
            return Err(format!(
                "node {:?}: the cache of layer {layer} is not past ++ new along positions",
                v_cat.name
            ));
        }
        let q_rot = self.rope_of(Self::input(scaled, 0)?)?;
        let k_rot = self.rope_of(Self::input(k_cat, 1)?)?;
        let (hq, q, heads, head_dim) = self.heads(&q_rot)?;
        let (hk, k, kv_heads, hd_k) = self.heads(&k_rot)?;
        let (hv, v, kv_v, hd_v) = self.heads(Self::input(v_cat, 1)?)?;
        if hq != hk || hk != hv {
            return Err(format!("layer {layer}: q, k and v read different inputs"));
        }
        if hd_k != head_dim
            || hd_v != head_dim
            || kv_v != kv_heads
            || kv_heads == 0
            || heads % kv_heads != 0
        {
            return Err(format!("layer {layer}: head shapes of q, k, v disagree"));
        }
        if (scale - (1.0 / (head_dim as f64).sqrt()) as f32).abs() > 1e-7 {
            return Err(format!(
                "node {:?}: q is not scaled by 1/sqrt(head_dim)",
                scaled.name
            ));
        }
        let (normed, norm) = self.rms_norm(&hq)?;
        if normed != x {
            return Err(format!(
                "node {:?}: the attention does not read the residual stream",
                add.name
            ));
        }
        self.mask_of(Self::input(masked, 0)?, heads / kv_heads)?;
        Ok(Attention {
            norm,
            q,
            k,
            v,
            o,
            heads,
            kv_heads,
            head_dim,
            layer,
            input: x.to_string(),
        })
    }

    /// `Transpose([0, 2, 1, 3])` of `Reshape([0, 0, n, head_dim])` of a
    /// projection: returns its input, its weight, n and head_dim.
    fn heads(&mut self, tensor: &str) -> Result<(String, Matrix, usize, usize), String> {
        let t = self.node(tensor, "Transpose")?;
        if Self::attr_ints(t, "perm") != Some(vec![0, 2, 1, 3]) {
            return Err(format!("node {:?}: not a split into heads", t.name));
        }
        let r = self.node(Self::input(t, 0)?, "Reshape")?;
        let shape = self.ints(Self::input(r, 1)?)?;
        let [0, 0, n, hd] = shape[..] else {
            return Err(format!(
                "node {:?}: not a reshape to [batch, tokens, heads, head_dim]",
                r.name
            ));
        };
        if n <= 0 || hd <= 0 || hd % 2 != 0 {
            return Err(format!("node {:?}: bad head shape", r.name));
        }
        let (input, m) = self.sliced_projection(Self::input(r, 0)?)?;
        Ok((input, m, n as usize, hd as usize))
    }

    /// `x * cos + rotate_half(x) * sin`, cos/sin gathered by position from
    /// constant tables: returns x.
    fn rope_of(&mut self, tensor: &str) -> Result<String, String> {
        let add = self.node(tensor, "Add")?;
        let xc = self.node(Self::input(add, 0)?, "Mul")?;
        let rs = self.node(Self::input(add, 1)?, "Mul")?;
        let x = Self::input(xc, 0)?;
        let cos = self.table(Self::input(xc, 1)?)?;
        let sin = self.table(Self::input(rs, 1)?)?;
        let rot = self.node(Self::input(rs, 0)?, "Concat")?;
        if Self::attr(rot, "axis") != Some(-1) && Self::attr(rot, "axis") != Some(3) {
            return Err(format!(
                "node {:?}: rotate_half not along the head",
                rot.name
            ));
        }
        let neg = self.node(Self::input(rot, 0)?, "Neg")?;
        let (x2, s2, e2) = self.last_axis_slice(Self::input(neg, 0)?)?;
        let (x1, s1, e1) = self.last_axis_slice(Self::input(rot, 1)?)?;
        if x1 != x || x2 != x || s1 != 0 || e1 != s2 || e2 != 2 * e1 {
            return Err(format!(
                "node {:?}: not rotate_half(x) = [-x2, x1]",
                rot.name
            ));
        }
        match &self.tables {
            Some((c, s)) if (c.as_str(), s.as_str()) != (cos.as_str(), sin.as_str()) => {
                return Err(format!(
                    "node {:?}: another rotary table than the other layers'",
                    add.name
                ))
            }
            _ => self.tables = Some((cos, sin)),
        }
        Ok(x.to_string())
    }

    /// `Unsqueeze(Gather(table, position_ids))`: the table's name.
    fn table(&mut self, tensor: &str) -> Result<String, String> {
        let u = self.node(tensor, "Unsqueeze")?;
        let gather = self.node(Self::input(u, 0)?, "Gather")?;
        if Self::input(gather, 1)? != "position_ids" {
            return Err(format!(
                "node {:?}: rotary angles not looked up by position_ids",
                gather.name
            ));
        }
        Ok(Self::input(gather, 0)?.to_string())
    }

    /// The causal mask: `future[j, t] = (P + j < t)` (queries P..P+S against
    /// keys 0..T), repeated for the `group` query heads of a key/value head.
    fn mask_of(&mut self, tensor: &str, group: usize) -> Result<(), String> {
        let less = match self.producers.get(tensor).map(|n| n.op_type.as_str()) {
            Some("Concat") => {
                let cat = self.node(tensor, "Concat")?;
                if cat.input.len() != group || cat.input.iter().any(|i| *i != cat.input[0]) {
                    return Err(format!(
                        "node {:?}: the mask is not repeated per query head",
                        cat.name
                    ));
                }
                self.node(Self::input(cat, 0)?, "Less")?
            }
            _ => self.node(tensor, "Less")?,
        };
        let q = self.node(Self::input(less, 0)?, "Unsqueeze")?;
        let k = self.node(Self::input(less, 1)?, "Unsqueeze")?;
        let q_pos = self.node(Self::input(q, 0)?, "Range")?;
        let k_pos = self.node(Self::input(k, 0)?, "Range")?;
        let starts_at_zero = |m: &Self, n: &NodeProto| {
            Self::input(n, 0).ok().and_then(|s| m.ints(s).ok()) == Some(vec![0])
        };
        if Self::input(q_pos, 1)? != Self::input(k_pos, 1)?
            || !starts_at_zero(self, k_pos)
            || starts_at_zero(self, q_pos)
        {
            return Err(format!(
                "node {:?}: not the causal mask of the cache",
                less.name
            ));
        }
        // P, S and T come from the shapes of the inputs.
        for t in [Self::input(q_pos, 0)?, Self::input(q_pos, 1)?] {
            self.shapes_upstream(t)?;
        }
        Ok(())
    }

    /// Marks the Shape/Gather/Add nodes computing `tensor` from input shapes.
    fn shapes_upstream(&mut self, tensor: &str) -> Result<(), String> {
        let Some(n) = self.producers.get(tensor).copied() else {
            return Ok(());
        };
        match n.op_type.as_str() {
            "Shape" => {
                let of = Self::input(n, 0)?;
                if of != "input_ids" && !of.starts_with("past_key_") {
                    return Err(format!("node {:?}: a shape of {of:?} in the mask", n.name));
                }
            }
            "Gather" | "Add" => {
                for i in &n.input {
                    if !self.g.consts.contains_key(i.as_str()) {
                        self.shapes_upstream(i)?;
                    }
                }
            }
            other => {
                return Err(format!(
                    "node {:?} ({other}) in the mask's shape arithmetic",
                    n.name
                ))
            }
        }
        self.matched.insert(n.output[0].as_str());
        Ok(())
    }

    /// The rotary base and the context, from the cos and sin tables: the
    /// base is recovered from the first pair's angle at position 1 and must
    /// reproduce both tables as the engine computes them.
    fn rope(&self, head_dim: usize) -> Result<(usize, Rope), String> {
        let (cos, sin) = self.tables.as_ref().ok_or("no rotary tables")?;
        let (c, s) = (self.constant(cos)?, self.constant(sin)?);
        let [context, width] = c.dims[..] else {
            return Err("the rotary table is not a matrix".into());
        };
        if c.dims != s.dims || width != head_dim || context < 2 {
            return Err(format!(
                "rotary tables are {:?}, not [context, {head_dim}]",
                c.dims
            ));
        }
        let (cos, sin) = (c.f32s()?, s.f32s()?);
        let half = head_dim / 2;
        // Pair 1 turns by theta^(-2/head_dim) per position.
        let angle = f64::from(sin[width + 1]).atan2(f64::from(cos[width + 1]));
        let fitted = angle.powf(-(head_dim as f64) / 2.0);
        let rounded = fitted.round();
        let error = |theta: f64| {
            let mut worst = 0.0f64;
            for p in 0..context {
                for i in 0..head_dim {
                    let f = 1.0 / theta.powf((i % half) as f64 * 2.0 / head_dim as f64);
                    let a = p as f64 * f;
                    worst = worst
                        .max((f64::from((a.cos()) as f32) - f64::from(cos[p * width + i])).abs())
                        .max((f64::from((a.sin()) as f32) - f64::from(sin[p * width + i])).abs());
                }
            }
            worst
        };
        let theta = [rounded, fitted]
            .into_iter()
            .find(|&t| error(t) <= 1e-6)
            .ok_or_else(|| {
                format!(
                    "the rotary tables are not rotate_half's cos/sin for any base (best {fitted}: off by {})",
                    error(fitted)
                )
            })?;
        Ok((
            context,
            Rope {
                theta,
                style: RopeStyle::HalfSplit,
            },
        ))
    }

    fn everything_matched(&self) -> Result<(), String> {
        for n in self.g.nodes {
            if !n.output.iter().any(|o| self.matched.contains(o.as_str())) {
                return Err(format!(
                    "node {:?} ({}) is not part of the architecture the engine implements",
                    n.name, n.op_type
                ));
            }
        }
        Ok(())
    }
}

struct Mlp {
    norm: Span,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
    input: String,
}
