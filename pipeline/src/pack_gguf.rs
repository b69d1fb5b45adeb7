//! Llama-family GGUF files (architectures `llama` and `qwen2`) packed for
//! the decoder engine: the file's config from its metadata, every tensor
//! matched by name and shape, and the weights kept as the file stores them
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K blocks in panels,
//! [`edgeinfer_engine::kernels::panels`]; F16 and F32 as float32) or, for
//! the reference the golden tests compare against, dequantized to float32
//! as `gguf` does.
//!
//! Anything the engine does not implement is refused with the reason: an
//! architecture other than those two, rope scaling, a tensor type without a
//! kernel, a tensor the engine would not read, or one it needs and is
//! missing.
//!
//! q and k are used as stored. For `llama`, GGUF's converter permutes their
//! rows so that rotary pairs are adjacent (llama.cpp's "normal" rope), which
//! is the engine's [`RopeStyle::Interleaved`]; for `qwen2` it does not, and
//! llama.cpp rotates the halves (its "neox" rope): [`RopeStyle::HalfSplit`].
//! `qwen2` adds biases to q, k and v (float32, required); `llama` has none.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::ops::Range;

use gguf_rs_lib::prelude::{GGUFFileReader, GGUFTensorType, Metadata, MetadataValue};

use super::packed::Packer;
use super::plan::Costs;
use edgeinfer_engine::decoder::format::{
    Config, Header, Layer, Matrix, Part, Rope, RopeStyle, Weights, MAGIC,
};
use edgeinfer_engine::decoder::vocab::{VocabHeader, MAGIC as VOCAB_MAGIC};
use edgeinfer_engine::decoder::{stage_row_bytes, stage_rows, PREDICT_ROWS};
use edgeinfer_engine::kernels::panels::{self, PanelKind, Panels};

/// How the weights are stored in the packed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The file's own blocks (what ships).
    AsStored,
    /// Every matrix dequantized to float32 (the reference's weights).
    Float32,
}

/// The architectures the engine runs (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    /// Llama's block with biases on q, k and v, and rotary halves.
    Qwen2,
}

impl Architecture {
    /// The name, also the prefix of its metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }

    fn has_qkv_bias(self) -> bool {
        self == Architecture::Qwen2
    }
}

/// A parsed GGUF file over its bytes.
pub struct Gguf<'a> {
    metadata: Metadata,
    tensors: HashMap<String, Tensor<'a>>,
}

struct Tensor<'a> {
    kind: GGUFTensorType,
    /// GGUF order: `dims[0]` is the contiguous (input) dimension.
    dims: Vec<u64>,
    bytes: &'a [u8],
}

/// A packed decoder and what it is.
pub struct Packed {
    pub bytes: Vec<u8>,
    pub config: Config,
    pub layers: usize,
}

