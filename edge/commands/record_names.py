"""Record a vocabulary's terms said in sentences, through the box's microphone: what `learn-sounds-like` learns from.

Sounds-like forms are best learned from the room's own people on the box's own microphone, and
recall grew with the recordings a name (docs/benchmarks.md, "sounds-like forms": 50 / 58 / 62 % of
the names with 2 / 4 / 6). This prompts one sentence at a time, cuts each answer with the daemon's
VAD, and writes it as a WAV file beside a `recordings.tsv` that `learn-sounds-like --recordings` reads:

    edge-asr record-names --vocabulary /etc/edge-asr/vocabulary.txt --out enroll/
    edge-asr learn-sounds-like --vocabulary /etc/edge-asr/vocabulary.txt --recordings enroll/recordings.tsv ...

The sentences are each term in every one of six frames ("Please write down Siobhan.", "请记下张伟。"),
in rounds: each round says every term once, so a session stopped early still has every name.
`--sentences FILE` gives the technician's own instead. A run that was stopped goes on where it
stopped: the sentences already in `recordings.tsv` are not asked again. `--source file:PATH`
cuts one recording of all the sentences, said in order, instead of the microphone.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.asr.text import has_han
from edge.audio.base import SAMPLE_RATE
from edge.vocabulary import Term

if TYPE_CHECKING:
    from edge.audio.base import AudioSource
    from edge.config import Config
    from edge.vad.endpointer import Boundary

FRAMES = {  # a term said in a sentence, as people say names: never alone, never in a list
    "en": (
        "Please write down {}.",
        "The next item is {}.",
        "We talked about {} this morning.",
        "{} is on the list for today.",
        "Can you say {} again?",
        "I said {}, not something else.",
    ),
    "zh": (
        "请记下{}。",
        "下一项是{}。",
        "我们今天上午谈到了{}。",
        "{}在今天的名单上。",
        "你能再说一遍{}吗？",
        "我说的是{}，不是别的。",
    ),
}
PER_TERM = len(FRAMES["en"])  # six recordings a name recalled more than two or four (the docstring's figures)
SILENCE_MS = 1000  # ends a recording: a comma's pause (300 ms ends the daemon's utterances) stays in the sentence
WAIT_S = 20.0  # for the first word after a prompt; then the sentence is skipped, to be asked again next run
MIN_SPEECH_S = 0.8  # of the cut, its padding included: a cough or a click is no sentence, and is listened for again
TRIES = 3  # takes a sentence gets when each is too short for one: then it is skipped
READ_TIMEOUT_S = 0.5
ENDED = "the recording ended"  # a file source: the sentences after it were not said
LISTING = "recordings.tsv"

EXIT_SKIPPED = 1  # some sentences were not recorded: running again asks for them
EXIT_INPUT_ERROR = 2  # the list, the sentences, the config, --out or the microphone: nothing was recorded


class RecordError(ValueError):
    """The session cannot go on; str() says why."""


@dataclass(frozen=True)
class Take:
    """One sentence's recording, or why there is none (`audio` None: `reason`)."""

    audio: np.ndarray | None
    reason: str = ""
    short: bool = False  # something was said, too short for the sentence

def sentences_for(terms: Sequence[Term], per_term: int) -> list[str]:
    """Each term in `per_term` frames of its script, round by round (every term once a round)."""
    rounds = []
    for frame in range(per_term):
        for term in terms:
            frames = FRAMES["zh" if has_han(term.text) else "en"]
            rounds.append(frames[frame % len(frames)].format(term.text))
    return rounds


