"""Long audio in bounded memory: the Whisper seek loop over a stream of blocks (`transcribe_stream`)."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.asr.base import LongFormRecognizer
from edge.asr.whisper.decoding import DecodeResult
from edge.asr.whisper.features import encoder_window, log_mel
from edge.asr.whisper.recognizer import Recognizer, WhisperOptions
from edge.audio.audiofile import AudioReader, load_audio
from edge.audio.base import SAMPLE_RATE
from tests.conftest import load_manifest

# What the decoder says of a window it hears nothing in: the seek loop moves on by the whole window.
SILENT = DecodeResult((), "", 0.0, -2.0, 1.0, 0.0, 0.0, False)


@pytest.fixture(scope="module")
def int8(int8_model_dir: Path) -> Recognizer:
    return Recognizer.from_dir(int8_model_dir, threads=2)


@pytest.fixture
def windows(int8: Recognizer, monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, int]]:
    """Every encoder input the seek loop builds, with its frames of audio; the decoder hears silence in each."""
    seen: list[tuple[np.ndarray, int]] = []

    def decode(mel: np.ndarray, seek: int, frames: int, wanted: WhisperOptions, loudest: float) -> DecodeResult:
        seen.append((int8._window(mel, seek, frames, loudest), frames))
        return SILENT

    monkeypatch.setattr(int8, "_decode_window", decode)
    return seen


def _noise_wav(path: Path, minutes: int) -> Path:
    """Quiet noise (not digital silence, so every window is built), written a minute at a time."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as out:
        for _ in range(minutes):
            out.write((0.05 * rng.standard_normal(60 * SAMPLE_RATE)).astype(np.float32))
    return path


def test_the_whisper_recognizer_streams_long_audio(int8: Recognizer, eval_dir) -> None:
    """A LongFormRecognizer in deed, not only by the protocol's attribute check: streamed blocks give the
    transcript of the whole array."""
    assert isinstance(int8, LongFormRecognizer)
    audio = load_audio(load_manifest("real_en")[0]["path"])
    blocks = [audio[i : i + 16000] for i in range(0, len(audio), 16000)]
    assert int8.transcribe_stream(blocks).text == int8.transcribe(audio).text != ""


def test_each_window_is_the_whole_files_spectrogram_cut_where_it_was(int8, windows, eval_dir) -> None:
    """Per-window log-mel (with the STFT's reach and the whole file's level) equals Whisper's whole-file one."""
    path = load_manifest("longform_en")[1]["path"]  # 77 s, quiet gaps between loud passages
    audio = load_audio(path)
    with AudioReader(path) as reader:
        int8.transcribe_stream(reader)
    whole = log_mel(audio, max(int8.pad_seconds, int8.min_window_seconds))
    seek = 0
    for window, frames in windows:
        np.testing.assert_allclose(window, encoder_window(whole, seek, frames, window.shape[1]), atol=1e-5)
        seek += frames
    assert len(windows) >= 4 and seek == len(audio) // 160


def test_stream_gives_what_transcribe_of_the_whole_gives(int8: Recognizer, eval_dir) -> None:
    options = WhisperOptions(beam_size=1)
    for row in (load_manifest("real_en")[0], load_manifest("longform_en")[1]):  # short, then the seek loop
        told: list[float] = []
        with AudioReader(row["path"]) as reader:
            streamed = int8.transcribe_stream(reader, options=options, progress=told.append)
        assert streamed == int8.transcribe(load_audio(row["path"]), options=options)
        assert told == sorted(told) and told[-1] == pytest.approx(reader.duration_s, abs=0.02)


def test_a_one_shot_iterator_is_refused(int8: Recognizer) -> None:
    with pytest.raises(TypeError, match="reads the audio twice"):
        int8.transcribe_stream(iter([np.zeros(16000, np.float32)]))


def test_memory_does_not_grow_with_the_length(int8, tmp_path, monkeypatch) -> None:
    """Peak of numpy allocations over 1 and 12 minutes of audio (the decoder hears silence in every window)."""
    windows = []
    monkeypatch.setattr(int8, "_decode_window", lambda mel, seek, frames, wanted, loudest: windows.append(frames) or SILENT)
    peaks = {}
    for minutes in (1, 12):
        path = _noise_wav(tmp_path / f"{minutes}.wav", minutes)
        tracemalloc.start()
        with AudioReader(path) as reader:
            int8.transcribe_stream(reader)
        peaks[minutes] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert len(windows) > 40
    assert peaks[12] < peaks[1] * 1.2 + 1, peaks
    assert peaks[12] < 40, peaks


# --- a window whose text ends early -------------------------------------------------------


def _said(int8: Recognizer, text: str, start_s: float, end_s: float, no_speech: float,
          avg_logprob: float = -0.2) -> DecodeResult:
    """What the decoder returns for `text` between two timestamps, ending there (no timestamp pair after it)."""
    begin = int8.tokenizer.timestamp_begin
    tokens = (begin + round(start_s * 50), *int8.tokenizer.encode(text), begin + round(end_s * 50))
    return DecodeResult(tokens, text, 4 * avg_logprob, avg_logprob, no_speech, 1.0, 0.0, False)


