"""`edge-asr run` as a real process: socket subscribers, signals, systemd notifications.

Also the shared helpers for driving the daemon (tests/test_mic_e2e.py uses them).
File sources run at fast pace wherever timing does not matter.
"""

from __future__ import annotations

import contextlib
import os
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile
import yaml
from whisper_normalizer.english import EnglishTextNormalizer

from edge.audio.audiofile import load_audio
from edge.audio.base import SAMPLE_RATE, MicStats, SourceStats
from edge.publish import protocol
from tests.conftest import REPO, load_manifest, notifications, notify_socket_at

_normalize = EnglishTextNormalizer()


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after Whisper's English normalisation (case, punctuation, numbers)."""
    return jiwer.wer(" ".join(_normalize(r) for r in references), " ".join(_normalize(h) for h in hypotheses))


def write_config(directory: Path, model_dir: Path, **sections: dict) -> Path:
    """A config file publishing on `directory`/asr.sock; `sections` override defaults."""
    data = {"model": {"path": str(model_dir)}, "publish": {"socket": str(directory / "asr.sock")}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_daemon(config: Path, source: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "edge", "run", "--config", str(config), "--source", source, *extra]
    return subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


class Subscriber:
    """A real socket client: collects every event line on a background thread.

    Construction returns once the daemon's `hello` arrived, i.e. once the
    publisher has registered this subscriber.
    """

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.events: list[dict] = []
        self.closed = threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda e: e["type"] == "hello", timeout)  # registered: later events will reach us

    def _read(self) -> None:
        """Until the end; a daemon that exits with requests of ours unread resets the connection (ECONNRESET
        after the events it sent), which is an end too."""
        try:
            with self._sock.makefile("rb") as lines:
                for line in lines:
                    event = protocol.decode(line)
                    protocol.validate(event)
                    with self._cond:
                        self.events.append({**event, "_received": time.monotonic()})
                        self._cond.notify_all()
        except ConnectionResetError:
            pass
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, match: Callable[[dict], bool], timeout: float, after: int = 0) -> dict:
        """The first event from index `after` on (seen so far or arriving within `timeout`) that matches."""
        with self._cond:
            found = self._cond.wait_for(lambda: next((e for e in self.events[after:] if match(e)), None), timeout)
        assert found, f"no matching event within {timeout} s; got {self.events}"
        return found

    def request_status(self) -> None:
        """Ask; a daemon gone meanwhile is for the reader to tell (`closed`), not an error here."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._sock.sendall(b'{"type": "status"}\n')

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["type"] == kind]

    def close(self) -> None:
        self._sock.close()


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"daemon did not exit within {timeout} s:\n{err[-3000:]}")
    return process.returncode, err


def reap(process: subprocess.Popen) -> None:
    """For a `finally:`: kill `process` if it is still running (an assertion failed before it was
    stopped) and wait for it, so that no daemon outlives its test."""
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=30)


def test_file_source_finals_match_the_offline_recognizer(tmp_path, int8_model_dir, eval_dir, offline) -> None:
    row = load_manifest("longform_en")[0]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "fast", "--exit-at-end")
    subscriber = Subscriber(tmp_path / "asr.sock")  # connects long before the first final is decoded
    code, err = finish(daemon, 180)
    assert code == 0, err
    assert subscriber.closed.wait(5)
    assert not (tmp_path / "asr.sock").exists()
    finals = subscriber.of("final")
    ids = [f["utterance_id"] for f in finals]
    assert ids == sorted(set(ids)) and len(finals) >= len(row["segments"])
    assert all(f["text"] for f in finals)
    streaming_wer = wer([row["text"]], [f["text"] for f in finals])
    offline_wer = wer([row["text"]], [offline(row["path"])])
    assert streaming_wer <= offline_wer + 0.03, (streaming_wer, offline_wer, [f["text"] for f in finals])


def test_fast_pace_is_set_by_recognition_not_by_reading(tmp_path, int8_model_dir, eval_dir) -> None:
    """--pace fast reads no further ahead than a couple of queued finals: memory stays flat."""
    from edge.daemon import FAST_PACE_BACKLOG

    row = load_manifest("longform_en")[1]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "fast", "--exit-at-end")
    subscriber = Subscriber(tmp_path / "asr.sock")
    deadline = time.monotonic() + 120  # --exit-at-end: the 77 s file takes about 20 s at fast pace
    while not subscriber.closed.wait(0.05):
        subscriber.request_status()
        assert time.monotonic() < deadline, "the daemon did not exit at the end of the file"
    code, err = finish(daemon, 60)
    assert code == 0, err
    backlog = [e["pending_finals"] for e in subscriber.of("status") if "pending_finals" in e]
    assert len(backlog) > 10 and max(backlog) <= FAST_PACE_BACKLOG + 1
    assert len(subscriber.of("final")) >= len(row["segments"])


def test_a_file_at_fast_pace_loses_no_final_to_a_long_decode(tmp_path, int8_model_dir, eval_dir) -> None:
    """While a 20 s utterance decoded, the reader ran through a minute of silence: counted as lag, the
    overload policy dropped the next final (text "", dropped) although the file could have waited."""
    rate = SAMPLE_RATE
    long_speech = load_audio(eval_dir / "real_en" / "moonshine_two_cities.wav")[: 20 * rate]
    short = load_audio(eval_dir / "real_en" / "speechbrain_spk1_snt1.wav")
    gap = lambda seconds: np.zeros(int(seconds * rate), np.float32)  # noqa: E731
    audio = np.concatenate([gap(8), long_speech, gap(1.5), short, gap(62), short, gap(1.5)])
    soundfile.write(tmp_path / "burst.wav", audio, rate, subtype="PCM_16")
    config = write_config(tmp_path, int8_model_dir, vad={"min_silence_ms": 1000})
    daemon = start_daemon(config, f"file:{tmp_path / 'burst.wav'}", "--pace", "fast", "--exit-at-end")
    subscriber = Subscriber(tmp_path / "asr.sock")
    code, err = finish(daemon, 120)
    subscriber.closed.wait(10)
    assert code == 0, err
    finals = subscriber.of("final")
    assert len(finals) == 3 and not any(f.get("dropped") for f in finals), finals
    assert all("small dog" in f["text"].lower() for f in finals[1:]), [f["text"] for f in finals]


def test_invalid_config_at_start_fails_like_check_config(tmp_path, int8_model_dir) -> None:
    config = write_config(tmp_path, int8_model_dir, vad={"threshold": 2.0, "min_silence_ms": "long"})
    code, err = finish(start_daemon(config, "mic"), 60)
    check = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(config)], cwd=REPO, capture_output=True, text=True
    )
    assert code != 0 and code == check.returncode
    assert err == check.stderr
    assert "Traceback" not in err and "vad.threshold" in err


def test_sighup_reloads_live_settings_and_keeps_subscribers(tmp_path, int8_model_dir, eval_dir) -> None:
    audio = next(r for r in load_manifest("nonspeech") if r["audio"].startswith("silence"))["path"]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{audio}", "--pace", "fast")  # idles after the file: keeps serving
    subscriber = Subscriber(tmp_path / "asr.sock")
    try:
        write_config(tmp_path, int8_model_dir, vad={"threshold": 0.6}, model={"threads": 1})
        daemon.send_signal(signal.SIGHUP)
        reloaded = subscriber.wait_for(lambda e: e["type"] == "status" and "reload" in e.get("message", ""), 10)
        assert reloaded["needs_restart"] == ["model.threads"]
        assert "reload_requests" not in subscriber.events[0]  # 0, an optional field's default: not sent
        assert reloaded["reload_requests_answered"] == 1

        config.write_text("vad:\n  threshold: nine\n")
        daemon.send_signal(signal.SIGHUP)
        error = subscriber.wait_for(lambda e: e["type"] == "error", 10)
        assert error["reason"] == "config_invalid" and "vad.threshold" in error["message"]
        failed = subscriber.wait_for(lambda e: e["type"] == "status" and "old settings kept" in e.get("message", ""), 10)
        assert failed["reload_requests_answered"] == 2
        assert Subscriber(tmp_path / "asr.sock").events[0]["reload_requests"] == 2  # a later hello counts them

        subscriber.request_status()  # the same connection still works after both reloads
        subscriber.wait_for(lambda e: e["type"] == "status" and "subscriber_id" in e, 10)
        assert not subscriber.closed.is_set()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 10)
    assert code == 0, err
    assert "vad.threshold" in err  # the invalid file's message was logged


def test_sigterm_mid_utterance_publishes_its_final_and_exits_within_2s(tmp_path, int8_model_dir, eval_dir) -> None:
    row = load_manifest("longform_en")[0]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "realtime")
    try:
        subscriber = Subscriber(tmp_path / "asr.sock")
        partial = subscriber.wait_for(lambda e: e["type"] == "partial" and len(e["text"].split()) >= 3, 30)
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 10)
        elapsed = time.monotonic() - sent
    finally:
        reap(daemon)
    assert code == 0, err
    assert elapsed <= 2.0, elapsed
    assert subscriber.closed.wait(2)
    finals = [e for e in subscriber.of("final") if e["utterance_id"] == partial["utterance_id"]]
    assert finals and finals[0]["text"], err[-2000:]
    assert not (tmp_path / "asr.sock").exists()


NOTIFY_WINDOW_S = 8.0
NOTIFY_WATCHDOG_S = 0.4  # the WATCHDOG_USEC given to the daemon: it pings every 0.2 s


def _notifications(tmp_path: Path, config: Path, *args: str) -> tuple[list[tuple[float, str]], float, str]:
    """The daemon's systemd notifications in its first NOTIFY_WINDOW_S as (arrival time, line), when
    the listening ended, and its stderr."""
    notify = notify_socket_at(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": str(round(NOTIFY_WATCHDOG_S * 1_000_000))}
    daemon = start_daemon(config, *args, env=env)
    try:
        messages = notifications(notify, NOTIFY_WINDOW_S)
        ended = time.monotonic()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 10)
        notify.close()
    assert code == 0, err
    return messages, ended, err


def _gaps_s(marks: list[float]) -> list[float]:
    return [round(later - earlier, 3) for earlier, later in zip(marks, marks[1:])]


def assert_watchdog_kept(messages: list[tuple[float, str]], ended: float, watchdog_s: float,
                         least_s: float = 3.0) -> None:
    """systemd restarts a service that goes WatchdogSec without WATCHDOG=1 once it sent READY=1: every
    gap from READY=1 through each ping to the end of listening must be under `watchdog_s`, over a
    watched stretch of at least `least_s` (the daemon may take most of the window to load its model)."""
    ready = next((at for at, line in messages if line == "READY=1"), None)
    assert ready is not None, [line for _, line in messages]
    pings = [at for at, line in messages if line == "WATCHDOG=1"]
    gaps = _gaps_s([ready, *pings, ended])
    assert ended - ready >= least_s, f"READY=1 came {ended - ready:.2f} s before the end of the window: too late to judge"
    assert max(gaps) < watchdog_s, (
        f"{len(pings)} pings in {ended - ready:.2f} s after READY=1; the longest gap, {max(gaps)} s, reaches "
        f"WatchdogSec ({watchdog_s} s): systemd would restart the service. Gaps (READY, pings, end): {gaps}")
    # Half WatchdogSec apart, as sd_watchdog_enabled(3) recommends; a quarter of the stretch is room for scheduling.
    assert len(pings) >= (ended - ready) / (watchdog_s / 2) * 0.75, (len(pings), gaps)


def test_systemd_notifications(tmp_path, int8_model_dir, eval_dir) -> None:
    row = load_manifest("longform_en")[0]
    messages, ended, _ = _notifications(tmp_path, write_config(tmp_path, int8_model_dir), f"file:{row['path']}",
                                        "--pace", "realtime")
    lines = [line for _, line in messages]
    assert "READY=1" in lines
    assert_watchdog_kept(messages, ended, NOTIFY_WATCHDOG_S)
    assert any(line.startswith("STATUS=") for line in lines)
    assert lines.index("READY=1") > 0 and lines[0].startswith("STATUS=")  # READY only after start-up


def test_ready_while_the_microphone_is_still_missing(tmp_path, int8_model_dir) -> None:
    """A kiosk that boots before its USB microphone: without READY, systemd's TimeoutStartSec would
    kill and restart the service every 5 minutes. The watchdog goes on while the source waits."""
    messages, ended, err = _notifications(
        tmp_path, write_config(tmp_path, int8_model_dir, audio={"device": "no-such-microphone-here"}), "mic")
    assert "READY=1" in [line for _, line in messages], messages
    assert_watchdog_kept(messages, ended, NOTIFY_WATCHDOG_S)
    assert "no-such-microphone-here" in err and "waiting for it" in err, err


class _StallingSource:
    """Delivers `seconds` of silence, then nothing, while reporting `state_after`
    ("running": a dead capture thread; "lost": a device being reopened; "stuck": one that cannot close)
    in `stats` (a microphone's MicStats: "running" is within audio.stall_timeout_ms, which it watches itself)."""

    ended = False
    can_wait = False
    breaks = 0

    def __init__(self, seconds: float, state_after: str = "running", stats: type[SourceStats] = SourceStats) -> None:
        self._blocks = int(seconds * 50)
        self._state_after = state_after
        self._stats = stats

    def start(self) -> None:
        pass

    def read(self, timeout: float) -> np.ndarray | None:
        if self._blocks <= 0:
            time.sleep(timeout)
            return None
        self._blocks -= 1
        time.sleep(0.02)
        return np.zeros(320, dtype=np.float32)

    def stats(self) -> SourceStats:
        return self._stats("stalling", "running" if self._blocks > 0 else self._state_after)

    def close(self) -> None:
        pass


WATCHDOG_S = 0.4  # _watchdog_pings' WATCHDOG_USEC: a ping every 0.2 s (see below why not 0.2)


def _watchdog_pings(tmp_path, model_dir: Path, monkeypatch, source, recognizer=None, seconds: float = 3.5,
                    watchdog_s: float = WATCHDOG_S, **sections: dict) -> list[float]:
    """Seconds (from start) of each WATCHDOG=1 a daemon on `source` sends within `seconds`."""
    from edge.config import load_config
    from edge.daemon import Daemon
    from edge.asr.whisper.recognizer import Recognizer

    notify = notify_socket_at(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(round(watchdog_s * 1_000_000)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = write_config(tmp_path, model_dir, **sections)
    daemon = Daemon(load_config(config), config, recognizer or Recognizer.from_dir(model_dir), source)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        began = time.monotonic()
        messages = notifications(notify, seconds)
    finally:
        daemon.request_stop()
        runner.join(5)
        notify.close()
    return [at - began for at, line in messages if line == "WATCHDOG=1"]


@pytest.mark.parametrize("state_after", ["running", "stuck"])  # a dead capture thread; a device that cannot close
def test_watchdog_pings_stop_when_the_pipeline_stalls(tmp_path, int8_model_dir, monkeypatch, state_after) -> None:
    pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, _StallingSource(1.5, state_after))
    assert len(pings) >= 3 and min(pings) < 1.0
    # While blocks came (1.5 s of them), a ping every 0.2 s: never WatchdogSec (0.4 s) without one.
    assert max(pings) > 1.1 and max(_gaps_s(pings)) < WATCHDOG_S, f"pings at {pings}, gaps {_gaps_s(pings)}"
    assert max(pings) < 2.0  # nothing after the source stopped delivering (1.5 s) plus one period (0.2 s)


def _assert_pinged_throughout(pings: list[float], seconds: float, watchdog_s: float) -> None:
    """From the first ping to the end of listening (`seconds`), never `watchdog_s` without one."""
    gaps = _gaps_s([*pings, seconds])
    assert pings and pings[0] < 1.0 and max(gaps) < watchdog_s, (
        f"longest gap {max(gaps)} s reaches WatchdogSec ({watchdog_s} s): pings at {pings}, gaps {gaps}")


# Below: no blocks, so the progress is the main loop's wake-up after each 0.1 s read timeout. WATCHDOG_S
# 0.4 s keeps a ping period well above those wake-ups, as under systemd (15 s to 0.1 s): at 0.2 s a period
# holds about one wake-up, and the two clocks' drift would now and then leave one without it.

def test_watchdog_keeps_pinging_while_the_device_is_reopened(tmp_path, int8_model_dir, monkeypatch) -> None:
    pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, _StallingSource(1.5, state_after="lost"))
    _assert_pinged_throughout(pings, 3.5, WATCHDOG_S)  # the reconnecting capture layer is progress: no restart


def test_watchdog_leaves_a_silent_microphone_to_its_own_stall_timeout(tmp_path, int8_model_dir, monkeypatch) -> None:
    """audio.stall_timeout_ms may be up to 60 s, twice WatchdogSec: an open microphone that has not
    yet reached it must not get the service restarted (it reopens the device itself, tests/test_capture.py)."""
    pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, _StallingSource(1.5, "running", stats=MicStats))
    _assert_pinged_throughout(pings, 3.5, WATCHDOG_S)


