"""The Whisper graphs on onnxruntime: CPU, and CUDA / TensorRT where the build has them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from edge.accel.ort import CPU, TENSORRT, ProviderSpec, session_options, tensorrt_profile
from edge.asr.base import Interrupt, Interrupted
from edge.asr.whisper.graph import CrossKV, SelfKV, cross_feeds, cross_inputs
from edge import manifest
from edge.errors import ModelError
from edge.limits import MAX_BEAM


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
        dims = manifest.read(self.model_dir)["dims"]
        self._layers = int(dims["n_text_layer"])
        self._heads = int(dims["n_text_head"])
        self._head_dim = int(dims["n_text_state"]) // self._heads
        options = session_options(threads)
        self._interruptible = threading.local()  # `run_options` inside `interruptible`, for its thread only
        self.encoder = ort.InferenceSession(
            str(self.model_dir / "encoder.onnx"), options, providers=list(providers)
        )
        self.decoder = ort.InferenceSession(
            str(self.model_dir / "decoder.onnx"), options, providers=list(decoder_providers or providers)
        )
        self._check_cross_inputs()
        if TENSORRT not in self.active_providers:  # TensorRT's first run builds its engines: minutes, not for start-up
            self._prove(int(dims["n_mels"]))

    def _check_cross_inputs(self) -> None:
        """A decoder from before manifest format 2 takes the stacked cross_k/cross_v: ask for a
        rebuild in words, not with onnxruntime's missing-input error at the first step."""
        inputs = {item.name for item in self.decoder.get_inputs()}
        missing = [name for name in cross_inputs(self._layers) if name not in inputs]
        if not missing:
            return
        path = self.model_dir / "decoder.onnx"
        if "cross_k" in inputs:
            raise ModelError(f"{path} takes the stacked cross_k/cross_v of an older edge-asr build (manifest format 1): "
                             "rebuild it with scripts/build_model.py")
        raise ModelError(f"{path} lacks the decoder inputs {', '.join(missing)}: rebuild it with scripts/build_model.py")

    def _prove(self, n_mels: int) -> None:
        """Run two mel frames and one decoder step now: an onnxruntime without a kernel the graphs
        need (tiny.en's 8-bit MatMulNBits runs on ARM64 only from onnxruntime 1.23), or a CUDA that
        starts a session but cannot run it (no kernel image for this GPU, cuDNN missing, out of GPU
        memory), fails at load, where `auto` tries the next backend and `strict` stops, not at the
        first utterance."""
        try:
            self.decode(np.zeros((1, 1), np.int64), self.empty_cache(1), self.encode(np.zeros((n_mels, 2), np.float32)))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RuntimeError(f"onnxruntime {ort.__version__} cannot run these graphs: {reason}") from None

    @property
    def active_providers(self) -> list[str]:
        """What really runs: onnxruntime silently drops providers it lacks."""
        return self.encoder.get_providers()

    def runs_on(self, provider: str) -> bool:
        """True when both sessions really got `provider` (not a silent CPU fallback)."""
        return provider in self.encoder.get_providers() and provider in self.decoder.get_providers()

    @contextmanager
    def interruptible(self, interrupt: Interrupt) -> Iterator[None]:
        """onnxruntime stops a graph between two nodes once its RunOptions' `terminate` is set: a base
        encoder run (62 ms on CPU) stopped 1.4 ms after the flag, and every later run with them fails at
        once. A TensorRT engine is one node, so there it stops at the next run (not run on a GPU)."""
        run_options = ort.RunOptions()
        with interrupt.on_set(lambda: setattr(run_options, "terminate", True)):
            self._interruptible.run_options = run_options
            try:
                yield
            finally:
                self._interruptible.run_options = None

    def _run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        run_options = getattr(self._interruptible, "run_options", None)
        try:
            return session.run(None, feeds, run_options)
        except Exception as exc:  # onnxruntime raises its own untyped errors (RuntimeException, Fail, ...)
            if run_options is not None and run_options.terminate:
                raise Interrupted("the decode was interrupted") from None
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RuntimeError(f"onnxruntime: {reason}") from exc  # what callers catch: `transcribe` skipped none

    def encode(self, mel: np.ndarray) -> CrossKV:
        k, v = self._run(self.encoder, {"mel": mel[None].astype(np.float32, copy=False)})
        return CrossKV(k, v)

    def empty_cache(self, batch: int) -> SelfKV:
        shape = (self._layers, batch, self._heads, 0, self._head_dim)
        return SelfKV(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        logits, k, v = self._run(
            self.decoder,
            {
                "tokens": tokens.astype(np.int64, copy=False),
                "self_k": cache.k,
                "self_v": cache.v,
                **cross_feeds(cross.k, cross.v),
            },
        )
        return logits, SelfKV(k, v)


def tensorrt_profiles(dims: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """(encoder, decoder) shape ranges: mel up to 30 s, cache up to n_text_ctx, up to MAX_BEAM hypotheses."""
    layers, heads = dims["n_text_layer"], dims["n_text_head"]
    head_dim, ctx, audio = dims["n_text_state"] // heads, dims["n_text_ctx"], dims["n_audio_ctx"]
    mels = dims["n_mels"]
    encoder = {"mel": ([1, mels, 2], [1, mels, audio], [1, mels, 2 * audio])}
    cross = ([1, heads, 1, head_dim], [1, heads, audio // 2, head_dim], [1, heads, audio, head_dim])
    decoder = {
        "tokens": ([1, 1], [5, 1], [MAX_BEAM, ctx]),
        "self_k": ([layers, 1, heads, 0, head_dim], [layers, 5, heads, 64, head_dim], [layers, MAX_BEAM, heads, ctx, head_dim]),
    }
    decoder["self_v"] = decoder["self_k"]
    decoder.update(dict.fromkeys(cross_inputs(layers), cross))
    return tensorrt_profile(encoder), tensorrt_profile(decoder)
