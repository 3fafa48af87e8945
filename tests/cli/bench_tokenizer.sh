#!/usr/bin/env bash
# End-to-end: `tpipe bench --tokenizer` on bert-base-uncased with a small corpus: the
# JSON has the documented keys and the batch bench/bench_tokenizers_hf.py makes
# ((corpus + "\n") * k, str.splitlines()); --output-ids writes what `tpipe tokenize`
# gives for each line; bad options are usage errors.
source "$(dirname "$0")/lib/common.sh"

BERT="$DATA/fixtures/tokenizers/bert-base-uncased"
CORPUS="$TMP/corpus.txt"
# a CRLF line (read as "\n"), a form feed and a U+2028 inside lines (str.splitlines()
# breaks there too), an accented word; no final newline
printf 'Hello world, this is tpipe.\r\nLe caf\xc3\xa9 est ferm\xc3\xa9.\nOne\ftwo\nthree\xe2\x80\xa8four' >"$CORPUS"

tp bench --tokenizer --model "$BERT" --corpus "$CORPUS" --repeat-to-bytes 300 --iters 2 \
    --warmup 0 --output-ids "$TMP/ids.txt" --json
if [ "$RC" -ne 0 ] || [ -s "$TMP/err" ]; then
    fail "bench --tokenizer --json: exit $RC"
    show_run
elif why=$(python3 - "$TMP/out" "$CORPUS" "$TMP/ids.txt" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"not JSON: {e}")
keys = ["tpipe_version", "tokenizer", "corpus", "corpus_bytes", "repeat", "bytes", "lines", "rows",
        "tokens", "ids_sum", "iters", "warmup", "load_ms", "median_ms", "min_ms", "max_ms",
        "mb_per_s", "tokens_per_s", "peak_rss_bytes"]
missing = [k for k in keys if k not in r]
if missing:
    sys.exit(f"missing keys {missing}")
corpus = open(sys.argv[2], encoding="utf-8").read()
k = max(1, 300 // len(corpus.encode()) + 1)
text = (corpus + "\n") * k
lines = text.splitlines()
want = {"corpus_bytes": len(corpus.encode()), "repeat": k, "bytes": len(text.encode()),
        "lines": len(lines), "rows": len(lines), "iters": 2, "warmup": 0}
got = {key: r[key] for key in want}
if got != want:
    sys.exit(f"got {got}, want {want}")
if not (0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]) or r["mb_per_s"] <= 0 or r["tokens_per_s"] <= 0:
    sys.exit(f"timings: {r}")
rows = [[int(x) for x in l.split()] for l in open(sys.argv[3])]
if len(rows) != len(lines):
    sys.exit(f"--output-ids has {len(rows)} lines, want {len(lines)}")
if sum(map(len, rows)) != r["tokens"] or sum(map(sum, rows)) != r["ids_sum"]:
    sys.exit("--output-ids disagrees with tokens / ids_sum")
if any(rows[i] != rows[i % (len(lines) // k)] for i in range(len(rows))):
    sys.exit("the repeated lines do not encode alike")
if any(row[0] != 101 or row[-1] != 102 for row in rows):
    sys.exit("a row lacks [CLS] ... [SEP]")
PY
); then
    pass "bench --tokenizer --json: keys, batch and --output-ids"
else
    fail "bench --tokenizer --json: $why"
    show_run
fi

# --output-ids against `tpipe tokenize` for the first lines (the CRLF line, and the
# form feed's two halves)
i=0
for line in "Hello world, this is tpipe." "Le café est fermé." "One" "two"; do
    i=$((i + 1))
    tp tokenize --model "$BERT" -- "$line"
    want=$(python3 -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["ids"])))' "$TMP/out")
    got=$(sed -n "${i}p" "$TMP/ids.txt")
    if [ "$RC" -eq 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then
        pass "--output-ids line $i matches tpipe tokenize"
    else
        fail "--output-ids line $i: '$got', tpipe tokenize: '$want'"
    fi
done

# the table
tp bench --tokenizer --model "$BERT" --corpus "$CORPUS" --repeat-to-bytes 100 --iters 1
if [ "$RC" -eq 0 ] && grep -q '^throughput .* MB/s' "$TMP/out" && grep -q '^output ' "$TMP/out"; then
    pass "bench --tokenizer table"
else
    fail "bench --tokenizer table"
    show_run
fi

expect_error "bench --tokenizer without --corpus" 2 "needs --corpus" -- \
    bench --tokenizer --model "$BERT"
expect_error "bench --corpus without --tokenizer" 2 "only applies to bench --tokenizer" -- \
    bench --model "$BERT" --corpus "$CORPUS"
expect_error "bench --tokenizer --batch" 2 "--batch does not apply" -- \
    bench --tokenizer --model "$BERT" --corpus "$CORPUS" --batch 2
expect_error "bench --tokenizer --repeat-to-bytes 0" 2 "--repeat-to-bytes wants a number >= 1" -- \
    bench --tokenizer --model "$BERT" --corpus "$CORPUS" --repeat-to-bytes 0
expect_error "bench --tokenizer, missing corpus" 1 "--corpus .*No such file" -- \
    bench --tokenizer --model "$BERT" --corpus "$TMP/none.txt"
: >"$TMP/empty.txt"
expect_error "bench --tokenizer, empty corpus" 1 "empty" -- \
    bench --tokenizer --model "$BERT" --corpus "$TMP/empty.txt"
expect_error "bench --tokenizer, unwritable --output-ids" 1 "--output-ids" -- \
    bench --tokenizer --model "$BERT" --corpus "$CORPUS" --repeat-to-bytes 10 --iters 1 \
    --output-ids "$TMP/no/such/dir/ids.txt"
finish
