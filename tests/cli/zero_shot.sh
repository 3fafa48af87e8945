#!/usr/bin/env bash
# End-to-end: `tpipe run zero-shot-classification` against what transformers 5.17
# printed for bart-mnli (reference.json pipeline cases: default and custom
# hypothesis_template, multi_label), the parameter forms transformers accepts
# (comma-separated labels, multi_class, a single label), and the errors with their
# exit codes.
source "$(dirname "$0")/lib/common.sh"

MNLI="$FIX/bart-mnli"
T="The team won the championship after a tense final."

# Every pipeline case, as TEXT arguments with --param and as --json bodies.
for via in args json-file; do
    if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$MNLI" "$MNLI/reference.json" --via "$via"); then
        echo "$out"
        pass "bart-mnli pipeline cases via $via"
    else
        echo "$out"
        fail "bart-mnli pipeline cases via $via"
    fi
done

# candidate_labels as one comma-separated string: split, stripped, empties dropped.
expected=$(ref_get "$MNLI/reference.json" 'r["pipeline"][2]["output"]')
expect_json "comma-separated candidate_labels" "$expected" -- \
    run zero-shot-classification --model "$MNLI" \
    --param 'candidate_labels= sports,cooking , finance,,travel' "$T"
# multi_class is the deprecated name of multi_label.
expected=$(ref_get "$MNLI/reference.json" 'r["pipeline"][3]["output"]')
expect_json "multi_class=true" "$expected" -- \
    run zero-shot-classification --model "$MNLI" \
    --param 'candidate_labels=["sports","cooking","finance","travel"]' --param multi_class=true "$T"
# A list of sequences gives a list, one result per sequence.
expected=$(ref_get "$MNLI/reference.json" '[r["pipeline"][2]["output"], r["pipeline"][2]["output"]]')
expect_json "two sequences" "$expected" -- \
    run zero-shot-classification --model "$MNLI" \
    --param 'candidate_labels=["sports","cooking","finance","travel"]' "$T" "$T"
# One label: scored like multi_label (entailment against contradiction).
expected=$(ref_get "$MNLI/reference.json" '{"sequence": r["pipeline"][3]["args"][0], "labels": ["travel"], "scores": [r["pipeline"][3]["output"]["scores"][0]]}')
expect_json "a single candidate label" "$expected" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=travel "$T"

# A text longer than the model (128 positions) is cut, only_first: the hypothesis stays.
LONG=$(python3 -c 'print(" ".join(["The team won the championship again."] * 60))')
tp run zero-shot-classification --model "$MNLI" --param candidate_labels=sports,cooking "$LONG"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert sorted(o["labels"]) == ["cooking", "sports"]' "$TMP/out"; then
    pass "a long text is truncated only_first"
else
    fail "a long text is truncated only_first"
    show_run
fi

# ---- errors: one "tpipe: ..." line, exit 1
expect_error "no candidate_labels" 1 "zero-shot-classification needs candidate_labels" -- \
    run zero-shot-classification --model "$MNLI" "$T"
expect_error "empty candidate_labels" 1 "candidate_labels" -- \
    run zero-shot-classification --model "$MNLI" --param 'candidate_labels=[]' "$T"
expect_error "candidate_labels of numbers" 1 "candidate_labels" -- \
    run zero-shot-classification --model "$MNLI" --param 'candidate_labels=[1,2]' "$T"
expect_error "hypothesis_template without {}" 1 "hypothesis_template.*not able to be formatted" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=a,b \
    --param 'hypothesis_template=A template.' "$T"
expect_error "hypothesis_template with a stray brace" 1 "hypothesis_template" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=a,b \
    --param 'hypothesis_template=It is {}}.' "$T"
expect_error "multi_label not a boolean" 1 "multi_label" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=a,b \
    --param multi_label=yes "$T"
expect_error "unknown parameter" 1 "bogus" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=a,b --param bogus=1 "$T"
expect_error "empty sequence" 1 "sequence is empty" -- \
    run zero-shot-classification --model "$MNLI" --param candidate_labels=a,b ""
printf '{"inputs": 42, "parameters": {"candidate_labels": ["a"]}}' >"$TMP/number.json"
expect_error "inputs not a string" 1 "inputs" -- \
    run zero-shot-classification --model "$MNLI" --json "$TMP/number.json"
expect_error "model without an entailment label" 1 "entail" -- \
    run zero-shot-classification --model "$FIX/distilbert-sst2" --param candidate_labels=a,b "$T"

# A model that is not an NLI classifier.
rm -rf "$TMP/no-head"
cp -r "$MNLI" "$TMP/no-head"
python3 - "$TMP/no-head/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["architectures"] = ["BartModel"]
json.dump(c, open(sys.argv[1], "w"))
PY
expect_error "model without a sequence-classification head" 1 "sequence-classification head" -- \
    run zero-shot-classification --model "$TMP/no-head" --param candidate_labels=a,b "$T"

finish
