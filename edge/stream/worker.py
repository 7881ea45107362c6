"""The recognition thread: finals first and in order, then only the newest partial.

A final queued while a partial decodes interrupts that partial (unless the session says the
caption needs it: `Job.preempts`), and drops the one waiting: their text would be stale once
the final is out, and the final would otherwise wait for the running one (base on 2 cores:
61-202 ms, 5 of 13 finals, docs/benchmarks.md).

When recognition is slower than the audio, `OverloadPolicy` says what is given up,
in order: partials, then the finals' beam search, then the oldest finals' decode
(docs/operations.md#overload).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.asr.base import Interrupt
from edge.audio.base import SAMPLE_RATE

log = logging.getLogger(__name__)

OVERLOAD_LEVELS = ("none", "partials_suspended", "greedy_finals", "dropping_finals")


@dataclass(frozen=True)
class OverloadPolicy:
    """The lags (seconds) at which recognition gives something up to catch up with the audio.

    Lag is the stream position minus the end of the oldest final not yet decoded.
    """

    # Well above the slowest normal final: base's p95 end of speech -> final on Mandarin long-form is
    # 458-477 ms on 2 cores (README, docs/benchmarks.md, 2026-12-07; 1.6 s before 2026-12-06).
    partials_off_s: float = 3.0
    # A final this late is no use as a live caption any more: decode it in one greedy pass, like a partial.
    greedy_s: float = 10.0
    # Queued finals whose speech ended longer ago than this are dropped when a new final is queued:
    # it bounds the lag and the queued audio (at most this plus one utterance: 88 s of float32, 5.4 MiB).
    max_lag_s: float = 60.0

    @classmethod
    def patient(cls) -> "OverloadPolicy":
        """For a source that can wait (a file at fast pace): its reader runs ahead through silence while
        one long final decodes, so lag in stream time is not lateness; nothing is degraded or dropped
        (the reader's throttle bounds the queue), only partials pause."""
        return cls(greedy_s=math.inf, max_lag_s=math.inf)

    def level(self, lag_s: float) -> str:
        """The most drastic step this lag calls for, one of OVERLOAD_LEVELS."""
        steps = (self.partials_off_s, self.greedy_s, self.max_lag_s)
        return OVERLOAD_LEVELS[sum(lag_s >= step for step in steps)]


@dataclass(frozen=True)
class Backlog:
    """The finals waiting for, or in, the recognizer."""

    lag_s: float  # 0 when none
    audio_s: float  # their audio, queued and running


@dataclass
class Job:
    """One decode request; `cancelled`/`confirmed`/`text` are guarded by the session lock."""

    kind: Literal["partial", "final"]
    utterance_id: int
    start: int
    end: int
    audio: np.ndarray
    options: object | None = None  # the recognizer family's options (beam width, language)
    interrupt: Interrupt | None = None  # set when nobody wants the result: a partial a final overtook, a final cancelled
    preempts: bool = True  # a final: interrupts the partial being decoded (not while the caption is stale)
    cancelled: bool = False
    confirmed: bool = False
    text: str | None = None
    tokens: tuple[int, ...] = ()
    language: str = ""
    decode_s: float = 0.0
    fallback_text: str = ""  # the newest partial, published instead if shutdown cannot wait for the decode
    dropped: bool = False  # never decoded (overload): `text` is the fallback
    failure: str = ""  # why its decode failed: told (recognition_failed) just before its final, if it is published
    breaks: int = 0  # breaks in the audio before its speech: the previous text is no prompt across one


class Worker:
    """The recognition thread: finals first and in order, then the newest partial."""

    def __init__(self, run_job: Callable[[Job], None]) -> None:
        self._run_job = run_job
        self._finals: deque[Job] = deque()
        self._partial: Job | None = None
        self._running: Job | None = None
        self._busy_since: float | None = None
        self._stopping = False
        self._cond = threading.Condition()
        self.partials_skipped = 0
        self._thread = threading.Thread(target=self._loop, name="recognizer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; True if a final displaced a partial (the one waiting, or, if it preempts, the one running)."""
        with self._cond:
            waiting = self._partial is not None
            self.partials_skipped += waiting  # superseded, or stale once a final is queued
            if job.kind == "partial":
                self._partial = job
                self._cond.notify()
                return False
            self._finals.append(job)
            self._partial = None
            interrupted = job.preempts and self._interrupt_partial()
            self._cond.notify()
            return waiting or interrupted

    def interrupt_partial(self) -> None:
        """Stop the partial being decoded, if one is."""
        with self._cond:
            self._interrupt_partial()

    def _interrupt_partial(self) -> bool:
        """True if a running partial was told to stop (called with the lock held)."""
        running = self._running
        if running is None or running.kind != "partial" or running.interrupt is None or running.interrupt.is_set:
            return False
        running.interrupt.set()
        return True

    def drop_partial(self) -> int:
        """Empty the partial slot; 1 if a partial was waiting there, else 0."""
        with self._cond:
            dropped, self._partial = self._partial is not None, None
            return int(dropped)

    @property
    def partial_pending(self) -> bool:
        return self._partial is not None

    @property
    def pending_finals(self) -> int:
        return len(self._finals)

    def backlog(self, now: int) -> Backlog:
        """How far the finals lag stream position `now` (samples), and how much audio they hold."""
        with self._cond:
            jobs = (self._running, *self._finals)
        finals = [job for job in jobs if job and job.kind == "final" and not job.cancelled]
        if not finals:
            return Backlog(0.0, 0.0)
        audio = sum(job.audio.size for job in finals)
        return Backlog(max(now - finals[0].end, 0) / SAMPLE_RATE, audio / SAMPLE_RATE)

    def shed(self, before: float) -> list[Job]:
        """Take out of the queue, and return, the finals whose audio ended before `before` (not the running one);
        cancelled ones are discarded too, so that their audio is not held until their turn."""
        with self._cond:
            kept = [job for job in self._finals if not job.cancelled and job.end >= before]
            shed = [job for job in self._finals if not job.cancelled and job.end < before]
            self._finals = deque(kept)
            self._cond.notify_all()
            return shed

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no final is queued or running (pending partials do not count)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._finals and self._busy_since is None, timeout)

    def busy_s(self) -> float:
        """How long the current decode has been running (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _next(self) -> Job | None:
        with self._cond:
            self._busy_since, self._running = None, None
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._finals or self._partial or self._stopping)
            if self._stopping:
                return None
            if self._finals:
                job = self._finals.popleft()
            else:
                job, self._partial = self._partial, None
            self._busy_since, self._running = time.monotonic(), job
            return job

    def _loop(self) -> None:
        """An error after a decode (publishing, metrics) is logged and the next job runs: the thread
        dying left every later final unpublished until the watchdog saw no progress."""
        while (job := self._next()) is not None:
            if not job.cancelled:
                try:
                    self._run_job(job)
                except Exception:  # noqa: BLE001 - the recognizer thread outlives one job's failure
                    log.exception("recognizer: handling %s of utterance %d failed", job.kind, job.utterance_id)
