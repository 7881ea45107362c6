"""Preallocated single-producer/single-consumer audio ring.

The producer is the PortAudio callback: it must never block, lock or
allocate audio buffers, so it only copies frames in and then advances the
write counter. The consumer owns the read counter. Both counters are
monotonic frame totals (not wrapped indices), so the consumer can tell
exactly how far the producer lapped it: an overrun drops the OLDEST audio
and the number of dropped frames is exact.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Fixed-size frame ring; `write` from one thread, `read` from one other."""

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError(f"ring buffer needs capacity >= 1 and channels >= 1, got {capacity} x {channels}")
        self.capacity = capacity
        self.channels = channels
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self._claimed = 0  # producer-owned: frames written or being written
        self._written = 0  # producer-owned: frames completely written
        self._read = 0  # consumer-owned: frames ever consumed or dropped
        self.dropped = 0  # consumer-owned: frames lost to overruns
        self.overruns = 0  # consumer-owned: reads that found themselves lapped

    def write(self, frames: np.ndarray) -> None:
        """Producer: copy `frames` (n, channels) in; only the newest `capacity` survive."""
        total = frames.shape[0]
        keep = frames[total - self.capacity :] if total > self.capacity else frames
        start = (self._written + total - keep.shape[0]) % self.capacity
        first = min(keep.shape[0], self.capacity - start)
        self._claimed = self._written + total  # announce before overwriting old frames
        self._buf[start : start + first] = keep[:first]
        self._buf[: keep.shape[0] - first] = keep[first:]
        self._written = self._claimed

    @property
    def frames_written(self) -> int:
        """Frames the producer has ever delivered (progress, also counting dropped ones)."""
        return self._written

    def available(self) -> int:
        """Consumer: frames readable now (at most `capacity`)."""
        return max(0, min(self._written - self._read, self.capacity))

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Consumer: copy out up to `max_frames` of the oldest surviving frames.

        Frames the producer overwrote, before or during the copy, are skipped
        and added to `dropped` rather than returned corrupted; one read counts
        one overrun, however many times it was lapped.
        """
        dropped = self._drop(self._claimed - self.capacity - self._read)
        count = max(self._written - self._read, 0)
        if max_frames is not None:
            count = min(count, max_frames)
        out = self._copy(self._read, count)
        lapped = min(self._claimed - self.capacity - self._read, count)  # overwritten while we copied
        dropped += self._drop(lapped)
        out = out[max(lapped, 0) :]
        self._read += out.shape[0]
        self.overruns += dropped > 0
        return out

    def _drop(self, frames: int) -> int:
        """Skip `frames` lost to the producer (none if not positive); how many were skipped."""
        if frames <= 0:
            return 0
        self.dropped += frames
        self._read += frames
        return frames

    def _copy(self, start_frame: int, count: int) -> np.ndarray:
        start = start_frame % self.capacity
        first = min(count, self.capacity - start)
        return np.concatenate((self._buf[start : start + first], self._buf[: count - first]))
