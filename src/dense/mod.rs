//! A small dense network (lande, the heads on sentence embeddings) run from
//! the form build.rs packed it into ([`format`]), read in place like the
//! encoder's weights: a cold isolate's first classification parses a short
//! header instead of building a tract graph (64 ms for lande before).

pub use crate::bert::format::{Span, ALIGN};

pub mod format;

use crate::bert::kernels;
use format::{Header, MAGIC};

#[derive(Debug)]
pub struct Dense {
    bytes: &'static [u8],
    header: Header,
}

impl Dense {
    /// Reads the header and checks every array once (bounds, alignment,
    /// layer widths chaining), so running never indexes out of bounds.
    pub fn parse(bytes: &'static [u8]) -> Result<Dense, String> {
        if bytes.as_ptr() as usize % ALIGN != 0 {
            return Err("the packed weights are not 16-byte aligned in memory".into());
        }
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a packed dense network (bad magic): rebuild")?;
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated header")?;
        let json = rest.get(4..4 + len).ok_or("truncated header")?;
        let header: Header = serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
        let in_bounds = |span: Span, len: usize| {
            span.len == len
                && span.offset % ALIGN == 0
                && span
                    .offset
                    .checked_add(len * 4)
                    .is_some_and(|end| end <= bytes.len())
        };
        let mut width = header.layers.first().map(|l| l.inputs).ok_or("no layers")?;
        for (i, l) in header.layers.iter().enumerate() {
            if l.inputs != width
                || l.outputs == 0
                || !in_bounds(l.weight, l.inputs * l.outputs)
                || !in_bounds(l.bias, l.outputs)
            {
                return Err(format!("layer {i} is malformed"));
            }
            width = l.outputs;
        }
        Ok(Dense { bytes, header })
    }

    pub fn inputs(&self) -> usize {
        self.header.layers[0].inputs
    }

    pub fn outputs(&self) -> usize {
        self.header.layers[self.header.layers.len() - 1].outputs
    }

    fn f32s(&self, span: Span) -> &'static [f32] {
        // Checked in `parse`; every bit pattern is a valid f32.
        bytemuck::cast_slice(&self.bytes[span.offset..span.offset + span.len * 4])
    }

    /// The outputs of each row of `features` (`rows x inputs`, row-major).
    pub fn run(&self, features: &[f32]) -> Result<Vec<Vec<f32>>, String> {
        let width = self.inputs();
        if features.len() % width != 0 {
            return Err(format!(
                "{} features is not a multiple of {width}",
                features.len()
            ));
        }
        Ok(features
            .chunks_exact(width)
            .map(|row| {
                let mut x = row.to_vec();
                for l in &self.header.layers {
                    let w = self.f32s(l.weight);
                    let b = self.f32s(l.bias);
                    x = w
                        .chunks_exact(l.inputs)
                        .zip(b)
                        .map(|(wr, b)| {
                            let y = kernels::dot(&x, wr) + b;
                            // A comparison, not f32::max (a libm call in wasm).
                            if l.relu && y < 0.0 {
                                0.0
                            } else {
                                y
                            }
                        })
                        .collect();
                }
                if self.header.softmax {
                    kernels::softmax(&mut x);
                }
                x
            })
            .collect())
    }
}
