# Sourced by bootstrap.sh and install.sh: the pip constraints file for an interpreter.
# shellcheck shell=bash
# constraints.txt holds the versions tested on Python 3.11+; its numpy 2.4 and onnxruntime 1.32 exist for no
# older Python, so 3.10 (JetPack 6, Ubuntu 22.04) gets constraints-py310.txt, tested on 3.10.
constraints_for() {
    local python="$1" repo="$2"
    if "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "$repo/constraints.txt"
    elif "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "$repo/constraints-py310.txt"
    else
        printf 'edge-asr needs Python 3.10 or newer; %s is %s\n' "$python" "$("$python" -V 2>&1)" >&2
        return 1
    fi
}
