#!/bin/bash
# tpipe-limits --quick: the peak line, a bandwidth figure, and a GFLOP/s line per
# loaded backend, the onednn backend's few-row weight streams; the openblas backend names the OpenBLAS core it runs (set from
# cpuid unless the user set OPENBLAS_CORETYPE).  Usage: limits.sh BUILD_DIR DATA_DIR SRC
set -eu
BUILD=$1
# Under the sanitize suite: libdnnl keeps a failed dlsym's message (a one-time
# allocation); only the slow unwinder sees through libdnnl's frames to match
# tests/lsan.supp's libdnnl entry.
[ -n "${LSAN_OPTIONS:-}" ] && export LSAN_OPTIONS="$LSAN_OPTIONS:fast_unwind_on_malloc=0"
out=$("$BUILD/bin/tpipe-limits" --quick --threads 1)
echo "$out"
grep -q '^peak .*GFLOP/s' <<<"$out" || { echo "FAIL: no peak line"; exit 1; }
grep -Eq '^read +[0-9.]+ GB/s' <<<"$out" || { echo "FAIL: no bandwidth line"; exit 1; }
grep -q 'steps/s' <<<"$out" || { echo "FAIL: no decode bound"; exit 1; }
if [ -f "$BUILD/lib/tpipe/backends/onednn.so" ]; then
    # few-row weight streams: fp32 on every machine, one and four rows, both layouts
    for rows in '1 row ' '4 rows'; do
        for shape in 'gpt2 ffn1 (k x n)' 'gpt2 lm head'; do
            grep -Fq "$rows x" <<<"$(grep -F "$shape" <<<"$out" | grep -F ' fp32 ' | grep -F 'GB/s of weights')" ||
                { echo "FAIL: no fp32 stream line for $rows, $shape"; exit 1; }
        done
    done
fi
if [ -f "$BUILD/lib/tpipe/backends/openblas.so" ]; then
    grep -Eq '^  openblas .*[0-9.]+ GFLOP/s' <<<"$out" || { echo "FAIL: no openblas rate"; exit 1; }
    grep -q 'core .*(OPENBLAS_CORETYPE\|core .*(detected' <<<"$out" ||
        { echo "FAIL: openblas does not say where its core came from"; exit 1; }
    user=$(OPENBLAS_CORETYPE=Haswell "$BUILD/bin/tpipe-limits" --quick --threads 1 --backend openblas --mb 16)
    grep -q 'core Haswell (OPENBLAS_CORETYPE set by the user)' <<<"$user" ||
        { echo "FAIL: the user's OPENBLAS_CORETYPE was not kept"; echo "$user"; exit 1; }
fi
echo "PASS"
