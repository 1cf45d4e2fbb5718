"""Tool use through the official `anthropic` Python client: a forced tool
(`tool_choice` `tool` and `any`, `disable_parallel_tool_use`), the
streamed `input_json_delta`s reassembled by the client's own stream helper,
a `tool_result` round trip, and refusals. Inputs are validated by the
`jsonschema` package against the tool's `input_schema`.

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_BASE (no /v1), SYMBI_TOKEN_A1 (model `smollm2`, which declares
ToolUse) and SYMBI_TOKEN_A2 (also model `other`, which does not).
"""

import os

import anthropic
import jsonschema
from anthropic import Anthropic

from tool_schemas import ADD, DESCRIPTIONS, SCHEMAS, WEATHER

BASE = os.environ["SYMBI_BASE"]
client = Anthropic(base_url=BASE, api_key=os.environ["SYMBI_TOKEN_A1"], max_retries=0, timeout=120)
client2 = Anthropic(base_url=BASE, api_key=os.environ["SYMBI_TOKEN_A2"], max_retries=0, timeout=120)


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


TOOLS = [
    {"name": "get_weather", "description": DESCRIPTIONS["get_weather"], "input_schema": WEATHER},
    {"name": "add", "description": DESCRIPTIONS["add"], "input_schema": ADD},
]


def uses(message):
    blocks = [b for b in message.content if b.type == "tool_use"]
    for b in blocks:
        assert b.id.startswith("toolu_"), b
        jsonschema.validate(b.input, SCHEMAS[b.name])
    return blocks


def forced():
    for choice, name in (
        ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, "get_weather"),
        ({"type": "any", "disable_parallel_tool_use": True}, None),
    ):
        m = client.messages.create(
            model="smollm2", max_tokens=96, extra_body={"temperature": 0}, tools=TOOLS, tool_choice=choice,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        )
        assert m.stop_reason == "tool_use", m
        blocks = uses(m)
        assert len(blocks) == 1, m
        if name:
            assert blocks[0].name == name, m


def streamed():
    with client.messages.stream(
        model="smollm2", max_tokens=96, extra_body={"temperature": 0}, tools=TOOLS,
        tool_choice={"type": "tool", "name": "add"},
        messages=[{"role": "user", "content": "Add 4 and 9."}],
    ) as stream:
        deltas = sum(1 for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        m = stream.get_final_message()
    assert m.stop_reason == "tool_use", m
    assert deltas >= 3, deltas
    blocks = uses(m)
    assert blocks and blocks[0].name == "add", m


def round_trip():
    ask = {"role": "user", "content": "Add 17 and 25."}
    m = client.messages.create(
        model="smollm2", max_tokens=60, extra_body={"temperature": 0}, tools=TOOLS,
        tool_choice={"type": "tool", "name": "add"}, messages=[ask],
    )
    use = uses(m)[0]
    result = {"type": "tool_result", "tool_use_id": use.id, "content": str(use.input["a"] + use.input["b"])}
    m = client.messages.create(
        model="smollm2", max_tokens=40, extra_body={"temperature": 0}, tools=TOOLS, tool_choice={"type": "none"},
        messages=[ask, {"role": "assistant", "content": m.content}, {"role": "user", "content": [result]}],
    )
    assert m.stop_reason in ("end_turn", "max_tokens"), m
    assert not uses(m) and m.content[0].text, m


def refused():
    try:
        client2.messages.create(
            model="other", max_tokens=10, tools=TOOLS,
            messages=[{"role": "user", "content": "Hi"}],
        )
    except anthropic.BadRequestError as e:
        assert "ToolUse" in str(e), e
    else:
        raise AssertionError("tools to a model without the capability were accepted")


check("forced", forced)
check("streamed", streamed)
check("round_trip", round_trip)
check("refused", refused)
