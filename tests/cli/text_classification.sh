#!/usr/bin/env bash
# End-to-end: `tpipe run text-classification / sentiment-analysis` on the reference
# fixtures (distilbert-sst2: softmax; bert-multilabel: problem_type multi-label ->
# sigmoid), compared with what transformers 5.17 printed (reference.json).
source "$(dirname "$0")/lib/common.sh"

SST2="$FIX/distilbert-sst2"
ML="$FIX/bert-multilabel"
HATE="I hate this so much!"
WAIT="I've been waiting for a HuggingFace course my whole life."

# One string: transformers gives a one-element list [{label, score}].
expected=$(ref_get "$SST2/reference.json" '[r["pipeline"][0]["output"][1]]')
expect_json "sentiment-analysis, one text" "$expected" -- \
    run sentiment-analysis --model "$SST2" "$HATE"
expect_json "text-classification, one text" "$expected" -- \
    run text-classification --model "$SST2" "$HATE"

# Two texts are one batch: a list of {label, score}.
expected=$(ref_get "$SST2/reference.json" 'r["pipeline"][0]["output"][:2]')
expect_json "sentiment-analysis, two-text batch" "$expected" -- \
    run sentiment-analysis --model "$SST2" "$WAIT" "$HATE"

# top_k=null on one string: every label, sorted, not wrapped in another list.
expected=$(ref_get "$SST2/reference.json" 'r["pipeline"][1]["output"][1]')
expect_json "one text, top_k=null" "$expected" -- \
    run sentiment-analysis --model "$SST2" --param top_k=null "$HATE"
# top_k=1 given explicitly: a one-element list too (not the legacy dict).
expected=$(ref_get "$SST2/reference.json" 'r["pipeline"][1]["output"][1][:1]')
expect_json "one text, top_k=1" "$expected" -- \
    run sentiment-analysis --model "$SST2" --param top_k=1 "$HATE"

# Every pipeline case of both fixtures, as TEXT arguments and as --json bodies.
for fixture in "$SST2" "$ML"; do
    for via in args json-file; do
        if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$fixture" "$fixture/reference.json" --via "$via"); then
            echo "$out"
        else
            echo "$out"
            fail "pipeline cases of $(basename "$fixture") via $via"
        fi
    done
done

# function_to_apply against the raw logits of the forward case (each text run alone
# equals the padded batch thanks to the attention mask).
for fn in none sigmoid softmax; do
    python3 - "$ML" "$fn" >"$TMP/expected_$fn.json" <<'PY'
import json, math, sys
model, fn = sys.argv[1], sys.argv[2]
fwd = json.load(open(model + "/reference.json"))["forward"]
id2label = json.load(open(model + "/config.json"))["id2label"]
n = fwd["logits"]["shape"][1]
out = []
for row in (fwd["logits"]["data"][i * n:(i + 1) * n] for i in range(fwd["logits"]["shape"][0])):
    if fn == "sigmoid":
        scores = [1 / (1 + math.exp(-x)) for x in row]
    elif fn == "softmax":
        scores = [math.exp(x - max(row)) / sum(math.exp(v - max(row)) for v in row) for x in row]
    else:
        scores = row
    items = [{"label": id2label[str(j)], "score": s} for j, s in enumerate(scores)]
    out.append(sorted(items, key=lambda d: -d["score"]))
print(json.dumps(out))
PY
    expect_json "bert-multilabel function_to_apply=$fn top_k=null" "$TMP/expected_$fn.json" -- \
        run text-classification --model "$ML" --param top_k=null --param function_to_apply=$fn \
        "$WAIT" "$HATE"
done

# The default for multi_label_classification is sigmoid: same as asking for it.
tp run text-classification --model "$ML" --param top_k=null "$HATE"
cp "$TMP/out" "$TMP/default.json"
expect_json "bert-multilabel default is sigmoid" "$TMP/default.json" -- \
    run text-classification --model "$ML" --param top_k=null --param function_to_apply=sigmoid "$HATE"

# A text pair through --input: a bare {label, score} object, as transformers gives
# for a dict input without top_k; with top_k, a list.
tp run text-classification --model "$SST2" --input text="$HATE" --input text_pair="$WAIT"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d, dict) and set(d) == {"label", "score"} and d["label"] in ("POSITIVE", "NEGATIVE")' "$TMP/out"; then
    pass "text pair via --input gives one {label, score}"
else
    fail "text pair via --input"
    show_run
fi
tp run text-classification --model "$SST2" --param top_k=2 --input text="$HATE" --input text_pair="$WAIT"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d, list) and len(d) == 2 and d[0]["score"] >= d[1]["score"] and abs(d[0]["score"] + d[1]["score"] - 1) < 1e-5' "$TMP/out"; then
    pass "text pair with top_k=2 gives a sorted list summing to 1"
else
    fail "text pair with top_k=2"
    show_run
fi

# Long input: truncation=true cuts to the model's 128 positions instead of failing.
long=$(python3 -c 'print(" ".join(["great"] * 400))')
tp run text-classification --model "$SST2" --param truncation=true "$long"
if [ "$RC" -eq 0 ]; then pass "truncation=true on a 400-word text"; else fail "truncation=true on a long text"; show_run; fi

finish
