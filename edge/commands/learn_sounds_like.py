"""Learn a vocabulary's sounds-like forms from recordings: what the box writes when each term is said.

A name the model does not know comes out as the words it sounds like ("Kristoff" for
Krzysztof, "Chessen" for Szczecin), and a room says its names in the same voices every day.
Each recording says a sentence with one or more of the list's terms. It is transcribed as the
daemon would, as a final (the list active, the same beam and prompt), with the other readings
that final's beam weighed, and as a partial (greedy, no prompt); each transcript is aligned with
the sentence, and what stands where a term was said becomes one of the term's forms. The list is
written back with them, in the vocabulary file format (term TAB weight TAB forms), its comments kept.

    edge-asr learn-sounds-like --vocabulary names.txt --recordings recordings.tsv --output names.txt

recordings.tsv: one recording a line, `path<TAB>what was said` (a path relative to the file).
Forms made of ordinary words ("case" for Kaohsiung) are kept too: the recognizer never shows them
as the term, but a final where one is heard is decoded again with the term as a prompt (`Cue`).
A one-word form as common as "me" is left out: as a cue it would have most finals decoded twice.
On scripts/vocab (tiny.en, the whole 39-term list, `vocabulary.prompt: auto`) the learned forms took
the names recalled from 40 % to 83 % with six recordings a term (71 % without the cues), and the cues
changed no word of the other eval sets (docs/benchmarks.md, "ordinary forms as cues").
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from pathlib import Path

from edge.asr.base import Recognizer
from edge.vocabulary import (
    COMMENT, MAX_SOUNDS_LIKE, UNSPACED, Term, Vocabulary, VocabularyError, check_forms,
    check_terms, check_text, term_line, without_forms,
)

# A unit of alignment: one Chinese or Japanese character, or a run of other letters and digits ("Krzysztof's"
# is "Krzysztof" and "s", so the term is found in it)
UNIT = re.compile(f"{UNSPACED.pattern}|(?:(?!{UNSPACED.pattern})[^\\W_])+")
UNANCHORED_SPARE = 1  # units a form may have beyond its term's where the term ends or starts the sentence


@dataclass(frozen=True)
class Recording:
    """One recording and what it says (a sentence with one or more terms)."""

    path: Path
    said: str


def _units(text: str) -> list[re.Match[str]]:
    return list(UNIT.finditer(text))


def _keys(text: str) -> list[str]:
    """`text`'s units as compared: lower-cased."""
    return [match.group(0).lower() for match in _units(text)]


def _find(units: Sequence[str], wanted: Sequence[str]) -> int | None:
    """Where `wanted` starts in `units` (both lower-cased), or None."""
    return next((i for i in range(len(units) - len(wanted) + 1) if list(units[i:i + len(wanted)]) == list(wanted)), None)


