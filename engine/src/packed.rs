//! The container every packed model is stored in: what build.rs writes from
//! a model file and what an engine reads in place from the module's data.
//!
//! Layout: an 8-byte magic naming the engine and its layout version, the
//! header's length (u32, little-endian) and JSON, spaces up to the next
//! multiple of [`ALIGN`], then the arrays, each at a multiple of [`ALIGN`].
//! A [`Span`] is an offset from the start of that data section and a count
//! of elements, so a header never depends on its own length.
//!
//! Why a container of our own and not the ONNX or GGUF file: an engine then
//! parses a small JSON header and checks each array once, and its weights
//! are used where the data segment put them: no protobuf parse, no graph
//! optimization, no copy. The registry embeds every artifact 16-byte
//! aligned, so the data section is aligned in memory too.
//!
//! Shared with build.rs (`#[path]`): depends on serde, serde_json and
//! bytemuck only.

use serde::{Deserialize, Serialize};

/// Packed bytes that are not what their reader expects. build.rs packed
/// and checked every artifact, so this is a build bug, never a client's
/// doing; the engines' loaders all report it (no bare strings), and the
/// registry turns it into a model-load error. Plain `std` (this file is
/// also compiled into build.rs, which has no `thiserror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

impl From<String> for FormatError {
    fn from(what: String) -> Self {
        FormatError(what)
    }
}

impl From<&str> for FormatError {
    fn from(what: &str) -> Self {
        FormatError(what.to_string())
    }
}

/// Every array starts at a multiple of this many bytes (the widest SIMD load).
pub const ALIGN: usize = 16;

/// Where an array lives: a byte offset from the start of the data section
/// and its number of elements (the element type is fixed by the field).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

/// The arrays of an opened container, every view bounds- and
/// alignment-checked.
#[derive(Debug, Clone, Copy)]
pub struct Data {
    bytes: &'static [u8],
}

/// Opens a container: the bytes must be 16-byte aligned in memory and start
/// with `magic`; returns the header and the data section. `what` names the
/// engine in errors.
pub fn open<H: serde::de::DeserializeOwned>(
    bytes: &'static [u8],
    magic: &[u8; 8],
    what: &str,
) -> Result<(H, Data), FormatError> {
    if bytes.as_ptr() as usize % ALIGN != 0 {
        return Err(FormatError(format!(
            "the packed {what} is not {ALIGN}-byte aligned in memory"
        )));
    }
    let rest = bytes
        .strip_prefix(magic)
        .ok_or_else(|| FormatError(format!("not a packed {what} (bad magic): rebuild")))?;
    let len = rest
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| FormatError("truncated header".into()))?;
    let json = rest
        .get(4..4 + len)
        .ok_or_else(|| FormatError("truncated header".into()))?;
    let header = serde_json::from_slice(json).map_err(|e| FormatError(format!("header: {e}")))?;
    let start = data_start(len);
    let bytes = bytes.get(start..).unwrap_or_default();
    Ok((header, Data { bytes }))
}

fn data_start(header_len: usize) -> usize {
    (8 + 4 + header_len).next_multiple_of(ALIGN)
}

impl Data {
    /// The bytes of `span` as `len` elements of `size` bytes, when it is
    /// exactly that, aligned and in bounds.
    fn get(&self, span: Span, len: usize, size: usize) -> Result<&'static [u8], FormatError> {
        let end = len
            .checked_mul(size)
            .and_then(|n| span.offset.checked_add(n));
        match end {
            Some(end) if span.len == len && span.offset % ALIGN == 0 && end <= self.bytes.len() => {
                Ok(&self.bytes[span.offset..end])
            }
            _ => Err(FormatError(format!(
                "the array at {} ({} elements) is not {len} elements of {size} bytes in bounds",
                span.offset, span.len
            ))),
        }
    }

    pub fn f32s(&self, span: Span, len: usize) -> Result<&'static [f32], FormatError> {
        // Aligned (checked) and every bit pattern is a valid f32.
        Ok(bytemuck::cast_slice(self.get(span, len, 4)?))
    }

    pub fn i8s(&self, span: Span, len: usize) -> Result<&'static [i8], FormatError> {
        Ok(bytemuck::cast_slice(self.get(span, len, 1)?))
    }

    pub fn u8s(&self, span: Span, len: usize) -> Result<&'static [u8], FormatError> {
        self.get(span, len, 1)
    }
}

/// Collects arrays for a container (build time, and tests that pack
/// synthetic models).
#[derive(Default, Clone)]
pub struct Packer {
    data: Vec<u8>,
}

impl Packer {
    /// Appends `len` elements stored in `bytes` at the next aligned offset.
    pub fn push(&mut self, bytes: &[u8], len: usize) -> Span {
        self.data.resize(self.data.len().next_multiple_of(ALIGN), 0);
        let offset = self.data.len();
        self.data.extend_from_slice(bytes);
        Span { offset, len }
    }

    pub fn push_f32(&mut self, values: &[f32]) -> Span {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(&bytes, values.len())
    }

    pub fn push_i8(&mut self, values: &[i8]) -> Span {
        self.push(bytemuck::cast_slice(values), values.len())
    }

    /// The file: `magic`, the header, then the arrays.
    pub fn finish<H: Serialize>(self, magic: &[u8; 8], header: &H) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(header).map_err(|e| e.to_string())?;
        let len = u32::try_from(json.len()).map_err(|_| "header over 4 GiB")?;
        let start = data_start(json.len());
        let mut out = Vec::with_capacity(start + self.data.len());
        out.extend_from_slice(magic);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&json);
        // JSON allows trailing whitespace; the reader stops at `len` anyway.
        out.resize(start, b' ');
        out.extend_from_slice(&self.data);
        Ok(out)
    }
}

/// Bytes that live for the program, 16-byte aligned, as embedded ones are
/// (tests of engines on synthetic or reference weights).
pub fn leak_aligned(bytes: &[u8]) -> &'static [u8] {
    let words: Vec<u128> = bytes
        .chunks(16)
        .map(|c| {
            let mut w = [0u8; 16];
            w[..c.len()].copy_from_slice(c);
            u128::from_le_bytes(w)
        })
        .collect();
    let words: &'static [u128] = Box::leak(words.into_boxed_slice());
    &bytemuck::cast_slice(words)[..bytes.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct H {
        a: Span,
        b: Span,
    }

    #[test]
    fn round_trip_and_checked_views() {
        let mut p = Packer::default();
        let a = p.push(&[1, 2, 3], 3);
        let b = p.push_f32(&[1.5, -2.0]);
        assert_eq!(b.offset % ALIGN, 0);
        let bytes = leak_aligned(&p.finish(b"TESTMAG1", &H { a, b }).unwrap());
        let (h, data): (H, Data) = open(bytes, b"TESTMAG1", "test").unwrap();
        assert_eq!(data.u8s(h.a, 3).unwrap(), &[1, 2, 3]);
        assert_eq!(data.f32s(h.b, 2).unwrap(), &[1.5, -2.0]);
        // Wrong length, wrong magic, out of bounds, misaligned: refused.
        assert!(data.f32s(h.b, 3).is_err());
        assert!(open::<H>(bytes, b"OTHERMAG", "test").is_err());
        assert!(data
            .f32s(
                Span {
                    offset: 4096,
                    len: 2
                },
                2
            )
            .is_err());
        assert!(data.u8s(Span { offset: 1, len: 1 }, 1).is_err());
        assert!(open::<H>(&bytes[..10], b"TESTMAG1", "test").is_err());
    }
}
