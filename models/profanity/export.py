"""Exports alt-profanity-check 1.9.1 for edgeinfer and proves the export exact.

Usage: python export.py <out_dir>

Writes into <out_dir> (export.sh moves them into models/profanity/ only when
this script exits 0):

  vocab.json     the 15,442 terms, in column order (a JSON array of strings)
  weights.bin    idf, the 5 LinearSVC coefficient vectors, intercepts and the
                 5 sigmoid calibrations, float64 little-endian (SPEC.md, "weights.bin")
  unicode.json   the Unicode tables of CPython 3.11 (Unicode 14.0.0) that the
                 featurizer needs: `\\w`, str.lower(), Cased, Case_Ignorable
  golden.json    the package's own predict_prob() on every text of golden_texts.py,
                 with the matched columns and their counts

Checks, any failure of which exits non-zero before anything is kept:
  * the package, scikit-learn and Python are the pinned ones, and the pickles
    load without a version warning; the fitted objects have exactly the
    structure and parameters SPEC.md describes;
  * the Unicode tables equal their definitions for every code point;
  * an independent re-implementation (numpy and the tables only: no sklearn,
    no `re`, no str.lower()) reading the written artifacts back reproduces
    predict_prob within PROB_TOLERANCE, and the exact columns and counts, on
    every golden text and on FUZZ_CASES random strings, and reproduces the
    package's token list on a text for every code point;
"""

import importlib.metadata
import json
import math
import struct
import sys
import unicodedata
import warnings
from pathlib import Path

import numpy as np

import golden_texts

PACKAGE = "alt-profanity-check"
PACKAGE_VERSION = "1.9.1"
SKLEARN_VERSION = "1.9.1"
UNICODE_VERSION = "14.0.0"  # CPython 3.11's unicodedata; \w and lower() follow it
PROB_TOLERANCE = 1e-7  # the numpy re-implementation (float64) vs predict_prob
FUZZ_CASES = 20000
MAGIC = b"EIPROF01"
MAX_CP = 0x110000
SIGMA, SMALL_SIGMA, FINAL_SIGMA = 0x03A3, 0x03C3, 0x03C2
WORD_CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No")