class _HangingAccelerator:
    """A recognizer on "cuda" whose first call hangs for `hang_s`, as a wedged accelerator does."""

    backend_name = "cuda"

    def __init__(self, cpu, hang_s: float) -> None:
        self._cpu = cpu
        self._hang_s = hang_s
        self.languages = cpu.languages
        self.options = cpu.options
        self.vocabulary_advice = cpu.vocabulary_advice

    def transcribe(self, audio, **request):
        time.sleep(self._hang_s)
        self._hang_s = 0.0
        return self._cpu.transcribe(audio, **request)


class _AlwaysFailing:
    """A CPU recognizer whose every decode raises at once, as an onnxruntime session in a bad state does."""

    backend_name = "cpu"

    def __init__(self, cpu) -> None:
        self.languages = cpu.languages
        self.options = cpu.options
        self.vocabulary_advice = cpu.vocabulary_advice

    def transcribe(self, audio, **request):
        raise RuntimeError("onnxruntime: bad state")


def test_watchdog_pings_stop_once_every_decode_has_failed_for_a_while(tmp_path, int8_model_dir, eval_dir,
                                                                       monkeypatch, caplog) -> None:
    """A backend that raised on every call kept the service pinging (no decode ran long) while it
    published empty finals and a traceback per partial. Scaled down: DECODE_FAILING_S = 0.5 s."""
    from edge.audio.file import FileSource
    from edge.asr.whisper.recognizer import Recognizer

    monkeypatch.setattr("edge.daemon.DECODE_FAILING_S", 0.5)
    row = next(r for r in load_manifest("real_en") if r["audio"] == "jfk.wav")
    recognizer = _AlwaysFailing(Recognizer.from_dir(int8_model_dir))
    with caplog.at_level(logging.ERROR):
        pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, FileSource(row["path"]), recognizer, seconds=6.0)
    # Speech from 0.3 s, a partial every 0.2 s: 10 failures by about 2.5 s, then 0.5 s more.
    assert pings and min(pings) < 1.0 and 2.0 < max(pings) < 4.5, pings
    failures = [r for r in caplog.records if r.getMessage().startswith("recognition failed")]
    assert [r.exc_info is not None for r in failures] == [True, False], [r.getMessage() for r in failures]
    assert failures[1].getMessage().startswith("recognition failed 10 times in a row")
    assert sum("no more watchdog pings" in r.getMessage() for r in caplog.records) == 1


