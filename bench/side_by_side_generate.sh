#!/usr/bin/env bash
# side_by_side_generate.sh: tpipe's generation against transformers' generate()
# (PyTorch fp32) on GPT-2 small and a Marian model of opus-mt-fr-en's size, every
# contender pinned to the same cores with the same number of compute threads. See
# bench/README.md, section "side_by_side_generate.sh".
#
#   bash bench/side_by_side_generate.sh OUTDIR   (from anywhere; paths are the repo's)
#
# Workloads (batch 1, greedy unless said; every run makes exactly N new tokens:
# min_new_tokens = max_new_tokens on both sides):
#   gpt2            prompt 16 tokens, 128 new tokens
#   opus-mt-fr-en   source 32 tokens, 48 new tokens, num_beams 1 and 4
#   flatness        tpipe gpt2, ms per new token at 256 over that at 16 new tokens
#   distilbart-cnn-12-6  source 256 tokens, 48 new tokens, num_beams 1 and 4
#   smollm2-360m    prompt 16 tokens, 64 new tokens
# Needs what side_by_side.sh needs (build/ or BUILD=..., .device/debs/root libs,
# python3 with torch and transformers; no network). Writes OUTDIR/results.json,
# OUTDIR/table.txt and the raw measurements in OUTDIR/raw/. About 3 to 6 minutes.
#
# Environment (all optional): ROUNDS (1: how many times to measure everything, see
# bench/rounds.py), ORDER (trf-first or tpipe-first: which side each model measures
# first), CPUS (0,1), THREADS (2), BACKENDS ("onednn openblas"),
# REF (1: also the reference backend on gpt2 greedy, one run, if time is left), WORK
# (/tmp/tpipe-bench: models, kept between runs), PYTHON (python3), BUILD (build),
# ITERS (3: timed runs per measurement, after one warm-up), DEADLINE_S (300: the
# reference backend's run is skipped once this much time has passed).
set -uo pipefail

if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "usage: bash bench/side_by_side_generate.sh OUTDIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$1" || exit 1
OUT=$(cd "$1" && pwd)

# ROUNDS > 1: the whole run ROUNDS times into OUTDIR/r1.., then bench/rounds.py
# shellcheck source=bench/rounds.sh
source "$ROOT/bench/rounds.sh"
run_rounds generation "$0" "$OUT" && exit
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
BACKENDS=${BACKENDS:-onednn openblas}
REF=${REF:-1}
WORK=${WORK:-/tmp/tpipe-bench}
ITERS=${ITERS:-3}
DEADLINE_S=${DEADLINE_S:-300}
FIXTURE=$ROOT/tests/data/fixtures/models/gpt2

