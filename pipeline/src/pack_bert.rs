//! Build time: the sentence encoder's ONNX graph (as onnxruntime's dynamic
//! quantizer left it) into the packed form of `engine/src/bert/format.rs`.
//!
//! The graph is read, not run: the weights are found by the graph's
//! structure (a uint8 Gather table, a float position table, LayerNormalization
//! nodes, MatMulInteger / MatMul nodes with a constant right-hand side and
//! their bias Add), checked against the architecture the worker implements
//! (post-norm BERT, GELU by erf, mean pooling, L2 normalization), and
//! rewritten transposed and aligned. Anything else is refused with the reason,
//! so a re-export that changes the architecture fails the build instead of
//! embedding weights the worker would misread.

use std::collections::HashMap;

use crate::onnx::{NodeProto, TensorProto};

pub use super::packed::{Packer, Span};

pub use edgeinfer_engine::bert::format;
use format::{Embedding, Header, Layer, Linear, Norm, Weights, MAGIC};

/// A constant of the graph (an initializer or a Constant node's value).
pub struct Const {
    pub dims: Vec<usize>,
    pub data_type: i32,
    pub bytes: Vec<u8>,
}

pub use crate::onnx::FLOAT;
use crate::onnx::{INT8, UINT8};

impl Const {
    fn from_proto(t: &TensorProto) -> Result<Const, String> {
        let dims = t.dims.iter().map(|&d| d as usize).collect();
        let bytes = if !t.raw_data.is_empty() {
            t.raw_data.clone()
        } else if !t.float_data.is_empty() {
            t.float_data.iter().flat_map(|f| f.to_le_bytes()).collect()
        } else {
            // int32_data holds int8/uint8 values one per element.
            t.int32_data.iter().map(|&v| v as u8).collect()
        };
        Ok(Const {
            dims,
            data_type: t.data_type,
            bytes,
        })
    }

    pub fn f32s(&self) -> Result<Vec<f32>, String> {
        if self.data_type != FLOAT {
            return Err(format!(
                "expected a float tensor, found ONNX type {}",
                self.data_type
            ));
        }
        Ok(self
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn scalar_f32(&self) -> Result<f32, String> {
        match self.f32s()?.as_slice() {
            [v] => Ok(*v),
            other => Err(format!("expected one float, found {}", other.len())),
        }
    }
}

pub struct Graph<'a> {
    pub nodes: &'a [NodeProto],
    pub consts: HashMap<&'a str, Const>,
    consumers: HashMap<&'a str, Vec<&'a NodeProto>>,
}

impl<'a> Graph<'a> {
    pub fn constant(&self, name: &str) -> Result<&Const, String> {
        self.consts
            .get(name)
            .ok_or_else(|| format!("{name:?} is not a constant"))
    }

    /// The one node that reads `name`, when there is exactly one.
    fn only_consumer(&self, name: &str) -> Result<&'a NodeProto, String> {
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([node]) => Ok(node),
            _ => Err(format!("{name:?} should feed exactly one node")),
        }
    }

    fn ops(&self, op: &str) -> Vec<&'a NodeProto> {
        self.nodes.iter().filter(|n| n.op_type == op).collect()
    }
}

/// The packed bytes of the encoder in `onnx`.
pub fn pack(onnx: &[u8]) -> Result<Vec<u8>, String> {
    with_graph(onnx, |g| BertPacker::default().pack(g))
}

/// Runs `f` on the graph of `onnx`, its constants decoded and its edges
/// indexed (shared with the dense-network packer).
pub fn with_graph<T>(
    onnx: &[u8],
    f: impl FnOnce(&Graph) -> Result<T, String>,
) -> Result<T, String> {
    let proto = crate::onnx::read(onnx)?;
    let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
    let mut consts = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.as_str(), Const::from_proto(t)?);
    }
    let mut consumers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for node in &graph.node {
        if node.op_type == "Constant" {
            if let (Some(out), Some(t)) = (
                node.output.first(),
                node.attribute.iter().find_map(|a| a.t.as_ref()),
            ) {
                consts.insert(out.as_str(), Const::from_proto(t)?);
            }
        }
        for input in &node.input {
            consumers.entry(input.as_str()).or_default().push(node);
        }
    }
    let g = Graph {
        nodes: &graph.node,
        consts,
        consumers,
    };
    f(&g)
}

/// The encoder's arrays, collected in the shared container.
#[derive(Default)]
struct BertPacker {
    p: Packer,
}