impl<'a> Gguf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let reader = GGUFFileReader::new(Cursor::new(bytes)).map_err(|e| format!("GGUF: {e}"))?;
        let start = usize::try_from(reader.tensor_data_offset()).map_err(|e| e.to_string())?;
        let mut tensors = HashMap::new();
        for info in reader.tensor_infos() {
            let size = usize::try_from(info.expected_data_size()).map_err(|e| e.to_string())?;
            let offset = start + usize::try_from(info.data_offset()).map_err(|e| e.to_string())?;
            let data = bytes
                .get(offset..offset + size)
                .ok_or_else(|| format!("tensor {} runs past the end of the file", info.name()))?;
            tensors.insert(
                info.name().to_string(),
                Tensor {
                    kind: info.tensor_type(),
                    dims: info.shape().dims().to_vec(),
                    bytes: data,
                },
            );
        }
        Ok(Gguf {
            metadata: reader.metadata().clone(),
            tensors,
        })
    }

    /// A tensor's type, its dimensions (GGUF order: `dims[0]` is the
    /// contiguous one) and its bytes as the file stores them.
    pub fn tensor(&self, name: &str) -> Option<(GGUFTensorType, &[u64], &'a [u8])> {
        self.tensors
            .get(name)
            .map(|t| (t.kind, t.dims.as_slice(), t.bytes))
    }

    /// The architecture (`general.architecture`), if the engine runs it.
    pub fn architecture(&self) -> Result<Architecture, String> {
        match self.string("general.architecture")? {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            other => Err(format!(
                "GGUF architecture {other:?}: the decoder engine runs \"llama\" and \"qwen2\" only"
            )),
        }
    }

    /// `{architecture}.{suffix}`: where the file keeps the model's shape.
    fn key(&self, suffix: &str) -> Result<String, String> {
        Ok(format!("{}.{suffix}", self.architecture()?.name()))
    }

    /// How many tensors of each type the file has (`Q4_K`, `F32`, ...).
    pub fn tensor_kinds(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in self.tensors.values() {
            *counts.entry(format!("{:?}", t.kind)).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .and_then(MetadataValue::as_str)
            .ok_or_else(|| format!("GGUF metadata {key} is missing or not a string"))
    }

    fn uint(&self, key: &str) -> Result<usize, String> {
        self.get(key)
            .and_then(MetadataValue::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("GGUF metadata {key} is missing or not an integer"))
    }

    fn float(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("GGUF metadata {key} is not a number")),
        }
    }

    /// The model's shape from its `{architecture}.*` metadata.
    pub fn config(&self) -> Result<Config, String> {
        let arch = self.architecture()?;
        let key = |suffix: &str| self.key(suffix);
        if let Some(kind) = self
            .get(&key("rope.scaling.type")?)
            .and_then(MetadataValue::as_str)
        {
            if kind != "none" && kind != "linear" {
                return Err(format!(
                    "rope scaling {kind:?} is not implemented by the decoder engine \
                     (\"linear\" is, and Llama 3's per-frequency factors)"
                ));
            }
        }
        let dims = self.uint(&key("embedding_length")?)?;
        let heads = self.uint(&key("attention.head_count")?)?;
        let kv_heads = match self.get(&key("attention.head_count_kv")?) {
            None => heads,
            Some(_) => self.uint(&key("attention.head_count_kv")?)?,
        };
        if heads == 0 || dims % heads != 0 {
            return Err(format!("{dims} dims do not split into {heads} heads"));
        }
        let head_dim = dims / heads;
        if let Some(Some(rot)) = self
            .get(&key("rope.dimension_count")?)
            .map(MetadataValue::as_u64)
        {
            if rot as usize != head_dim {
                return Err(format!(
                    "rope over {rot} of {head_dim} head dimensions: partial rotary is not implemented"
                ));
            }
        }
        let vocab = self
            .tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.get(1))
            .map(|&v| v as usize)
            .ok_or("GGUF has no token_embd.weight of two dimensions")?;
        let eps = key("attention.layer_norm_rms_epsilon")?;
        Ok(Config {
            vocab,
            dims,
            heads,
            kv_heads,
            head_dim,
            ffn: self.uint(&key("feed_forward_length")?)?,
            context: self.uint(&key("context_length")?)?,
            norm_eps: self
                .float(&eps)?
                .ok_or_else(|| format!("GGUF metadata {eps} is missing"))?
                as f32,
            rope: Rope {
                // llama.cpp's default base when the file names none.
                theta: self.float(&key("rope.freq_base")?)?.unwrap_or(10_000.0),
                style: match arch {
                    Architecture::Llama => RopeStyle::Interleaved,
                    Architecture::Qwen2 => RopeStyle::HalfSplit,
                },
            },
        })
    }

    /// What each part costs packed as stored, for the shard planner.
    pub fn costs(&self) -> Result<Costs, String> {
        let c = self.config()?;
        let bytes = |name: &str| -> Result<u64, String> {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| format!("GGUF has no tensor {name}"))?;
            let n: u64 = t.dims.iter().product();
            packed_bytes(t.kind, n)
        };
        let biased = self.architecture()?.has_qkv_bias();
        let layers = (0..self.layers()?)
            .map(|i| {
                let biases = ["attn_q", "attn_k", "attn_v"]
                    .iter()
                    .filter(|_| biased)
                    .map(|part| bytes(&format!("blk.{i}.{part}.bias")))
                    .sum::<Result<u64, String>>()?;
                let weights = [
                    "attn_norm",
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    "ffn_norm",
                    "ffn_gate",
                    "ffn_up",
                    "ffn_down",
                ]
                .iter()
                .map(|part| bytes(&format!("blk.{i}.{part}.weight")))
                .sum::<Result<u64, String>>()?;
                Ok(weights + biases)
            })
            .collect::<Result<Vec<u64>, String>>()?;
        Ok(Costs {
            embedding: bytes("token_embd.weight")?,
            head: self
                .tensors
                .contains_key("output.weight")
                .then(|| bytes("output.weight"))
                .transpose()?,
            final_norm: bytes("output_norm.weight")?,
            layers,
            kv_per_token: 2 * (c.kv_heads * c.head_dim * 4) as u64,
            stage: stage_rows(&c) as u64 * stage_row_bytes(&c),
            logits: 2 * PREDICT_ROWS as u64 * 4 * c.vocab as u64,
        })
    }

    /// Layers (`{architecture}.block_count`).
    pub fn layers(&self) -> Result<usize, String> {
        self.uint(&self.key("block_count")?)
    }

    /// The whole model packed for the engine.
    pub fn pack(&self, storage: Storage) -> Result<Packed, String> {
        let context = self.config()?.context;
        self.pack_part(storage, Part::whole(self.layers()?), context)
    }

    /// The weights of `part` packed for the engine (one shard of a plan, or
    /// the whole model). Every tensor of the file is still matched by name
    /// and shape, so a shard is only built from a file the engine runs whole.
    /// `context` (at most the model's) is the longest sequence the engine
    /// will then accept: what the plan budgeted.
    pub fn pack_part(
        &self,
        storage: Storage,
        part: Part,
        context: usize,
    ) -> Result<Packed, String> {
        let mut config = self.config()?;
        if context == 0 || context > config.context {
            return Err(format!(
                "a context of {context} tokens: the model allows 1 to {}",
                config.context
            ));
        }
        config.context = context;
        let layers = self.layers()?;
        let c = config;
        if part.model_layers != layers
            || part.first_layer > part.end_layer
            || part.end_layer > layers
        {
            return Err(format!(
                "{part:?} is not a part of a model of {layers} layers"
            ));
        }
        let (d, qd, kvd) = (c.dims, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let used = RefCell::new(BTreeSet::new());
        let mut p = Packer::default();
        let take = |name: &str, shape: &[usize]| -> Result<&Tensor, String> {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| format!("GGUF has no tensor {name}"))?;
            let want: Vec<u64> = shape.iter().map(|&v| v as u64).collect();
            if t.dims != want {
                return Err(format!(
                    "tensor {name} is {:?}, the config says {want:?}",
                    t.dims
                ));
            }
            used.borrow_mut().insert(name.to_string());
            Ok(t)
        };
        let matrix = |p: &mut Packer, t: &Tensor, name: &str| -> Result<Matrix, String> {
            let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
            let weights =
                pack_matrix(p, t, rows, cols, storage).map_err(|e| format!("{name}: {e}"))?;
            Ok(Matrix {
                rows,
                cols,
                weights,
            })
        };
        let norm = |p: &mut Packer, t: &Tensor, name: &str| -> Result<_, String> {
            Ok(p.push_f32(&floats(t).map_err(|e| format!("{name}: {e}"))?))
        };
        let name = "token_embd.weight";
        let embedding_tensor = take(name, &[d, c.vocab])?;
        let tied = !self.tensors.contains_key("output.weight");
        let embedding = if part.embeds || (part.predicts && tied) {
            Some(matrix(&mut p, embedding_tensor, name)?)
        } else {
            None
        };
        let biased = self.architecture()?.has_qkv_bias();
        let mut blocks = Vec::new();
        for i in 0..layers {
            let n = |part: &str| format!("blk.{i}.{part}.weight");
            let shape = |part: &str, cols: usize, rows: usize| take(&n(part), &[cols, rows]);
            // In the file's order, so a missing tensor is named as before.
            let attn_norm = take(&n("attn_norm"), &[d])?;
            let (q, k, v, o) = (
                shape("attn_q", d, qd)?,
                shape("attn_k", d, kvd)?,
                shape("attn_v", d, kvd)?,
                shape("attn_output", qd, d)?,
            );
            let bias = |part: &str, rows: usize| -> Result<Option<&Tensor>, String> {
                match biased {
                    true => take(&format!("blk.{i}.{part}.bias"), &[rows]).map(Some),
                    false => Ok(None),
                }
            };
            let biases = [
                bias("attn_q", qd)?,
                bias("attn_k", kvd)?,
                bias("attn_v", kvd)?,
            ];
            let ffn_norm = take(&n("ffn_norm"), &[d])?;
            let tensors = [
                q,
                k,
                v,
                o,
                shape("ffn_gate", d, c.ffn)?,
                shape("ffn_up", d, c.ffn)?,
                shape("ffn_down", c.ffn, d)?,
            ];
            if !(part.first_layer..part.end_layer).contains(&i) {
                continue;
            }
            let [q, k, v, o, gate, up, down] = tensors;
            let mut bias_spans = [None; 3];
            for ((span, t), part) in bias_spans
                .iter_mut()
                .zip(biases)
                .zip(["attn_q", "attn_k", "attn_v"])
            {
                if let Some(t) = t {
                    *span = Some(norm(&mut p, t, &format!("blk.{i}.{part}.bias"))?);
                }
            }
            let [q_bias, k_bias, v_bias] = bias_spans;
            blocks.push(Layer {
                q_bias,
                k_bias,
                v_bias,
                attention_norm: norm(&mut p, attn_norm, &n("attn_norm"))?,
                q: matrix(&mut p, q, &n("attn_q"))?,
                k: matrix(&mut p, k, &n("attn_k"))?,
                v: matrix(&mut p, v, &n("attn_v"))?,
                o: matrix(&mut p, o, &n("attn_output"))?,
                mlp_norm: norm(&mut p, ffn_norm, &n("ffn_norm"))?,
                gate: matrix(&mut p, gate, &n("ffn_gate"))?,
                up: matrix(&mut p, up, &n("ffn_up"))?,
                down: matrix(&mut p, down, &n("ffn_down"))?,
            });
        }
        let final_norm_tensor = take("output_norm.weight", &[d])?;
        let head_tensor = if tied {
            None
        } else {
            Some(take("output.weight", &[d, c.vocab])?)
        };
        let (final_norm, head) = if part.predicts {
            (
                Some(norm(&mut p, final_norm_tensor, "output_norm.weight")?),
                head_tensor
                    .map(|t| matrix(&mut p, t, "output.weight"))
                    .transpose()?,
            )
        } else {
            (None, None)
        };
        // What each rotary frequency is divided by: Llama 3.1 / 3.2's
        // per-frequency factors, which llama.cpp's converter writes as a
        // tensor (the metadata names no scaling), times a linear scaling's
        // factor (every position divided by it).
        let half = c.head_dim / 2;
        let mut factors = match self.tensors.contains_key("rope_freqs.weight") {
            true => floats(take("rope_freqs.weight", &[half])?)
                .map_err(|e| format!("rope_freqs.weight: {e}"))?,
            false => vec![1.0; half],
        };
        let scaling = self.key("rope.scaling.type")?;
        if self.get(&scaling).and_then(MetadataValue::as_str) == Some("linear") {
            let key = self.key("rope.scaling.factor")?;
            let factor = self
                .float(&key)?
                .ok_or_else(|| format!("linear rope scaling without {key}"))?;
            factors.iter_mut().for_each(|f| *f *= factor as f32);
        }
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(format!("a rope frequency factor of {bad}"));
        }
        let rope_factors = factors
            .iter()
            .any(|&f| f != 1.0)
            .then(|| p.push_f32(&factors));
        let used = used.into_inner();
        let mut unused: Vec<&String> = self.tensors.keys().filter(|k| !used.contains(*k)).collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(format!(
                "GGUF tensors the decoder engine would not read (an architecture it does not implement): {unused:?}"
            ));
        }
        let header = Header {
            config,
            part,
            embedding,
            layers: blocks,
            final_norm,
            head,
            rope_factors,
        };
        Ok(Packed {
            bytes: p.finish(MAGIC, &header)?,
            config,
            layers,
        })
    }
}

