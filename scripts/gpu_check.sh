#!/usr/bin/env bash
# The GPU check: run the CUDA and TensorRT paths on a machine with an NVIDIA GPU and record what they do.
#
#   scripts/gpu_check.sh OUT_DIR [MODEL ...]      MODEL: whisper-tiny.en (default) and/or whisper-base
#
# Needs an onnxruntime-gpu that $PYTHON imports (default: .venv/bin/python if present, else python3).
# An offline machine gets it as wheels: put them in $EDGE_GPU_WHEELS and they are installed into
# $EDGE_GPU_SITE (default /tmp/edge-gpu-site), which goes first on PYTHONPATH; $EDGE_GPU_PYTHONPATH
# adds more (the weight packages, for example). CUDA, cuDNN and TensorRT libraries installed as pip
# packages (nvidia-*, tensorrt-*) are put on LD_LIBRARY_PATH: onnxruntime dlopens them by name.
#
# For each model it builds the graphs (scripts/build_model.py), then records in OUT_DIR:
#   backends-MODEL.json   `edge-asr backends --format json` with inference.backend auto
#   pytest-MODEL.txt      the opt-in GPU tests (pytest -m gpu; their fixtures are tiny.en's)
#   bench-MODEL.{md,json} scripts/bench_gpu.py: start-up, TensorRT cache hit, RTF and WER/CER per backend
#                         against CPU, and a forced mid-utterance failure falling back to CPU
#   latency-MODEL.md      scripts/bench_latency.py: the daemon on CUDA at real-time pace on one long file
# Each file's stderr goes to FILE.log. A step that fails is logged and the next one still runs (a model
# that fails to build skips its own other steps); the exit status is 1 if any step failed.
set -uo pipefail
case "${1:-}" in
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
esac
OUT=$(realpath -m "${1:?usage: scripts/gpu_check.sh OUT_DIR [MODEL ...]}")
shift
[ -z "${EDGE_GPU_WHEELS:-}" ] || EDGE_GPU_WHEELS=$(realpath -m "$EDGE_GPU_WHEELS")
SITE=$(realpath -m "${EDGE_GPU_SITE:-/tmp/edge-gpu-site}")
cd "$(dirname "$0")/.." || exit 1
MODELS=("${@:-whisper-tiny.en}")
mkdir -p "$OUT"
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
failures=0

step() {  # step NAME OUTPUT COMMAND...: run (stderr to OUTPUT.log), count a failure, go on
    local name=$1 output=$2
    shift 2
    local start=$SECONDS
    "$@" >"$output" 2>"$output.log"
    local status=$?
    echo "$name: exit $status in $((SECONDS - start)) s ($output)"
    [ $status -eq 0 ] || { failures=$((failures + 1)); tail -n 5 "$output.log" "$output"; }
    return $status
}

if [ -n "${EDGE_GPU_WHEELS:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$EDGE_GPU_WHEELS"/*.whl || exit 1
fi
export PYTHONPATH="$SITE:${EDGE_GPU_PYTHONPATH:-}:$PWD"
libs=$("$PYTHON" - <<'EOF'
import site, sys
from pathlib import Path
roots = [Path(p) for p in sys.path if p] + [Path(p) for p in site.getsitepackages()]
wanted = ("libcublas.so.*", "libcudart.so.*", "libcurand.so.*", "libcufft.so.*", "libcudnn.so.*", "libnvinfer.so.*")
bases = {base for root in roots for base in (root / "nvidia", root / "tensorrt_libs") if base.is_dir()}
dirs = {str(f.parent) for base in bases for pattern in wanted for f in base.rglob(pattern)}
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH="$libs${libs:+${LD_LIBRARY_PATH:+:}}${LD_LIBRARY_PATH:-}"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
    uname -m
    "$PYTHON" -c 'import onnxruntime as o, numpy, sys; print(sys.version.split()[0], "onnxruntime", o.__version__, o.get_available_providers(), "numpy", numpy.__version__)'
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} 2>&1 | tee "$OUT/machine.txt"

for model in "${MODELS[@]}"; do
    int8="models/$model-int8"
    if [ "$model" = whisper-base ]; then
        sets=(zh); language=zh; latency=(--eval-set longform_zh --set model.language=zh)
    else
        sets=(real_en tts_piper_en); language=auto; latency=(longform_01.wav)
    fi
    step "build $model" "$OUT/build-$model.txt" "$PYTHON" scripts/build_model.py --model "$model" || continue
    printf 'model:\n  path: %s\n' "$PWD/$int8" >"$OUT/config-$model.yaml"
    step "backends $model" "$OUT/backends-$model.json" "$PYTHON" -m edge backends --format json --config "$OUT/config-$model.yaml"
    if [ "$model" = whisper-tiny.en ]; then  # the tests' fixtures are tiny.en's
        step "pytest -m gpu" "$OUT/pytest-$model.txt" "$PYTHON" -m pytest -m gpu -v -rs -p no:cacheprovider tests/test_backends.py
    fi
    step "bench_gpu $model" "$OUT/bench-$model.md" "$PYTHON" scripts/bench_gpu.py --model "$int8" --language "$language" --sets "${sets[@]}" --json "$OUT/bench-$model.json"
    step "latency cuda $model" "$OUT/latency-$model.md" "$PYTHON" scripts/bench_latency.py --model "$PWD/$int8" --no-offline --set inference.backend=cuda --set inference.strict=true "${latency[@]}"
done
echo "gpu_check: $failures step(s) failed"
exit $((failures > 0))
