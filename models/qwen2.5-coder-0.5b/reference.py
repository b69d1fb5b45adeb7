"""Reference values of the GGUF's tensors as PyPI `gguf` dequantizes them, written to
dequant.json beside this file (checked in; pipeline/tests/gguf_blocks.rs compares our
dequantization and our panels' rows with them).

Usage: python3 -m venv V && V/bin/pip install -r requirements.txt && V/bin/python reference.py

For each chosen tensor (every block type the file holds: Q5_0, Q8_0, Q6_K, Q4_K, F32,
and the first and last rows of the 151,936-row embedding and head), rows `first..end`:
the sha256 of the float32 values (little-endian, row-major as the file stores them),
their count, and the first 8 values (to read a mismatch by).
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

sys.path.insert(0, str(Path(__file__).parent))
import fetch  # noqa: E402


# The block types this file does not hold, and those it does: 16 random blocks each
# (seeded), their f16 scales made finite, and `gguf`'s values of them.
SYNTHETIC = {
    # type: (block bytes, offsets of f16 fields)
    "Q4_0": (18, [0]),
    "Q4_1": (20, [0, 2]),
    "Q5_0": (22, [0]),
    "Q5_1": (24, [0, 2]),
    "Q8_0": (34, [0]),
    "Q4_K": (144, [0, 2]),
    "Q5_K": (176, [0, 2]),
    "Q6_K": (210, [208]),
}


def synthetic():
    from gguf import GGMLQuantizationType

    rng = np.random.default_rng(29)
    out = []
    for name, (size, f16s) in SYNTHETIC.items():
        blocks = rng.integers(0, 256, size=(16, size), dtype=np.uint8)
        for at in f16s:
            blocks[:, at + 1] &= 0x7B  # an exponent below all ones: finite
        values = dequantize(blocks, GGMLQuantizationType[name]).astype("<f4").reshape(-1)
        out.append({
            "type": name,
            "bytes": blocks.tobytes().hex(),
            "count": int(values.size),
            "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
            "head": [float(v) for v in values[:8]],
        })
    return out


def main():
    reader = GGUFReader(fetch.fetch())
    tensors = {t.name: t for t in reader.tensors}
    chosen = []
    seen = set()
    # One tensor of each type from the first layers, then the big two in part.
    for t in reader.tensors:
        kind = t.tensor_type.name
        if t.name.startswith("blk.") and (kind, t.name.split(".")[2]) not in seen:
            seen.add((kind, t.name.split(".")[2]))
            chosen.append((t.name, 0, None))
    for name in ("token_embd.weight", "output.weight"):
        rows = int(tensors[name].shape[1])
        chosen += [(name, 0, 64), (name, rows - 64, rows)]
    out = []
    for name, first, end in chosen:
        t = tensors[name]
        data = t.data
        if end is None:
            end = data.shape[0] if data.ndim > 1 else 1
        part = data[first:end] if data.ndim > 1 else data
        values = dequantize(part, t.tensor_type).astype("<f4", copy=False)
        values = np.ascontiguousarray(values).reshape(-1)
        out.append({
            "name": name,
            "type": t.tensor_type.name,
            "shape": [int(v) for v in t.shape],
            "rows": [first, end],
            "count": int(values.size),
            "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
            "head": [float(v) for v in values[:8]],
        })
        print(name, t.tensor_type.name, first, end, out[-1]["sha256"][:16], file=sys.stderr)
    path = Path(__file__).parent / "dequant.json"
    golden = {"gguf_sha256": fetch.GGUF_SHA256, "tensors": out, "synthetic": synthetic()}
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
