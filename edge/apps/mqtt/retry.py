"""Keeping a connection: re-made with backoff, and log lines that do not repeat themselves.

Both of the bridge's connections (the daemon's socket, the broker) use it, so a
broker that is down for an hour costs a few log lines, not one per attempt.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable


class Backoff:
    """Doubling delays from `first` to `cap`, jittered so that a fleet does not reconnect in step."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self._first = first
        self._cap = cap
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self._cap)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._delay = self._first


class Reconnecting:
    """Runs one connection at a time until `stop`; why each ended is logged once per new reason."""

    def __init__(self, log: logging.Logger, where: str) -> None:
        self._log = log
        self._where = where
        self._backoff = Backoff()
        self._last: str | None = None

    def run(self, stop: threading.Event, attempt: Callable[[threading.Event], str],
            on_down: Callable[[str], None]) -> None:
        """`attempt` connects and serves, returning why it ended; then wait and try again."""
        while not stop.is_set():
            reason = attempt(stop)
            if stop.is_set():
                return
            level = logging.WARNING if reason != self._last else logging.DEBUG
            self._log.log(level, "%s: %s; retrying", self._where, reason)
            self._last = reason
            on_down(reason)
            stop.wait(self._backoff.next())

    def connected(self, message: str) -> None:
        """After a connection that works: logged at info, and the next failure retries quickly again."""
        self._log.info("%s", message)
        self._backoff.reset()
        self._last = None
