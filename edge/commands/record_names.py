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
cuts one recording of the sentences still to record (`--list-sentences` prints them), said in
order, instead of the microphone.

A take that cannot be the sentence is listened past and the sentence asked again: one too short
(a cough), one that goes on past MAX_SENTENCE_S without a pause (a radio), and on the microphone
one that began before the prompt was shown (the end of the last sentence, after a long pause).
What the learner is given is then mostly what the prompt said; where a take still holds the wrong
words, `learn-sounds-like` finds none of the sentence around the term and learns nothing from it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.asr.text import has_han
from edge.audio.base import SAMPLE_RATE
from edge.audio.history import AudioHistory
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
SILENCE_MS = 1500  # ends a recording: a comma's pause, or one before a name read for the first time, stays inside
PAD_MS = 200  # audio kept either side of the speech, as the daemon's default vad.speech_pad_ms
MAX_SENTENCE_S = 20.0  # a take this long without a pause is not one sentence
HISTORY_MARGIN_S = 2.0  # audio held beyond it: the padding before a sentence's start
MIN_SPEECH_S = 0.4  # a cough or a click is no sentence (the padding not counted)
PROMPT_READ_S = 0.3  # on a microphone, speech starting sooner after the prompt began before it
WAIT_S = 20.0  # for the first word after a prompt; then the sentence is skipped, to be asked again next run
READ_TIMEOUT_S = 0.5
TRIES = 3  # takes a sentence gets when each is not one (too short, too long, too early): then it is skipped
ENDED = "the recording ended"  # a file source: the sentences after it were not said
LISTING = "recordings.tsv"

EXIT_SKIPPED = 1  # some sentences were not recorded: running again asks for them
EXIT_INPUT_ERROR = 2  # bad input (list, sentences, config, --out, microphone): what was recorded before it stays


class RecordError(ValueError):
    """The session cannot go on; str() says why."""


