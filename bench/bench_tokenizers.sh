#!/usr/bin/env bash
# bench_tokenizers.sh: tokenizer encode throughput, tpipe against Hugging Face's fast
# tokenizers (the Rust library's encode_batch) and the transformers call, both pinned
# to the same single CPU, on a batch of >= 1 MiB of text; checks that the ids are
# identical. See bench/README.md.
#
#   bash bench/bench_tokenizers.sh OUTDIR        (from anywhere; paths are the repo's)
#
# Needs: the built tree in build/ (build/bin/tpipe, build/lib), its shared libraries
# unpacked under .device/debs/root (or installed), python3 with transformers (and the
# tokenizers package it brings); no network. Writes OUTDIR/tokenizers.json,
# OUTDIR/table.txt and the raw measurements and ids in OUTDIR/raw/. About 1 to 2 minutes;
# bounded to about 4.
#
# Environment (all optional): CPU (0: the one CPU every contender is pinned to),
# BUILD (build), PYTHON (python3), REPEAT_TO_BYTES (1048576), ITERS (3),
# DEADLINE_S (210: no new transformers measurement starts after this).
set -uo pipefail

if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
    echo "usage: bash bench/bench_tokenizers.sh OUTDIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$1" || exit 1
OUT=$(cd "$1" && pwd)
RAW=$OUT/raw
mkdir -p "$RAW" && rm -f "$RAW"/*.json "$RAW"/*.ids "$RAW"/*.err "$RAW"/commands.txt

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DEBS=$ROOT/.device/debs/root/usr/lib/x86_64-linux-gnu
BUILD=${BUILD:-$ROOT/build}
export LD_LIBRARY_PATH="$DEBS:$DEBS/openblas-pthread:$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
TPIPE=$BUILD/bin/tpipe
PY=${PYTHON:-python3}
CPU=${CPU:-0}
REPEAT_TO_BYTES=${REPEAT_TO_BYTES:-1048576}
ITERS=${ITERS:-3}
DEADLINE_S=${DEADLINE_S:-210}
HF=$ROOT/bench/bench_tokenizers_hf.py
TOKS=$ROOT/tests/data/fixtures/tokenizers
# NAME:CORPUS, the corpora copied from the fixtures' source (bench/README.md)
JOBS="gpt2:corpus_en.txt bert-base-uncased:corpus_en.txt llama3:corpus_en.txt opus-mt-fr-en:corpus_fr.txt"
NAMES=""

START=$SECONDS
step() { printf '\n[%3ds] %s\n' $((SECONDS - START)) "$*"; }
note() { echo "  note: $*"; }
json_note() { # KEY TEXT FILE: {"KEY": TEXT} in FILE, for a run that gave no result
    "$PY" -c 'import json,sys; json.dump({sys.argv[1]: sys.argv[2]}, open(sys.argv[3], "w"))' "$@"
}

PIN=(taskset -c "$CPU")
if ! command -v taskset >/dev/null 2>&1; then
    note "taskset not found: runs are NOT pinned to CPU $CPU"
    PIN=()
fi

step "machine"
grep -m1 '^model name' /proc/cpuinfo | sed 's/^/  /'
echo "  $(nproc) CPUs; every contender pinned to CPU $CPU"
f=/sys/devices/system/cpu/cpu$CPU/topology/thread_siblings_list
[ -r "$f" ] && echo "  cpu$CPU thread siblings: $(cat "$f")"

step "tpipe and transformers"
if ! "$TPIPE" --version; then
    echo "bench_tokenizers: $TPIPE does not run (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    ldd "$TPIPE" 2>&1 | grep -i "not found" >&2
    exit 1
fi
HAVE_TRF=1
if ! "$PY" -c 'import transformers, tokenizers; print("  transformers", transformers.__version__, "tokenizers", tokenizers.__version__)' 2>/dev/null; then
    note "$PY cannot import transformers and tokenizers: tpipe only"
    HAVE_TRF=0
fi

for job in $JOBS; do
    name=${job%%:*}
    corpus=$ROOT/bench/corpus/${job#*:}
    NAMES="$NAMES${NAMES:+,}$name"
    step "$name on $(basename "$corpus") (CPU $CPU)"

    # transformers / tokenizers
    if [ "$HAVE_TRF" -eq 0 ]; then
        json_note error "transformers is not importable by $PY" "$RAW/$name.hf.json"
    elif [ $((SECONDS - START)) -ge "$DEADLINE_S" ]; then
        note "skipped transformers for $name: past the ${DEADLINE_S} s deadline"
        json_note error "skipped: past the ${DEADLINE_S} s deadline of bench_tokenizers.sh" "$RAW/$name.hf.json"
    else
        cmd=("${PIN[@]}" "$PY" "$HF" measure --name "$name" --dir "$TOKS/$name" --corpus "$corpus"
            --out "$RAW/$name.hf.json" --ids-prefix "$RAW/$name" --repeat-to-bytes "$REPEAT_TO_BYTES"
            --iters "$ITERS")
        echo "${cmd[*]}" >>"$RAW/commands.txt"
        timeout 120 "${cmd[@]}" 2>"$RAW/$name.hf.err"
        rc=$?
        if [ $rc -ne 0 ]; then
            why=$(tail -n1 "$RAW/$name.hf.err")
            [ $rc -ne 124 ] || why="timed out after 120 s"
            note "transformers $name failed: ${why:-exit status $rc}"
            json_note error "${why:-exit status $rc}" "$RAW/$name.hf.json"
        fi
    fi

    # tpipe
    cmd=("${PIN[@]}" "$TPIPE" bench --tokenizer --model "$TOKS/$name" --corpus "$corpus"
        --repeat-to-bytes "$REPEAT_TO_BYTES" --iters "$ITERS" --warmup 1
        --output-ids "$RAW/$name.tpipe.ids" --json)
    echo "${cmd[*]}" >>"$RAW/commands.txt"
    timeout 60 "${cmd[@]}" >"$RAW/$name.tpipe.json" 2>"$RAW/$name.tpipe.err"
    rc=$?
    if [ $rc -eq 0 ]; then
        "$PY" - "$RAW/$name.tpipe.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {sys.argv[2]:18s} tpipe    {r['mb_per_s']:8.2f} MB/s {r['tokens_per_s'] / 1e6:6.2f} Mtok/s "
      f"({r['bytes'] / 1e6:.2f} MB, {r['lines']} lines, {r['tokens']} tokens)")
PY
    else
        why=$(tail -n1 "$RAW/$name.tpipe.err")
        [ $rc -ne 124 ] || why="timed out after 60 s"
        note "tpipe $name failed: ${why:-exit status $rc}"
        json_note error "${why:-exit status $rc}" "$RAW/$name.tpipe.json"
    fi
    for e in "$RAW/$name".*.err; do [ -s "$e" ] || rm -f "$e"; done
done

step "report"
"$PY" "$HF" report "$RAW" "$OUT/tokenizers.json" --names "$NAMES" --cpus "$CPU" | tee "$OUT/table.txt"
echo "bench_tokenizers: done in $((SECONDS - START)) s; results in $OUT"
