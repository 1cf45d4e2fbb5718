"""Forced tool calls on real-world function schemas, through the official
`openai` client: each function-call parameters schema of the corpus
(tests/schemas/corpus/github-mcp-server and tau-bench: 15, with their
sources and licences) is offered as the one tool, named in `tool_choice`
(`parallel_tool_calls` false), with a request for a call as a user would
write it; temperature 0, `max_tokens` 768. A call counts only if the answer ends `tool_calls` with
one call to that function whose arguments validate under its parameters
(`jsonschema`, Draft 2020-12); anything else (text, a refusal, a cut call)
is a failure.

    forced_tools.py [--every N] [--min-valid F] [--label L]

Environment: SYMBI_URL (…/v1), SYMBI_TOKEN_A1, model `smollm2`. Prints one
line per function ("ok NAME"), then a JSON summary; exits 1 below
--min-valid. bench/forced-tools.sh runs it against llama-server too.
"""

import argparse
import json
import os
import pathlib
import re
import sys
import time

import jsonschema
import openai
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "schemas" / "corpus"


def functions():
    out = []
    for d in ("github-mcp-server", "tau-bench"):
        for f in sorted((ROOT / d).glob("*.json")):
            name = re.sub(r"[^a-zA-Z0-9_-]", "_", f.stem)[:64]
            out.append((f"{d}/{f.stem}", name, json.loads(f.read_text())))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--min-valid", type=float, default=0.0)
    ap.add_argument("--label", default="symbi-slm serve")
    args = ap.parse_args()
    client = OpenAI(base_url=os.environ["SYMBI_URL"], api_key=os.environ["SYMBI_TOKEN_A1"],
                    max_retries=0, timeout=600)
    todo = functions()[::args.every]
    valid, failures, tokens, seconds = 0, {}, 0, 0.0
    for label, name, params in todo:
        tool = {"type": "function", "function": {
            "name": name, "description": params.get("description", name.replace("_", " ")),
            "parameters": params}}
        started = time.monotonic()
        try:
            r = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Call {name} with plausible arguments."}],
                tools=[tool], tool_choice={"type": "function", "function": {"name": name}},
                parallel_tool_calls=False,
                temperature=0, max_tokens=768)
        except openai.APIError as e:
            failures[label] = f"refused: {getattr(e, 'status_code', '')} {str(e)[:200]}"
            print(f"FAIL {label}: {failures[label]}", flush=True)
            continue
        seconds += time.monotonic() - started
        tokens += r.usage.completion_tokens if r.usage else 0
        c = r.choices[0]
        calls = c.message.tool_calls or []
        why = None
        if c.finish_reason != "tool_calls" or len(calls) != 1:
            why = f"finish_reason {c.finish_reason}, {len(calls)} calls, text {str(c.message.content)[:150]!r}"
        elif calls[0].function.name != name:
            why = f"called {calls[0].function.name}"
        else:
            try:
                errors = list(jsonschema.Draft202012Validator(params).iter_errors(
                    json.loads(calls[0].function.arguments)))
                if errors:
                    why = f"invalid arguments at /{'/'.join(map(str, errors[0].absolute_path))}: {errors[0].message[:150]}"
            except json.JSONDecodeError as e:
                why = f"arguments not JSON: {e}"
        if why:
            failures[label] = why
            print(f"FAIL {label}: {why}", flush=True)
        else:
            valid += 1
            print(f"ok {label}", flush=True)
    summary = {"server": args.label, "functions": len(todo), "valid": valid,
               "valid_fraction": round(valid / len(todo), 4),
               "tokens_per_s": round(tokens / seconds, 2) if seconds else None, "failures": failures}
    print(json.dumps(summary))
    if valid / len(todo) < args.min_valid:
        sys.exit(1)


main()