@dataclass(frozen=True)
class Take:
    """One sentence's recording, or why there is none (`audio` None: `reason`)."""

    audio: np.ndarray | None
    reason: str = ""
    again: bool = False  # something was said that is not the sentence: listen for it again


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
    sentences = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            raise RecordError(f"--sentences {path} line {number}: a TAB, which {LISTING} would read as the end "
                              "of the path: one sentence a line, no TABs")
        sentences.append(line.strip())
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

    def __init__(self, source: "AudioSource", config: "Config", max_sentence_s: float = MAX_SENTENCE_S) -> None:
        from edge.vad.endpointer import EndpointSettings, Endpointer
        from edge.vad.silero import SileroVad

        vad = config.vad.model_copy(update={"min_silence_ms": max(config.vad.min_silence_ms, SILENCE_MS),
                                            "speech_pad_ms": PAD_MS, "max_utterance_s": max_sentence_s})
        self._source = source
        self._live = not source.can_wait  # a microphone: its prompts are shown as the audio comes
        self._max_s = max_sentence_s
        self._vad = SileroVad()
        self._endpointer = Endpointer(EndpointSettings.from_config(vad))
        self._history = AudioHistory(max_sentence_s + HISTORY_MARGIN_S)
        self._breaks = source.breaks
        self._gone = False  # the microphone is being reopened: said once

    def take(self, wait_s: float) -> Take:
        """The next sentence said, cut where the speaker stops. Waits `wait_s` (of audio, or of the clock where
        the device sends none) for its start, and as long as a lost microphone is being reopened."""
        prompted = self._history.end  # where the stream was when the prompt was shown
        heard, overlong, waited, since = False, False, 0.0, time.monotonic()
        while not self._source.ended:
            block = self._source.read(timeout=READ_TIMEOUT_S)
            if self._source.breaks != self._breaks:  # what came before the break is no part of what follows
                self._breaks = self._source.breaks
                self._restart()
                prompted = 0
                if heard:
                    return Take(None, "the audio broke off (the device was lost or fell behind)", again=True)
            if block is not None and block.size:
                waited += block.size / SAMPLE_RATE
                for boundary in self._feed(block):
                    heard = True
                    if boundary.kind != "end" or boundary.end is None:
                        continue
                    if boundary.forced:  # no pause for max_sentence_s: skip to where the speaker stops
                        overlong = True
                    elif overlong:
                        return Take(None, f"it went on for more than {self._max_s:g} s without a pause", again=True)
                    else:
                        return self._cut(boundary.start, boundary.end, prompted)
            elif self._reconnecting():
                since, waited = time.monotonic(), 0.0
            if not heard and max(waited, time.monotonic() - since) >= wait_s:
                return Take(None, f"nothing was said in {wait_s:g} s")
        ends = [b for b in self._endpointer.flush(self._history.end) if b.end is not None]
        if ends and not overlong:
            return self._cut(ends[0].start, ends[0].end, prompted)
        return Take(None, ENDED)

    def _reconnecting(self) -> bool:
        """Whether the device is gone and being reopened (said once a time): no one can be heard meanwhile."""
        gone = self._source.stats().reconnecting
        if gone and not self._gone:
            _say("the microphone is gone; waiting for it to come back (Ctrl-C stops; what is recorded stays)")
        elif self._gone and not gone:
            _say("the microphone is back")
        self._gone = gone
        return gone

    def _feed(self, block: np.ndarray) -> list[Boundary]:
        """The starts and ends `block` brings. What may go is judged before it is fed: after an end, the
        earliest start to come is past the utterance just ended."""
        self._history.append(block, self._endpointer.earliest_start())
        return [b for p in self._vad.feed(block) for b in self._endpointer.update(p) if b.kind in ("start", "end")]

    def _cut(self, start: int, end: int, prompted: int) -> Take:
        audio = self._history.slice(start, end)
        speech_s = audio.size / SAMPLE_RATE - 2 * PAD_MS / 1000
        if speech_s < MIN_SPEECH_S:
            return Take(None, f"only {max(speech_s, 0):.1f} s of speech was heard", again=True)
        if self._live and start + PAD_MS * SAMPLE_RATE // 1000 < prompted + PROMPT_READ_S * SAMPLE_RATE:
            return Take(None, "the speech began before the prompt was shown", again=True)
        return Take(audio)

    def _restart(self) -> None:
        self._vad.reset()
        self._endpointer.reset()
        self._history = AudioHistory(self._max_s + HISTORY_MARGIN_S)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocabulary", type=Path, metavar="FILE", required=True,
                        help="the list whose terms are recorded, in the vocabulary file format (docs/operations.md)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help=f"where the WAV files and {LISTING} go; a run stopped before goes on here")
    parser.add_argument("--sentences", type=Path, metavar="FILE",
                        help="your own sentences, one a line, each with a term of the list (default: each term "
                             f"in {PER_TERM} sentences made for it)")
    parser.add_argument("--per-term", type=int, default=PER_TERM, choices=range(1, PER_TERM + 1), metavar="N",
                        help=f"sentences a term when they are made for it: 1-{PER_TERM} (default {PER_TERM})")
    parser.add_argument("--config", help="the config whose audio.device and vad keys are used "
                                          "(default: the one `run` would use; without one, the defaults)")
    parser.add_argument("--source", default="mic", help="mic (default), or file:PATH: one recording of the "
                                                         "sentences still to record, said in order, cut at the pauses")
    parser.add_argument("--list-sentences", action="store_true",
                        help="print the sentences still to record in --out (all without it), one a line, and "
                             "record nothing: to read from paper, or to say into another recorder for --source file:PATH")
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
    from edge.audio.base import SourceError
    from edge.commands.learn_sounds_like import says
    from edge.config import ConfigError
    from edge.errors import SetupError
    from edge.vocabulary import VocabularyError, read_file

    try:
        terms = read_file(args.vocabulary)
        if not terms:
            raise RecordError(f"{args.vocabulary}: no terms (one a line): there is nothing to record")
        sentences = read_sentences(args.sentences) if args.sentences else sentences_for(terms, args.per_term)
        if args.out is None and not args.list_sentences:
            raise RecordError("--out DIR is needed: where the recordings and their listing go")
        left = still_to_record(sentences, _recorded(args.out, create=not args.list_sentences) if args.out else [])
        if args.list_sentences:
            print("".join(f"{sentence}\n" for _, sentence in left), end="")
            return 0
        for _, sentence in left:
            if not any(says(sentence, term.text) for term in terms):
                _say(f"warning: {sentence!r} says none of the list's terms: it teaches nothing")
        _say(f"{len(sentences) - len(left)} of {len(sentences)} sentences recorded before; {len(left)} to go")
        if not left:
            return 0
        recorded = _session(args, left)
    except (VocabularyError, RecordError, ConfigError, SourceError, SetupError) as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    skipped = len(left) - recorded
    _say(f"{recorded} recorded, {skipped} skipped: {args.out / LISTING}" + (" (run again for the skipped ones)"
                                                                            if skipped else ""))
    return EXIT_SKIPPED if skipped else 0


