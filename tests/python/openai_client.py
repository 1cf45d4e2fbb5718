"""The service through the official `openai` Python client.

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_URL (…/v1), SYMBI_TOKEN_A1 (may use model `smollm2`),
SYMBI_TOKEN_A2 (may use models `smollm2` and `other`), and slm.service.max_concurrent_per_agent = 2.
"""

import json
import os
import sys

import openai
from openai import OpenAI

URL = os.environ["SYMBI_URL"]
A1 = os.environ["SYMBI_TOKEN_A1"]
A2 = os.environ["SYMBI_TOKEN_A2"]


def client(key):
    # No retries: a 429 must reach the test as it is.
    return OpenAI(base_url=URL, api_key=key, max_retries=0, timeout=120)


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


def chat():
    r = client(A1).chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "What colour is the sky?"},
        ],
        max_tokens=12,
        temperature=0,
        seed=7,
    )
    assert r.object == "chat.completion", r
    assert r.model == "smollm2", r
    assert len(r.choices) == 1 and r.choices[0].message.role == "assistant", r
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    u = r.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 12, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    # Greedy with the same messages: the same text again.
    again = client(A1).chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "What colour is the sky?"},
        ],
        max_completion_tokens=12,
        temperature=0,
    )
    assert again.choices[0].message.content == r.choices[0].message.content
    # The repeated prefix came from the cache.
    assert again.usage.prompt_tokens_details.cached_tokens > 0, again.usage


def stream_with_usage():
    chunks = list(
        client(A1).chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text, chunks
    assert finishes == ["length"] or finishes == ["stop"], finishes
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == 16 or finishes == ["stop"], last.usage
    # The streamed text is the text a plain request gives.
    plain = client(A1).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        temperature=0,
    )
    assert plain.choices[0].message.content == text, (plain, text)


def completions():
    r = client(A1).completions.create(model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text, r
    assert r.usage.completion_tokens <= 5, r.usage


def models_list():
    ids = [m.id for m in client(A1).models.list()]
    assert ids == ["smollm2"], ids
    ids = [m.id for m in client(A2).models.list()]
    assert ids == ["smollm2", "other"], ids


def models_retrieve():
    m = client(A1).models.retrieve("smollm2")
    assert m.id == "smollm2" and m.object == "model", m
    # A model the agent may not use is not told apart from one that is
    # not there.
    for ghost in ["other", "ghost"]:
        try:
            client(A1).models.retrieve(ghost)
        except openai.NotFoundError:
            pass
        else:
            raise AssertionError(f"retrieve({ghost!r}) did not fail")


def embeddings():
    import math

    c = client(A1)
    # The client asks for base64 by default and decodes it.
    r = c.embeddings.create(model="smollm2", input=["The cat sat on the mat.", "Quarterly revenue fell."])
    assert [d.index for d in r.data] == [0, 1], r
    a, b = r.data[0].embedding, r.data[1].embedding
    assert len(a) == len(b) == 576, len(a)
    assert abs(math.sqrt(sum(x * x for x in a)) - 1) < 1e-3
    assert r.usage.prompt_tokens >= 8 and r.usage.total_tokens == r.usage.prompt_tokens, r.usage
    # What went over the wire was base64 (4 bytes a number), not numbers
    # the client happened to accept.
    raw = c.embeddings.with_raw_response.create(model="smollm2", input="The cat sat on the mat.")
    wire = json.loads(raw.http_response.text)["data"][0]["embedding"]
    assert isinstance(wire, str) and len(wire) == 4 * ((576 * 4 + 2) // 3), len(wire)
    f = c.embeddings.create(model="smollm2", input="The cat sat on the mat.", encoding_format="float")
    assert max(abs(x - y) for x, y in zip(f.data[0].embedding, a)) < 1e-4
    assert sum(x * y for x, y in zip(a, b)) < 0.9999
    # An input past the limit: 400 naming which one.
    try:
        c.embeddings.create(model="smollm2", input=["short", "word " * 400])
    except openai.BadRequestError as e:
        assert e.param == "input[1]" and e.code == "context_length_exceeded", (e.param, e.code, e.message)
    else:
        raise AssertionError("expected BadRequestError")
    try:
        c.embeddings.create(model="smollm2", input="x", dimensions=64)
    except openai.BadRequestError as e:
        assert e.param == "dimensions" and "576" in e.message, e
    else:
        raise AssertionError("expected BadRequestError")
    # A model without the Embeddings capability: 400 naming it.
    try:
        client(A2).embeddings.create(model="other", input="x")
    except openai.BadRequestError as e:
        assert e.code == "model_without_embeddings" and "other" in e.message, e
    else:
        raise AssertionError("expected BadRequestError")


def errors():
    def expect(exc, status, fn):
        try:
            fn()
        except exc as e:
            assert e.status_code == status, (e, e.status_code)
            return e
        raise AssertionError(f"expected {exc.__name__}")

    msgs = [{"role": "user", "content": "hi"}]
    expect(openai.AuthenticationError, 401, lambda: client("wrong").chat.completions.create(model="smollm2", messages=msgs))
    e = expect(openai.PermissionDeniedError, 403, lambda: client(A1).chat.completions.create(model="other", messages=msgs))
    assert "other" in e.message and e.code == "model_access_denied", e
    e = expect(openai.NotFoundError, 404, lambda: client(A1).chat.completions.create(model="ghost", messages=msgs))
    assert e.code == "model_not_found", e
    e = expect(openai.BadRequestError, 400, lambda: client(A1).chat.completions.create(model="smollm2", messages=msgs, temperature=-1))
    assert "temperature" in e.message, e
    e = expect(openai.BadRequestError, 400, lambda: client(A1).chat.completions.create(model="smollm2", messages=msgs, n=3))
    assert e.param == "n", e
    # Two streams hold the agent's two permits: a third request is a 429
    # with Retry-After; the other agent is not affected.
    c = client(A1)
    held = [
        c.chat.completions.create(model="smollm2", messages=msgs, max_tokens=200, temperature=0, stream=True)
        for _ in range(2)
    ]
    e = expect(openai.RateLimitError, 429, lambda: c.chat.completions.create(model="smollm2", messages=msgs, max_tokens=2))
    assert e.response.headers.get("retry-after") == "1", e.response.headers
    assert e.code == "agent_concurrency_limit", e
    ok = client(A2).chat.completions.create(model="smollm2", messages=msgs, max_tokens=2)
    assert ok.choices[0].message.content is not None
    for s in held:
        s.close()


if __name__ == "__main__":
    only = sys.argv[1:]
    for name, fn in [
        ("chat", chat),
        ("stream_with_usage", stream_with_usage),
        ("completions", completions),
        ("models_list", models_list),
        ("models_retrieve", models_retrieve),
        ("embeddings", embeddings),
        ("errors", errors),
    ]:
        if not only or name in only:
            check(name, fn)