def read_sentences(path: Path) -> list[str]:
    """One sentence a line; blank lines and `#` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"--sentences {path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    sentences = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for number, line in enumerate(lines, 1):
        if "\t" in line:
            raise RecordError(f"--sentences {path} line {number}: a TAB, which {LISTING} would read as the end "
                              "of the path: one sentence a line, no TABs")
    if not sentences:
        raise RecordError(f"--sentences {path}: no sentences (one a line)")
    return sentences


def still_to_record(sentences: Sequence[str], recorded: Sequence[str]) -> list[tuple[int, str]]:
    """(number from 1, sentence) of those not yet recorded: a sentence listed twice needs two recordings."""
    done = Counter(recorded)
    left = []
    for number, sentence in enumerate(sentences, 1):
        if done[sentence]:
            done[sentence] -= 1
        else:
            left.append((number, sentence))
    return left


class Listener:
    """The daemon's VAD and endpointer over one source: `take()` is the next thing said, as one sentence."""

    def __init__(self, source: "AudioSource", config: "Config") -> None:
        from edge.vad.endpointer import EndpointSettings, Endpointer
        from edge.vad.silero import SileroVad

        vad = config.vad.model_copy(update={"min_silence_ms": max(config.vad.min_silence_ms, SILENCE_MS)})
        self._source = source
        self._vad = SileroVad()
        self._endpointer = Endpointer(EndpointSettings.from_config(vad))
        self._audio = np.zeros(0, np.float32)  # the stream from `_base` on
        self._base = 0
        self._breaks = source.breaks

    def take(self, wait_s: float) -> Take:
        """The next sentence said, cut where the speaker stops; waits `wait_s` (of audio, or of the clock
        where the device sends none) for its start."""
        heard, waited, since = False, 0.0, time.monotonic()
        while not self._source.ended:
            block = self._source.read(timeout=READ_TIMEOUT_S)
            if self._source.breaks != self._breaks:  # what came before the break is no part of what follows
                self._breaks = self._source.breaks
                self._restart()
                if heard:
                    return Take(None, "the audio broke off (the device was lost or fell behind)")
            if block is not None and block.size:
                waited += block.size / SAMPLE_RATE
                for boundary in self._feed(block):
                    heard = True
                    if boundary.kind == "end" and boundary.end is not None:
                        return self._cut(boundary.start, boundary.end)
            if not heard and max(waited, time.monotonic() - since) >= wait_s:
                return Take(None, f"nothing was said in {wait_s:g} s")
        ends = [b for b in self._endpointer.flush(self._base + self._audio.size) if b.end is not None]
        return self._cut(ends[0].start, ends[0].end) if ends else Take(None, ENDED)

    def _feed(self, block: np.ndarray) -> list[Boundary]:
        """The starts and ends `block` brings. The audio before the earliest start to come is let go first:
        after an end, that start is past the utterance just ended."""
        keep_from = self._endpointer.earliest_start()
        if keep_from > self._base:
            self._audio = self._audio[keep_from - self._base:]
            self._base = keep_from
        self._audio = np.concatenate((self._audio, block))
        return [b for p in self._vad.feed(block) for b in self._endpointer.update(p) if b.kind in ("start", "end")]

    def _cut(self, start: int, end: int) -> Take:
        audio = self._audio[max(start - self._base, 0):end - self._base].copy()
        if audio.size < MIN_SPEECH_S * SAMPLE_RATE:
            return Take(None, f"only {audio.size / SAMPLE_RATE:.1f} s was heard", short=True)
        return Take(audio)

    def _restart(self) -> None:
        self._vad.reset()
        self._endpointer.reset()
        self._audio, self._base = np.zeros(0, np.float32), 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocabulary", type=Path, metavar="FILE", required=True,
                        help="the list whose terms are recorded, in the vocabulary file format (docs/operations.md)")
    parser.add_argument("--out", type=Path, metavar="DIR", required=True,
                        help=f"where the WAV files and {LISTING} go; a run stopped before goes on here")
    parser.add_argument("--sentences", type=Path, metavar="FILE",
                        help="your own sentences, one a line, each with a term of the list (default: each term "
                             f"in {PER_TERM} sentences made for it)")
    parser.add_argument("--per-term", type=int, default=PER_TERM, choices=range(1, PER_TERM + 1), metavar="N",
                        help=f"sentences a term when they are made for it: 1-{PER_TERM} (default {PER_TERM})")
    parser.add_argument("--config", help="the config whose audio.device and vad keys are used "
                                          "(default: the one `run` would use; without one, the defaults)")
    parser.add_argument("--source", default="mic", help="mic (default), or file:PATH: one recording of the "
                                                         "sentences said in order, cut at the pauses")
    parser.add_argument("--list-sentences", action="store_true",
                        help="print the sentences, one a line, and record nothing: to read from paper, or to say "
                             "into another recorder for --source file:PATH")
    parser.add_argument("--wait-s", type=_seconds, default=WAIT_S,
                        help=f"seconds to wait for a sentence to start before it is skipped (default {WAIT_S:g})")