impl BertPacker {
    fn norm(&mut self, g: &Graph, node: &NodeProto, dims: usize) -> Result<Norm, String> {
        let gamma = g.constant(&node.input[1])?.f32s()?;
        let beta = g
            .constant(node.input.get(2).ok_or("LayerNormalization without bias")?)?
            .f32s()?;
        if gamma.len() != dims || beta.len() != dims {
            return Err(format!(
                "LayerNormalization {:?} is not {dims} wide",
                node.name
            ));
        }
        Ok(Norm {
            gamma: self.p.push_f32(&gamma),
            beta: self.p.push_f32(&beta),
        })
    }

    /// A MatMulInteger or MatMul with a constant right-hand side, its
    /// scales (int8) and the bias added to its output.
    fn linear(&mut self, g: &Graph, node: &NodeProto) -> Result<Linear, String> {
        let w = g.constant(&node.input[1])?;
        let [inputs, outputs] = w.dims[..] else {
            return Err(format!("weight of {:?} is not a matrix", node.name));
        };
        let (weights, product) = if node.op_type == "MatMulInteger" {
            if w.data_type != INT8 {
                return Err(format!("{:?}: weights are not int8", node.name));
            }
            let zero = g.constant(
                node.input
                    .get(3)
                    .ok_or("MatMulInteger without weight zero point")?,
            )?;
            if zero.bytes.iter().any(|&z| z != 0) {
                return Err(format!(
                    "{:?}: weights are not symmetric (zero point != 0)",
                    node.name
                ));
            }
            let producer = |name: &str| g.nodes.iter().find(|n| n.output.iter().any(|o| o == name));
            if producer(&node.input[0]).map(|n| n.op_type.as_str()) != Some("DynamicQuantizeLinear")
            {
                return Err(format!(
                    "{:?}: activations are not DynamicQuantizeLinear's",
                    node.name
                ));
            }
            // int32 -> Cast -> Mul(by activation scale x weight scales).
            let cast = g.only_consumer(&node.output[0])?;
            let mul = g.only_consumer(&cast.output[0])?;
            let scales_mul = producer(&mul.input[1]).ok_or("weight scales not found")?;
            let scales = g.constant(&scales_mul.input[1])?.f32s()?;
            if cast.op_type != "Cast" || mul.op_type != "Mul" || scales.len() != outputs {
                return Err(format!(
                    "{:?}: not the quantizer's Cast/Mul pattern",
                    node.name
                ));
            }
            let transposed: Vec<u8> = (0..outputs)
                .flat_map(|o| (0..inputs).map(move |i| (o, i)))
                .map(|(o, i)| w.bytes[i * outputs + o])
                .collect();
            let weight = self.p.push(&transposed, inputs * outputs);
            let scales = self.p.push_f32(&scales);
            (Weights::Int8 { weight, scales }, mul)
        } else {
            let values = w.f32s()?;
            let transposed: Vec<f32> = (0..outputs)
                .flat_map(|o| (0..inputs).map(move |i| (o, i)))
                .map(|(o, i)| values[i * outputs + o])
                .collect();
            (
                Weights::Float {
                    weight: self.p.push_f32(&transposed),
                },
                node,
            )
        };
        let add = g.only_consumer(&product.output[0])?;
        let bias_name = add
            .input
            .iter()
            .find(|i| g.consts.contains_key(i.as_str()))
            .ok_or_else(|| format!("{:?}: no bias", node.name))?;
        let bias = g.constant(bias_name)?.f32s()?;
        if add.op_type != "Add" || bias.len() != outputs {
            return Err(format!("{:?}: not followed by a bias Add", node.name));
        }
        Ok(Linear {
            inputs,
            outputs,
            weights,
            bias: self.p.push_f32(&bias),
        })
    }

