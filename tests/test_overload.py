"""Recognition slower than real time: partials suspended, then quick finals, then stale finals dropped, all reported."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from prometheus_client import generate_latest

from edge.asr.base import Transcript
from edge.audio.audiofile import load_audio
from edge.audio.base import SAMPLE_RATE
from edge.limits import MAX_UTTERANCE_S
from edge.publish import protocol
from edge.service.metrics import Metrics
from edge.stream.session import StreamingSession, StreamSettings
from edge.stream.worker import Job, OverloadPolicy, Worker
from edge.vad.endpointer import EndpointSettings
from tests.conftest import load_manifest
from tests.test_daemon import Subscriber, write_config
from tests.test_streaming import BLOCK, Collector


class _Slow:
    """A recognizer `factor` times slower than real time (`quick_factor` for one greedy pass), on a stream
    fed `speed` times faster than real time; it answers how much audio it heard."""

    backend_name = "cpu"
    languages = ("en",)

    def __init__(self, factor: float, quick_factor: float, speed: float = 1.0) -> None:
        self.factor, self.quick_factor, self.speed = factor, quick_factor, speed

    def options(self, *, beam_size: int = 5, **_: object) -> int:  # language, prompt, ...: whatever the family takes
        return beam_size

    def vocabulary_advice(self, vocabulary: object, language: str) -> None:
        return None

    def transcribe(self, audio: np.ndarray, *, partial: bool = False, context=(), options=None, interrupt=None) -> Transcript:
        seconds = audio.size / SAMPLE_RATE
        time.sleep(seconds * (self.quick_factor if partial else self.factor) / self.speed)
        return Transcript(f"{seconds:.1f} seconds", (1,), 0.0, 0.0, 1.0, ())


def _job(end_s: float, cancelled: bool = False) -> Job:
    audio = np.zeros(SAMPLE_RATE, dtype=np.float32)  # 1 s each
    return Job("final", 0, int((end_s - 1) * SAMPLE_RATE), int(end_s * SAMPLE_RATE), audio, cancelled=cancelled)


def _closed_utterances(events: list) -> None:
    """Every speech_start got exactly one final, and finals came in utterance order."""
    started = [e.utterance_id for e in events if e.TYPE == "speech_start"]
    assert [e.utterance_id for e in events if e.TYPE == "final"] == started


# --- the policy and the queue -------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag_s", "level"),
    [(0.0, "none"), (2.99, "none"), (3.0, "partials_suspended"), (9.99, "partials_suspended"),
     (10.0, "greedy_finals"), (59.9, "greedy_finals"), (60.0, "dropping_finals"), (600.0, "dropping_finals")],
)
def test_overload_levels_follow_the_lag(lag_s: float, level: str) -> None:
    assert OverloadPolicy().level(lag_s) == level


def test_lag_counts_the_running_final_and_shedding_spares_it() -> None:
    release, running = threading.Event(), threading.Event()

    def run(job: Job) -> None:
        running.set()
        release.wait(5)

    worker = Worker(run)
    try:
        first, stale, cancelled, fresh = _job(1.0), _job(2.0), _job(3.0, cancelled=True), _job(70.0)
        worker.submit(first)
        assert running.wait(5)
        for job in (stale, cancelled, fresh):
            worker.submit(job)
        now = 71 * SAMPLE_RATE
        backlog = worker.backlog(now)
        assert backlog.lag_s == 70.0  # from the end of the final being decoded
        assert backlog.audio_s == 3.0  # the cancelled one holds no one up
        assert worker.shed(now - 60 * SAMPLE_RATE) == [stale]  # not the running one, not the cancelled one
        assert worker.pending_finals == 1  # the cancelled one's audio is let go too
        assert worker.backlog(now).audio_s == 2.0
    finally:
        release.set()
        worker.stop(5)


def test_dropped_is_on_the_wire_only_when_true() -> None:
    plain = protocol.Final(utterance_id=3, text="hi", start_s=1.0, end_s=2.0, audio_time_s=2.5)
    dropped = protocol.Final(utterance_id=3, text="", start_s=1.0, end_s=2.0, audio_time_s=70.0, dropped=True)
    assert "dropped" not in plain.to_dict()  # every other final stays byte for byte as it was
    assert dropped.encode().endswith(b',"dropped":true}\n')
    assert protocol.Event.from_dict(dropped.to_dict()) == dropped
    assert protocol.Event.from_dict(plain.to_dict()) == plain
    with pytest.raises(protocol.ProtocolError, match="final.dropped must be true or false"):
        protocol.validate({**dropped.to_dict(), "dropped": "yes"})


def test_overload_metrics_follow_the_sessions_totals() -> None:
    metrics = Metrics()
    totals = {"partials_skipped": 4, "partials_interrupted": 3, "finals_degraded": 2, "finals_dropped": 1,
              "finals_dropped_s": 3.5, "decode_failures": 7}
    metrics.record_overload({"lag_s": 61.5, **totals})
    metrics.record_overload({"lag_s": 12.0, **totals, "finals_dropped": 2, "finals_dropped_s": 5.0})
    text = generate_latest(metrics.registry).decode()
    assert _metric(text, "edge_asr_lag_seconds") == 12.0
    assert _metric(text, "edge_asr_partials_skipped_total") == 4
    assert _metric(text, "edge_asr_partials_interrupted_total") == 3
    assert _metric(text, "edge_asr_finals_degraded_total") == 2
    assert _metric(text, "edge_asr_finals_dropped_total") == 2
    assert _metric(text, "edge_asr_finals_dropped_seconds_total") == 5.0
    assert _metric(text, "edge_asr_decode_failures_total") == 7
    metrics.record_final(latency_s=70.0, audio_s=2.0, decode_s=0.0)  # a dropped final: no decode, no speed
    text = generate_latest(metrics.registry).decode()
    assert _metric(text, "edge_asr_real_time_factor_count") == 0 and _metric(text, "edge_asr_utterances_total") == 1


# --- the session, on a stream fed faster than real time -----------------------------------


def test_a_slow_recognizer_suspends_partials_then_hurries_then_drops_in_order(eval_dir) -> None:
    """Stream time runs 10x the wall clock, so a recognizer sleeping 0.3x (0.15x greedy) is 3x (1.5x) too slow."""
    speed = 10.0
    audio = load_audio(load_manifest("longform_en")[0]["path"])
    out = Collector()
    policy = OverloadPolicy(partials_off_s=1.0, greedy_s=2.0, max_lag_s=6.0)
    session = StreamingSession(_Slow(3.0, 1.5, speed), EndpointSettings.from_config(), StreamSettings.from_config(),
                               out.emit, out.errors.append, overload=policy)
    biggest_backlog = 0.0
    began = time.monotonic()
    try:
        for i in range(0, audio.size, BLOCK):
            session.feed(audio[i : i + BLOCK])
            biggest_backlog = max(biggest_backlog, session.stats()["backlog_s"])
            time.sleep(max(0.0, began + (i + BLOCK) / SAMPLE_RATE / speed - time.monotonic()))
        stats = session.stats()
        session.finish()
        assert session.drain(60)
    finally:
        session.close()
    assert out.errors == []
    assert stats["partials_skipped"] > 0 and stats["finals_degraded"] > 0 and stats["finals_dropped"] > 0
    dropped = [e for e in out.of("final") if e.dropped]
    assert len(dropped) == session.stats()["finals_dropped"]
    assert sum(e.end_s - e.start_s for e in dropped) == pytest.approx(session.stats()["finals_dropped_s"], abs=0.01)
    _closed_utterances(out.events)
    assert biggest_backlog <= policy.max_lag_s + 2 * MAX_UTTERANCE_S


def test_a_recognizer_that_keeps_up_gives_nothing_up(eval_dir) -> None:
    audio = load_audio(load_manifest("longform_en")[0]["path"])[: 20 * SAMPLE_RATE]
    out = Collector()
    session = StreamingSession(_Slow(0.05, 0.05, 10.0), EndpointSettings.from_config(), StreamSettings.from_config(),
                               out.emit, out.errors.append)
    try:
        for i in range(0, audio.size, BLOCK):
            session.feed(audio[i : i + BLOCK])
            time.sleep(BLOCK / SAMPLE_RATE / 10)
        session.finish()
        assert session.drain(10)
        stats = session.stats()
    finally:
        session.close()
    assert (stats["partials_skipped"], stats["finals_degraded"], stats["finals_dropped"]) == (0, 0, 0)
    assert stats["lag_s"] == 0.0 and stats["overload"] == "none"
    assert out.of("final") and not any(e.dropped for e in out.of("final"))


# --- the daemon, at real-time pace for two minutes -----------------------------------------


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


QUICK = 3.0  # how much slower than real time the two-minute test's recognizer is even greedy


def test_two_minutes_at_real_time_on_a_recognizer_too_slow_for_it(tmp_path, int8_model_dir, eval_dir,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """4x too slow (3x even greedy): lag and queued audio stay bounded; everything given up is reported."""
    from edge.audio.file import FileSource
    from edge.config import load_config
    from edge.daemon import OVERLOAD_EVENT_GAP_S, Daemon

    rows = load_manifest("longform_en")[:2]
    wav = tmp_path / "two_minutes.wav"
    soundfile.write(wav, np.concatenate([load_audio(row["path"]) for row in rows]), SAMPLE_RATE)
    config = write_config(tmp_path, int8_model_dir)
    source = FileSource(wav, pace="realtime")
    daemon = Daemon(load_config(config), config, _Slow(4.0, QUICK), source)
    caplog.set_level(logging.INFO, logger="edge.daemon")
    runner = threading.Thread(target=daemon.run)
    runner.start()
    samples: list[tuple[dict, str, float]] = []
    try:
        subscriber = Subscriber(tmp_path / "asr.sock")
        deadline = time.monotonic() + 200  # the file plays in 124 s
        while not source.ended:
            assert runner.is_alive() and time.monotonic() < deadline, "the daemon stopped, or the file never ended"
            time.sleep(1.0)
            samples.append((daemon.status(), generate_latest(daemon._metrics.registry).decode(), _rss_mib()))
    finally:
        daemon.request_stop()
        runner.join(10)
    assert not runner.is_alive()
    assert subscriber.closed.wait(5)

    statuses = [status for status, _, _ in samples]
    lags = [status["lag_s"] for status in statuses]
    policy = OverloadPolicy()
    assert max(lags) >= policy.max_lag_s, lags  # the test did overload it
    assert max(lags) <= policy.max_lag_s + QUICK * MAX_UTTERANCE_S, lags  # plus at most one (greedy) decode
    assert max(status["backlog_s"] for status in statuses) <= policy.max_lag_s + 2 * MAX_UTTERANCE_S
    rss = [mib for _, _, mib in samples]
    assert max(rss[10:]) - rss[10] < 64  # nothing grows with the backlog

    last = statuses[-1]
    assert last["partials_skipped"] > 0 and last["finals_degraded"] > 0 and last["finals_dropped"] > 0
    metrics = samples[-1][1]
    assert _metric(metrics, "edge_asr_lag_seconds") == pytest.approx(last["lag_s"], abs=2.0)
    assert _metric(metrics, "edge_asr_finals_dropped_total") == last["finals_dropped"]
    assert _metric(metrics, "edge_asr_finals_degraded_total") > 0

    told = [e for e in subscriber.of("status") if e.get("message", "").startswith("overload: ")]
    assert [e["message"] for e in told][0] == "overload: partials_suspended"
    assert "overload: dropping_finals" in [e["message"] for e in told]
    gaps = np.diff([e["_received"] for e in told])
    assert (gaps >= OVERLOAD_EVENT_GAP_S - 0.1).all()
    logged = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records if r.getMessage().startswith("overload: ")]
    assert ("WARNING", "overload: partials_suspended") in logged and ("WARNING", "overload: dropping_finals") in logged

    dropped = [e for e in subscriber.of("final") if e.get("dropped")]
    errors = [e for e in subscriber.of("error") if e["reason"] == "overload"]
    assert len(dropped) == len(errors) >= last["finals_dropped"]
    assert all(f"utterance {e['utterance_id']} " in error["message"] for e, error in zip(dropped, errors))
    started = [e["utterance_id"] for e in subscriber.of("speech_start")]
    assert [e["utterance_id"] for e in subscriber.of("final")] == started  # every utterance closed, in order


def test_a_file_read_ahead_at_fast_pace_is_told_at_info_not_as_a_warning(tmp_path, int8_model_dir, eval_dir,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """`scripts/setup.sh`'s demo plays a file at fast pace: the reader runs ahead while a final decodes and
    partials pause, which is expected there; the demo printed it as a WARNING, as if the box were too slow."""
    from edge.audio.file import FileSource
    from edge.config import load_config
    from edge.daemon import Daemon

    config = write_config(tmp_path, int8_model_dir)
    source = FileSource(load_manifest("longform_en")[0]["path"], pace="fast")
    daemon = Daemon(load_config(config), config, _Slow(0.25, 0.05), source, exit_at_end=True)
    with caplog.at_level(logging.INFO, logger="edge.daemon"):
        assert daemon.run() == 0
    told = [(record.levelname, record.getMessage()) for record in caplog.records
            if record.getMessage().startswith("overload: ")]
    assert told and told[0][1].startswith("overload: partials_suspended"), told  # the read-ahead did happen
    assert {level for level, _ in told} == {"INFO"}, told
    assert not [message for _, message in told if "greedy_finals" in message or "dropping_finals" in message]