impl Gguf<'_> {
    /// Rows `rows` of the model's vocabulary packed on their own: those rows
    /// of the token embedding and of the head (when not tied), and the final
    /// norm (`edgeinfer_engine::decoder::vocab`). For a vocabulary too large
    /// for one isolate, cut across several.
    pub fn pack_vocab_slice(
        &self,
        storage: Storage,
        rows: Range<usize>,
    ) -> Result<Vec<u8>, String> {
        let config = self.config()?;
        if rows.is_empty() || rows.end > config.vocab {
            return Err(format!("rows {rows:?} of a vocabulary of {}", config.vocab));
        }
        let d = config.dims;
        let mut p = Packer::default();
        let mut slice = |name: &str| -> Result<Matrix, String> {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| format!("GGUF has no tensor {name}"))?;
            if t.dims != [d as u64, config.vocab as u64] {
                return Err(format!(
                    "tensor {name} is {:?}, not {d} x {}",
                    t.dims, config.vocab
                ));
            }
            // Row-major, each row whole blocks: a row's bytes are a share.
            let row_bytes = t.bytes.len() / config.vocab;
            let part = Tensor {
                kind: t.kind,
                dims: vec![d as u64, rows.len() as u64],
                bytes: &t.bytes[rows.start * row_bytes..rows.end * row_bytes],
            };
            Ok(Matrix {
                rows: rows.len(),
                cols: d,
                weights: pack_matrix(&mut p, &part, rows.len(), d, storage)
                    .map_err(|e| format!("{name}: {e}"))?,
            })
        };
        let embedding = slice("token_embd.weight")?;
        let head = match self.tensors.contains_key("output.weight") {
            true => Some(slice("output.weight")?),
            false => None,
        };
        let norm = self
            .tensors
            .get("output_norm.weight")
            .filter(|t| t.dims == [d as u64])
            .ok_or("GGUF has no output_norm.weight of the model's width")?;
        let final_norm = p.push_f32(&floats(norm).map_err(|e| format!("output_norm.weight: {e}"))?);
        let header = VocabHeader {
            config,
            first: rows.start,
            end: rows.end,
            embedding,
            head,
            final_norm,
        };
        p.finish(VOCAB_MAGIC, &header)
    }
}

