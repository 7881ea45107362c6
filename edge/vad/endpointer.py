"""VAD probabilities -> utterance boundaries, in sample positions of the stream.

Decisions are made per 512-sample VAD window. Besides the obvious start and
end, the endpointer announces a *pause* at the first non-speech window (its
`end` is the end of that window) so the caller can start the final decode
speculatively while `min_silence_ms` is still running, and a *resume* when
speech comes back before that. Utterances never overlap: every sample of the
stream belongs to at most one utterance, and a forced split (at
`max_utterance_s`) hands the cut sample straight to the next utterance.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from edge.config import VadConfig, resolve
from edge.limits import MAX_SPEECH_PAD_MS, MAX_UTTERANCE_S
from edge.manifest import Tuning
from edge.audio.base import SAMPLE_RATE
from edge.vad.silero import WINDOW

HYSTERESIS = 0.15  # speech continues until the probability falls this far below the threshold
# ... but never below this: at vad.threshold <= 0.15 (the config allows 0.05) no probability was
# silent, so an utterance never ended and went on in forced splits through silence. Silero's
# get_speech_timestamps uses the same floor.
SILENCE_FLOOR = 0.01
SPLIT_SEARCH_S = 3.0  # a forced split is cut at the quietest window of this last stretch (or of its last half)

Kind = Literal["start", "pause", "resume", "end"]


@dataclass(frozen=True)
class EndpointSettings:
    """The live-reloadable `vad.*` keys, in the units of the config file."""

    threshold: float
    min_silence_ms: int
    speech_pad_ms: int
    min_speech_ms: int
    max_utterance_s: float

    @classmethod
    def from_config(cls, vad_cfg: VadConfig | None = None, tuning: Tuning = Tuning()) -> "EndpointSettings":
        """From a `vad` config section (None: the documented defaults); `auto` keys from the model's tuning."""
        vad_cfg = vad_cfg or VadConfig()
        return cls(
            threshold=float(vad_cfg.threshold),
            min_silence_ms=int(vad_cfg.min_silence_ms),
            speech_pad_ms=int(vad_cfg.speech_pad_ms),
            min_speech_ms=int(vad_cfg.min_speech_ms),
            max_utterance_s=float(resolve(vad_cfg.max_utterance_s, tuning.max_utterance_s)),
        )


@dataclass(frozen=True)
class Boundary:
    """One decision. `start`/`end` are sample positions; `end` is set for pause and end."""

    kind: Kind
    start: int
    end: int | None = None
    forced: bool = False


def _samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


def _silent(probability: float, threshold: float) -> bool:
    """Below the threshold by the hysteresis, with a floor: a pause, or no speech."""
    return probability < max(threshold - HYSTERESIS, SILENCE_FLOOR)


