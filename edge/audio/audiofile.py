"""Read any WAV/FLAC (or MP3/Ogg) file into the one format the recognizer takes: 16 kHz mono float32.

`AudioReader` decodes and resamples block by block, so memory does not depend on
the length of the file; `load_audio` is the same reader drained into one array.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf
import soxr

from edge.audio.base import SAMPLE_RATE, SourceError

# libsndfile repairs a WAV whose data chunk is shorter than its header says and
# only mentions it in its log, e.g. "data : 352000 (should be 175978)".
_WAV_SHORT_DATA = re.compile(r"^data : (\d+) \(should be \d+\)", re.MULTILINE)
# A recorder writing to a pipe cannot go back to fill in the sizes: arecord writes 2^31, sox
# 2^31 - 4096, others 2^31 - 1 or 2^32 - 1 (and 0, refused apart). Only these are "streamed": a real
# data chunk may be larger than 2 GiB (4 h of 48 kHz stereo: 2.76 GB), and one of those cut short
# passed as streamed, with no word of the cut.
STREAMED_DATA_SIZES = frozenset({0x80000000, 0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFF})
UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's length of a FLAC whose header gives none
MAX_PEAK = 32.0  # float samples past this are integers stored as float (tiny.en read JFK at +-32767 as "No")
HEADER_SLACK = 4096  # bytes a header with metadata chunks may take before any audio
# Compressed formats whose header gives an estimate of the length, not a count: an MP3 without
# a Xing/Info frame declared 267,365 frames and decoded 266,112 (libsndfile 1.2.2, a review's file).
ESTIMATED_LENGTH = ("MP3", "OGG")
ESTIMATE_SLACK = 0.02  # of the estimate: fewer frames than that is a cut file (half an MP3: 38,063 of 80,000)
MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: any real recording lies between
# Samples (all channels together) decoded per read: 256 KiB of float32, 4 s of
# 16 kHz mono or 0.7 s of 44.1 kHz stereo; whatever the file's length or format.
READ_SAMPLES = 1 << 16
SALVAGE_FRAMES = 1024  # frames per read where a block met damage: what is kept before it


class AudioFileError(SourceError):
    """A file that cannot be used as audio; the message names the file and says why."""


def _check_readable(path: Path) -> None:
    """A regular, readable file, or a message that says which it is not (libsndfile's own is "System error.")."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise AudioFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise AudioFileError(f"{path}: not a regular file (a FIFO or device is not an audio file)")
    if info.st_size == 0:
        raise AudioFileError(f"{path}: is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"{path}: permission denied")


_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


_OPENING = re.compile(r"^Error opening .*?: ")  # libsndfile's own "Error opening b'/path': " before the reason


def _reason(exc: Exception) -> str:
    return _OPENING.sub("", str(exc).splitlines()[0]) if str(exc) else type(exc).__name__


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """libsndfile's errors (an unknown format, a FLAC that lost sync) as one line naming the file."""
    try:
        yield
    except _DECODE_ERRORS as exc:
        raise AudioFileError(f"{path}: not a readable audio file: WAV, FLAC, MP3 or Ogg ({_reason(exc)})") from None


def _check_header(path: Path, decoder: sf.SoundFile) -> bool:
    """Refuse what the header alone shows: a 1 Hz rate asks the resampler for gigabytes. True for a WAV
    whose data ends before its header says (a copy cut short): its audio is read, and the cut told after it."""
    if not MIN_RATE <= decoder.samplerate <= MAX_RATE:
        raise AudioFileError(f"{path}: sample rate {decoder.samplerate} Hz is not audio ({MIN_RATE}-{MAX_RATE} Hz)")
    size = path.stat().st_size
    if decoder.format in ESTIMATED_LENGTH:
        if decoder.frames == 0:
            raise AudioFileError(f"{path}: contains no audio samples (or is cut short)")
        return False
    if decoder.frames == 0 and size > HEADER_SLACK:
        raise AudioFileError(f"{path}: its header declares no audio samples, but the file holds {size} "
                             "bytes (a recording stopped before it wrote the header's sizes: `sox --ignore-length` "
                             "can repair it)")
    if decoder.frames == 0:
        raise AudioFileError(f"{path}: contains no audio samples")
    if decoder.frames == UNKNOWN_FRAMES:
        raise AudioFileError(f"{path}: a FLAC whose header gives no length (encoded to a pipe), which libsndfile "
                             "cannot read to the end: re-encode it to a file (`flac -d` then `flac`, or ffmpeg)")
    short = _WAV_SHORT_DATA.search(decoder.extra_info or "")
    return short is not None and int(short.group(1)) not in STREAMED_DATA_SIZES  # streamed WAVs with no size are fine


def _truncated(path: Path) -> AudioFileError:
    return AudioFileError(f"{path}: truncated (the file ends before the audio its header declares)")


def _downmix(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] -> mono by averaging the channels (keeps the level)."""
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))


class AudioReader:
    """A WAV/FLAC (or MP3/Ogg) file as 16 kHz mono float32 blocks, decoded and resampled (soxr HQ) as they are read.

    Opening checks all that the header tells (path, format, rate, length), so a bad
    file fails before any work; damage found further in (a cut FLAC, NaN samples,
    fewer samples than declared, a WAV whose data ends before its header says) raises
    `AudioFileError` after the audio before it: an interrupted copy of an hour's WAV keeps
    the transcript of what was copied.
    Each iteration starts again from the beginning; close the reader (or use `with`) when done.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _check_readable(self.path)
        with _decoding(self.path):
            self._decoder = sf.SoundFile(os.fsencode(self.path))  # a name that is not UTF-8 too
        try:
            self._cut = _check_header(self.path, self._decoder)
        except AudioFileError:
            self._decoder.close()
            raise

    @property
    def duration_s(self) -> float:
        """What the header declares."""
        return self._decoder.frames / self._decoder.samplerate

    def __iter__(self) -> Iterator[np.ndarray]:
        rate, declared = self._decoder.samplerate, self._decoder.frames
        resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", "HQ")
        frames = max(1, READ_SAMPLES // self._decoder.channels)
        done = 0
        with _decoding(self.path):
            self._decoder.seek(0)
        while True:
            samples, broken = self._read(frames, done)
            damage = self._damage(samples)
            if damage is None and broken is not None:
                damage = len(samples), broken
            if damage is not None:
                samples = samples[: damage[0]]
            done += len(samples)
            last = len(samples) < frames or damage is not None
            mono = _downmix(samples)
            block = mono if resampler is None else resampler.resample_chunk(mono, last=last)
            if len(block):
                yield block
            if damage is not None:
                raise damage[1]
            if last:
                break
        estimated = self._decoder.format in ESTIMATED_LENGTH
        if self._cut or done < (declared * (1 - ESTIMATE_SLACK) if estimated else declared):
            raise _truncated(self.path)

    def _read(self, frames: int, done: int) -> tuple[np.ndarray, AudioFileError | None]:
        """Up to `frames` from frame `done`, and the decode error that stopped them short, if any. A read
        that meets damage (a cut FLAC) raises and returns nothing: the block is read again from `done` in
        small steps, which kept 1.7 s of a cut 20 s FLAC that whole blocks (up to 4 s) lost."""
        try:
            return self._decoder.read(frames, dtype="float32", always_2d=True), None
        except _DECODE_ERRORS as exc:
            reason = _reason(exc)
        kept, got = [np.zeros((0, self._decoder.channels), np.float32)], 0
        try:
            self._decoder.seek(done)
            while got < frames:
                step = self._decoder.read(min(SALVAGE_FRAMES, frames - got), dtype="float32", always_2d=True)
                if not len(step):
                    break
                kept.append(step)
                got += len(step)
        except _DECODE_ERRORS:
            pass
        samples = np.concatenate(kept)
        if len(samples) == frames:  # the small reads got through where the large one failed: no damage after all
            return samples, None
        at_s = (done + len(samples)) / self._decoder.samplerate
        return samples, AudioFileError(f"{self.path}: damaged {at_s:.1f} s in; the audio before it was read ({reason})")

    def _damage(self, samples: np.ndarray) -> tuple[int, AudioFileError] | None:
        """The first frame that is not audio, and why; None when all are. The frames before it are delivered
        (docs/operations.md: what came before is recognised)."""
        bad = ~np.isfinite(samples).all(axis=1) | (np.abs(samples) > MAX_PEAK).any(axis=1)
        if not bad.any():
            return None
        first = int(np.argmax(bad))
        if not np.isfinite(samples[first]).all():
            return first, AudioFileError(f"{self.path}: contains NaN or infinite samples")
        peak = float(np.abs(samples[np.isfinite(samples)]).max())  # of the block: the first bad frame's may be lower
        return first, AudioFileError(f"{self.path}: float samples reach {peak:.0f}, far outside -1..1 (integer "
                                     "values stored as float?); scale them to -1..1")

    def close(self) -> None:
        self._decoder.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def load_audio(path: str | Path) -> np.ndarray:
    """A whole file as one 16 kHz mono float32 array (short files, tests); AudioFileError on anything unusable."""
    with AudioReader(path) as reader:
        try:
            return np.concatenate([np.zeros(0, np.float32), *reader])
        except MemoryError:
            raise AudioFileError(f"{reader.path}: too large to decode in memory") from None
