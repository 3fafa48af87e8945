#!/usr/bin/env bash
# End-to-end: `tpipe run fill-mask` on bert-mlm (WordPiece, [MASK]) and roberta-mlm
# (byte-level BPE, <mask>), compared with what transformers 5.17 printed.
source "$(dirname "$0")/lib/common.sh"

MLM="$FIX/bert-mlm"
ROB="$FIX/roberta-mlm"
NER="$FIX/bert-ner"
PARIS="The capital of France is [MASK]."

# One string with one mask: a list of the top 5 {score, token, token_str, sequence}.
expected=$(ref_get "$MLM/reference.json" 'r["pipeline"][0]["output"][0]')
expect_json "fill-mask, one text" "$expected" -- run fill-mask --model "$MLM" "$PARIS"
expected=$(ref_get "$MLM/reference.json" 'r["pipeline"][1]["output"]')
expect_json "fill-mask, top_k=3" "$expected" -- run fill-mask --model "$MLM" --param top_k=3 "$PARIS"

# Every pipeline case of both fixtures (a list of two texts; a list of one text,
# which transformers unwraps), as TEXT arguments and as --json bodies.
for fixture in "$MLM" "$ROB"; do
    for via in args json-file; do
        if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$fixture" "$fixture/reference.json" --via "$via"); then
            echo "$out"
        else
            echo "$out"
            fail "pipeline cases of $(basename "$fixture") via $via"
        fi
    done
done

# targets: only those tokens are scored, top_k is capped to their number, and each
# sequence has the target in place of the mask.
tp run fill-mask --model "$MLM" --param 'targets=["both","do"]' "$PARIS"
if [ "$RC" -eq 0 ] && python3 - "$TMP/out" "$MLM/reference.json" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))
full = {d["token_str"]: d for d in json.load(open(sys.argv[2]))["pipeline"][0]["output"][0]}
assert [d["token_str"] for d in got] == ["both", "do"], got
for d in got:
    assert d["token"] == full[d["token_str"]]["token"]
    assert abs(d["score"] - full[d["token_str"]]["score"]) < 1e-4
    assert d["sequence"] == full[d["token_str"]]["sequence"]
PY
then
    pass "targets restrict the scores to the targets"
else
    fail "targets restrict the scores to the targets"
    show_run
fi

# Two masks: one list per mask, the sequences keep the special tokens.
tp run fill-mask --model "$MLM" --param top_k=2 "Paris is the [MASK] of [MASK]."
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d) == 2 and all(len(x) == 2 for x in d) and d[0][0]["sequence"].startswith("[CLS]") and "[MASK]" in d[0][0]["sequence"]' "$TMP/out"; then
    pass "two masks give a list per mask"
else
    fail "two masks give a list per mask"
    show_run
fi

# Errors: one stderr line, non-zero exit, nothing on stdout.
expect_error "text without a mask token" 1 "no mask token \(\[MASK\]\) in the input" -- \
    run fill-mask --model "$MLM" "The capital of France is Paris."
expect_error "one text of a batch without a mask" 1 "inputs\[1\]: no mask token" -- \
    run fill-mask --model "$MLM" "$PARIS" "No mask here."
expect_error "a token-classification model asked for fill-mask" 1 "BertForTokenClassification.*masked-LM" -- \
    run fill-mask --model "$NER" "$PARIS"
expect_error "top_k=0" 1 "top_k" -- run fill-mask --model "$MLM" --param top_k=0 "$PARIS"
expect_error "empty targets" 1 "targets" -- run fill-mask --model "$MLM" --param 'targets=[]' "$PARIS"

finish