def written_for(said: str, written: str, term: str) -> str | None:
    """What `written` (a transcript) has where `said` (what was said) says `term`: None where it says the
    term itself or nothing there (`learned` leaves out what is no valid form: the alignment went astray).

    The two texts are aligned unit by unit (words; characters of Chinese); the form is what lies
    between the last unit matched before the term and the first matched after it.
    """
    said_units, wanted = _keys(said), _keys(term)
    start = _find(said_units, wanted)
    marks = _units(written)
    if start is None or not wanted or not marks:
        return None
    end = start + len(wanted)
    low, high = None, None  # the written units just after the last match before the term, and of the first after
    matcher = SequenceMatcher(None, said_units, _keys(written), autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        if a < start and size:
            low = max(low or 0, b + min(size, start - a))
        if a + size > end and size:
            high = min(high if high is not None else len(marks), b + max(0, end - a))
    if low is None and high is None:
        return None  # nothing of the sentence around the term was written: no telling where it is
    # A side with nothing matched ends the sentence: "Thank you for watching" after it is not the name
    low = low if low is not None else max(0, high - len(wanted) - UNANCHORED_SPARE)
    high = high if high is not None else min(len(marks), low + len(wanted) + UNANCHORED_SPARE)
    if low >= high:
        return None
    form = written[marks[low].start():marks[high - 1].end()]
    has_term = _find(_keys(form), wanted) is not None  # "the Grafana": the term, and a neighbour misheard
    return None if has_term else form


def learned(vocabulary: Vocabulary, heard: Iterable[tuple[str, str]]) -> tuple[Term, ...]:
    """`vocabulary`'s terms with the forms written for them in `heard` ((said, written) pairs) added,
    the most frequent first, up to MAX_SOUNDS_LIKE a term. Left out: a form that is no valid form, has a term of
    the list in it, or is already a form (in any case) of this or another term."""
    counts: dict[str, Counter[str]] = {term.text: Counter() for term in vocabulary.terms}
    for said, written in heard:
        for term in vocabulary.terms:
            form = written_for(said, written, term.text)
            if form is not None:
                counts[term.text][form] += 1
    taken = {form.lower() for term in vocabulary.terms for form in (term.text, *term.sounds_like)}  # matched in any case
    terms = []
    for term in vocabulary.terms:
        forms = list(term.sounds_like)  # the technician's own, kept as they are
        for form, _ in counts[term.text].most_common():
            if len(forms) < MAX_SOUNDS_LIKE and form.lower() not in taken and _usable(form, term, vocabulary):
                forms.append(form)
                taken.add(form.lower())
        terms.append(replace(term, sounds_like=tuple(forms)))
    return check_terms(terms, "learned list")


def _usable(form: str, term: Term, vocabulary: Vocabulary) -> bool:
    """Whether a learned `form` may be written to the list: a valid form (the daemon reads the file back) with
    no term of the list in it."""
    try:
        check_forms([form], term.text, "learned")
    except VocabularyError:
        return False  # the alignment went astray ("长" written 13 times), or a "|" the file would split on
    return not _names_a_term(form, vocabulary) and not _took_a_syllable(form, term.text)


def _took_a_syllable(form: str, term: str) -> bool:
    """Whether a Chinese `form` has more characters than its Chinese term. A character is a syllable, so such a
    form took a neighbour's: 再打抹院 for 达摩院 (the voice's onset before it), 负贷被 for 复旦 (the 的 after it).
    再打抹院 in a list made whisper-base drop half of a meeting clip that says none of the terms."""
    whole = [text for text in (form, term) if len(UNSPACED.findall(text)) == len(text)]
    return len(whole) == 2 and len(form) > len(term)


def _names_a_term(form: str, vocabulary: Vocabulary) -> bool:
    """Whether `form` has a term of the list in it: with the list as its prompt, the model wrote "Wojciech Dubu"
    for Ouagadougou, a name it had read, not what it heard."""
    return any(says(form, term.text) for term in vocabulary.terms)


EXIT_RECORDING_ERRORS = 1  # some recordings could not be read: the rest were still learned from
EXIT_INPUT_ERROR = 2  # the list, the recordings file, the model or --output: nothing was learned


class RecordingsError(ValueError):
    """The recordings file cannot be used; str() names the line."""


def read_recordings(path: Path) -> list[Recording]:
    """`path<TAB>what was said` a line (blank lines and `#` comments skipped); a path relative to the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordingsError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    recordings = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        audio, tab, said = line.partition("\t")
        if not tab or not audio.strip() or not said.strip():
            raise RecordingsError(f"{path} line {number}: expected the recording's path, a TAB and what it says")
        recordings.append(Recording(path.parent / audio.strip(), said.strip()))
    if not recordings:
        raise RecordingsError(f"{path}: no recordings listed (one a line: path TAB what was said)")
    return recordings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.commands.transcribe import add_decoding_arguments

    parser.add_argument("--vocabulary", type=Path, metavar="FILE", required=True,
                        help="the list to learn for, in the vocabulary file format (docs/operations.md)")
    parser.add_argument("--recordings", type=Path, metavar="FILE", required=True,
                        help="one recording a line: its path, a TAB, and the sentence it says (with one of the terms)")
    parser.add_argument("--output", type=Path, metavar="FILE",
                        help="write the list with its sounds-like forms here (default: stdout); may be --vocabulary")
    add_decoding_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from edge.asr.load import read_family
    from edge.audio.audiofile import AudioFileError
    from edge.commands.transcribe import open_decoder
    from edge.errors import ModelError
    from edge.files import new_file_mode, write_whole
    from edge.languages import LanguageError
    from edge.vocabulary import PROMPTS, read_vocabulary_file

    try:
        vocabulary = read_vocabulary_file(args.vocabulary, glossary=PROMPTS[args.vocabulary_prompt])
        source = args.vocabulary.read_bytes().decode("utf-8-sig")  # written back with its comments and line ends
        recordings = read_recordings(args.recordings)
        recognizer, options, _ = open_decoder(args, vocabulary)
    except (VocabularyError, RecordingsError, ModelError, LanguageError) as exc:
        return _fail(str(exc), EXIT_INPUT_ERROR)
    except OSError as exc:  # the list went away after it was read
        return _fail(f"{args.vocabulary}: cannot be read: {exc.strerror or exc}", EXIT_INPUT_ERROR)
    heard, failed = [], 0
    for recording in recordings:
        if not any(says(recording.said, term.text) for term in vocabulary.terms):
            print(f"edge-asr learn-sounds-like: {recording.path}: {recording.said!r} says none of the list's terms",
                  file=sys.stderr)
        try:
            heard += _heard(recognizer, options, recording)
        except AudioFileError as exc:
            print(f"edge-asr learn-sounds-like: {exc}", file=sys.stderr)
            failed += 1
        except (RuntimeError, MemoryError) as exc:  # the backend failed on this recording: the next may still go
            print(f"edge-asr learn-sounds-like: {recording.path}: recognition failed ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            failed += 1
    terms = learned(vocabulary, heard)
    family = read_family(args.model)
    own = {(term.text, form) for term in vocabulary.terms for form in term.sounds_like}  # the technician's stay
    terms = _without_idle(terms, [pair for pair in family.idle_forms(args.model, Vocabulary(terms)) if pair not in own])
    ordinary = set(family.ordinary_forms(args.model, Vocabulary(terms)))
    for term in terms:
        if term.sounds_like:
            cues = [form for form in term.sounds_like if (term.text, form) in ordinary]
            kept = f"; ordinary words, only a cue to decode a final again: {', '.join(cues)}" if cues else ""
            print(f"{term.text}: sounds like {', '.join(term.sounds_like)}{kept}", file=sys.stderr)
    text = rewritten(source, terms)
    if args.output is None:
        print(text, end="")
    else:
        try:
            write_whole(args.output, text.encode("utf-8"), new_file_mode())
        except OSError as exc:
            return _fail(f"--output {args.output}: cannot be written: {exc.strerror or exc}", EXIT_INPUT_ERROR)
    return EXIT_RECORDING_ERRORS if failed else 0


def _heard(recognizer: Recognizer, options: object, recording: Recording) -> list[tuple[str, str]]:
    """(said, written) for the recording's final, the other readings its beam weighed, and its partial: the
    daemon shows the final and the partial (which has no prompt, and hears a name otherwise), and a name said
    again may come out as a spelling the beam weighed here and did not choose ("the vest" behind "the best").

    Measured on scripts/vocab (docs/benchmarks.md, "learned from the beam's other readings"): with six
    recordings a name, the beam's readings raised recall under `prompt: auto` from 33/52 to 37/52.
    """
    from edge.audio.audiofile import load_audio

    audio = load_audio(recording.path)
    final = recognizer.transcribe(audio, options=options)
    partial = recognizer.transcribe(audio, partial=True, options=options).text
    print(f"{recording.path} (final): {final.text}", file=sys.stderr)
    for other in final.alternatives:
        print(f"{recording.path} (final, also weighed): {other}", file=sys.stderr)
    print(f"{recording.path} (partial): {partial}", file=sys.stderr)
    return [(recording.said, written) for written in (final.text, *final.alternatives, partial)]


def _without_idle(terms: tuple[Term, ...], idle: list[tuple[str, str]]) -> tuple[Term, ...]:
    """`terms` less the `idle` (term, form) pairs (`bias.idle_forms`: "me" for Nguyen), each one said on stderr."""
    for term, form in idle:
        print(f"{term}: left out {form!r}, a word too common to be a cue", file=sys.stderr)
    return without_forms(Vocabulary(terms), idle).terms


def rewritten(text: str, terms: Sequence[Term]) -> str:
    """A vocabulary file's `text` (already read as valid) with each term's line written anew from `terms`:
    comments, blank lines and the order stay as the technician wrote them."""
    by_text = {term.text: term for term in terms}
    lines = []
    for line in text.split("\n"):
        ending = "\r" if line.endswith("\r") else ""  # a CRLF file stays CRLF
        line = line.removesuffix("\r")
        comment = COMMENT.search(line)
        entry = line[:comment.start()] if comment else line
        if entry.strip():
            term = by_text[check_text(entry.partition("\t")[0], "line")]
            line = term_line(term) + entry[len(entry.rstrip()):] + (line[comment.start():] if comment else "")
        lines.append(line + ending)
    return "\n".join(lines)


def says(text: str, term: str) -> bool:
    """Whether `text` has `term` in it, as whole units in any case."""
    return _find(_keys(text), _keys(term)) is not None


def _fail(message: str, status: int) -> int:
    print(f"edge-asr learn-sounds-like: {message}", file=sys.stderr)
    return status
