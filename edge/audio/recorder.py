"""Utterance recording for diagnosis (`debug.record_audio_dir`).

Audio reaches the disk only when a technician sets that key. Files are written
on the recorder's own thread from a bounded queue: disk I/O never stalls the
audio path or the recognizer, and a slow disk loses recordings, not speech.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from edge.audio.base import SAMPLE_RATE

log = logging.getLogger(__name__)

MAX_PENDING = 16


class UtteranceRecorder:
    """Writes each utterance's 16 kHz audio as a 16-bit WAV file."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        _private_dir(self.directory)
        self.written = 0
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, np.ndarray] | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()
        log.warning("debug.record_audio_dir is set: utterance audio is written to %s", self.directory)

    def save(self, utterance_id: int, start_s: float, audio: np.ndarray) -> None:
        """Queue one utterance; never blocks (a full queue drops it and counts it)."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-utt{utterance_id:06d}-at{start_s:.2f}s.wav"
        try:
            self._queue.put_nowait((name, audio))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (within `timeout`), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            name, audio = item
            try:
                _write_private(self.directory / name, audio)
                self.written += 1
            except (OSError, RuntimeError) as exc:  # soundfile reports I/O errors as RuntimeError
                self.dropped += 1
                log.error("debug.record_audio_dir: cannot write %s: %s", self.directory / name, exc)


def _private_dir(directory: Path) -> None:
    """Recorded speech is private: a directory this creates is 0700 whatever the umask."""
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)


def _write_private(path: Path, audio: np.ndarray) -> None:
    """A 16-bit WAV created 0600 (not the umask's usual 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as handle:
        soundfile.write(handle, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
