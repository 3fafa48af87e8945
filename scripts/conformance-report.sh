#!/usr/bin/env bash
# Runs tpipe-conformance over every fixture directory under FIXTURES_DIR (every case
# kind, every backend) and prints one line per fixture and the total: the figures
# docs/status.md keeps. Not part of the test suite, which gates only what has landed.
#   scripts/conformance-report.sh [BUILD_DIR] FIXTURES_DIR
set -uo pipefail
build=build
[ $# -ge 2 ] && { build=$1; shift; }
fixtures=${1:?usage: scripts/conformance-report.sh [BUILD_DIR] FIXTURES_DIR}
total_pass=0 total_fail=0
for dir in "$fixtures"/models/* "$fixtures"/tokenizers/*; do
  [ -f "$dir/reference.json" ] || continue
  line=$("$build/bin/tpipe-conformance" "$dir" 2>/dev/null | tail -n 1)
  pass=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
  fail=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
  printf '%-34s %s\n' "$(basename "$(dirname "$dir")")/$(basename "$dir")" "$line"
  total_pass=$((total_pass + ${pass:-0}))
  total_fail=$((total_fail + ${fail:-0}))
done
echo "$total_pass passed, $total_fail failed"