    fn pack(mut self, g: &Graph) -> Result<Vec<u8>, String> {
        // Token table: uint8 Gather, then DequantizeLinear(scale, zero point).
        let (gather, table) = g
            .ops("Gather")
            .into_iter()
            .find_map(|n| {
                g.consts
                    .get(n.input[0].as_str())
                    .filter(|c| c.data_type == UINT8)
                    .map(|c| (n, c))
            })
            .ok_or("no uint8 token table (Gather) found")?;
        let [rows, dims] = table.dims[..] else {
            return Err("the token table is not a matrix".into());
        };
        let dequant = g.only_consumer(&gather.output[0])?;
        if dequant.op_type != "DequantizeLinear" {
            return Err("the token table is not dequantized by DequantizeLinear".into());
        }
        let scale = g.constant(&dequant.input[1])?.scalar_f32()?;
        let zero_point = *g
            .constant(&dequant.input[2])?
            .bytes
            .first()
            .ok_or("no zero point")?;
        let table = self.p.push(&table.bytes, rows * dims);
        let embedding = Embedding {
            rows,
            table,
            scale,
            zero_point,
        };

        // Positions: the float [positions, dims] table that is sliced.
        let positions = g
            .ops("Slice")
            .into_iter()
            .find_map(|n| g.consts.get(n.input[0].as_str()))
            .filter(|c| c.data_type == FLOAT && c.dims.len() == 2 && c.dims[1] == dims)
            .ok_or("no float position table (Slice of a [positions, dims] constant) found")?;
        let max_positions = positions.dims[0];
        let positions = self.p.push_f32(&positions.f32s()?);

        let norms = g.ops("LayerNormalization");
        let eps = norms
            .first()
            .and_then(|n| n.attribute.iter().find(|a| a.name == "epsilon"))
            .map_or(1e-5, |a| a.f);
        let linears: Vec<&NodeProto> = g
            .nodes
            .iter()
            .filter(|n| {
                matches!(n.op_type.as_str(), "MatMulInteger" | "MatMul")
                    && g.consts.contains_key(n.input[1].as_str())
            })
            .collect();
        let layer_count = linears.len() / 6;
        if linears.len() % 6 != 0 || norms.len() != 1 + 2 * layer_count || layer_count == 0 {
            return Err(format!(
                "{} weight matrices and {} LayerNormalizations: expected 6 and 2 per layer, plus the embeddings' norm",
                linears.len(),
                norms.len()
            ));
        }
        if g.ops("Erf").len() != layer_count
            || g.ops("Softmax").len() != layer_count
            || g.ops("ReduceL2").len() != 1
        {
            return Err(
                "expected one erf GELU and one softmax per layer, and a final L2 normalization"
                    .into(),
            );
        }
        // 1/sqrt(head size): the constant the attention scores are scaled by.
        let head_scale = g
            .ops("Softmax")
            .first()
            .and_then(|s| {
                g.nodes
                    .iter()
                    .find(|n| n.output.iter().any(|o| *o == s.input[0]))
            })
            .and_then(|add| {
                // The Mul of Q x K^T (the other input of the Add is the mask).
                g.nodes.iter().find(|n| {
                    n.op_type == "Mul"
                        && n.output.iter().any(|o| add.input.contains(o))
                        && n.input.iter().any(|i| {
                            g.nodes
                                .iter()
                                .any(|p| p.op_type == "MatMul" && p.output.contains(i))
                        })
                })
            })
            .and_then(|mul| mul.input.iter().find_map(|i| g.consts.get(i.as_str())))
            .ok_or("the attention scale (Mul before Softmax) was not found")?
            .scalar_f32()?;
        let head_dim = (1.0 / (head_scale * head_scale)).round() as usize;
        if head_dim == 0 || dims % head_dim != 0 {
            return Err(format!(
                "attention scale {head_scale} does not divide {dims} into heads"
            ));
        }

        let embedding_norm = self.norm(g, norms[0], dims)?;
        let mut layers = Vec::new();
        for l in 0..layer_count {
            let lin = &linears[l * 6..l * 6 + 6];
            let mut parts = Vec::new();
            for node in lin {
                parts.push(self.linear(g, node)?);
            }
            let [q, k, v, o, up, down]: [Linear; 6] =
                parts.try_into().map_err(|_| "six linears")?;
            let ffn = up.outputs;
            let square = [&q, &k, &v, &o]
                .iter()
                .all(|x| x.inputs == dims && x.outputs == dims);
            if !square || up.inputs != dims || down.inputs != ffn || down.outputs != dims {
                return Err(format!(
                    "layer {l}: q/k/v/o are not {dims}x{dims} or up/down do not match"
                ));
            }
            layers.push(Layer {
                q,
                k,
                v,
                o,
                attention_norm: self.norm(g, norms[1 + 2 * l], dims)?,
                up,
                down,
                output_norm: self.norm(g, norms[2 + 2 * l], dims)?,
            });
        }
        let header = Header {
            dims,
            heads: dims / head_dim,
            ffn: layers[0].up.outputs,
            max_positions,
            eps,
            embedding,
            positions,
            embedding_norm,
            layers,
        };
        self.p.finish(MAGIC, &header)
    }
}
