"""An accelerator that fails mid-run: the same audio comes back transcribed on CPU, nothing is lost."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from edge.asr.base import Interrupt
from edge.audio.audiofile import load_audio
from edge.asr.whisper.graph import CrossKV, SelfKV
from edge.errors import BackendError
from edge.asr.fallback import FallbackRecognizer
from edge.asr.whisper.ort import OrtWhisperBackend
from edge.accel.board import Probe
from edge.asr.load import open_recognizer
from edge.asr.whisper.family import open_backend
from edge.config import parse_config
from edge.asr.whisper.recognizer import Recognizer, WhisperOptions
from edge.asr.whisper.tokenizer import Tokenizer

CLIPS = ("ljspeech_LJ050-0131.wav", "ljspeech_LJ002-0020.wav")


class FlakyBackend:
    """A real CPU backend posing as an accelerator that breaks (or hangs) on a chosen decoder step."""

    def __init__(self, inner: OrtWhisperBackend) -> None:
        self.name = "fake-npu"
        self.inner = inner
        self.fail_at_step: int | None = None
        self.hang = threading.Event()
        self.hanging = False
        self.steps = 0

    def encode(self, mel: np.ndarray) -> CrossKV:
        return self.inner.encode(mel)

    def empty_cache(self, batch: int) -> SelfKV:
        return self.inner.empty_cache(batch)

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        self.steps += 1
        if self.fail_at_step is not None and self.steps >= self.fail_at_step:
            if self.hanging:
                self.hang.wait(30)
            else:
                raise BackendError("NPU returned an error")
        return self.inner.decode(tokens, cache, cross)

    def interruptible(self, interrupt: Interrupt) -> AbstractContextManager[None]:
        return self.inner.interruptible(interrupt)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tokenizer(int8_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(int8_model_dir)


@pytest.fixture(scope="module")
def cpu(int8_model_dir: Path, tokenizer: Tokenizer) -> Recognizer:
    return Recognizer(OrtWhisperBackend(int8_model_dir), tokenizer)


@pytest.fixture(scope="module")
def audio(eval_dir: Path) -> list[np.ndarray]:
    return [load_audio(eval_dir / "real_en" / clip) for clip in CLIPS]


@pytest.fixture(scope="module")
def expected(cpu: Recognizer, audio: list[np.ndarray]) -> list[str]:
    return [cpu.transcribe(a, options=WhisperOptions(beam_size=1)).text for a in audio]


@pytest.fixture
def flaky(int8_model_dir: Path) -> FlakyBackend:
    backend = FlakyBackend(OrtWhisperBackend(int8_model_dir))
    yield backend
    backend.hang.set()  # let a hung worker thread finish


def wrap(flaky: FlakyBackend, tokenizer: Tokenizer, cpu: Recognizer, messages: list[str], **options) -> FallbackRecognizer:
    options.setdefault("timeout_ms", 10000)
    built = []

    def make_cpu() -> Recognizer:
        built.append(True)
        return cpu

    wrapper = FallbackRecognizer(Recognizer(flaky, tokenizer), make_cpu, messages.append, **options)
    wrapper.cpu_built = built
    return wrapper


def test_healthy_accelerator_never_loads_the_cpu_model(flaky, tokenizer, cpu, audio, expected) -> None:
    messages: list[str] = []
    wrapper = wrap(flaky, tokenizer, cpu, messages)
    assert wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1)).text == expected[0]
    assert wrapper.backend_name == "fake-npu" and messages == [] and wrapper.cpu_built == []


@pytest.mark.parametrize("hanging", [False, True], ids=["raises", "hangs"])
def test_failure_mid_run_returns_the_cpu_transcript_of_the_same_audio(flaky, tokenizer, cpu, audio, expected, hanging) -> None:
    messages: list[str] = []
    wrapper = wrap(flaky, tokenizer, cpu, messages, timeout_ms=300 if hanging else 10000)
    flaky.fail_at_step, flaky.hanging = 3, hanging
    assert wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1)).text == expected[0]
    assert wrapper.backend_name == "cpu"
    assert len(messages) == 1
    reason = "AcceleratorTimeout: no result within 300 ms" if hanging else "BackendError: NPU returned an error"
    assert messages[0].startswith(f"accelerator fake-npu failed ({reason}); the utterance is recognised on CPU")
    steps = flaky.steps
    assert wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1)).text == expected[1]
    assert flaky.steps == steps, "a later call went to the failed accelerator"
    assert len(messages) == 1 and wrapper.cpu_built == [True]


def test_retry_returns_to_the_accelerator_after_retry_accelerator_s(flaky, tokenizer, cpu, audio, expected) -> None:
    messages: list[str] = []
    clock = Clock()
    wrapper = wrap(flaky, tokenizer, cpu, messages, retry_accelerator_s=60, clock=clock)
    flaky.fail_at_step = 1
    assert wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1)).text == expected[0]
    assert messages[-1].endswith("retrying fake-npu in 60 s")
    flaky.fail_at_step, steps = None, flaky.steps
    clock.now += 59
    wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1))
    assert flaky.steps == steps and wrapper.backend_name == "cpu"
    clock.now += 1
    assert wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1)).text == expected[1]
    assert flaky.steps > steps and wrapper.backend_name == "fake-npu"
    assert messages[-1] == "accelerator fake-npu is working again; back from CPU to fake-npu"
    assert len(messages) == 2


def test_a_retry_that_fails_again_is_one_more_fallback(flaky, tokenizer, cpu, audio) -> None:
    """edge_asr_fallbacks_total counted a fall to CPU only when the backend changed: a retry that failed
    again (the backend still `cpu`) re-ran its call on CPU uncounted."""
    messages: list[str] = []
    clock = Clock()
    wrapper = wrap(flaky, tokenizer, cpu, messages, retry_accelerator_s=60, clock=clock)
    flaky.fail_at_step = 1
    wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1))
    clock.now += 60
    flaky.fail_at_step = flaky.steps + 1
    wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1))
    assert wrapper.fallbacks == 2 and wrapper.backend_name == "cpu" and "failed again" in messages[-1]


def test_no_retry_while_a_hung_call_is_still_running(flaky, tokenizer, cpu, audio) -> None:
    messages: list[str] = []
    clock = Clock()
    wrapper = wrap(flaky, tokenizer, cpu, messages, timeout_ms=200, retry_accelerator_s=10, clock=clock)
    flaky.fail_at_step, flaky.hanging = 1, True
    wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1))
    clock.now += 100
    steps = flaky.steps
    wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1))
    assert flaky.steps == steps and len(messages) == 1


def release_late_calls(flaky: FlakyBackend) -> None:
    """Let the hung accelerator call finish (with its result), and wait until it has."""
    flaky.hang.set()
    for thread in threading.enumerate():
        if thread.name == "accelerator-call":
            thread.join(10)
    flaky.hang = threading.Event()


def test_a_call_that_was_only_late_earns_one_more_try(flaky, tokenizer, cpu, audio, expected) -> None:
    """The first TensorRT call on a Jetson builds its engines for minutes: with retry_accelerator_s 0 that
    one late call kept the box on CPU until a restart. A call that finishes with a result after its
    deadline gets the accelerator one more try; a second late one leaves it on CPU."""
    messages: list[str] = []
    wrapper = wrap(flaky, tokenizer, cpu, messages, timeout_ms=300)
    flaky.fail_at_step, flaky.hanging = 3, True
    assert wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1)).text == expected[0]
    assert messages[-1].endswith("continues on CPU; retrying fake-npu once if its late call finishes")
    steps = flaky.steps
    assert wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1)).text == expected[1]
    assert flaky.steps == steps, "retried while the late call was still running"
    release_late_calls(flaky)
    flaky.fail_at_step = flaky.steps + 2  # the retry is late too
    assert wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1)).text == expected[1]
    assert messages[-1].startswith("accelerator fake-npu failed again (AcceleratorTimeout")
    assert messages[-1].endswith("continues on CPU")
    release_late_calls(flaky)
    flaky.fail_at_step, steps = None, flaky.steps
    wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1))
    assert flaky.steps == steps and wrapper.backend_name == "cpu" and wrapper.fallbacks == 2


def test_after_one_late_call_a_working_accelerator_is_used_again(flaky, tokenizer, cpu, audio, expected) -> None:
    messages: list[str] = []
    wrapper = wrap(flaky, tokenizer, cpu, messages, timeout_ms=300)
    flaky.fail_at_step, flaky.hanging = 3, True
    wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1))
    release_late_calls(flaky)
    flaky.fail_at_step, steps = None, flaky.steps
    assert wrapper.transcribe(audio[1], options=WhisperOptions(beam_size=1)).text == expected[1]
    assert flaky.steps > steps and wrapper.backend_name == "fake-npu"
    assert messages[-1] == "accelerator fake-npu is working again; back from CPU to fake-npu"


def test_no_status_says_cpu_when_the_cpu_model_cannot_load(flaky, tokenizer, audio) -> None:
    """The status said "recognised on CPU" before the CPU model was built; when it could not be (out of
    memory), the subscribers were told of a CPU fallback that never happened."""
    messages: list[str] = []

    def no_cpu() -> Recognizer:
        raise MemoryError("cannot allocate the CPU model")

    wrapper = FallbackRecognizer(Recognizer(flaky, tokenizer), no_cpu, messages.append, timeout_ms=10000)
    flaky.fail_at_step = 1
    with pytest.raises(MemoryError):
        wrapper.transcribe(audio[0], options=WhisperOptions(beam_size=1))
    assert messages == []


def test_open_recognizer_wraps_an_accelerator(tmp_path: Path, int8_model_dir: Path, audio, expected) -> None:
    """End to end through selection: a Jetson whose CUDA backend dies on its first call."""
    def opener(name: str, cfg):
        backend = open_backend("cpu", cfg)
        if name == "cpu":
            return Recognizer(backend, Tokenizer.from_dir(int8_model_dir))
        flaky = FlakyBackend(backend)
        flaky.name, flaky.fail_at_step = name, 1
        return Recognizer(flaky, Tokenizer.from_dir(int8_model_dir))

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36\n")
    cfg = parse_config({"model": {"path": str(int8_model_dir)}}, base_dir=tmp_path)
    probe = Probe(root=tmp_path, providers=("CUDAExecutionProvider", "CPUExecutionProvider"), rknnlite=False)
    messages: list[str] = []
    recognizer = open_recognizer(cfg, messages.append, probe, opener)
    assert recognizer.backend_name == "cuda"
    assert recognizer.transcribe(audio[0], options=WhisperOptions(beam_size=1)).text == expected[0]
    assert recognizer.backend_name == "cpu" and len(messages) == 1


class _Gated:
    """An audio source that delivers nothing until `gate` is set (the rest is the wrapped source's)."""

    def __init__(self, source) -> None:
        self._source = source
        self.gate = threading.Event()

    def read(self, timeout: float):
        if not self.gate.wait(timeout):
            return None
        return self._source.read(timeout)

    def __getattr__(self, name: str):
        return getattr(self._source, name)


def test_daemon_publishes_the_final_and_a_status_when_the_accelerator_fails(
    tmp_path: Path, int8_model_dir: Path, tokenizer: Tokenizer, cpu: Recognizer, flaky: FlakyBackend, eval_dir: Path
) -> None:
    """The issue's end-to-end case: a subscriber sees a status event, and no utterance is lost."""
    from edge.config import load_config
    from edge.daemon import Daemon, StatusRelay
    from edge.audio import open_source
    from tests.test_daemon import Subscriber, wer, write_config

    relay = StatusRelay()
    flaky.fail_at_step = 3  # inside the first decode of the first utterance
    recognizer = FallbackRecognizer(Recognizer(flaky, tokenizer), lambda: cpu, relay, timeout_ms=10000)
    config = write_config(tmp_path, int8_model_dir)
    cfg = load_config(config)
    clip = eval_dir / "real_en" / "jfk.wav"
    source = _Gated(open_source(f"file:{clip}", cfg.audio, "fast"))
    daemon = Daemon(cfg, config, recognizer, source, exit_at_end=True, status_relay=relay)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        subscriber = Subscriber(tmp_path / "asr.sock")
        source.gate.set()  # audio flows only once the subscriber is registered: it sees every event
        assert subscriber.closed.wait(120), "the daemon did not finish the file"
    finally:
        daemon.request_stop()
        runner.join(10)
    statuses = [e for e in subscriber.of("status") if "fake-npu" in e.get("message", "")]
    assert statuses and "cpu" in statuses[0]["message"].lower()
    assert statuses[-1]["degraded"] is True and statuses[-1]["backend_requested"] == "auto"
    assert "fake-npu" in statuses[-1]["degraded_reason"]
    finals = subscriber.of("final")
    ended = {e["utterance_id"] for e in subscriber.of("speech_end")}
    assert ended and {f["utterance_id"] for f in finals} == ended  # every utterance got its final
    reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    assert wer([reference], [f["text"] for f in finals]) < 0.1
    from prometheus_client import generate_latest

    assert "edge_asr_fallbacks_total 1.0" in generate_latest(daemon._metrics.registry).decode().splitlines()
