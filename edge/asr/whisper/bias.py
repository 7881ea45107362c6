"""Contextual biasing (shallow fusion): a bonus for tokens that spell a vocabulary term.

Every spelling of every term (as written and capitalised; a word term with
Whisper's leading space, a Chinese term with and without it and also in
traditional characters, which whisper-base often writes before it is shown
simplified) is tokenized into a prefix tree. A hypothesis carries the tree
node it has matched so far. Each token that extends the match earns the
term's per-token bonus (the first only if it is distinctive); a token that
breaks the match off takes back everything the unfinished match earned, so
half-matches cannot pile up. Only
a completed term keeps its bonus, and a word term only when the word ends
there: "Wojciech" + "is" loses it (Chinese has no word boundaries to check).

The bonus changes which hypothesis wins, never the model's own log-probabilities:
a result's `avg_logprob` (and so the silence and fallback rules) is unbiased.

Bookkeeping per node n: `score[n]` is the bonus earned along its path and
`kept[n]` the part of it that is banked (up to the deepest completed term on
the path), so an unfinished match holds `held(n) = score[n] - kept[n]`. From n:
- a child c: + (score[c] - score[n]);
- else a first token r of some term: + score[r] - held(n), a new match;
- anything else (EOT and timestamps included): - held(n);
- and where n completes a term, what that term earned (`completion[n]`) is
  lost too by a token that continues the word (word terms), or by any token
  when the hypothesis had already completed this term: a name said once is
  favoured, "Niamh Niamh Niamh" is not.

With the glossary (the terms as Whisper's prompt, in a second decoder stream:
edge/asr/whisper/decoding.py), a token that starts or extends a match also
earns its glossary gain: how much likelier the prompted model finds it than the
plain one. The gain differs per hypothesis and step, so a `Match` carries what
its unfinished match has gained (`gain`) and what the term it has just
completed gained (`gained`); they are taken back and forfeited exactly as the
bonus is.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from edge.asr.text import has_han, to_simplified, to_traditional
from edge.asr.whisper.tokenizer import Tokenizer, token_texts, unicode_to_byte
from edge.vocabulary import Vocabulary

ROOT = 0
GLOSSARY_TOKENS = 160  # of the 223 prompt tokens: the rest for the previous utterance (tiny.en: < 60 tokens)
# A one-word form among the model's first COMMON_TOKENS tokens (BPE merges come in order of frequency: " me" 502,
# " my" 616, " if" 611; " case" 1339, " table" 3084) is said in most utterances: as a cue it would have most finals
# decoded twice. Learned for Nguyen, " me" sent real_meeting's one clip to a second decode (1.8x its time).
COMMON_TOKENS = 1000
_WORD_BYTES = (string.ascii_letters + string.digits).encode()
_BETWEEN = "[\\s,.;:!?，。、；：！？]*"  # what may stand between a term and its repeat
_NOTHING = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))  # shared by every leaf


def spellings(text: str, unspaced: bool = False) -> set[str]:
    """The surface forms a model may write for a term.

    Whisper writes a word with its leading space (even the first of a
    transcript), so a word term never starts inside another word; Chinese
    text mostly comes without spaces, and so does a Latin term inside it
    ("我们用PostgreSQL存数据"): `unspaced` (a model that writes Chinese) adds
    the forms without the space. The model mixes simplified and traditional
    characters, so a Chinese term is tried in both, however it was written
    (a Taiwan box's list is traditional: 台積電).
    """
    capitalised = text[:1].upper() + text[1:]
    words = " ".join(word[:1].upper() + word[1:] for word in text.split())
    forms = {text, capitalised, words}
    if not has_han(text):
        return {space + form for form in forms for space in (" ", "")[: 1 + unspaced]}
    forms |= {convert(form) for form in forms for convert in (to_traditional, to_simplified)}
    return {space + form for form in forms for space in ("", " ")}


@lru_cache(maxsize=2)
def word_continuations(tokens: tuple[str, ...], eot: int) -> np.ndarray:
    """1.0 for each token that continues the word before it (no leading space, starts with a
    letter, digit or a byte of a two-byte character: "ń", "é", Cyrillic), 0.0 for the rest: word
    starts, punctuation, specials, and characters of three bytes or more (Han, kana, Hangul,
    full-width punctuation), which follow a Latin word without a space in Chinese text: after
    "维生素C" or "PostgreSQL" a "的" or "，" took the term's whole bonus back."""
    table = unicode_to_byte()
    first = np.array([table.get(token[:1], 32) if token else 32 for token in tokens[:eot]])
    two_byte = (first >= 0x80) & (first < 0xE0)  # lead bytes 0xC2-0xDF and continuation bytes
    continues = two_byte | np.isin(first, np.frombuffer(_WORD_BYTES, dtype=np.uint8))
    return np.concatenate([continues, np.zeros(len(tokens) - eot, dtype=bool)]).astype(np.float32)


@dataclass(frozen=True)
class Match:
    """A hypothesis' place in the tree, and the terms (end nodes) it has completed so far."""

    node: int = ROOT
    done: frozenset[int] = frozenset()
    repeated: bool = False  # `node` completes a term that `done` already had
    gain: float = 0.0  # glossary gain of the unfinished match (taken back if it breaks off)
    gained: float = 0.0  # glossary gain of the term `node` completes (forfeited with its bonus)


@lru_cache(maxsize=2)
def distinctive_openings(tokens: tuple[str, ...], eot: int) -> np.ndarray:
    """True for tokens that may open a term with a bonus: whole UTF-8 text of 3 or more bytes
    besides a leading space (" Sio", "张"), not " M" or the first byte of a character.

    A bonus on such a common token tilts every hypothesis that starts a word with it: with
    the 50 unrelated terms it cost +0.9 CER on ../shared/eval/zh and +1.1 WER on longform_en,
    against +0.0 for both with this rule, for 40 % instead of 42 % of terms on scripts/vocab.
    """
    out = np.zeros(len(tokens), dtype=bool)
    for i, text in enumerate(token_texts(tokens, eot)):
        out[i] = text is not None and len(text.lstrip(" ").encode("utf-8")) >= 3
    return out


class BiasTrie:
    """Token paths of the terms' spellings, and the bonus arithmetic over them."""

    def __init__(self, paths: Iterable[tuple[Sequence[int], float, bool]], continues_word: np.ndarray,
                 opening: np.ndarray) -> None:
        """`paths`: (token ids of one spelling, bonus per token, whether it is a word term that
        must end at a word boundary); a shared prefix gets the larger bonus.
        `continues_word`: per vocabulary token, 1.0 if it would lengthen the word before it.
        `opening`: per token, whether it earns the bonus as a term's first token
        (`distinctive_openings`; a one-token term always does)."""
        self._children: list[dict[int, int]] = [{}]
        self._edge = [0.0]  # bonus for the token that leads into each node
        self._parent = [ROOT]
        self._token = [-1]  # the token that leads into each node
        self._end = [False]
        self._word_end = [False]
        self._continues = continues_word
        self._opening = opening
        for tokens, bonus, word in paths:
            self._add(tokens, bonus, word)
        self.score, self.kept = self._totals()
        self.completion = [self._completion(node) for node in range(len(self._children))]
        root = self._children[ROOT]
        self._root_tokens = np.fromiter(root, dtype=np.int64, count=len(root))
        self._root_bonus = np.array([self.score[c] for c in root.values()], dtype=np.float32)
        self._adjust = [self._child_adjustment(node) for node in range(len(self._children))]

    def __len__(self) -> int:
        """Number of nodes (the root included)."""
        return len(self._children)

    def _add(self, tokens: Sequence[int], bonus: float, word: bool) -> None:
        node = ROOT
        for depth, token in enumerate(tokens):
            earned = bonus if depth or len(tokens) == 1 or self._opening[token] else 0.0
            child = self._children[node].get(token)
            if child is None:
                child = len(self._children)
                self._children[node][token] = child
                self._children.append({})
                self._edge.append(earned)
                self._parent.append(node)
                self._token.append(token)
                self._end.append(False)
                self._word_end.append(False)
            self._edge[child] = max(self._edge[child], earned)
            node = child
        if node != ROOT:
            self._end[node] = True
            self._word_end[node] = word

    def _totals(self) -> tuple[np.ndarray, np.ndarray]:
        """score (bonus along the path) and kept (score at the deepest completed term on it); parents come first.

        A word term is completed only where its word ends: past "Kuber" into "Kubernetes" by a token
        that lengthens the word, "Kuber" is not said, and a break-off takes its bonus back too ("Kubernet
        said" kept Kuber's bonus)."""
        count = len(self._children)
        score, kept = np.zeros(count), np.zeros(count)
        unended = np.zeros(count)  # kept, were no term to end at the node itself
        for node in range(1, count):
            parent = self._parent[node]
            score[node] = score[parent] + self._edge[node]
            unended[node] = unended[parent] if self._word_goes_on(parent, self._token[node]) else kept[parent]
            kept[node] = score[node] if self._end[node] else unended[node]
        return score, kept

    def _word_goes_on(self, node: int, token: int) -> bool:
        """Whether `token` after the word term completed at `node` lengthens its word (so it is not said)."""
        return self._end[node] and self._word_end[node] and bool(self._continues[token])

    def _completion(self, node: int) -> float:
        """What the term completed at `node` earned (0 where no term ends)."""
        return float(self.score[node] - self.kept[self._parent[node]]) if self._end[node] else 0.0

    def _child_adjustment(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, what to add on top of the row's other terms) so that a child's total is its continuation bonus."""
        children = self._children[node] if node != ROOT else {}
        if not children:
            return _NOTHING
        tokens = np.fromiter(children, dtype=np.int64, count=len(children))
        root = self._children[ROOT]
        total = np.array([self.score[c] - self.kept[node] for c in children.values()], dtype=np.float32)
        already = np.array([self.score[root[t]] if t in root else 0.0 for t in children], dtype=np.float32)
        return tokens, total - already

    def held(self, node: int) -> float:
        """What an unfinished match at `node` has earned and would lose by breaking off."""
        return float(self.score[node] - self.kept[node])

    def add_bonus(self, scores: np.ndarray, states: Sequence[Match], gains: np.ndarray | None = None) -> None:
        """Add each next token's bonus (or take-back) to `scores` [B, V] in place, row b in `states[b]`;
        and with `gains` [B, V] (the glossary's, `glossary_gains`), each term token's gain."""
        scores[:, self._root_tokens] += self._root_bonus
        for row, state in enumerate(states):
            if gains is not None:
                self._add_gain(scores[row], gains[row], state)
            node = state.node
            if node == ROOT:
                continue
            scores[row] -= self.held(node)
            tokens, adjust = self._adjust[node]
            forfeit = self._forfeit(state, self.completion[node])
            if forfeit is not None:
                scores[row] -= forfeit
                adjust = adjust + (forfeit if np.isscalar(forfeit) else forfeit[tokens])
            scores[row, tokens] += adjust

    def _add_gain(self, row: np.ndarray, gain: np.ndarray, state: Match) -> None:
        """A child of the match keeps what the match has gained and adds its own gain; a term's first
        token starts a new match with its gain; anything else takes the match's gain back. The gain
        of a term just completed is forfeited where its bonus is."""
        change = np.full(len(row), -state.gain)
        change[self._root_tokens] += gain[self._root_tokens]
        kids = self._adjust[state.node][0]  # the children's tokens (none at the root)
        change[kids] = gain[kids]
        forfeit = self._forfeit(state, state.gained)
        if forfeit is not None:
            change -= forfeit
            change[kids] += forfeit if np.isscalar(forfeit) else forfeit[kids]
        row += change

    def _forfeit(self, state: Match, earned: float) -> np.ndarray | float | None:
        """Per next token, what the term `state` has just completed loses of `earned` (its bonus or
        its gain): all of it for a repeat, or if the word goes on."""
        if not earned or not self._end[state.node]:
            return None
        if state.repeated:
            return earned
        return earned * self._continues if self._word_end[state.node] else None

    def step(self, state: Match, token: int, gain: float = 0.0) -> Match:
        """The match after `token` (which earned the glossary gain `gain`): deeper, a new match, or none."""
        node = self._children[state.node].get(token)
        if node is not None:
            gain += state.gain + (state.gained if self._word_goes_on(state.node, token) else 0.0)
        else:
            node = self._children[ROOT].get(token, ROOT)
            gain = gain if node != ROOT else 0.0
        if not self._end[node]:
            return Match(node, state.done, gain=gain)
        return Match(node, state.done | {node}, repeated=node in state.done, gained=gain)


def build_trie(vocabulary: Vocabulary, tokenizer: Tokenizer) -> BiasTrie | None:
    """The tree for a vocabulary (None when it is empty, or its bonus is 0 and it is never the
    glossary, whose gains go to the tree's tokens)."""
    if not vocabulary or (vocabulary.bonus == 0 and not vocabulary.glossary):
        return None
    paths = [
        (tokens, vocabulary.bonus * term.weight, not has_han(text[-1]))
        for term in vocabulary.terms
        for text in (term.text, *term.sounds_like)  # a form is favoured as its term: shown as it (Respelling)
        for form in sorted(spellings(text, unspaced=tokenizer.multilingual))
        if (tokens := tokenizer.encode(form))
    ]
    vocab = (tokenizer.tokens, tokenizer.eot)
    return BiasTrie(paths, word_continuations(*vocab), distinctive_openings(*vocab))


def ordinary_forms(vocabulary: Vocabulary, tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """(term, form) for each sounds-like form that ordinary speech says too: one made of ordinary words (each
    one token of the model's, space included: " case", " the ball"), which would be shown as the term wherever
    it is said, or one that starts with such a word ("the Ubliana"), whose bonus would start after every " the".
    Names the model does not know take several tokens ("Kristoff": " Krist" "off"). Such a form is left out of
    the tree and the rewrite, and is a cue to decode a final again with its term as the prompt (`Cue`).

    Measured with the forms learned for scripts/vocab active on the eval sets (docs/benchmarks.md): as forms,
    "Kick the ball" came out "Kick Thibault", and the forms after " the" or " and" changed words of real_en (+1.8 WER).
    Chinese forms are not judged: every common character is one token.

    A word is judged in its own case and in lower case, since a form is shown as its term in any case
    ("Gentlemen" is two tokens, " gentlemen" one), and a contraction by its two halves (" I" "'m"). Forms
    learned from the sentences of `record-names` had "I'm" for Niamh, which made real_meeting's "I'm Abigail"
    "Niamh Abigail" (+22.2 WER), and "Gentlemen" for Chidinma (docs/benchmarks.md, "Recording the names").
    """
    def one_token(text: str) -> bool:
        return len(tokenizer.encode(text)) == 1

    def ordinary(word: str) -> bool:
        for spelled in {word, word.lower()}:
            stem, apostrophe, clitic = spelled.replace("\u2019", "'").partition("'")  # I’m as I'm
            if one_token(" " + spelled) or (apostrophe and stem and one_token(" " + stem) and one_token("'" + clitic)):
                return True
        return False

    return [(term.text, form) for term in vocabulary.terms for form in term.sounds_like
            if not has_han(form) and ordinary(form.split()[0])]  # every word ordinary: the first is too


def idle_forms(ordinary: Iterable[tuple[str, str]], tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """Those of the `ordinary` (term, form) pairs (`ordinary_forms`) too common to be a cue: one word that is one
    of the model's COMMON_TOKENS first tokens, as written or in lower case ("me", "If"). Such a form does nothing."""
    def common(word: str) -> bool:
        return any(len(ids := tokenizer.encode(" " + spelled)) == 1 and ids[0] < COMMON_TOKENS
                   for spelled in {word, word.lower()})

    return [(term, form) for term, form in ordinary if len(form.split()) == 1 and common(form.strip())]


def recital(vocabulary: Vocabulary) -> re.Pattern[str]:
    """A term said twice running, with nothing but spaces or punctuation between: how a result
    that recites the glossary, rather than transcribing, looks.

    With the whole 19-term Mandarin list as the glossary, whisper-base read a 20 s clip about
    actuaries as "凯瑟琳 凯瑟琳" (a name of the list): its recital lifted the name's first token
    into every beam (scripts/bench_vocabulary.py --sets vocab_zh --prompt true). Case counts
    (the model recites the list's spelling); one alternation and a backreference, no nested
    repeats, so a search is linear in the text.
    """
    forms = sorted({form.strip() for term in vocabulary.terms for form in spellings(term.text)}, key=len, reverse=True)
    term = "(?<![A-Za-z0-9])(" + "|".join(map(re.escape, forms)) + ")"
    return re.compile(term + _BETWEEN + "\\1(?![A-Za-z0-9])")


def glossary(vocabulary: Vocabulary, tokenizer: Tokenizer, limit: int = GLOSSARY_TOKENS,
             whole: bool = False) -> tuple[int, ...]:
    """The terms as Whisper's initial prompt ("Siobhan, Ljubljana, Kubernetes."), heaviest first, within
    `limit` tokens (`whole`: all of them, or none).

    The prompt makes the model expect these spellings: in the glossed decoder stream a term's
    tokens become likelier, by a gain the tree adds to the plain stream's scores. On
    scripts/vocab (tiny.en, beam 5, bonus 2) the tree alone recalled 40 % of the terms; with
    10-term lists as the glossary 85 %, with the whole 39-term list 71 % (docs/benchmarks.md).
    """
    chosen = glossary_terms(vocabulary, tokenizer, limit, whole)
    return glossary_tokens(chosen, tokenizer) if chosen else ()


def glossary_terms(vocabulary: Vocabulary, tokenizer: Tokenizer, limit: int = GLOSSARY_TOKENS,
                   whole: bool = False) -> tuple[str, ...]:
    """The terms `glossary` puts in the prompt, heaviest first."""
    chosen: list[str] = []
    for term in _ranked(vocabulary):
        if len(glossary_tokens([*chosen, term], tokenizer)) > limit:
            return () if whole else tuple(chosen)
        chosen.append(term)
    return tuple(chosen)


def glossary_size(vocabulary: Vocabulary, tokenizer: Tokenizer) -> int:
    """The tokens the whole list takes as a prompt, in `glossary`'s order (a term's trailing "?" tokenizes
    otherwise before "," than before "."): one encode, where adding terms one at a time took 0.9 s for 500."""
    return len(glossary_tokens(_ranked(vocabulary), tokenizer))


def _ranked(vocabulary: Vocabulary) -> list[str]:
    """The terms heaviest first (a stable sort: the list's own order among equals)."""
    return [term.text for term in sorted(vocabulary.terms, key=lambda term: -term.weight)]


def glossary_tokens(terms: Sequence[str], tokenizer: Tokenizer) -> tuple[int, ...]:
    """`terms` as the glossary prompt, in their order."""
    return tokenizer.encode(" " + ", ".join(terms) + ".")
