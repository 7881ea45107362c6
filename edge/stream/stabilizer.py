"""Stable partials: the prefix of an utterance's text that later hypotheses will not change.

Agreement is on words where the text has spaces, and on characters where it
has none (Chinese, Japanese): either way a unit becomes stable once two
consecutive hypotheses agree on it.
"""

from __future__ import annotations

import difflib
import re

_WORD_KEY = re.compile(r"[^\w']+")


def _word_key(word: str) -> str:
    return _WORD_KEY.sub("", word.lower())


class PartialStabilizer:
    """Local agreement: a word becomes stable once two consecutive hypotheses agree on it."""

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._previous_tail: list[str] = []

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Return (stable prefix, unstable tail) after one more hypothesis."""
        tail = self._after_stable(hypothesis.split())
        agreed = 0
        for new, old in zip(tail, self._previous_tail):
            if _word_key(new) != _word_key(old):
                break
            agreed += 1
        self._stable += tail[:agreed]
        self._previous_tail = tail[agreed:]
        return " ".join(self._stable), " ".join(self._previous_tail)

    def _after_stable(self, words: list[str]) -> list[str]:
        """The part of a hypothesis that comes after the already stable words."""
        stable_keys = [_word_key(w) for w in self._stable]
        keys = [_word_key(w) for w in words]
        if keys[: len(stable_keys)] == stable_keys:
            return words[len(stable_keys) :]
        matcher = difflib.SequenceMatcher(None, stable_keys, keys, autojunk=False)
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        if not blocks:
            return words[len(stable_keys) :]
        last = blocks[-1]
        unmatched_stable = len(stable_keys) - (last.a + last.size)
        return words[last.b + last.size + unmatched_stable :]