def _seconds(text: str) -> float:
    """--wait-s: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from edge.audio import open_source
    from edge.audio.base import SourceError
    from edge.commands.learn_sounds_like import says
    from edge.config import ConfigError, load_for_command
    from edge.vocabulary import VocabularyError, read_file

    try:
        terms = read_file(args.vocabulary)
        sentences = read_sentences(args.sentences) if args.sentences else sentences_for(terms, args.per_term)
        unsaid = [s for s in sentences if not any(says(s, term.text) for term in terms)]
        if args.list_sentences:
            print("\n".join(sentences))
            return 0
        config = load_for_command(args.config, defaults_if_absent=True)
        left = still_to_record(sentences, _recorded(args.out))
        if not left:
            _say(f"all {len(sentences)} sentences are recorded: {args.out / LISTING}")
            return 0
        source = open_source(args.source, config.audio, "fast")
        source.start()
    except (VocabularyError, RecordError, ConfigError, SourceError) as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    for sentence in unsaid:
        _say(f"warning: {sentence!r} says none of the list's terms: it teaches nothing")
    _say(f"{len(sentences) - len(left)} of {len(sentences)} sentences recorded before; {len(left)} to go")
    try:
        skipped = len(left) - _record(Listener(source, config), left, args.out, args.wait_s)
    except RecordError as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    finally:
        source.close()
    _say(f"{len(left) - skipped} recorded, {skipped} skipped: {args.out / LISTING}"
         + (" (run again for the skipped ones)" if skipped else ""))
    return EXIT_SKIPPED if skipped else 0


def _record(listener: Listener, left: Sequence[tuple[int, str]], out: Path, wait_s: float) -> int:
    """Ask each sentence of `left` and keep what is said; returns how many were recorded."""
    recorded = 0
    for number, sentence in left:
        print(f"[{number}] Say: {sentence}", flush=True)
        take = _take(listener, number, wait_s)
        if take.audio is None:
            _say(f"[{number}] skipped: {take.reason}")
            if take.reason == ENDED:
                break
            continue
        _keep(out, number, sentence, take.audio)
        recorded += 1
    return recorded


def _take(listener: Listener, number: int, wait_s: float) -> Take:
    """The sentence's take: a cough or a click before it is listened past, TRIES times at most."""
    for _ in range(TRIES - 1):
        take = listener.take(wait_s)
        if not take.short:
            return take
        _say(f"[{number}] {take.reason}: say the whole sentence")
    return listener.take(wait_s)


def _keep(out: Path, number: int, sentence: str, audio: np.ndarray) -> None:
    """The WAV file, whole before it is listed; then its line, on disk before the next sentence is asked."""
    import io
    import os

    import soundfile

    from edge.files import new_file_mode, write_whole

    name = f"sentence{number:04d}-{time.strftime('%Y%m%d-%H%M%S')}.wav"
    encoded = io.BytesIO()
    soundfile.write(encoded, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    try:
        write_whole(out / name, encoded.getvalue(), new_file_mode())
        with open(out / LISTING, "a", encoding="utf-8") as listing:
            listing.write(f"{name}\t{sentence}\n")
            listing.flush()
            os.fsync(listing.fileno())
    except OSError as exc:
        raise RecordError(f"--out {out}: cannot be written: {exc.strerror or exc}") from None


def _recorded(out: Path) -> list[str]:
    """The sentences `out`'s listing has (creating `out`): a run stopped before goes on from there."""
    from edge.commands.learn_sounds_like import RecordingsError, read_recordings

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordError(f"--out {out}: cannot be made: {exc.strerror or exc}") from None
    if not (out / LISTING).exists():
        return []
    try:
        return [recording.said for recording in read_recordings(out / LISTING)]
    except RecordingsError as exc:
        raise RecordError(str(exc)) from None


def _say(message: str) -> None:
    print(f"edge-asr record-names: {message}", file=sys.stderr, flush=True)


def _fail(message: str, status: int) -> int:
    _say(message)
    return status