def _noise(seconds: float, level: float, rng: np.random.Generator) -> np.ndarray:
    return (level * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def _scripted(int8: Recognizer, monkeypatch: pytest.MonkeyPatch, answers: list[DecodeResult]) -> list[tuple[int, int]]:
    """`_decode_window` answers `answers` in turn (as it returns them: after fallback); the (seek, frames) it was asked."""
    calls: list[tuple[int, int]] = []

    def decode(mel: np.ndarray, seek: int, frames: int, wanted: WhisperOptions, loudest: float) -> DecodeResult:
        calls.append((seek, frames))
        return answers[len(calls) - 1]

    monkeypatch.setattr(int8, "_decode_window", decode)
    return calls


@pytest.mark.parametrize(
    "heard_s, tail_level, tail_no_speech, tail_logprob, decoded, text, starts",
    [
        (2.0, 0.2, 0.1, -0.2, [(0, 800), (200, 600)], "first words tail words", [0.0, 2.0]),  # a loud tail with speech
        (2.0, 0.2, 0.9, -0.2, [(0, 800), (200, 600)], "first words", [0.0]),  # ... or none, the model thinks: dropped
        (2.0, 0.2, 0.1, -1.5, [(0, 800), (200, 600)], "first words", [0.0]),  # ... or text it is unsure of: dropped
        (2.0, 0.001, 0.1, -0.2, [(0, 800)], "first words", [0.0]),  # a quiet tail: not decoded at all
        (7.0, 0.2, 0.1, -0.2, [(0, 800)], "first words", [0.0]),  # 1 s left: Whisper's rule, the window was all heard
    ],
)
def test_a_window_whose_text_ends_early_has_its_tail_decoded_again(
    int8, monkeypatch, heard_s, tail_level, tail_no_speech, tail_logprob, decoded, text, starts
) -> None:
    rng = np.random.default_rng(0)
    audio = np.concatenate([_noise(heard_s, 0.1, rng), _noise(8.0 - heard_s, tail_level, rng)])
    tail = _said(int8, " tail words", 0.0, 5.0, tail_no_speech, tail_logprob)
    calls = _scripted(int8, monkeypatch, [_said(int8, " first words", 0.0, heard_s, 0.1), tail])
    result = int8.transcribe_long(audio)
    assert calls == decoded and result.text == text
    assert [s for s, _, _ in result.segments] == starts  # the tail's stamps are shifted


def test_a_tail_whose_text_goes_on_past_its_last_closed_segment_is_followed(int8, monkeypatch) -> None:
    """The tail said "<|0.00|> tail one <|1.00|><|1.00|> tail two" (no closing timestamp): the seek loop
    had moved past the window, so "tail two" and the audio after 1 s of the tail were in no window."""
    begin = int8.tokenizer.timestamp_begin
    rng = np.random.default_rng(0)
    audio = np.concatenate([_noise(2.0, 0.1, rng), _noise(6.0, 0.2, rng)])
    one = _said(int8, " tail one", 0.0, 1.0, 0.1)
    open_tail = replace(one, tokens=(*one.tokens, begin + 50, *int8.tokenizer.encode(" tail two")))
    calls = _scripted(int8, monkeypatch,
                      [_said(int8, " first words", 0.0, 2.0, 0.1), open_tail, _said(int8, " tail two", 0.0, 4.0, 0.1)])
    result = int8.transcribe_long(audio)
    assert calls == [(0, 800), (200, 600), (300, 500)] and result.text == "first words tail one tail two"
    assert [s for s, _, _ in result.segments] == [0.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "closed_s, rest_no_speech, rest_logprob, rest_temperature, text",
    [
        (7.4, 0.1, -0.2, 0.0, "first words tail words"),  # 0.6 s left, said clearly: it counts
        (7.4, 0.1, -1.5, 0.0, "first words"),  # ... unsure ("Developing." for the end of "living"): dropped
        (7.4, 0.9, -0.2, 0.0, "first words"),  # ... where the model thinks nobody speaks: dropped
        (7.4, 0.1, -0.5, 0.4, "first words"),  # ... only after a fallback: dropped
        (6.0, 0.1, -1.5, 0.0, "first words tail words"),  # 2 s left: Whisper's rule, as any window
    ],
)
def test_a_short_last_window_counts_only_where_the_model_is_sure_of_it(
    int8, monkeypatch, closed_s, rest_no_speech, rest_logprob, rest_temperature, text
) -> None:
    begin = int8.tokenizer.timestamp_begin
    closed = _said(int8, " first words", 0.0, closed_s, 0.1)
    closed = replace(closed, tokens=(*closed.tokens, begin + round(closed_s * 50)))  # "<|0.00|> ... <|t|><|t|>"
    rest = replace(_said(int8, " tail words", 0.0, 8.0 - closed_s, rest_no_speech, rest_logprob),
                   temperature=rest_temperature)
    calls = _scripted(int8, monkeypatch, [closed, rest])
    result = int8.transcribe_long(_noise(8.0, 0.1, np.random.default_rng(0)))
    assert calls == [(0, 800), (2, round((8.0 - closed_s) * 100))] and result.text == text


def test_the_sentence_after_an_early_end_of_text_is_not_lost(int8, eval_dir, monkeypatch) -> None:
    """longform_01's last window ends its text at 45.02 s; "What joy there is in living." follows (45.5-47.3 s)."""
    audio = load_audio(load_manifest("longform_en")[0]["path"])
    assert "what joy there is in living" in _words(int8.transcribe(audio).text)
    monkeypatch.setattr(int8, "tail_recheck_frames", len(audio))  # Whisper's rule: the window was all heard
    monkeypatch.setattr(int8, "short_rest_frames", 0)
    assert "what joy there is in living" not in _words(int8.transcribe(audio).text)


def _words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalpha() or c.isspace()).split())
