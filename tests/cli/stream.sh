#!/usr/bin/env bash
# End-to-end: `tpipe run text-generation --stream` on the gpt2 fixture prints exactly
# the new text of the reference pipeline case 0 (no prompt, no JSON) and a newline;
# requests that cannot stream, and other tasks, are refused with one stderr line.
source "$(dirname "$0")/lib/common.sh"

GPT2="$FIX/gpt2"
COURSE="In this course, we will teach you how to"

python3 -c 'import json,sys
c = json.load(open(sys.argv[1]))["pipeline"][0]
full, prompt = c["output"][0]["generated_text"], c["args"][0]
assert full.startswith(prompt)
open(sys.argv[2], "wb").write((full[len(prompt):] + "\n").encode())' \
    "$GPT2/reference.json" "$TMP/want"

tp run text-generation --stream --model "$GPT2" --param max_new_tokens=16 --param do_sample=false "$COURSE"
if [ "$RC" -ne 0 ] || [ -s "$TMP/err" ]; then
    fail "gpt2 --stream: exit $RC"
    show_run
elif cmp -s "$TMP/out" "$TMP/want"; then
    pass "gpt2 --stream prints the new text of case 0 and a newline"
else
    fail "gpt2 --stream: stdout differs from the new text"
    show_run
    echo "   want: $(cat "$TMP/want")"
fi

# Through --json, return_full_text=false: the same text.
echo "{\"inputs\": \"$COURSE\", \"parameters\": {\"max_new_tokens\": 16, \"do_sample\": false, \"return_full_text\": false}}" >"$TMP/req.json"
tp run text-generation --stream --model "$GPT2" --json "$TMP/req.json"
if [ "$RC" -eq 0 ] && [ ! -s "$TMP/err" ] && cmp -s "$TMP/out" "$TMP/want"; then
    pass "gpt2 --stream --json"
else
    fail "gpt2 --stream --json"
    show_run
fi

expect_error "--stream with two prompts" 2 "one prompt" -- \
    run text-generation --stream --model "$GPT2" "$COURSE" "$COURSE"
expect_error "--stream with num_return_sequences=2" 2 "num_return_sequences" -- \
    run text-generation --stream --model "$GPT2" --param num_return_sequences=2 "$COURSE"
expect_error "--stream on another task" 2 "text-generation" -- \
    run text-classification --stream --model "$SPAM" "hello"
expect_error "--stream with a bad parameter" 1 "'top_p'" -- \
    run text-generation --stream --model "$GPT2" --param top_p=2 "$COURSE"

finish
