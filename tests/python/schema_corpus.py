"""Real-world JSON Schemas through the official `openai` client, validated
by the `jsonschema` package: issue 20's measure of structured output.

The corpus is tests/schemas/corpus (60 schemas from 7 public sources, each
with its licence; SOURCES.md says where each came from) plus
tests/schemas/own (the features they miss: `$ref`, `anyOf`, enums,
formats, patterns, bounded arrays, deep nesting). Each is asked for as
JSONSchemaBench asks (a system line, the schema as the user message),
with `response_format` `json_schema`, temperature 0 and `max_tokens` 768.
An answer counts as valid only if it parses and validates under the
schema's own draft (as the worker reads it: 2020-12 without `$schema`,
draft 7 for a dialect neither knows) with the formats the installed package checks (listed in the
summary); a refused schema, an error and
an answer cut by the token limit count as failures.

    schema_corpus.py [--every N] [--only A,B] [--min-valid F] [--plain] [--label L]

Environment: SYMBI_URL (…/v1), SYMBI_TOKEN_A1, model `smollm2` (the test
server's); --every N takes every Nth schema (the CI subset); --only takes
the schemas named (`schemastore/chart`, or a name's last part); --plain also
sends each request without `response_format` after it (its prompt then
cached), and the constrained one again for one token: generation tokens/s
with and without the schema (tokens after the first over the time after
it), and the first token's delay the schema adds (its compile and first
mask: the two cached requests' first tokens apart). Prints one line per schema ("ok NAME" when it
validated), then a JSON summary line; exits 1 below --min-valid.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jsonschema
import openai
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "schemas"
SYSTEM = "You need to generate a JSON object that matches the schema below."
# The prompt holds the schema; one too long for the context (the test
# server's 2,048 tokens less the 768 of the answer) goes without its
# descriptions, which are most of a large schema's text (a few stay longer
# than this even so, and go as they are).
PROMPT_CHARS = 3000


def corpus():
    files = sorted((ROOT / "corpus").glob("*/*.json")) + sorted((ROOT / "own").glob("*.json"))
    return [(f"{f.parent.name}/{f.stem}", json.loads(f.read_text())) for f in files]


NAMES = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
DATA = ("enum", "const", "default", "examples")


def without_descriptions(schema):
    """The schema without its annotations (`description`, `examples`,
    `$comment`), in schemas only: a property named `description` stays."""
    if isinstance(schema, list):
        return [without_descriptions(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in ("description", "examples", "$comment"):
            continue
        if k in NAMES and isinstance(v, dict):
            out[k] = {name: without_descriptions(s) for name, s in v.items()}
        elif k in DATA:
            out[k] = v
        else:
            out[k] = without_descriptions(v)
    return out


def prompt(schema):
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > PROMPT_CHARS:
        text = json.dumps(without_descriptions(schema), separators=(",", ":"))
    return text


def validator(schema):
    # As the worker reads them: without `$schema`, Draft 2020-12 (the
    # engine's default); a dialect the package knows, that one; another
    # (Kubernetes' unversioned `schema#`, Iglu's self-describing
    # meta-schema), Draft 7 (the worker's fallback for those).
    if "$schema" not in schema:
        cls = jsonschema.Draft202012Validator
    else:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def ask(client, schema, constrained, max_tokens=768):
    extra = {}
    if constrained:
        extra["response_format"] = {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": schema, "strict": False}}
    started = time.monotonic()
    ttft, text, finish, usage = None, "", None, None
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt(schema)}],
        max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True}, **extra)
    for chunk in stream:
        if chunk.choices:
            piece = chunk.choices[0].delta.content or ""
            if piece and ttft is None:
                ttft = time.monotonic() - started
            text += piece
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    took = time.monotonic() - started
    return text, finish, usage.completion_tokens if usage else 0, took, ttft


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--only", default="")
    ap.add_argument("--min-valid", type=float, default=0.0)
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--label", default="symbi-slm serve")
    args = ap.parse_args()
    client = OpenAI(base_url=os.environ["SYMBI_URL"], api_key=os.environ["SYMBI_TOKEN_A1"],
                    max_retries=0, timeout=600)
    schemas = corpus()[::args.every]
    if args.only:
        wanted = set(args.only.split(","))
        schemas = [(n, s) for n, s in schemas if n in wanted or n.split("/")[-1] in wanted]
        missing = wanted - {n for n, _ in schemas} - {n.split("/")[-1] for n, _ in schemas}
        if missing:
            sys.exit(f"no such schema: {sorted(missing)}")
    valid, failures = 0, {}
    gen = {"tokens": 0, "seconds": 0.0, "ttft": [], "decode_tokens": 0, "decode_seconds": 0.0}
    plain = {"tokens": 0, "seconds": 0.0, "ttft": [], "decode_tokens": 0, "decode_seconds": 0.0}
    compile_ms = []

    def decode(side, tokens, took, ttft):
        # Tokens after the first over the time after it: generation alone.
        if ttft is not None and tokens > 1:
            side["decode_tokens"] += tokens - 1
            side["decode_seconds"] += took - ttft
    for name, schema in schemas:
        try:
            text, finish, tokens, took, ttft = ask(client, schema, True)
        except openai.APIError as e:
            why = f"refused: {getattr(e, 'status_code', '')} {str(e)[:300]}"
            failures[name] = why
            print(f"FAIL {name}: {why}", flush=True)
            continue
        gen["tokens"] += tokens
        gen["seconds"] += took
        decode(gen, tokens, took, ttft)
        if ttft is not None:
            gen["ttft"].append(ttft)
        if args.plain:
            # The prompt is cached now: the plain request's first token,
            # then the constrained one's again (one token), differ by the
            # schema's compile and first mask alone.
            _, _, p_tokens, p_took, p_ttft = ask(client, schema, False)
            plain["tokens"] += p_tokens
            plain["seconds"] += p_took
            decode(plain, p_tokens, p_took, p_ttft)
            if p_ttft is not None:
                plain["ttft"].append(p_ttft)
            _, _, _, _, c_ttft = ask(client, schema, True, max_tokens=1)
            if p_ttft is not None and c_ttft is not None:
                compile_ms.append(1e3 * (c_ttft - p_ttft))
        why = None
        if finish != "stop":
            why = f"finish_reason {finish} after {tokens} tokens"
        else:
            try:
                errors = sorted(validator(schema).iter_errors(json.loads(text)), key=lambda e: e.path)
                if errors:
                    why = f"invalid at /{'/'.join(map(str, errors[0].absolute_path))}: {errors[0].message[:200]}"
            except json.JSONDecodeError as e:
                why = f"not JSON: {e}"
        if why:
            failures[name] = why
            print(f"FAIL {name}: {why}\n  {text[:400]!r}", flush=True)
        else:
            valid += 1
            print(f"ok {name} ({tokens} tokens)", flush=True)
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
    summary = {
        "server": args.label,
        "schemas": len(schemas),
        "valid": valid,
        "valid_fraction": round(valid / len(schemas), 4),
        "tokens_per_s": round(gen["tokens"] / gen["seconds"], 2) if gen["seconds"] else None,
        "median_ttft_ms": round(1e3 * median(gen["ttft"]), 1) if gen["ttft"] else None,
        "failures": failures,
        # The formats the installed `jsonschema` checks (others pass).
        "formats_checked": sorted(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers),
    }
    if gen["decode_seconds"]:
        summary["decode_tokens_per_s"] = round(gen["decode_tokens"] / gen["decode_seconds"], 2)
    if args.plain and plain["seconds"] and plain["decode_seconds"]:
        summary["plain_tokens_per_s"] = round(plain["tokens"] / plain["seconds"], 2)
        summary["plain_decode_tokens_per_s"] = round(plain["decode_tokens"] / plain["decode_seconds"], 2)
        summary["plain_median_ttft_ms"] = round(1e3 * median(plain["ttft"]), 1)
        summary["schema_over_plain_decode"] = round(summary["decode_tokens_per_s"] / summary["plain_decode_tokens_per_s"], 3)
        summary["median_schema_first_token_ms"] = round(median(compile_ms), 1) if compile_ms else None
    print(json.dumps(summary), flush=True)
    if valid / len(schemas) < args.min_valid:
        sys.exit(f"{valid}/{len(schemas)} valid, below {args.min_valid:.0%}")


main()
