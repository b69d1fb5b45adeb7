"""Shared by export.py and reference.py: reading the GGUF's tokenizer metadata, the
tokenizer.json fix, and an independent re-implementation of llama.cpp's "smollm"
tokenizer to check tokenizer.json against.

Needs the venv (gguf, regex, tokenizers); fetch.py (standard library only) has the
package constants and paths.
"""

import json
import os

import regex

# llama.cpp (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM, shared with STARCODER,
# REFACT, COMMAND_R, CODESHELL, EXAONE, MINERVA): every \p{N} character is split off
# on its own first, then each remaining piece is split with the GPT-2 expression.
# (llama.cpp's GPT-2 expression has no final `|\s+`; its splitter keeps whatever
# the expression does not match as pieces of their own, which is what `\s+` gives.)
SMOLLM_DIGIT_SPLIT = r"\p{N}"
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

TOKEN_TYPE_CONTROL = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL


def single_thread():
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def write_json(path, obj, indent=1):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def read_gguf_metadata(path):
    """The GGUF's key/value metadata as Python values (strings, numbers, lists)."""
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType

    reader = GGUFReader(str(path))
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        types = field.types
        if types[0] == GGUFValueType.STRING:
            out[name] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif types[0] == GGUFValueType.ARRAY:
            if types[1] == GGUFValueType.STRING:
                out[name] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                out[name] = [field.parts[i].tolist()[0] for i in field.data]
        else:
            out[name] = field.parts[field.data[0]].tolist()[0]
    tensors = [{"name": t.name, "type": t.tensor_type.name,
                "shape": [int(x) for x in t.shape]} for t in reader.tensors]
    return out, tensors


def fix_pre_tokenizer(backend):
    """Gives a `tokenizers.Tokenizer` built by transformers from this GGUF the
    pre-tokenizer of SmolLM2's own tokenizer.json (llama.cpp's "smollm").

    Why: transformers' GGUF tokenizer converter (5.24.0,
    integrations/gguf/gguf_tokenizer_mapping.py) knows no "smollm" entry in
    GGUF_PRE_TOKENIZER_SPLITS, so it keeps GPT2Tokenizer's plain
    ByteLevel(use_regex=True) pre-tokenizer and never splits digits off first. With
    this vocabulary (no merge joins two digits or a space and a digit) numbers still
    come out one digit per token, but the whitespace BEFORE a digit is cut
    differently: "a  1" is GPT-2 pieces "a", " ", " 1" -> [a, Ġ, Ġ, 1], while SmolLM2
    (and llama.cpp) first cut "a  " | "1" and the GPT-2 split of "a  " keeps the two
    spaces together -> [a, ĠĠ, 1]. The same for newlines or indentation before a
    number ("x\\n\\n1" -> [x, ĊĊ, 1], not [x, Ċ, Ċ, 1]; "1  2"; code indented before
    a number), and for the non-ASCII numerals whose UTF-8 bytes have merges
    (½ ² ³ ¹ ¼ ¾ ₂): " ½" -> [Ġ, Â½], not [ĠÂ, ½]. On the 239 tokenizer texts of
    golden.json the unfixed converter differs from llama.cpp's rules on 10. So we
    put back Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=
    False, use_regex=True)], as in SmolLM2's published tokenizer.json; ByteLevel
    decoding, no normalizer, unchanged."""
    from tokenizers import pre_tokenizers

    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return backend


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (written out here so this check does
    not share code with transformers or tokenizers)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class LlamaCppSmolLMTokenizer:
    """llama.cpp's tokenization of this GGUF (tokenizer.ggml.model "gpt2", pre
    "smollm", parse_special = true, add_bos_token = false), in plain Python: control
    tokens (token_type 3) are matched in the text first, longest first; every other
    fragment is pre-tokenized as SMOLLM_DIGIT_SPLIT then GPT2_SPLIT, mapped to the
    byte alphabet and merged by rank with tokenizer.ggml.merges."""

    def __init__(self, tokens, token_types, merges):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        specials = [t for t, ty in zip(tokens, token_types) if ty == TOKEN_TYPE_CONTROL]
        self.special_re = regex.compile("|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)))
        self.digit_re = regex.compile(SMOLLM_DIGIT_SPLIT)
        self.gpt2_re = regex.compile(GPT2_SPLIT)
        self.b2u = bytes_to_unicode()
        self.cache = {}

    def pieces(self, fragment):
        out, pos = [], 0
        for m in self.digit_re.finditer(fragment):
            if m.start() > pos:
                out += self.gpt2_re.findall(fragment[pos:m.start()])
            out.append(m.group())
            pos = m.end()
        if pos < len(fragment):
            out += self.gpt2_re.findall(fragment[pos:])
        return out

    def bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        word = [self.b2u[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            best, at = None, -1
            for i in range(len(word) - 1):
                r = self.ranks.get((word[i], word[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            pair = (word[at], word[at + 1])
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.vocab[w] for w in word]
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        ids, pos = [], 0
        for m in self.special_re.finditer(text):
            for p in self.pieces(text[pos:m.start()]):
                ids += self.bpe(p)
            ids.append(self.vocab[m.group()])
            pos = m.end()
        for p in self.pieces(text[pos:]):
            ids += self.bpe(p)
        return ids
