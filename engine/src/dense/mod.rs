//! A small dense network (lande, the heads on sentence embeddings) run from
//! the form build.rs packed it into ([`format`]): a cold isolate's first
//! classification parses a short header instead of building a tract graph
//! (lande's `init`: ~60 ms before, 2 ms now). The weights are copied once,
//! padded to the tiled float kernel's shape (inputs to a multiple of 8,
//! outputs of 4; lande's are 300 KB), so a batch runs as matrix tiles.

pub use crate::packed::Span;

pub mod format;

use crate::error::InputError;
use crate::kernels;
use crate::packed;
use crate::packed::FormatError;
use format::{Header, MAGIC};

#[derive(Debug)]
pub struct Dense {
    layers: Vec<Layer>,
    softmax: bool,
}

/// One layer, zero-padded: `weight` is `outputs_padded x inputs_padded`.
#[derive(Debug)]
struct Layer {
    inputs: usize,
    inputs_padded: usize,
    outputs: usize,
    outputs_padded: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    relu: bool,
}

impl Dense {
    /// Reads the header and checks every array once (bounds, alignment,
    /// layer widths chaining), so running never indexes out of bounds.
    pub fn parse(bytes: &'static [u8]) -> Result<Dense, FormatError> {
        let (header, data): (Header, _) = packed::open(bytes, MAGIC, "dense network")?;
        let mut width = header.layers.first().map(|l| l.inputs).ok_or("no layers")?;
        let mut arrays = Vec::with_capacity(header.layers.len());
        for (i, l) in header.layers.iter().enumerate() {
            let weight = data.f32s(l.weight, l.inputs * l.outputs);
            let bias = data.f32s(l.bias, l.outputs);
            match (weight, bias) {
                (Ok(w), Ok(b)) if l.inputs == width && l.outputs > 0 => arrays.push((w, b)),
                _ => return Err(FormatError(format!("layer {i} is malformed"))),
            }
            width = l.outputs;
        }
        let layers = header
            .layers
            .iter()
            .zip(arrays)
            .map(|(l, (weights, biases))| {
                let (inputs_padded, outputs_padded) =
                    (l.inputs.next_multiple_of(8), l.outputs.next_multiple_of(4));
                let mut weight = vec![0.0; outputs_padded * inputs_padded];
                for (row, src) in weight
                    .chunks_exact_mut(inputs_padded)
                    .zip(weights.chunks_exact(l.inputs))
                {
                    row[..l.inputs].copy_from_slice(src);
                }
                let mut bias = biases.to_vec();
                bias.resize(outputs_padded, 0.0);
                Layer {
                    inputs: l.inputs,
                    inputs_padded,
                    outputs: l.outputs,
                    outputs_padded,
                    weight,
                    bias,
                    relu: l.relu,
                }
            })
            .collect();
        Ok(Dense {
            layers,
            softmax: header.softmax,
        })
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// The outputs of each row of `features` (`rows x inputs`, row-major).
    pub fn run(&self, features: &[f32]) -> Result<Vec<Vec<f32>>, InputError> {
        let width = self.inputs();
        if features.len() % width != 0 {
            return Err(InputError(format!(
                "{} features is not a multiple of {width}",
                features.len()
            )));
        }
        let rows = features.len() / width;
        // Rows of `width` live values in a buffer `stride` wide, zeros after.
        let (mut x, mut width, mut stride) = (features.to_vec(), width, width);
        for l in &self.layers {
            let mut input = vec![0.0; rows * l.inputs_padded];
            for (dst, src) in input
                .chunks_exact_mut(l.inputs_padded)
                .zip(x.chunks_exact(stride))
            {
                dst[..width].copy_from_slice(&src[..width]);
            }
            let mut out = vec![0.0; rows * l.outputs_padded];
            kernels::linear_f32(&input, l.inputs_padded, &l.weight, &l.bias, &mut out);
            if l.relu {
                for v in &mut out {
                    // A comparison, not f32::max (a libm call in wasm).
                    if *v < 0.0 {
                        *v = 0.0;
                    }
                }
            }
            (x, width, stride) = (out, l.outputs, l.outputs_padded);
        }
        Ok(x.chunks_exact(stride)
            .map(|row| {
                let mut scores = row[..width].to_vec();
                if self.softmax {
                    kernels::softmax(&mut scores);
                }
                scores
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed::leak_aligned as leak;

    #[test]
    fn refuses_what_it_cannot_run() {
        assert!(Dense::parse(leak(b"EIBERT01....")).is_err());
        assert!(Dense::parse(leak(b"EIDENSE1")).is_err());
        let mut bad = b"EIDENSE1".to_vec();
        let json = br#"{"layers":[{"inputs":2,"outputs":1,"weight":{"offset":4096,"len":2},"bias":{"offset":0,"len":1},"relu":false}],"softmax":false}"#;
        bad.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bad.extend_from_slice(json);
        assert!(Dense::parse(leak(&bad)).unwrap_err().0.contains("layer 0"));
    }
}
