#!/usr/bin/env bash
# End-to-end: `tpipe run --json FILE|-` takes the Inference API body
# {"inputs": ..., "parameters": {...}}; --param entries override its parameters.
source "$(dirname "$0")/lib/common.sh"

SST2="$FIX/distilbert-sst2"
HATE="I hate this so much!"
WAIT="I've been waiting for a HuggingFace course my whole life."
REF="$SST2/reference.json"

cat >"$TMP/req.json" <<JSON
{"inputs": ["$WAIT", "$HATE"], "parameters": {"top_k": null}}
JSON
expected=$(ref_get "$REF" 'r["pipeline"][1]["output"]')
expect_json "--json FILE (two texts, top_k=null)" "$expected" -- \
    run text-classification --model "$SST2" --json "$TMP/req.json"

"$TPIPE" run text-classification --model "$SST2" --json - <"$TMP/req.json" >"$TMP/stdin.out" 2>"$TMP/err"
RC=$?
cp "$TMP/stdin.out" "$TMP/out"
if [ "$RC" -eq 0 ] && [ ! -s "$TMP/err" ] && why=$($JSONCMP "$TMP/stdin.out" "$expected"); then
    pass "--json - (stdin)"
else
    fail "--json - (stdin): ${why:-}"
    show_run
fi

# --param overrides the body's parameters.
expected=$(ref_get "$REF" '[o[:1] for o in r["pipeline"][1]["output"]]')
expect_json "--param top_k=1 over the body's top_k=null" "$expected" -- \
    run text-classification --model "$SST2" --json "$TMP/req.json" --param top_k=1

# A body without parameters, a single string.
printf '{"inputs": "%s"}' "$HATE" >"$TMP/one.json"
expected=$(ref_get "$REF" '[r["pipeline"][0]["output"][1]]')
expect_json "--json body with one string, no parameters" "$expected" -- \
    run sentiment-analysis --model "$SST2" --json "$TMP/one.json"

# A body with parameters only; the inputs come from TEXT.
printf '{"parameters": {"top_k": null}}' >"$TMP/params.json"
expected=$(ref_get "$REF" 'r["pipeline"][1]["output"]')
expect_json "--json parameters + TEXT inputs" "$expected" -- \
    run sentiment-analysis --model "$SST2" --json "$TMP/params.json" "$WAIT" "$HATE"

# A list of one text (only --json can say it): a list of one result.
printf '{"inputs": ["%s"]}' "$HATE" >"$TMP/list1.json"
expected=$(ref_get "$REF" '[r["pipeline"][0]["output"][1]]')
expect_json "--json list of one text" "$expected" -- \
    run sentiment-analysis --model "$SST2" --json "$TMP/list1.json"

# Pairs as objects in a list, with the legacy shape and with top_k.
printf '{"inputs": [{"text": "%s", "text_pair": "%s"}, {"text": "%s"}], "parameters": {"top_k": 2}}' \
    "$HATE" "$WAIT" "$HATE" >"$TMP/pairs.json"
tp run sentiment-analysis --model "$SST2" --json "$TMP/pairs.json"
if [ "$RC" -eq 0 ] && python3 - "$TMP/out" "$REF" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))["pipeline"][1]["output"][1]
assert isinstance(out, list) and len(out) == 2 and all(len(o) == 2 for o in out), out
# the second item has no pair: it must equal the reference for that text alone
for got, exp in zip(out[1], ref):
    assert got["label"] == exp["label"] and abs(got["score"] - exp["score"]) <= 1e-4, (got, exp)
PY
then
    pass "--json list of pair objects with top_k=2"
else
    fail "--json list of pair objects"
    show_run
fi

# Empty list in, empty list out.
expect_json "--json empty list" '[]' -- \
    run sentiment-analysis --model "$SST2" --json - <<<'{"inputs": []}'

finish
