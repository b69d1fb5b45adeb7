//! Build time: a small dense ONNX network (Gemm, optional Relu, ..., then an
//! optional Softmax; lande and the heads on sentence embeddings) into the
//! packed form of `engine/src/dense/format.rs`, weights as `outputs x inputs` rows.
//! Any other graph is refused with the reason.

use super::pack_bert::{with_graph, Packer, FLOAT};

pub use edgeinfer_engine::dense::format;
use format::{DenseLayer, Header, MAGIC};

/// The packed bytes of the dense network in `onnx`.
pub fn pack(onnx: &[u8]) -> Result<Vec<u8>, String> {
    with_graph(onnx, |g| {
        let mut packer = Packer::default();
        let mut layers: Vec<DenseLayer> = Vec::new();
        let mut softmax = false;
        for node in g.nodes {
            match node.op_type.as_str() {
                _ if softmax => return Err("nodes after Softmax".into()),
                "Gemm" => {
                    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
                    let int = |name: &str| attr(name).map_or(0, |a| a.i);
                    let float = |name: &str| attr(name).map_or(1.0, |a| a.f);
                    if int("transA") != 0 || float("alpha") != 1.0 || float("beta") != 1.0 {
                        return Err(format!(
                            "Gemm {:?}: transA, alpha or beta not plain",
                            node.name
                        ));
                    }
                    let w = g.constant(node.input.get(1).ok_or("Gemm without B")?)?;
                    let bias = g
                        .constant(node.input.get(2).ok_or("Gemm without a bias")?)?
                        .f32s()?;
                    let values = w.f32s()?;
                    if w.data_type != FLOAT || w.dims.len() != 2 {
                        return Err(format!("Gemm {:?}: B is not a float matrix", node.name));
                    }
                    // Rows of `inputs` per output: B itself when transB, else B transposed.
                    let (rows, cols) = (w.dims[0], w.dims[1]);
                    let (inputs, outputs, weight) = if int("transB") == 1 {
                        (cols, rows, values)
                    } else {
                        let t = (0..cols)
                            .flat_map(|o| (0..rows).map(move |i| (o, i)))
                            .map(|(o, i)| values[i * cols + o])
                            .collect();
                        (rows, cols, t)
                    };
                    if bias.len() != outputs || layers.last().is_some_and(|l| l.outputs != inputs) {
                        return Err(format!("Gemm {:?}: widths do not chain", node.name));
                    }
                    layers.push(DenseLayer {
                        inputs,
                        outputs,
                        weight: packer.push_f32(&weight),
                        bias: packer.push_f32(&bias),
                        relu: false,
                    });
                }
                "Relu" => match layers.last_mut() {
                    Some(l) if !l.relu => l.relu = true,
                    _ => return Err("Relu not after a Gemm".into()),
                },
                "Softmax" if !layers.is_empty() => {
                    let axis = node
                        .attribute
                        .iter()
                        .find(|a| a.name == "axis")
                        .map_or(-1, |a| a.i);
                    if axis != -1 && axis != 1 {
                        return Err(format!("Softmax over axis {axis}, not the scores"));
                    }
                    softmax = true;
                }
                other => {
                    return Err(format!(
                        "unsupported node {other} (Gemm, Relu, Softmax only)"
                    ))
                }
            }
        }
        if layers.is_empty() {
            return Err("no Gemm layers".into());
        }
        packer.finish(MAGIC, &Header { layers, softmax })
    })
}
