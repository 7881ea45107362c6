"""Whisper's log-mel spectrogram in numpy, over the real audio length plus a short pad.

Whisper always encodes a 30 s window; encoding only the audio we have plus a
little silence is where most of our speed comes from on short utterances.
Too little silence makes the decoder loop ("In 1813. In 1813. ..."): on the
shared eval sets, greedy decoding looped on 21 of 96 clips with 2 s of pad
alone, and on none with at least `PAD_SECONDS` of pad and a window of at
least `MIN_WINDOW_SECONDS`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge.audio.base import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000: the encoder's largest input
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
PAD_SECONDS = 2.0
MIN_WINDOW_SECONDS = 10.0
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0
QUIET_FRAMES = 20  # 0.2 s: the stretch whose mean energy finds a pause between words


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    log = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """Triangular Slaney-normalised filters [N_MELS, N_FFT // 2 + 1], as Whisper was trained with."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2)
    edges = _mel_to_hz(mel_points)
    widths = np.diff(edges)
    slopes = edges[:, None] - fft_freqs[None, :]
    rising = -slopes[:-2] / widths[:-1, None]
    falling = slopes[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default), not numpy's symmetric one."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def _power_spectrum(audio: np.ndarray) -> np.ndarray:
    """|STFT|^2 [n_fft // 2 + 1, frames] of a centred, reflect-padded STFT, last frame dropped."""
    half = N_FFT // 2
    padded = np.pad(audio.astype(np.float32, copy=False), (half, half), mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames - 1, N_FFT),
        strides=(padded.strides[0] * HOP_LENGTH, padded.strides[0]),
        writeable=False,
    )
    spectrum = np.fft.rfft(frames * _hann(), axis=1)
    return (spectrum.real**2 + spectrum.imag**2).T.astype(np.float32)


def log_mel(audio: np.ndarray, pad_seconds: float = PAD_SECONDS) -> np.ndarray:
    """Log-mel [80, frames] of `audio` followed by `pad_seconds` of silence.

    The dynamic-range clamp uses the maximum over the whole input, as Whisper
    does over a whole file, so a window cut from this matches Whisper's.
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (1-D array), got shape {audio.shape}")
    pad = np.zeros(int(round(pad_seconds * SAMPLE_RATE)), dtype=np.float32)
    samples = np.concatenate([audio.astype(np.float32, copy=False), pad])
    if len(samples) <= N_FFT // 2:
        samples = np.pad(samples, (0, N_FFT // 2 + 1 - len(samples)))
    mel = mel_filters() @ _power_spectrum(samples)
    log_spec = np.log10(np.maximum(mel, LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def window_frames(content_frames: int, pad_seconds: float, min_window_seconds: float) -> int:
    """Even encoder input length for this much audio: content + pad, at least the minimum, at most 30 s.

    The encoder downsamples by 2, so the length must be even.
    """
    pad_frames = int(round(pad_seconds * FRAMES_PER_SECOND))
    min_frames = int(round(min_window_seconds * FRAMES_PER_SECOND))
    length = max(content_frames + pad_frames, min_frames)
    return min(N_FRAMES, length + length % 2)


def silence_floor(mel: np.ndarray, loudest: float | None = None) -> float:
    """The value digital silence takes in this spectrogram (log floor or the dynamic-range clamp).

    `loudest`: the largest value of the whole input when `mel` is only a piece of it.
    """
    top = float(mel.max()) if loudest is None else loudest
    return max((np.log10(LOG_FLOOR) + 4.0) / 4.0, top - DYNAMIC_RANGE / 4.0)


def encoder_window(mel: np.ndarray, start: int, content: int, length: int, loudest: float | None = None) -> np.ndarray:
    """Frames [start, start + content) followed by silence up to `length` frames (see `silence_floor`)."""
    window = mel[:, start : start + min(content, length)]
    if window.shape[1] < length:
        floor = np.full((mel.shape[0], length - window.shape[1]), silence_floor(mel, loudest), dtype=np.float32)
        window = np.concatenate([window, floor], axis=1)
    return np.ascontiguousarray(window)


def quietest_frame(mel: np.ndarray, start: int, end: int) -> int:
    """Frame in [start, end) at the centre of the quietest QUIET_FRAMES stretch: a pause to cut at."""
    energy = mel[:, start:end].mean(axis=0)
    if len(energy) <= QUIET_FRAMES:
        return end
    moving = np.convolve(energy, np.ones(QUIET_FRAMES) / QUIET_FRAMES, mode="valid")
    return start + int(moving.argmin()) + QUIET_FRAMES // 2
