"""The SPSC ring: order, wrap-around, exact overrun accounting, newest data kept."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.audio.ringbuffer import RingBuffer


def ramp(start: int, count: int, channels: int = 1) -> np.ndarray:
    """Frames whose value is their global frame number (exact in float32 below 2**24)."""
    column = np.arange(start, start + count, dtype=np.float32)[:, None]
    return np.repeat(column, channels, axis=1)


def test_round_trip_with_wrap_around() -> None:
    ring = RingBuffer(10, 2)
    got = []
    for start in range(0, 60, 7):
        ring.write(ramp(start, 7, 2))
        got.append(ring.read())
    out = np.concatenate(got)
    np.testing.assert_array_equal(out, ramp(0, 63, 2))
    assert ring.dropped == 0 and ring.overruns == 0


def test_read_limits_to_max_frames_and_keeps_the_rest() -> None:
    ring = RingBuffer(16, 1)
    ring.write(ramp(0, 12))
    np.testing.assert_array_equal(ring.read(5), ramp(0, 5))
    assert ring.available() == 7
    np.testing.assert_array_equal(ring.read(), ramp(5, 7))
    assert ring.read().shape == (0, 1)


def test_overrun_drops_oldest_counts_exactly_and_keeps_newest() -> None:
    ring = RingBuffer(100, 1)
    for start in range(0, 250, 30):  # 270 frames, never read
        ring.write(ramp(start, 30))
    out = ring.read()
    np.testing.assert_array_equal(out, ramp(170, 100))
    assert ring.dropped == 170
    assert ring.overruns == 1
    ring.write(ramp(270, 5))
    np.testing.assert_array_equal(ring.read(), ramp(270, 5))
    assert ring.dropped == 170


class _LappedWhileCopying(RingBuffer):
    """The producer writes `burst` frames in the middle of the consumer's copy."""

    burst = 0

    def _copy(self, start_frame: int, count: int) -> np.ndarray:
        out = super()._copy(start_frame, count)
        if self.burst:
            self.write(ramp(self.frames_written, self.burst))
            self.burst = 0
        return out


def test_a_read_lapped_before_and_during_its_copy_is_one_overrun() -> None:
    ring = _LappedWhileCopying(10, 1)
    ring.write(ramp(0, 25))  # 15 frames lost before the read
    ring.burst = 4  # ...and the oldest 4 of the 10 it copies are overwritten during it
    np.testing.assert_array_equal(ring.read(), ramp(19, 6))
    assert (ring.dropped, ring.overruns) == (19, 1)  # counted two overruns before
    np.testing.assert_array_equal(ring.read(), ramp(25, 4))
    assert (ring.dropped, ring.overruns) == (19, 1)


def test_write_larger_than_capacity_keeps_its_tail() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 3))
    ring.write(ramp(3, 20))
    np.testing.assert_array_equal(ring.read(), ramp(15, 8))
    assert ring.dropped == 15
    assert ring.frames_written == 23


def test_fast_producer_thread_never_yields_corrupt_or_missing_frames() -> None:
    """Producer on its own thread outruns a slow consumer: every frame is either
    returned intact and in order or counted as dropped, never both, never lost."""
    ring = RingBuffer(64, 2)
    total = 200_000
    chunk = 16

    def produce() -> None:
        for start in range(0, total, chunk):
            ring.write(ramp(start, chunk, 2))

    producer = threading.Thread(target=produce)
    producer.start()
    expected = 0
    while producer.is_alive() or ring.available():
        dropped_before = ring.dropped
        out = ring.read(48)
        expected += ring.dropped - dropped_before
        np.testing.assert_array_equal(out, ramp(expected, out.shape[0], 2))
        expected += out.shape[0]
        time.sleep(0.0005)
    producer.join()
    assert expected == total
    assert ring.dropped > 0 and ring.overruns > 0


@pytest.mark.parametrize("capacity, channels", [(0, 1), (10, 0)])
def test_rejects_empty_shape(capacity: int, channels: int) -> None:
    with pytest.raises(ValueError, match="capacity >= 1 and channels >= 1"):
        RingBuffer(capacity, channels)
