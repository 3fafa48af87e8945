#!/usr/bin/env bash
# End-to-end: `tpipe run feature-extraction` on bert-embed (BertModel), compared with
# what transformers 5.17 printed, plus tpipe's pooling / normalize extension and
# checkpoints with a head (their last hidden state, as AutoModel gives it).
source "$(dirname "$0")/lib/common.sh"

EMBED="$FIX/bert-embed"
NER="$FIX/bert-ner"
APPLES="apples are sour. "

# A string gives [1][T][H]; a list gives a list of those, each with its own T.
expected=$(ref_get "$EMBED/reference.json" 'r["pipeline"][0]["output"]')
expect_json "feature-extraction, one text" "$expected" -- \
    run feature-extraction --model "$EMBED" "$APPLES"
for via in args json-file; do
    if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$EMBED" "$EMBED/reference.json" --via "$via"); then
        echo "$out"
    else
        echo "$out"
        fail "pipeline cases of bert-embed via $via"
    fi
done

# The reference's forward case holds last_hidden_state of a padded batch: the
# shapes of a two-text list follow each text's own length.
tp run feature-extraction --model "$EMBED" "short" "a somewhat longer text, with punctuation"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d) == 2 and len(d[0]) == 1 and len(d[0][0]) < len(d[1][0]) and len(d[0][0][0]) == 32' "$TMP/out"; then
    pass "a list keeps each text's own length"
else
    fail "a list keeps each text's own length"
    show_run
fi

# tpipe's pooling: mean and cls of the token vectors, then L2 normalization.
tp run feature-extraction --model "$EMBED" "$APPLES"
cp "$TMP/out" "$TMP/tokens.json"
python3 - "$TMP/tokens.json" "$TMP" <<'PY'
import json, math, sys
tokens = json.load(open(sys.argv[1]))[0]
mean = [sum(col) / len(tokens) for col in zip(*tokens)]
norm = math.sqrt(sum(x * x for x in mean))
json.dump(mean, open(sys.argv[2] + "/mean.json", "w"))
json.dump([x / norm for x in mean], open(sys.argv[2] + "/mean_norm.json", "w"))
json.dump(tokens[0], open(sys.argv[2] + "/cls.json", "w"))
PY
expect_json "pooling=mean" "$TMP/mean.json" -- \
    run feature-extraction --model "$EMBED" --param pooling=mean "$APPLES"
expect_json "pooling=mean normalize=true" "$TMP/mean_norm.json" -- \
    run feature-extraction --model "$EMBED" --param pooling=mean --param normalize=true "$APPLES"
expect_json "pooling=cls" "$TMP/cls.json" -- \
    run feature-extraction --model "$EMBED" --param pooling=cls "$APPLES"

# padding="max_length" in tokenize_kwargs stays in the output, as in transformers.
tp run feature-extraction --model "$EMBED" --param 'tokenize_kwargs={"padding":"max_length","max_length":12}' "$APPLES"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d[0]) == 12' "$TMP/out"; then
    pass "tokenize_kwargs padding=max_length gives max_length rows"
else
    fail "tokenize_kwargs padding=max_length"
    show_run
fi

# A checkpoint with a head still gives hidden states [1][T][H], not its logits.
tp run feature-extraction --model "$NER" "My name is Sarah."
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d) == 1 and len(d[0][0]) == 32' "$TMP/out"; then
    pass "BertForTokenClassification gives its hidden state"
else
    fail "BertForTokenClassification gives its hidden state"
    show_run
fi

expect_error "truncation given twice" 1 "truncation parameter defined twice" -- \
    run feature-extraction --model "$EMBED" --param truncation=true \
    --param 'tokenize_kwargs={"truncation":true}' "$APPLES"
expect_error "unknown pooling" 1 "pooling" -- \
    run feature-extraction --model "$EMBED" --param pooling=max "$APPLES"

finish
