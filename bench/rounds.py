#!/usr/bin/env python3
"""Combines the rounds of a side-by-side run (ROUNDS=N in side_by_side.sh or
side_by_side_generate.sh: OUTDIR/r1 ... OUTDIR/rN, each with its own results.json)
into one table and one JSON document.

Why rounds: on a shared machine the contenders' speed drifts by tens of percent
within minutes, so one measurement of each, minutes apart, can put a ratio anywhere
in that spread. Each round measures every contender once, alternately transformers
first and tpipe first; a ratio is taken within each round (the two sides measured
minutes apart, not a run apart) and the table gives the median of the rounds' ratios
with their range.

usage: rounds.py {encoders|generation} OUT_JSON ROUND_DIR...
"""
import json
import os
import statistics
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(v):
    return v if isinstance(v, (int, float)) and v > 0 else None


def encoder_values(w):
    """forward ms per contender in one round's workload (lower is better)"""
    def med(r):
        return num(r.get("median_ms")) if isinstance(r, dict) else None
    v = {"transformers": med(w.get("transformers")), "onnxruntime": med(w.get("onnxruntime")),
         "torch bf16": med(w.get("transformers_bf16"))}
    for be, r in w.get("tpipe", {}).items():
        v["tpipe " + be] = med(r.get("forward")) if isinstance(r, dict) else None
    return v


def generation_values(w):
    """tokens/s per contender in one round's workload (higher is better)"""
    def tps(r):
        return num(r.get("tokens_per_s")) if isinstance(r, dict) else None
    v = {"transformers": tps(w.get("transformers"))}
    for be, r in w.get("tpipe", {}).items():
        v["tpipe " + be] = tps(r)
    return v


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("encoders", "generation"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    kind, out, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    encoders = kind == "encoders"
    rounds = [(d, load(os.path.join(d, "results.json"))) for d in dirs]
    missing = [d for d, r in rounds if r is None]
    rounds = [(d, r) for d, r in rounds if r is not None]
    if not rounds:
        print("rounds.py: no results.json in any round", file=sys.stderr)
        return 1

    # workload -> contender -> [value per round] (None where a round lacks it)
    n = len(rounds)
    table, order = {}, []
    for i, (_, r) in enumerate(rounds):
        for w in r.get("workloads", []):
            if encoders:
                key = f"{w['model']} b{w['batch']}"
                values = encoder_values(w)
            else:
                beams = w["num_beams"]
                key = f"{w['model']} " + ("greedy" if beams == 1 else f"beam {beams}")
                values = generation_values(w)
            if key not in table:
                table[key] = {}
                order.append(key)
            for c, v in values.items():
                table[key].setdefault(c, [None] * n)[i] = v

    # ratios within each round, above 1 when tpipe is faster: against transformers for
    # every tpipe column; on the encoders also fp32 against onnxruntime and bf16/int8
    # against torch's own bf16 (the issue asks to be ahead of both)
    def pairs(row):
        tp = [c for c in row if c.startswith("tpipe ")]
        out = [("transformers", c) for c in tp]
        if encoders:
            out += [("onnxruntime", c) for c in tp if "_" not in c]
            out += [("torch bf16", c) for c in tp if "_" in c]
        return out

    doc = {"kind": kind, "rounds": [d for d, _ in rounds], "missing_rounds": missing,
           "workloads": []}
    unit = "ms per batch (lower is better)" if encoders else "tokens/s (higher is better)"
    print(f"{len(rounds)} rounds ({', '.join(os.path.basename(d) for d, _ in rounds)}); "
          f"values: median over the rounds, {unit}; ratios: median of the rounds' own "
          "ratios [lowest-highest], above 1 = tpipe faster")
    for key in order:
        row = table[key]
        w = {"workload": key, "values": row, "median": {}, "ratios": {}}
        cells = []
        for c, vs in row.items():
            got = [v for v in vs if v]
            w["median"][c] = statistics.median(got) if got else None
            if got:
                cells.append(f"{c} {w['median'][c]:.2f}" + (f" ({len(got)}/{n})" if len(got) < n else ""))
        for ref, c in pairs(row):
            rs = []
            for a, b in zip(row[ref], row[c]):
                if a and b:
                    rs.append(a / b if encoders else b / a)
            if rs:
                w["ratios"][f"{c} / {ref}"] = {"median": statistics.median(rs), "min": min(rs),
                                               "max": max(rs), "per_round": rs}
        doc["workloads"].append(w)
        print(f"\n{key}: " + "; ".join(cells))
        for name, r in w["ratios"].items():
            print(f"  {name:<40} {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
                  + (f" ({len(r['per_round'])} rounds)" if len(r["per_round"]) < n else ""))
    if missing:
        print(f"\nrounds without results: {', '.join(missing)}")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