def _session(args: argparse.Namespace, left: Sequence[tuple[int, str]]) -> int:
    """Open the source and record `left`; returns how many were recorded (Ctrl-C: those, said first)."""
    from edge.audio import open_source
    from edge.audio.base import SourceError
    from edge.config import load_for_command

    config = load_for_command(args.config, defaults_if_absent=True)
    source = open_source(args.source, config.audio, "fast")
    try:
        listener = Listener(source, config)  # the VAD loaded before the device opens: no audio of the wait
    except (OSError, RuntimeError) as exc:
        raise RecordError(f"the VAD model cannot be loaded: {exc}") from None
    try:
        source.start()
    except SourceError as exc:
        held = " (is the edge-asr service running? It may hold the microphone: sudo systemctl stop edge-asr)"
        raise RecordError(f"{exc}{held if args.source == 'mic' else ''}") from None
    done: list[int] = []
    try:
        _record(listener, left, args.out, args.wait_s, done)
    except KeyboardInterrupt:
        _say(f"stopped: {len(done)} recorded in {args.out / LISTING}; run it again to go on")
        raise
    finally:
        source.close()
    return len(done)


def _record(listener: Listener, left: Sequence[tuple[int, str]], out: Path, wait_s: float, done: list[int]) -> None:
    """Ask each sentence of `left` and keep what is said; each one kept is added to `done`."""
    for number, sentence in left:
        print(f"[{number}] Say: {sentence}", flush=True)
        take = _take(listener, number, wait_s)
        if take.audio is None:
            _say(f"[{number}] skipped: {take.reason}")
            if take.reason == ENDED:
                return
            continue
        _keep(out, number, sentence, take.audio)
        _say(f"[{number}] kept {take.audio.size / SAMPLE_RATE:.1f} s")
        done.append(number)


def _take(listener: Listener, number: int, wait_s: float) -> Take:
    """The sentence's take: what is not one (a cough, a radio, the last sentence's end) is listened past,
    TRIES times at most."""
    for _ in range(TRIES - 1):
        take = listener.take(wait_s)
        if not take.again:
            return take
        _say(f"[{number}] {take.reason}: say the whole sentence again")
    return listener.take(wait_s)


def _keep(out: Path, number: int, sentence: str, audio: np.ndarray) -> None:
    """The WAV file (private, as the daemon's recordings), whole before it is listed; then its line, on disk
    before the next sentence is asked."""
    import os

    from edge.audio.recorder import wav_bytes
    from edge.files import write_whole

    name = f"sentence{number:04d}-{time.strftime('%Y%m%d-%H%M%S')}.wav"
    listing = out / LISTING
    try:
        write_whole(out / name, wav_bytes(audio), 0o600)
        ends_a_line = not listing.exists() or listing.read_bytes()[-1:] in (b"", b"\n")
        with open(listing, "a", encoding="utf-8") as file:
            file.write(("" if ends_a_line else "\n") + f"{name}\t{sentence}\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise RecordError(f"--out {out}: cannot be written: {exc.strerror or exc}") from None


def _recorded(out: Path, create: bool) -> list[str]:
    """The sentences `out`'s listing has (`create`: making `out`, private, if it is not there). A listing with
    no line yet (a power cut before its first) is an empty one."""
    from edge.audio.recorder import private_dir
    from edge.commands.learn_sounds_like import RecordingsError, read_recordings

    if create:
        private_dir(out, "--out")
    listing = out / LISTING
    try:
        text = listing.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{listing}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        return []
    try:
        return [recording.said for recording in read_recordings(listing)]
    except RecordingsError as exc:
        raise RecordError(str(exc)) from None


def _say(message: str) -> None:
    print(f"edge-asr record-names: {message}", file=sys.stderr, flush=True)


def _fail(message: str, status: int) -> int:
    _say(message)
    return status
