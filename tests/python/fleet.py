#!/usr/bin/env python3
"""A fleet on loopback (issue 23): three `symbi-slm serve` replicas behind
HAProxy (deploy/haproxy.cfg, as shipped), scraped by Prometheus
(deploy/prometheus/, as shipped but for a 1 s interval), loaded through the
`openai` client by several agents.

Phases:
  A. affinity: every agent's requests; a refused agent; a burst of one agent
     past the balancer's per-agent limit. Then Prometheus' fleet queries must
     match what the load counted, the audit events on the replicas' stdout
     must be the refusals, the stick table must hold token hashes only.
  B. round robin (the same file with `balance roundrobin`), fresh prompts:
     the prefix-cache hit ratio against A's.
  C. failure: the same load while one replica is drained (SIGTERM) and
     another killed (SIGKILL). Only requests in flight on the killed replica
     may fail, each with a retryable status before its headers or, for a
     stream already started, with an error the client sees; the drained
     replica fails none and exits 0.

Two cores are shared by three replicas: counts are asserted, never speed.
Prints `ok …` per check and a `report …` JSON line; exits 1 on a failure.

Usage: fleet.py --bin DIR --model FILE [--agents N] [--requests K]
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import anthropic
import openai

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
DRAIN_SECONDS = 5
FAILED = []


def check(cond, what, detail=""):
    if cond:
        print(f"ok {what}", flush=True)
    else:
        print(f"FAIL {what}: {detail}", flush=True)
        FAILED.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def wait_for(what, cond, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


class Lines:
    """A process's output read by a thread, each line with the time it came."""

    def __init__(self, stream, path):
        self.lines = []
        self.lock = threading.Lock()
        self.file = open(path, "w")
        self.thread = threading.Thread(target=self.read, args=(stream,), daemon=True)
        self.thread.start()

    def read(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self.lock:
                self.lines.append((time.time(), line))
            self.file.write(line + "\n")
            self.file.flush()

    def all(self):
        with self.lock:
            return list(self.lines)


class Replica:
    def __init__(self, name, bindir, config, port, tmp):
        self.name, self.port = name, port
        self.addr = f"127.0.0.1:{port}"
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", SYMBI_SLM_LOG="info,symbi_slm_audit=off")
        self.proc = subprocess.Popen(
            [os.path.join(bindir, "symbi-slm"), "--log-format", "json", "--config", config,
             "serve", "--listen", self.addr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.stdout = Lines(self.proc.stdout, os.path.join(tmp, f"{name}.stdout"))
        self.stderr = Lines(self.proc.stderr, os.path.join(tmp, f"{name}.stderr"))

    def ready(self):
        return http_get(f"http://{self.addr}/ready")[0] == 200

    def log_events(self, target):
        out = []
        for _, line in self.stderr.all():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("target") == target:
                out.append(e)
        return out


class Haproxy:
    def __init__(self, name, cfg, replicas, tmp, keys):
        self.name = name
        self.port, self.admin = free_port(), free_port()
        self.socket = os.path.join(tmp, f"{name}.sock")
        env = dict(os.environ, SYMBI_SLM_BIND=f"127.0.0.1:{self.port}", SYMBI_SLM_AGENTS=keys,
                   SYMBI_SLM_ADMIN=f"127.0.0.1:{self.admin}", SYMBI_SLM_SOCKET=self.socket)
        for i, r in enumerate(replicas, 1):
            env[f"SYMBI_SLM_REPLICA{i}"] = r.addr
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.out = Lines(self.proc.stdout, os.path.join(tmp, f"{name}.log"))
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self, cmd):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket)
            s.sendall(cmd.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def requests(self):
        """Request log lines by the client's request id."""
        pat = re.compile(
            r"^\S+ \[(?P<accept>[^\]]+)\] \S+ (?P<backend>[^/ ]+)/(?P<server>\S+) "
            r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>-?\d+) "
            r"(?P<status>\d+) (?P<bytes>\d+) (?P<term>\S{4}) "
            r"\S+/\S+/\S+/\S+/\+?(?P<retries>\d+) \S+ agent=(?P<agent>\S*) "
            r"\{(?P<client_id>[^}]*)\} \{(?P<request_id>[^}]*)\}")
        out = {}
        for t, line in self.out.all():
            m = pat.match(line)
            if m:
                d = m.groupdict()
                d["logged"] = t
                d["line"] = line
                out[d["client_id"]] = d
        return out

    def events(self, pattern):
        return [(t, l) for t, l in self.out.all() if re.search(pattern, l)]


def token_for(bindir, agent):
    out = subprocess.run([os.path.join(bindir, "symbi-slm"), "agents", "token", agent],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    return out[0], out[1]


SYSTEM = ("You are the assistant of team {name}. Team {name} keeps a ledger of "
          "lighthouses along the northern coast: their heights, the colours of their lamps, "
          "the years they were built and the keepers who lived in them. Answer in one short "
          "sentence, plainly, and never invent a lighthouse that is not in the ledger. "
          "The ledger of team {name} lists Bell Rock, Skerryvore, Muckle Flugga, Cape Wrath, "
          "Dunnet Head, Kinnaird Head, Ardnamurchan, Eilean Glas and the Butt of Lewis.")
QUESTIONS = ["Which lighthouse is tallest?", "Name one keeper.", "Which lamp is red?",
             "When was Bell Rock built?", "Where is Cape Wrath?", "Is Skerryvore old?",
             "Which one is furthest north?", "Name a lighthouse."]


def one_request(base, token, agent, client_id, system, question, stream, max_tokens):
    """One chat completion; its outcome as a dict."""
    client = openai.OpenAI(base_url=base + "/v1", api_key=token, max_retries=0,
                           timeout=180.0)
    r = {"id": client_id, "agent": agent, "stream": stream, "start": time.time()}
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    try:
        if stream:
            chunks, opened = 0, False
            try:
                s = client.chat.completions.create(
                    model="smollm2", messages=messages, max_tokens=max_tokens, temperature=0,
                    stream=True, stream_options={"include_usage": True},
                    extra_headers={"X-Client-Request-Id": client_id})
                opened = True
                for c in s:
                    chunks += 1
                    if c.usage:
                        r["usage"] = c.usage
                r["outcome"] = "ok" if "usage" in r else "stream-ended-without-usage"
            except openai.APIStatusError as e:
                r["outcome"], r["status"] = "status", e.status_code
            except Exception as e:  # noqa: BLE001 - classified below
                r["outcome"] = "stream-error" if opened else "error-before-headers"
                r["error"] = f"{type(e).__name__}: {e}"
                r["timeout"] = isinstance(e, openai.APITimeoutError) or "Timeout" in type(e).__name__
            r["chunks"] = chunks
        else:
            try:
                c = client.chat.completions.create(
                    model="smollm2", messages=messages, max_tokens=max_tokens, temperature=0,
                    extra_headers={"X-Client-Request-Id": client_id})
                r["outcome"], r["usage"] = "ok", c.usage
            except openai.APIStatusError as e:
                r["outcome"], r["status"] = "status", e.status_code
                r["code"] = (e.body or {}).get("code") if isinstance(e.body, dict) else None
            except Exception as e:  # noqa: BLE001
                r["outcome"], r["error"] = "error-before-headers", f"{type(e).__name__}: {e}"
                r["timeout"] = isinstance(e, openai.APITimeoutError) or "Timeout" in type(e).__name__
    finally:
        r["end"] = time.time()
        client.close()
    if "usage" in r:
        u = r.pop("usage")
        details = getattr(u, "prompt_tokens_details", None)
        r["prompt_tokens"] = u.prompt_tokens
        r["cached_tokens"] = getattr(details, "cached_tokens", 0) or 0
        r["completion_tokens"] = u.completion_tokens
    return r


def load(base, agents, tokens, per_agent, phase, salt, max_tokens=8, during=None):
    """Every agent sends `per_agent` requests one after another, all agents at
    once; odd agents stream. `during(t0)` runs beside them."""
    results, lock = [], threading.Lock()

    def agent_loop(i, agent):
        system = SYSTEM.format(name=f"{salt}{agent}")
        for k in range(per_agent):
            r = one_request(base, tokens[agent], agent, f"{phase}-{agent}-{k}", system,
                            QUESTIONS[k % len(QUESTIONS)], i % 2 == 1, max_tokens)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=agent_loop, args=(i, a)) for i, a in enumerate(agents)]
    t0 = time.time()
    for t in threads:
        t.start()
    side = None
    if during:
        side = threading.Thread(target=during, args=(t0,))
        side.start()
    for t in threads:
        t.join(timeout=600)
    if side:
        side.join(timeout=600)
    hung = sum(t.is_alive() for t in threads + ([side] if side else []))
    check(hung == 0, f"{phase}: every agent's requests ended within 600 s", hung)
    return results, time.time() - t0


