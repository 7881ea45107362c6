"""Silero VAD through onnxruntime: speech vs non-speech, context handling, streaming equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from edge.audio.audiofile import load_audio
from edge.audio.base import SAMPLE_RATE
from edge.vad.silero import WINDOW, SileroVad
from tests.conftest import load_manifest


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _window_times(count: int) -> np.ndarray:
    return (np.arange(count) + 0.5) * WINDOW / SAMPLE_RATE


def test_speech_segments_are_detected(vad: SileroVad, eval_dir) -> None:
    row = load_manifest("longform_en")[0]
    vad.reset()
    probs = np.array(vad.feed(load_audio(row["path"])))
    times = _window_times(probs.size)
    inside = np.zeros(probs.size, dtype=bool)
    for seg in row["segments"]:
        inside |= (times >= seg["start"]) & (times < seg["end"])
    gaps = ~inside
    for seg in row["segments"]:  # the 0.5-2 s gaps between utterances, minus a margin for onsets/offsets
        gaps &= ~((times > seg["start"] - 0.3) & (times < seg["end"] + 0.3))
    assert np.mean(probs[inside] > 0.5) > 0.75
    assert np.mean(probs[gaps] < 0.5) > 0.95


def test_nonspeech_stays_below_threshold(vad: SileroVad, eval_dir) -> None:
    for row in load_manifest("nonspeech"):
        vad.reset()
        probs = vad.feed(load_audio(row["path"]))
        assert max(probs) < 0.3, row["audio"]


def test_block_size_does_not_change_the_result(vad: SileroVad, eval_dir) -> None:
    audio = load_audio(load_manifest("longform_en")[0]["path"])[: 5 * SAMPLE_RATE]
    vad.reset()
    whole = vad.feed(audio)
    vad.reset()
    pieces = [p for i in range(0, audio.size, 320) for p in vad.feed(audio[i : i + 320])]
    assert len(pieces) == len(whole) == audio.size // WINDOW
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_reset_forgets_the_previous_stream(vad: SileroVad, eval_dir) -> None:
    audio = load_audio(load_manifest("longform_en")[0]["path"])[: 3 * SAMPLE_RATE]
    vad.reset()
    first = vad.feed(audio)
    vad.feed(audio[:1000])  # leaves state, context and a partial window behind
    vad.reset()
    np.testing.assert_allclose(vad.feed(audio), first, atol=1e-6)

