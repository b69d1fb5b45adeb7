"""Writes lande's dense network as an ONNX graph and checks it against lande.

Usage: python to_onnx.py <weights.json> <golden.json> <out.onnx>

The graph is features[N, 620] -> Gemm -> Relu -> Gemm -> Softmax -> probabilities[N, 50],
with a symbolic batch dimension so one run can classify a whole request.
onnxruntime then runs the written file on every golden case: top-1 must equal
lande's and every probability must be within PROB_TOLERANCE of it, or nothing is written.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnx_export  # noqa: E402

OPSET = 13
# lande sums its dot products in float64 (JS numbers), the ONNX graph in float32:
# measured worst gap 9.8e-5 on the golden set; this bound is what the Rust
# golden tests use too.
PROB_TOLERANCE = 2e-4


def build(weights: dict) -> onnx.ModelProto:
    (l1, l2) = weights["layers"]
    w1 = np.asarray(l1["weight"], dtype=np.float32)  # [hidden, in]
    b1 = np.asarray(l1["bias"], dtype=np.float32)
    w2 = np.asarray(l2["weight"], dtype=np.float32)  # [out, hidden]
    b2 = np.asarray(l2["bias"], dtype=np.float32)
    n_in, n_out = w1.shape[1], w2.shape[0]
    inits = [
        numpy_helper.from_array(w1, "dense1.weight"),
        numpy_helper.from_array(b1, "dense1.bias"),
        numpy_helper.from_array(w2, "dense2.weight"),
        numpy_helper.from_array(b2, "dense2.bias"),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "dense1.weight", "dense1.bias"], ["h"], transB=1, name="dense1"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu"),
        helper.make_node("Gemm", ["h_relu", "dense2.weight", "dense2.bias"], ["logits"], transB=1, name="dense2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "lande_t50",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out])],
        initializer=inits,
    )
    return onnx_export.hand_built(graph, "edgeinfer/models/lande/to_onnx.py", OPSET)


def dense_features(case: dict, n_in: int) -> np.ndarray:
    x = np.zeros(n_in, dtype=np.float32)
    for i, v in case["features"]:
        x[i] = v
    return x


def check(model: onnx.ModelProto, golden: dict) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    n_in = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    labels = golden["labels"]
    cases = golden["cases"]
    x = np.stack([dense_features(c, n_in) for c in cases])
    (probs,) = sess.run(None, {"features": x})
    ref = np.asarray([c["probabilities"] for c in cases], dtype=np.float64)
    worst = float(np.max(np.abs(probs - ref)))
    for c, p in zip(cases, probs):
        top = labels[int(np.argmax(p))]
        if top != c["top1"]:
            sys.exit(f"onnx top-1 {top} != lande {c['top1']} for {c['text']!r}")
    if worst > PROB_TOLERANCE:
        sys.exit(f"onnx probabilities differ from lande by {worst:.3g} (> {PROB_TOLERANCE})")
    return worst


def main() -> None:
    weights_path, golden_path, out_path = sys.argv[1:4]
    with open(weights_path, encoding="utf-8") as f:
        model = build(json.load(f))
    with open(golden_path, encoding="utf-8") as f:
        golden = json.load(f)
    worst = check(model, golden)
    onnx.save(model, out_path)
    print(f"wrote {out_path}: {len(golden['cases'])} golden cases agree with lande, max |dp| = {worst:.3g}", file=sys.stderr)


if __name__ == "__main__":
    main()
