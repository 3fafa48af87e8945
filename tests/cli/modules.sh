#!/usr/bin/env bash
# End-to-end: `tpipe plugins`, `tpipe backends`, --help and --version.
source "$(dirname "$0")/lib/common.sh"

check_ok() { # NAME PATTERN...: the last run exited 0, no stderr, stdout matches every PATTERN
    local name=$1
    shift
    if [ "$RC" -ne 0 ] || [ -s "$TMP/err" ]; then
        fail "$name: exit $RC"
        show_run
        return
    fi
    for pat in "$@"; do
        if ! grep -Eq -- "$pat" "$TMP/out"; then
            fail "$name: output lacks /$pat/"
            show_run
            return
        fi
    done
    pass "$name"
}

tp backends
check_ok "tpipe backends lists ref and the default" '^\*? *ref ' 'built in' '^default: '
tp plugins
check_ok "tpipe plugins lists text-classification" '^text-classification ' 'sentiment-analysis' \
    'text-classification\.so'

tp --help
check_ok "tpipe --help" 'Usage' 'tpipe run' 'models/spam-filter' 'task' '--model'
tp help
check_ok "tpipe help" 'Usage'
tp run --help
check_ok "tpipe run --help" '--param KEY=VALUE' '--input KEY=VALUE' '--json FILE' 'top_k=null'
tp help run
check_ok "tpipe help run" '--param KEY=VALUE'
for cmd in tokenize detokenize plugins backends; do
    tp "$cmd" --help
    check_ok "tpipe $cmd --help" "Usage: tpipe $cmd"
done
tp --version
check_ok "tpipe --version" '^tpipe [0-9]+\.[0-9]+\.[0-9]+$'

finish