def fail(msg: str):
    print(f"export.py: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond: bool, msg: str):
    if not cond:
        fail(msg)


# --------------------------------------------------------------------------
# 1. The reference: the package's own objects.
# --------------------------------------------------------------------------


def load_reference():
    check(sys.version_info[:2] == (3, 11), f"needs CPython 3.11, this is {sys.version}")
    check(
        unicodedata.unidata_version == UNICODE_VERSION,
        f"unicodedata is {unicodedata.unidata_version}, expected {UNICODE_VERSION}",
    )
    check(
        importlib.metadata.version(PACKAGE) == PACKAGE_VERSION,
        f"{PACKAGE} is {importlib.metadata.version(PACKAGE)}, expected {PACKAGE_VERSION}",
    )
    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning

    check(sklearn.__version__ == SKLEARN_VERSION, f"scikit-learn is {sklearn.__version__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        from profanity_check import profanity_check as pc
    return pc


def extract(pc):
    """The fitted parameters, after checking every structural assumption."""
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
    from sklearn.svm import LinearSVC

    vec, model = pc.vectorizer, pc.model
    check(type(vec) is TfidfVectorizer, f"vectorizer is {type(vec)}")
    params = vec.get_params()
    expected = {
        "analyzer": "word",
        "binary": False,
        "decode_error": "strict",
        "dtype": np.float64,
        "encoding": "utf-8",
        "input": "content",
        "lowercase": True,
        "max_df": 1.0,
        "max_features": None,
        "min_df": 0.0001,
        "ngram_range": (1, 1),
        "norm": "l2",
        "preprocessor": None,
        "smooth_idf": True,
        "stop_words": "english",
        "strip_accents": None,
        "sublinear_tf": False,
        "token_pattern": r"(?u)\b\w\w+\b",
        "tokenizer": None,
        "use_idf": True,
        "vocabulary": None,
    }
    check(params == expected, f"vectorizer parameters differ: {params}")
    tf = vec._tfidf
    check(
        (tf.norm, tf.use_idf, tf.smooth_idf, tf.sublinear_tf) == ("l2", True, True, False),
        "TfidfTransformer parameters differ",
    )
    vocab = vec.vocabulary_
    terms = sorted(vocab, key=vocab.get)
    V = len(terms)
    check([vocab[t] for t in terms] == list(range(V)), "vocabulary columns are not 0..V-1")
    check(terms == sorted(terms), "columns are not in code point order")
    # Stop words are removed after tokenization; none is a column, so they
    # cannot change which columns a text hits.
    check(not (set(terms) & ENGLISH_STOP_WORDS), "a stop word is a column")
    idf = np.asarray(vec.idf_, dtype=np.float64)
    check(idf.shape == (V,) and np.all(np.isfinite(idf)) and np.all(idf > 0), "bad idf")

    check(type(model) is CalibratedClassifierCV, f"model is {type(model)}")
    check(model.method == "sigmoid", f"calibration method {model.method}")
    check(list(model.classes_) == [0, 1], f"classes {model.classes_}")
    check(model.n_features_in_ == V, "model width != vocabulary size")
    ccs = model.calibrated_classifiers_
    coef, intercept, a, b = [], [], [], []
    for cc in ccs:
        est = cc.estimator
        check(type(est) is LinearSVC, f"estimator is {type(est)}")
        check(list(cc.classes) == [0, 1] and list(est.classes_) == [0, 1], "fold classes")
        check(cc.method == "sigmoid", "fold method")
        check(est.coef_.shape == (1, V) and est.intercept_.shape == (1,), "fold shapes")
        check(len(cc.calibrators) == 1, "binary fold must have one calibrator")
        cal = cc.calibrators[0]
        check(type(cal) is _SigmoidCalibration, f"calibrator is {type(cal)}")
        coef.append(np.asarray(est.coef_[0], dtype=np.float64))
        intercept.append(float(est.intercept_[0]))
        a.append(float(cal.a_))
        b.append(float(cal.b_))
    return {
        "terms": terms,
        "idf": idf,
        "coef": np.stack(coef),  # [K, V]
        "intercept": np.array(intercept),
        "a": np.array(a),
        "b": np.array(b),
    }


# --------------------------------------------------------------------------
# 2. Unicode tables, from CPython itself, each checked against its definition.
# --------------------------------------------------------------------------


def ranges(flags):
    out = []
    for cp in np.flatnonzero(flags):
        cp = int(cp)
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def unicode_tables():
    import re

    word_re = re.compile(r"\w")
    word = np.zeros(MAX_CP, dtype=bool)
    cased = np.zeros(MAX_CP, dtype=bool)
    ignorable = np.zeros(MAX_CP, dtype=bool)
    lower = []
    for cp in range(MAX_CP):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # not Unicode scalar values: cannot occur in UTF-8 text
        c = chr(cp)
        cat = unicodedata.category(c)
        w = word_re.match(c) is not None
        check(w == (c.isalnum() or c == "_"), f"\\w != isalnum()|'_' at U+{cp:04X}")
        check(w == (cat in WORD_CATEGORIES or c == "_"), f"\\w != category rule at U+{cp:04X}")
        word[cp] = w
        low = c.lower()
        if low != c:
            lower.append([cp] + [ord(x) for x in low])
            # Lowering never changes whether a character is \w, except U+0130.
            if cp != 0x130:
                check(
                    len(low) == 1 and (word_re.match(low) is not None) == w,
                    f"lower() changes \\w-ness of U+{cp:04X}",
                )
        # Cased = Lowercase | Uppercase | Lt (Unicode DerivedCoreProperties).
        cased[cp] = c.islower() or c.isupper() or cat == "Lt"
        # Case_Ignorable, observed through lower()'s Final_Sigma rule:
        # "A\u03a3" + c ends in final sigma iff c is ignorable or not cased;
        # "A" + c + "\u03a3" iff c is ignorable or cased.
        t_after = ("A\u03a3" + c).lower()[1] == "\u03c2"
        t_before = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
        ignorable[cp] = t_after and t_before
        if not ignorable[cp]:
            check(t_before == cased[cp], f"Cased(U+{cp:04X}) disagrees with lower()")
        if cat in ("Mn", "Me", "Cf", "Lm", "Sk"):
            check(ignorable[cp], f"U+{cp:04X} ({cat}) should be Case_Ignorable")
    check(lower[[e[0] for e in lower].index(0x130)] == [0x130, 0x69, 0x307], "U+0130")
    check(sum(len(e) > 2 for e in lower) == 1, "only U+0130 lowers to two code points")
    return {"word": word, "cased": cased, "ignorable": ignorable, "lower": lower}


# --------------------------------------------------------------------------
# 3. Writing the artifacts (byte-reproducible: fixed order, fixed formats).
# --------------------------------------------------------------------------


def write_vocab(path: Path, terms):
    body = ",\n".join(json.dumps(t, ensure_ascii=False) for t in terms)
    path.write_text("[\n" + body + "\n]\n", encoding="utf-8")


def write_weights(path: Path, p):
    K, V = p["coef"].shape
    table = np.empty((V, K + 1), dtype="<f8")
    table[:, 0] = p["idf"]
    table[:, 1:] = p["coef"].T
    with path.open("wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", V, K))
        f.write(table.tobytes(order="C"))
        for name in ("intercept", "a", "b"):
            f.write(np.asarray(p[name], dtype="<f8").tobytes())


def write_unicode(path: Path, u):
    def line(key, value):
        return f'"{key}":' + json.dumps(value, separators=(",", ":"))

    doc = [
        line(
            "about",
            "CPython 3.11 str semantics used by alt-profanity-check's tokenizer; see SPEC.md. "
            "Ranges are [first, last] inclusive code points. lower: [cp, mapped...] for every "
            "code point whose str.lower() differs (context-free; U+03A3 also needs the "
            "Final_Sigma rule).",
        ),
        line("python", "3.11"),
        line("unicode_version", UNICODE_VERSION),
        line("word", ranges(u["word"])),
        line("lower", u["lower"]),
        line("cased", ranges(u["cased"])),
        line("case_ignorable", ranges(u["ignorable"])),
    ]
    path.write_text("{\n" + ",\n".join(doc) + "\n}\n", encoding="utf-8")


class NumpyProfanity:
    """SPEC.md, executed. Reads vocab.json, weights.bin and unicode.json."""

    def __init__(self, out: Path):
        self.terms = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
        self.index = {t: i for i, t in enumerate(self.terms)}
        raw = (out / "weights.bin").read_bytes()
        check(raw[:8] == MAGIC, "weights.bin magic")
        V, K = struct.unpack_from("<II", raw, 8)
        check(V == len(self.terms), "weights.bin V != vocab size")
        table = np.frombuffer(raw, dtype="<f8", count=V * (K + 1), offset=16).reshape(V, K + 1)
        tail = np.frombuffer(raw, dtype="<f8", offset=16 + 8 * V * (K + 1))
        check(tail.shape == (3 * K,), "weights.bin length")
        self.idf, self.coef = table[:, 0], table[:, 1:]  # [V], [V, K]
        self.intercept, self.a, self.b = tail[:K], tail[K : 2 * K], tail[2 * K :]
        self.folded = self.idf[:, None] * self.coef  # w_kt = idf_t * coef_kt

        u = json.loads((out / "unicode.json").read_text(encoding="utf-8"))
        self.word = self._flags(u["word"])
        self.cased = self._flags(u["cased"])
        self.ignorable = self._flags(u["case_ignorable"])
        self.lower1 = np.arange(MAX_CP, dtype=np.uint32)
        self.expand = {}
        for cp, *mapped in u["lower"]:
            if len(mapped) == 1:
                self.lower1[cp] = mapped[0]
            else:
                self.expand[cp] = mapped
        check(set(self.expand) == {0x130}, "unexpected multi-code-point lowercase")

    @staticmethod
    def _flags(rs):
        f = np.zeros(MAX_CP, dtype=bool)
        for lo, hi in rs:
            f[lo : hi + 1] = True
        return f

    def _final_sigma(self, cps, i):
        j = i - 1
        while j >= 0 and self.ignorable[cps[j]]:
            j -= 1
        if j < 0 or not self.cased[cps[j]]:
            return False
        j = i + 1
        while j < len(cps) and self.ignorable[cps[j]]:
            j += 1
        return j == len(cps) or not self.cased[cps[j]]

    def lower(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        low = self.lower1[cps]
        for i in np.flatnonzero(cps == SIGMA):
            low[i] = FINAL_SIGMA if self._final_sigma(cps, int(i)) else SMALL_SIGMA
        for cp, mapped in self.expand.items():
            at = np.flatnonzero(cps == cp)
            if len(at):  # U+0130 -> U+0069 U+0307: insert the tail after each
                low = low.copy()
                low[at] = mapped[0]
                low = np.insert(low, np.repeat(at + 1, len(mapped) - 1), np.tile(mapped[1:], len(at)))
        return low

    def tokens(self, text: str):
        low = self.lower(text)
        if len(low) == 0:
            return []
        w = np.concatenate(([False], self.word[low], [False])).astype(np.int8)
        d = np.diff(w)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        keep = ends - starts >= 2
        s = low.astype("<u4").tobytes().decode("utf-32-le")
        return [s[i:j] for i, j in zip(starts[keep], ends[keep])]

    def counts(self, text: str):
        c = {}
        for tok in self.tokens(text):
            i = self.index.get(tok)
            if i is not None:
                c[i] = c.get(i, 0) + 1
        cols = sorted(c)
        return cols, [c[i] for i in cols]

    def predict(self, text: str):
        cols, cnt = self.counts(text)
        cols_a = np.array(cols, dtype=np.int64)
        tf = np.array(cnt, dtype=np.float64)
        u = tf * self.idf[cols_a]
        norm = math.sqrt(float(np.dot(u, u)))
        if norm > 0:
            f = (u / norm) @ self.coef[cols_a] + self.intercept
            f_folded = (tf @ self.folded[cols_a]) / norm + self.intercept
        else:
            f = f_folded = self.intercept.copy()
        p = 1.0 / (1.0 + np.exp(self.a * f + self.b))
        p_folded = 1.0 / (1.0 + np.exp(self.a * f_folded + self.b))
        return float(np.mean(p)), float(np.mean(p_folded)), cols, cnt, u / norm if norm > 0 else u


# --------------------------------------------------------------------------
# 5. Reference outputs, comparisons, golden file.
# --------------------------------------------------------------------------


def reference_outputs(pc, texts):
    probs = pc.predict_prob(texts)
    X = pc.vectorizer.transform(texts).tocsr()
    analyze = pc.vectorizer.build_analyzer()
    vocab = pc.vectorizer.vocabulary_
    out = []
    for r, text in enumerate(texts):
        cols = sorted(int(i) for i in X.indices[X.indptr[r] : X.indptr[r + 1]])
        c = {}
        for tok in analyze(text):
            if tok in vocab:
                c[vocab[tok]] = c.get(vocab[tok], 0) + 1
        check(sorted(c) == cols, f"analyzer/transform disagree on {text!r}")
        out.append((float(probs[r]), cols, [c[i] for i in cols]))
    return out


def compare(pc, impl, texts, label):
    ref = reference_outputs(pc, texts)
    worst = worst_folded = 0.0
    for text, (p_ref, cols_ref, cnt_ref) in zip(texts, ref):
        p, p_f, cols, cnt, _ = impl.predict(text)
        if (cols, cnt) != (cols_ref, cnt_ref):
            fail(f"{label}: columns/counts differ for {text!r}: {cols, cnt} vs {cols_ref, cnt_ref}")
        worst = max(worst, abs(p - p_ref))
        worst_folded = max(worst_folded, abs(p_f - p_ref))
        if abs(p - p_ref) > PROB_TOLERANCE or abs(p_f - p_ref) > PROB_TOLERANCE:
            fail(f"{label}: probability {p} / {p_f} vs predict_prob {p_ref} for {text!r}")
    print(
        f"  {label}: {len(texts)} texts, columns+counts exact, max |p - predict_prob| = "
        f"{worst:.3g} (folded weights: {worst_folded:.3g})"
    )
    return ref


def check_tokenizer_every_code_point(pc, impl):
    """The package's token list == ours, on a text built around each code point."""
    pre = pc.vectorizer.build_preprocessor()
    tok = pc.vectorizer.build_tokenizer()
    snippets = []
    for cp in range(MAX_CP):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        snippets.append(f"Ab{c}Cd {c}{c} {c}\u03a3 A\u03a3{c} A{c}\u03a3 x{c}\u0130{c}")
    n = 0
    for i in range(0, len(snippets), 4096):
        text = " | ".join(snippets[i : i + 4096])
        if tok(pre(text)) != impl.tokens(text):
            for s in snippets[i : i + 4096]:
                check(tok(pre(s)) == impl.tokens(s), f"tokens differ for {s!r}")
            fail("tokens differ on a chunk but on no single snippet")
        n += 1
    print(f"  tokenizer: identical to the package's on all {len(snippets)} code points ({n} texts)")


def fuzz_texts(terms):
    rng = golden_texts._Rng(0xF0220)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
        + list(" .,'\u2019-!?:\n\t")
        + ["\u03a3", "\u03c3", "\u03c2", "\u0130", "\u212a", "\u0131", "\u00e9", "\u00c9", "\u0301",
           "\u0345", "\u200d", "\u00ad", "\u02b0", "\u24b6", "\u2160", "\u00b2", "\u0663", "\uff41",
           "\u0903", "\u203f", "\U0001f600", "\U0001f3fb", "\u4e00", "\u7adc", "\u9f99", "\u2c6f",
           "\u0392", "\u0395", "\u03a4", "\u0397", "\u039b", "\u039c", "\u0300", "\u00b7", "\u0387"]
    )
    texts = []
    for _ in range(FUZZ_CASES):
        parts = []
        for _ in range(rng.below(8)):
            if rng.chance(1, 2):
                t = rng.choice(terms)
                k = rng.below(4)
                parts.append(t.upper() if k == 0 else t.title() if k == 1 else t)
            else:
                parts.append("".join(rng.choice(alphabet) for _ in range(1 + rng.below(5))))
        texts.append("".join(parts))
    return texts


def write_golden(path: Path, cases, ref):
    head = {
        "reference": f"{PACKAGE}@{PACKAGE_VERSION} (PyPI): profanity_check.predict_prob(texts), "
        f"scikit-learn {SKLEARN_VERSION}, CPython 3.11 (Unicode {UNICODE_VERSION})",
        "labels": ["clean", "profane"],
        "probability": "P(profane) = predict_prob(text) = model.predict_proba(vectorizer.transform([text]))[0, 1]",
        "columns": "sorted vocab.json indices of the terms the text contains; counts: their term frequencies",
    }
    lines = []
    for (source, text), (p, cols, cnt) in zip(cases, ref):
        case = {"source": source, "text": text, "probability": p, "columns": cols, "counts": cnt}
        lines.append(json.dumps(case, ensure_ascii=True, separators=(",", ":")))
    body = json.dumps(head, ensure_ascii=True, separators=(",", ":"))[:-1]
    path.write_text(body + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n", encoding="ascii")


def main():
    if len(sys.argv) != 2:
        fail(__doc__.splitlines()[2])
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)

    print("loading alt-profanity-check and checking its structure")
    pc = load_reference()
    p = extract(pc)
    K, V = p["coef"].shape
    print(f"  V = {V} terms, K = {K} calibrated LinearSVC folds")

    print("building Unicode tables from CPython (1,112,064 code points)")
    u = unicode_tables()

    write_vocab(out / "vocab.json", p["terms"])
    write_weights(out / "weights.bin", p)
    write_unicode(out / "unicode.json", u)

    print("checking the independent numpy re-implementation against predict_prob")
    impl = NumpyProfanity(out)
    check(np.array_equal(impl.idf, p["idf"]) and np.array_equal(impl.coef, p["coef"].T), "weights.bin round trip")
    for name in ("intercept", "a", "b"):
        check(np.array_equal(getattr(impl, name), p[name]), f"weights.bin {name} round trip")

    cases = golden_texts.all_texts(p["terms"])
    check(len(cases) >= 300, f"only {len(cases)} golden texts")
    texts = [t for _, t in cases]
    ref = compare(pc, impl, texts, "golden")
    compare(pc, impl, fuzz_texts(p["terms"]), "fuzz")
    check_tokenizer_every_code_point(pc, impl)
    hits = sorted({c for _, cols, _ in ref for c in cols})
    non_ascii_cols = [i for i, t in enumerate(p["terms"]) if not t.isascii()]
    missing = [p["terms"][i] for i in non_ascii_cols if i not in hits]
    check(not missing, f"golden set misses the non-ASCII terms {missing}")
    print(f"  golden: {len(cases)} texts hit {len(hits)} distinct columns")


    write_golden(out / "golden.json", cases, ref)
    print("ok")


if __name__ == "__main__":
    main()
