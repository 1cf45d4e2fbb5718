"""The service's /v1/messages through the official `anthropic` Python client.

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_BASE (http://host:port, no /v1), SYMBI_TOKEN_A1 (may use model
`smollm2`), SYMBI_TOKEN_A2 (may use `smollm2` and `other`).
"""

import os

import anthropic
from anthropic import Anthropic

BASE = os.environ["SYMBI_BASE"]
A1 = os.environ["SYMBI_TOKEN_A1"]


def client(key):
    # No retries: an error must reach the test as it is.
    return Anthropic(base_url=BASE, api_key=key, max_retries=0, timeout=120)


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


ASK = [{"role": "user", "content": "What colour is the sky? Answer in one word."}]


def create():
    m = client(A1).messages.create(
        model="smollm2",
        max_tokens=12,
        system="You are terse.",
        messages=ASK,
        extra_body={"temperature": 0, "seed": 7},
    )
    assert m.type == "message" and m.role == "assistant", m
    assert m.model == "smollm2", m
    assert m.id.startswith("msg_"), m
    assert len(m.content) == 1 and m.content[0].type == "text", m
    assert m.content[0].text, m
    assert m.stop_reason in ("end_turn", "max_tokens"), m
    u = m.usage
    assert 1 <= u.output_tokens <= 12, u
    assert u.input_tokens + u.cache_read_input_tokens > 5, u
    assert m._request_id and m._request_id.startswith("msg-"), m._request_id
    # Greedy again: the same text, and the prompt now comes from the cache.
    again = client(A1).messages.create(
        model="smollm2",
        max_tokens=12,
        system="You are terse.",
        messages=ASK,
        extra_body={"temperature": 0},
    )
    assert again.content[0].text == m.content[0].text, (again, m)
    assert again.usage.cache_read_input_tokens > 0, again.usage
    assert (
        again.usage.input_tokens + again.usage.cache_read_input_tokens
        == u.input_tokens + u.cache_read_input_tokens
    ), (again.usage, u)
    # Blocks as content, a conversation, max_tokens reached.
    long = client(A1).messages.create(
        model="smollm2",
        max_tokens=3,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Count from one to twenty."}]},
            {"role": "assistant", "content": "One, two,"},
            {"role": "user", "content": "Go on, in words."},
        ],
        extra_body={"temperature": 0},
    )
    assert long.stop_reason == "max_tokens" and long.usage.output_tokens == 3, long


def stream():
    plain = client(A1).messages.create(
        model="smollm2", max_tokens=16, messages=ASK, extra_body={"temperature": 0}
    )
    with client(A1).messages.stream(
        model="smollm2", max_tokens=16, messages=ASK, extra_body={"temperature": 0}
    ) as s:
        pieces = [t for t in s.text_stream]
        final = s.get_final_message()
    assert len(pieces) >= 1, pieces
    assert "".join(pieces) == plain.content[0].text, (pieces, plain)
    assert final.content[0].text == plain.content[0].text, final
    assert final.stop_reason == plain.stop_reason, final
    assert final.usage.output_tokens == plain.usage.output_tokens, final.usage
    total = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert total == plain.usage.input_tokens + plain.usage.cache_read_input_tokens, final.usage
    # The raw events, in order.
    kinds = [
        e.type
        for e in client(A1).messages.create(
            model="smollm2", max_tokens=4, messages=ASK, stream=True
        )
    ]
    assert kinds[:2] == ["message_start", "content_block_start"], kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert set(kinds[2:-3]) == {"content_block_delta"}, kinds


def errors():
    def expect(exc, fn, status, kind):
        try:
            fn()
        except exc as e:
            assert e.status_code == status, (e.status_code, e)
            assert e.type == kind, (e.type, e.body)
            return e
        raise AssertionError(f"no {exc.__name__}")

    ask = dict(max_tokens=4, messages=ASK)
    expect(
        anthropic.AuthenticationError,
        lambda: client("symbi_wrong").messages.create(model="smollm2", **ask),
        401,
        "authentication_error",
    )
    e = expect(
        anthropic.PermissionDeniedError,
        lambda: client(A1).messages.create(model="other", **ask),
        403,
        "permission_error",
    )
    assert "other" in e.api_message, e.api_message
    expect(
        anthropic.NotFoundError,
        lambda: client(A1).messages.create(model="nope", **ask),
        404,
        "not_found_error",
    )
    e = expect(
        anthropic.BadRequestError,
        lambda: client(A1).messages.create(
            model="smollm2",
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}],
        ),
        400,
        "invalid_request_error",
    )
    assert "messages[0].content[0]" in e.api_message, e.api_message
    e = expect(
        anthropic.BadRequestError,
        # A model without the ToolUse capability.
        lambda: client(os.environ["SYMBI_TOKEN_A2"]).messages.create(
            model="other", tools=[{"name": "t", "input_schema": {}}], **ask
        ),
        400,
        "invalid_request_error",
    )
    assert "tools" in e.api_message, e.api_message
    e = expect(
        anthropic.BadRequestError,
        lambda: client(A1).messages.create(
            model="smollm2", max_tokens=4, messages=[{"role": "assistant", "content": "Hi"}]
        ),
        400,
        "invalid_request_error",
    )
    assert "last message" in e.api_message, e.api_message


check("create", create)
check("stream", stream)
check("errors", errors)
