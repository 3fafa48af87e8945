#!/bin/bash
# bench/rounds.py: ratios taken within each round, median and range over the rounds,
# on hand-made results.json files of both kinds (a round missing is named); then
# side_by_side.sh with ROUNDS=2 on the tiny fixtures (tpipe only: this machine need
# not have torch) leaves r1, r2 and the combined rounds.txt.
# Usage: bench_rounds.sh BUILD_DIR DATA_DIR SRC
source "$(dirname "$0")/lib/common.sh"
rounds_py() { python3 "$SRC/bench/rounds.py" "$@"; }
check() { # DESCRIPTION COMMAND...: one ok/FAIL line
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
has() { grep -Eq "$1" <<<"$out"; } # has REGEX: in the last output
fails() { ! "$@" >/dev/null 2>&1; }

# three encoder rounds: transformers 100/200/150 ms, tpipe fp32 50/100/100 ms
# (ratios 2, 2, 1.5), tpipe bf16 25/50/75 against torch bf16 50/50/50 (2, 1, 0.67)
for i in 1 2 3; do
    mkdir -p "$TMP/enc/r$i"
    python3 - "$TMP/enc/r$i/results.json" "$i" <<'PY'
import json, sys
i = int(sys.argv[2]) - 1
trf, fp32, bf16, torch_bf16 = [100, 200, 150][i], [50, 100, 100][i], [25, 50, 75][i], 50
json.dump({"workloads": [{"model": "m", "batch": 1,
                          "transformers": {"median_ms": trf},
                          "onnxruntime": {"skipped": "not run"},
                          "transformers_bf16": {"median_ms": torch_bf16},
                          "tpipe": {"onednn": {"forward": {"median_ms": fp32}},
                                    "onednn_bf16": {"forward": {"median_ms": bf16}}}}]},
          open(sys.argv[1], "w"))
PY
done
out=$(rounds_py encoders "$TMP/enc.json" "$TMP/enc/r1" "$TMP/enc/r2" "$TMP/enc/r3" "$TMP/enc/r4")
echo "$out"
check "encoders: fp32 ratio is the median of the rounds' own ratios, with the range" \
    has 'tpipe onednn / transformers +2\.00x \[1\.50-2\.00\]'
check "encoders: bf16 against torch's bf16" has 'tpipe onednn_bf16 / torch bf16 +1\.00x \[0\.67-2\.00\]'
check "encoders: a value is the median over the rounds" has 'transformers 150\.00'
check "a missing round is named" has 'rounds without results: .*r4'
check "encoders: per-round ratios in the JSON" python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["workloads"][0]["ratios"]["tpipe onednn / transformers"]
sys.exit(0 if r["per_round"] == [2.0, 2.0, 1.5] else 1)' "$TMP/enc.json"

# generation: transformers 10/20/30 tokens/s, tpipe 20/30/90 (ratios 2, 1.5, 3)
for i in 1 2 3; do
    mkdir -p "$TMP/gen/r$i"
    python3 - "$TMP/gen/r$i/results.json" "$i" <<'PY'
import json, sys
i = int(sys.argv[2]) - 1
json.dump({"workloads": [{"model": "g", "num_beams": 4,
                          "transformers": {"tokens_per_s": [10, 20, 30][i]},
                          "tpipe": {"onednn": {"tokens_per_s": [20, 30, 90][i]}}}]},
          open(sys.argv[1], "w"))
PY
done
out=$(rounds_py generation "$TMP/gen.json" "$TMP/gen/r1" "$TMP/gen/r2" "$TMP/gen/r3")
echo "$out"
check "generation: medians over the rounds" has '^g beam 4: transformers 20\.00; tpipe onednn 30\.00'
check "generation: tokens/s ratios within rounds" has 'tpipe onednn / transformers +2\.00x \[1\.50-3\.00\]'

check "no results.json anywhere: non-zero exit" fails rounds_py encoders "$TMP/none.json" "$TMP/nothing"

# the script's own rounds, tpipe only, on the fixtures under the models' bench names
# (existing models are kept: make_models.py skips them; torch is hidden so that the
# transformers side is skipped the same way on every machine)
mkdir -p "$TMP/work/models" "$TMP/notorch"
ln -s "$FIX/distilbert-sst2" "$TMP/work/models/distilbert-sst2"
ln -s "$FIX/bert-ner" "$TMP/work/models/bert-base-ner"
echo 'raise ImportError("hidden by tests/cli/bench_rounds.sh")' >"$TMP/notorch/torch.py"
PYTHONPATH="$TMP/notorch" ROUNDS=2 BATCHES=1 BACKENDS=ref SEQ=16 WORK="$TMP/work" BUILD="$BUILD" \
    bash "$SRC/bench/side_by_side.sh" "$TMP/sbs" >"$TMP/sbs.log" 2>&1
if [ -f "$TMP/sbs/r1/results.json" ] && [ -f "$TMP/sbs/r2/results.json" ] &&
    grep -q '^2 rounds (r1, r2)' "$TMP/sbs/rounds.txt" 2>/dev/null &&
    grep -q 'distilbert-sst2 b1: tpipe ref' "$TMP/sbs/rounds.txt"; then
    pass "side_by_side.sh ROUNDS=2: two rounds and their combination"
else
    fail "side_by_side.sh ROUNDS=2"
    tail -20 "$TMP/sbs.log"
fi
# round 1 measures transformers first, round 2 tpipe first
order=$(grep -o 'distilbert-sst2: \(transformers\|tpipe\)' "$TMP/sbs.log" | tr '\n' ' ')
check "rounds alternate which side goes first ($order)" [ "$order" = \
    "distilbert-sst2: transformers distilbert-sst2: tpipe distilbert-sst2: tpipe distilbert-sst2: transformers " ]

[ "$FAILURES" -eq 0 ]
