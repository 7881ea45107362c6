"""Read any WAV/FLAC file into the one format the recognizer takes: 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000


class AudioFileError(ValueError):
    """A file that cannot be used as audio; the message names the file and says why."""


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Downmix by averaging channels (keeps level), then resample with soxr's high quality."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono


def load_audio(path: str | Path) -> np.ndarray:
    """Decode a file to 16 kHz mono float32; raise AudioFileError on anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioFileError(f"{path}: not a readable WAV/FLAC file ({reason})") from None
    if samples.shape[0] == 0:
        raise AudioFileError(f"{path}: contains no audio samples")
    if not np.isfinite(samples).all():
        raise AudioFileError(f"{path}: contains NaN or infinite samples")
    return to_mono_16k(samples, rate)
