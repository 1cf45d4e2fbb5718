"""Every answer of `/v1/messages` against the published shapes of the
`anthropic` client's types (pinned in requirements.txt): whole messages,
each streamed event, and error bodies. A shape conforms when the type
validates it (every required field present, each of its type) and it holds
no field the type does not define (the client's models accept extras
silently, so they are looked for, recursively).

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_BASE and SYMBI_TOKEN_A1 (may use `smollm2`). Prints one line per
checked answer and each that does not conform; exits 1 if any does not.
"""

import json
import os
import sys

import httpx
import pydantic
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent

BASE = os.environ["SYMBI_BASE"]
HEADERS = {"x-api-key": os.environ["SYMBI_TOKEN_A1"], "anthropic-version": "2023-06-01"}
CHECKED = 0
FAILED = 0


def extras(value, path="(root)"):
    """Fields of `value` (a validated model) that its type does not define."""
    found = []
    if isinstance(value, pydantic.BaseModel):
        for key in value.model_extra or {}:
            found.append(f"{path}/{key}")
        for key in type(value).model_fields:
            found += extras(getattr(value, key), f"{path}/{key}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += extras(v, f"{path}/{i}")
    return found


# The one field a message has beyond the type, listed in the README: the
# runner's metadata under our own name (the client keeps it as an extra).
ALLOWED_EXTRAS = {"(root)/symbiont"}


def conforms(kind, value, what):
    global CHECKED, FAILED
    try:
        parsed = pydantic.TypeAdapter(kind).validate_python(value)
        problems = [f"{p}: not a field of the type" for p in extras(parsed) if p not in ALLOWED_EXTRAS]
    except pydantic.ValidationError as e:
        problems = [f"{'/'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    if problems:
        FAILED += 1
        print(f"FAIL {what}:", file=sys.stderr)
        for p in problems[:10]:
            print(f"  {p}", file=sys.stderr)
        print(f"  the answer: {json.dumps(value)[:1500]}", file=sys.stderr)
        return
    CHECKED += 1
    print(f"ok {what}", flush=True)


body = {
    "model": "smollm2",
    "max_tokens": 8,
    "temperature": 0,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Name a colour."}],
}
r = httpx.post(f"{BASE}/v1/messages", json=body, headers=HEADERS, timeout=300)
assert r.status_code == 200, r.text
conforms(Message, r.json(), "message")
events = 0
with httpx.stream("POST", f"{BASE}/v1/messages", json={**body, "stream": True}, headers=HEADERS, timeout=300) as s:
    assert s.status_code == 200
    for line in s.iter_lines():
        if line.startswith("data: "):
            event = json.loads(line[len("data: "):])
            conforms(RawMessageStreamEvent, event, f"event {events} ({event.get('type')})")
            events += 1
assert events >= 4, f"{events} events"
for what, payload, headers, status in [
    ("unknown model", {**body, "model": "ghost"}, HEADERS, 404),
    ("model not allowed", {**body, "model": "other"}, HEADERS, 403),
    ("bad token", body, {**HEADERS, "x-api-key": "nope"}, 401),
    ("no max_tokens", {k: v for k, v in body.items() if k != "max_tokens"}, HEADERS, 400),
]:
    r = httpx.post(f"{BASE}/v1/messages", json=payload, headers=headers, timeout=60)
    assert r.status_code == status, f"{what}: HTTP {r.status_code}: {r.text}"
    conforms(ErrorResponse, r.json(), f"error: {what}")
if FAILED:
    print(f"{FAILED} answers do not conform", file=sys.stderr)
    sys.exit(1)
print(f"{CHECKED} answers conform", flush=True)
