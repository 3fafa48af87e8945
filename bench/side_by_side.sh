#!/usr/bin/env bash
# side_by_side.sh: tpipe against transformers (PyTorch fp32) and onnxruntime on
# full-size encoders, every contender pinned to the same cores with the same number
# of compute threads. See bench/README.md.
#
#   bash bench/side_by_side.sh OUTDIR        (from anywhere; paths are the repo's)
#
# Needs: the built tree in build/ (build/bin/tpipe, build/lib), its shared libraries
# unpacked under .device/debs/root (or installed), python3 with torch, transformers
# and (optional) onnxruntime + onnx; no network. Writes OUTDIR/results.json,
# OUTDIR/table.txt and the raw measurements in OUTDIR/raw/. About 6 minutes.
#
# Environment (all optional): ROUNDS (1: how many times to measure everything, see
# bench/rounds.py), ORDER (trf-first or tpipe-first: which side each model measures
# first), CPUS (0,1), THREADS (2), SEQ (128), BATCHES ("1 16"),
# BACKENDS ("ref openblas onednn"), DTYPES ("bf16 int8": extra onednn runs), WORK (/tmp/tpipe-bench: models and ONNX files,
# kept between runs), PYTHON (python3), BUILD (build: the tree with bin/tpipe), BUDGET_S (4: seconds
# of timed runs per transformers/onnxruntime measurement), DEADLINE_S (330: the slow
# reference-backend runs at batch > 1 are skipped once this much time has passed).
set -uo pipefail

if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "usage: bash bench/side_by_side.sh OUTDIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$1" || exit 1
OUT=$(cd "$1" && pwd)

