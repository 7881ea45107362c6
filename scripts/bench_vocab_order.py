"""Vocabulary: does the order of a long list in the glossary matter? (issue 11, not shipped)

Each vocab_en clip is decoded with the whole terms_en.txt list under `prompt: auto` (the prefix
tree alone: a first pass), the terms are ranked by their best letter similarity (rapidfuzz
`ratio`, accents folded) to any 1-4 word span of that text, and the clip is decoded again with
the list as the glossary (`prompt: true`) in each order. Recall counts as in bench_vocabulary.py.

    .venv/bin/python scripts/bench_vocab_order.py           # tiny.en, beam 5: about a minute on dev-2c
"""

from __future__ import annotations

import sys
import time
import unicodedata
from dataclasses import replace
from pathlib import Path

from rapidfuzz import fuzz

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_vocabulary as bv  # noqa: E402
from bench_recognizer import DEFAULT_MODEL, run_ours  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.vocabulary import Term  # noqa: E402

BEAM = 5
ORDERS = {  # name -> the glossary's terms, from the terms ranked best first
    "file order": None,
    "best first": lambda ranked: ranked,
    **{f"best {n}, best last": (lambda n: lambda ranked: ranked[:n][::-1])(n) for n in (5, 10, 15, 20, 25, 30)},
    "best last": lambda ranked: ranked[::-1],
}


def fold(text: str) -> str:
    """Lower case, accents and punctuation dropped: "Wrocław," -> "wroclaw"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch) and (ch.isalnum() or ch == " "))


def ranked(terms: tuple[Term, ...], text: str) -> list[Term]:
    """`terms`, best letter similarity to a 1-4 word span of `text` first."""
    words = fold(text).split()
    spans = [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(i + 5, len(words) + 1))]
    best = {term.text: max((fuzz.ratio(fold(term.text), span) for span in spans), default=0) for term in terms}
    return sorted(terms, key=lambda term: -best[term.text])


def main() -> int:
    eval_set = bv.vocab_en_set(bv.DEFAULT_VOCAB_EN, DEFAULT_MODEL, 0)
    recognizer = load_recognizer(DEFAULT_MODEL, threads=2)
    whole = eval_set.terms
    hyps: dict[str, list[str]] = {name: [] for name in ("tree alone", *ORDERS)}
    seconds = dict.fromkeys(hyps, 0.0)

    def decode(name: str, audio, vocabulary) -> str:
        started = time.perf_counter()
        text = run_ours(recognizer, audio, recognizer.options(beam_size=BEAM, language="en", vocabulary=vocabulary))
        seconds[name] += time.perf_counter() - started
        hyps[name].append(text)
        return text

    for clip in eval_set.clips:
        audio = load_audio(clip.path)
        first = decode("tree alone", audio, replace(whole, glossary="auto"))
        order = ranked(whole.terms, first)
        for name, pick in ORDERS.items():
            decode(name, audio, replace(whole, terms=whole.terms if pick is None else tuple(pick(order)), glossary=True))
    print("| glossary | terms recalled | WER | decode s (25 clips) |\n|---|---:|---:|---:|")
    for name, texts in hyps.items():
        recalled, said, _ = bv.term_recall(eval_set, texts)
        print(f"| {name} | {recalled}/{said} | {bv.error_text(eval_set, texts)} | {seconds[name]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
