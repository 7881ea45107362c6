"""Transcribe WAV/FLAC (or MP3/Ogg) files offline: the text, a JSON line per file, or subtitles.

Subtitles are SRT or WebVTT, timed by the model.

Each file is decoded as it is transcribed, never whole, so an hour takes no more
memory than a minute. A file that cannot be read is reported on stderr and skipped;
one damaged part-way gets the text of the audio before the damage, then the report;
either way the others are still transcribed and the exit status is 1 at the end. A model directory that cannot be loaded, or a --vocabulary file with a bad
line, is exit status 2. A person at a terminal sees a progress bar on stderr for
files over a minute.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import edge
from edge.audio.audiofile import AudioFileError, AudioReader
from edge.asr.base import LongFormRecognizer, Recognizer, Segment, Transcript
from edge.asr.text import SCRIPTS
from edge.errors import ModelError
from edge.files import new_file_mode, write_whole
from edge.limits import MAX_BEAM
from edge.vocabulary import PROMPTS, Vocabulary, VocabularyError, read_vocabulary_file
from edge.service.memory import limit_heap_growth

DEFAULT_MODEL = Path(edge.__file__).resolve().parents[1] / "models" / "whisper-tiny.en-int8"
EXIT_FILE_ERRORS = 1
EXIT_MODEL_ERROR = 2  # also a bad --language, --vocabulary or --output-dir: nothing can be transcribed
SUBTITLES = ("srt", "vtt")
# Files up to this long are done in seconds (tiny.en, beam 5: longform_en's 184 s in 12 s
# on 2 cores), too soon for a progress bar to tell anything.
PROGRESS_MIN_S = 60.0


def _whole_number(low: int, high: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type for a whole number in [low, high], whose error says so (not 'invalid _x value')."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low}{meaning} to {high}, got {value!r}")
        return number
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="WAV, FLAC, MP3 or Ogg files, any rate and channel count")
    parser.add_argument("--format", choices=("text", "jsonl", *SUBTITLES), default="text",
                        help="output format: text (default), jsonl (with timed segments), srt or vtt (subtitles)")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="srt/vtt: write each file's subtitles to DIR/NAME.srt (or .vtt); needed for several files")
    add_decoding_arguments(parser)
    parser.add_argument("--prompt", default="", metavar="TEXT", help="text said before the audio: a style hint")
    parser.add_argument("--vocabulary", type=Path, metavar="FILE",
                        help="names and terms to favour: one per line, optional TAB and weight, optional TAB and "
                             "sounds-like forms separated by | (docs/operations.md)")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """How a file is decoded: the model, its language and script, the beam, the threads, the list's prompt
    (also `edge-asr learn-sounds-like`, which must decode as the daemon will)."""
    parser.add_argument("--beam", type=_whole_number(1, MAX_BEAM), default=5, help="beam size (default: 5; 1 = greedy)")
    parser.add_argument("--threads", type=_whole_number(0, 64, " (all cores)"), default=0, help="CPU threads (default: 0 = all cores)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"model directory (default: {DEFAULT_MODEL})")
    parser.add_argument("--language", default="auto", metavar="CODE",
                        help="language spoken, a code the model knows (zh, en, ...), or auto (default: detect)")
    parser.add_argument("--chinese-script", choices=tuple(SCRIPTS), default="simplified",
                        help="characters of Chinese text, as model.chinese_script (default: simplified)")
    parser.add_argument("--vocabulary-prompt", choices=tuple(PROMPTS), default="auto",
                        help="also give the terms as a prompt, as vocabulary.prompt: auto (default), true or false")


def open_decoder(args: argparse.Namespace, vocabulary: Vocabulary, prompt: str = "") -> tuple[Recognizer, object, str]:
    """The recognizer, its options and the checked language for `add_decoding_arguments`' arguments;
    ModelError, LanguageError or ValueError where they cannot work."""
    from edge.asr.load import load_recognizer
    from edge.languages import check_language

    recognizer = load_recognizer(args.model, threads=args.threads)
    language = check_language(args.language, args.model, "--model", "--chinese-script")
    options = recognizer.options(beam_size=args.beam, language=language, prompt=prompt, vocabulary=vocabulary,
                                 script=args.chinese_script)
    return recognizer, options, language


def _emit(args: argparse.Namespace, name: str, transcript: Transcript, duration_s: float, elapsed_s: float,
          damage: AudioFileError | None) -> None:
    """`damage`: what ended a file part-way; a jsonl record says it too, beside the text of the audio before it."""
    text = transcript.text
    if args.format in SUBTITLES:
        _write_subtitles(args, name, transcript)
        return
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")  # a name that is not UTF-8: "caf\\udce9.wav"
    if args.format == "jsonl":
        segments = [{"start_s": start, "end_s": end, "text": words} for start, end, words in transcript.segments]
        record = {"file": name, "text": text, "duration_s": round(duration_s, 3), "elapsed_s": round(elapsed_s, 3),
                  "language": transcript.language, "segments": segments}
        if damage is not None:
            record["error"] = str(damage)
        print(json.dumps(record, ensure_ascii=False), flush=True)
    elif len(args.files) > 1:
        print(f"{name}: {text}", flush=True)
    else:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    from edge.languages import LanguageError

    limit_heap_growth()
    problem = _output_problem(args)
    if problem:
        print(f"edge-asr transcribe: {problem}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    try:
        prompt = PROMPTS[args.vocabulary_prompt]
        vocabulary = read_vocabulary_file(args.vocabulary, glossary=prompt) if args.vocabulary else Vocabulary()
        recognizer, options, language = open_decoder(args, vocabulary, args.prompt)
    except (ModelError, LanguageError, VocabularyError) as exc:
        print(f"edge-asr transcribe: {exc}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    advice = recognizer.vocabulary_advice(vocabulary, language)
    if advice:
        print(f"edge-asr transcribe: warning: {advice}", file=sys.stderr)
    failed = 0
    for name in args.files:
        start = time.perf_counter()
        try:
            with AudioReader(name) as reader:
                audio = _UpToDamage(reader)
                transcript = _transcribe(recognizer, audio, reader, options, timed=args.format in SUBTITLES)
        except AudioFileError as exc:
            print(f"edge-asr transcribe: {exc}", file=sys.stderr)
            failed += 1
            continue
        except (RuntimeError, MemoryError) as exc:  # the backend failed on this file: the next ones may still go
            print(f"edge-asr transcribe: {name}: recognition failed ({type(exc).__name__}: {exc})", file=sys.stderr)
            failed += 1
            continue
        try:
            _emit(args, name, transcript, reader.duration_s, time.perf_counter() - start, audio.damage)
        except _OutputError as exc:  # --output-dir full or gone: this file's subtitles are lost, say so
            print(f"edge-asr transcribe: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        except BrokenPipeError:  # the reader went away (`| head`): edge/cli.py ends the run quietly
            raise
        except OSError as exc:  # stdout itself failed (a full disk behind `>`): no later text can be delivered
            print(f"edge-asr transcribe: cannot write to stdout: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FILE_ERRORS
        if audio.damage is not None:
            print(f"edge-asr transcribe: {audio.damage} (the text above is of the audio before it)", file=sys.stderr)
            failed += 1
    return EXIT_FILE_ERRORS if failed else 0


class _OutputError(Exception):
    """A subtitle file that could not be written. Not for stdout: a closed pipe (`| head`) or a full
    stdout ends the run (edge/cli.py), where a subtitle file's failure skips that file."""


