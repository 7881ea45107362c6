"""Rockchip NPU backend: static-shape RKNN models adapted to the dynamic contract.

The NPU only runs graphs with shapes fixed at conversion time
(scripts/rknn_export.py + scripts/convert_rknn.py), so this module does the
adaptation on the host:

- encoder: the mel is padded with silence (its floor value) to the smallest
  length bucket that fits; the cross K/V cover the whole bucket.
- decoder: one token per NPU call over a fixed cache of S slots; the host
  keeps the cache, builds the additive mask (slots in use + the new token)
  and the explicit position, and writes back the new token's key/value.
  Hypotheses are padded (or split) to the exported batch size (1 by default:
  rknn-toolkit2 2.3.2 mixes up the rows of a batched decoder).

The NPU runtime itself (RKNNLite, the converted models' manifest) is
edge/accel/rknn.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.accel.rknn import ModelOpener, StaticModel, read_manifest, rknnlite_opener
from edge.asr.base import Interrupt
from edge.asr.whisper.features import FRAMES_PER_SECOND, MIN_WINDOW_SECONDS, N_MELS
from edge.asr.whisper.graph import CrossKV, SelfKV
from edge.errors import BackendError
from edge.manifest import read


class RknnWhisperBackend:
    """WhisperBackend over the static encoder buckets and per-bucket decoders."""

    def __init__(self, rknn_dir: Path, model_dir: Path, *, opener: ModelOpener | None = None,
                 core_mask: str = "auto", name: str = "rknn") -> None:
        self.name = name
        self.model_dir = Path(model_dir)
        self.rknn_dir = Path(rknn_dir)
        manifest = read_manifest(self.rknn_dir)
        dims = manifest["dims"]
        _check_same_model(dims, self.rknn_dir, self.model_dir)
        self._layers, self._heads = int(dims["n_text_layer"]), int(dims["n_text_head"])
        self._head_dim = int(dims["n_text_state"]) // self._heads
        self._buckets = sorted(int(f) for f in manifest["encoder_frames"])
        self._batch, self._slots = int(manifest["batch"]), int(manifest["cache_slots"])
        self._mask_value = float(manifest["mask_value"])
        self._open = opener or rknnlite_opener(self.rknn_dir, core_mask)
        self._models: dict[str, StaticModel] = {}
        self._interruptible = threading.local()  # `interrupt` inside `interruptible`, for its thread only

    def warm_up(self) -> None:
        """Open and run what the shortest utterance uses (every window is at least MIN_WINDOW_SECONDS: that
        bucket's encoder and decoder) at start-up, so that a .rknn RKNNLite cannot load fails selection
        rather than the first utterance. A failure releases what it opened: selection moves on to CPU, and
        the encoder would have kept its NPU memory for the life of the process."""
        try:
            cross = self.encode(np.zeros((N_MELS, int(MIN_WINDOW_SECONDS * FRAMES_PER_SECOND)), np.float32))
            self.decode(np.zeros((1, 1), np.int64), self.empty_cache(1), cross)
        except BaseException:
            self.close()
            raise

    def _model(self, stem: str) -> StaticModel:
        """Open lazily: a short-utterance box never loads the 30 s bucket."""
        if stem not in self._models:
            self._models[stem] = self._open(stem)
        return self._models[stem]

    @contextmanager
    def interruptible(self, interrupt: Interrupt) -> Iterator[None]:
        """RKNNLite cannot stop an inference under way: the flag is checked before each NPU call
        (one call per decoder token)."""
        self._interruptible.interrupt = interrupt
        try:
            yield
        finally:
            self._interruptible.interrupt = None

    def _infer(self, model: StaticModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
        interrupt = getattr(self._interruptible, "interrupt", None)
        if interrupt is not None:
            interrupt.check()
        return model.inference(inputs=inputs)

    def bucket(self, frames: int) -> int:
        for size in self._buckets:
            if frames <= size:
                return size
        raise BackendError(f"mel of {frames} frames exceeds the largest RKNN bucket ({self._buckets[-1]})")

    def encode(self, mel: np.ndarray) -> CrossKV:
        frames = self.bucket(mel.shape[1])
        padded = np.full((1, mel.shape[0], frames), mel.min(), np.float32)
        padded[0, :, : mel.shape[1]] = mel
        k, v = self._infer(self._model(f"encoder_{frames}"), [padded])
        shape = (self._layers, 1, self._heads, frames // 2, self._head_dim)
        return CrossKV(np.reshape(k, shape), np.reshape(v, shape))

    def empty_cache(self, batch: int) -> SelfKV:
        shape = (self._layers, batch, self._heads, 0, self._head_dim)
        return SelfKV(np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        rows = tokens.shape[0]
        if cache.length + tokens.shape[1] > self._slots:
            raise BackendError(f"decoder cache full ({self._slots} slots on the NPU)")
        frames = 2 * cross.k.shape[3]
        if frames not in self._buckets:
            raise BackendError(f"cross K/V of {frames} frames did not come from an RKNN encoder bucket {self._buckets}")
        decoder = self._model(f"decoder_{frames}")
        flat_cross = [np.ascontiguousarray(c.reshape(self._layers * self._heads, -1, self._head_dim)) for c in (cross.k, cross.v)]
        parts = [self._decode_rows(decoder, tokens[i : i + self._batch], cache.k[:, i : i + self._batch],
                                   cache.v[:, i : i + self._batch], flat_cross) for i in range(0, rows, self._batch)]
        logits = np.concatenate([p[0] for p in parts])
        return logits, SelfKV(np.concatenate([p[1] for p in parts], axis=1), np.concatenate([p[2] for p in parts], axis=1))

    def _decode_rows(self, decoder: StaticModel, tokens: np.ndarray, past_k: np.ndarray, past_v: np.ndarray,
                     cross: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At most `batch` hypotheses, one NPU call per new token."""
        rows, past = tokens.shape[0], past_k.shape[3]
        shape = (self._layers, self._batch, self._heads, self._slots, self._head_dim)
        k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        k[:, :rows, :, :past], v[:, :rows, :, :past] = past_k, past_v
        step_tokens = np.zeros((self._batch, 1), np.int64)
        flat = (-1, self._slots, self._head_dim)
        for i in range(tokens.shape[1]):
            position = past + i
            step_tokens[:rows, 0] = tokens[:, i]
            logits, new_k, new_v = self._infer(decoder, [
                step_tokens, np.array([position], np.int64), k.reshape(flat), v.reshape(flat),
                self.mask(position), *cross,
            ])
            k[:, :, :, position] = np.reshape(new_k, (self._layers, self._batch, self._heads, self._head_dim))
            v[:, :, :, position] = np.reshape(new_v, (self._layers, self._batch, self._heads, self._head_dim))
        end = past + tokens.shape[1]
        return np.reshape(logits, (self._batch, -1))[:rows], k[:, :rows, :, :end], v[:, :rows, :, :end]

    def mask(self, position: int) -> np.ndarray:
        """Additive mask over [S cache slots, new token]: slots before `position` and the new token are visible."""
        mask = np.full((1, 1, self._slots + 1), self._mask_value, np.float32)
        mask[..., :position] = 0.0
        mask[..., self._slots] = 0.0
        return mask

    def close(self) -> None:
        for model in self._models.values():
            model.release()
        self._models.clear()


def _check_same_model(dims: dict, rknn_dir: Path, model_dir: Path) -> None:
    """The .rknn files and model.path (whose tokenizer reads their logits) must be one model: the defaults
    pair whisper-tiny.en-rknn with whatever model.path says, and base's 51865 tokens against tiny.en's
    51864 logits failed at the first decode."""
    try:
        expected = read(model_dir)["dims"]
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {Path(model_dir) / 'manifest.json'}: {exc}") from None
    other = [key for key in expected if dims.get(key) != expected[key]]
    if other:
        raise BackendError(f"{rknn_dir} was converted from another model than {model_dir} ({', '.join(other)} differ): "
                           "convert model.path with scripts/convert_rknn.py and point inference.rknn_model_dir at it")