def _longest_gap_s(pings: list[float]) -> float:
    return max(later - earlier for earlier, later in zip(pings, pings[1:]))


@pytest.mark.parametrize("accelerated", [True, False])
def test_the_watchdog_waits_out_the_accelerator_deadline(tmp_path, int8_model_dir, eval_dir, monkeypatch,
                                                          accelerated) -> None:
    """A hung accelerator decode is given inference.timeout_ms, then CPU: the watchdog must not restart
    the service first (with timeout_ms at its 120 s and WatchdogSec 30 s it did). On CPU the same hang
    is a stalled pipeline. Scaled down: a decode may run DECODE_STALL_S = 0.5 s, the deadline is 1.5 s."""
    from edge.asr.fallback import FallbackRecognizer
    from edge.asr.whisper.recognizer import Recognizer
    from edge.audio.file import FileSource

    monkeypatch.setattr("edge.daemon.DECODE_STALL_S", 0.5)
    cpu = Recognizer.from_dir(int8_model_dir)
    hanging = _HangingAccelerator(cpu, hang_s=2.5)
    recognizer = FallbackRecognizer(hanging, lambda: cpu, lambda _: None, timeout_ms=1500) if accelerated else hanging
    if not accelerated:
        hanging.backend_name = "cpu"
    row = next(r for r in load_manifest("real_en") if r["audio"] == "jfk.wav")
    pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, FileSource(row["path"]), recognizer, seconds=5.0,
                            inference={"timeout_ms": 1500})
    if accelerated:
        # pings every 0.2 s throughout, never WatchdogSec (0.4 s) apart: the fallback took over at 1.5 s
        assert _longest_gap_s(pings) < WATCHDOG_S, pings
    else:
        assert _longest_gap_s(pings) > 1.0, pings  # the hang (2.5 s) outlived DECODE_STALL_S


