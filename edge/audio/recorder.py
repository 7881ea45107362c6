"""Utterance recording for diagnosis (`debug.record_audio_dir`).

Audio reaches the disk only when a technician sets that key. Files are written
on the recorder's own thread from a bounded queue: disk I/O never stalls the
audio path or the recognizer, and a slow disk loses recordings, not speech.

Speech is about 115 MB an hour of 16-bit 16 kHz audio, and a key left set runs for
months: recording pauses (and says so once) at `debug.record_max_mb` of recordings in
the directory, or when the file system has less than MIN_FREE_BYTES left for the box,
and goes on (saying so) once recordings were moved away or the space came back; a
low-disk moment used to stop it until a restart.
Each file is encoded in memory and renamed into place once whole, so a full disk or a
kill never leaves a WAV whose header and data disagree.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from edge.audio.base import SAMPLE_RATE
from edge.errors import SetupError
from edge.files import write_whole

log = logging.getLogger(__name__)

MAX_PENDING = 16
MIN_FREE_BYTES = 256 * 2**20  # left to the journal and the rest of the box
PATTERN = "*-utt*.wav"  # this recorder's files (the name `save` gives)


class UtteranceRecorder:
    """Writes each utterance's 16 kHz audio as a 16-bit WAV file."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        private_dir(self.directory, "debug.record_audio_dir")
        self.max_bytes = max_bytes
        self.used = self._recorded_bytes()
        self.written = 0
        self.dropped = 0
        self._paused: str | None = None  # why recording is paused
        self._queue: queue.Queue[tuple[str, np.ndarray] | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()
        log.warning("debug.record_audio_dir is set: utterance audio is written to %s (%.0f of %.0f MB used)",
                    self.directory, self.used / 1e6, max_bytes / 1e6)

    def save(self, utterance_id: int, start_s: float, audio: np.ndarray) -> None:
        """Queue one utterance; never blocks (a full queue drops it, counts it and says so the first time)."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-utt{utterance_id:06d}-at{start_s:.2f}s.wav"
        try:
            self._queue.put_nowait((name, audio))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("debug.record_audio_dir: the disk is slower than the speech; recordings are dropped")

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (within `timeout`), stop the thread, and say what was lost."""
        try:
            self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
        except queue.Full:
            pass
        if self.dropped:
            log.warning("debug.record_audio_dir: %d utterances recorded, %d not", self.written, self.dropped)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            self._write(*item)

    def _write(self, name: str, audio: np.ndarray) -> None:
        data = wav_bytes(audio)
        why = self._full(len(data))
        if why is not None:
            self.dropped += 1
            if self._paused is None:
                log.error("debug.record_audio_dir: recording paused: %s", why)
            self._paused = why
            return
        if self._paused is not None:
            log.warning("debug.record_audio_dir: recording again (%d utterances were not recorded meanwhile)",
                        self.dropped)
            self._paused = None
        try:
            write_whole(self.directory / name, data, 0o600)  # recorded speech is private
        except OSError as exc:
            self.dropped += 1
            log.error("debug.record_audio_dir: cannot write %s: %s", self.directory / name, exc.strerror or exc)
            return
        self.written += 1
        self.used += len(data)

    def _full(self, size: int) -> str | None:
        """Why a file of `size` bytes must not be written, or None."""
        if self.used + size > self.max_bytes and self._paused is not None:
            self.used = self._recorded_bytes()  # some may have been moved away since
        if self.used + size > self.max_bytes:
            return (f"{self.directory} holds {self.used / 1e6:.0f} MB of recordings, debug.record_max_mb is "
                    f"{self.max_bytes / 1e6:.0f} (move them away, or raise the key)")
        try:
            disk = os.statvfs(self.directory)
        except OSError:
            return None  # the write itself will tell
        free = disk.f_bavail * disk.f_frsize
        if free - size < MIN_FREE_BYTES:
            return f"{self.directory}'s file system has {free / 1e6:.0f} MB free (kept: {MIN_FREE_BYTES / 1e6:.0f} MB)"
        return None


    def _recorded_bytes(self) -> int:
        total = 0
        for path in self.directory.glob(PATTERN):
            with contextlib.suppress(OSError):  # moved away between the listing and the stat
                total += path.stat().st_size
        return total


def private_dir(directory: Path, key: str) -> None:
    """Recorded speech is private: a directory this creates is 0700 whatever the umask. One this user
    cannot write to is said now (`key` names the setting), not after the first speech was lost."""
    try:
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
    except OSError as exc:
        raise SetupError(f"{key}: cannot create {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SetupError(f"{key}: {directory} is not writable by this user (uid {os.geteuid()})")


def wav_bytes(audio: np.ndarray) -> bytes:
    """16 kHz audio as a whole 16-bit WAV file, to be written in one go (`write_whole`)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()
