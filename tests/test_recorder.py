"""`debug.record_audio_dir`: private files, written whole, bounded, and a directory the service cannot use refused."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

import edge.audio.recorder as recorder_module
from edge.audio.base import SAMPLE_RATE
from edge.audio.recorder import UtteranceRecorder
from edge.errors import SetupError

SECOND_BYTES = 2 * SAMPLE_RATE  # 16-bit mono
MB = 1_000_000


def _speech(seconds: float = 0.5) -> np.ndarray:
    return (0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) * 0.05)).astype(np.float32)


def _record(directory: Path, *clips: np.ndarray, max_bytes: int = 1000 * MB) -> UtteranceRecorder:
    recorder = UtteranceRecorder(directory, max_bytes)
    for number, clip in enumerate(clips, 1):
        recorder.save(number, float(number), clip)
    recorder.close(5.0)
    return recorder


def test_recordings_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        _record(tmp_path / "rec", _speech())
    finally:
        os.umask(old)
    (written,) = list((tmp_path / "rec").iterdir())
    assert stat.S_IMODE((tmp_path / "rec").stat().st_mode) == 0o700
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_recording_pauses_at_the_cap_and_says_so_once(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="edge.audio.recorder"):
        recorder = _record(tmp_path, _speech(1.0), _speech(1.0), _speech(1.0), max_bytes=SECOND_BYTES + 1000)
    assert (recorder.written, recorder.dropped) == (1, 2) and len(list(tmp_path.glob("*.wav"))) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "recording paused" in errors[0] and "debug.record_max_mb" in errors[0]


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _no_room(directory: Path, monkeypatch) -> None:
    """A free-space floor no file can pass, even if other processes free space meanwhile: with the
    floor at exactly the free space, a CI run that freed a few MB elsewhere let a file through."""
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    monkeypatch.setattr(recorder_module, "MIN_FREE_BYTES", free + 2**40)


def test_recording_goes_on_once_the_disk_has_room_again(tmp_path: Path, monkeypatch, caplog) -> None:
    """A low-disk moment (a journal burst, a big download) stopped recording until a restart."""
    _no_room(tmp_path, monkeypatch)
    caplog.set_level(logging.WARNING, logger="edge.audio.recorder")
    recorder = UtteranceRecorder(tmp_path, 1000 * MB)
    recorder.save(1, 1.0, _speech())
    recorder.save(2, 2.0, _speech())
    _wait(lambda: recorder.dropped == 2)
    monkeypatch.setattr(recorder_module, "MIN_FREE_BYTES", 0)  # room again
    recorder.save(3, 3.0, _speech())
    recorder.close(5.0)
    assert (recorder.written, recorder.dropped) == (1, 2) and len(list(tmp_path.glob("*.wav"))) == 1
    said = [r.getMessage() for r in caplog.records if "debug.record_audio_dir: recording" in r.getMessage()]
    assert len(said) == 2 and "recording paused" in said[0] and "file system has" in said[0]
    assert said[1] == "debug.record_audio_dir: recording again (2 utterances were not recorded meanwhile)"


def test_recordings_moved_away_make_room_under_the_cap(tmp_path: Path) -> None:
    recorder = UtteranceRecorder(tmp_path / "rec", SECOND_BYTES + 1000)
    recorder.save(1, 1.0, _speech(1.0))
    recorder.save(2, 2.0, _speech(1.0))
    _wait(lambda: recorder.written + recorder.dropped == 2)
    for path in (tmp_path / "rec").glob("*.wav"):
        path.rename(tmp_path / path.name)  # the technician takes them off the box
    recorder.save(3, 3.0, _speech(1.0))
    recorder.close(5.0)
    assert (recorder.written, recorder.dropped) == (2, 1)


def test_recordings_from_before_a_restart_count_toward_the_cap(tmp_path: Path) -> None:
    _record(tmp_path, _speech(1.0))
    assert _record(tmp_path, _speech(1.0), max_bytes=SECOND_BYTES + 1000).written == 0


def test_recording_keeps_the_file_system_its_floor(tmp_path: Path, monkeypatch, caplog) -> None:
    _no_room(tmp_path, monkeypatch)
    with caplog.at_level(logging.ERROR, logger="edge.audio.recorder"):
        recorder = _record(tmp_path, _speech())
    assert recorder.written == 0 and list(tmp_path.iterdir()) == []
    assert "file system has" in caplog.text


def test_a_failed_write_leaves_no_half_file_and_the_next_one_is_written(tmp_path: Path, monkeypatch, caplog) -> None:
    real_replace = os.replace
    calls = []

    def disk_full_once(source, target):
        calls.append(target)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(recorder_module.os, "replace", disk_full_once)
    with caplog.at_level(logging.ERROR, logger="edge.audio.recorder"):
        recorder = _record(tmp_path, _speech(), _speech())
    assert (recorder.written, recorder.dropped) == (1, 1)
    assert [p.name for p in tmp_path.iterdir()] == [Path(calls[1]).name]  # no .part left behind
    assert "No space left on device" in caplog.text and "Traceback" not in caplog.text


def test_each_file_is_a_whole_wav(tmp_path: Path) -> None:
    import soundfile

    _record(tmp_path, _speech(0.7))
    (written,) = tmp_path.iterdir()
    assert soundfile.info(written).frames == int(0.7 * SAMPLE_RATE)


def test_a_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    """A setup error (exit 78): a restart cannot mend it, and each of systemd's five reloaded the model."""
    (tmp_path / "file").write_text("")
    with pytest.raises(SetupError, match=r"^debug.record_audio_dir: cannot create .*/file/rec: Not a directory$"):
        UtteranceRecorder(tmp_path / "file" / "rec", MB)


def test_a_directory_the_service_cannot_write_stops_the_start(tmp_path: Path, monkeypatch) -> None:
    # Root writes anywhere, so the service user's answer is given here.
    monkeypatch.setattr(recorder_module.os, "access", lambda path, mode: False)
    with pytest.raises(SetupError, match="is not writable by this user"):
        UtteranceRecorder(tmp_path, MB)
