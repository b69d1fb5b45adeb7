//! The part of the ONNX protobuf schema (`onnx.proto`, ONNX IR) the packers
//! and the graph check read: graphs, nodes, attributes, tensors and the
//! types of a graph's inputs and outputs. Every other field is skipped on
//! decoding.
//!
//! Why not tract-onnx, which has the whole schema: the worker runs every
//! model on our own engines, so the build only reads these messages, and
//! tract was the longest unit of a fresh build by far (tract-core alone
//! ~6 minutes at opt-level 3 on 2 cores, on the critical path of the
//! worker's first build). prost's derive is all this needs. The tests still
//! run tract, as the reference the packed models are compared with.
//!
//! Field numbers are onnx.proto's. Its fields are proto2 `optional`; the
//! wire format is the same as proto3's, so absent scalars read as their
//! default here, as the packers expect.

use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

/// A constant tensor: its values in `raw_data` (little-endian), or in the
/// typed field of its element type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// `TensorProto.DataType`: 1 float, 2 uint8, 3 int8, 6 int32, 7 int64.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// int32 values, and the int8/uint8/int16 ones, one per element.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// A graph input's or output's name and type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// A value's type: of the schema's kinds (tensor, sequence, map, ...) only
/// a tensor's is read; the others leave `tensor_type` empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorType {
    /// A `TensorProto.DataType`.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Absent: the rank is not stated.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// One dimension: a number, a symbol (`batch`), or neither (unknown).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// `TensorProto.DataType` values the packers and the check name.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT64: i32 = 7;

/// The model in `bytes`.
pub fn read(bytes: &[u8]) -> Result<ModelProto, String> {
    ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))
}

impl ValueInfoProto {
    /// Its element type and dimensions (`None` for a symbolic or unknown
    /// one), or `None` when it is not a tensor of stated rank.
    pub fn tensor(&self) -> Option<(i32, Vec<Option<i64>>)> {
        let tensor = self.r#type.as_ref()?.tensor_type.as_ref()?;
        let dims = tensor.shape.as_ref()?.dim.iter().map(|d| d.dim_value);
        Some((tensor.elem_type, dims.collect()))
    }
}

/// A data type's name, for messages.
pub fn type_name(data_type: i32) -> String {
    match data_type {
        FLOAT => "f32".into(),
        UINT8 => "u8".into(),
        INT8 => "i8".into(),
        6 => "i32".into(),
        INT64 => "i64".into(),
        other => format!("ONNX data type {other}"),
    }
}
