#!/usr/bin/env bash
# Opt-in RKNN check: builds the static-shape ONNX exports, converts them with
# rknn-toolkit2 (fp16 and int8) and compares the toolkit's simulator with
# onnxruntime. Not part of the default CI run: the toolkit needs its own
# virtual environment (about 1.4 GB) because its pins clash with ours.
#
#   scripts/check_rknn.sh [--setup-only] [--platform rk3588] [extra convert_rknn.py args]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RKNN_VENV="${RKNN_VENV:-$REPO/.venv-rknn}"
MAIN_PY="${MAIN_PY:-$REPO/.venv/bin/python}"
TOOLKIT_VERSION="${RKNN_TOOLKIT_VERSION:-2.3.2}"
EXPORT_DIR="${RKNN_EXPORT_DIR:-$REPO/models/whisper-tiny.en-rknn-onnx}"
OUT_DIR="${RKNN_OUT_DIR:-$REPO/models/whisper-tiny.en-rknn}"
FP32_DIR="${FP32_DIR:-$REPO/models/whisper-tiny.en-fp32}"

setup_venv() {
    # The toolkit's own requirements, with the pins that keep it importable.
    # torch: the toolkit asks for <=2.4, which has no wheel for this Python
    # here; it only imports torch for load_pytorch, so a newer CPU wheel is
    # enough for load_onnx (installed first, the toolkit last with --no-deps).
    if [[ -x "$RKNN_VENV/bin/python" ]] && "$RKNN_VENV/bin/python" -c "import rknn.api" 2>/dev/null; then
        return
    fi
    python3 -m venv "$RKNN_VENV"
    local pip=("$RKNN_VENV/bin/pip" install --quiet)
    "${pip[@]}" "setuptools<70" wheel
    "${pip[@]}" "torch==2.13.0" --index-url "file:///nonexistent" --find-links /opt/wheels 2>/dev/null \
        || "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" "numpy<=1.26.4" "onnx>=1.16.1,<=1.18" "protobuf>=4.21.6,<=4.25.4" \
        "onnxruntime>=1.16,<1.21" "opencv-python-headless<4.12" "psutil>=5.9" \
        "ruamel.yaml>=0.17.21" "scipy>=1.9.3" "tqdm>=4.64.1" "fast-histogram>=0.11"
    "${pip[@]}" --no-deps "rknn-toolkit2==$TOOLKIT_VERSION"
}

main() {
    local setup_only=0
    local args=()
    for arg in "$@"; do
        if [[ "$arg" == "--setup-only" ]]; then setup_only=1; else args+=("$arg"); fi
    done
    setup_venv
    [[ $setup_only == 1 ]] && return
    if [[ ! -f "$FP32_DIR/manifest.json" ]]; then
        "$MAIN_PY" "$REPO/scripts/build_model.py"
    fi
    "$MAIN_PY" "$REPO/scripts/rknn_export.py" --model "$FP32_DIR" --out "$EXPORT_DIR"
    "$RKNN_VENV/bin/python" "$REPO/scripts/convert_rknn.py" \
        --exports "$EXPORT_DIR" --out "$OUT_DIR" --main-python "$MAIN_PY" "${args[@]}"
}

main "$@"
