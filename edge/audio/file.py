"""A file as an audio source.

Paced `realtime` it behaves like a microphone (for end-to-end latency tests);
`fast` feeds as fast as the consumer reads (batch transcription). The file is
decoded a few seconds ahead of what was delivered, never whole, so a 6-hour
file takes no more memory than a 1-minute one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge.audio.audiofile import AudioFileError, AudioReader
from edge.audio.base import PACES, SAMPLE_RATE, SourceError, SourceStats

log = logging.getLogger(__name__)


class FileSource:
    """A file delivered in blocks as it is decoded; `realtime` pace follows the wall clock.

    Block n is due at start + (its end sample) / 16 kHz, computed from the
    start time rather than the previous block, so pacing never drifts.
    A file that turns out damaged part-way (a cut FLAC) ends there: what came
    before it is still recognised, and the reason is logged.
    """

    breaks = 0  # a file plays without a gap

    def __init__(self, path: str | Path, *, block_ms: int = 20, pace: str = "realtime") -> None:
        if pace not in PACES:
            raise SourceError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
        self.path = Path(path)
        self.pace = pace
        self.ended = False
        self.can_wait = pace == "fast"
        self._reader = AudioReader(self.path)  # raises AudioFileError with a clear message
        self._decoded = iter(self._reader)
        self._pending = np.zeros(0, np.float32)  # decoded, not yet delivered
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
        at_end = self._fill()
        size = min(self._block, len(self._pending))
        if self.pace == "realtime" and not self._wait_until(self._started_at + (self._next + size) / SAMPLE_RATE,
                                                            timeout):
            return None
        block, self._pending = self._pending[:size], self._pending[size:]
        self._next += size
        if at_end and not len(self._pending):
            self._end()
        return block

    def _fill(self) -> bool:
        """Decode until more than a block is pending (so the last block is known as last); True at the end."""
        while len(self._pending) <= self._block:
            try:
                decoded = next(self._decoded, None)
            except AudioFileError as exc:
                log.warning("%s; the file source ends there", exc)
                decoded = None
            if decoded is None:
                return True
            self._pending = np.concatenate([self._pending, decoded])
        return False

    def _end(self) -> None:
        self.ended = True
        self._state = "ended"
        self._reader.close()

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
        self._reader.close()