class _PacedMicrophone:
    """A healthy microphone at real time, `block_ms` per block: a read whose block is not due within
    its timeout returns None (as MicSource.read does), while the state stays "running"."""

    ended = False
    can_wait = False
    breaks = 0

    def __init__(self, audio: np.ndarray, block_ms: int) -> None:
        self._audio = audio
        self._block = SAMPLE_RATE * block_ms // 1000
        self._position = 0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()

    def read(self, timeout: float) -> np.ndarray | None:
        wait = self._started + (self._position + self._block) / SAMPLE_RATE - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        time.sleep(max(wait, 0.0))
        block = self._audio[self._position : self._position + self._block]
        self._position += self._block
        return block if block.size == self._block else np.zeros(self._block, np.float32)

    def stats(self) -> MicStats:
        return MicStats("paced", "running", position_s=self._position / SAMPLE_RATE)

    def close(self) -> None:
        pass


def test_a_wedged_decode_stops_the_pings_between_a_microphones_blocks(tmp_path, int8_model_dir, eval_dir,
                                                                       monkeypatch) -> None:
    """With audio.block_ms over the main loop's 0.1 s read timeout, reads of a healthy microphone come
    back empty between blocks; those waits must not vouch for a decode that has hung (3 s here, over
    a DECODE_STALL_S scaled down to 0.5 s)."""
    from edge.asr.whisper.recognizer import Recognizer

    monkeypatch.setattr("edge.daemon.DECODE_STALL_S", 0.5)
    hanging = _HangingAccelerator(Recognizer.from_dir(int8_model_dir), hang_s=3.0)
    hanging.backend_name = "cpu"
    row = next(r for r in load_manifest("real_en") if r["audio"] == "jfk.wav")
    microphone = _PacedMicrophone(load_audio(row["path"]), block_ms=200)
    pings = _watchdog_pings(tmp_path, int8_model_dir, monkeypatch, microphone, hanging, seconds=5.0,
                            audio={"block_ms": 200})
    assert _longest_gap_s(pings) > 1.0, pings