class Endpointer:
    """Feed one probability per VAD window, in order; get boundaries back."""

    def __init__(self, settings: EndpointSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Back to the start of a new stream."""
        self._position = 0  # sample position just after the last window fed
        self._floor = 0  # no utterance may start before this (end of the previous one)
        self._candidate: int | None = None  # start of not yet confirmed speech
        self._voiced = 0  # voiced samples since the candidate start
        self._start: int | None = None  # start of the current utterance (padded)
        self._silence: int | None = None  # first non-speech sample of the current pause
        self._paused = False  # a pause boundary has been announced
        self._recent: deque[tuple[int, float]] = deque()  # (window start, probability) for split search

    def earliest_start(self) -> int:
        """The earliest sample a coming `start` may name: the caller may let go of the audio before it.
        With the largest padding, so that a reload raising `speech_pad_ms` finds its audio still held."""
        if self._start is not None:
            return self._start
        onset = self._position if self._candidate is None else self._candidate
        return self._onset_start(onset, MAX_SPEECH_PAD_MS, MAX_UTTERANCE_S)

    def _onset_start(self, onset: int, pad_ms: float, max_utterance_s: float) -> int:
        """`pad_ms` before `onset`, but not before the previous utterance's end, nor more than half the
        utterance limit back: a VAD hovering under the threshold keeps its candidate indefinitely, and
        a start confirmed that late leaves the utterance at least half its limit (as a split does)."""
        reach = int(max_utterance_s * SAMPLE_RATE / 2)
        return max(self._floor, onset - _samples(pad_ms), self._position - reach, 0)

    def update(self, probability: float) -> list[Boundary]:
        """Advance by one window."""
        window_start = self._position
        self._position += WINDOW
        if self._start is None:
            return self._while_silent(window_start, probability)
        self._remember(window_start, probability)
        return self._while_speaking(window_start, probability)

    def resume_at(self, position: int) -> None:
        """Go on from `position` as a new stream (after a break, once `flush`ed): the VAD dropped its
        unfinished window there, and each break's up to 511 samples would otherwise put every later
        boundary that much earlier in the audio (after 40 breaks, ends came 0.2 s before the speech's)."""
        self._position = self._floor = max(position, self._floor)
        self._candidate, self._voiced = None, 0
        self._recent.clear()

    def flush(self, audio_end: int = 0) -> list[Boundary]:
        """End the utterance in progress now (stream ended or broke off, or shutting down).
        `audio_end`: the stream's last sample, past the last whole window (the VAD holds up to 511
        samples back): speech that runs to the very end keeps its last 31 ms."""
        if self._start is None:
            return []
        if self._silence is not None:
            return self._finish(min(self._padded_end(), self._position))
        return self._finish(max(self._position, audio_end))

    def _while_silent(self, window_start: int, probability: float) -> list[Boundary]:
        s = self.settings
        if probability >= s.threshold:
            if self._candidate is None:
                self._candidate, self._voiced = window_start, 0
            self._voiced += WINDOW
        elif _silent(probability, s.threshold):
            self._candidate = None
        if self._candidate is None or self._voiced < max(_samples(s.min_speech_ms), 1):
            return []
        self._start = self._onset_start(self._candidate, s.speech_pad_ms, s.max_utterance_s)
        self._candidate = None
        self._recent.clear()
        self._remember(window_start, probability)
        return [Boundary("start", self._start)]

    def _while_speaking(self, window_start: int, probability: float) -> list[Boundary]:
        s = self.settings
        out: list[Boundary] = []
        if probability >= s.threshold:
            if self._paused:
                out.append(Boundary("resume", self._start))
            self._silence, self._paused = None, False
        elif _silent(probability, s.threshold) and self._silence is None:
            self._silence = window_start
        if self._silence is not None:
            if self._position - self._silence >= _samples(s.min_silence_ms):
                return out + self._finish(self._padded_end())
            if not self._paused:
                self._paused = True
                out.append(Boundary("pause", self._start, self._position))
        limit = self._start + int(s.max_utterance_s * SAMPLE_RATE)
        if self._position >= limit:
            if self._silence is not None:  # the limit fell in a pause: end there, not split off a sliver of it,
                # and not before the speech heard (a reload that lowered the limit in a pause cut it there)
                return out + self._finish(min(self._padded_end(), max(limit, self._silence)))
            out += self._split()
        return out

    def _padded_end(self) -> int:
        """End of speech plus padding, but never past what `min_silence_ms` will have delivered."""
        s = self.settings
        assert self._silence is not None
        return self._silence + min(_samples(s.speech_pad_ms), _samples(s.min_silence_ms))

    def _finish(self, end: int, forced: bool = False) -> list[Boundary]:
        start = self._start
        assert start is not None
        self._floor = end
        self._start, self._silence, self._paused = None, None, False
        self._recent.clear()
        return [Boundary("end", start, end, forced)]

    def _remember(self, window_start: int, probability: float) -> None:
        self._recent.append((window_start, probability))
        horizon = self._position - int(SPLIT_SEARCH_S * SAMPLE_RATE)
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def _split(self) -> list[Boundary]:
        """Cut at the quietest recent window; the rest of the audio starts the next utterance."""
        start = self._start
        assert start is not None
        # Never closer to the start than half the limit: no slivers of utterances.
        earliest = start + int(self.settings.max_utterance_s * SAMPLE_RATE / 2)
        searchable = [(p, w) for w, p in self._recent if w >= earliest]
        cut = min(searchable)[1] if searchable else self._position
        tail = [(w, p) for w, p in self._recent if w >= cut]
        silence = self._silence
        out = self._finish(cut, forced=True)
        self._start = cut
        if silence is not None:
            self._silence = max(silence, cut)
        for window_start, probability in tail:
            self._recent.append((window_start, probability))
        out.append(Boundary("start", cut, forced=True))
        return out
