"""Stable partials: the prefix of an utterance's text that later hypotheses will not change.

Agreement is on units: words where the text has spaces, single characters
where it has none (Chinese, Japanese). Either way a unit becomes stable once
two consecutive hypotheses agree on it. Each unit keeps the space written
before it, so joined units give back the text as the model wrote it.
"""

from __future__ import annotations

import difflib
import re

from edge.asr.text import CJK_CHARS

_UNIT = re.compile(f"\\s*(?:[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+)")
_NOT_WORD = re.compile(r"[^\w']+")


def units(text: str) -> list[str]:
    """"我们用 Kubernetes 部署" -> ["我", "们", "用", " Kubernetes", " 部", "署"]."""
    return _UNIT.findall(text)


def _key(unit: str) -> str:
    """What must agree: case and punctuation do not count."""
    return _NOT_WORD.sub("", unit.lower())


class PartialStabilizer:
    """Local agreement: a unit becomes stable once two consecutive hypotheses agree on it."""

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._previous_tail: list[str] = []

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Return (stable prefix, whole text shown) after one more hypothesis."""
        tail = self._after_stable(units(hypothesis))
        agreed = 0
        for new, old in zip(tail, self._previous_tail):
            if _key(new) != _key(old):
                break
            agreed += 1
        self._stable += tail[:agreed]
        self._previous_tail = tail[agreed:]
        return "".join(self._stable).strip(), "".join(self._stable + self._previous_tail).strip()

    def _after_stable(self, pieces: list[str]) -> list[str]:
        """The part of a hypothesis that comes after the already stable units."""
        stable_keys = [_key(u) for u in self._stable]
        keys = [_key(u) for u in pieces]
        if keys[: len(stable_keys)] == stable_keys:
            return pieces[len(stable_keys) :]
        matcher = difflib.SequenceMatcher(None, stable_keys, keys, autojunk=False)
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        if not blocks:
            return pieces[len(stable_keys) :]
        last = blocks[-1]
        unmatched_stable = len(stable_keys) - (last.a + last.size)
        return pieces[last.b + last.size + unmatched_stable :]
