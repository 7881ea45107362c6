"""The pure checks of scripts/bench_mic_sets.py: repeated sentences in a final, and where each clip lies in the joined WAV."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_latency import Run  # noqa: E402
from bench_mic_sets import Span, after_audio, clip_of, join_clips, repeated_sentence  # noqa: E402


def test_the_issue_example_is_a_repeated_sentence():
    text = "Please scan your ticket at the gate on the left. Please scan your ticket at the gate on the left."
    assert repeated_sentence(text) == "please scan your ticket at the gate on the left"


def test_english_repeat_ignores_case_and_punctuation_and_keeps_apostrophes():
    assert repeated_sentence("We open the door at night, sir! we open the door at night sir") is not None
    assert repeated_sentence("I don't know, it's late. I don't know, it's late.") is None  # 5 words, not 7


@pytest.mark.parametrize(
    ("text", "repeated"),
    [
        ("one two three four five six one two three four five six", True),  # 6 words: a sentence
        ("one two three four five one two three four five and six", False),  # 5 words: a phrase
        ("No, no, no, no, I said it was fine.", False),  # a short word said again
        ("Turn left at the old mill and then turn left at the old mill gate.", False),  # not back to back
        ("It was very very very very very very very very very very very very cold", True),  # a 6-word loop twice
    ],
)
def test_english_threshold_is_six_words_back_to_back(text, repeated):
    assert (repeated_sentence(text) is not None) == repeated


def test_chinese_repeat_counts_characters():
    assert repeated_sentence("请在左边的闸机扫票。请在左边的闸机扫票。") == "请在左边的闸机扫票"
    assert repeated_sentence("今天天气很好吗今天天气很好吗") is None  # 7 characters
    assert repeated_sentence("今天天气真的很好今天天气真的很好") == "今天天气真的很好"  # 8 characters
    assert repeated_sentence("甚至出现交易几乎停滞的情况") is None


def test_code_switching_weighs_words_and_characters_together():
    # 4 words (4/6) + 5 characters (5/8) make a sentence; 2 words + 2 characters do not
    assert repeated_sentence("我们用 machine learning model here 来做。我们用 machine learning model here 来做。") is not None
    assert repeated_sentence("用 deep learning 做。用 deep learning 做。") is None


def test_joined_clips_are_each_followed_by_the_gap():
    first, second = np.full(1000, 7, dtype=np.int16), np.full(3000, 9, dtype=np.int16)
    audio, spans = join_clips([first, second], gap_s=0.5, rate=1000)
    assert spans == [Span(0.0, 1.0), Span(1.5, 4.5)]
    assert audio.size == 5000 and audio.dtype == np.int16
    assert (audio[:1000] == 7).all() and (audio[1000:1500] == 0).all()
    assert (audio[1500:4500] == 9).all() and (audio[4500:] == 0).all()


def test_a_final_falls_in_the_clip_it_overlaps_most():
    spans = [Span(0.0, 1.0), Span(2.5, 4.0), Span(5.5, 6.0)]
    assert clip_of(spans, 2.3, 3.9) == 1  # starts in the gap (the VAD's pre-speech pad), covers clip 1
    assert clip_of(spans, 0.3, 2.7) == 0  # 0.7 s of clip 0, 0.2 s of clip 1
    assert clip_of(spans, 0.8, 3.2) == 1  # 0.2 s of clip 0, 0.7 s of clip 1
    assert clip_of(spans, -0.2, 0.5) == 0


def test_a_final_in_a_gap_falls_in_the_clip_before_it():
    spans = [Span(0.0, 1.0), Span(2.5, 4.0), Span(5.5, 6.0)]
    assert clip_of(spans, 1.8, 2.2) == 0
    assert clip_of(spans, 4.6, 5.0) == 1
    assert clip_of(spans, 8.0, 9.0) == 2
    assert clip_of(spans, -0.6, -0.1) == 0  # before the first clip


def test_a_final_is_after_the_audio_only_past_its_clips_end_plus_half_a_second():
    spans = [Span(0.0, 1.0), Span(2.5, 4.0)]
    assert not after_audio(0.2, 0.9, spans)
    assert not after_audio(1.4, 2.0, spans)
    assert after_audio(1.6, 2.2, spans)
    assert not after_audio(2.3, 3.9, spans)  # its own clip begins just after it
    assert after_audio(4.6, 5.5, spans)


def test_capture_origin_uses_the_least_delayed_event_but_not_hello():
    events = [
        {"type": "hello", "audio_time_s": 0.0, "_at": 100.0},  # before the capture started
        {"type": "speech_start", "audio_time_s": 3.0, "_at": 104.1},
        {"type": "final", "audio_time_s": 6.0, "_at": 107.5},
    ]
    assert Run(events).capture_origin() == pytest.approx(101.1)
    # through the microphone, playback began later: finals' stream times minus the lead are file times
    assert Run(events, played_at=102.6).file_offset_s() == pytest.approx(1.5) and Run(events).file_offset_s() == 0.0


def test_latency_segments_are_matched_in_file_time_through_the_microphone():
    """bench_latency compared the finals' stream times (capture-based, 1 s or more ahead of playback) with
    the manifest's file times: matching was lenient, and a previous utterance's final could count as an onset."""
    from bench_latency import final_latencies

    run = Run([{"type": "speech_start", "audio_time_s": 0.5, "_at": 100.5},
               {"type": "final", "audio_time_s": 6.0, "_at": 106.0, "start_s": 1.2, "end_s": 3.9, "text": "a"}],
              played_at=101.0)  # capture from 100.0, playback from 101.0: file time = stream time - 1.0
    assert final_latencies(run, [{"start": 0.2, "end": 2.9}]) == [pytest.approx(106.0 - (101.0 + 2.9))]
    assert final_latencies(run, [{"start": 0.2, "end": 4.3}]) == []  # stream end 3.9 is file 2.9: not this one
