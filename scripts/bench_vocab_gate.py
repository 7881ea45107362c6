"""Issue 11: would a glossed second pass, run only where a first pass with the prefix tree is unsure, fit?

Decodes vocab_en (build/eval/vocab_en, scripts/make_vocab_set.py) with the whole term list and the
short English eval sets with scripts/vocab/unrelated_50.txt, under `auto` (the tree alone), and
prints two gates for the second pass (docs/benchmarks.md):
- by the first result's average log-probability: for each threshold, how many term clips and
  general clips would get the second pass, the terms missed in the clips that would not, and the
  share of the general sets' decode time the second pass would cover;
- by the beam's own evidence: the terms that some hypothesis the beam kept had spelt at least so
  far (a second pass would get them as a short glossary), how many of the terms the first pass
  missed they name, and how many general clips they would send to the second pass.

    .venv/bin/python scripts/bench_vocab_gate.py [--thresholds -0.2 -0.25 -0.3 -0.4 -0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scoring  # noqa: E402
from bench_recognizer import DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest_rows  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.asr.whisper.bias import ROOT, BiasTrie, spellings  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.vocabulary import Vocabulary, read_vocabulary_file  # noqa: E402

GENERAL = ("real_en", "real_meeting", "tts_piper_en", "tts_espeak_en")
MAX_CLIP_S = 30  # one window: long files are another path
VOCAB = REPO / "scripts" / "vocab"
SPELT = {"its first token": lambda depth, length: depth >= 1, "two tokens": lambda depth, length: depth >= 2,
         "half of it": lambda depth, length: 2 * depth >= length, "all of it": lambda depth, length: depth == length}


@contextmanager
def kept_matches(nodes: list[int]) -> Iterator[None]:
    """Records the tree node of every hypothesis the search keeps (`BiasTrie.step` is called for each)."""
    step = BiasTrie.step

    def recording(self: BiasTrie, state, token: int, gain: float = 0.0):
        match = step(self, state, token, gain)
        nodes.append(match.node)
        return match

    BiasTrie.step = recording
    try:
        yield
    finally:
        BiasTrie.step = step


def term_nodes(recognizer, trie: BiasTrie, vocabulary: Vocabulary) -> dict[int, list[tuple[str, int, int]]]:
    """Per tree node: (term, tokens of it spelt there, tokens in that spelling)."""
    out: dict[int, list[tuple[str, int, int]]] = {}
    for term in vocabulary.terms:
        for form in spellings(term.text):
            tokens = recognizer.tokenizer.encode(form)
            node = ROOT
            for depth, token in enumerate(tokens, 1):
                node = trie._children[node][token]
                out.setdefault(node, []).append((term.text, depth, len(tokens)))
    return out


def first_passes(recognizer, rows: list[tuple[Path, tuple[str, ...]]], vocabulary: Vocabulary) -> list[dict]:
    """Per clip: the first pass's average log-probability, its decode time, terms said, recalled and
    missed, and how far the kept hypotheses spelt each term ({term: [(depth, length), ...]})."""
    options = recognizer.options(beam_size=5, language="en", vocabulary=vocabulary)
    spelt_at = term_nodes(recognizer, options.bias, vocabulary)
    found = []
    for path, said in rows:
        audio = load_audio(path)
        if len(audio) > MAX_CLIP_S * 16000:
            continue
        nodes: list[int] = []
        began = time.perf_counter()
        with kept_matches(nodes):
            transcript = recognizer.transcribe(audio, options=options)
        seconds = time.perf_counter() - began
        reached: dict[str, list[tuple[int, int]]] = {}
        for term, depth, length in (spelt for node in set(nodes) for spelt in spelt_at.get(node, ())):
            reached.setdefault(term, []).append((depth, length))
        hit = [term for term in said if scoring.contains_term("vocab_en", term, transcript.text)]
        found.append({"avg": transcript.avg_logprob, "seconds": seconds, "said": len(said), "hit": len(hit),
                      "missed": [term for term in said if term not in hit], "reached": reached})
    return found


def named(clip: dict, rule) -> set[str]:
    """The terms some kept hypothesis spelt as far as `rule` asks."""
    return {term for term, spelt in clip["reached"].items() if any(rule(*each) for each in spelt)}


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
    print()
    print("| a kept hypothesis spelt | missed terms named | term clips fired | general clips fired | share of general time |")
    print("|---|---:|---:|---:|---:|")
    for name, rule in SPELT.items():
        caught = sum(len(set(c["missed"]) & named(c, rule)) for c in terms)
        fired = [c for c in general if named(c, rule)]
        print(f"| {name} | {caught} of {sum(len(c['missed']) for c in terms)} | {sum(bool(named(c, rule)) for c in terms)} "
              f"of {len(terms)} | {len(fired)} of {len(general)} | {sum(c['seconds'] for c in fired) / total_s:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
