"""Keeps transcribing when the accelerator fails: the same audio is re-run on CPU.

The wrapper works at the recognizer-call level: a whole `transcribe` call that
raises, or that gives no result within `inference.timeout_ms`, is repeated on
a CPU recognizer (created on first need, so a healthy box never pays for a
second model in memory), so no utterance is lost. Then it stays on CPU,
tells `on_status` once, and re-tries the accelerator after
`inference.retry_accelerator_s` (0: never).

A hung accelerator call cannot be killed from Python: its worker thread is a
daemon left to finish or die with the process, and the accelerator is not
re-tried while that thread is still alive. A call that was only late (it finished
with a result after its deadline: the first TensorRT engine build on a Jetson takes
minutes) earns the accelerator one more try whatever `retry_accelerator_s` says:
with the default 0, that first utterance kept a Jetson on CPU until a restart.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from edge.asr.base import Interrupt, Interrupted, Recognizer, Transcript
from edge.audio.base import SAMPLE_RATE
from edge.errors import one_line
from edge.vocabulary import Vocabulary

StatusCallback = Callable[[str], None]
WINDOW_S = 30.0  # the deadline grows per this much audio: long-form calls legitimately take several windows


class AcceleratorTimeout(TimeoutError):
    """The accelerator gave no result within inference.timeout_ms; `worker` may still be running."""

    def __init__(self, message: str, worker: threading.Thread, outcome: dict[str, Any]) -> None:
        super().__init__(message)
        self.worker = worker
        self._outcome = outcome

    @property
    def came_late(self) -> bool:
        """The call has since finished with a result: the accelerator was slow, not broken."""
        return not self.worker.is_alive() and "result" in self._outcome


def call_with_deadline(fn: Callable[[], Any], timeout_s: float) -> Any:
    """fn's result, computed in a daemon thread so that a hang cannot block the caller past timeout_s."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="accelerator-call", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise AcceleratorTimeout(f"no result within {timeout_s * 1000:.0f} ms", worker, box)
    if "error" in box:
        raise box["error"]
    return box["result"]


class FallbackRecognizer:
    """A `Recognizer` over an accelerator recognizer, with CPU as the safety net."""

    def __init__(
        self,
        primary: Recognizer,
        make_cpu: Callable[[], Recognizer],
        on_status: StatusCallback,
        *,
        timeout_ms: int,
        retry_accelerator_s: float = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self._make_cpu = make_cpu
        self._cpu: Recognizer | None = None
        self._on_status = on_status
        self._timeout_s = timeout_ms / 1000.0
        self._retry_s = retry_accelerator_s
        self._clock = clock
        self._failed_at: float | None = None
        self._stuck: AcceleratorTimeout | None = None
        self._late_retry_left = True  # one free retry after a call that was only late, until a recovery
        self._lock = threading.Lock()
        self.fallbacks = 0  # accelerator calls re-run on CPU, a failed retry's included

    @property
    def backend_name(self) -> str:
        return "cpu" if self._failed_at is not None else self.primary.backend_name

    @property
    def cpu(self) -> Recognizer:
        if self._cpu is None:
            self._cpu = self._make_cpu()
        return self._cpu

    @property
    def languages(self) -> tuple[str, ...]:
        return self.primary.languages

    def options(
        self, *, beam_size: int = 5, language: str = "auto", prompt: str = "", vocabulary: Vocabulary = Vocabulary(),
        script: str = "simplified",
    ) -> object:
        return self.primary.options(beam_size=beam_size, language=language, prompt=prompt, vocabulary=vocabulary,
                                    script=script)

    def vocabulary_advice(self, vocabulary: Vocabulary, language: str) -> str | None:
        return self.primary.vocabulary_advice(vocabulary, language)

    def transcribe(self, audio: np.ndarray, *, partial: bool = False, context: Sequence[int] = (),
                   options: object | None = None, interrupt: Interrupt | None = None) -> Transcript:
        request = {"partial": partial, "context": context, "options": options, "interrupt": interrupt}
        with self._lock:
            if not self._use_accelerator():
                return self.cpu.transcribe(audio, **request)
            name = self.primary.backend_name
            try:
                result = call_with_deadline(lambda: self.primary.transcribe(audio, **request), self._deadline(audio))
            except Interrupted:  # the caller withdrew the request: the accelerator did nothing wrong
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke, CPU gets the same audio
                return self._fall_back(name, exc, audio, request)
            self._recovered(name)
            return result

    def _deadline(self, audio: np.ndarray) -> float:
        """timeout_ms per 30 s window: long-form calls legitimately take several windows."""
        return self._timeout_s * max(1, math.ceil(len(audio) / SAMPLE_RATE / WINDOW_S))

    def _use_accelerator(self) -> bool:
        if self._failed_at is None:
            return True
        if self._stuck is not None and self._stuck.worker.is_alive():
            return False
        if self._stuck is not None and self._stuck.came_late and self._late_retry_left:
            self._late_retry_left = False
            return True
        return self._retry_s > 0 and self._clock() - self._failed_at >= self._retry_s

    def _fall_back(self, name: str, exc: Exception, audio: np.ndarray, request: dict[str, Any]) -> Transcript:
        retrying = self._failed_at is not None
        self.fallbacks += 1
        self._failed_at = self._clock()
        self._stuck = exc if isinstance(exc, AcceleratorTimeout) else None
        cpu = self.cpu  # built before the status says so: a CPU model that cannot load is the error raised
        again = " again" if retrying else ""
        self._on_status(f"accelerator {name} failed{again} ({type(exc).__name__}: {one_line(exc)}); "
                        f"the utterance is recognised on CPU and edge-asr continues on CPU{self._retry_plan(name)}")
        return cpu.transcribe(audio, **request)

    def _retry_plan(self, name: str) -> str:
        if self._retry_s > 0:
            return f"; retrying {name} in {self._retry_s:g} s"
        if self._stuck is not None and self._late_retry_left:
            return f"; retrying {name} once if its late call finishes"
        return ""

    def _recovered(self, name: str) -> None:
        if self._failed_at is not None:
            self._failed_at = None
            self._late_retry_left = True
            self._on_status(f"accelerator {name} is working again; back from CPU to {name}")

