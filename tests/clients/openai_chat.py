"""The official OpenAI Python client against the local worker, unmodified but
for its base URL (EDGEINFER_BASE_URL, e.g. http://127.0.0.1:8787/v1): chat
whole and streamed (with the usage chunk), a session named in extra_body and
in a header, the models list, embeddings, and a 404 raised as NotFoundError.
Run by tests/chat.rs (and tests/byo_gguf.rs on a model added with
scripts/add-model, which also wants the answer to name Paris); exits non-zero with a message on the first mismatch."""

import os
import sys

import openai

# The default chat model: SmolLM2-135M-Instruct, served by its shard Workers
# (EDGEINFER_CHAT_MODEL: another, e.g. one added with scripts/add-model).
MODEL = os.environ.get("EDGEINFER_CHAT_MODEL", "smollm2-135m-instruct")


def check(cond, message):
    if not cond:
        print("FAILED:", message, file=sys.stderr)
        sys.exit(1)


def main():
    client = openai.OpenAI(base_url=os.environ["EDGEINFER_BASE_URL"], api_key="unused", max_retries=0)

    # One request, whole and then streamed: greedy, so the two texts must be the same.
    question = dict(
        model=MODEL,
        messages=[{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                  {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=30,
        temperature=0,
    )
    whole = client.chat.completions.create(**question)
    choice = whole.choices[0]
    check(whole.object == "chat.completion", whole)
    check(choice.message.role == "assistant" and isinstance(choice.message.content, str), whole)
    check(choice.finish_reason in ("stop", "length"), whole)
    check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, whole.usage)

    stream = client.chat.completions.create(**question, stream=True, stream_options={"include_usage": True})
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", chunk)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    check(text == choice.message.content, f"streamed {text!r} != whole {choice.message.content!r}")
    check(finish == choice.finish_reason, finish)
    check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage)
    check(chunks >= 3, f"{chunks} chunks")
    if os.environ.get("EDGEINFER_EXPECT_PARIS"):
        check("Paris" in text, f"{MODEL} answered {text!r}")

    # A session: history kept by the server between calls.
    session = client.post("/sessions", body={"system": "You are a helpful assistant."},
                          cast_to=object)
    sid = session["id"]
    first = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi, I am Ada."}],
                                           max_tokens=10, extra_body={"session": sid})
    second = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is my name?"}],
                                            max_tokens=10, extra_headers={"X-Session-Id": sid}, stream=True)
    streamed = "".join((c.choices[0].delta.content or "") for c in second if c.choices)
    history = client.get(f"/sessions/{sid}", cast_to=object)["messages"]
    check([m["role"] for m in history] == ["user", "assistant", "user", "assistant"], history)
    check(history[1]["content"] == first.choices[0].message.content, history)
    check(history[3]["content"] == streamed, history)

    models = [m.id for m in client.models.list()]
    check(MODEL in models and "all-minilm-l6-v2" in models, models)
    emb = client.embeddings.create(model="all-minilm-l6-v2", input=["hello there"])
    check(len(emb.data[0].embedding) == 384, len(emb.data[0].embedding))

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        check(False, "unknown model did not raise")
    except openai.NotFoundError as e:
        check(e.status_code == 404, e)
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=0)
        check(False, "max_tokens=0 did not raise")
    except openai.UnprocessableEntityError as e:
        check(e.status_code == 422, e)
    print("openai python client: ok")


if __name__ == "__main__":
    main()
