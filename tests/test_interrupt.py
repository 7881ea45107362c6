"""A partial decode stopped when a final needs the recognizer: the backends, the recognizer, the fallback, the worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.asr.base import Interrupt, Interrupted, Transcript
from edge.asr.fallback import FallbackRecognizer
from edge.asr.whisper.graph import CrossKV, SelfKV
from edge.asr.whisper.ort import OrtWhisperBackend
from edge.asr.whisper.recognizer import Recognizer, WhisperOptions
from edge.asr.whisper.tokenizer import Tokenizer
from edge.audio.audiofile import load_audio
from edge.audio.base import SAMPLE_RATE
from edge.stream.worker import Job, Worker
from tests.test_fallback import FlakyBackend

CLIP = "ljspeech_LJ050-0131.wav"


@pytest.fixture(scope="module")
def backend(int8_model_dir: Path) -> OrtWhisperBackend:
    return OrtWhisperBackend(int8_model_dir)


@pytest.fixture(scope="module")
def audio(eval_dir: Path) -> np.ndarray:
    return load_audio(eval_dir / "real_en" / CLIP)


class _StepCounter(FlakyBackend):
    """The real CPU backend, counting decoder steps and setting `interrupt` at step `stop_at`."""

    def __init__(self, inner: OrtWhisperBackend, interrupt: Interrupt | None = None, stop_at: int = 0) -> None:
        super().__init__(inner)
        self.interrupt, self.stop_at = interrupt, stop_at

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        if self.interrupt is not None and self.steps + 1 == self.stop_at:
            self.interrupt.set()
        return super().decode(tokens, cache, cross)


def test_onnxruntime_stops_the_runs_of_an_interrupted_block_and_only_those(backend: OrtWhisperBackend) -> None:
    """Set from another thread while an encoder run is under way: that run stops between two nodes (well before
    it would end), with `Interrupted`; after the block the same backend runs normally again."""
    mel = np.zeros((80, 3000), np.float32)
    run_s = min(_timed(backend.encode, mel) for _ in range(2))  # tiny.en, 2 cores: 0.2-0.4 s
    interrupt = Interrupt()
    timer = threading.Timer(0.2 * run_s, interrupt.set)
    with pytest.raises(Interrupted), backend.interruptible(interrupt):
        started = time.monotonic()
        timer.start()
        backend.encode(mel)
    assert time.monotonic() - started < 0.7 * run_s  # a check only between runs would have let this one finish
    with pytest.raises(Interrupted), backend.interruptible(interrupt):  # already set: nothing runs
        elsewhere: list[CrossKV] = []
        other = threading.Thread(target=lambda: elsewhere.append(backend.encode(mel)))
        other.start()
        other.join(10)
        assert len(elsewhere) == 1  # another thread's runs are not this block's
        set_at = time.monotonic()
        backend.encode(mel)
    assert time.monotonic() - set_at < 0.5 * run_s
    assert backend.encode(mel).k.shape[3] == 1500


def _timed(call, *args) -> float:
    started = time.monotonic()
    call(*args)
    return time.monotonic() - started


def test_an_interrupted_partial_stops_at_the_next_decoder_step(backend: OrtWhisperBackend, audio: np.ndarray,
                                                               int8_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_dir(int8_model_dir)
    plain = _StepCounter(backend)
    expected = Recognizer(plain, tokenizer).transcribe(audio, partial=True)
    assert plain.steps > 10 and expected.text
    interrupt = Interrupt()
    stopped = _StepCounter(backend, interrupt, stop_at=3)
    with pytest.raises(Interrupted):
        Recognizer(stopped, tokenizer).transcribe(audio, partial=True, interrupt=interrupt)
    assert stopped.steps == 3  # the run under way when it was set failed, and none ran after it
    again = _StepCounter(backend)
    assert Recognizer(again, tokenizer).transcribe(audio, partial=True, interrupt=Interrupt()).text == expected.text


class _Withdrawn:
    """An accelerator recognizer whose every call is withdrawn by its caller."""

    backend_name = "fake-npu"
    languages = ("en",)

    def transcribe(self, audio: np.ndarray, **_: object) -> Transcript:
        raise Interrupted("the decode was interrupted")


def test_an_interrupted_call_is_not_an_accelerator_failure() -> None:
    statuses: list[str] = []

    def no_cpu():
        raise AssertionError("an interrupted call must not be re-run on CPU")

    fallback = FallbackRecognizer(_Withdrawn(), no_cpu, statuses.append, timeout_ms=5000)
    with pytest.raises(Interrupted):
        fallback.transcribe(np.zeros(SAMPLE_RATE, np.float32), partial=True, interrupt=Interrupt())
    assert statuses == [] and fallback.backend_name == "fake-npu"


def _job(kind: str, utterance_id: int = 1) -> Job:
    """Every job has an interrupt, as the session's have: a partial's is for a final, a final's for its cancel."""
    return Job(kind, utterance_id, 0, SAMPLE_RATE, np.zeros(SAMPLE_RATE, np.float32), interrupt=Interrupt())


