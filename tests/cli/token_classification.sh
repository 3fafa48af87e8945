#!/usr/bin/env bash
# End-to-end: `tpipe run ner / token-classification` on the bert-ner fixture
# (BertForTokenClassification, cased WordPiece), compared with what transformers 5.17
# printed (reference.json): every aggregation strategy, ignore_labels, stride.
source "$(dirname "$0")/lib/common.sh"

NER="$FIX/bert-ner"
EMBED="$FIX/bert-embed"
SARAH="My name is Sarah and I live in London."

# One string gives a list of entities (the first text of the batch case).
for strategy in none simple first average max; do
    i=$(python3 -c 'import sys; print(["none","simple","first","average","max"].index(sys.argv[1]))' "$strategy")
    expected=$(ref_get "$NER/reference.json" "r[\"pipeline\"][$i][\"output\"][0]")
    expect_json "ner, one text, aggregation_strategy=$strategy" "$expected" -- \
        run ner --model "$NER" --param aggregation_strategy="$strategy" "$SARAH"
done
# The canonical name and the alias give the same; no parameter means "none".
expected=$(ref_get "$NER/reference.json" 'r["pipeline"][0]["output"][0]')
expect_json "token-classification, default strategy" "$expected" -- \
    run token-classification --model "$NER" "$SARAH"

# Every pipeline case (batches, ignore_labels=[], stride on a long text), as TEXT
# arguments and as --json bodies.
for via in args json-file; do
    if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$NER" "$NER/reference.json" --via "$via"); then
        echo "$out"
    else
        echo "$out"
        fail "pipeline cases of bert-ner via $via"
    fi
done

# ignore_labels filters on the entity (none) or on the entity group (aggregated).
tp run ner --model "$NER" --param aggregation_strategy=simple --param 'ignore_labels=["O","PER","LOC"]' "$SARAH"
if [ "$RC" -eq 0 ] && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d and all(e["entity_group"] not in ("PER","LOC") for e in d)' "$TMP/out"; then
    pass "ignore_labels removes the groups named"
else
    fail "ignore_labels removes the groups named"
    show_run
fi

# Errors: one stderr line, non-zero exit, nothing on stdout.
expect_error "a BertModel asked for ner" 1 "BertModel.*token-classification" -- \
    run ner --model "$EMBED" "$SARAH"
expect_error "invalid aggregation_strategy" 1 "aggregation_strategy.*bogus" -- \
    run ner --model "$NER" --param aggregation_strategy=bogus "$SARAH"
expect_error "stride with aggregation_strategy none" 1 "stride" -- \
    run ner --model "$NER" --param aggregation_strategy=none --param stride=16 "$SARAH"
expect_error "stride not below model_max_length" 1 "stride.*model_max_length" -- \
    run ner --model "$NER" --param aggregation_strategy=simple --param stride=128 "$SARAH"
expect_error "ignore_labels as a string" 1 "ignore_labels" -- \
    run ner --model "$NER" --param ignore_labels=O "$SARAH"
expect_error "removed grouped_entities" 1 "grouped_entities.*aggregation_strategy" -- \
    run ner --model "$NER" --param grouped_entities=true "$SARAH"

finish
