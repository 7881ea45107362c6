"""The recognition thread: finals first and in order, then only the newest partial."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class Job:
    """One decode request; `cancelled`/`confirmed`/`text` are guarded by the session lock."""

    kind: Literal["partial", "final"]
    utterance_id: int
    start: int
    end: int
    audio: np.ndarray
    options: object | None = None  # the recognizer family's options (beam width, language)
    cancelled: bool = False
    confirmed: bool = False
    text: str | None = None
    tokens: tuple[int, ...] = ()
    language: str = ""
    decode_s: float = 0.0
    fallback_text: str = ""  # the newest partial, published instead if shutdown cannot wait for the decode


class Worker:
    """The recognition thread: finals first and in order, then the newest partial."""

    def __init__(self, run_job: Callable[[Job], None]) -> None:
        self._run_job = run_job
        self._finals: deque[Job] = deque()
        self._partial: Job | None = None
        self._busy_since: float | None = None
        self._stopping = False
        self._cond = threading.Condition()
        self.partials_skipped = 0
        self._thread = threading.Thread(target=self._loop, name="recognizer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if job.kind == "final":
                self._finals.append(job)
            else:
                self.partials_skipped += self._partial is not None
                self._partial = job
            self._cond.notify()

    @property
    def partial_pending(self) -> bool:
        return self._partial is not None

    @property
    def pending_finals(self) -> int:
        return len(self._finals)

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
            self._busy_since = None
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._finals or self._partial or self._stopping)
            if self._stopping:
                return None
            if self._finals:
                job = self._finals.popleft()
            else:
                job, self._partial = self._partial, None
            self._busy_since = time.monotonic()
            return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            if not job.cancelled:
                self._run_job(job)