def test_debug_recording_writes_one_wav_per_utterance(tmp_path, int8_model_dir, eval_dir) -> None:
    import soundfile

    row = next(r for r in load_manifest("real_en") if r["audio"] == "jfk.wav")
    recordings = tmp_path / "recordings"
    config = write_config(tmp_path, int8_model_dir, debug={"record_audio_dir": str(recordings)})
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "fast", "--exit-at-end")
    subscriber = Subscriber(tmp_path / "asr.sock")
    code, err = finish(daemon, 120)
    assert code == 0, err
    assert subscriber.closed.wait(5)
    files = sorted(recordings.glob("*.wav"))
    assert len(files) == len(subscriber.of("speech_end")) >= 1
    infos = [soundfile.info(f) for f in files]
    assert all(i.samplerate == 16000 and i.channels == 1 and i.frames > 0 for i in infos)
    assert sum(i.duration for i in infos) <= row["duration_s"]
    assert "record_audio_dir is set" in err


class _UnpluggedMidSentence(_PacedMicrophone):
    """Speech at real time until `cut_s`, then the device is gone: its last audio, a break, and nothing more."""

    def __init__(self, audio: np.ndarray, cut_s: float) -> None:
        super().__init__(audio[: int(cut_s * SAMPLE_RATE)], block_ms=20)

    def read(self, timeout: float) -> np.ndarray | None:
        if self._position >= self._audio.size:
            self.breaks = 1
            time.sleep(timeout)
            return None
        return super().read(timeout)

    def stats(self) -> MicStats:
        return MicStats("paced", "lost" if self.breaks else "running", position_s=self._position / SAMPLE_RATE)


