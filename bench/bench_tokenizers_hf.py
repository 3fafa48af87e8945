#!/usr/bin/env python3
"""bench_tokenizers_hf.py: Hugging Face's side of bench/bench_tokenizers.sh, and its report.

Measure (needs transformers; run it pinned to one CPU, e.g. under `taskset -c 0`):

    bench_tokenizers_hf.py measure --name NAME --dir DIR --corpus FILE --out JSON
                                   --ids-prefix PREFIX [--repeat-to-bytes N] [--iters 3]

  The batch is made as /work/shared/bench/bench_tok.py makes it, and as
  `tpipe bench --tokenizer` does: text = (corpus + "\\n") * k with
  k = max(1, N // len(corpus.encode()) + 1), lines = text.splitlines().
  The tokenizer is loaded as bench_tok.py loads it: llama3 with
  PreTrainedTokenizerFast(tokenizer_file=DIR/tokenizer.json), every other one with
  AutoTokenizer.from_pretrained(DIR). Two measurements, each one untimed call then
  ITERS timed ones, median kept:
    backend-batch      tok._tokenizer.encode_batch(lines) (the Rust library), when the
                       tokenizer has a Rust backend;
    transformers-call  tok(lines)["input_ids"].
  The ids of each go to PREFIX.backend.ids and PREFIX.call.ids: one line per input
  line, the ids separated by spaces (the format of `tpipe bench --output-ids`).

Report (plain Python, no transformers):

    bench_tokenizers_hf.py report RAWDIR OUT.json --names NAME,NAME,...

  Reads RAWDIR/NAME.hf.json, RAWDIR/NAME.tpipe.json and the ids files, compares the ids
  line by line, prints the table and writes OUT.json.
"""
import argparse
import json
import os
import platform
import sys
import time


