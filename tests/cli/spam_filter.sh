#!/usr/bin/env bash
# End-to-end: the demo model models/spam-filter (a real trained DistilBERT) on its
# hand-written messages and its held-out e-mails, against transformers' answers.
source "$(dirname "$0")/lib/common.sh"

REF="$SPAM/reference.json"
if out=$(python3 "$LIB/pipeline_cases.py" "$TPIPE" "$SPAM" "$REF"); then
    echo "$out"
else
    echo "$out"
    fail "spam-filter pipeline cases"
fi

# Each hand-written message alone: [{label, score}] equal to its row of the batch.
python3 -c 'import json,sys; [print(t) for t in json.load(open(sys.argv[1]))["pipeline"][0]["args"][0]]' "$REF" >"$TMP/messages"
i=0
while IFS= read -r msg; do
    expected=$(ref_get "$REF" "[r['pipeline'][0]['output'][$i]]")
    expect_json "spam-filter message $i alone" "$expected" -- \
        run text-classification --model "$SPAM" --param truncation=true "$msg"
    i=$((i + 1))
done <"$TMP/messages"

# All 300 held-out e-mails as one --json batch with the kwargs they were made
# with (tpipe-conformance checks all 300 on every backend; this checks the CLI path).
python3 - "$REF" "$TMP/heldout.json" "$TMP/heldout_expected.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))["heldout"]
cases = h["cases"]
json.dump({"inputs": [c["text"] for c in cases], "parameters": h["kwargs"]}, open(sys.argv[2], "w"))
json.dump([c["output"] for c in cases], open(sys.argv[3], "w"))
PY
expect_json "spam-filter: the 300 held-out e-mails as one batch" "$TMP/heldout_expected.json" -- \
    run text-classification --model "$SPAM" --json "$TMP/heldout.json"

finish
