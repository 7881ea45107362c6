"""The graph contract: what the Whisper recognizer asks of whatever runs its encoder and decoder.

The ONNX graphs built by `scripts/build_model.py` have these tensors
(L layers, H heads, D = d_model / H, F mel frames, T = F / 2 audio positions,
B hypotheses, P cached tokens, N new tokens, V vocabulary size):

encoder.onnx
    in   mel       float32 [1, 80, F]      (F even, at most 3000)
    out  cross_k   float32 [L, 1, H, T, D]
    out  cross_v   float32 [L, 1, H, T, D]
decoder.onnx
    in   tokens    int64   [B, N]
    in   self_k    float32 [L, B, H, P, D] (P may be 0)
    in   self_v    float32 [L, B, H, P, D]
    in   cross_k_<i> float32 [1, H, T, D]  (layer i of the encoder's cross_k; broadcast over B)
    in   cross_v_<i> float32 [1, H, T, D]  (one input per layer: see `cross_input`)
    out  logits    float32 [B, V]          (last position only)
    out  new_self_k float32 [L, B, H, P + N, D]
    out  new_self_v float32 [L, B, H, P + N, D]

Backends with static shapes (RKNN) adapt to this internally, so the
recognizer never knows which hardware it runs on.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.asr.base import Interrupt


def cross_input(kind: str, layer: int) -> str:
    """The decoder's input for one layer's cross keys or values: ("cross_k", 0) -> "cross_k_0".

    One input per layer, not the encoder's stacked [L, ...] tensor: onnxruntime copies a slice
    of a graph input, so a stacked input cost every decoder step a copy of the whole encoder
    output. Per layer, the caller passes views of it and nothing is copied: whisper-base int8,
    30 s of audio, 2 hypotheses, 2 threads, 6.9-7.3 -> 5.1-5.5 ms a step
    (scripts/bench_decoder_step.py; docs/benchmarks.md).
    """
    return f"{kind}_{layer}"


def cross_inputs(layers: int) -> list[str]:
    """All the decoder's cross inputs, keys of every layer then values."""
    return [cross_input(kind, layer) for kind in ("cross_k", "cross_v") for layer in range(layers)]


def cross_feeds(k: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """The decoder's cross inputs from the encoder's stacked [L, 1, H, T, D] outputs, as views."""
    return dict(zip(cross_inputs(k.shape[0]), [*k, *v]))


@dataclass(frozen=True)
class CrossKV:
    """Encoder output: cross-attention keys/values for every decoder layer."""

    k: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class SelfKV:
    """Decoder self-attention cache for a batch of hypotheses."""

    k: np.ndarray
    v: np.ndarray

    @property
    def length(self) -> int:
        return int(self.k.shape[3])

    def select(self, rows: np.ndarray) -> "SelfKV":
        """Reorder/duplicate hypotheses (beam search)."""
        return SelfKV(np.take(self.k, rows, axis=1), np.take(self.v, rows, axis=1))


class WhisperBackend(Protocol):
    """Runs the encoder and one decoder step."""

    name: str

    def encode(self, mel: np.ndarray) -> CrossKV: ...

    def empty_cache(self, batch: int) -> SelfKV: ...

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        """Return logits [B, V] of the last position and the extended cache."""
        ...

    def interruptible(self, interrupt: Interrupt) -> AbstractContextManager[None]:
        """Within the block, this thread's `encode`/`decode` raise `Interrupted` once `interrupt` is set."""
        ...
