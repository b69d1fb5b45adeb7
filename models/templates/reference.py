"""The chat templates' reference renderings: each GGUF's own `tokenizer.chat_template`
rendered by transformers 4.57.1's `render_jinja_template`, the function
`apply_chat_template(..., tokenize=False)` calls (Jinja2 with trim_blocks and
lstrip_blocks, loop controls, Python's tojson, raise_exception), written to golden.json
beside this file (checked in; tests/chat_template.rs renders every case with our
minijinja renderer, src/decoder/jinja.rs, and wants the same text, or an error where
the template raised one).

Usage: python3 -m venv V && V/bin/pip install -r requirements.txt && V/bin/python reference.py

The models: SmolLM2-135M-Instruct (ChatML, no tools), Qwen2.5-Coder-0.5B-Instruct
(ChatML with tools, tool calls and tool responses) and Qwen2.5-Coder-1.5B-Instruct (the
same but for the braces of its tool-call example), each from the GGUF its fetch.py
puts in the models cache (sha256-checked). The conversations: the 24 golden chats of
models/smollm2/golden.json, each with and without the generation prompt, and the tool
conversations below (OpenAI's shapes: tools as function definitions, an assistant's
tool_calls with arguments as an object or as a JSON string, tool results).
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from gguf import GGUFReader
from transformers.utils.chat_template_utils import render_jinja_template

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city — temperature and sky, «metric» by default.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Full-text search over the product docs.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filters": {
                    "type": "object",
                    "properties": {"tags": {"type": "array", "items": {"type": "string"}}, "since": {"type": ["string", "null"]}},
                },
            },
            "required": ["query"],
        },
    },
}
CALL_OBJECT = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
CALL_STRING = {"id": "call_2", "type": "function", "function": {"name": "search_docs", "arguments": "{\"query\": \"rate limits\", \"filters\": {\"tags\": [\"api\"]}}"}}

TOOL_CASES = [
    ([{"role": "user", "content": "What's the weather in Paris?"}], [WEATHER]),
    ([{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Météo à Paris ?"}], [WEATHER, SEARCH]),
    (
        [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL_OBJECT]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
        ],
        [WEATHER],
    ),
    (
        [
            {"role": "user", "content": "Weather in Paris, and the docs on rate limits?"},
            {"role": "assistant", "content": "Let me check both.", "tool_calls": [CALL_OBJECT, CALL_STRING]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C, clear"},
            {"role": "tool", "tool_call_id": "call_2", "content": "Limits: 60 requests a minute."},
            {"role": "assistant", "content": "It is 21 C and clear; the limit is 60 a minute."},
            {"role": "user", "content": "Thanks!"},
        ],
        [WEATHER, SEARCH],
    ),
    ([{"role": "user", "content": "Hi"}], []),
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "One"},
            {"role": "assistant", "content": "Two"},
            {"role": "system", "content": "Now be verbose."},
            {"role": "user", "content": "Three"},
        ],
        None,
    ),
]


def fetched(model: str) -> Path:
    out = subprocess.run([sys.executable, str(MODELS / model / "fetch.py")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def field(reader: GGUFReader, key: str):
    f = reader.fields[key]
    return f.parts[f.data[0]]


def model_cases(model: str, chats: list) -> dict:
    path = fetched(model)
    reader = GGUFReader(path)
    template = bytes(field(reader, "tokenizer.chat_template")).decode()
    tokens = reader.fields["tokenizer.ggml.tokens"]
    token = lambda key: bytes(tokens.parts[tokens.data[int(field(reader, key)[0])]]).decode()
    bos, eos = token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")
    cases = []
    conversations = [(c, None, g) for c in chats for g in (True, False)]
    conversations += [(m, t, True) for m, t in TOOL_CASES]
    for messages, tools, generation in conversations:
        case = {"messages": messages, "tools": tools, "add_generation_prompt": generation}
        try:
            rendered, _ = render_jinja_template(
                conversations=[messages], tools=tools, chat_template=template,
                add_generation_prompt=generation, bos_token=bos, eos_token=eos,
            )
            case["text"] = rendered[0]
        except Exception as e:  # the template's own refusal, or Python's TypeError
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    return {
        "model": model,
        "gguf_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "template": template,
        "bos_token": bos,
        "eos_token": eos,
        "cases": cases,
    }


def main() -> None:
    golden = json.loads((MODELS / "smollm2/golden.json").read_text())
    chats = [c["messages"] for c in golden["tokenizer"]["cases"] if c.get("category") == "chat"]
    assert len(chats) == 24, len(chats)
    out = {
        "reference": "transformers 4.57.1 render_jinja_template (apply_chat_template's renderer), Jinja2 3.1.6",
        "models": [model_cases(m, chats) for m in ("smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")],
    }
    (HERE / "golden.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    n = sum(len(m["cases"]) for m in out["models"])
    errors = sum("error" in c for m in out["models"] for c in m["cases"])
    print(f"{n} renderings ({errors} errors) -> golden.json", file=sys.stderr)


if __name__ == "__main__":
    main()
