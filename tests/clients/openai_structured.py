"""The official OpenAI Python client against the local worker, unmodified but
for its base URL (EDGEINFER_BASE_URL): structured outputs with a Pydantic
model through `chat.completions.parse`, a forced tool call, and the
Responses API (`responses.create` whole, then streamed with
`previous_response_id`, `responses.retrieve`, `responses.delete`).
Run by tests/chat.rs; exits non-zero with a message on the first mismatch."""

import os
import sys
from typing import List, Optional

import openai
from pydantic import BaseModel

MODEL = os.environ.get("EDGEINFER_CHAT_MODEL", "smollm2-135m-instruct")


def check(cond, message):
    if not cond:
        print("FAILED:", message, file=sys.stderr)
        sys.exit(1)


class Pet(BaseModel):
    kind: str
    legs: int


class Person(BaseModel):
    name: str
    age: int
    city: Optional[str]
    pets: List[Pet]


def main():
    client = openai.OpenAI(base_url=os.environ["EDGEINFER_BASE_URL"], api_key="unused", max_retries=0)

    # A Pydantic model as the response format (nested, optional, $defs).
    parsed = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Ada is 36, lives in London and has a cat with four legs. Extract the person."}],
        response_format=Person,
        max_tokens=120,
        temperature=0,
    )
    choice = parsed.choices[0]
    check(choice.finish_reason == "stop", parsed)
    check(isinstance(choice.message.parsed, Person), parsed)

    # A forced tool call, parsed by the client's own helper.
    tools = [openai.pydantic_function_tool(Pet, name="add_pet", description="Add a pet")]
    called = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Add my dog, it has four legs."}],
        tools=tools,
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    choice = called.choices[0]
    check(choice.finish_reason == "tool_calls", called)
    call = choice.message.tool_calls[0]
    check(call.function.name == "add_pet", called)
    check(isinstance(call.function.parsed_arguments, Pet), called)

    # The tool's result back, and an answer in words.
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Add my dog, it has four legs."},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(include={"id", "type", "function"})]},
            {"role": "tool", "tool_call_id": call.id, "content": "added"},
        ],
        max_tokens=20,
        temperature=0,
    )
    check(isinstance(answer.choices[0].message.content, str), answer)

    # The Responses API: whole, then streamed as a continuation.
    first = client.responses.create(model=MODEL, input="My name is Ada. Say hello.", max_output_tokens=24, temperature=0)
    check(first.status in ("completed", "incomplete"), first)
    check(first.id.startswith("resp_") and len(first.output_text) > 0, first)
    check(first.usage.input_tokens > 0 and first.usage.output_tokens > 0, first.usage)

    events = []
    text = ""
    # Room to finish: the client's stream helper wants `response.completed`
    # (a reply cut by max_output_tokens ends with `response.incomplete`).
    with client.responses.stream(model=MODEL, input="What is my name? Answer in a few words.",
                                 previous_response_id=first.id, max_output_tokens=120, temperature=0) as stream:
        for event in stream:
            events.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    check(events[0] == "response.created", events)
    check(events[-1] in ("response.completed", "response.incomplete"), events)
    check("response.output_text.delta" in events, events)
    check(final.output_text == text, (final.output_text, text))
    check(final.previous_response_id == first.id, final)
    # The continuation saw the first turn: its prompt is longer.
    check(final.usage.input_tokens > first.usage.input_tokens, (final.usage, first.usage))

    again = client.responses.retrieve(final.id)
    check(again.output_text == final.output_text, again)

    # Structured output through the Responses API.
    person = client.responses.parse(model=MODEL, input="Bob is 40, lives in Paris, no pets.", text_format=Person,
                                    max_output_tokens=120, temperature=0)
    check(isinstance(person.output_parsed, Person), person)

    client.responses.delete(first.id)
    try:
        client.responses.retrieve(first.id)
        check(False, "a deleted response was still there")
    except openai.NotFoundError:
        pass
    print("ok")


if __name__ == "__main__":
    main()
