"""Long audio made of short eval clips: does the seek loop drop speech?

The shared eval sets have three English long-form files and one Mandarin one. This joins
every `--clips` consecutive clips of the short sets (a seeded pause of 0.3-1.5 s after
each) into files of 20-60 s with known text, and decodes each with our recognizer as
shipped, with Whisper's own rules (a window whose text ends early counts as all heard:
`Recognizer.tail_recheck_frames` set out of reach; a short last window counts however unsure
the model is of it: `short_rest_frames` 0), and with faster-whisper.
The real long-form sets are decoded too. Scoring as scripts/bench_recognizer.py.

    .venv/bin/python scripts/bench_long_joined.py                                  # tiny.en, English
    .venv/bin/python scripts/bench_long_joined.py --model models/whisper-base-int8 --language zh --sets zh longform_zh
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
from bench_recognizer import DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest, reference_engine, run_theirs  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402

LONG_SETS = ("longform_en", "longform_zh")  # decoded as they are
PAUSE_S = (0.3, 1.5)
RATE = 16000
ENGINES = ("ours", "Whisper's rule", "faster-whisper")


def joined(files: list[tuple[Path, str]], clips: int, rng: random.Random) -> list[tuple[np.ndarray, str]]:
    """Every `clips` consecutive files as one (audio, text), a random pause after each clip."""
    out = []
    for first in range(0, len(files) - clips + 1, clips):
        group = files[first : first + clips]
        pieces = [p for path, _ in group for p in (load_audio(path), np.zeros(int(RATE * rng.uniform(*PAUSE_S)), np.float32))]
        out.append((np.concatenate(pieces), " ".join(text for _, text in group)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--language", default="en")
    parser.add_argument("--sets", nargs="+", default=["tts_piper_en", "real_en", "tts_espeak_en", "longform_en"])
    parser.add_argument("--clips", type=int, default=5, help="clips per joined file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    args = parser.parse_args()
    ours = load_recognizer(args.model, threads=args.threads)
    whisper_rule = load_recognizer(args.model, threads=args.threads)
    whisper_rule.tail_recheck_frames = sys.maxsize
    whisper_rule.short_rest_frames = 0
    table(ours, whisper_rule, reference_engine(args.model, args.threads), args)
    return 0


def table(ours, whisper_rule, reference, args) -> None:
    """Print the markdown table: one row per set."""
    rng = random.Random(args.seed)
    print(f"model {args.model.name}, language {args.language}, beam 5, {args.clips} clips per joined file, "
          f"pauses {PAUSE_S[0]}-{PAUSE_S[1]} s (seed {args.seed}); WER or CER in %\n")
    print("| set | files | audio s | " + " | ".join(ENGINES) + " | ours s | Whisper's rule s |")
    print("|---|---:|---:|" + "---:|" * (len(ENGINES) + 2))
    for name in args.sets:
        files = manifest(args.eval_dir, name, 0)
        audio = [(load_audio(p), t) for p, t in files] if name in LONG_SETS else joined(files, args.clips, rng)
        hyps: dict[str, list[str]] = {engine: [] for engine in ENGINES}
        seconds = dict.fromkeys(ENGINES, 0.0)
        for samples, _ in audio:
            for engine, recognizer in (("ours", ours), ("Whisper's rule", whisper_rule)):
                began = time.perf_counter()
                hyps[engine].append(recognizer.transcribe(samples, options=recognizer.options(language=args.language)).text)
                seconds[engine] += time.perf_counter() - began
            hyps["faster-whisper"].append(run_theirs(reference, samples, 5, args.language))
        refs = [text for _, text in audio]
        errors = " | ".join(f"{100 * scoring.error_rate(name, refs, hyps[e]):.1f}" for e in ENGINES)
        total_s = sum(len(a) for a, _ in audio) / RATE
        print(f"| {name} | {len(audio)} | {total_s:.0f} | {errors} | {seconds['ours']:.1f} | {seconds[ENGINES[1]]:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
