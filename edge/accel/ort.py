"""onnxruntime for any model: provider chains (CPU, CUDA, TensorRT) and session options."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnxruntime as ort

from edge.errors import AccessError

ProviderSpec = str | tuple[str, dict]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
REQUIRED_PROVIDER = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}


def tensorrt_options(cache_dir: Path, fp16: bool) -> dict[str, object]:
    """Engines are cached on disk: building them takes minutes on a Jetson, loading them seconds."""
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": fp16,
    }


def engine_cache(cache_dir: Path) -> Path:
    """The engine cache made and proved writable at start: TensorRT builds its engines at the first
    call, and engines it cannot save are built again, for minutes, after every restart."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise AccessError(
            f"inference.tensorrt_cache_dir {cache_dir}: cannot write there ({exc.strerror or exc}); give it to the "
            "service user, keep it under /var/cache/edge-asr (the unit's CacheDirectory=), or add it to "
            "ReadWritePaths= in a drop-in"
        ) from None
    return cache_dir


def tensorrt_profile(shapes: dict[str, tuple[list[int], list[int], list[int]]]) -> dict[str, str]:
    """Explicit min/opt/max shapes: without them TensorRT rebuilds an engine for every new decoder length."""
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {
        key: ",".join(f"{name}:{'x'.join(map(str, dims[i]))}" for name, dims in shapes.items())
        for i, key in enumerate(keys)
    }


def provider_chain(kind: str, *, tensorrt_cache_dir: Path | None = None, tensorrt_fp16: bool = True,
                   profile: dict[str, str] | None = None) -> list[ProviderSpec]:
    """Providers in preference order; onnxruntime gives a node the first one that supports it.

    TensorRT falls back to CUDA for nodes it cannot run, and both to CPU.
    """
    if kind == "cpu":
        return [CPU]
    if kind == "cuda":
        return [CUDA, CPU]
    if kind == "tensorrt":
        if tensorrt_cache_dir is None:
            raise ValueError("the TensorRT provider needs an engine cache directory")
        return [(TENSORRT, tensorrt_options(tensorrt_cache_dir, tensorrt_fp16) | (profile or {})), CUDA, CPU]
    raise ValueError(f"no onnxruntime provider chain for backend {kind!r}")


def session_options(threads: int) -> ort.SessionOptions:
    """Sequential execution: on a 2-core box inter-op threads only add contention.

    The CPU memory arena is off: it keeps the peak of every shape ever seen
    (about 80 MiB more RSS after one long beam search) for no measurable speed-up;
    memory patterns likewise pre-plan for shapes that change at every decoder step.
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(0, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options
