"""Greedy replies of Qwen2.5-Coder-0.5B-Instruct as Hugging Face transformers computes
them in float32 from the very GGUF we serve, written to greedy.json beside this file
(checked in; the reference of our engine's greedy tokens on the same file dequantized
to float32).

Usage: python3 -m venv V && V/bin/pip install -r requirements-transformers.txt && V/bin/python transformers_greedy.py

(~5.6 GB of venv: PyPI's torch is the CUDA build; only the CPU is used. Run time: a
few minutes on one thread, most of it loading the GGUF.)

The model: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name,
dtype=torch.float32)` (`dtype` is 4.57's name for torch_dtype), which dequantizes every
tensor of the file with PyPI `gguf`'s `dequantize` (the same values as dequant.json)
into float32; the GGUF's own output.weight (Q8_0) is the head, not the embedding
(transformers unties them when the file has output.weight). The tokenizer:
`AutoTokenizer.from_pretrained(dir, gguf_file=name)`, built from the file's vocabulary
and merges.

The chats: every case of models/templates/golden.json for "qwen2.5-coder-0.5b" with
add_generation_prompt true, tools null, a rendered `text`, a non-empty last message and
no "<|" in any message's content. Prompt ids: the tokenizer applied to the case's
`text` with add_special_tokens=False (checked to decode back to the text and to start
with <|im_start|>).

Decoding: `model.generate(ids, do_sample=False, max_new_tokens=32, use_cache=True,
eos_token_id=None, output_logits=True, return_dict_in_generate=True)`, on one CPU
thread. eos_token_id=None (not a suppression of EOS) makes exactly 32 tokens come out
with the logits untouched: each step's token is the plain argmax of the raw logits
(checked), even where that is <|im_end|> or <|endoftext|>, and decoding just goes on
after it. Per step, the margin: the chosen token's raw logit minus the runner-up's
(small margins are near-ties, where float32 rounding may flip a token).

Writes greedy.json: {"reference": versions and settings, "gguf_sha256",
"cases": [{"messages", "prompt_ids", "greedy_ids" (32), "min_margin", "margins" (32),
"reply" (the 32 tokens decoded, special tokens kept)}]}, and prints each decoded reply.
"""

import json
import re
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fetch  # noqa: E402

MODEL = "qwen2.5-coder-0.5b"
NEW_TOKENS = 32


def chats() -> list:
    golden = json.loads((HERE.parent / "templates" / "golden.json").read_text())
    [model] = [m for m in golden["models"] if m["model"] == MODEL]
    assert model["gguf_sha256"] == fetch.GGUF_SHA256, "golden.json rendered another file"
    return [
        c for c in model["cases"]
        if c["add_generation_prompt"] and c["tools"] is None and "text" in c
        and c["messages"][-1]["content"]
        and not any("<|" in (m.get("content") or "") for m in c["messages"])
    ]


def compact(text: str) -> str:
    """indent=1 JSON with each list of numbers on one line."""
    # A raw newline after "[" only occurs in the layout, never inside a JSON string.
    return re.sub(r"\[\n\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def main() -> None:
    torch.set_num_threads(1)
    path = fetch.fetch()
    cases = chats()
    assert len(cases) >= 12, len(cases)

    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    assert not model.config.tie_word_embeddings
    attention = model.config._attn_implementation
    print(f"loaded in {time.time() - start:.0f} s ({attention} attention)", file=sys.stderr)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")

    out = []
    for n, case in enumerate(cases):
        t = time.time()
        prompt = tokenizer(case["text"], add_special_tokens=False)["input_ids"]
        assert prompt[0] == im_start, prompt[:4]
        assert tokenizer.decode(prompt) == case["text"], "prompt ids do not decode to the text"
        with torch.inference_mode():
            g = model.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False, max_new_tokens=NEW_TOKENS, use_cache=True, eos_token_id=None,
                output_logits=True, return_dict_in_generate=True,
            )
        ids = g.sequences[0, len(prompt):].tolist()
        assert len(ids) == NEW_TOKENS == len(g.logits), (len(ids), len(g.logits))
        margins = []
        for token, logits in zip(ids, g.logits):
            top = torch.topk(logits[0].float(), 2)
            margin = float(top.values[0] - top.values[1])
            assert margin == 0 or int(top.indices[0]) == token, (token, top)
            margins.append(round(margin, 5))
        reply = tokenizer.decode(ids)
        out.append({
            "messages": case["messages"], "prompt_ids": prompt, "greedy_ids": ids,
            "min_margin": min(margins), "margins": margins, "reply": reply,
        })
        print(f"[{n}] {time.time() - t:.1f} s, {len(prompt)} prompt ids, min margin {min(margins):.4f} "
              f"(step {margins.index(min(margins))})\n    {case['messages'][-1]['content']!r}\n -> {reply!r}")

    reference = (
        f"transformers {transformers.__version__} AutoModelForCausalLM/AutoTokenizer from the GGUF "
        f"(gguf {version('gguf')} dequantize to float32), "
        f"torch {torch.__version__} CPU float32, {attention} attention, 1 thread; "
        f"generate(do_sample=False, max_new_tokens={NEW_TOKENS}, use_cache=True, eos_token_id=None)"
    )
    golden = {"reference": reference, "gguf_sha256": fetch.GGUF_SHA256, "cases": out}
    dest = HERE / "greedy.json"
    dest.write_text(compact(json.dumps(golden, ensure_ascii=False, indent=1)) + "\n")
    print(f"{len(out)} cases in {time.time() - start:.0f} s -> {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
