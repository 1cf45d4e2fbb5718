"""A bounded load test on loopback: N requests at concurrency C over two
agents (httpx). Every attempt must end with 200 or a 429 in the OpenAI
error shape with Retry-After (retried after it, at most 3 attempts); none
may be lost. Prints one JSON line: every attempt's status per agent, and
how the requests ended.

Env: SYMBI_URL (…/v1), SYMBI_TOKEN_A1 and SYMBI_TOKEN_A2 (both may use
model smollm2). Args: N C.
"""

import collections
import concurrent.futures
import json
import os
import sys
import time

import httpx

URL = os.environ["SYMBI_URL"]
AGENTS = [("a1", os.environ["SYMBI_TOKEN_A1"], "smollm2"), ("a2", os.environ["SYMBI_TOKEN_A2"], "smollm2")]


def attempt(i, http, body, token):
    r = http.post(f"{URL}/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
    if r.status_code == 200:
        if body["stream"]:
            assert r.text.rstrip().endswith("data: [DONE]"), r.text[-200:]
            assert '"error"' not in r.text, r.text[-300:]
        else:
            j = r.json()
            assert j["usage"]["completion_tokens"] >= 1, j
    elif r.status_code == 429:
        assert r.headers.get("retry-after", "").isdigit(), r.headers
        assert r.json()["error"]["type"] == "rate_limit_error", r.text
    else:
        raise AssertionError(f"request {i}: {r.status_code} {r.text}")
    return r


def one(i, http):
    """One request as a polite client makes it: a 429 is retried after its
    Retry-After, at most 3 attempts. Returns every attempt's status."""
    agent, token, model = AGENTS[i % 2]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Say a number near {i}."}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": i % 3 == 0,
    }
    statuses = []
    for _ in range(3):
        r = attempt(i, http, body, token)
        statuses.append(r.status_code)
        if r.status_code != 429:
            break
        time.sleep(int(r.headers["retry-after"]))
    return agent, statuses


def main():
    n, c = int(sys.argv[1]), int(sys.argv[2])
    seen = collections.Counter()
    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=c)) as http:
        with concurrent.futures.ThreadPoolExecutor(max_workers=c) as pool:
            results = list(pool.map(lambda i: one(i, http), range(n)))
    # Every request ended, with a 200 or (after 3 attempts) a 429.
    assert len(results) == n
    final = collections.Counter(statuses[-1] for _, statuses in results)
    assert set(final) <= {200, 429}, final
    for agent, statuses in results:
        for s in statuses:
            seen[f"{agent} {s}"] += 1
    print(json.dumps({"attempts": dict(seen), "final": {str(k): v for k, v in final.items()}}), flush=True)


if __name__ == "__main__":
    main()
