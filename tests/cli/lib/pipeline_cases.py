#!/usr/bin/env python3
"""Runs every `pipeline` case of a reference.json through `tpipe run` and compares
the output with transformers' (labels and shapes exactly, scores within 1e-4).

usage: pipeline_cases.py TPIPE MODEL_DIR REFERENCE_JSON [--via args|json-file|json-stdin]
                         [--key pipeline]

--via args (default): a string or a list of two or more texts as TEXT arguments,
kwargs as --param KEY=JSON; a list of one text (which one TEXT argument cannot say)
goes as a --json body on stdin. json-file / json-stdin: every case as an Inference
API body {"inputs": ..., "parameters": ...}. Prints one line per case; exit 1 if any
case failed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jsoncmp import diff  # noqa: E402


def run_case(tpipe, model, case, via, tmpdir):
    inputs, kwargs = case["args"][0], case.get("kwargs", {})
    cmd = [tpipe, "run", case["task"], "--model", model]
    stdin = None
    as_args = isinstance(inputs, str) or (isinstance(inputs, list) and len(inputs) >= 2
                                          and all(isinstance(t, str) for t in inputs))
    if via == "args" and as_args:
        for k, v in kwargs.items():
            cmd += ["--param", f"{k}={json.dumps(v)}"]
        cmd += ["--"] + ([inputs] if isinstance(inputs, str) else inputs)
    else:
        body = json.dumps({"inputs": inputs, "parameters": kwargs})
        if via == "json-file":
            path = os.path.join(tmpdir, "request.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(body)
            cmd += ["--json", path]
        else:
            cmd += ["--json", "-"]
            stdin = body
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=600)
    return cmd, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tpipe")
    ap.add_argument("model")
    ap.add_argument("reference")
    ap.add_argument("--via", default="args", choices=["args", "json-file", "json-stdin"])
    ap.add_argument("--key", default="pipeline")
    a = ap.parse_args()
    with open(a.reference, encoding="utf-8") as f:
        cases = json.load(f).get(a.key, [])
    if not cases:
        print(f"FAIL: {a.reference} has no '{a.key}' cases")
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmpdir:
        for i, case in enumerate(cases):
            cmd, p = run_case(a.tpipe, a.model, case, a.via, tmpdir)
            name = f"{os.path.basename(a.model)} {a.key}[{i}] kwargs={json.dumps(case.get('kwargs', {}))} via {a.via}"
            why = None
            if p.returncode != 0:
                why = f"exit {p.returncode}: {p.stderr.strip()[:300]}"
            elif p.stderr:
                why = f"unexpected stderr: {p.stderr.strip()[:300]}"
            else:
                try:
                    why = diff(json.loads(p.stdout), case["output"], 1e-4)
                except ValueError as e:
                    why = f"stdout is not JSON ({e}): {p.stdout[:200]!r}"
            if why:
                failed += 1
                print(f"FAIL: {name}: {why}")
                print("   command: " + " ".join(json.dumps(c) if " " in c else c for c in cmd)[:400])
            else:
                print(f"ok: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
