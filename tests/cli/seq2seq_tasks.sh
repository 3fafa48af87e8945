#!/usr/bin/env bash
# End-to-end: the encoder-decoder tasks through `tpipe run`, against the reference
# pipeline cases (transformers 4 semantics): summarization on bart-cnn (beam 4 from
# generation_config.json) and on t5-small (prefix and settings from
# task_specific_params), translation_en_to_de on t5-small, translation on
# marian-fr-en, text2text-generation on flan-t5 and t5-small; a list of strings;
# return_tensors; a bad parameter or model giving one stderr line naming it.
source "$(dirname "$0")/lib/common.sh"

BART="$FIX/bart-cnn"
T5="$FIX/t5-small"
FLAN="$FIX/flan-t5"
MARIAN="$FIX/marian-fr-en"

# case_check NAME MODEL INDEX [--param k=v ...]: runs the reference pipeline case
# INDEX of MODEL (task, args[0]) and compares with its output.
case_check() {
    local name=$1 model=$2 i=$3
    shift 3
    local task text expected
    task=$(ref_get "$model/reference.json" "r['pipeline'][$i]['task']" | tr -d '"')
    text=$(ref_get "$model/reference.json" "r['pipeline'][$i]['args'][0]" | python3 -c 'import json,sys; print(json.load(sys.stdin))')
    expected=$(ref_get "$model/reference.json" "r['pipeline'][$i]['output']")
    expect_json "$name ($task)" "$expected" -- run "$task" --model "$model" "$@" "$text"
}

case_check "bart-cnn summary 0" "$BART" 0
case_check "bart-cnn summary 1" "$BART" 1
case_check "t5-small text2text" "$T5" 0 --param max_new_tokens=16
case_check "t5-small translation_en_to_de 0" "$T5" 2
case_check "t5-small translation_en_to_de 1" "$T5" 3
case_check "t5-small summarization (task_specific_params)" "$T5" 4
case_check "marian translation 0" "$MARIAN" 0
case_check "marian translation 2" "$MARIAN" 2
case_check "flan-t5 text2text 0" "$FLAN" 0 --param max_new_tokens=16
case_check "flan-t5 text2text 1" "$FLAN" 1 --param max_new_tokens=16

# "translation" alone on t5-small takes the first translation_* entry (en_to_de)
expected=$(ref_get "$T5/reference.json" 'r["pipeline"][2]["output"]')
expect_json "t5-small translation defaults to translation_en_to_de" "$expected" -- \
    run translation --model "$T5" "The house is wonderful."

# A list of strings with one sequence each: a flat list of records.
expected=$(ref_get "$MARIAN/reference.json" 'r["pipeline"][0]["output"] + r["pipeline"][1]["output"]')
echo '{"inputs": ["Ce cours est produit par Hugging Face.", "Le chat dort sur le canapé."]}' >"$TMP/two.json"
expect_json "marian two strings" "$expected" -- run translation --model "$MARIAN" --json "$TMP/two.json"

# return_tensors: the decoder's ids, as the generate case holds them.
expected=$(ref_get "$FLAN/reference.json" '[{"generated_token_ids": r["generate"][0]["sequences"][0]}]')
expect_json "flan-t5 return_tensors" "$expected" -- \
    run text2text-generation --model "$FLAN" --param max_new_tokens=16 --param return_tensors=true \
    "translate English to German: I love apples."

for bad in num_beams=0 max_new_tokens=-1 no_such_option=1 clean_up_tokenization_spaces=3 truncation=sideways; do
    name=${bad%%=*}
    expect_error "bad parameter $bad" '*' "'$name'" -- \
        run summarization --model "$BART" --param "$bad" "Some text to summarize."
done
expect_error "text2text on a classifier" '*' "BartForSequenceClassification" -- \
    run text2text-generation --model "$FIX/bart-mnli" "hello"

finish
