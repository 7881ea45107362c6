"""Stable partials: the prefix of an utterance's text that later hypotheses will not change.

Agreement is on units: words where the text has spaces, single characters where it has
none (Chinese, Japanese). A unit becomes stable once two consecutive hypotheses agree on
it and the newer one goes on past it: the last unit of a hypothesis may be a word the
audio cut in two ("我用Kuber" before "Kubernetes"), and a Chinese hypothesis ends in a
"。" that a pause puts there and more speech takes away. Punctuation belongs to the unit
before it, so it agrees with nothing on its own ("。" with "，"). Each unit keeps the space
written before it, so joined units give back the text as the model wrote it.

A newer hypothesis is aligned to the stable text letter by letter (case and punctuation
left out), from its start: "can not" and "cannot" align, and a stable "the cat" aligns
with "a cat" in "a cat saw the cat", not with its later "the cat".
"""

from __future__ import annotations

import re
from itertools import accumulate
from dataclasses import dataclass

import numpy as np

from edge.asr.text import CJK_CHARS

_SINGLE = f"{CJK_CHARS}\u3040-\u30ff\u31f0-\u31ff"  # Han, CJK punctuation, kana: one unit each
_UNIT = re.compile(f"\\s*(?:[{_SINGLE}]|[^\\s{_SINGLE}]+)")
_KEY_CHAR = re.compile(r"[\w']")
_SINGLE_CHAR = re.compile(f"[{_SINGLE}]")
_PUNCTUATION = re.compile(r"^[^\w'\s]+")


@dataclass(frozen=True)
class _Unit:
    text: str  # with the space before it and the punctuation after it
    key: str  # what must agree: lower case, punctuation left out


def units(text: str) -> list[_Unit]:
    """"我们用 Kubernetes 部署。" -> 我 们 用 " Kubernetes" " 部" "署。" (punctuation joins the unit before)."""
    found: list[_Unit] = []
    for piece in _UNIT.findall(text):
        key = _keyed(piece)[0]
        if found and (not key or not found[-1].key):  # punctuation after a unit, or a unit after leading punctuation
            found[-1] = _Unit(found[-1].text + piece, found[-1].key + key)
        else:
            found.append(_Unit(piece, key))
    return found


def _keyed(text: str) -> tuple[str, list[int]]:
    """The key of `text`, and for each key character where in `text` its character ends."""
    key: list[str] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        if _KEY_CHAR.match(ch):
            lowered = ch.lower()  # "İ" lowers to two characters: both end where it does
            key.append(lowered)
            ends.extend([i + 1] * len(lowered))
    return "".join(key), ends


def aligned_end(stable: str, key: str, boundaries: list[int]) -> int:
    """How much of `key` the `stable` key stands for, ending at one of `boundaries` (where the
    hypothesis' units end): the one at the least edit distance from `stable`, the longest of
    equals. A hypothesis that aligns worse than half the revised letters is new after the
    letters they share ("hello there" then "你好世界": nothing of it is dropped)."""
    common = 0
    for a, b in zip(stable, key):
        if a != b:
            break
        common += 1
    rest, theirs = stable[common:], np.array([ord(ch) for ch in key[common:]], dtype=np.int64)
    columns = np.arange(len(theirs) + 1)
    distances = columns.copy()
    for i, ch in enumerate(rest, 1):
        row = np.empty_like(distances)
        row[0] = i
        row[1:] = np.minimum(distances[:-1] + (theirs != ord(ch)), distances[1:] + 1)
        distances = np.minimum.accumulate(row - columns) + columns  # a letter inserted: one more than the left
    best, end = min((distances[j - common], -j) for j in boundaries if j >= common)
    if best > max(1, len(rest) // 2):
        return max(j for j in boundaries if j <= common)
    return -end


class PartialStabilizer:
    """Local agreement: a unit becomes stable once two consecutive hypotheses agree on it."""

    def __init__(self) -> None:
        self._stable = ""
        self._stable_key = ""
        self._previous_tail: list[str] = []  # the keys of the previous hypothesis after the stable text

    def update(self, hypothesis: str) -> tuple[str, str]:
        """Return (stable prefix, whole text shown) after one more hypothesis."""
        tail = units(self._after_stable(hypothesis))
        agreed = 0
        for new, old in zip(tail[:-1], self._previous_tail):
            if new.key != old:
                break
            agreed += 1
        self._stable += "".join(u.text for u in tail[:agreed])
        self._stable_key += "".join(u.key for u in tail[:agreed])
        self._previous_tail = [u.key for u in tail[agreed:]]
        shown = self._stable + "".join(u.text for u in tail[agreed:])
        return self._stable.strip(), shown.strip()

    def _after_stable(self, hypothesis: str) -> str:
        """The text of `hypothesis` after the part that the stable text stands for: where its
        letters start with the stable ones, right after them ("we can" + "not go" of "we cannot
        go"; not after punctuation: "No," then "Nor of"), else after the unit that aligns with
        the stable text's end."""
        if not self._stable_key:
            return hypothesis
        key, ends = _keyed(hypothesis)
        boundaries = [0, *accumulate(len(u.key) for u in units(hypothesis))]
        end = len(self._stable_key)
        within_word = end not in boundaries and not _KEY_CHAR.match(self._stable[-1:])  # "No," then "Nor"
        if not key.startswith(self._stable_key) or within_word:
            end = aligned_end(self._stable_key, key, boundaries)
        rest = self._unpunctuated(hypothesis[ends[end - 1]:]) if end else hypothesis
        apart = end in boundaries and _spaced(self._stable[-1:]) and _spaced(rest[:1])  # "hello there" + "goodbye"
        return " " + rest if apart else rest

    def _unpunctuated(self, rest: str) -> str:
        """`rest` without the punctuation it starts with where the stable text ends in its own ("me," then "me,,")."""
        if self._stable[-1:].isspace() or _KEY_CHAR.match(self._stable[-1:]):
            return rest
        return _PUNCTUATION.sub("", rest, count=1)


def _spaced(ch: str) -> bool:
    """A letter of a script written with spaces between words."""
    return ch.isalnum() and not _SINGLE_CHAR.match(ch)
