"""The model-family seam: what every recognizer takes and gives, whatever model runs behind it.

A family (Whisper today) is one subpackage of `edge.asr` with a `family`
module that satisfies `Family`; a model directory names its family in
`manifest.json`, and `edge.asr.load` picks it from there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence, TYPE_CHECKING, runtime_checkable

import numpy as np

from edge.vocabulary import Vocabulary

if TYPE_CHECKING:  # the schema is not loaded for offline transcription
    from edge.config import Config


Segment = tuple[float, float, str]


@dataclass(frozen=True)
class Transcript:
    """What the recognizer heard; `tokens` are the model's text tokens (no specials, no timestamps).

    `tokens` let the next call use this text as context without re-tokenizing it.
    """

    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    segments: tuple[Segment, ...]
    language: str = ""  # ISO 639-1 code, as the model's language tokens name it
    language_prob: float = 1.0  # how sure a detected `language` is (1.0 where it was given)
    # Other readings the search weighed, shown as `text` is, best first (audio of one window; greedy: none):
    # what the model may write for a name it does not know (edge-asr learn-sounds-like). Made for every
    # final, so the learner decodes as the daemon does: 1.2 ms for 4 readings with a 39-term learned list,
    # against the final's 400-550 ms of decoding (2-core AMD EPYC, AVX2).
    alternatives: tuple[str, ...] = ()

    @classmethod
    def empty(cls, no_speech_prob: float = 1.0, language: str = "") -> "Transcript":
        return cls("", (), 0.0, no_speech_prob, 0.0, (), language)


class Interrupted(Exception):
    """A decode given up because its `Interrupt` was set: its caller no longer wants the result."""


class Interrupt:
    """Set from another thread to stop one decode early (a partial when a final needs the recognizer).

    A backend that can stop a call under way (onnxruntime's `RunOptions.terminate`) registers
    a hook with `on_set`; any backend checks `check()` between its calls.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._hooks: list[Callable[[], None]] = []

    def set(self) -> None:
        with self._lock:
            self._set = True
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @property
    def is_set(self) -> bool:
        return self._set

    def check(self) -> None:
        """Raise `Interrupted` once set."""
        if self._set:
            raise Interrupted("the decode was interrupted")

    @contextmanager
    def on_set(self, hook: Callable[[], None]) -> Iterator[None]:
        """Within the block, `hook` runs (on the setting thread) when this is set, or at once if it already is."""
        with self._lock:
            self._hooks.append(hook)
            already = self._set
        if already:
            hook()
        try:
            yield
        finally:
            with self._lock:
                self._hooks.remove(hook)


class Recognizer(Protocol):
    """16 kHz mono float32 audio in, a `Transcript` out, on whatever backend the family opened."""

    @property
    def backend_name(self) -> str:
        """The runtime in use now: tensorrt, cuda, rknn or cpu (it changes when an accelerator fails)."""
        ...

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes the model knows (the manifest's `languages`)."""
        ...

    def options(
        self, *, beam_size: int = 5, language: str = "auto", prompt: str = "", vocabulary: Vocabulary = Vocabulary(),
        script: str = "simplified",
    ) -> object:
        """The family's own options object for the product-level settings.

        `beam_size`: stream.final_beam / --beam (a family without a beam search ignores it).
        `language`: model.language / --language, `auto` or one of `languages`.
        `prompt`: text said before the audio, as a style hint (e.g. punctuated Chinese).
        `vocabulary`: names and terms to favour (vocabulary.*, --vocabulary, an app's request).
        `script`: how Chinese text is written (model.chinese_script / --chinese-script): a key of
        `edge.asr.text.SCRIPTS`.
        Raises ValueError for a language the model does not know, or an unknown script.
        """
        ...

    def vocabulary_advice(self, vocabulary: Vocabulary, language: str) -> str | None:
        """What a technician or an app should know of how `vocabulary` is used in `language` (None: nothing):
        e.g. that a list too long for Whisper's prompt gets only the prefix tree (said in the journal and in
        the reply to an app's list)."""
        ...

    def transcribe(self, audio: np.ndarray, *, partial: bool = False, context: Sequence[int] = (),
                   options: object | None = None, interrupt: Interrupt | None = None) -> Transcript:
        """Up to 30 s of audio (longer is the family's long-form mode).

        `partial`: cheap and fast (live partials). `context`: the tokens of what
        was said just before, to keep a short utterance consistent with it.
        `options`: from `options()`; None means the family's defaults.
        `interrupt`: once set (from another thread), the call raises `Interrupted` as soon as
        the backend can stop.
        """
        ...


@runtime_checkable
class LongFormRecognizer(Recognizer, Protocol):
    """A recognizer that also takes audio of any length as a stream, in memory that does not grow with it."""

    def transcribe_stream(
        self,
        chunks: Iterable[np.ndarray],
        *,
        options: object | None = None,
        progress: Callable[[float], None] | None = None,
        timed: bool = False,
    ) -> Transcript:
        """What `transcribe` gives for all of `chunks` joined, holding only a window of them at a time.

        `chunks`: 16 kHz mono float32 pieces of any size, and iterable more than once
        (a list, an `AudioReader`): a family may read the audio twice.
        `progress`: told the seconds of audio transcribed so far, as they advance.
        `timed`: segments timed by the model however short the audio (subtitles); without it,
        audio up to one window may come back as one segment.
        """
        ...


class Family(Protocol):
    """One model family: how to open its recognizer on the CPU or on one accelerator."""

    def load(self, model_dir: Path, threads: int = 0) -> Recognizer:
        """A CPU recognizer; any problem with the directory is a `ModelError`."""
        ...

    def open(self, backend: str, cfg: Config) -> Recognizer:
        """A recognizer on `backend` (tensorrt, cuda, rknn, cpu), proven to run there; raises otherwise."""
        ...

    def vocabulary_advice(self, model_dir: Path, vocabulary: Vocabulary, language: str) -> str | None:
        """The recognizer's `vocabulary_advice`, without loading the graphs (check-config's warning)."""
        ...

    def ordinary_forms(self, model_dir: Path, vocabulary: Vocabulary) -> list[tuple[str, str]]:
        """(term, form) for each sounds-like form that the model writes for ordinary speech too: never shown as the
        term, only a cue to decode a final again (`edge.vocabulary.Cue`; `edge-asr learn-sounds-like` names them)."""
        ...

    def idle_forms(self, model_dir: Path, vocabulary: Vocabulary) -> list[tuple[str, str]]:
        """(term, form) for each of those too common to be a cue ("me"): it does nothing, and the learner leaves
        it out."""
        ...
