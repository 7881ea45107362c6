"""Issue 11: would a glossed second pass, run only where a first pass with the prefix tree is unsure, fit?

Decodes vocab_en (build/eval/vocab_en, scripts/make_vocab_set.py) with the whole term list and the
short English eval sets with scripts/vocab/unrelated_50.txt, under `auto` (the tree alone), and
prints, for each threshold on the first result's average log-probability, how many term clips and
general clips would get the second pass, the terms missed in the clips that would not, and the share
of the general sets' decode time the second pass would cover (docs/benchmarks.md).

    .venv/bin/python scripts/bench_vocab_gate.py [--thresholds -0.2 -0.25 -0.3 -0.4 -0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scoring  # noqa: E402
from bench_recognizer import DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest_rows  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.vocabulary import Vocabulary, read_vocabulary_file  # noqa: E402

GENERAL = ("real_en", "real_meeting", "tts_piper_en", "tts_espeak_en")
MAX_CLIP_S = 30  # one window: long files are another path
VOCAB = REPO / "scripts" / "vocab"


def first_passes(recognizer, rows: list[tuple[Path, tuple[str, ...]]], vocabulary: Vocabulary) -> list[dict]:
    """Per clip: the first pass's average log-probability, its decode time, terms said and recalled."""
    options = recognizer.options(beam_size=5, language="en", vocabulary=vocabulary)
    found = []
    for path, said in rows:
        audio = load_audio(path)
        if len(audio) > MAX_CLIP_S * 16000:
            continue
        began = time.perf_counter()
        transcript = recognizer.transcribe(audio, options=options)
        found.append({"avg": transcript.avg_logprob, "seconds": time.perf_counter() - began, "said": len(said),
                      "hit": sum(scoring.contains_term("vocab_en", term, transcript.text) for term in said)})
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--vocab-dir", type=Path, default=REPO / "build" / "eval")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[-0.2, -0.25, -0.3, -0.4, -0.5])
    args = parser.parse_args()
    recognizer = load_recognizer(args.model, threads=2)
    terms = first_passes(recognizer, [(args.vocab_dir / "vocab_en" / r["audio"], tuple(r["terms"]))
                                      for r in manifest_rows(args.vocab_dir, "vocab_en")],
                         read_vocabulary_file(VOCAB / "terms_en.txt"))
    general = first_passes(recognizer, [(args.eval_dir / name / r["audio"], ()) for name in GENERAL
                                        for r in manifest_rows(args.eval_dir, name)],
                           read_vocabulary_file(VOCAB / "unrelated_50.txt"))
    print(f"first pass: {sum(c['hit'] for c in terms)}/{sum(c['said'] for c in terms)} terms")
    print("| fire below | term clips fired | terms missed in clips not fired | general clips fired | share of general time |")
    print("|---|---:|---:|---:|---:|")
    total_s = sum(c["seconds"] for c in general)
    for threshold in args.thresholds:
        missed = sum(c["said"] - c["hit"] for c in terms if c["avg"] >= threshold)
        fired = [c for c in general if c["avg"] < threshold]
        print(f"| {threshold:.2f} | {sum(c['avg'] < threshold for c in terms)} of {len(terms)} | {missed} | "
              f"{len(fired)} of {len(general)} | {sum(c['seconds'] for c in fired) / total_s:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
