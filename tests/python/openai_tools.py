"""Tool calls through the official `openai` Python client: forced calls (a
named function and `required`), parallel calls, streamed `tool_calls`
deltas reassembled by the client's own stream helper, a tool result round
trip, `auto` answering in text, and refusals (a model without the
capability, a bad tool list). Arguments are validated by the `jsonschema`
package against the function's parameters.

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_URL (…/v1), SYMBI_TOKEN_A1 (model `smollm2`, which declares
ToolUse) and SYMBI_TOKEN_A2 (also model `other`, which does not).
"""

import json
import os

import jsonschema
import openai
from openai import OpenAI

from tool_schemas import ADD, DESCRIPTIONS, SCHEMAS, WEATHER

URL = os.environ["SYMBI_URL"]
client = OpenAI(base_url=URL, api_key=os.environ["SYMBI_TOKEN_A1"], max_retries=0, timeout=120)
client2 = OpenAI(base_url=URL, api_key=os.environ["SYMBI_TOKEN_A2"], max_retries=0, timeout=120)


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": DESCRIPTIONS["get_weather"], "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": DESCRIPTIONS["add"], "parameters": ADD, "strict": True}},
]


def valid(call):
    assert call.type == "function", call
    assert call.id.startswith("call_"), call
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def forced():
    for temperature in (0, 1.0):
        for choice, name in (
            ({"type": "function", "function": {"name": "get_weather"}}, "get_weather"),
            ({"type": "function", "function": {"name": "add"}}, "add"),
            ("required", None),
        ):
            r = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=TOOLS,
                tool_choice=choice,
                parallel_tool_calls=False,
                temperature=temperature,
                seed=3,
                max_tokens=96,
            )
            c = r.choices[0]
            assert c.finish_reason == "tool_calls", c
            assert c.message.content is None, c.message
            assert len(c.message.tool_calls) == 1, c.message
            valid(c.message.tool_calls[0])
            if name:
                assert c.message.tool_calls[0].function.name == name, c.message


def streamed_deltas():
    # The client's own helper reassembles the deltas into calls.
    with client.chat.completions.stream(
        model="smollm2",
        messages=[{"role": "user", "content": "Weather in Oslo and in Rome, in celsius?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=120,
    ) as stream:
        deltas = 0
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                deltas += 1
        final = stream.get_final_completion()
    c = final.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert deltas >= 3, deltas
    assert len(c.message.tool_calls) >= 1, c.message
    for call in c.message.tool_calls:
        valid(call)
        assert call.function.name == "get_weather", call


def round_trip():
    messages = [{"role": "user", "content": "Add 17 and 25."}]
    r = client.chat.completions.create(
        model="smollm2", messages=messages, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        temperature=0, max_tokens=60,
    )
    call = r.choices[0].message.tool_calls[0]
    valid(call)
    args = json.loads(call.function.arguments)
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sum": args["a"] + args["b"]})})
    r = client.chat.completions.create(
        model="smollm2", messages=messages, tools=TOOLS, tool_choice="none",
        temperature=0, max_tokens=40,
    )
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length"), c
    assert c.message.tool_calls is None and c.message.content, c.message


def auto_text_or_calls():
    for q in ("Say hello in one word.", "Use the add tool to add 2 and 3."):
        r = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": q}], tools=TOOLS,
            temperature=0, max_tokens=60,
        )
        c = r.choices[0]
        if c.finish_reason == "tool_calls":
            for call in c.message.tool_calls:
                valid(call)
        else:
            assert c.message.tool_calls is None, c.message
            assert "<tool_call>" not in (c.message.content or ""), c.message


def refused():
    try:
        client2.chat.completions.create(
            model="other", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS, max_tokens=10,
        )
    except openai.BadRequestError as e:
        assert (e.body or {}).get("param") == "tools", e.body
        assert "ToolUse" in str(e), e
    else:
        raise AssertionError("tools to a model without the capability were accepted")
    bad = [{"type": "function", "function": {"name": "no spaces", "parameters": WEATHER}}]
    try:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Hi"}], tools=bad, max_tokens=10,
        )
    except openai.BadRequestError as e:
        assert (e.body or {}).get("param") == "tools", e.body
    else:
        raise AssertionError("a bad function name was accepted")


check("forced", forced)
check("streamed_deltas", streamed_deltas)
check("round_trip", round_trip)
check("auto_text_or_calls", auto_text_or_calls)
check("refused", refused)
