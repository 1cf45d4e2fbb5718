"""Structured output through the official `openai` Python client: its own
`parse` helper with a Pydantic model (strict json_schema), a schema given as
a dict and streamed, JSON mode, and a schema the engine cannot compile.
Answers are validated by the `jsonschema` package and by Pydantic.

Run by crates/symbi-slm/tests/service.rs against a running `symbi-slm serve`
with SYMBI_URL (…/v1) and SYMBI_TOKEN_A1 (may use model `smollm2`).
"""

import json
import os
from typing import List, Literal

import jsonschema
import openai
from openai import OpenAI
from pydantic import BaseModel, Field, StringConstraints
from typing_extensions import Annotated

URL = os.environ["SYMBI_URL"]
A1 = os.environ["SYMBI_TOKEN_A1"]
client = OpenAI(base_url=URL, api_key=A1, max_retries=0, timeout=120)


def check(name, fn):
    fn()
    print(f"ok {name}", flush=True)


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: int = Field(ge=0, le=40)
    landmarks: List[Annotated[str, StringConstraints(max_length=30)]] = Field(max_length=3)
    climate: Literal["hot", "mild", "cold"]


class Report(BaseModel):
    """Unbounded fields: a small model runs on inside them; the answer is
    steered to close within max_tokens."""
    summary: str
    population: float
    landmarks: List[str]


def parse_unbounded_within_budget():
    r = client.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe Paris at length."}],
        response_format=Report,
        max_tokens=60,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(choice.message.parsed, Report), choice.message
    assert r.usage.completion_tokens <= 60, r.usage
    assert r.symbiont["steered_tokens"] > 0, r.symbiont


def parse_with_pydantic():
    r = client.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City,
        max_tokens=200,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    city = choice.message.parsed
    assert isinstance(city, City), choice.message
    jsonschema.validate(json.loads(choice.message.content), City.model_json_schema())
    # Compact JSON: no whitespace outside strings.
    assert choice.message.content == json.dumps(json.loads(choice.message.content), separators=(",", ":"), ensure_ascii=False), choice.message.content


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 40},
        "director": {"$ref": "#/$defs/name"},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action", "science fiction"]}, "minItems": 1, "maxItems": 2},
        "rating": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 10}, {"type": "null"}]},
    },
    "required": ["title", "director", "year", "genres", "rating"],
    "additionalProperties": False,
    "$defs": {"name": {"type": "string", "pattern": "^[A-Z][a-z]+( [A-Z][a-z]+){0,2}$"}},
}


def streamed_schema():
    text, finish = "", None
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Recommend a film."}],
        response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA, "strict": True}},
        max_tokens=200,
        temperature=0.7,
        seed=3,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop", (finish, text)
    jsonschema.validate(json.loads(text), SCHEMA)


def json_mode():
    r = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"},
        max_tokens=300,
        temperature=0,
    )
    c = r.choices[0]
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict), c.message.content
    else:
        assert c.finish_reason == "length" and c.message.content.startswith("{"), c


def refused():
    bad = {"type": "object", "properties": {"a": {"type": "string", "not": {"maxLength": 3}}}}
    try:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Hi."}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}},
            max_tokens=10,
        )
    except openai.BadRequestError as e:
        body = e.body or {}
        assert body.get("param") == "response_format", body
        assert '"not"' in body.get("message", "") and "/properties/a/not" in body["message"], body
    else:
        raise AssertionError("an uncompilable schema was accepted")
    # A stop sequence would cut the JSON short: refused.
    try:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Hi."}],
            response_format={"type": "json_object"},
            stop=["}"],
            max_tokens=10,
        )
    except openai.BadRequestError as e:
        assert (e.body or {}).get("param") == "stop", e.body
    else:
        raise AssertionError("stop with a response_format was accepted")
    try:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Hi."}],
            response_format={"type": "xml"},
            max_tokens=10,
        )
    except openai.BadRequestError as e:
        assert "xml" in str(e), e
    else:
        raise AssertionError("an unknown response_format type was accepted")


check("parse_with_pydantic", parse_with_pydantic)
check("parse_unbounded_within_budget", parse_unbounded_within_budget)
check("streamed_schema", streamed_schema)
check("json_mode", json_mode)
check("refused", refused)