def hit_ratio(results):
    prompt = sum(r.get("prompt_tokens", 0) for r in results)
    cached = sum(r.get("cached_tokens", 0) for r in results)
    return cached / prompt if prompt else 0.0, cached, prompt


class Prometheus:
    def __init__(self, tmp, replicas, haproxies):
        d = os.path.join(tmp, "prometheus")
        text = open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")).read()
        assert text.count("scrape_interval: 15s") == 1, "the shipped scrape interval moved"
        text = text.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
            "evaluation_interval: 15s", "evaluation_interval: 1s")
        open(os.path.join(d, "prometheus.yml"), "w").write(text)
        shutil.copy(os.path.join(DEPLOY, "prometheus", "rules.yml"), d)
        json.dump([{"targets": [r.addr for r in replicas]}],
                  open(os.path.join(d, "replicas.json"), "w"))
        json.dump([{"targets": [f"127.0.0.1:{h.admin}" for h in haproxies]}],
                  open(os.path.join(d, "haproxy.json"), "w"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w"))

    def query(self, q, at=None):
        params = {"query": q} if at is None else {"query": q, "time": f"{at:.3f}"}
        code, body = http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params))
        if code != 200:
            raise RuntimeError(f"query {q}: {code} {body}")
        return json.loads(body)["data"]["result"]

    def scraped_after(self, t):
        """Whether every replica was scraped, and up, after `t`."""
        try:
            q = self.query('up{job="symbi-slm"}')
            ts = self.query('timestamp(up{job="symbi-slm"})')
        except (RuntimeError, OSError):
            return False
        return (len(q) == 3 and all(float(x["value"][1]) == 1 for x in q)
                and all(float(x["value"][1]) > t for x in ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    for tool in ("haproxy", "prometheus", "promtool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/setup.sh installs Debian's haproxy and prometheus)")
    tmp = tempfile.mkdtemp(prefix="symbi-fleet-")
    procs = []
    report = {}
    try:
        agents = [f"ag{i}" for i in range(args.agents)]
        tokens, lines = {}, []
        for a in agents + ["denied"]:
            tokens[a], line = token_for(args.bin, a)
            lines.append(line)
        out = subprocess.run([os.path.join(args.bin, "symbi-slm"), "agents", "metrics-token"],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        scraper, metrics_line = out[0], out[1]
        tokens_dir = os.path.join(tmp, "prometheus")
        os.makedirs(tokens_dir)
        with open(os.path.join(tokens_dir, "metrics.token"), "w") as f:
            f.write(scraper)
        ports = [free_port() for _ in range(3)]
        replicas = []
        for i, port in enumerate(ports, 1):
            config = os.path.join(tmp, f"r{i}.toml")
            open(config, "w").write(f"""[slm]
enabled = true
audit_log_path = "-"
[[slm.model_allow_lists.global_models]]
id = "smollm2"
name = "SmolLM2"
provider = {{ LocalFile = {{ file_path = "{args.model}" }} }}
capabilities = ["TextGeneration"]
[slm.model_allow_lists.global_models.settings]
threads = 1
slots = 6
context_size = 1024
[slm.model_allow_lists.agent_model_maps]
{chr(10).join(f'{a} = ["smollm2"]' for a in agents)}
denied = []
[slm.pool]
pinned_models = ["smollm2"]
[slm.service]
sandbox_profile = "standard"
drain_seconds = {DRAIN_SECONDS}
max_connections_per_client = 256
{metrics_line}
[slm.service.agent_tokens]
{chr(10).join(lines)}
""")
            replicas.append(Replica(f"r{i}", args.bin, config, port, tmp))
        procs += [r.proc for r in replicas]
        for r in replicas:
            wait_for(f"{r.name} ready", lambda r=r: r.ready() or r.proc.poll() is not None, 180)
            if r.proc.poll() is not None:
                raise SystemExit(f"{r.name} exited: {open(os.path.join(tmp, r.name + '.stderr')).read()}")
        keys = os.path.join(tmp, "agents.keys")
        with open(keys, "w") as f:
            subprocess.run([os.path.join(args.bin, "symbi-slm"), "--config", os.path.join(tmp, "r1.toml"),
                            "agents", "balancer-keys"], check=True, stdout=f)
        cfg = os.path.join(DEPLOY, "haproxy.cfg")
        text = open(cfg).read()
        assert text.count("balance hash var(txn.agent)") == 1
        rr_cfg = os.path.join(tmp, "haproxy-roundrobin.cfg")
        open(rr_cfg, "w").write(text.replace("balance hash var(txn.agent)", "balance roundrobin"))
        hap = Haproxy("haproxy", cfg, replicas, tmp, keys)
        rr = Haproxy("haproxy-rr", rr_cfg, replicas, tmp, keys)
        procs += [hap.proc, rr.proc]
        prom = Prometheus(tmp, replicas, [hap])
        procs.append(prom.proc)
        for h in (hap, rr):
            wait_for(f"{h.name} sees the replicas up",
                     lambda h=h: http_get(f"http://127.0.0.1:{h.admin}/stats;csv")[1].count(",UP,") >= 3, 30)
        wait_for("prometheus ready", lambda: http_get(f"{prom.url}/-/ready")[0] == 200, 60)

        # --- A: affinity -----------------------------------------------------
        a_start = time.time()
        a_res, _ = load(hap.url, agents, tokens, args.requests, "A", "")
        denied = [one_request(hap.url, tokens["denied"], "denied", f"A-denied-{k}", "x", "hi", False, 4)
                  for k in range(3)]
        burst = []
        bl = threading.Lock()
        ready = threading.Barrier(10, timeout=120)

        def burst_one(k):
            # Each client is made first; then all ten send at once.
            client = openai.OpenAI(base_url=hap.url + "/v1", api_key=tokens[agents[0]], max_retries=0, timeout=180.0)
            r = {"id": f"A-burst-{k}", "agent": agents[0], "start": time.time()}
            try:
                ready.wait()
                c = client.chat.completions.create(
                    model="smollm2", max_tokens=64, temperature=0,
                    messages=[{"role": "user", "content": f"Write a long story about lighthouse number {k}."}],
                    extra_headers={"X-Client-Request-Id": f"A-burst-{k}"})
                r.update(outcome="ok", prompt_tokens=c.usage.prompt_tokens,
                         cached_tokens=getattr(c.usage.prompt_tokens_details, "cached_tokens", 0) or 0,
                         completion_tokens=c.usage.completion_tokens)
            except openai.APIStatusError as e:
                r.update(outcome="status", status=e.status_code,
                         code=(e.body or {}).get("code") if isinstance(e.body, dict) else None)
            except Exception as e:  # noqa: BLE001 - an outcome like any other
                r.update(outcome="error", error=f"{type(e).__name__}: {e}")
            finally:
                client.close()
                with bl:
                    burst.append(r)
        bt = [threading.Thread(target=burst_one, args=(k,)) for k in range(10)]
        for t in bt:
            t.start()
        for t in bt:
            t.join(300)
        check(not any(t.is_alive() for t in bt), "A: the burst's requests all ended")
        ok_a = [r for r in a_res if r["outcome"] == "ok"]
        check(len(ok_a) == len(agents) * args.requests, "A: every agent's request answered",
              [r for r in a_res if r["outcome"] != "ok"])
        check([r.get("status") for r in denied] == [403] * 3, "A: the agent with no model refused 403", denied)
        refused = [r for r in burst if r.get("status") == 429 and r.get("code") == "agent_concurrency_limit"]
        check(len(refused) == 2 and sum(r["outcome"] == "ok" for r in burst) == 8,
              "A: a burst of 10 from one agent: 8 admitted, 2 refused 429 by the balancer (8 in progress per agent)",
              [(r["outcome"], r.get("status"), r.get("code")) for r in burst])
        logged = hap.requests()
        check(all(logged.get(r["id"], {}).get("server") == "<NOSRV>" for r in refused),
              "A: the balancer's refusals never reached a replica", [logged.get(r["id"]) for r in refused])
        # Affinity: each agent on one replica.
        homes = {}
        for r in a_res:
            homes.setdefault(r["agent"], set()).add(logged[r["id"]]["server"])
        check(all(len(s) == 1 for s in homes.values()), "A: each agent's requests all went to one replica", homes)
        report["affinity_homes"] = {a: sorted(s)[0] for a, s in homes.items()}
        # An Anthropic client proves itself with x-api-key: the same agent,
        # the same key, the same replica.
        ant = anthropic.Anthropic(base_url=hap.url, api_key=tokens[agents[1]], max_retries=0, timeout=180.0,
                                  default_headers={"X-Client-Request-Id": "A-anthropic"})
        msg = ant.messages.create(model="smollm2", max_tokens=8,
                                  system=SYSTEM.format(name=agents[1]),
                                  messages=[{"role": "user", "content": QUESTIONS[0]}])
        ant.close()
        u = msg.usage
        ant_done = {"prompt_tokens": u.input_tokens + (u.cache_read_input_tokens or 0),
                    "cached_tokens": u.cache_read_input_tokens or 0, "completion_tokens": u.output_tokens}
        a_end = time.time()
        a_secs = a_end - a_start
        d = hap.requests().get("A-anthropic", {})
        check(msg.stop_reason in ("end_turn", "max_tokens") and d.get("server") == report["affinity_homes"][agents[1]]
              and d.get("agent") == hashlib.sha256(tokens[agents[1]].encode()).hexdigest()[:16],
              "an Anthropic client (x-api-key) is the same agent to the balancer: same key, same replica", d)
        # The balancer answers what no replica would take: two tokens, a
        # made-up token, no token; none of it reaches a replica or the table.
        def raw(headers, cid, path="/v1/models"):
            req = urllib.request.Request(hap.url + path, headers={**headers, "X-Client-Request-Id": cid})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        two = [("Authorization", f"Bearer {tokens[agents[2]]}"), ("Authorization", "Bearer made-up")]
        conn = http.client.HTTPConnection("127.0.0.1", hap.port, timeout=10)
        conn.putrequest("GET", "/v1/models")
        for k, v in two + [("X-Client-Request-Id", "A-two-tokens")]:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        two_status, two_body = resp.status, resp.read().decode()
        conn.close()
        made_up = raw({"Authorization": "Bearer symbi_" + "0" * 64}, "A-made-up")
        none = raw({}, "A-no-token")
        health = raw({}, "A-health-public", "/health")
        time.sleep(0.5)
        logged = hap.requests()
        check(two_status == 400 and "ambiguous_credentials" in two_body and made_up[0] == 401 and none[0] == 401
              and all(logged.get(c, {}).get("server") == "<NOSRV>" for c in ("A-two-tokens", "A-made-up", "A-no-token")),
              "the balancer refuses two tokens (400), a made-up token and none (401) itself",
              (two_status, two_body, made_up, none, [logged.get(c) for c in ("A-two-tokens", "A-made-up", "A-no-token")]))
        check(health[0] == 200 and logged.get("A-health-public", {}).get("server", "").startswith("r"),
              "a public route needs no token through the balancer", health)
        # Keys: hashes, never tokens.
        table = hap.command("show table agents")
        keys = re.findall(r"key=(\S+)", table)
        want = {hashlib.sha256(tokens[a].encode()).hexdigest() for a in agents + ["denied"]}
        check(set(keys) <= want and len(keys) == len(agents) + 1,
              "the stick table's keys are the tokens' SHA-256 (as in the config), one per agent", table)
        everything = table + "".join(l for _, l in hap.out.all())
        check(not any(t in everything for t in list(tokens.values()) + [scraper]), "no token in the stick table or the balancer's log")
        report["A"] = {"requests": len(a_res) + len(denied) + len(burst), "seconds": round(a_secs, 1)}

        # Prometheus over the fleet.
        wait_for("a scrape after the load", lambda: prom.scraped_after(a_end + 0.5), 30)
        sent = {}
        for r in a_res + denied + burst:
            st = "200" if r["outcome"] == "ok" else str(r.get("status"))
            if r.get("code") == "agent_concurrency_limit":
                continue  # the balancer's: no replica saw them
            sent[(r["agent"], st)] = sent.get((r["agent"], st), 0) + 1
        got = {(x["metric"]["agent"], x["metric"]["status"]): int(float(x["value"][1]))
               for x in prom.query('sum by (agent, status) (symbi_slm_requests_total{endpoint="/v1/chat/completions"})')}
        check(got == sent, "Prometheus: requests by agent and status over the fleet match the load", f"{got} != {sent}")
        done = [r for r in a_res + burst if r["outcome"] == "ok"] + [ant_done]
        for metric, key in [("output_tokens", "completion_tokens"), ("input_tokens", "prompt_tokens"),
                            ("cached_tokens", "cached_tokens")]:
            q = prom.query(f"sum(symbi_slm_{metric}_total)")
            v = int(float(q[0]["value"][1])) if q else None
            check(v == sum(r[key] for r in done), f"Prometheus: sum(symbi_slm_{metric}_total) = the clients' usage.{key}",
                  f"{v} != {sum(r[key] for r in done)}")
        q = prom.query(f"max_over_time(sum(symbi_slm_queue_depth)[{int(time.time() - a_end + a_secs + 30)}s:1s])")
        peak = int(float(q[0]["value"][1])) if q else None
        check(peak is not None and peak >= 1, "Prometheus: the queue depth seen over the fleet during the burst", peak)
        q = prom.query("sum(symbi_slm_queue_depth)")
        check(q and float(q[0]["value"][1]) == 0, "Prometheus: the queue is empty once the load ended", q)
        q = prom.query('sum(symbi_slm_requests_total{status="403"})')
        check(q and int(float(q[0]["value"][1])) == 3, "Prometheus: refusals (403) counted", q)
        rate = prom.query(f"sum(rate(symbi_slm_output_tokens_total[{int(a_secs) + 1}s]))", at=a_end + 1)
        report["prometheus"] = {
            "requests_by_agent_status": {f"{a}/{s}": n for (a, s), n in sorted(got.items())},
            "queue_depth_peak": peak,
            "output_tokens_per_second_rate": round(float(rate[0]["value"][1]), 2) if rate else None,
            "output_tokens_per_second_client": round(sum(r["completion_tokens"] for r in done) / max(a_secs, 1e-9), 2),
        }
        # The recording rules and the dashboard's queries parse and answer.
        dash = json.load(open(os.path.join(DEPLOY, "grafana", "symbi-slm.json")))
        exprs = [t["expr"].replace("$__rate_interval", "1m").replace("$agent", ".*").replace("$model", ".*")
                 for p in dash["panels"] for t in p.get("targets", [])]
        bad = []
        for e in exprs:
            try:
                # The fleet's own series must be there after the load.
                # (but the counters of what did not happen: no limit was
                # hit and no sandbox denied anything).
                rare = ("symbi_slm_limit_hits", "symbi_slm_sandbox_denials")
                if not prom.query(e) and not any(m in e for m in rare):
                    bad.append(f"no series: {e}")
            except RuntimeError as err:
                bad.append(str(err))
        check(exprs and not bad, f"the Grafana dashboard's {len(exprs)} queries are valid PromQL on this Prometheus", bad)
        p = subprocess.run(["promtool", "check", "rules", os.path.join(DEPLOY, "prometheus", "rules.yml")],
                           capture_output=True, text=True)
        check(p.returncode == 0, "promtool check rules: deploy/prometheus/rules.yml", p.stdout + p.stderr)
        q = prom.query('sum(agent_status:symbi_slm_requests:rate1m) > 0')
        check(bool(q), "a recording rule of rules.yml answers over the fleet", q)
        # promtool lints each replica's exposition.
        for r in replicas:
            req = urllib.request.Request(f"http://{r.addr}/metrics",
                                         headers={"Authorization": f"Bearer {scraper}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                text, classic_type = resp.read().decode(), resp.headers["Content-Type"]
            req.add_header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
            with urllib.request.urlopen(req, timeout=10) as resp:
                om, om_type = resp.read().decode(), resp.headers["Content-Type"]
            check(classic_type.startswith("text/plain; version=0.0.4") and om_type.startswith("application/openmetrics-text")
                  and om.endswith("# EOF\n") and "# EOF" not in text,
                  f"{r.name}'s /metrics: OpenMetrics when asked for, the classic text format otherwise", (classic_type, om_type))
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            check(p.returncode == 0, f"promtool check metrics: {r.name}'s /metrics follows the conventions", p.stdout + p.stderr)
        # The audit events on stdout: JSON lines, the three refusals, under
        # the request ids the balancer logged.
        audit = []
        for r in replicas:
            for _, line in r.stdout.all():
                try:
                    audit.append(json.loads(line))
                except ValueError:
                    check(False, f"{r.name}'s stdout holds only JSON lines", line)
        refusals = [e for e in audit if e.get("kind") == "access_refused"]
        ids = {logged[d["id"]]["request_id"] for d in denied}
        check(len(refusals) == 3 and {e.get("request_id") for e in refusals} == ids,
              "the replicas' stdout: one audit event per refusal, under the request id HAProxy logged", (refusals, ids))
        req_logs = [e for r in replicas for e in r.log_events("symbi_slm_request")]
        logged_ids = {e["fields"]["request_id"] for e in req_logs}
        check(all(logged[r["id"]]["request_id"] in logged_ids for r in ok_a),
              "every answered request's id is in its replica's JSON request log and in HAProxy's log")

        # --- B: round robin ----------------------------------------------------
        b_res, b_secs = load(rr.url, agents, tokens, args.requests, "B", "rr-")
        check(all(r["outcome"] == "ok" for r in b_res), "B: every request answered (round robin)",
              [r for r in b_res if r["outcome"] != "ok"])
        ra, ca, pa = hit_ratio(a_res)
        rb, cb, pb = hit_ratio(b_res)
        check(ra > rb, "the prefix-cache hit ratio with affinity beats round robin's", (ra, rb))
        report["prefix_cache_hit_ratio"] = {"affinity": round(ra, 3), "affinity_tokens": [ca, pa],
                                            "round_robin": round(rb, 3), "round_robin_tokens": [cb, pb]}

        # --- C: one replica drained, one killed -----------------------------
        by_load = {}
        for a, s in report["affinity_homes"].items():
            by_load.setdefault(s, []).append(a)
        ranked = sorted(by_load, key=lambda s: -len(by_load[s]))
        if len(ranked) < 2:
            raise SystemExit(f"every agent hashed to one replica ({by_load}): no replica to drain beside the killed one")
        kill_name, drain_name = ranked[0], ranked[1]
        victim = next(r for r in replicas if r.name == kill_name)
        drained = next(r for r in replicas if r.name == drain_name)
        marks, extra = {}, []
        d_agent, k_agent = by_load[drain_name][0], by_load[kill_name][0]

        def long_request(cid, stream, first):
            """A long request from an agent of the replica to be killed."""
            client = openai.OpenAI(base_url=hap.url + "/v1", api_key=tokens[k_agent], max_retries=0, timeout=180.0)
            r = {"id": cid, "agent": k_agent, "stream": stream, "start": time.time(), "chunks": 0}
            try:
                c = client.chat.completions.create(
                    model="smollm2", max_tokens=400, temperature=0, stream=stream,
                    messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                    extra_headers={"X-Client-Request-Id": cid})
                if stream:
                    for _ in c:
                        r["chunks"] += 1
                        first.set()
                r["outcome"] = "ok"
            except openai.APIStatusError as e:
                r.update(outcome="status", status=e.status_code)
            except Exception as e:  # noqa: BLE001
                r.update(outcome="stream-error" if r["chunks"] else "error-before-headers",
                         error=f"{type(e).__name__}: {e}",
                         timeout=isinstance(e, openai.APITimeoutError) or "Timeout" in type(e).__name__)
            finally:
                first.set()
                r["end"] = time.time()
                client.close()
                extra.append(r)

        def chaos(t0):
            time.sleep(3)
            marks["sigterm"] = time.time()
            drained.proc.send_signal(signal.SIGTERM)
            # Once the replica drains (its /ready fails), and before the
            # balancer's two failed checks (≥ 1 s) take it out: a request
            # the balancer still sends there must be served.
            end = time.time() + 1
            while time.time() < end and drained.ready():
                time.sleep(0.01)
            marks["draining_seen"] = time.time()
            during = threading.Thread(target=lambda: extra.append(one_request(
                hap.url, tokens[d_agent], d_agent, "C-during-drain", SYSTEM.format(name=d_agent),
                QUESTIONS[1], False, 8)))
            during.start()
            # A non-streamed request and a stream on the replica to be
            # killed, the stream's first token in: then SIGKILL.
            first, unused = threading.Event(), threading.Event()
            plain = threading.Thread(target=long_request, args=("C-kill-plain", False, unused))
            plain.start()
            time.sleep(0.2)
            streamed = threading.Thread(target=long_request, args=("C-kill-stream", True, first))
            streamed.start()
            first.wait(120)
            time.sleep(0.3)
            marks["sigkill"] = time.time()
            victim.proc.kill()
            for t in (during, plain, streamed):
                t.join(300)
                marks.setdefault("hung", 0)
                marks["hung"] += t.is_alive()

        c_load, c_secs = load(hap.url, agents, tokens, args.requests + 2, "C", "", max_tokens=24, during=chaos)
        c_res = c_load + extra
        check(len(c_load) == len(agents) * (args.requests + 2) and len(extra) == 3 and marks.get("hung") == 0,
              "C: every request ended (none hung)", (len(c_load), len(extra), marks))
        try:
            drained_exit = drained.proc.wait(timeout=DRAIN_SECONDS + 60)
        except subprocess.TimeoutExpired:
            drained_exit = "still running"
        victim.proc.wait(timeout=10)
        time.sleep(1.5)
        logged = hap.requests()
        failed = [r for r in c_res if r["outcome"] != "ok"]
        answered = [r for r in c_res if r["outcome"] == "ok"]
        kill_t = marks["sigkill"]
        # In flight on the killed replica at the kill: HAProxy's lines for it
        # whose request was sent before and ended after.
        def span(d):
            return d["logged"] - int(d["Ta"]) / 1000.0, d["logged"]
        in_flight = {cid for cid, d in logged.items()
                     if cid.startswith("C-") and d["server"] == kill_name and span(d)[0] <= kill_t + 0.05 <= span(d)[1] + 0.5}
        bad = []
        for r in failed:
            d = logged.get(r["id"])
            retryable = (r["outcome"] == "status" and r.get("status") in (502, 503, 504)) or \
                        (r["outcome"] == "stream-error" and not r.get("timeout"))
            if not d or d["server"] != kill_name or r["start"] > kill_t or not retryable:
                bad.append((r, d))
        check(not bad, "C: every failed request was in flight on the killed replica, and failed retryably "
              "(a 5xx before its headers, or a stream that ended with an error)", bad)
        check(all(not r.get("timeout") for r in c_res), "C: no request hung", [r for r in c_res if r.get("timeout")])
        check(len(failed) <= len(in_flight), "C: failures ≤ the killed replica's requests in flight", (len(failed), in_flight))
        by_id = {r["id"]: r for r in c_res}
        ks, kp = by_id["C-kill-stream"], by_id["C-kill-plain"]
        check(ks["outcome"] == "stream-error" and ks["chunks"] > 0 and not ks.get("timeout"),
              "C: a stream running on the killed replica ends with an error the client sees", ks)
        check(kp["outcome"] == "status" and kp.get("status") in (502, 503, 504),
              "C: a non-streamed request in flight on the killed replica fails before its headers, with a retryable status", kp)
        on_drained = [d for cid, d in logged.items() if cid.startswith("C-") and d["server"] == drain_name]
        after_term = [d for d in on_drained if span(d)[0] >= marks["sigterm"]]
        dd = logged.get("C-during-drain", {})
        from datetime import datetime

        def when(e):
            return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        drain_said = [when(e) for e in drained.log_events("symbi_slm::serve_cmd")
                      if "SIGTERM: draining" in e["fields"].get("message", "")]
        started = [when(e) - e["fields"]["total_ms"] / 1000.0 for e in drained.log_events("symbi_slm_request")
                   if e["fields"].get("request_id") == dd.get("request_id")]
        check(by_id["C-during-drain"]["outcome"] == "ok" and dd.get("server") == drain_name
              and drain_said and started and started[0] > drain_said[0]
              and marks["draining_seen"] - marks["sigterm"] < 1,
              "C: a request the balancer sent to the replica once it drained was answered (its own log: "
              "the drain began, then the request)", (by_id["C-during-drain"], dd, drain_said, started))
        check(all(d["status"] == "200" and d["term"] == "----" for d in on_drained),
              "C: the drained replica answered every request it got", on_drained)
        check(drained_exit == 0, f"C: the drained replica exited 0 after its drain", drained_exit)
        down = [(t, l) for t, l in hap.events(rf"Server replicas/{drain_name} is DOWN") if t >= marks["sigterm"]]
        check(down and down[0][0] - marks["sigterm"] < DRAIN_SECONDS,
              f"C: the balancer marked the drained replica down within its {DRAIN_SECONDS} s drain",
              [(round(t - marks['sigterm'], 2), l) for t, l in down])
        # From the replica's own request log: when each request it answered
        # began. None after the balancer marked it down.
        began = [when(e) - e["fields"]["total_ms"] / 1000.0 for e in drained.log_events("symbi_slm_request")]
        late = [b for b in began if down and b > down[0][0] + 0.2]
        check(down and began and not late, "C: the drained replica got no request after the balancer marked it down "
              "(its own request log)", [round(b - down[0][0], 2) for b in late])
        retried = [d for cid, d in logged.items() if cid.startswith("C-") and int(d["retries"]) > 0]
        report["C"] = {
            "sent": len(c_res), "answered": len(answered), "failed": len(failed),
            "failed_how": sorted({(r["outcome"], r.get("status")) for r in failed}, key=str),
            "in_flight_on_killed_replica": len(in_flight), "killed": kill_name, "drained": drain_name,
            "drained_served_after_sigterm": len(after_term),
            "drained_marked_down_after_s": round(down[0][0] - marks["sigterm"], 2) if down else None,
            "retried_on_connect_failure_then_answered": sum(1 for d in retried if d["status"] == "200"),
            "seconds": round(c_secs, 1),
        }
        print("report " + json.dumps(report), flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep or FAILED:
            print(f"logs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILED:
        print(f"{len(FAILED)} check(s) failed: {FAILED}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
