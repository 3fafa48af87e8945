# common.sh: shared helpers of the CLI tests (sourced, not a test itself).
# Every test is run as: bash tests/cli/NAME.sh BUILD_DIR DATA_DIR SOURCE_DIR
# It prints one "ok:" or "FAIL:" line per check and exits 1 when any check failed.

# FIX, SPAM, LIB... are used by the scripts that source this file.
# shellcheck disable=SC2034
if [ $# -lt 3 ]; then
    echo "usage: $0 BUILD_DIR TEST_DATA_DIR SOURCE_DIR" >&2
    exit 2
fi
BUILD=$1
DATA=$2
SRC=$3
TPIPE="$BUILD/bin/tpipe"
FIX="$DATA/fixtures/models"
SPAM="$SRC/models/spam-filter"
LIB="$SRC/tests/cli/lib"
JSONCMP="python3 $LIB/jsoncmp.py"

if [ ! -x "$TPIPE" ]; then
    echo "FAIL: $TPIPE is not built" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tpipe-cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
FAILURES=0

pass() { echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    FAILURES=$((FAILURES + 1))
}

# tp ARGS...: runs tpipe; stdout in $TMP/out, stderr in $TMP/err, status in $RC.
tp() {
    "$TPIPE" "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
}

# show_run: what the last run printed, for a failure report.
show_run() {
    echo "   exit $RC; stdout: $(head -c 400 "$TMP/out")"
    echo "   stderr: $(head -c 400 "$TMP/err")"
}

# expect_json NAME EXPECTED [TOL] -- ARGS...: tpipe ARGS must exit 0, print nothing
# on stderr, and print JSON equal to EXPECTED (a file or JSON text) within TOL.
expect_json() {
    local name=$1 expected=$2 tol=1e-4
    shift 2
    if [ "$1" != "--" ]; then tol=$1; shift; fi
    shift
    tp "$@"
    if [ "$RC" -ne 0 ]; then
        fail "$name: exit $RC"
        show_run
        return
    fi
    if [ -s "$TMP/err" ]; then
        fail "$name: unexpected stderr"
        show_run
        return
    fi
    local why
    if why=$($JSONCMP "$TMP/out" "$expected" "$tol"); then
        pass "$name"
    else
        fail "$name: $why"
        show_run
    fi
}

# expect_error NAME CODE PATTERN -- ARGS...: tpipe ARGS (stdin from $STDIN_FILE when
# set) must exit with CODE (any non-zero when CODE is '*'), print nothing on stdout,
# and exactly one stderr line "tpipe: ..." matching the extended regex PATTERN.
expect_error() {
    local name=$1 code=$2 pattern=$3
    shift 4
    if [ -n "${STDIN_FILE:-}" ]; then
        "$TPIPE" "$@" <"$STDIN_FILE" >"$TMP/out" 2>"$TMP/err"
    else
        "$TPIPE" "$@" </dev/null >"$TMP/out" 2>"$TMP/err"
    fi
    RC=$?
    local lines
    lines=$(wc -l <"$TMP/err")
    if [ "$RC" -eq 0 ] || { [ "$code" != "*" ] && [ $RC -ne "$code" ]; }; then
        fail "$name: exit $RC, expected ${code/\*/non-zero}"
        show_run
    elif [ -s "$TMP/out" ]; then
        fail "$name: stdout is not empty"
        show_run
    elif [ "$lines" -ne 1 ] || ! head -n1 "$TMP/err" | grep -q '^tpipe: '; then
        fail "$name: stderr is not one 'tpipe: ...' line ($lines lines)"
        show_run
    elif ! grep -Eq -- "$pattern" "$TMP/err"; then
        fail "$name: stderr does not match /$pattern/"
        show_run
    else
        pass "$name ($(head -c 160 "$TMP/err"))"
    fi
}

# ref_case REFERENCE INDEX: the INDEX-th `pipeline` case of a reference.json, as JSON.
ref_case() {
    python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["pipeline"][int(sys.argv[2])]))' "$1" "$2"
}
# ref_get REFERENCE PYEXPR: a value computed from reference.json `r` (Python), as JSON.
ref_get() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps(eval(sys.argv[2])))' "$1" "$2"
}

finish() {
    if [ "$FAILURES" -ne 0 ]; then
        echo "$FAILURES check(s) failed"
        exit 1
    fi
    echo "all checks passed"
    exit 0
}
