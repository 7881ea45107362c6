"""The real microphone path end to end: PulseAudio virtual mic -> PortAudio -> daemon -> socket.

longform_01.wav is played into the null sink in real time (about 50 s) while
`edge-asr run --source mic` listens to its monitor; the finals must be about as
accurate as the offline recognizer on the same file.
"""

from __future__ import annotations

import signal
import time

from tests.conftest import load_manifest
from tests.test_daemon import Subscriber, finish, start_daemon, wer, write_config


def _listening(subscriber: Subscriber, timeout: float) -> float:
    """Wait until the daemon reports audio flowing from the device; returns its stream position."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = len(subscriber.events)
        subscriber.request_status()
        status = subscriber.wait_for(lambda e: e["type"] == "status" and e.get("subscriber_id"), 5, after=seen)
        if status["state"] == "listening":
            return status["audio_time_s"]
        time.sleep(0.2)
    raise AssertionError("the daemon never started listening to the virtual microphone")


def test_microphone_finals_match_the_offline_recognizer(
    tmp_path, int8_model_dir, eval_dir, virtual_mic, offline
) -> None:
    row = load_manifest("longform_en")[0]
    config = write_config(tmp_path, int8_model_dir, audio={"device": virtual_mic.device})
    daemon = start_daemon(config, "mic")
    try:
        subscriber = Subscriber(tmp_path / "asr.sock")
        played_at = _listening(subscriber, 30)  # stream time when playback starts (roughly)
        virtual_mic.play(row["path"], wait=True)
        last_end = played_at + row["segments"][-1]["end"]
        subscriber.wait_for(lambda e: e["type"] == "final" and e["end_s"] >= last_end - 1.0, 10)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 10)
    assert code == 0, err
    finals = [e["text"] for e in subscriber.of("final")]
    streaming_wer = wer([row["text"]], finals)
    offline_wer = wer([row["text"]], [offline(row["path"])])
    assert streaming_wer <= offline_wer + 0.02, (streaming_wer, offline_wer, finals)
