//! A decoder-only language model graph run with a key/value cache.
//!
//! The graph (see `models/tinylm/README.md`) takes `input_ids` and
//! `position_ids` for the new tokens plus every layer's past keys and values,
//! and returns the logits and the presents, which become the next call's
//! pasts. So the prompt costs one pass and every generated token one
//! single-token pass: nothing is recomputed. The same code runs any
//! Llama-family graph exported with this interface.

use std::sync::Arc;

use tract_onnx::prelude::*;

/// The shape of a model's cache and vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmShape {
    /// Longest sequence (prompt + generated tokens) the model can attend to.
    pub context: usize,
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
}

/// A loaded graph, shared read-only by every generation of an isolate.
pub struct CausalLm {
    plan: Arc<TypedRunnableModel>,
    shape: LmShape,
    /// Graph input slot of `past_key_i` (even entries) and `past_value_i`
    /// (odd), layer by layer.
    past_inputs: Vec<usize>,
    /// Graph output slot of `present_key_i` / `present_value_i`, same order.
    present_outputs: Vec<usize>,
    ids_input: usize,
    positions_input: usize,
    logits_output: usize,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// The keys and values of the tokens seen so far: one generation's state.
#[derive(Clone)]
pub struct KvCache {
    past: Vec<TValue>,
    len: usize,
}

impl KvCache {
    /// Tokens already in the cache (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn tract_err(e: TractError) -> String {
    format!("{e:#}")
}

impl CausalLm {
    /// Parses and optimizes the graph (once per isolate), and finds its inputs
    /// and outputs by name, so their order in the file does not matter.
    pub fn load(onnx: &[u8], shape: LmShape) -> Result<Self, String> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(tract_err)?
            .into_optimized()
            .map_err(tract_err)?;
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(tract_err)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let output_names: Vec<String> = model
            .output_outlets()
            .map_err(tract_err)?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let find = |names: &[String], wanted: &str| {
            names
                .iter()
                .position(|n| n == wanted)
                .ok_or_else(|| format!("the graph has no `{wanted}` (it has {})", names.join(", ")))
        };
        let mut past_inputs = Vec::with_capacity(2 * shape.layers);
        let mut present_outputs = Vec::with_capacity(2 * shape.layers);
        for layer in 0..shape.layers {
            for kind in ["key", "value"] {
                past_inputs.push(find(&input_names, &format!("past_{kind}_{layer}"))?);
                present_outputs.push(find(&output_names, &format!("present_{kind}_{layer}"))?);
            }
        }
        if input_names.len() != 2 + 2 * shape.layers {
            return Err(format!(
                "the graph has {} inputs, expected input_ids, position_ids and {} pasts",
                input_names.len(),
                2 * shape.layers
            ));
        }
        Ok(CausalLm {
            ids_input: find(&input_names, "input_ids")?,
            positions_input: find(&input_names, "position_ids")?,
            logits_output: find(&output_names, "logits")?,
            plan: model.into_runnable().map_err(tract_err)?,
            shape,
            past_inputs,
            present_outputs,
        })
    }

    pub fn shape(&self) -> LmShape {
        self.shape
    }

    /// An empty cache (no token seen).
    pub fn new_cache(&self) -> KvCache {
        let empty = Tensor::zero::<f32>(&[1, self.shape.kv_heads, 0, self.shape.head_dim])
            .expect("a zero-sized tensor always allocates")
            .into_tvalue();
        KvCache {
            past: vec![empty; 2 * self.shape.layers],
            len: 0,
        }
    }

    /// Feeds `tokens` after the ones in `cache` (one pass for all of them),
    /// extends the cache, and returns the logits that predict the next token.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, String> {
        if tokens.is_empty() {
            return Err("no tokens to feed".into());
        }
        let end = cache.len + tokens.len();
        if end > self.shape.context {
            return Err(format!(
                "{end} tokens exceed the model's context of {}",
                self.shape.context
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.shape.vocab) {
            return Err(format!("token id {bad} is outside the vocabulary"));
        }
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let positions: Vec<i64> = (cache.len as i64..end as i64).collect();
        let row = [1, tokens.len()];
        let empty = || TValue::from_const(Arc::new(Tensor::default()));
        let mut inputs: TVec<TValue> = (0..2 + cache.past.len()).map(|_| empty()).collect();
        inputs[self.ids_input] = Tensor::from_shape(&row, &ids)
            .map_err(tract_err)?
            .into_tvalue();
        inputs[self.positions_input] = Tensor::from_shape(&row, &positions)
            .map_err(tract_err)?
            .into_tvalue();
        // Cheap clones (shared tensors); the cache stays valid if the run fails.
        for (slot, past) in self.past_inputs.iter().zip(&cache.past) {
            inputs[*slot] = past.clone();
        }
        let mut outputs = self.plan.run(inputs).map_err(tract_err)?;
        let logits = outputs[self.logits_output]
            .to_plain_array_view::<f32>()
            .map_err(tract_err)?;
        let vocab = self.shape.vocab;
        if logits.shape() != [1, tokens.len(), vocab] {
            return Err(format!(
                "logits of shape {:?}, expected [1, {}, {vocab}]",
                logits.shape(),
                tokens.len()
            ));
        }
        let last = logits
            .as_slice()
            .map(|all| all[all.len() - vocab..].to_vec())
            .ok_or("logits are not contiguous")?;
        cache.past = self
            .present_outputs
            .iter()
            .map(|&slot| std::mem::replace(&mut outputs[slot], empty()))
            .collect();
        cache.len = end;
        Ok(last)
    }
}