def make_lines(corpus_path, min_bytes):
    corpus = open(corpus_path, encoding="utf-8").read()
    k = max(1, min_bytes // len(corpus.encode()) + 1)
    text = (corpus + "\n") * k
    return text.splitlines(), len(text.encode()), k, len(corpus.encode())


def write_ids(path, rows):
    with open(path, "w") as f:
        for ids in rows:
            f.write(" ".join(map(str, ids)) + "\n")


def measure(a):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import tokenizers
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    lines, nbytes, k, corpus_bytes = make_lines(a.corpus, a.repeat_to_bytes)
    t0 = time.perf_counter()
    if a.name == "llama3":
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.dir, "tokenizer.json"))
        loaded = "PreTrainedTokenizerFast(tokenizer_file=tokenizer.json)"
    else:
        tok = AutoTokenizer.from_pretrained(a.dir)
        loaded = "AutoTokenizer.from_pretrained"
    load_s = time.perf_counter() - t0
    backend = getattr(tok, "_tokenizer", None)
    if backend is not None and not hasattr(backend, "encode_batch"):
        backend = None
    res = {
        "name": a.name, "dir": a.dir, "corpus": a.corpus, "corpus_bytes": corpus_bytes,
        "repeat": k, "bytes": nbytes, "lines": len(lines), "iters": a.iters,
        "tokenizer_class": type(tok).__name__, "loaded_with": loaded, "load_s": load_s,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    modes = [("backend", lambda: backend.encode_batch(lines), lambda out: [e.ids for e in out]),
             ("call", lambda: tok(lines)["input_ids"], lambda out: out)]
    for mode, fn, ids_of in modes:
        key = "backend_batch" if mode == "backend" else "transformers_call"
        if mode == "backend" and backend is None:
            res[key] = None
            res[key + "_note"] = f"{type(tok).__name__} has no Rust backend (_tokenizer)"
            continue
        try:
            fn()
            ts = []
            out = None
            for _ in range(a.iters):
                t = time.perf_counter()
                out = fn()
                ts.append(time.perf_counter() - t)
        except Exception as e:  # noqa: BLE001 (a failed mode is reported, not fatal)
            res[key] = None
            res[key + "_note"] = f"{type(e).__name__}: {e}"[:300]
            continue
        ts.sort()
        med = ts[len(ts) // 2] if len(ts) % 2 else (ts[len(ts) // 2 - 1] + ts[len(ts) // 2]) / 2
        rows = ids_of(out)
        ntok = sum(len(r) for r in rows)
        ids_file = f"{a.ids_prefix}.{mode}.ids"
        write_ids(ids_file, rows)
        res[key] = {"median_s": med, "times_s": ts, "mb_per_s": nbytes / med / 1e6,
                    "tokens_per_s": ntok / med, "tokens": ntok, "rows": len(rows),
                    "ids_sum": sum(sum(r) for r in rows), "ids_file": os.path.basename(ids_file)}
        print(f"  {a.name:18s} {mode:8s} {nbytes / med / 1e6:8.2f} MB/s {ntok / med / 1e6:6.2f} Mtok/s "
              f"({nbytes / 1e6:.2f} MB, {len(lines)} lines, {ntok} tokens)", flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


def first_difference(path_a, path_b):
    """None when the files have the same lines, else (1-based line, line a, line b)."""
    with open(path_a) as fa, open(path_b) as fb:
        n = 0
        while True:
            la, lb = fa.readline(), fb.readline()
            n += 1
            if la != lb:
                return n, la.rstrip("\n") if la else "<end of file>", lb.rstrip("\n") if lb else "<end of file>"
            if not la:
                return None


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"{os.path.basename(path)}: {e}"}


def report(a):
    raw = a.rawdir
    rows = []
    for name in a.names.split(","):
        hf = load(os.path.join(raw, f"{name}.hf.json"))
        tp = load(os.path.join(raw, f"{name}.tpipe.json"))
        tp_ids = os.path.join(raw, f"{name}.tpipe.ids")
        row = {"tokenizer": name, "hf": hf, "tpipe": tp, "notes": []}
        for side, r in (("hf", hf), ("tpipe", tp)):
            if "error" in r:
                row["notes"].append(f"{side}: {r['error']}")
        if "bytes" in hf and "bytes" in tp and (hf["bytes"], hf["lines"]) != (tp["bytes"], tp["lines"]):
            row["notes"].append(f"the inputs differ: transformers {hf['bytes']} bytes, {hf['lines']} lines; "
                                f"tpipe {tp['bytes']} bytes, {tp['lines']} lines")
        for key, mode in (("backend_batch", "backend"), ("transformers_call", "call")):
            m = hf.get(key)
            if hf.get(key + "_note"):
                row["notes"].append(f"{mode}: {hf[key + '_note']}")
            same = None
            if m and "error" not in tp and os.path.exists(tp_ids):
                diff = first_difference(os.path.join(raw, m["ids_file"]), tp_ids)
                same = diff is None
                if diff:
                    row["notes"].append(f"ids differ from the {mode} at line {diff[0]}: "
                                        f"transformers [{diff[1][:300]}] tpipe [{diff[2][:300]}]")
                    row[f"first_difference_{mode}"] = {"line": diff[0], "transformers": diff[1], "tpipe": diff[2]}
            row[f"identical_{mode}"] = same
        base = hf.get("backend_batch") or hf.get("transformers_call")
        row["baseline"] = "backend_batch" if hf.get("backend_batch") else "transformers_call" if base else None
        row["ratio"] = tp["mb_per_s"] / base["mb_per_s"] if base and "mb_per_s" in tp else None
        rows.append(row)

    VS = {"backend_batch": "batch", "transformers_call": "call"}

    def num(v, fmt="{:.2f}"):
        return fmt.format(v) if isinstance(v, (int, float)) else "-"

    def yn(v):
        return "-" if v is None else "yes" if v else "NO"

    head = (f"{'tokenizer':<18} {'MB':>5} {'HF MB/s':>8} {'trf MB/s':>8} {'tpipe MB/s':>10} "
            f"{'tpipe Mtok/s':>12} {'ratio':>7} {'vs':<8} {'identical':<9} {'= call':<6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        hf, tp = r["hf"], r["tpipe"]
        bb, tc = hf.get("backend_batch"), hf.get("transformers_call")
        lines.append(
            f"{r['tokenizer']:<18} {num(tp.get('bytes', hf.get('bytes', 0)) / 1e6):>5} "
            f"{num(bb and bb['mb_per_s']):>8} {num(tc and tc['mb_per_s']):>8} {num(tp.get('mb_per_s')):>10} "
            f"{num(tp['tokens_per_s'] / 1e6 if 'tokens_per_s' in tp else None):>12} "
            f"{num(r['ratio'], '{:.1f}x'):>7} {VS.get(r['baseline'], '-'):<8} "
            f"{yn(r['identical_backend'] if bb else r['identical_call']):<9} {yn(r['identical_call']):<6}")
    lines.append("")
    lines.append("HF MB/s: tokenizers' encode_batch (Rust) on the batch of lines; trf MB/s: the transformers")
    lines.append("call tok(lines); both median of 3 after 1 untimed call. tpipe: `tpipe bench --tokenizer`,")
    lines.append("one tp_tokenizer_encode call on the same batch, median of 3 after 1. All pinned to one CPU.")
    lines.append("ratio: tpipe MB/s over the 'vs' one (batch: encode_batch; call: the transformers call, when")
    lines.append("there is no Rust backend). identical: tpipe's ids equal that baseline's, line by line; '= call': equal to")
    lines.append("the transformers call's.")
    for r in rows:
        for n in r["notes"]:
            lines.append(f"note: {r['tokenizer']}: {n}")
    text = "\n".join(lines)
    print(text)
    first = next((r["hf"] for r in rows if "transformers" in r["hf"]), {})
    out = {"machine": {"cpu": cpu_name(), "cpus": a.cpus, "python": platform.python_version()},
           "transformers": first.get("transformers"), "tokenizers": first.get("tokenizers"),
           "tpipe_version": next((r["tpipe"].get("tpipe_version") for r in rows if "tpipe_version" in r["tpipe"]), None),
           "results": rows, "table": text}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--name", required=True)
    m.add_argument("--dir", required=True)
    m.add_argument("--corpus", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--ids-prefix", required=True)
    m.add_argument("--repeat-to-bytes", type=int, default=1 << 20)
    m.add_argument("--iters", type=int, default=3)
    r = sub.add_parser("report")
    r.add_argument("rawdir")
    r.add_argument("out")
    r.add_argument("--names", required=True)
    r.add_argument("--cpus", default="0")
    a = ap.parse_args()
    if a.cmd == "measure":
        measure(a)
        return 0
    return report(a)


if __name__ == "__main__":
    sys.exit(main())