class _UpToDamage:
    """A reader whose damage part-way (a cut file, NaN samples) ends the audio there, kept to be told after the
    text of what came before: a cut recording's first hour is still worth its transcript."""

    def __init__(self, reader: AudioReader) -> None:
        self.reader = reader
        self.damage: AudioFileError | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            yield from self.reader
        except AudioFileError as exc:
            self.damage = exc


def _transcribe(recognizer: Recognizer, audio: _UpToDamage, reader: AudioReader, options: object,
                timed: bool) -> Transcript:
    """The whole file: streamed where the model family can (bounded memory), else decoded whole.
    `timed`: segments timed by the model (subtitles), where the family can."""
    if not isinstance(recognizer, LongFormRecognizer):
        return recognizer.transcribe(np.concatenate([np.zeros(0, np.float32), *audio]), options=options)
    with _progress(reader.path.name, reader.duration_s) as progress:
        return recognizer.transcribe_stream(audio, options=options, progress=progress, timed=timed)


def _output_problem(args: argparse.Namespace) -> str | None:
    """Why the output options cannot work, before a model is loaded; None if they can."""
    if args.output_dir is not None and args.format not in SUBTITLES:
        return f"--output-dir is for --format srt or vtt (text and jsonl go to stdout), not {args.format}"
    if args.format in SUBTITLES and args.output_dir is None and len(args.files) > 1:
        return f"--format {args.format} with {len(args.files)} files needs --output-dir DIR (one subtitle file each)"
    if args.output_dir is None:
        return None
    names = [_subtitle_path(args, name).name for name in args.files]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        return f"two input files would both write {twice[0]} in {args.output_dir}: rename one, or run them separately"
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--output-dir {args.output_dir} cannot be made: {exc.strerror or exc}"
    try:  # a directory that cannot be written, found now, not after decoding every file
        tempfile.NamedTemporaryFile(dir=args.output_dir, prefix=".edge-asr-", suffix=".part").close()
    except OSError as exc:
        return f"--output-dir {args.output_dir} cannot be written: {exc.strerror or exc}"
    return None


