#!/usr/bin/env bash
# End-to-end: `tpipe run text-generation` on the gpt2 and smollm2 fixtures: the
# reference pipeline cases (greedy, return_full_text, chat messages rendered with
# SmolLM2's template), a batch of strings, seeded sampling reproducible, and bad
# parameters giving one stderr line naming the parameter.
source "$(dirname "$0")/lib/common.sh"

GPT2="$FIX/gpt2"
SMOL="$FIX/smollm2"
COURSE="In this course, we will teach you how to"

expected=$(ref_get "$GPT2/reference.json" 'r["pipeline"][0]["output"]')
expect_json "gpt2 greedy, 16 new tokens" "$expected" -- \
    run text-generation --model "$GPT2" --param max_new_tokens=16 --param do_sample=false "$COURSE"
expected=$(ref_get "$GPT2/reference.json" 'r["pipeline"][1]["output"]')
expect_json "gpt2 return_full_text=false" "$expected" -- \
    run text-generation --model "$GPT2" --param max_new_tokens=8 --param do_sample=false \
    --param return_full_text=false "My dog really wanted to eat icecream because"
expected=$(ref_get "$SMOL/reference.json" 'r["pipeline"][0]["output"]')
expect_json "smollm2 greedy, 16 new tokens" "$expected" -- \
    run text-generation --model "$SMOL" --param max_new_tokens=16 --param do_sample=false "$COURSE"
# Two strings: one list of records per string.
expected=$(ref_get "$GPT2/reference.json" '[r["pipeline"][0]["output"], r["pipeline"][0]["output"]]')
expect_json "gpt2 two prompts" "$expected" -- \
    run text-generation --model "$GPT2" --param max_new_tokens=16 --param do_sample=false "$COURSE" "$COURSE"

# Seeded sampling: the same seed gives the same text.
tp run text-generation --model "$GPT2" --param max_new_tokens=8 --param seed=7 --param num_return_sequences=2 "$COURSE"
cp "$TMP/out" "$TMP/first.json"
expect_json "seeded sampling is reproducible" "$TMP/first.json" -- \
    run text-generation --model "$GPT2" --param max_new_tokens=8 --param seed=7 --param num_return_sequences=2 "$COURSE"

for bad in num_beams=0 top_p=2 max_new_tokens=-1 temperature=0 no_such_option=1; do
    name=${bad%%=*}
    expect_error "bad parameter $bad" '*' "'$name'" -- \
        run text-generation --model "$GPT2" --param "$bad" "$COURSE"
done
python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["pipeline"][1]; json.dump({"inputs": c["args"][0], "parameters": c["kwargs"]}, open(sys.argv[2], "w"))' \
    "$SMOL/reference.json" "$TMP/chat.json"
expected=$(ref_get "$SMOL/reference.json" 'r["pipeline"][1]["output"]')
expect_json "smollm2 chat messages through the chat template" "$expected" -- \
    run text-generation --model "$SMOL" --json "$TMP/chat.json"
echo '{"inputs": [{"role": "user", "content": "hi"}], "parameters": {"max_new_tokens": 2, "do_sample": false}}' >"$TMP/chat-gpt2.json"
expect_error "chat input on a model with no chat template" '*' "chat_template|chat template" -- \
    run text-generation --model "$GPT2" --json "$TMP/chat-gpt2.json"

finish
