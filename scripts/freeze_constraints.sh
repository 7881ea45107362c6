#!/usr/bin/env bash
# Write constraints.txt from the tested .venv/ (run after scripts/test.sh passed on an upgrade).
set -euo pipefail
cd "$(dirname "$0")/.."
{
    sed -n '1,3p' constraints.txt
    { .venv/bin/pip freeze --exclude-editable | grep -v '^-e'; .venv/bin/pip freeze --all | grep '^pip=='; } | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages"
