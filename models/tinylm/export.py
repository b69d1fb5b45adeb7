"""ONNX export, checks, quantization, held-out perplexity and golden file of tinylm.

Usage: python export.py <work_dir> <out_dir>

Reads work_dir/model.pt (train.py), work_dir/*_ids.npy and corpus.json (data.py),
out_dir/tokenizer.json. Writes out_dir/model.onnx (the shipped graph),
out_dir/reference_fp32.onnx (the same graph unquantized, for the golden test),
out_dir/golden.json, and work_dir/{model_fp32,model_int8_weight_only,
model_int8_dynamic}.onnx and export.json (every number below).

The graph is written node by node with onnx.helper (no tracing), opset 17, using
only MatMul Gather Mul Add Div Sqrt ReduceMean Softmax Concat Reshape Transpose
Slice Unsqueeze Where Range Less Shape Neg Sigmoid (+ DequantizeLinear on weights
in the int8 weight-only variant); no value_info; symbolic S (new tokens) and P
(cached tokens):

  inputs   input_ids        int64   [1, S]
           position_ids     int64   [1, S]           P..P+S-1 (< n_ctx: rotary tables)
           past_key_<i>     float32 [1, n_kv_heads, P, head_dim]   i = 0..n_layers-1
           past_value_<i>   float32 [1, n_kv_heads, P, head_dim]
  outputs  logits           float32 [1, S, vocab]
           present_key_<i>  float32 [1, n_kv_heads, P+S, head_dim]
           present_value_<i> float32 [1, n_kv_heads, P+S, head_dim]

The causal mask is built in the graph from the cache length: query j (0-based in
the S new tokens) attends to keys 0..P+j. Nothing is written unless:
  (a) onnxruntime's fp32 logits equal the torch model's (max abs diff < 1e-4) on
      full windows and short sequences;
  (b) decoding with the KV cache (token by token from P=0, and in chunks mixing
      S=1 and S>1 with P>0) gives the logits and cache of the full pass (< 1e-4),
      for the fp32 graph and for the shipped graph;
  (c) the shipped graph holds only the allowed operators and no value_info;
  (d) the shipped graph's held-out perplexity is within MAX_PPL_INCREASE of fp32.
"""

import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

import common
from model import MASK_VALUE, Config, TinyLM, count_params, rope_tables

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnx_export  # noqa: E402

PRODUCER = "edgeinfer/models/tinylm/export.py"
OPSET = 17
TOL = 1e-4
MAX_NEW_TOKENS = 40
MAX_PPL_INCREASE = 0.02
SHIPPED = "int8_weight_only"
BASE_OPS = {"MatMul", "Gather", "Mul", "Add", "Div", "Sqrt", "ReduceMean", "Softmax",
            "Concat", "Reshape", "Transpose", "Slice", "Unsqueeze", "Where", "Range",
            "Less", "Shape", "Neg", "Sigmoid"}
ALLOWED_OPS = {"fp32": BASE_OPS, "int8_weight_only": BASE_OPS | {"DequantizeLinear"}}

# Golden prompts: chat conversations (rendered with the chat template, generation
# prompt added) and plain text continuations (<|bos|> + text).
GOLDEN_PROMPTS = [
    {"messages": [{"role": "system", "content": "A scene from Hamlet, by William Shakespeare."},
                  {"role": "user", "content": "Who's there?"}]},
    {"messages": [{"role": "user", "content": "What news from the court, good sir?"}]},
    {"messages": [{"role": "user", "content": "I pray you, tell me of your love."}]},
    {"messages": [{"role": "system", "content": "A scene from Macbeth, by William Shakespeare."},
                  {"role": "user", "content": "My lord, the queen is dead."}]},
    {"messages": [{"role": "user", "content": "Good morrow, friend."},
                  {"role": "assistant", "content": "Good morrow, sir. What would you have?"},
                  {"role": "user", "content": "Bring me my horse, and quickly."}]},
    {"messages": [{"role": "user", "content": "Hello! Can you help me write a poem about the sea?"}]},
    {"text": "Ham.\nTo be, or not to be,--that is the question:--\n"},
    {"text": "Shall I compare thee to a summer's day?\n"},
    {"text": "Of man's first disobedience, and the fruit\n"},
    {"text": "KING HENRY.\nOnce more unto the breach, dear friends,"},
]


