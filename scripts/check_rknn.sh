#!/usr/bin/env bash
# Opt-in RKNN check: builds the static-shape ONNX exports, converts them with
# rknn-toolkit2 (fp16 and int8) and compares the toolkit's simulator with
# onnxruntime. Not part of the default CI run: the toolkit needs its own
# virtual environment (about 1.5 GB) because its pins clash with ours.
#
#   scripts/check_rknn.sh [--setup-only] [convert_rknn.py options: --platform rk3588 --precisions fp16,int8 --all-buckets]
#   RKNN_MODEL=whisper-base scripts/check_rknn.sh     # the multilingual model (default: whisper-tiny.en)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RKNN_VENV="${RKNN_VENV:-$REPO/.venv-rknn}"
MAIN_PY="${MAIN_PY:-$REPO/.venv/bin/python}"
TOOLKIT_VERSION="${RKNN_TOOLKIT_VERSION:-2.3.2}"
MODEL="${RKNN_MODEL:-whisper-tiny.en}"
EXPORT_DIR="${RKNN_EXPORT_DIR:-$REPO/models/$MODEL-rknn-onnx}"
OUT_DIR="${RKNN_OUT_DIR:-$REPO/models/$MODEL-rknn}"
FP32_DIR="${FP32_DIR:-$REPO/models/$MODEL-fp32}"

setup_venv() {
    # The toolkit's own requirements with the pins that keep it importable.
    # torch: the toolkit pins <=2.4 but does not refuse 2.13 at run time (checked:
    # load_onnx, build, export and the simulator all work with it), so the
    # cached 2.13 CPU wheel saves a large download. setuptools<70 comes last
    # (torch pulls a newer one; the toolkit imports pkg_resources); the toolkit
    # itself with --no-deps so pip does not enforce the torch pin.
    if [[ -x "$RKNN_VENV/bin/python" ]] && "$RKNN_VENV/bin/python" -c "import rknn.api" 2>/dev/null; then
        return
    fi
    python3 -m venv "$RKNN_VENV"
    local pip=("$RKNN_VENV/bin/pip" install --quiet)
    "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" "numpy<=1.26.4" "onnx>=1.16.1,<=1.18" "protobuf>=4.21.6,<=4.25.4" \
        "onnxruntime>=1.16,<1.21" "opencv-python-headless<4.12" "psutil>=5.9" \
        "ruamel.yaml>=0.17.21" "scipy>=1.9.3" "tqdm>=4.64.1" "fast-histogram>=0.11"
    "${pip[@]}" "setuptools<70"
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
    # Always: it says "up to date" when it is, and rebuilds a model left by an older builder.
    "$MAIN_PY" "$REPO/scripts/build_model.py" --model "$MODEL"
    "$MAIN_PY" "$REPO/scripts/rknn_export.py" --model "$MODEL" --out "$EXPORT_DIR"
    "$RKNN_VENV/bin/python" "$REPO/scripts/convert_rknn.py" \
        --exports "$EXPORT_DIR" --out "$OUT_DIR" --model "$FP32_DIR" "${args[@]}"
    # Transcripts through the simulated encoder output, decoded on CPU by our decoder.
    RKNN_OUT_DIR="$OUT_DIR" FP32_DIR="$FP32_DIR" "$REPO/.venv/bin/python" -m pytest -q -p no:cacheprovider -m rknn -s "$REPO/tests/test_rknn_sim.py"
}

main "$@"
