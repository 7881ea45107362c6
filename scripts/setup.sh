#!/usr/bin/env bash
# Set up everything (.venv/, the INT8 model) and run the main job on the
# embedded default: the daemon on a sample file, finals printed, since a box
# without a microphone has nothing else to listen to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
