"""onnxruntime backend: CPU, and CUDA / TensorRT where the build has them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edge.backends.base import CrossKV, SelfKV

ProviderSpec = str | tuple[str, dict]


def session_options(threads: int) -> ort.SessionOptions:
    """Sequential execution: on a 2-core box inter-op threads only add contention."""
    options = ort.SessionOptions()
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
        providers: Sequence[ProviderSpec] = ("CPUExecutionProvider",),
        threads: int = 0,
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
            str(self.model_dir / "decoder.onnx"), options, providers=list(providers)
        )

    @property
    def active_providers(self) -> list[str]:
        """What really runs: onnxruntime silently drops providers it lacks."""
        return self.encoder.get_providers()

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
