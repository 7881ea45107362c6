"""systemd notifications: READY=1, STATUS=, STOPPING=1 and two gated watchdogs.

Outside systemd (NOTIFY_SOCKET unset) every call is a cheap no-op returning False.
A notification must never crash the daemon: if the socket vanished (systemd
restarted, test harness gone) the error is logged once and the call returns False.

The watchdog is gated on progress, not on liveness: `ProgressWatchdog` only pings
when the pipeline called `beat()` since the previous ping, so a wedged pipeline
(stuck accelerator call, dead capture thread) stops the pings and systemd
restarts the service after WatchdogSec. `StallWatchdog` serves services that may
rightly do nothing for hours (the MQTT bridge in a quiet room): it pings unless some
thread has been inside one piece of work for half the interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from systemd import daemon

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; every method returns whether systemd got it."""

    def __init__(self) -> None:
        self._warned = False

    def ready(self) -> bool:
        return self._send("READY=1")

    def status(self, text: str) -> bool:
        """One-line status shown by `systemctl status` (newlines would end the message)."""
        return self._send("STATUS=" + " ".join(text.splitlines()))

    def reloading(self) -> bool:
        """Before re-reading config on SIGHUP; call ready() when done."""
        return self._send("RELOADING=1")

    def stopping(self) -> bool:
        return self._send("STOPPING=1")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """The start (or stop) may take `seconds` more from now (systemd 236+)."""
        return self._send(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")

    def _send(self, state: str) -> bool:
        try:
            return bool(daemon.notify(state))
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notification failed (%s); continuing without it", exc)
                self._warned = True
            return False


def watchdog_interval_s() -> float | None:
    """WatchdogSec in seconds when systemd expects pings from this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


class _Pinger:
    """A thread that asks `_problem()` every half watchdog interval and pings while it finds none.

    With `interval_s` None (no watchdog configured) start() does nothing.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None) -> None:
        self._notifier = notifier
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval_s is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        period = self._interval_s / 2
        failing = False
        while not self._stop.wait(period):
            problem = self._problem(period)
            if problem is None:
                self._notifier.watchdog()
            elif not failing:
                log.warning("%s: withholding watchdog pings", problem)
            failing = problem is not None

    def _problem(self, period: float) -> str | None:
        """Why not to ping now (logged once per spell), or None."""
        raise NotImplementedError


class ProgressWatchdog(_Pinger):
    """Pings only after pipeline progress: `beat()` since the previous ping.

    `beat()` is a single attribute store, cheap enough for every audio block.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None, progress: str = "pipeline progress") -> None:
        super().__init__(notifier, interval_s)
        self._progress = False
        self._progress_name = progress  # what a beat stands for, in the log line when beats stop

    def beat(self) -> None:
        self._progress = True

    def _problem(self, period: float) -> str | None:
        progressed, self._progress = self._progress, False
        return None if progressed else f"no {self._progress_name} for {period:.1f} s"


class StallWatchdog(_Pinger):
    """Pings unless a thread is stuck in its work, for services that may rightly idle for hours.

    Threads wrap each piece of work (an event handled, a network-loop turn) in `working(name)`;
    waiting for input between pieces is not work, so an idle service keeps pinging. A piece
    that has run for half the interval (a hung disk write, a deadlock) withholds the pings and
    systemd restarts the service after WatchdogSec.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None) -> None:
        super().__init__(notifier, interval_s)
        self._since: dict[str, float] = {}  # thread name -> when its current piece of work began

    @contextmanager
    def working(self, name: str) -> Iterator[None]:
        """One piece of work by thread `name` (names are per thread: not re-entrant)."""
        self._since[name] = time.monotonic()
        try:
            yield
        finally:
            self._since.pop(name, None)

    def stalled(self, limit_s: float) -> list[tuple[str, float]]:
        """(name, seconds) of each piece of work that has run for `limit_s` or longer."""
        now = time.monotonic()
        return [(name, now - since) for name, since in list(self._since.items()) if now - since >= limit_s]

    def _problem(self, period: float) -> str | None:
        stalled = self.stalled(period)
        if not stalled:
            return None
        return "stuck in one piece of work: " + ", ".join(f"{name} for {seconds:.1f} s" for name, seconds in stalled)


EXTENSION_S = 60.0  # each EXTEND_TIMEOUT_USEC grants this much from the moment it is sent
EXTENSION_EVERY_S = 20.0


@contextmanager
def extended_start(notifier: Notifier, status: str, limit_s: float) -> Iterator[None]:
    """While the block runs, keep systemd's start timeout EXTENSION_S ahead, for at most `limit_s`, with
    `status` in `systemctl status`. A first TensorRT engine build (minutes on a Jetson) ran past
    TimeoutStartSec=300s, was killed, and began again at every restart."""
    if not notifier.status(status):  # not under systemd: nothing to extend
        yield
        return
    done = threading.Event()

    def extend() -> None:
        until = time.monotonic() + limit_s
        while time.monotonic() < until and notifier.extend_timeout(EXTENSION_S):
            if done.wait(EXTENSION_EVERY_S):
                return

    thread = threading.Thread(target=extend, name="sd-start-extension", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
