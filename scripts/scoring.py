"""How the benchmarks score text, by the eval README's rules.

English: WER after Whisper's English normaliser (case, punctuation, numbers).
Chinese: CER on characters after converting both sides to simplified and
removing punctuation and spaces.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.asr.text import to_simplified  # noqa: E402

CHINESE_SETS = ("zh", "longform_zh", "yue")
_normalize = EnglishTextNormalizer()


def normalize_english(text: str) -> str:
    return _normalize(text)


def chinese_chars(text: str) -> str:
    """Simplified, no punctuation, no spaces (case-folded Latin kept, for code-switching; full-width
    letters and digits folded: "Ｋ８ｓ" is "k8s")."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", to_simplified(text)).lower() if ch.isalnum())


def error_rate(set_name: str, refs: list[str], hyps: list[str]) -> float | None:
    """Corpus CER (Chinese sets) or WER (English sets) over the pairs with a non-empty reference."""
    chinese = set_name in CHINESE_SETS
    clean = chinese_chars if chinese else normalize_english
    pairs = [(clean(r), clean(h)) for r, h in zip(refs, hyps) if clean(r).strip()]
    if not pairs:
        return None
    measure = jiwer.cer if chinese else jiwer.wer
    return measure([r for r, _ in pairs], [h for _, h in pairs])


def metric_name(set_name: str) -> str:
    return "CER" if set_name in CHINESE_SETS else "WER"


def contains_term(set_name: str, term: str, text: str) -> bool:
    """Whether `text` says `term`, both cleaned as the set is scored: whole words (English), characters (Chinese)."""
    return term_count(set_name, term, text) > 0


def term_count(set_name: str, term: str, text: str) -> int:
    """How many times `text` says `term` (cleaned as contains_term): recall counts every occurrence."""
    if set_name in CHINESE_SETS:
        return chinese_chars(text).count(chinese_chars(term))
    # whole words; lookarounds, not spaces in the pattern, so that a term said twice running counts twice
    return len(re.findall(rf"(?<!\S){re.escape(normalize_english(term))}(?!\S)", normalize_english(text)))
