#!/usr/bin/env bash
# End-to-end: `tpipe run question-answering` on the distilbert-qa fixture, compared
# with the `qa` cases of its reference.json (transformers 4's QuestionAnsweringPipeline,
# re-expressed with transformers 5.17 since 5 removed it), plus the errors.
source "$(dirname "$0")/lib/common.sh"

QA="$FIX/distilbert-qa"
REF="$QA/reference.json"

# Every single-question case, through --input question=... --input context=... and
# each kwarg as --param. The last case (a long context cut into windows) is checked
# separately below: its reference was made with tokenizers 0.23.2, whose truncation
# early exit (huggingface/tokenizers#2091) drops all windows past the second one.
python3 - "$REF" >"$TMP/cases.tsv" <<'PY'
import json, sys
cases = json.load(open(sys.argv[1]))["qa"]
for i, c in enumerate(cases[:-1]):
    if isinstance(c["question"], list):
        continue
    params = [f"{k}={json.dumps(v)}" for k, v in c["kwargs"].items()]
    print("\t".join([str(i), c["question"], c["context"], json.dumps(c["output"])] + params))
PY
while IFS=$'\t' read -r -a f; do
    args=()
    for p in "${f[@]:4}"; do args+=(--param "$p"); done
    expect_json "qa case ${f[0]} (${f[*]:4})" "${f[3]}" -- \
        run question-answering --model "$QA" --input question="${f[1]}" --input context="${f[2]}" \
        "${args[@]}"
done <"$TMP/cases.tsv"

# A list of questions on one context: one answer per question, through --json.
ref_get "$REF" '{"inputs": {"question": r["qa"][10]["question"], "context": r["qa"][10]["context"]}}' \
    >"$TMP/list.json"
expected=$(ref_get "$REF" 'r["qa"][10]["output"]')
expect_json "qa list of questions (--json)" "$expected" -- \
    run question-answering --model "$QA" --json "$TMP/list.json"

# The same as a list of {question, context} objects.
ref_get "$REF" '{"inputs": [{"question": q, "context": r["qa"][10]["context"]} for q in r["qa"][10]["question"]]}' \
    >"$TMP/objects.json"
expect_json "qa list of {question, context} objects (--json)" "$expected" -- \
    run question-answering --model "$QA" --json "$TMP/objects.json"

# One question in a list: transformers 4 answers it bare, not in a list.
ref_get "$REF" '{"inputs": [{"question": r["qa"][0]["question"], "context": r["qa"][0]["context"]}]}' \
    >"$TMP/one.json"
expected=$(ref_get "$REF" 'r["qa"][0]["output"]')
expect_json "qa one-element list answers bare" "$expected" -- \
    run question-answering --model "$QA" --json "$TMP/one.json"

# The long context (max_seq_len 64, doc_stride 16): tokenizers 0.23.2, which
# transformers 5.17 ships, stops tokenizing the context once it has 64 tokens, so
# there are 2 windows, not the 11 of tokenizers <= 0.22 (docs/tokenizers.md).
long_q=$(ref_get "$REF" 'r["qa"][11]["question"]' | python3 -c 'import json,sys; print(json.load(sys.stdin))')
long_c=$(ref_get "$REF" 'r["qa"][11]["context"]' | python3 -c 'import json,sys; print(json.load(sys.stdin))')
expected=$(ref_get "$REF" 'r["qa"][11]["output"]')
expect_json "qa long context, 2 windows" "$expected" -- \
    run question-answering --model "$QA" --input question="$long_q" --input context="$long_c" \
    --param max_seq_len=64 --param doc_stride=16 --param top_k=2

# Errors: one stderr line, non-zero exit, nothing on stdout.
expect_error "qa without a context" '*' "needs a 'context'" -- \
    run question-answering --model "$QA" --input question="Where do I work?"
expect_error "qa without a question" '*' "needs a 'question'" -- \
    run question-answering --model "$QA" --input context="My name is Sylvain."
expect_error "qa with an empty context" '*' "'context' cannot be empty" -- \
    run question-answering --model "$QA" --input question="Where do I work?" --input context=""
expect_error "qa on a model without a QA head" '*' "no question-answering head" -- \
    run question-answering --model "$FIX/distilbert-sst2" --input question="Where?" --input context="Here."
expect_error "qa max_answer_len=0" '*' "max_answer_len" -- \
    run question-answering --model "$QA" --input question="Where?" --input context="Here." \
    --param max_answer_len=0
expect_error "qa top_k=0" '*' "top_k" -- \
    run question-answering --model "$QA" --input question="Where?" --input context="Here." \
    --param top_k=0
expect_error "qa doc_stride >= max_seq_len" '*' "doc_stride" -- \
    run question-answering --model "$QA" --input question="Where?" --input context="Here." \
    --param max_seq_len=32 --param doc_stride=32
expect_error "qa unknown parameter" '*' "unknown parameter 'stride'" -- \
    run question-answering --model "$QA" --input question="Where?" --input context="Here." \
    --param stride=3
expect_error "qa a plain string input" '*' "question-answering needs a 'question' and a 'context'" -- \
    run question-answering --model "$QA" "Where do I work?"

finish
