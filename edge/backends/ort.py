"""onnxruntime backend: CPU, and CUDA / TensorRT where the build has them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edge.backends.base import CrossKV, SelfKV

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


class OrtWhisperBackend:
    """Whisper encoder + decoder as two onnxruntime sessions."""

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str = "cpu",
        providers: Sequence[ProviderSpec] = (CPU,),
        threads: int = 0,
        decoder_providers: Sequence[ProviderSpec] | None = None,
    ) -> None:
        self.name = name
        self.model_dir = Path(model_dir)
        dims = json.loads((self.model_dir / "manifest.json").read_text())["dims"]
        self._layers = int(dims["n_text_layer"])
        self._heads = int(dims["n_text_head"])
        self._head_dim = int(dims["n_text_state"]) // self._heads
        options = session_options(threads)
        self.encoder = ort.InferenceSession(
            str(self.model_dir / "encoder.onnx"), options, providers=list(providers)
        )
        self.decoder = ort.InferenceSession(
            str(self.model_dir / "decoder.onnx"), options, providers=list(decoder_providers or providers)
        )

    @property
    def active_providers(self) -> list[str]:
        """What really runs: onnxruntime silently drops providers it lacks."""
        return self.encoder.get_providers()

    def runs_on(self, provider: str) -> bool:
        """True when both sessions really got `provider` (not a silent CPU fallback)."""
        return provider in self.encoder.get_providers() and provider in self.decoder.get_providers()

    def encode(self, mel: np.ndarray) -> CrossKV:
        k, v = self.encoder.run(None, {"mel": mel[None].astype(np.float32, copy=False)})
        return CrossKV(k, v)

    def empty_cache(self, batch: int) -> SelfKV:
        shape = (self._layers, batch, self._heads, 0, self._head_dim)
        return SelfKV(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        logits, k, v = self.decoder.run(
            None,
            {
                "tokens": tokens.astype(np.int64, copy=False),
                "self_k": cache.k,
                "self_v": cache.v,
                "cross_k": cross.k,
                "cross_v": cross.v,
            },
        )
        return logits, SelfKV(k, v)


MAX_BEAM = 10  # stream.final_beam's upper bound


def tensorrt_profiles(dims: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """(encoder, decoder) shape ranges: mel up to 30 s, cache up to n_text_ctx, up to MAX_BEAM hypotheses."""
    layers, heads = dims["n_text_layer"], dims["n_text_head"]
    head_dim, ctx, audio = dims["n_text_state"] // heads, dims["n_text_ctx"], dims["n_audio_ctx"]
    mels = dims["n_mels"]
    encoder = {"mel": ([1, mels, 2], [1, mels, audio], [1, mels, 2 * audio])}
    decoder = {
        "tokens": ([1, 1], [5, 1], [MAX_BEAM, ctx]),
        "self_k": ([layers, 1, heads, 0, head_dim], [layers, 5, heads, 64, head_dim], [layers, MAX_BEAM, heads, ctx, head_dim]),
        "cross_k": ([layers, 1, heads, 1, head_dim], [layers, 1, heads, audio // 2, head_dim], [layers, 1, heads, audio, head_dim]),
    }
    decoder["self_v"], decoder["cross_v"] = decoder["self_k"], decoder["cross_k"]
    return tensorrt_profile(encoder), tensorrt_profile(decoder)
