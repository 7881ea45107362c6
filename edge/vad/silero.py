"""Silero voice activity detection with plain onnxruntime (no torch).

The model is stateful: each 512-sample window at 16 kHz is fed together with
the last 64 samples of the previous window (without that context it silently
answers about 0) and the recurrent `state` is carried forward.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.audio.base import SAMPLE_RATE

WINDOW = 512
CONTEXT = 64
_STATE_SHAPE = (2, 1, 128)


def default_model_path() -> Path:
    """The ONNX file shipped in the `silero-vad` wheel, found without importing it (it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed (pip install --no-deps silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD model missing: {path}")
    return path


class SileroVad:
    """Speech probability per 512-sample window; blocks of any size may be fed."""

    def __init__(self, model_path: Path | None = None) -> None:
        options = ort.SessionOptions()
        # One thread: the VAD runs on the audio-reading thread and must not
        # compete with the recognizer for cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path or default_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget everything: call between unrelated streams."""
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def window_probability(self, window: np.ndarray) -> float:
        """Speech probability of exactly one 512-sample window."""
        frame = np.concatenate((self._context, window.astype(np.float32, copy=False)))[np.newaxis, :]
        output, self._state = self._session.run(None, {"input": frame, "state": self._state, "sr": self._sr})
        self._context = frame[0, -CONTEXT:].copy()
        return float(output[0, 0])

    def feed(self, block: np.ndarray) -> list[float]:
        """Probabilities of every window completed by `block`; the remainder waits for the next block."""
        samples = np.concatenate((self._pending, block)) if self._pending.size else block
        complete = samples.size // WINDOW * WINDOW
        probs = [self.window_probability(samples[i : i + WINDOW]) for i in range(0, complete, WINDOW)]
        self._pending = samples[complete:].astype(np.float32, copy=True)
        return probs