/// The panel kind keeping a GGUF tensor type's blocks, if it has one.
pub fn panel_kind(kind: GGUFTensorType) -> Option<PanelKind> {
    Some(match kind {
        GGUFTensorType::Q4_0 => PanelKind::Q4_0,
        GGUFTensorType::Q4_1 => PanelKind::Q4_1,
        GGUFTensorType::Q5_0 => PanelKind::Q5_0,
        GGUFTensorType::Q5_1 => PanelKind::Q5_1,
        GGUFTensorType::Q8_0 => PanelKind::Q8,
        GGUFTensorType::Q4_K => PanelKind::Q4K,
        GGUFTensorType::Q5_K => PanelKind::Q5K,
        GGUFTensorType::Q6_K => PanelKind::Q6K,
        _ => return None,
    })
}

fn no_kernel(kind: GGUFTensorType) -> String {
    format!(
        "tensor type {kind} has no kernel (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K do)"
    )
}

/// Bytes of `n` weights of `kind` in the packed form (the panels' bytes
/// per weight; floats as float32), rows assumed whole panels (the
/// planner's estimate).
pub fn packed_bytes(kind: GGUFTensorType, n: u64) -> Result<u64, String> {
    match kind {
        GGUFTensorType::F32 | GGUFTensorType::F16 => Ok(4 * n),
        _ => {
            let p = panel_kind(kind).ok_or_else(|| no_kernel(kind))?;
            let weights = (panels::PANEL * p.span()) as u64;
            Ok(n / weights * p.block_bytes() as u64)
        }
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// A float tensor (norm weights, biases) as float32.
fn floats(t: &Tensor) -> Result<Vec<f32>, String> {
    match t.kind {
        GGUFTensorType::F32 => Ok(t
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        GGUFTensorType::F16 => Ok(t.bytes.chunks_exact(2).map(f16).collect()),
        other => Err(format!(
            "a norm weight or bias in {other}: expected F32 or F16"
        )),
    }
}

/// The values of a matrix of `n` weights, dequantized to float32 the way
/// `gguf`'s reader does ([`panels::dequantize`]; checked against it on a
/// real file, pipeline/tests/gguf_blocks.rs).
pub fn dequantize(kind: GGUFTensorType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let out = match kind {
        GGUFTensorType::F32 | GGUFTensorType::F16 => floats(&Tensor {
            kind,
            dims: Vec::new(),
            bytes,
        })?,
        _ => {
            let p = panel_kind(kind).ok_or_else(|| no_kernel(kind))?;
            panels::dequantize(p.gguf(), bytes, n)?
        }
    };
    if out.len() != n {
        return Err(format!("{} values where {n} were expected", out.len()));
    }
    Ok(out)
}

fn pack_matrix(
    p: &mut Packer,
    t: &Tensor,
    rows: usize,
    cols: usize,
    storage: Storage,
) -> Result<Weights, String> {
    let n = rows * cols;
    if storage == Storage::Float32 || matches!(t.kind, GGUFTensorType::F32 | GGUFTensorType::F16) {
        let values = dequantize(t.kind, t.bytes, n)?;
        return Ok(Weights::F32 {
            values: p.push_f32(&values),
        });
    }
    let kind = panel_kind(t.kind).ok_or_else(|| no_kernel(t.kind))?;
    let packed = Panels::pack(kind, t.bytes, rows, cols).map_err(|e| format!("{}: {e}", t.kind))?;
    let panels = p.push(&packed, packed.len());
    // Q8_0 and Q4_1 keep their own variants: files packed before the
    // other kinds existed read the same.
    Ok(match kind {
        PanelKind::Q8 => Weights::Q8Panels { panels },
        PanelKind::Q4_1 => Weights::Q4_1Panels { panels },
        kind => Weights::Panels { kind, panels },
    })
}
