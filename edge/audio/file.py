"""A file as an audio source.

Paced `realtime` it behaves like a microphone (for end-to-end latency tests);
`fast` feeds as fast as the consumer reads (batch transcription).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.audio.audiofile import load_audio
from edge.audio.base import PACES, SAMPLE_RATE, SourceError, SourceStats


class FileSource:
    """A decoded file delivered in blocks; `realtime` pace follows the wall clock.

    Block n is due at start + (its end sample) / 16 kHz, computed from the
    start time rather than the previous block, so pacing never drifts.
    """

    def __init__(self, path: str | Path, *, block_ms: int = 20, pace: str = "realtime") -> None:
        if pace not in PACES:
            raise SourceError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
        self.path = Path(path)
        self.pace = pace
        self.ended = False
        self.can_wait = pace == "fast"
        self._audio = load_audio(self.path)  # raises AudioFileError with a clear message
        self._block = max(1, round(SAMPLE_RATE * block_ms / 1000))
        self._next = 0  # first sample not yet delivered
        self._started_at: float | None = None
        self._state = "idle"

    def start(self) -> None:
        if self._started_at is not None:
            raise SourceError(f"{self.path}: start() called twice")
        self._started_at = time.monotonic()
        self._state = "running"

    def read(self, timeout: float) -> np.ndarray | None:
        """The next block (the last one may be shorter); None on timeout or once ended."""
        if self._started_at is None:
            raise SourceError(f"{self.path}: read() before start()")
        if self.ended or self._state == "closed":
            return None
        end = min(self._next + self._block, self._audio.shape[0])
        if self.pace == "realtime" and not self._wait_until(self._started_at + end / SAMPLE_RATE, timeout):
            return None
        block, self._next = self._audio[self._next : end], end
        if end == self._audio.shape[0]:
            self.ended = True
            self._state = "ended"
        return block

    @staticmethod
    def _wait_until(due: float, timeout: float) -> bool:
        """Sleep until `due` if that is within `timeout`; else sleep `timeout` and say no."""
        wait = due - time.monotonic()
        if wait > timeout:
            time.sleep(max(timeout, 0.0))
            return False
        if wait > 0:
            time.sleep(wait)
        return True

    @property
    def position_s(self) -> float:
        return self._next / SAMPLE_RATE

    def stats(self) -> SourceStats:
        return SourceStats(f"file:{self.path}", self._state, position_s=self.position_s)

    def close(self) -> None:
        self._state = "closed"
