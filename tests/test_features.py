"""Log-mel features against faster-whisper's extractor (an independent numpy implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from edge.audio.audiofile import load_audio
from edge.asr.whisper.features import (
    N_FRAMES,
    N_MELS,
    encoder_window,
    log_mel,
    mel_filters,
    quietest_frame,
    silence_floor,
    window_frames,
)


@pytest.fixture(scope="module")
def reference() -> FeatureExtractor:
    return FeatureExtractor(feature_size=N_MELS)


def _reference_log_mel(reference: FeatureExtractor, audio: np.ndarray, pad_seconds: float) -> np.ndarray:
    """faster-whisper appends `padding` zero samples, as we append pad_seconds of silence."""
    return reference(audio, padding=int(pad_seconds * 16000))


def test_mel_filters_match(reference):
    np.testing.assert_allclose(mel_filters(), reference.mel_filters, atol=1e-7)


@pytest.mark.parametrize("pad_seconds", [0.01, 2.0, 10.0])
def test_log_mel_matches_on_speech(eval_dir, reference, pad_seconds):
    audio = load_audio(eval_dir / "real_en" / "jfk.wav")
    ours = log_mel(audio, pad_seconds)
    theirs = _reference_log_mel(reference, audio, pad_seconds)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("samples", [401, 16000, 23457, 160 * 3001])
def test_log_mel_matches_on_noise_of_any_length(reference, samples):
    audio = np.random.default_rng(samples).uniform(-0.3, 0.3, samples).astype(np.float32)
    np.testing.assert_allclose(log_mel(audio, 2.0), _reference_log_mel(reference, audio, 2.0), atol=1e-4)


def test_frame_count_is_samples_over_hop():
    assert log_mel(np.zeros(16000, np.float32), 0.5).shape == (N_MELS, 150)


def test_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 16000), np.float32))


@pytest.mark.parametrize(
    "content, pad, minimum, expected",
    [
        (101, 2.0, 0.0, 302),
        (100, 2.0, 0.0, 300),
        (150, 2.0, 10.0, 1000),
        (2900, 2.0, 10.0, N_FRAMES),
        (1200, 2.0, 10.0, 1400),
    ],
)
def test_window_frames_even_padded_and_capped(content, pad, minimum, expected):
    assert window_frames(content, pad, minimum) == expected


def test_encoder_window_is_content_then_digital_silence():
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, 16000).astype(np.float32)
    mel = log_mel(audio, 5.0)
    window = encoder_window(mel, 50, 80, 400)
    assert window.shape == (N_MELS, 400) and window.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(window[:, :80], mel[:, 50:130])
    # padding equals what real zero samples give (frames well past the audio's end)
    np.testing.assert_allclose(window[:, 80:], mel[:, -1:].repeat(320, axis=1))
    assert silence_floor(mel) == pytest.approx(float(mel[:, -1].max()))


def test_quietest_frame_finds_the_pause():
    rng = np.random.default_rng(2)
    audio = rng.uniform(-0.3, 0.3, 16000 * 4).astype(np.float32)
    audio[int(2.5 * 16000) : int(2.8 * 16000)] *= 0.001
    cut = quietest_frame(log_mel(audio, 0.5), 100, 350)
    assert 250 <= cut <= 280
