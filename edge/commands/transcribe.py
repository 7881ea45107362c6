"""Transcribe WAV/FLAC files offline and print the text (or one JSON line per file).

A file that cannot be read is reported on stderr and skipped; the others are
still transcribed and the exit status is 1 at the end. A model directory that
cannot be loaded is exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import edge
from edge.audio.audiofile import AudioFileError, load_audio
from edge.asr.base import Transcript
from edge.audio.base import SAMPLE_RATE
from edge.errors import ModelError
from edge.service.memory import limit_heap_growth

DEFAULT_MODEL = Path(edge.__file__).resolve().parents[1] / "models" / "whisper-tiny.en-int8"
EXIT_FILE_ERRORS = 1
EXIT_MODEL_ERROR = 2


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _threads(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 64:
        raise argparse.ArgumentTypeError(f"must be 0 (all cores) to 64, got {number}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="WAV or FLAC files, any rate and channel count")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text", help="output format (default: text)")
    parser.add_argument("--beam", type=_positive, default=5, help="beam size (default: 5; 1 = greedy)")
    parser.add_argument("--threads", type=_threads, default=0, help="CPU threads (default: 0 = all cores)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"model directory (default: {DEFAULT_MODEL})")
    parser.add_argument("--language", default="auto", metavar="CODE",
                        help="language spoken, a code the model knows (zh, en, ...), or auto (default: detect)")
    parser.add_argument("--prompt", default="", metavar="TEXT", help="text said before the audio: a style hint")


def _emit(args: argparse.Namespace, name: str, transcript: Transcript, duration_s: float, elapsed_s: float) -> None:
    text = transcript.text
    if args.format == "jsonl":
        record = {"file": name, "text": text, "duration_s": round(duration_s, 3), "elapsed_s": round(elapsed_s, 3),
                  "language": transcript.language}
        print(json.dumps(record, ensure_ascii=False), flush=True)
    elif len(args.files) > 1:
        print(f"{name}: {text}", flush=True)
    else:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    from edge.asr.load import load_recognizer
    from edge.languages import LanguageError, check_language

    limit_heap_growth()
    try:
        recognizer = load_recognizer(args.model, threads=args.threads)
        options = recognizer.options(beam_size=args.beam, language=check_language(args.language, args.model),
                                     prompt=args.prompt)
    except (ModelError, LanguageError) as exc:
        print(f"edge-asr transcribe: {exc}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    failed = 0
    for name in args.files:
        start = time.perf_counter()
        try:
            audio = load_audio(name)
        except AudioFileError as exc:
            print(f"edge-asr transcribe: {exc}", file=sys.stderr)
            failed += 1
            continue
        transcript = recognizer.transcribe(audio, options=options)
        _emit(args, name, transcript, len(audio) / SAMPLE_RATE, time.perf_counter() - start)
    return EXIT_FILE_ERRORS if failed else 0
