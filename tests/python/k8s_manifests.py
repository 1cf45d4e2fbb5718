#!/usr/bin/env python3
"""deploy/kubernetes validated offline (issue 23): every resource against
Kubernetes' own schemas (kubernetes-validate, strict: an unknown field is an
error) for the oldest and newest versions we support; the replicas' config
in the ConfigMap through `symbi-slm config check` (its model path pointed at
the local copy of the same file, whose pin it must match); and what must
agree between files: resources and [slm.pool], the probes and the service's
routes and port, the termination grace and the drain, selectors and labels,
the autoscaler's metric and the adapter's rule and the replicas' metrics.

Usage: k8s_manifests.py --bin DIR --model FILE
Prints `ok …` per check; exits 1 on a failure.
"""

import argparse
import copy
import glob
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIR = os.path.join(ROOT, "deploy", "kubernetes")
VERSIONS = ["1.30.0", "1.37.0"]
FAILED = []


def check(cond, what, detail=""):
    print(("ok " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        FAILED.append(what)


def valid(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        return str(e)


def mebibytes(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
    assert m, q
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    docs = {}
    for path in sorted(glob.glob(os.path.join(DIR, "*.yaml"))):
        for doc in yaml.safe_load_all(open(path)):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
            for v in VERSIONS:
                err = valid(doc, v)
                check(err is None, f"{os.path.basename(path)}: {doc['kind']}/{doc['metadata']['name']} "
                      f"validates against Kubernetes {v} (strict)", err)
    # The validator can fail: a misspelt field, a wrong type.
    dep = docs[("Deployment", "symbi-slm")]
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/ready"}
    check(valid(bad, VERSIONS[0]) is not None, "a misspelt field is refused (the validator is strict)")
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "three"
    check(valid(bad, VERSIONS[0]) is not None, "a wrong type is refused")

    # The config the replicas read.
    text = docs[("ConfigMap", "symbi-slm-config")]["data"]["config.toml"]
    config = tomllib.loads(text)
    slm = config["slm"]
    model_path = slm["model_allow_lists"]["global_models"][0]["provider"]["LocalFile"]["file_path"]
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "config.toml")
        open(local, "w").write(text.replace(model_path, args.model))
        p = subprocess.run([os.path.join(args.bin, "symbi-slm"), "--config", local, "config", "check"],
                           capture_output=True, text=True)
        check(p.returncode == 0, "the ConfigMap's config.toml passes `symbi-slm config check` "
              "(the model's pin included)", p.stdout + p.stderr)
    svc = slm["service"]
    pool = slm["pool"]

    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    req = c["resources"]["requests"]
    check(str(req["cpu"]) == str(pool["cores"]), "requests.cpu = [slm.pool] cores", (req, pool))
    check(mebibytes(req["memory"]) == pool["memory_budget_mb"] + 256,
          "requests.memory = [slm.pool] memory_budget_mb + 256 Mi for the service", (req, pool))
    check(c["resources"]["limits"]["memory"] == req["memory"], "the memory limit is the request (no overcommit)")
    port = int(svc["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports.get("http") == port, "the container port is slm.service.listen's", (ports, svc["listen"]))
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health",
          "readiness on /ready, liveness on /health")
    rp = c["readinessProbe"]
    check(rp["periodSeconds"] * rp["failureThreshold"] < svc["drain_seconds"],
          "the drain outlasts the readiness probe's period × failureThreshold", (rp, svc["drain_seconds"]))
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    pre_s = int(pre[-1]) if pre[0].endswith("sleep") else 0
    need = pre_s + svc["drain_seconds"] + svc["shutdown_grace_seconds"]
    check(pod["terminationGracePeriodSeconds"] > need,
          "terminationGracePeriodSeconds > preStop + drain_seconds + shutdown_grace_seconds",
          (pod["terminationGracePeriodSeconds"], need))
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for kind, name in [("PodDisruptionBudget", "symbi-slm")]:
        sel = docs[(kind, name)]["spec"]["selector"]["matchLabels"]
        check(sel.items() <= labels.items(), f"the {kind}'s selector matches the pods", sel)
    for name in ["symbi-slm", "symbi-slm-replicas"]:
        sel = docs[("Service", name)]["spec"]["selector"]
        check(sel.items() <= labels.items(), f"Service {name} selects the pods", sel)
    hpa = docs[("HorizontalPodAutoscaler", "symbi-slm")]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(docs[("ConfigMap", "symbi-slm-adapter-rules")]["data"]["config.yaml"])["rules"]
    check(any(r["name"]["as"] == metric and metric in r["seriesQuery"] for r in rules),
          "the Prometheus adapter's rule serves the autoscaler's metric", (metric, rules))
    # The scrape job gives the series the labels the adapter's rule maps
    # onto pods.
    jobs = yaml.safe_load(docs[("ConfigMap", "symbi-slm-prometheus-scrape")]["data"]["scrape-config.yaml"])
    check(isinstance(jobs, list) and len(jobs) == 1, "the scrape config is a list of one job (what scrape_configs takes)", jobs)
    job = jobs[0]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    wanted = set(rules[0]["resources"]["overrides"])
    check(wanted <= targets, "the scrape job labels each series with what the adapter maps to pods", (wanted, targets))
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    check(any(r["regex"] == labels["app.kubernetes.io/name"] for r in keep)
          and any(r["regex"] == "http" for r in keep), "the scrape job keeps the Deployment's pods, on the http port", keep)
    # (Debian's promtool is built without Kubernetes discovery, so it
    # cannot read this job: the checks above are what holds here.)
    check("replicas" not in dep["spec"] and hpa["spec"]["minReplicas"] >= 2
          and docs[("PodDisruptionBudget", "symbi-slm")]["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"],
          "the autoscaler owns the replica count, and the disruption budget leaves replicas up")
    metrics_rs = open(os.path.join(ROOT, "crates/symbiont-service/src/metrics.rs")).read()
    check(metric.startswith("symbi_slm_") and f'("{metric[len("symbi_slm_"):]}",' in metrics_rs,
          "the autoscaler's metric is one the replicas export", metric)
    check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "the autoscaler scales the Deployment")
    if FAILED:
        print(f"{len(FAILED)} check(s) failed: {FAILED}")
        sys.exit(1)


if __name__ == "__main__":
    main()