def test_a_microphone_lost_mid_sentence_gets_the_sentences_final_at_once(tmp_path, int8_model_dir, eval_dir) -> None:
    """Its final waited for the device to come back (hours, or never) and then took in speech from after it."""
    from edge.asr.whisper.recognizer import Recognizer
    from edge.config import load_config
    from edge.daemon import Daemon

    row = load_manifest("longform_en")[0]
    source = _UnpluggedMidSentence(load_audio(row["path"]), cut_s=3.0)  # "If the reader will excuse me, I..." (0.8-4.8 s)
    config = write_config(tmp_path, int8_model_dir)
    daemon = Daemon(load_config(config), config, Recognizer.from_dir(int8_model_dir), source)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        subscriber = Subscriber(tmp_path / "asr.sock")
        final = subscriber.wait_for(lambda e: e["type"] == "final", 15)
    finally:
        daemon.request_stop()
        runner.join(10)
    assert source.breaks == 1 and "If the reader" in final["text"] and 2.5 < final["end_s"] <= 3.0


def test_reload_command_waits_for_the_daemons_answer(tmp_path, int8_model_dir, eval_dir) -> None:
    """`systemctl reload` ran `kill -HUP` and reported success before the daemon had read the file, even a broken one."""
    row = load_manifest("longform_en")[0]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "realtime")

    def reload() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge", "reload", "--socket", str(tmp_path / "asr.sock"),
                               "--pid", str(daemon.pid), "--timeout", "20"], capture_output=True, text=True, timeout=60)

    try:
        Subscriber(tmp_path / "asr.sock").wait_for(lambda e: e["type"] == "hello", 30)
        write_config(tmp_path, int8_model_dir, vad={"threshold": 7})
        broken = reload()
        assert broken.returncode == 1, broken
        assert "vad.threshold" in broken.stderr and "reload failed" in broken.stderr, broken.stderr
        write_config(tmp_path, int8_model_dir, log={"level": "debug"})
        fixed = reload()
        assert fixed.returncode == 0 and fixed.stdout.strip() == "edge-asr reload: reloaded", fixed
        gone = subprocess.run([sys.executable, "-m", "edge", "reload", "--socket", str(tmp_path / "asr.sock"),
                               "--pid", "999999999"], capture_output=True, text=True, timeout=60)
        assert gone.returncode == 1 and "no process 999999999" in gone.stderr, gone
    finally:
        reap(daemon)


