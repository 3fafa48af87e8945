# shellcheck shell=bash
# rounds.sh: sourced by side_by_side.sh and side_by_side_generate.sh, the two helpers
# of measuring in rounds (bench/README.md, section "Rounds").

# run_rounds KIND SCRIPT OUTDIR: with ROUNDS > 1, runs SCRIPT ROUNDS times into
# OUTDIR/r1.., transformers first in odd rounds and tpipe first in even ones, then
# bench/rounds.py KIND over them (OUTDIR/rounds.txt, OUTDIR/rounds.json). Returns 1
# (nothing done) when ROUNDS is 1 or unset.
run_rounds() {
    [ "${ROUNDS:-1}" -gt 1 ] 2>/dev/null || return 1
    local kind=$1 script=$2 out=$3 i order dirs=()
    for i in $(seq "$ROUNDS"); do
        order=trf-first
        [ $((i % 2)) = 1 ] || order=tpipe-first
        ROUNDS=1 ORDER=$order bash "$script" "$out/r$i" || echo "$script: round $i failed" >&2
        dirs+=("$out/r$i")
    done
    "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/rounds.py" "$kind" "$out/rounds.json" \
        "${dirs[@]}" | tee "$out/rounds.txt"
}

# both_sides MODEL TRF_FN TPIPE_FN: both sides of one model back to back, in the order
# ORDER names (trf-first, the default, or tpipe-first)
both_sides() {
    if [ "${ORDER:-trf-first}" = tpipe-first ]; then
        "$3" "$1"
        "$2" "$1"
    else
        "$2" "$1"
        "$3" "$1"
    fi
}
