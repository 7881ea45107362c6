"""Endpointer on synthetic VAD probabilities: start/end timing, hysteresis, pause/resume, forced splits."""

from __future__ import annotations

from dataclasses import replace

from edge.vad.endpointer import Boundary, Endpointer, EndpointSettings
from edge.audio.base import SAMPLE_RATE
from edge.vad.silero import WINDOW

MS_PER_WINDOW = WINDOW * 1000 / SAMPLE_RATE  # 32 ms


def windows(ms: float) -> int:
    return round(ms / MS_PER_WINDOW)


def run(probs: list[float], settings: EndpointSettings, flush: bool = False) -> list[Boundary]:
    endpointer = Endpointer(settings)
    out = [b for p in probs for b in endpointer.update(p)]
    return out + (endpointer.flush() if flush else [])


def ends(boundaries: list[Boundary]) -> list[Boundary]:
    return [b for b in boundaries if b.kind == "end"]


SETTINGS = EndpointSettings(threshold=0.5, min_silence_ms=320, speech_pad_ms=96, min_speech_ms=96, max_utterance_s=20)


def test_silence_and_blips_start_nothing() -> None:
    probs = [0.1] * 50 + [0.9, 0.9] + [0.1] * 50  # 64 ms blip < min_speech_ms
    assert run(probs, SETTINGS, flush=True) == []


def test_one_utterance_is_padded_and_ends_after_min_silence() -> None:
    probs = [0.1] * 20 + [0.9] * 30 + [0.1] * 30
    out = run(probs, SETTINGS)
    assert [b.kind for b in out] == ["start", "pause", "end"]
    pad = 96 * SAMPLE_RATE // 1000
    assert out[0].start == 20 * WINDOW - pad
    assert out[1].end == 51 * WINDOW  # the pause is announced at the end of the first silent window
    assert out[2].start == out[0].start and out[2].end == 50 * WINDOW + pad


def test_hysteresis_keeps_speech_through_middling_probabilities() -> None:
    probs = [0.9] * 10 + [0.4] * 40 + [0.9] * 5 + [0.1] * 20
    out = run(probs, SETTINGS)
    assert [b.kind for b in out] == ["start", "pause", "end"]
    assert out[-1].end == 55 * WINDOW + 96 * SAMPLE_RATE // 1000


def test_short_pause_resumes_the_same_utterance() -> None:
    probs = [0.9] * 10 + [0.1] * windows(200) + [0.9] * 10 + [0.1] * 20
    out = run(probs, SETTINGS)
    assert [b.kind for b in out] == ["start", "pause", "resume", "pause", "end"]


def test_speech_to_the_very_end_keeps_the_samples_after_the_last_whole_window() -> None:
    endpointer = Endpointer(SETTINGS)
    for probability in [0.9] * 20:
        endpointer.update(probability)
    [end] = endpointer.flush(audio_end=20 * WINDOW + 300)  # 300 samples the VAD had not yet seen
    assert end.kind == "end" and end.end == 20 * WINDOW + 300
    endpointer = Endpointer(SETTINGS)
    for probability in [0.9] * 20 + [0.1] * 3:  # in a pause: the padded end, as before
        endpointer.update(probability)
    [end] = endpointer.flush(audio_end=23 * WINDOW + 300)
    assert end.end == 20 * WINDOW + 3 * WINDOW


def test_resuming_after_a_break_puts_later_boundaries_at_the_audio_they_name() -> None:
    """The VAD drops up to 511 samples at a break: without resume_at every later boundary came that much early."""
    endpointer = Endpointer(SETTINGS)
    for probability in [0.9] * 10 + [0.6] * 2:  # speech, then a candidate the break must not carry over
        endpointer.update(probability)
    endpointer.flush(audio_end=12 * WINDOW + 300)
    endpointer.resume_at(12 * WINDOW + 300)
    out = [b for p in [0.1] * 5 + [0.9] * 10 + [0.1] * 12 for b in endpointer.update(p)]
    start = next(b for b in out if b.kind == "start")
    assert start.start == 12 * WINDOW + 300 + 5 * WINDOW - 3 * WINDOW  # speech_pad_ms before the onset, from 300 on