def test_reload_by_the_units_config_route_signals_even_when_it_cannot_hear_the_answer(tmp_path, int8_model_dir,
                                                                                    eval_dir) -> None:
    """The unit runs `reload --config FILE`: an edit that broke the YAML left the daemon unsignalled (exit 78),
    so its subscribers never got config_invalid."""
    row = load_manifest("longform_en")[0]
    config = write_config(tmp_path, int8_model_dir)
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "realtime")
    try:
        watcher = Subscriber(tmp_path / "asr.sock")
        watcher.wait_for(lambda e: e["type"] == "hello", 30)
        fine = subprocess.run([sys.executable, "-m", "edge", "reload", "--config", str(config), "--pid", str(daemon.pid)],
                              capture_output=True, text=True, timeout=60)
        assert fine.returncode == 0 and fine.stdout.strip() == "edge-asr reload: reloaded", fine
        config.write_text(config.read_text() + "vad: [unclosed\n")
        broken = subprocess.run([sys.executable, "-m", "edge", "reload", "--config", str(config), "--pid",
                                 str(daemon.pid)], capture_output=True, text=True, timeout=60)
        assert broken.returncode == 1 and f"sent SIGHUP to {daemon.pid} but cannot hear its answer" in broken.stderr
        assert watcher.wait_for(lambda e: e["type"] == "error" and e["reason"] == "config_invalid", 20)
    finally:
        reap(daemon)