START=$SECONDS
step() { printf '\n[%3ds] %s\n' $((SECONDS - START)) "$*"; }
note() { echo "  note: $*"; }
json_note() { # KEY TEXT FILE: writes {"KEY": TEXT} to FILE (a run that gave no result)
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

step "tpipe"
if ! "$TPIPE" --version; then
    echo "side_by_side_generate: $TPIPE does not run (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    ldd "$TPIPE" 2>&1 | grep -i "not found" >&2
    exit 1
fi
USABLE=""
for be in $BACKENDS; do
    # a smoke run on the tiny fixture: the backend loads and generates
    if err=$("$TPIPE" bench --generate --model "$FIXTURE" --backend "$be" --threads 1 \
        --new-tokens 2 --iters 1 --warmup 0 --json 2>&1 >/dev/null); then
        USABLE="$USABLE $be"
    else
        note "backend $be is not usable, skipped: $err"
    fi
done
echo "  usable backends:$USABLE"
[ -n "$USABLE" ] || { echo "side_by_side_generate: no usable backend" >&2; exit 1; }
MODELS=${MODELS:-gpt2 opus-mt-fr-en distilbart-cnn-12-6 smollm2-360m}
HAVE_TORCH=1
if ! "$PY" -c 'import torch, transformers; print("  torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null; then
    HAVE_TORCH=0
    for m in $MODELS; do
        if [ ! -f "$WORK/models/$m/model.safetensors" ]; then
            echo "side_by_side_generate: $PY cannot import torch and transformers, and" \
                "$WORK/models/$m was not made before: stopping" >&2
            exit 1
        fi
    done
    note "$PY cannot import torch and transformers: tpipe only, on the models in $WORK/models"
fi

# ---------------------------------------------------------------- models
step "models (bench/make_models.py $WORK/models $MODELS)"
if [ $HAVE_TORCH -eq 1 ]; then
    # shellcheck disable=SC2086
    "$PY" "$ROOT/bench/make_models.py" "$WORK/models" $MODELS ||
        { echo "side_by_side_generate: make_models.py failed" >&2; exit 1; }
fi

# ---------------------------------------------------------------- transformers
# hf_run MODEL PROMPT NEW BEAMS
hf_run() {
    local m=$1 json=$RAW/trf-$1.json
    if [ $HAVE_TORCH -eq 0 ]; then
        json_note error "torch/transformers not importable" "$json"
        return
    fi
    timeout 300 "${PIN[@]}" "$PY" "$ROOT/bench/bench_generate_hf.py" --model "$WORK/models/$m" \
        --out "$json" --prompt-tokens "$2" --new-tokens "$3" --beams "$4" --threads "$THREADS" \
        --iters "$ITERS" --warmup 1 2>"$RAW/trf-$m.err"
    local rc=$?
    if [ $rc -ne 0 ]; then
        local why
        why=$(grep -v '^\s*$' "$RAW/trf-$m.err" | tail -n1)
        [ $rc -ne 124 ] || why="timed out after 300 s"
        note "bench_generate_hf.py $m failed: ${why:-exit $rc}"
        json_note error "${why:-exit $rc}" "$json"
    else
        rm -f "$RAW/trf-$m.err"
    fi
}

# ---------------------------------------------------------------- tpipe
# tp_run TAG MODEL BACKEND LIMIT_S ARGS...: one `tpipe bench --generate`, JSON to RAW.
tp_run() {
    local tag=$1 m=$2 be=$3 limit=$4
    shift 4
    # "onednn_bf16": backend onednn, --dtype bf16
    local backend=${be%%_*} dtype=fp32
    [[ $be != *_* ]] || dtype=${be#*_}
    local json=$RAW/tpipe-$tag-$be.json
    local cmd=("${PIN[@]}" "$TPIPE" bench --generate --model "$WORK/models/$m" --backend "$backend"
        --dtype "$dtype"
        --threads "$THREADS" "$@" --json)
    echo "${cmd[*]}" >>"$RAW/commands.txt"
    local t0=$SECONDS
    timeout "$limit" "${cmd[@]}" >"$json" 2>"$RAW/tpipe-$tag-$be.err"
    local rc=$?
    if [ $rc -eq 0 ]; then
        rm -f "$RAW/tpipe-$tag-$be.err"
        "$PY" - "$json" "$tag" "$((SECONDS - t0))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
runs = ", ".join(f"{x['new_tokens']} new: {x['tokens_per_s']:.1f} tokens/s" for x in r["runs"])
print(f"  tpipe {r['backend']:<9} {sys.argv[2]}: {runs} ({r['iters']} iters, {sys.argv[3]} s)")
PY
    else
        local why
        why=$(tail -n1 "$RAW/tpipe-$tag-$be.err")
        [ $rc -ne 124 ] || why="timed out after $limit s"
        note "tpipe $be $tag failed: ${why:-exit $rc}"
        json_note error "${why:-exit $rc}" "$json"
    fi
}
DTYPES=${DTYPES:-bf16 int8}
DTYPE_BACKENDS=""
case " $USABLE " in *" onednn "*) for dt in $DTYPES; do DTYPE_BACKENDS="$DTYPE_BACKENDS onednn_$dt"; done ;; esac
# workload MODEL: "PROMPT NEW BEAMS LIMITS" of MODEL's runs, written once for both
# sides (BEAMS and each tpipe run's time limit in s: comma lists, one per beam count)
workload() {
    case $1 in
    gpt2) echo "16 128 1 200" ;;
    opus-mt-fr-en) echo "32 48 1,4 150,200" ;;
    distilbart-cnn-12-6) echo "256 48 1,4 200,300" ;;
    smollm2-360m) echo "16 64 1 200" ;;
    esac
}
# tp_model MODEL: every tpipe run of MODEL's workloads, on every backend
tp_model() {
    local be prompt new beams limits b i
    read -r prompt new beams limits <<<"$(workload "$1")"
    step "$1: tpipe bench --generate (CPUs $CPUS, $THREADS threads)"
    for be in $USABLE $DTYPE_BACKENDS; do
        i=1
        for b in ${beams//,/ }; do
            tp_run "$1-b$b" "$1" "$be" "$(cut -d, -f$i <<<"$limits")" --prompt-tokens "$prompt" \
                --new-tokens "$new" --beams "$b" --iters "$ITERS" --warmup 1
            i=$((i + 1))
        done
    done
}
# hf_model MODEL: transformers' generate() on MODEL's workloads
hf_model() {
    local prompt new beams
    read -r prompt new beams _ <<<"$(workload "$1")"
    step "$1: transformers generate() (CPUs $CPUS, $THREADS threads)"
    hf_run "$1" "$prompt" "$new" "$beams"
}

# model by model, both sides back to back (ORDER says which goes first), so that the
# two sides of a ratio are measured minutes apart at most
for m in $MODELS; do
    both_sides "$m" hf_model tp_model
done

if [[ " $MODELS " == *" gpt2 "* ]]; then
    step "flatness: tpipe gpt2, 16 vs 256 new tokens"
    for be in $USABLE; do
        tp_run gpt2-flat gpt2 "$be" 200 --prompt-tokens 16 --new-tokens 16,256 --iters 2 --warmup 1
    done
fi

if [ "$REF" = 1 ]; then
    step "tpipe reference backend, gpt2 greedy (one run; skipped after ${DEADLINE_S} s)"
    if [ $((SECONDS - START)) -ge "$DEADLINE_S" ]; then
        note "skipped: past the ${DEADLINE_S} s deadline"
        json_note skipped "past the ${DEADLINE_S} s deadline" "$RAW/tpipe-gpt2-b1-ref.json"
    else
        left=$((DEADLINE_S + 60 - (SECONDS - START)))
        tp_run gpt2-b1 gpt2 ref "$left" --prompt-tokens 16 --new-tokens 128 --beams 1 \
            --iters 1 --warmup 0
    fi
fi

# ---------------------------------------------------------------- report
step "report"
# the measured workloads, one "MODEL BEAMS PROMPT NEW" line each, from workload()
specs=$(for m in $MODELS; do
    read -r prompt new beams _ <<<"$(workload "$m")"
    for b in ${beams//,/ }; do echo "$m $b $prompt $new"; done
done)
"$PY" - "$RAW" "$OUT/results.json" "$CPUS" "$THREADS" "$BACKENDS $DTYPE_BACKENDS ref" "$specs" <<'PY' | tee "$OUT/table.txt"
import glob, json, os, platform, sys
raw, out, cpus, threads, backends = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split()
backends = [b for i, b in enumerate(backends) if b not in backends[:i] and (b != "ref" or os.path.exists(f"{raw}/tpipe-gpt2-b1-ref.json"))]

def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError) as e:
        return {"error": f"{os.path.basename(path)}: {e}"}

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
workloads = [(m, f"{m}-b{b}", b, int(p), int(n)) for m, b, p, n in (l.split() for l in sys.argv[6].splitlines())]
trf = {m: load(f"{raw}/trf-{m}.json") for m in dict.fromkeys(w[0] for w in workloads)}
rows, doc = [], {"cpu": cpu, "cpus": cpus, "threads": threads, "workloads": []}
for m, tag, beams, prompt, new in workloads:
    t = trf[m].get("results", {}).get(beams)
    w = {"model": m, "num_beams": int(beams), "prompt_tokens": prompt, "new_tokens": new,
         "transformers": t or {"error": trf[m].get("error", "missing")}, "tpipe": {}}
    for be in backends:
        if be != "ref" or os.path.exists(f"{raw}/tpipe-{tag}-{be}.json"):
            w["tpipe"][be] = load(f"{raw}/tpipe-{tag}-{be}.json")
    doc["workloads"].append(w)
for k in ("torch", "transformers", "python"):
    doc[k] = next((trf[m][k] for m in trf if k in trf[m]), None)
doc["flatness"] = {os.path.basename(f)[len("tpipe-gpt2-flat-"):-len(".json")]: load(f)
                   for f in sorted(glob.glob(f"{raw}/tpipe-gpt2-flat-*.json"))}

def tps(r):
    return r.get("tokens_per_s") if isinstance(r, dict) else None

hdr = f"{'workload':<34} {'trf tok/s':>10}" + "".join(f" {b + ' tok/s':>15}" for b in backends) + f" {'tpipe/trf':>10}"
print(f"generation, batch 1, {cpu}, CPUs {cpus}, {threads} threads; tokens/s = new tokens / median s")
print(hdr)
for w in doc["workloads"]:
    name = f"{w['model']} p{w['prompt_tokens']} +{w['new_tokens']} " + ("greedy" if w["num_beams"] == 1 else f"beam {w['num_beams']}")
    t = tps(w["transformers"])
    cells = [tps(w["tpipe"].get(b)) for b in backends]
    best = max((c for b, c in zip(backends, cells) if c and "_" not in b), default=None)
    w["best_tpipe_over_transformers"] = best / t if best and t else None
    fmt = lambda v: f"{v:.2f}" if v else "-"
    print(f"{name:<34} {fmt(t):>10}" + "".join(f" {fmt(c):>15}" for c in cells) +
          f" {fmt(w['best_tpipe_over_transformers']):>10}")
notes = []
for w in doc["workloads"]:
    for who, r in [("transformers", w["transformers"])] + [(f"tpipe {b}", r) for b, r in w["tpipe"].items()]:
        if "error" in r or "skipped" in r:
            notes.append(f"{w['model']} beams {w['num_beams']}, {who}: {r.get('error') or r.get('skipped')}")
if doc["flatness"]:
    print("\nflatness: tpipe gpt2, prompt 16, ms per new token at 256 new tokens over that at 16 "
          "(near 1: the KV cache keeps the per-token cost flat)")
for be, flat in doc["flatness"].items():
    if "runs" in flat:
        a, b = flat["runs"][0], flat["runs"][-1]
        print(f"  {be:<9} {a['ms_per_token']:.2f} ms at {a['new_tokens']}, {b['ms_per_token']:.2f} ms at "
              f"{b['new_tokens']}: ratio {flat['flatness']:.2f}")
    else:
        notes.append(f"flatness, {be}: {flat.get('error', 'missing')}")
for n in notes:
    print(f"note: {n}")
print("\ntpipe/trf: the best tpipe backend's tokens/s over transformers' (above 1: tpipe is faster)")
json.dump(doc, open(out, "w"), indent=1)
PY
echo "side_by_side_generate: done in $((SECONDS - START)) s; results in $OUT"
