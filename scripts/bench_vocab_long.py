"""Vocabulary biasing on files over 30 s, which the recognizer decodes in windows (the seek loop).

Each file: 4 consecutive clips of the English term set (build/eval/vocab_en), each followed by
a sentence of ../shared/eval/tts_piper_en, and one more sentence at the end (a seeded pause of
0.3-1.5 s after each piece): about 30 s of speech with 5-10 terms among ordinary sentences.
Groups start at clip 0 and at clip 2, so most clips are heard twice, in different company.
Each file's list is its own terms, decoded with no list and with vocabulary.prompt false (the
prefix tree alone), auto and true. A term counts as recalled when the file's text says it
(scoring.contains_term); WER as scripts/bench_recognizer.py.

    .venv/bin/python scripts/bench_vocab_long.py
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scoring  # noqa: E402
from bench_long_joined import PAUSE_S, RATE  # noqa: E402
from bench_recognizer import DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest  # noqa: E402
from bench_vocabulary import DEFAULT_VOCAB_EN, vocab_en_set  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.vocabulary import Vocabulary  # noqa: E402

CLIPS_PER_FILE = 4
MODES = {"none": None, "false": False, "auto": "auto", "true": True}  # vocabulary.prompt, or no list


def long_files(args: argparse.Namespace) -> list[tuple[np.ndarray, tuple[str, ...], str]]:
    """(audio, the terms said, the reference text) of each joined file."""
    clips = vocab_en_set(args.vocab_en, args.model, 0).clips
    sentences = manifest(args.eval_dir, "tts_piper_en", 0)
    rng, said, files = random.Random(args.seed), 0, []
    for start in (0, CLIPS_PER_FILE // 2):
        for first in range(start, len(clips) - CLIPS_PER_FILE + 1, CLIPS_PER_FILE):
            group = clips[first : first + CLIPS_PER_FILE]
            extra = [sentences[(said + i) % len(sentences)] for i in range(CLIPS_PER_FILE + 1)]
            said += len(extra)
            pieces = [p for clip, sentence in zip(group, extra) for p in ((clip.path, clip.text), sentence)] + extra[-1:]
            audio = [p for path, _ in pieces for p in (load_audio(path), np.zeros(int(RATE * rng.uniform(*PAUSE_S)), np.float32))]
            files.append((np.concatenate(audio), tuple(t for c in group for t in c.terms), " ".join(t for _, t in pieces)))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--vocab-en", type=Path, default=DEFAULT_VOCAB_EN)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    recognizer = load_recognizer(args.model, threads=args.threads)
    terms = vocab_en_set(args.vocab_en, args.model, 0).terms
    files = long_files(args)
    lengths = [len(a) / RATE for a, _, _ in files]
    print(f"model {args.model.name}, beam 5, {len(files)} files of {min(lengths):.1f}-{max(lengths):.1f} s "
          f"(seed {args.seed}); each file's own terms as its list\n")
    print("| list | terms recalled | recall % | WER | decode s |\n|---|---:|---:|---:|---:|")
    for mode, prompt in MODES.items():
        recalled, hyps, seconds = 0, [], 0.0
        for audio, said, _ in files:
            own = Vocabulary(tuple(t for t in terms.terms if t.text in said), bonus=terms.bonus, glossary=prompt)
            options = recognizer.options(language="en", vocabulary=own if prompt is not None else Vocabulary())
            began = time.perf_counter()
            hyps.append(recognizer.transcribe(audio, options=options).text)
            seconds += time.perf_counter() - began
            recalled += sum(scoring.contains_term("tts_piper_en", term, hyps[-1]) for term in said)
        total = sum(len(said) for _, said, _ in files)
        wer = 100 * scoring.error_rate("tts_piper_en", [ref for _, _, ref in files], hyps)
        print(f"| {mode} | {recalled}/{total} | {100 * recalled / total:.0f} | {wer:.1f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
