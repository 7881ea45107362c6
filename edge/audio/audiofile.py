"""Read any WAV/FLAC file into the one format the recognizer takes: 16 kHz mono float32."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.audio.base import SAMPLE_RATE, SourceError

# libsndfile repairs a WAV whose data chunk is shorter than its header says and
# only mentions it in its log, e.g. "data : 352000 (should be 175978)".
_WAV_SHORT_DATA = re.compile(r"^data : (\d+) \(should be \d+\)", re.MULTILINE)
_STREAMED_SIZES = {0, 0xFFFFFFFF}
MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: any real recording lies between


class AudioFileError(SourceError):
    """A file that cannot be used as audio; the message names the file and says why."""


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Downmix by averaging channels (keeps level), then resample with soxr's high quality."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono


def _check_readable(path: Path) -> None:
    """A regular, readable file, or a message that says which it is not (libsndfile's own is "System error.")."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        raise AudioFileError(f"{path}: not a regular file (a FIFO or device is not an audio file)")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"{path}: permission denied")


def _check_header(path: Path, info: sf._SoundFileInfo) -> None:
    """Refuse headers no recording has: a 1 Hz rate asks the resampler for gigabytes."""
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioFileError(f"{path}: sample rate {info.samplerate} Hz is not audio ({MIN_RATE}-{MAX_RATE} Hz)")


def _is_truncated(declared_frames: int, decoder_log: str, frames_read: int) -> bool:
    """Fewer samples than the header promised (streamed WAVs with no size are fine)."""
    if frames_read < declared_frames:
        return True
    short = _WAV_SHORT_DATA.search(decoder_log)
    return short is not None and int(short.group(1)) not in _STREAMED_SIZES


def load_audio(path: str | Path) -> np.ndarray:
    """Decode a file to 16 kHz mono float32; raise AudioFileError on anything unusable."""
    path = Path(path)
    _check_readable(path)
    try:
        info = sf.info(str(path))
        _check_header(path, info)
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioFileError(f"{path}: not a readable WAV/FLAC file ({reason})") from None
    except MemoryError:
        raise AudioFileError(f"{path}: too large to decode in memory") from None
    if samples.shape[0] == 0:
        raise AudioFileError(f"{path}: contains no audio samples")
    if _is_truncated(info.frames, info.extra_info or "", samples.shape[0]):
        raise AudioFileError(f"{path}: truncated (the file ends before the audio its header declares)")
    if not np.isfinite(samples).all():
        raise AudioFileError(f"{path}: contains NaN or infinite samples")
    return to_mono_16k(samples, rate)
