"""What the scripts that write the shipped ONNX graphs and their golden files share
(lande/to_onnx.py, minilm/export.py, sentiment/train.py, tinylm/export.py): each
claims byte-for-byte reproducible outputs, and the Rust side reads them all with
tract, so the steps that decide those bytes are written once.

Imported after `sys.path.insert(0, <models/>)`, as the fetchers import wheels.py;
needs onnx, which every one of those scripts' venvs has.
"""

import json

import onnx
from onnx import helper

# A graph written by hand gets this IR version, not the newest the installed onnx
# knows: older readers (tract) accept it.
IR_VERSION = 8


def hand_built(graph: onnx.GraphProto, producer: str, opset: int) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=producer,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def finish(model: onnx.ModelProto, producer: str) -> onnx.ModelProto:
    """Strips value_info (tract cannot unify it with symbolic dims), and the doc
    strings and metadata the exporters fill in, so the bytes depend only on the graph."""
    del model.graph.value_info[:]
    model.producer_name = producer
    model.producer_version = ""
    model.doc_string = ""
    model.graph.doc_string = ""
    for n in model.graph.node:
        n.doc_string = ""
    del model.metadata_props[:]
    return model


def g7(x) -> float:
    return float(f"{float(x):.7g}")


def vec(v) -> str:
    return "[" + ",".join(repr(g7(x)) for x in v) + "]"


def write_golden(path, meta: dict, cases: list) -> None:
    """golden.json: the meta keys, then "cases", one case a line, so a regenerated
    file diffs case by case. `cases` are the cases' JSON objects, already written."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        for k, v in meta.items():
            f.write(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write('  "cases": [\n')
        for i, case in enumerate(cases):
            f.write("    " + case + ("," if i + 1 < len(cases) else "") + "\n")
        f.write("  ]\n}\n")
