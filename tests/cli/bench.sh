#!/usr/bin/env bash
# End-to-end: `tpipe bench` prints one JSON object with the documented keys (and a
# table without --json); bad options are usage errors.
source "$(dirname "$0")/lib/common.sh"

SST2="$FIX/distilbert-sst2"

check_bench_json() { # NAME BATCH SEQ -- ARGS...
    local name=$1 batch=$2 seq=$3
    shift 4
    tp "$@"
    if [ "$RC" -ne 0 ] || [ -s "$TMP/err" ]; then
        fail "$name: exit $RC"
        show_run
        return
    fi
    local why
    if why=$(python3 - "$TMP/out" "$batch" "$seq" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"not JSON: {e}")
batch, seq = int(sys.argv[2]), int(sys.argv[3])
keys = ["model", "model_type", "architecture", "task", "backend", "threads", "batch", "seq",
        "iters", "warmup", "load_ms", "weight_bytes", "peak_rss_bytes", "forward", "pipeline"]
missing = [k for k in keys if k not in r]
if missing:
    sys.exit(f"missing keys {missing}")
stat_keys = ["median_ms", "p90_ms", "min_ms", "mean_ms", "sequences_per_s", "tokens_per_s"]
for part in ("forward", "pipeline"):
    if not isinstance(r[part], dict) or any(not isinstance(r[part].get(k), (int, float)) or r[part][k] <= 0 for k in stat_keys):
        sys.exit(f"{part}: {r[part]!r}: want positive {stat_keys}")
    if r[part]["p90_ms"] < r[part]["median_ms"] or r[part]["min_ms"] > r[part]["median_ms"]:
        sys.exit(f"{part}: min <= median <= p90 does not hold: {r[part]}")
if (r["batch"], r["seq"], r["iters"], r["task"]) != (batch, seq, 2, "text-classification"):
    sys.exit(f"batch/seq/iters/task: {r['batch']}, {r['seq']}, {r['iters']}, {r['task']}")
if r["model_type"] != "distilbert" or r["weight_bytes"] <= 0 or r["peak_rss_bytes"] <= 0 or r["load_ms"] < 0:
    sys.exit(f"model_type/weight_bytes/peak_rss_bytes/load_ms: {r}")
tps = r["forward"]["tokens_per_s"] / r["forward"]["sequences_per_s"]
if abs(tps - seq) > 1e-6 * seq:
    sys.exit(f"tokens_per_s / sequences_per_s = {tps}, expected {seq}")
PY
    ); then
        pass "$name"
    else
        fail "$name: $why"
        show_run
    fi
}

# --threads 1 where the default backend (onednn) computes: bench runs the forward on
# the main thread, and a libgomp team thread of the main thread still alive at exit
# crashes LeakSanitizer's tracer in sanitizer builds ("Tracer caught signal 11").
check_bench_json "bench --json, defaults (batch 1, seq 128)" 1 128 -- \
    bench --model "$SST2" --threads 1 --iters 2 --json
check_bench_json "bench --json, ref backend, batch 3 x 16 tokens" 3 16 -- \
    bench --model "$SST2" --backend ref --threads 1 --batch 3 --seq 16 --iters 2 --warmup 0 --json
check_bench_json "bench --json=... style options, explicit task alias" 2 32 -- \
    bench --model="$SST2" --task=sentiment-analysis --batch=2 --seq=32 --iters=2 --threads=1 --json

# The table: one forward row and one pipeline row.
tp bench --model "$SST2" --threads 1 --iters 2 --seq 16
if [ "$RC" -eq 0 ] && grep -q '^forward ' "$TMP/out" && grep -q '^pipeline (text-classification) ' "$TMP/out"; then
    pass "bench table"
else
    fail "bench table"
    show_run
fi

expect_error "bench without --model" 2 "bench needs --model" -- bench --iters 2
expect_error "bench --batch 0" 2 "--batch wants a number >= 1" -- bench --model "$SST2" --batch 0
expect_error "bench --seq abc" 2 "--seq wants a number >= 1" -- bench --model "$SST2" --seq abc
expect_error "bench takes no TEXT" 2 "bench takes no arguments" -- bench --model "$SST2" hello
expect_error "bench --seq too short for the special tokens" 2 "leaves no room" -- \
    bench --model "$SST2" --seq 2
expect_error "bench --seq past the model's positions" 1 "." -- \
    bench --model "$SST2" --seq 200 --iters 1
expect_error "bench with an unknown task" 1 "task" -- \
    bench --model "$SST2" --task no-such-task --threads 1 --iters 1 --seq 8 --json
# run's --json still takes a FILE
expect_error "run --json still wants a value" 2 "option --json needs a value" -- \
    run text-classification --model "$SST2" --json
finish