class _HoldingRunner:
    """Runs jobs for a `Worker`: a partial until interrupted (10 s at most), a final until released."""

    def __init__(self) -> None:
        self.started: dict[int, threading.Event] = {}
        self.release = threading.Event()
        self.ran: list[tuple[str, int, bool]] = []  # (kind, id, interrupted)

    def __call__(self, job: Job) -> None:
        self.started[id(job)].set()
        if job.kind == "partial":
            stopped = threading.Event()
            with job.interrupt.on_set(stopped.set):
                stopped.wait(10)
        else:
            self.release.wait(10)
        self.ran.append((job.kind, job.utterance_id, job.interrupt.is_set))

    def submit(self, worker: Worker, job: Job) -> Job:
        self.started[id(job)] = threading.Event()
        worker.submit(job)
        return job


def test_a_final_interrupts_the_running_partial_and_drops_the_waiting_one() -> None:
    runner = _HoldingRunner()
    worker = Worker(runner)
    try:
        running = runner.submit(worker, _job("partial"))
        assert runner.started[id(running)].wait(5)
        runner.submit(worker, _job("partial"))  # waits in the slot
        final = runner.submit(worker, _job("final"))
        assert runner.started[id(final)].wait(5)  # not after the partial's 10 s
        assert runner.ran == [("partial", 1, True)]
        runner.release.set()
        assert worker.wait_idle(5)
        assert runner.ran == [("partial", 1, True), ("final", 1, False)]
        assert worker.partials_skipped == 1
    finally:
        runner.release.set()
        worker.stop(5)


def test_nothing_but_a_final_interrupts_and_only_a_partial() -> None:
    runner = _HoldingRunner()
    worker = Worker(runner)
    try:
        first = runner.submit(worker, _job("final", 1))
        assert runner.started[id(first)].wait(5)
        runner.submit(worker, _job("final", 2))  # a final never interrupts a final
        runner.release.set()
        assert worker.wait_idle(5)
        runner.release.clear()
        partial = runner.submit(worker, _job("partial", 3))
        assert runner.started[id(partial)].wait(5)
        runner.submit(worker, _job("partial", 3))  # a newer partial waits; it does not interrupt the running one
        time.sleep(0.2)
        assert not partial.interrupt.is_set
        runner.submit(worker, _job("final", 3))
        runner.release.set()
        assert worker.wait_idle(5)
        assert runner.ran == [("final", 1, False), ("final", 2, False), ("partial", 3, True), ("final", 3, False)]
    finally:
        runner.release.set()
        worker.stop(5)


def test_an_unset_interrupt_changes_no_decode(backend: OrtWhisperBackend, audio: np.ndarray,
                                                             int8_model_dir: Path) -> None:
    """The options and the text are the same with an unset interrupt as without one, beam search included."""
    recognizer = Recognizer(backend, Tokenizer.from_dir(int8_model_dir))
    options = WhisperOptions(beam_size=5)
    assert (recognizer.transcribe(audio, options=options, interrupt=Interrupt()).text
            == recognizer.transcribe(audio, options=options).text)