def test_utterances_never_overlap_even_with_large_padding() -> None:
    settings = replace(SETTINGS, min_silence_ms=100, speech_pad_ms=500, min_speech_ms=0)
    probs = ([0.9] * 10 + [0.1] * 6) * 3
    done = ends(run(probs, settings, flush=True))
    assert len(done) == 3
    for before, after in zip(done, done[1:]):
        assert after.start >= before.end


def test_long_speech_is_split_at_the_quietest_recent_window() -> None:
    settings = EndpointSettings(threshold=0.5, min_silence_ms=500, speech_pad_ms=0, min_speech_ms=0, max_utterance_s=2)
    probs = [0.9] * 100
    probs[50] = 0.55  # quietest window in the 3 s before the 2 s limit
    out = run(probs, settings, flush=True)
    done = ends(out)
    assert done[0].forced and done[0].end == 50 * WINDOW
    starts = [b for b in out if b.kind == "start"]
    assert starts[1].start == 50 * WINDOW and starts[1].forced


def test_split_pieces_cover_the_speech_exactly_once() -> None:
    settings = EndpointSettings(threshold=0.5, min_silence_ms=300, speech_pad_ms=0, min_speech_ms=0, max_utterance_s=2)
    probs = [0.1] * 10 + [0.6 + 0.3 * ((i * 7) % 11) / 10 for i in range(400)] + [0.1] * 20
    done = ends(run(probs, settings))
    assert len(done) >= 5
    assert done[0].start == 10 * WINDOW and done[-1].end == 410 * WINDOW
    for before, after in zip(done, done[1:]):
        assert after.start == before.end  # contiguous: no sample lost, none duplicated
    assert all(b.end - b.start <= 2 * SAMPLE_RATE for b in done)


def test_flush_ends_the_utterance_in_progress() -> None:
    out = run([0.9] * 20, SETTINGS, flush=True)
    assert [b.kind for b in out] == ["start", "end"]
    assert out[-1].end == 20 * WINDOW


def test_settings_can_change_between_windows() -> None:
    endpointer = Endpointer(SETTINGS)
    for p in [0.9] * 10:
        endpointer.update(p)
    endpointer.settings = replace(SETTINGS, threshold=0.95, min_silence_ms=64, speech_pad_ms=0)
    out = [b for p in [0.9] * 3 for b in endpointer.update(p)]  # between the new threshold and its floor: still speech
    assert not ends(out)
    out = [b for p in [0.5] * 3 for b in endpointer.update(p)]
    assert ends(out)


def test_the_limit_reached_in_the_closing_pause_ends_the_utterance_there() -> None:
    """The split used to cut inside the pause and start an utterance of pure silence ("Thank you." for
    0.2 s of it with tiny.en): speech ending 0-300 ms past the limit did so with the default settings."""
    limit = windows(SETTINGS.max_utterance_s * 1000)
    for early in range(1, windows(SETTINGS.min_silence_ms)):  # the pause began `early` windows before the limit
        probs = [0.9] * (limit - early) + [0.1] * 40
        out = run(probs, SETTINGS, flush=True)
        assert [b.kind for b in out if b.kind in ("start", "end")] == ["start", "end"], (early, out)
        assert ends(out)[0].end - out[0].start <= SETTINGS.max_utterance_s * SAMPLE_RATE


def test_a_low_threshold_still_hears_silence() -> None:
    """At vad.threshold 0.1 the hysteresis (0.15) left no probability silent: the utterance never
    ended and went on in forced splits through a minute of silence."""
    settings = replace(SETTINGS, threshold=0.1)
    out = run([0.9] * windows(2000) + [0.0] * windows(60_000), settings)
    assert [b.kind for b in out] == ["start", "pause", "end"]
    assert out[-1].end == windows(2000) * WINDOW + 96 * SAMPLE_RATE // 1000


def test_a_reload_that_lowers_the_limit_in_a_pause_keeps_the_speech_heard() -> None:
    """15 s of speech, a pause, then max_utterance_s 20 -> 5: the utterance used to end at 5 s and the
    10 s of speech after it were in no final."""
    endpointer = Endpointer(SETTINGS)
    out = [b for p in [0.9] * windows(15_000) + [0.1] for b in endpointer.update(p)]
    endpointer.settings = replace(SETTINGS, max_utterance_s=5)
    out += [b for p in [0.1] * 20 for b in endpointer.update(p)]
    assert [b.kind for b in out] == ["start", "pause", "end"]
    assert out[-1].end >= windows(15_000) * WINDOW