# ---------------------------------------------------------------- graph


class Builder:
    """Collects nodes and initializers; names are deterministic."""

    def __init__(self, quantize):
        self.quantize = quantize
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, array):
        # np.ascontiguousarray would turn a scalar into shape [1]; ONNX Range
        # (and tract) need true scalars.
        array = np.asarray(array)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array).reshape(array.shape), name))
        return name

    def op(self, op_type, inputs, name=None, n_out=1, **attrs):
        self.n += 1
        name = name or f"{op_type.lower()}_{self.n}"
        outs = [name] if n_out == 1 else [f"{name}:{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, name, w, axis):
        """A weight matrix, float32, or int8 symmetric per channel along `axis`
        (the output channels) behind a DequantizeLinear."""
        w = np.asarray(w, dtype=np.float32)
        if not self.quantize:
            return self.const(name, w)
        q, scale = quantize_int8(w, axis)
        self.const(name + ".q", q)
        self.const(name + ".scale", scale)
        self.const(name + ".zero_point", np.zeros_like(scale, dtype=np.int8))
        return self.op("DequantizeLinear", [name + ".q", name + ".scale", name + ".zero_point"],
                       name=name, axis=axis)


def quantize_int8(w, axis):
    """Symmetric int8 per channel: scale = max|w| / 127 over the other axis, q =
    round-half-even(w / scale) in [-127, 127]; returns (q, scale [channels])."""
    other = 1 - axis
    amax = np.abs(w).max(axis=other)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1, 1]
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def build_graph(model: TinyLM, quantize: bool) -> onnx.ModelProto:
    cfg = model.cfg
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    nh, nkv, hd, d, ff, L = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model,
                             cfg.d_ff, cfg.n_layers)
    g = nh // nkv
    b = Builder(quantize)
    i64 = lambda name, v: b.const(name, np.array(v, dtype=np.int64))  # noqa: E731
    f32 = lambda name, v: b.const(name, np.array(v, dtype=np.float32))  # noqa: E731

    # shared constants
    i64("c.axes0", [0]); i64("c.axes1", [1]); i64("c.axes_last", [-1])
    i64("c.zero", 0); i64("c.one", 1); i64("c.two", 2)
    f32("c.eps", cfg.norm_eps); f32("c.mask", MASK_VALUE); f32("c.scale", 1.0 / math.sqrt(hd))
    i64("c.shape_bsh_q", [0, 0, nh, hd]); i64("c.shape_bsh_kv", [0, 0, nkv, hd])
    i64("c.shape_group", [1, nkv, -1, hd]); i64("c.shape_heads", [1, nh, -1, hd])
    i64("c.shape_bsd", [0, 0, nh * hd])
    for name, (lo, hi) in {"q": (0, nh * hd), "k": (nh * hd, (nh + nkv) * hd),
                           "v": ((nh + nkv) * hd, (nh + 2 * nkv) * hd),
                           "gate": (0, ff), "up": (ff, 2 * ff),
                           "x1": (0, hd // 2), "x2": (hd // 2, hd)}.items():
        i64(f"c.{name}.start", [lo]); i64(f"c.{name}.end", [hi])
    cos, sin = rope_tables(cfg)
    b.const("rope.cos", cos.numpy()); b.const("rope.sin", sin.numpy())

    def rmsnorm(x, w, prefix):
        sq = b.op("Mul", [x, x], name=f"{prefix}.sq")
        ms = b.op("ReduceMean", [sq], name=f"{prefix}.mean", axes=[-1], keepdims=1)
        den = b.op("Sqrt", [b.op("Add", [ms, "c.eps"], name=f"{prefix}.add_eps")], name=f"{prefix}.sqrt")
        xn = b.op("Div", [x, den], name=f"{prefix}.div")
        return b.op("Mul", [xn, b.const(f"{prefix}.weight", w)], name=f"{prefix}.mul")

    def last_axis_slice(x, part, name):
        return b.op("Slice", [x, f"c.{part}.start", f"c.{part}.end", "c.axes_last"], name=name)

    def rope(x, c, s, prefix):
        x1 = last_axis_slice(x, "x1", f"{prefix}.x1")
        x2 = last_axis_slice(x, "x2", f"{prefix}.x2")
        rot = b.op("Concat", [b.op("Neg", [x2], name=f"{prefix}.neg"), x1], name=f"{prefix}.rot", axis=-1)
        return b.op("Add", [b.op("Mul", [x, c], name=f"{prefix}.xcos"),
                            b.op("Mul", [rot, s], name=f"{prefix}.rotsin")], name=f"{prefix}.out")

    embed = b.weight("embed", sd["embed"], axis=0)
    x = b.op("Gather", [embed, "input_ids"], name="embed.gather", axis=0)  # [1,S,d]
    c = b.op("Unsqueeze", [b.op("Gather", ["rope.cos", "position_ids"], name="rope.cos.gather", axis=0),
                           "c.axes1"], name="rope.cos.unsq")  # [1,1,S,hd]
    s = b.op("Unsqueeze", [b.op("Gather", ["rope.sin", "position_ids"], name="rope.sin.gather", axis=0),
                           "c.axes1"], name="rope.sin.unsq")

    # causal mask from the cache length: future[j, t] = (P + j < t), tiled for the g
    # query heads sharing a kv head (rows ordered (head in group, position)).
    S = b.op("Gather", [b.op("Shape", ["input_ids"], name="mask.shape_ids"), "c.one"], name="mask.S", axis=0)
    P = b.op("Gather", [b.op("Shape", ["past_key_0"], name="mask.shape_past"), "c.two"], name="mask.P", axis=0)
    T = b.op("Add", [P, S], name="mask.T")
    q_pos = b.op("Range", [P, T, "c.one"], name="mask.q_pos")
    k_pos = b.op("Range", ["c.zero", T, "c.one"], name="mask.k_pos")
    future = b.op("Less", [b.op("Unsqueeze", [q_pos, "c.axes1"], name="mask.q_col"),
                           b.op("Unsqueeze", [k_pos, "c.axes0"], name="mask.k_row")], name="mask.future")
    future_g = b.op("Concat", [future] * g, name="mask.future_g", axis=0)  # [g*S, T]

    for i in range(L):
        p = f"l{i}"
        h = rmsnorm(x, sd[f"blocks.{i}.attn_norm.weight"], f"{p}.attn_norm")
        qkv = b.op("MatMul", [h, b.weight(f"{p}.w_qkv", sd[f"blocks.{i}.w_qkv"], axis=1)], name=f"{p}.qkv")
        heads = {}
        for part, shape in (("q", "c.shape_bsh_q"), ("k", "c.shape_bsh_kv"), ("v", "c.shape_bsh_kv")):
            t = last_axis_slice(qkv, part, f"{p}.{part}")
            t = b.op("Reshape", [t, shape], name=f"{p}.{part}.reshape")
            heads[part] = b.op("Transpose", [t], name=f"{p}.{part}.heads", perm=[0, 2, 1, 3])
        q = rope(heads["q"], c, s, f"{p}.q.rope")
        k = rope(heads["k"], c, s, f"{p}.k.rope")
        k_all = b.op("Concat", [f"past_key_{i}", k], name=f"present_key_{i}", axis=2)
        v_all = b.op("Concat", [f"past_value_{i}", heads["v"]], name=f"present_value_{i}", axis=2)
        qs = b.op("Reshape", [b.op("Mul", [q, "c.scale"], name=f"{p}.q.scaled"), "c.shape_group"],
                  name=f"{p}.q.group")  # [1, nkv, g*S, hd]
        kt = b.op("Transpose", [k_all], name=f"{p}.k.t", perm=[0, 1, 3, 2])
        scores = b.op("MatMul", [qs, kt], name=f"{p}.scores")  # [1, nkv, g*S, T]
        scores = b.op("Where", [future_g, "c.mask", scores], name=f"{p}.masked")
        probs = b.op("Softmax", [scores], name=f"{p}.probs", axis=-1)
        o = b.op("MatMul", [probs, v_all], name=f"{p}.attn")  # [1, nkv, g*S, hd]
        o = b.op("Reshape", [o, "c.shape_heads"], name=f"{p}.attn.heads")  # [1, nh, S, hd]
        o = b.op("Transpose", [o], name=f"{p}.attn.t", perm=[0, 2, 1, 3])
        o = b.op("Reshape", [o, "c.shape_bsd"], name=f"{p}.attn.merge")
        o = b.op("MatMul", [o, b.weight(f"{p}.w_o", sd[f"blocks.{i}.w_o"], axis=1)], name=f"{p}.o")
        x = b.op("Add", [x, o], name=f"{p}.attn.residual")
        h = rmsnorm(x, sd[f"blocks.{i}.mlp_norm.weight"], f"{p}.mlp_norm")
        gu = b.op("MatMul", [h, b.weight(f"{p}.w_gate_up", sd[f"blocks.{i}.w_gate_up"], axis=1)],
                  name=f"{p}.gate_up")
        gate = last_axis_slice(gu, "gate", f"{p}.gate")
        up = last_axis_slice(gu, "up", f"{p}.up")
        act = b.op("Mul", [gate, b.op("Sigmoid", [gate], name=f"{p}.sigmoid")], name=f"{p}.silu")
        act = b.op("Mul", [act, up], name=f"{p}.swiglu")
        down = b.op("MatMul", [act, b.weight(f"{p}.w_down", sd[f"blocks.{i}.w_down"], axis=1)],
                    name=f"{p}.down")
        x = b.op("Add", [x, down], name=f"{p}.mlp.residual")

    h = rmsnorm(x, sd["final_norm.weight"], "final_norm")
    if cfg.tie_embeddings:
        head = b.op("Transpose", [embed], name="head.weight", perm=[1, 0])
    else:
        head = b.weight("head.weight", sd["w_head"], axis=1)
    b.op("MatMul", [h, head], name="logits")

    f, i64t = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", i64t, [1, "S"]),
              helper.make_tensor_value_info("position_ids", i64t, [1, "S"])]
    outputs = [helper.make_tensor_value_info("logits", f, [1, "S", cfg.vocab_size])]
    for i in range(L):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}_{i}", f, [1, nkv, "P", hd]))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}_{i}", f, [1, nkv, "P+S", hd]))
    # Names: "/"-separated, no dots, so that the sub-nodes tract names "<node>.<suffix>"
    # when it expands an operator can never collide with one of ours.
    for node in b.nodes:
        node.name = node.name.replace(".", "/")
        node.input[:] = [t.replace(".", "/") for t in node.input]
        node.output[:] = [t.replace(".", "/") for t in node.output]
    for init in b.inits:
        init.name = init.name.replace(".", "/")
    graph = helper.make_graph(b.nodes, "tinylm", inputs, outputs, b.inits)
    return onnx_export.finish(onnx_export.hand_built(graph, PRODUCER, OPSET), PRODUCER)


