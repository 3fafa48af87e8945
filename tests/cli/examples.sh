#!/usr/bin/env bash
# The example host programs (examples/) build and give transformers' answers.
source "$(dirname "$0")/lib/common.sh"

CRUISE="Congratulations! You have been selected to receive a FREE cruise. Click here to claim your prize now!"
TOM="Hi Tom, are we still meeting on Thursday to go over the release notes? I pushed the fixes last night."

for backend in ref openblas onednn; do
    out=$(TPIPE_BACKEND=$backend "$BUILD/bin/hello_pipeline" "$SPAM" "$CRUISE" "$TOM" 2>"$TMP/err")
    rc=$?
    echo "$out" | tail -n 1 >"$TMP/out"
    if [ $rc -ne 0 ] || ! echo "$out" | grep -q "^backend: $backend$"; then
        fail "hello_pipeline on $backend: exit $rc: $out $(cat "$TMP/err")"
    elif why=$($JSONCMP "$TMP/out" '[{"label":"SPAM","score":0.9994907379150391},{"label":"HAM","score":0.9998156428337097}]' 1e-4); then
        pass "hello_pipeline on $backend"
    else
        fail "hello_pipeline on $backend: $why"
    fi
done

out=$("$BUILD/bin/behind_the_pipeline" "$SPAM" "$CRUISE" "$TOM" 2>"$TMP/err")
rc=$?
# The by-hand softmax must agree with the pipeline's scores to 4 decimals.
if [ $rc -eq 0 ] && echo "$out" | grep -Eq '^  SPAM +0\.9995$' && echo "$out" | grep -Eq '^  HAM +0\.9998$'; then
    pass "behind_the_pipeline"
else
    fail "behind_the_pipeline: exit $rc: $out $(cat "$TMP/err")"
fi

out=$("$BUILD/bin/hello_pipeline" "$SRC/no-such-model" "x" 2>&1)
if [ $? -ne 0 ] && echo "$out" | grep -q "no-such-model"; then
    pass "hello_pipeline reports a missing model directory"
else
    fail "hello_pipeline with a missing model: $out"
fi

finish
