"""Keeping a connection: re-made with backoff, and log lines that do not repeat themselves.

Both of the bridge's connections (the daemon's socket, the broker) use it, so a
broker that is down for an hour costs a few log lines, not one per attempt. Each
connection's thread also marks its pieces of work (`Working`), which the service's
watchdog times: waiting for the peer is not work, a turn that never ends is a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from edge.backoff import Backoff

# A connection that lasted this long was a working one: the next failure retries quickly again. One that
# ends sooner keeps the backoff growing: two bridges sharing a client id take the broker session from
# each other at once, and with the backoff reset at every connect they reconnected every second for ever.
STABLE_S = 60.0
BRIEF_TO_SAY = 3  # connections in a row ending within STABLE_S before a warning says so
FIRST_RETRY_S, MAX_RETRY_S = 1.0, 30.0

# `working(thread_name)`: a context around one piece of a thread's work (sdnotify.StallWatchdog.working)
Working = Callable[[str], AbstractContextManager[object]]


def unwatched(name: str) -> AbstractContextManager[object]:
    """`Working` where no watchdog times the work (tests, a bridge run outside systemd)."""
    return nullcontext()


class Reconnecting:
    """Runs one connection at a time until `stop`; why each ended is logged once per new reason."""

    def __init__(self, log: logging.Logger, where: str, brief_hint: str = "", working: Working = unwatched,
                 thread: str = "") -> None:
        self._log = log
        self._where = where
        self._working, self._thread = working, thread  # `on_down` is work of this thread, for the watchdog
        self._brief_hint = brief_hint  # a likely cause of connections that end as soon as they are made
        self._backoff = Backoff(FIRST_RETRY_S, MAX_RETRY_S, jitter=True)
        self._last: str | None = None
        self._up_since: float | None = None
        self._brief = 0  # connections in a row that ended within STABLE_S

    def run(self, stop: threading.Event, attempt: Callable[[threading.Event], str],
            on_down: Callable[[str], None]) -> None:
        """`attempt` connects and serves, returning why it ended; then wait and try again."""
        while not stop.is_set():
            self._up_since = None
            reason = attempt(stop)
            if stop.is_set():
                return
            self._settle()
            level = logging.WARNING if reason != self._last else logging.DEBUG
            self._log.log(level, "%s: %s; retrying", self._where, reason)
            self._last = reason
            with self._working(self._thread):
                on_down(reason)
            stop.wait(self._backoff.next())

    def connected(self, message: str) -> None:
        """A connection that works: logged at info, unless connections keep ending as soon as they are made."""
        self._up_since = time.monotonic()
        self._log.log(logging.INFO if self._brief < BRIEF_TO_SAY else logging.DEBUG, "%s", message)

    def _settle(self) -> None:
        """After a connection ended: a lasting one resets the backoff, a brief one is counted."""
        if self._up_since is None:
            return
        if time.monotonic() - self._up_since >= STABLE_S:
            self._backoff.reset()
            self._last = None
            self._brief = 0
            return
        self._brief += 1
        if self._brief == BRIEF_TO_SAY:
            self._log.warning("%s: %d connections in a row ended within %.0f s of being made; backing off up to "
                              "%.0f s%s", self._where, self._brief, STABLE_S, self._backoff.cap, self._brief_hint)