def dynamic_int8(fp32_path: Path, out_path: Path) -> onnx.ModelProto:
    """onnxruntime quantize_dynamic: QInt8 weights per output channel, uint8
    activations quantized per tensor at run time (MatMulInteger)."""
    quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8)
    m = onnx_export.finish(onnx.load(str(out_path)), PRODUCER)
    onnx.save(m, str(out_path))
    return m


# ---------------------------------------------------------------- running


def session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtLM:
    def __init__(self, path, cfg: Config):
        self.sess, self.cfg = session(path), cfg

    def empty_cache(self):
        z = np.zeros((1, self.cfg.n_kv_heads, 0, self.cfg.head_dim), dtype=np.float32)
        return [(z, z) for _ in range(self.cfg.n_layers)]

    def run(self, ids, cache):
        """ids [S] new tokens after the P cached ones; returns (logits [S,V], cache)."""
        ids = np.asarray(ids, dtype=np.int64)
        P = cache[0][0].shape[2]
        feed = {"input_ids": ids[None, :],
                "position_ids": np.arange(P, P + len(ids), dtype=np.int64)[None, :]}
        for i, (k, v) in enumerate(cache):
            feed[f"past_key_{i}"], feed[f"past_value_{i}"] = k, v
        out = self.sess.run(None, feed)
        L = self.cfg.n_layers
        return out[0][0], [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(L)]

    def full(self, ids):
        return self.run(ids, self.empty_cache())

    def chunked(self, ids, sizes):
        assert sum(sizes) == len(ids)
        cache, logits, pos = self.empty_cache(), [], 0
        for n in sizes:
            lg, cache = self.run(ids[pos:pos + n], cache)
            logits.append(lg)
            pos += n
        return np.concatenate(logits), cache


