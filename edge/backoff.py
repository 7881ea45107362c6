"""Retry delays that double up to a cap: the microphone's reopen, the socket apps' reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Doubling delays from `first` to `cap`. `jitter` draws each from the upper half of its delay, so
    that a fleet of boxes that lost their broker together does not reconnect in step."""

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self._first = first
        self.cap = cap
        self._jitter = jitter
        self._delay = first

    def next(self) -> float:
        delay = min(self._delay, self.cap)
        self._delay = min(delay * 2, self.cap)
        return random.uniform(delay / 2, delay) if self._jitter else delay

    def reset(self) -> None:
        self._delay = self._first