def _subtitle_path(args: argparse.Namespace, name: str) -> Path:
    return args.output_dir / f"{Path(name).stem}.{args.format}"


def _write_subtitles(args: argparse.Namespace, name: str, transcript: Transcript) -> None:
    """To --output-dir/NAME.srt (or .vtt), whole or not at all; else to stdout."""
    text = subtitles(transcript.segments, args.format)
    if args.output_dir is None:
        print(text, end="", flush=True)
        return
    path = _subtitle_path(args, name)
    try:
        write_whole(path, text.encode("utf-8"), new_file_mode())
    except OSError as exc:
        raise _OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def subtitles(segments: Sequence[Segment], form: str) -> str:
    """SRT or WebVTT cues for `segments`; an empty one (silence) gives no cue. WebVTT text escapes
    `&`, `<` and `>` (a tag or an entity there)."""
    cues = [(start, end, _cue_text(words, form)) for start, end, words in segments]
    lines = ["WEBVTT", ""] if form == "vtt" else []
    for number, (start, end, words) in enumerate((cue for cue in cues if cue[2]), start=1):
        times = f"{_clock(start, form)} --> {_clock(end, form)}"
        lines += [str(number), times, words, ""] if form == "srt" else [times, words, ""]
    return "\n".join(lines)  # each cue ends with a blank line


def _cue_text(words: str, form: str) -> str:
    text = " ".join(words.split()).replace("-->", "->")
    return html.escape(text, quote=False) if form == "vtt" else text


def _clock(seconds: float, form: str) -> str:
    """00:01:02,345 (SRT) or 00:01:02.345 (WebVTT)."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{',' if form == 'srt' else '.'}{millis % 1000:03d}"


@contextmanager
def _progress(name: str, duration_s: float) -> Iterator[Callable[[float], None] | None]:
    """A bar on stderr for a person watching a long file at a terminal; nothing for pipes, logs and short files."""
    if duration_s <= PROGRESS_MIN_S or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # only when a bar is shown

    with tqdm(total=math.ceil(duration_s), unit="s", desc=name, file=sys.stderr, leave=False) as bar:
        yield lambda seconds: bar.update(min(round(seconds), bar.total) - bar.n)
