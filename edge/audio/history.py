"""The stream's recent samples by absolute position: what an utterance's audio is cut from (the streaming
session, `record-names`), the oldest let go as the endpointer allows."""

from __future__ import annotations

import numpy as np

from edge.audio.base import SAMPLE_RATE


class AudioHistory:
    """The stream's recent samples, addressable by absolute sample position."""

    def __init__(self, capacity_s: float) -> None:
        self._buffer = np.zeros(int(capacity_s * SAMPLE_RATE), dtype=np.float32)
        self._base = 0  # absolute position of _buffer[0]
        self._length = 0

    @property
    def end(self) -> int:
        return self._base + self._length

    def append(self, block: np.ndarray, keep_from: int) -> None:
        """Add samples, discarding those before `keep_from` (or the oldest) when full."""
        if self._length + block.size > self._buffer.size:
            self._discard_before(max(keep_from, self.end + block.size - self._buffer.size))
        self._buffer[self._length : self._length + block.size] = block
        self._length += block.size

    def slice(self, start: int, end: int) -> np.ndarray:
        lo, hi = max(start - self._base, 0), max(min(end - self._base, self._length), 0)
        return self._buffer[lo:hi].copy()

    def _discard_before(self, position: int) -> None:
        drop = min(max(position - self._base, 0), self._length)
        self._buffer[: self._length - drop] = self._buffer[drop : self._length]
        self._base += drop
        self._length -= drop