# ROUNDS > 1: the whole run ROUNDS times into OUTDIR/r1.., then bench/rounds.py
# shellcheck source=bench/rounds.sh
source "$ROOT/bench/rounds.sh"
run_rounds encoders "$0" "$OUT" && exit
RAW=$OUT/raw
mkdir -p "$RAW" && rm -f "$RAW"/*.json "$RAW"/*.err "$RAW"/commands.txt

export PYTHONUNBUFFERED=1
DEBS=$ROOT/.device/debs/root/usr/lib/x86_64-linux-gnu
BUILD=${BUILD:-$ROOT/build}
export LD_LIBRARY_PATH="$DEBS:$DEBS/openblas-pthread:$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TPIPE=$BUILD/bin/tpipe
PY=${PYTHON:-python3}
CPUS=${CPUS:-0,1}
THREADS=${THREADS:-2}
SEQ=${SEQ:-128}
BATCHES=${BATCHES:-1 16}
BACKENDS=${BACKENDS:-ref openblas onednn}
WORK=${WORK:-/tmp/tpipe-bench}
BUDGET_S=${BUDGET_S:-4}
DEADLINE_S=${DEADLINE_S:-330}
MODELS="distilbert-sst2 bert-base-ner"
DTYPES=${DTYPES:-bf16 int8}
FIXTURE=$ROOT/tests/data/fixtures/models/distilbert-sst2

START=$SECONDS
step() { printf '\n[%3ds] %s\n' $((SECONDS - START)) "$*"; }
note() { echo "  note: $*"; }
# json_note KEY TEXT FILE: writes {"KEY": TEXT} to FILE (a run that gave no result)
json_note() {
    "$PY" -c 'import json,sys; json.dump({sys.argv[1]: sys.argv[2]}, open(sys.argv[3], "w"))' "$@"
}

PIN=(taskset -c "$CPUS")
if ! command -v taskset >/dev/null 2>&1; then
    note "taskset not found: runs are NOT pinned to CPUs $CPUS"
    PIN=()
fi

# ---------------------------------------------------------------- pre-flight
step "machine"
grep -m1 '^model name' /proc/cpuinfo | sed 's/^/  /'
echo "  $(nproc) CPUs; pinned to CPUs $CPUS, $THREADS compute threads everywhere"
for c in ${CPUS//,/ }; do
    f=/sys/devices/system/cpu/cpu$c/topology/thread_siblings_list
    [ -r "$f" ] && echo "  cpu$c thread siblings: $(cat "$f")"
done

step "tpipe"
if ! "$TPIPE" --version; then
    echo "side_by_side: $TPIPE does not run (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    ldd "$TPIPE" 2>&1 | grep -i "not found" >&2
    exit 1
fi
"$TPIPE" backends | sed 's/^/  /'
USABLE=""
for be in $BACKENDS; do
    # a smoke run on the tiny fixture: proves the backend loads and computes
    if err=$("$TPIPE" bench --model "$FIXTURE" --backend "$be" --threads 1 --iters 1 \
        --warmup 0 --json 2>&1 >/dev/null); then
        USABLE="$USABLE $be"
    else
        note "backend $be is not usable, skipped: $err"
        for m in $MODELS; do
            for b in $BATCHES; do
                json_note error "backend $be unusable: $err" "$RAW/tpipe-$m-b$b-$be.json"
            done
        done
    fi
done
echo "  usable backends:$USABLE"

if ! "$PY" -c 'import torch, transformers; print("  torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null; then
    for m in $MODELS; do
        if [ ! -f "$WORK/models/$m/model.safetensors" ]; then
            echo "side_by_side: $PY cannot import torch and transformers, and $WORK/models/$m" \
                "was not made before: stopping" >&2
            exit 1
        fi
    done
    note "$PY cannot import torch and transformers: tpipe only, on the models in $WORK/models"
fi

# ---------------------------------------------------------------- models
step "models (bench/make_models.py $WORK/models)"
"$PY" "$ROOT/bench/make_models.py" "$WORK/models" || { echo "side_by_side: make_models.py failed" >&2; exit 1; }

# tpipe_run MODEL BATCH BACKEND ITERS WARMUP [DTYPE]: one `tpipe bench`, JSON to RAW
# (a DTYPE other than fp32 is reported as backend "BACKEND_DTYPE").
tpipe_run() {
    local m=$1 b=$2 be=$3 it=$4 wu=$5 dt=${6:-fp32}
    local tag=$be
    [ "$dt" = fp32 ] || tag=${be}_$dt
    local json=$RAW/tpipe-$m-b$b-$tag.json
    local cmd=("${PIN[@]}" "$TPIPE" bench --model "$WORK/models/$m" --backend "$be" --dtype "$dt" \
        --threads "$THREADS" --batch "$b" --seq "$SEQ" --iters "$it" --warmup "$wu" --json)
    echo "${cmd[*]}" >>"$RAW/commands.txt"
    local t0=$SECONDS
    timeout 300 "${cmd[@]}" >"$json" 2>"$RAW/tpipe-$m-b$b-$tag.err"
    local rc=$?
    if [ $rc -eq 0 ]; then
        [ -s "$RAW/tpipe-$m-b$b-$tag.err" ] || rm -f "$RAW/tpipe-$m-b$b-$tag.err"
        "$PY" - "$json" "$((SECONDS - t0))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r.get("pipeline")
print(f"  tpipe {r['backend']:<9} {r['model'].split('/')[-1]} b{r['batch']}: forward median "
      f"{r['forward']['median_ms']:.2f} ms, pipeline "
      + (f"{p['median_ms']:.2f} ms" if p else "not measured (" + r.get("pipeline_error", "?") + ")")
      + f" ({r['iters']} iters, {sys.argv[2]} s)")
PY
    else
        local why
        why=$(tail -n1 "$RAW/tpipe-$m-b$b-$tag.err")
        [ $rc -ne 124 ] || why="timed out after 300 s"
        [ -n "$why" ] || why="exit status $rc"
        note "tpipe $tag $m b$b failed: $why"
        json_note error "$why" "$json"
    fi
}

# iterations: the reference backend is single-threaded C and slow at batch 16
iters_for() { # BACKEND BATCH -> "ITERS WARMUP"
    if [ "$1" = ref ]; then
        if [ "$2" -gt 1 ]; then echo "2 0"; else echo "3 1"; fi
    elif [ "$2" -gt 1 ]; then echo "4 1"
    else echo "10 2"
    fi
}

trf_block() { # MODEL
    step "$1: transformers / onnxruntime (CPUs $CPUS, $THREADS threads)"
    timeout 400 "${PIN[@]}" "$PY" "$ROOT/bench/bench_transformers.py" --model "$WORK/models/$1" \
        --out "$RAW/trf-$1.json" --batches "${BATCHES// /,}" --seq "$SEQ" \
        --threads "$THREADS" --budget-s "$BUDGET_S" --onnx-dir "$WORK/onnx" ||
        note "bench_transformers.py failed for $1 (exit $?)"
}

LATER=()
tpipe_block() { # MODEL
    local m=$1
    step "$m: tpipe (CPUs $CPUS, $THREADS threads)"
    for b in $BATCHES; do
        for be in $USABLE; do
            if [ "$be" = ref ] && [ "$b" -gt 1 ]; then
                LATER+=("$m $b $be")
                continue
            fi
            # shellcheck disable=SC2046 # "ITERS WARMUP" splits into two arguments
            tpipe_run "$m" "$b" "$be" $(iters_for "$be" "$b")
            if [ "$be" = onednn ]; then
                for dt in $DTYPES; do
                    # shellcheck disable=SC2046
                    tpipe_run "$m" "$b" "$be" $(iters_for "$be" "$b") "$dt"
                done
            fi
        done
    done
}

for m in $MODELS; do
    both_sides "$m" trf_block tpipe_block
done

step "tpipe reference backend, batch > 1 (slow; skipped after ${DEADLINE_S} s)"
for job in "${LATER[@]}"; do
    # shellcheck disable=SC2086 # "MODEL BATCH BACKEND" splits into three
    set -- $job
    if [ $((SECONDS - START)) -ge "$DEADLINE_S" ]; then
        note "skipped tpipe $3 $1 b$2: past the ${DEADLINE_S} s deadline"
        json_note skipped "past the ${DEADLINE_S} s deadline of side_by_side.sh" \
            "$RAW/tpipe-$1-b$2-$3.json"
        continue
    fi
    # shellcheck disable=SC2046
    tpipe_run "$1" "$2" "$3" $(iters_for "$3" "$2")
done

# ---------------------------------------------------------------- report
step "report"
REPORT_BACKENDS=$BACKENDS
case " $BACKENDS " in *" onednn "*) for dt in $DTYPES; do REPORT_BACKENDS="$REPORT_BACKENDS onednn_$dt"; done ;; esac
"$PY" "$ROOT/bench/report.py" "$RAW" "$OUT/results.json" --cpus "$CPUS" --backends "$REPORT_BACKENDS" |
    tee "$OUT/table.txt"
echo "side_by_side: done in $((SECONDS - START)) s; results in $OUT"