def torch_logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None, :])[0][0].numpy()


def greedy_torch(model, prompt, n):
    """Reference: recomputes the whole sequence at each step (no cache)."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(torch_logits(model, ids)[-1])))
    return ids[len(prompt):]


def greedy_ort(lm: OrtLM, prompt, n):
    """With the KV cache: the prompt in one pass (P=0, S=len), then one token at a time."""
    logits, cache = lm.full(prompt)
    first = logits[-1].copy()
    out = []
    for step in range(n):
        out.append(int(np.argmax(logits[-1])))
        if step + 1 < n:
            logits, cache = lm.run([out[-1]], cache)
    return out, first


# ---------------------------------------------------------------- checks


def check(cond, msg):
    if not cond:
        sys.exit("export.py: check failed: " + msg)
    print("ok:", msg, flush=True)


def check_against_torch(model, lm, seqs):
    worst = 0.0
    for seq in seqs:
        diff = float(np.abs(torch_logits(model, seq) - lm.full(seq)[0]).max())
        worst = max(worst, diff)
    check(worst < TOL, f"fp32 onnxruntime vs torch logits, {len(seqs)} sequences: max abs diff {worst:.2e} < {TOL}")
    return worst


def check_kv_cache(lm, seq, schedules, label):
    full_logits, full_cache = lm.full(seq)
    worst = 0.0
    for sizes in schedules:
        logits, cache = lm.chunked(seq, sizes)
        worst = max(worst, float(np.abs(logits - full_logits).max()))
        for (k, v), (fk, fv) in zip(cache, full_cache):
            assert k.shape == fk.shape == (1, lm.cfg.n_kv_heads, len(seq), lm.cfg.head_dim), k.shape
            worst = max(worst, float(np.abs(k - fk).max()), float(np.abs(v - fv).max()))
    check(worst < TOL, f"{label}: KV-cache decoding (token by token from P=0; chunks with P>0, S=1 "
                       f"and S>1) equals the full pass: max abs diff {worst:.2e} < {TOL}")
    return worst


def check_ops(m, variant):
    ops = {n.op_type for n in m.graph.node}
    extra = ops - ALLOWED_OPS[variant]
    check(not extra and len(m.graph.value_info) == 0 and m.opset_import[0].version == OPSET,
          f"{variant}: operators {sorted(ops)} allowed, no value_info, opset {OPSET}")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def decode_speed(lm, prompt, n=64):
    logits, cache = lm.full(prompt)
    t = time.perf_counter()
    tok = int(np.argmax(logits[-1]))
    for _ in range(n):
        logits, cache = lm.run([tok], cache)
        tok = int(np.argmax(logits[-1]))
    return (time.perf_counter() - t) / n * 1000.0


# ---------------------------------------------------------------- main


def main(work_dir, out_dir):
    common.single_thread()
    work, out = Path(work_dir), Path(out_dir)
    ckpt = torch.load(work / "model.pt", map_location="cpu", weights_only=True)
    cfg = Config(**ckpt["config"])
    check(cfg == common.model_config(), "checkpoint config is common.model_config()")
    model = TinyLM(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    corpus = json.loads((work / "corpus.json").read_text())
    train_log = json.loads((work / "train.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    heldout = np.load(work / "heldout_ids.npy").astype(np.int64)
    heldout_chat = np.load(work / "heldout_chat_ids.npy").astype(np.int64)

    # chat template: the Jinja string renders like common.render_chat
    import jinja2

    tpl = jinja2.Environment().from_string(common.CHAT_TEMPLATE)
    for p in GOLDEN_PROMPTS:
        if "messages" in p:
            check(tpl.render(messages=p["messages"], add_generation_prompt=True)
                  == common.render_chat(p["messages"]), "CHAT_TEMPLATE renders like render_chat")
            break

    paths = {v: work / f"model_{v}.onnx" for v in ("fp32", "int8_weight_only", "int8_dynamic")}
    onnx.save(build_graph(model, quantize=False), str(paths["fp32"]))
    onnx.save(build_graph(model, quantize=True), str(paths["int8_weight_only"]))
    dyn = dynamic_int8(paths["fp32"], paths["int8_dynamic"])
    print("int8_dynamic operators:", sorted({n.op_type for n in dyn.graph.node}), flush=True)
    check_ops(onnx.load(str(paths["fp32"])), "fp32")
    check_ops(onnx.load(str(paths["int8_weight_only"])), "int8_weight_only")
    lms = {v: OrtLM(p, cfg) for v, p in paths.items()}

    # (a) fp32 graph vs torch
    n = cfg.n_ctx
    seqs = [heldout[i:i + n] for i in (0, 40000, len(heldout) - n)] + [heldout[7:8], heldout[100:137]]
    seqs += [heldout_chat[:n]]
    diff_torch = check_against_torch(model, lms["fp32"], seqs)
    # (b) KV cache
    seq = heldout_chat[1000:1000 + n]
    schedules = [[1] * 64, [5, 1, 12, 1, 1, 30, 14], [100, 1, 1, 54, 100], [1, 255]]
    kv_fp32 = check_kv_cache(lms["fp32"], seq, [s + [n - sum(s)] if sum(s) < n else s for s in schedules],
                             "fp32")
    kv_shipped = check_kv_cache(lms[SHIPPED], seq, [s + [n - sum(s)] if sum(s) < n else s for s in schedules],
                                SHIPPED)

    # held-out perplexity
    ppl, timing = {}, {}
    evaluators = {"torch_fp32": lambda ids: torch_logits(model, ids[0])}
    for v, lm in lms.items():
        evaluators["onnx_" + v] = lambda ids, lm=lm: lm.full(ids[0])[0]
    for name, fn in evaluators.items():
        t = time.time()
        ppl[name] = {}
        for split, stream, n_bytes in (("heldout", heldout, corpus["heldout_bytes"]),
                                       ("heldout_chat", heldout_chat, None)):
            nll, cnt = common.heldout_nll(stream, n, fn)
            ppl[name][split] = common.perplexity_report(nll, cnt, n_bytes)
        timing[name] = round(time.time() - t, 1)
        print(name, {k: round(v["perplexity"], 3) for k, v in ppl[name].items()}, f"{timing[name]}s", flush=True)
    base = ppl["onnx_fp32"]["heldout"]["perplexity"]
    shipped_ppl = ppl["onnx_" + SHIPPED]["heldout"]["perplexity"]
    check(shipped_ppl <= base * (1 + MAX_PPL_INCREASE),
          f"{SHIPPED} held-out perplexity {shipped_ppl:.3f} within {MAX_PPL_INCREASE:.0%} of fp32 {base:.3f}")

    # decode speed, onnxruntime, one thread (for the record; tract in wasm differs)
    speed = {v: round(decode_speed(lm, heldout[:32]), 2) for v, lm in lms.items()}
    sizes = {v: p.stat().st_size for v, p in paths.items()}
    print("ms/token:", speed, "bytes:", sizes, flush=True)

    # shipped artifact
    shutil.copyfile(paths[SHIPPED], out / "model.onnx")
    # The unquantized graph: not embedded; the golden test runs it natively
    # against fp32_ids (greedy decoding before quantization).
    shutil.copyfile(paths["fp32"], out / "reference_fp32.onnx")
    shipped = OrtLM(out / "model.onnx", cfg)

    # golden
    special = {t: tok.token_to_id(t) for t in common.SPECIAL_TOKENS}
    cases = []
    for k, p in enumerate(GOLDEN_PROMPTS):
        text = common.render_chat(p["messages"]) if "messages" in p else common.BOS + p["text"]
        prompt_ids = tok.encode(text, add_special_tokens=False).ids
        fp32_ids = greedy_torch(model, prompt_ids, MAX_NEW_TOKENS)
        fp32_onnx_ids, _ = greedy_ort(lms["fp32"], prompt_ids, MAX_NEW_TOKENS)
        shipped_ids, first_logits = greedy_ort(shipped, prompt_ids, MAX_NEW_TOKENS)
        case = {"kind": "chat" if "messages" in p else "text", **p, "prompt": text,
                "prompt_ids": prompt_ids, "fp32_ids": fp32_ids, "shipped_ids": shipped_ids,
                "fp32_text": tok.decode(fp32_ids, skip_special_tokens=False),
                "shipped_text": tok.decode(shipped_ids, skip_special_tokens=False),
                "fp32_onnx_kv_cache_matches_torch": fp32_onnx_ids == fp32_ids,
                "shipped_matches_fp32_tokens": sum(1 for _ in iter_prefix(shipped_ids, fp32_ids))}
        if k == 0:
            case["shipped_first_step_logits"] = [float(x) for x in first_logits]
            case["fp32_first_step_logits"] = [float(x) for x in torch_logits(model, prompt_ids)[-1]]
        cases.append(case)
        print(k, repr(case["shipped_text"][:100]), flush=True)
    check(all(c["fp32_onnx_kv_cache_matches_torch"] for c in cases),
          "greedy decoding with the fp32 graph and KV cache gives the torch reference's tokens")

    io = {"inputs": {"input_ids": ["int64", [1, "S"]], "position_ids": ["int64", [1, "S"]]},
          "outputs": {"logits": ["float32", [1, "S", cfg.vocab_size]]}}
    for i in range(cfg.n_layers):
        for kind in ("key", "value"):
            io["inputs"][f"past_{kind}_{i}"] = ["float32", [1, cfg.n_kv_heads, "P", cfg.head_dim]]
            io["outputs"][f"present_{kind}_{i}"] = ["float32", [1, cfg.n_kv_heads, "P+S", cfg.head_dim]]
    golden = {
        "model": common.MODEL_ID, "version": common.MODEL_VERSION,
        "shipped_variant": SHIPPED,
        "config": cfg.to_dict(), "parameters": count_params(model),
        "io": io,
        "special_tokens": special,
        "stop_ids": [special[common.END], special[common.EOS]],
        "chat_template": common.CHAT_TEMPLATE,
        "chat_template_example": common.render_chat(GOLDEN_PROMPTS[0]["messages"]),
        "decoding": (f"greedy, {MAX_NEW_TOKENS} new tokens, no stop tokens (a numerics test); "
                     "fp32_ids: torch fp32 recomputing the whole sequence each step; shipped_ids: "
                     "model.onnx under onnxruntime 1.22.1 (1 thread), prompt in one pass (P=0) then "
                     "one token per step with the KV cache; position_ids = P..P+S-1"),
        "logits_tolerance_hint": ("shipped_first_step_logits are onnxruntime's for model.onnx at the last "
                                  "prompt position of prompt 0; another f32 runtime should agree to ~1e-4"),
        "heldout_perplexity": ppl,
        "heldout_description": (f"last 5% of each of the {len(corpus['documents'])} texts ({corpus['heldout_bytes']} "
                                f"bytes) as <|bos|>text<|eos|>, and {corpus['heldout_conversations']} chat "
                                f"conversations from the held-out part of the plays; windows of {n} tokens, "
                                "each scored from a fresh context"),
        "cases": cases,
    }
    common.write_json(out / "golden.json", golden)

    report = {
        "parameters": count_params(model),
        "sizes_bytes": sizes,
        "decode_ms_per_token_onnxruntime_1thread": speed,
        "perplexity": ppl,
        "eval_seconds": timing,
        "max_abs_diff": {"fp32_onnx_vs_torch": diff_torch, "kv_cache_fp32": kv_fp32,
                         f"kv_cache_{SHIPPED}": kv_shipped},
        "int8_dynamic_operators": sorted({n.op_type for n in dyn.graph.node}),
        "train": {k: train_log[k] for k in ("steps", "batch", "tokens_seen", "train_tokens",
                                            "train_seconds", "threads")},
        "corpus": {k: v for k, v in corpus.items() if k not in ("documents", "sample_conversations")},
        "sha256": {f: sha256(out / f) for f in ("model.onnx", "reference_fp32.onnx", "tokenizer.json", "golden.json")},
        "golden_agreement": [c["shipped_matches_fp32_tokens"] for c in cases],
    }
    common.write_json(work / "export.json", report)
    print(json.dumps({k: report[k] for k in ("sizes_bytes", "decode_ms_per_token_onnxruntime_1thread",
                                             "max_abs_diff", "golden_agreement")}), flush=True)


def iter_prefix(a, b):
    for x, y in zip(a, b):
        if x != y:
            return
        yield x


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
