#!/usr/bin/env bash
# Run the test suite (set-up first: it is a no-op when everything is up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
