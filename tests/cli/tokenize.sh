#!/usr/bin/env bash
# End-to-end: `tpipe tokenize` and `tpipe detokenize` against the tokenizer cases of
# the fixtures (ids, tokens, offsets, ids without special tokens, decoded text, pairs):
# every case of distilbert-sst2's small vocabulary, and a few of bert-base-uncased's
# real 30k-entry one, whose loading is slow under AddressSanitizer (the conformance
# tests cover every case without a process per case).
source "$(dirname "$0")/lib/common.sh"

for fixture in "$FIX/distilbert-sst2" "$DATA/fixtures/tokenizers/bert-base-uncased"; do
    [ -f "$fixture/reference.json" ] || continue
    limit=3
    [ "$fixture" = "$FIX/distilbert-sst2" ] && limit=1000
    if ! python3 - "$TPIPE" "$fixture" "$limit" <<'PY'
import json, subprocess, sys
tpipe, model, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
name = model.rstrip("/").split("/")[-1]
all_cases = json.load(open(model + "/reference.json")).get("tokenizer", [])
cases = [c for c in all_cases if "text_pair" not in c][:limit] + [c for c in all_cases if "text_pair" in c][:limit]
failed = 0

def run(*args):
    p = subprocess.run([tpipe, *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or p.stderr:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[:300]}")
    return p.stdout

def check(label, fn):
    global failed
    try:
        why = fn()
    except (RuntimeError, ValueError, KeyError) as e:
        why = str(e)
    if why:
        failed += 1
        print(f"FAIL: {name} {label}: {why}")
    else:
        print(f"ok: {name} {label}")

for i, c in enumerate(cases):
    if "text_pair" in c:
        def pair(c=c):
            got = json.loads(run("tokenize", "--model", model, "--pair", c["text_pair"], "--", c["text"]))
            if got["ids"] != c["ids"]:
                return f"ids {got['ids']} != {c['ids']}"
            if c["token_type_ids"] and got["type_ids"] != c["token_type_ids"]:
                return f"type_ids {got['type_ids']} != {c['token_type_ids']}"
        check(f"pair case {i} {c['text'][:30]!r}", pair)
        continue
    def enc(c=c):
        got = json.loads(run("tokenize", "--model", model, "--", c["text"]))
        for key, ref in (("ids", "ids"), ("tokens", "tokens"), ("offsets", "offsets")):
            if ref in c and got[key] != c[ref]:
                return f"{key} {got[key]} != {c[ref]}"
        if len(got["type_ids"]) not in (0, len(got["ids"])):
            return "type_ids length differs from ids"
    check(f"tokenize case {i} {c['text'][:30]!r}", enc)
    def nospecial(c=c):
        got = json.loads(run("tokenize", "--model", model, "--no-special", "--", c["text"]))
        if got["ids"] != c["ids_no_special"]:
            return f"ids {got['ids']} != {c['ids_no_special']}"
    check(f"tokenize --no-special case {i}", nospecial)
    def dec(c=c):
        ids = [str(t) for t in c["ids"]]
        got = run("detokenize", "--model", model, *ids)[:-1]
        if got != c["decoded"]:
            return f"{got!r} != {c['decoded']!r}"
        got = run("detokenize", "--model", model, "--keep-special", *ids)[:-1]
        if got != c["decoded_with_special"]:
            return f"--keep-special: {got!r} != {c['decoded_with_special']!r}"
    if c["ids"]:
        check(f"detokenize case {i}", dec)
sys.exit(1 if failed else 0)
PY
    then
        fail "tokenizer cases of $(basename "$fixture")"
    fi
done

finish
