"""Vocabulary lists: the names and terms a box must get right, from config, a file or an app.

A `Vocabulary` is plain validated data (terms, weights, where it came from); how a
model family uses it lives with the family (Whisper: edge/asr/whisper/bias.py).
Every problem is a `VocabularyError` whose message names the term or the line,
so `check-config`, a reload and a socket request all report it the same way.

Kept in the foundation (no pydantic, no numpy): `edge-asr transcribe --vocabulary`
reads files with it without loading the config schema.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

from edge.errors import INVISIBLE, codepoint, visible

MAX_TERMS = 500  # rooms need tens; the cap bounds a request's size and the prefix tree
MAX_TERM_CHARS = 48  # "International Monetary Fund Annual Meetings" fits; a sentence does not
MAX_TERM_WORDS = 6
# Chinese and Japanese are written without spaces: their cap is in characters, about two a word
# ("中国科学院自动化研究所", 11, fits; "我们今天下午三点在会议室开会", 14, a sentence, does not).
MAX_TERM_UNSPACED = 2 * MAX_TERM_WORDS
# Blank characters that Unicode counts as a mark or a letter, so the invisible-category check missed them:
# the combining grapheme joiner and the Hangul fillers ("Sio\u034fbhan" could never match)
BLANK_MARKS = frozenset("\u034f\u115f\u1160\u3164\uffa0")
UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
MIN_WEIGHT, MAX_WEIGHT = 0.1, 5.0
DEFAULT_BONUS = 2.0  # log-probability per matched token at weight 1: tuned on scripts/vocab (docs/benchmarks.md)
MAX_BONUS = 10.0
MAX_SOUNDS_LIKE = 8  # spellings the box wrote for one name (two recordings gave two on scripts/vocab)
FORMS_SEPARATOR = "|"  # between a file line's sounds-like forms: "Krzysztof<TAB>1<TAB>Kristoff|Christoph"
MAX_FILE_BYTES = 64 * 1024  # 500 terms of 48 characters with weights and comments fit several times
Source = Literal["none", "config", "transcribe", "request"]  # where a Vocabulary's terms came from (status)
COMMENT = re.compile(r"(^|\s)#.*")  # a file's comment: "#" first on the line or after white space
SPACED_WEIGHT = re.compile(r"\S {2,}[-+]?[\d.,]+\s*$")  # "Siobhan    2": a TAB turned into spaces
Prompt = bool | Literal["auto"]  # vocabulary.prompt
PROMPTS: dict[str, Prompt] = {"auto": "auto", "true": True, "false": False}  # as written on a command line


class VocabularyError(ValueError):
    """One invalid term, weight, line or file; str() names it. `item` is the 1-based position
    of the bad item in a YAML/JSON list, where there is one (check-config gives its line)."""

    item: int | None = None


@dataclass(frozen=True)
class Term:
    """A word or phrase, and how strongly to favour it (1.0 = the list's bonus as is).

    `sounds_like`: what the model writes when it hears the term ("Kristoff" for Krzysztof), learned
    by transcribing a recording of it; favoured as the term is, and shown as `text`. A form made of ordinary
    words ("case" for Kaohsiung) is neither: it is a `Cue`.
    """

    text: str
    weight: float = 1.0
    sounds_like: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vocabulary:
    """The active list. `bonus` is vocabulary.bonus, `glossary` vocabulary.prompt (also give the
    terms to the model as a prompt: True, False, or "auto" for a short list on English speech);
    `source` says where the terms came from."""

    terms: tuple[Term, ...] = ()
    bonus: float = DEFAULT_BONUS
    source: Source = "none"
    glossary: Prompt = "auto"

    def with_terms(self, terms: tuple[Term, ...], source: Source) -> "Vocabulary":
        """The same settings with another list (an app's request)."""
        return replace(self, terms=terms, source=source)

    def __bool__(self) -> bool:
        """False when it changes nothing: no terms."""
        return bool(self.terms)

    def summary(self) -> dict[str, Any]:
        """What `status` shows: size and source, not the terms (names may be private); `sounds_like` counts the
        forms, so a fleet can see which boxes' lists were learned (`edge-asr learn-sounds-like`)."""
        return {"terms": len(self.terms), "sounds_like": sum(len(term.sounds_like) for term in self.terms),
                "source": self.source, "bonus": self.bonus, "prompt": self.glossary}


@dataclass(frozen=True)
class Respelling:
    """Shows a term where the model wrote one of its sounds-like forms: "Kristoff's" -> "Krzysztof's".

    Any case; whole words only where the form starts or ends in a letter of a spaced script ("Ted"
    is not in "Tedious"); Chinese forms anywhere. Longer forms first: "case then" before "case".
    """

    pattern: re.Pattern[str]
    terms: Mapping[str, str]  # a form, lower-cased -> its term (a term itself is not in it: left as written)

    def __call__(self, text: str) -> str:
        return self.pattern.sub(lambda match: self.terms.get(match.group(0).lower(), match.group(0)), text)

    def segments(self, texts: Sequence[str], separator: str) -> list[str]:
        """A transcript's segments rewritten as one text: a form that the segments split ("Chris" | "Toff")
        is shown as its term in the segment where it starts, and its rest is taken from the next."""
        joined = separator.join(texts)
        starts = list(accumulate((len(text) + len(separator) for text in texts[:-1]), initial=0))
        parts: list[list[str]] = [[] for _ in texts]

        def owner(at: int) -> int:  # the segment joined[at] came from (a separator: the one before it)
            return bisect_right(starts, at) - 1

        def keep(start: int, end: int) -> None:  # joined[start:end] to the segments it came from, separators left out
            if end > start:
                for k in range(owner(start), owner(end - 1) + 1):
                    parts[k].append(joined[max(start, starts[k]):min(end, starts[k] + len(texts[k]))])

        done = 0
        for match in self.pattern.finditer(joined):
            keep(done, match.start())
            term = self.terms.get(match.group(0).lower())
            if term is None:
                keep(match.start(), match.end())
            else:
                parts[owner(match.start())].append(term)
            done = match.end()
        keep(done, len(joined))
        return ["".join(part).strip() for part in parts]


def respelling(vocabulary: Vocabulary, spellings: Callable[[str], Sequence[str]] = lambda text: (text,)) -> Respelling | None:
    """The rewrite of `vocabulary`'s sounds-like forms (None: it has none). The terms are in the pattern too,
    matched as themselves: a form inside a longer term ("case" in "Case Western") is not rewritten.

    `spellings(text)`: the ways the box may show a text, the first the one it shows (a Chinese form in
    each script: a technician on a Taiwan box who types 张维 means the 張維 it shows); a term is shown so.
    """
    own = {spelled.lower() for term in vocabulary.terms for spelled in spellings(term.text)}
    terms = {spelled.lower(): spellings(term.text)[0] for term in vocabulary.terms for form in term.sounds_like
             for spelled in spellings(form) if spelled.lower() not in own}
    if not terms:
        return None
    texts = {spelled for term in vocabulary.terms for text in (term.text, *term.sounds_like) for spelled in spellings(text)}
    alternatives = sorted(texts, key=len, reverse=True)  # written as given: "İzmir".lower() is longer than "İzmir"
    return Respelling(re.compile("|".join(map(_bounded, alternatives)), re.IGNORECASE), terms)


@dataclass(frozen=True)
class Cue:
    """A term and those of its sounds-like forms that are ordinary words ("I am" for Niamh, "case" for Kaohsiung).

    Such a form cannot be shown as the term ("I'm Abigail" would become "Niamh Abigail"), yet where the model
    writes it the term may have been said. So a final whose text, or another reading its beam weighed, has the
    form and not the term is decoded again with the term as a prompt, and the model tells the name from the
    words (edge/asr/whisper/recognizer.py, `_rechecked`).
    """

    term: Term
    forms: re.Pattern[str]  # the ordinary forms and the term itself, whole words, any case
    shown: re.Pattern[str]  # the term, whole words, any case

    def heard(self, text: str, others: Sequence[str] = ()) -> bool:
        """A form is in `text` or in one of the `others`, and the term is not shown in `text`."""
        return not self.shown.search(text) and any(self.forms.search(each) for each in (text, *others))


def cues(vocabulary: Vocabulary, ordinary: Iterable[tuple[str, str]]) -> tuple[Cue, ...]:
    """A `Cue` for each term with forms among the `ordinary` (term, form) pairs, in the list's order."""
    forms: dict[str, list[str]] = {}
    for term, form in ordinary:
        forms.setdefault(term, []).append(form)
    return tuple(Cue(term, _either((term.text, *forms[term.text])), _either((term.text,)))
                 for term in vocabulary.terms if term.text in forms)


def without_forms(vocabulary: Vocabulary, pairs: Iterable[tuple[str, str]]) -> Vocabulary:
    """`vocabulary` less the (term, form) `pairs` among its sounds-like forms."""
    dropped = set(pairs)
    return replace(vocabulary, terms=tuple(
        replace(term, sounds_like=tuple(form for form in term.sounds_like if (term.text, form) not in dropped))
        for term in vocabulary.terms))


def _either(texts: Iterable[str]) -> re.Pattern[str]:
    """Any of `texts` as whole words, in any case, the longest first."""
    return re.compile("|".join(map(_bounded, sorted(set(texts), key=len, reverse=True))), re.IGNORECASE)


def _bounded(form: str) -> str:
    """`form` as a regex that takes no part of a longer word (a Chinese edge may touch anything)."""
    spaced = [ch.isalnum() and not UNSPACED.match(ch) for ch in (form[0], form[-1])]
    return ("(?<!\\w)" if spaced[0] else "") + re.escape(form) + ("(?!\\w)" if spaced[1] else "")


def check_term(text: Any, weight: Any = 1.0, where: str = "term", sounds_like: Any = ()) -> Term:
    """A validated term: whitespace folded, Unicode composed and compatibility forms folded (NFKC:
    "Gdańsk" typed either way is one term with one tokenization, and full-width "ＧＰＴ-４", which the
    model never writes, is "GPT-4"); empty, over-long, invisible characters and bad weights refused."""
    folded = check_text(text, where)
    return Term(folded, check_weight(weight, f"{where} ({_excerpt(text)})"), check_forms(sounds_like, folded, where))


def check_text(text: Any, where: str, what: str = "term") -> str:
    """A term's or a sounds-like form's text, folded as `check_term` says; `what` names it in messages."""
    if isinstance(text, bool):
        raise VocabularyError(f"{where}: a {what} must be text, got true/false (YAML reads a bare yes, no, on, off, "
                              f"true or false that way: put the {what} in quotes)")
    if not isinstance(text, str):
        raise VocabularyError(f"{where}: a {what} must be text, got {_kind(text)}")
    folded = unicodedata.normalize("NFKC", " ".join(text.split()))
    shown = _excerpt(text)
    if not folded:
        raise VocabularyError(f"{where}: the {what} is empty")
    # Looked for before folding: split() takes a line separator (U+2028) or a form feed for a space,
    # and "Sio\u2028bhan" became the term "Sio bhan".
    hidden = next((ch for ch in text.strip(" \t\r\n")
                   if (unicodedata.category(ch) in INVISIBLE or ch in BLANK_MARKS) and ch != "\t"), None)
    if hidden is not None:
        raise VocabularyError(f"{where}: {shown} contains the invisible or invalid character "
                              f"{codepoint(hidden)} (often pasted from a web page or document); retype the {what}")
    if len(folded) > MAX_TERM_CHARS:
        raise VocabularyError(f"{where}: {shown} is longer than {MAX_TERM_CHARS} characters")
    if len(folded.split()) > MAX_TERM_WORDS:
        raise VocabularyError(f"{where}: {shown} has more than {MAX_TERM_WORDS} words; list names and terms, not sentences")
    if len(UNSPACED.findall(folded)) > MAX_TERM_UNSPACED:
        raise VocabularyError(f"{where}: {shown} has more than {MAX_TERM_UNSPACED} Chinese or Japanese characters; "
                              "list names and terms, not sentences")
    if not any(ch.isalnum() for ch in folded):
        raise VocabularyError(f"{where}: {shown} has no letter or digit")
    return folded


def check_forms(forms: Any, term: str, where: str) -> tuple[str, ...]:
    """A term's sounds-like forms: a list of texts (or one text), at most MAX_SOUNDS_LIKE, none the term itself."""
    if isinstance(forms, str):
        forms = [forms]
    if not isinstance(forms, (list, tuple)):
        raise VocabularyError(f"{where}: sounds_like must be a list of spellings, got {_kind(forms)}")
    checked = tuple(dict.fromkeys(check_text(form, f"{where} sounds_like", "sounds-like form") for form in forms))
    split = next((form for form in checked if FORMS_SEPARATOR in form or COMMENT.search(form)), None)
    if split is not None:
        raise VocabularyError(f"{where}: the sounds-like form {_excerpt(split)} contains {FORMS_SEPARATOR!r} or a "
                              "\" #\", which a vocabulary file reads as a new form or a comment; give each form on its own")
    if len(checked) > MAX_SOUNDS_LIKE:
        raise VocabularyError(f"{where}: {_excerpt(term)} has {len(checked)} sounds-like forms, more than "
                              f"{MAX_SOUNDS_LIKE}; keep the ones the box writes most often")
    same = next((form for form in checked if form.lower() == term.lower()), None)
    if same is not None:
        raise VocabularyError(f"{where}: {_excerpt(same)} is the term itself, not a form that sounds like it")
    return checked


def check_weight(weight: Any, where: str) -> float:
    """A weight within [MIN_WEIGHT, MAX_WEIGHT]; compared before any float() (a 400-digit integer overflows it)."""
    whole = isinstance(weight, int) and not isinstance(weight, bool)
    if not (whole or isinstance(weight, float) and math.isfinite(weight)):
        raise VocabularyError(f"{where}: weight {_excerpt(weight)} is not a number; expected {MIN_WEIGHT} to {MAX_WEIGHT}")
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise VocabularyError(f"{where}: weight {_excerpt(weight)} is out of range; expected {MIN_WEIGHT} to {MAX_WEIGHT}")
    return float(weight)


def check_terms(items: Iterable[Term], where: str) -> tuple[Term, ...]:
    """Cap the count; merge repeats, keeping the higher weight and every sounds-like form. Spellings that
    differ in case stay apart: merged, "PostgreSQL" and "postgresql\t2" kept only the heavier one's, and
    the tree never tries " PostgreSQL" from "postgresql" (it adds capitals, never takes them away)."""
    merged: dict[str, Term] = {}
    for term in items:
        known = merged.get(term.text)
        if known is not None:
            forms = tuple(dict.fromkeys(known.sounds_like + term.sounds_like))
            term = replace(max(known, term, key=lambda t: t.weight), sounds_like=check_forms(forms, term.text, where))
        merged[term.text] = term
        if len(merged) > MAX_TERMS:
            raise VocabularyError(_at(where, f"more than {MAX_TERMS} terms; keep the names and terms that matter most"))
    _check_form_owners(merged.values(), where)
    return tuple(merged.values())


def _check_form_owners(terms: Iterable[Term], where: str) -> None:
    """A sounds-like form shown as one term only, and never another term of the list (it would be rewritten)."""
    terms = list(terms)
    texts = {term.text.lower(): term.text for term in terms}
    owners: dict[str, str] = {}
    for term in terms:
        for form in term.sounds_like:
            key = form.lower()
            if key in texts:
                raise VocabularyError(_at(where, f"{_excerpt(form)}, a sounds-like form of {_excerpt(term.text)}, "
                                                 f"is also the term {_excerpt(texts[key])}; a form is shown as its term"))
            if owners.setdefault(key, term.text) != term.text:
                raise VocabularyError(_at(where, f"{_excerpt(form)} is a sounds-like form of both "
                                                 f"{_excerpt(owners[key])} and {_excerpt(term.text)}; give it to one"))


def parse_items(items: Any, where: str) -> tuple[Term, ...]:
    """Terms as YAML or JSON give them: "Siobhan", or {"term": "Siobhan", "weight": 2, "sounds_like": ["Chivon"]}.

    `where` prefixes messages ("terms item 3: ..."); "" leaves just "item 3: ...".
    """
    if not isinstance(items, list):
        raise VocabularyError(_at(where, f"expected a list of terms, got {_kind(items)}"))
    if len(items) > MAX_TERMS:
        raise VocabularyError(_at(where, f"{len(items)} terms, more than {MAX_TERMS}; keep the names and terms that matter most"))
    return check_terms((_item(item, f"{where} item {n}".strip(), n) for n, item in enumerate(items, 1)), where)


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _item(item: Any, where: str, number: int) -> Term:
    try:
        return _checked_item(item, where)
    except VocabularyError as exc:
        exc.item = number
        raise


def _checked_item(item: Any, where: str) -> Term:
    if isinstance(item, Mapping):
        unknown = sorted(str(key) for key in item if key not in ("term", "weight", "sounds_like"))
        if unknown:
            raise VocabularyError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                                  "a term is {term: ..., weight: ..., sounds_like: [...]}")
        if "term" not in item:
            raise VocabularyError(f"{where}: missing `term`")
        return check_term(item["term"], item.get("weight", 1.0), where, item.get("sounds_like", ()))
    return check_term(item, 1.0, where)


def parse_text(text: str, where: str) -> tuple[Term, ...]:
    """The file format: one term per line, optional TAB and weight, and optional TAB and sounds-like forms
    separated by "|" (the weight may then be empty: 1); `#` at the start of a line or after white space
    starts a comment ("C#" stays a term)."""
    bare_cr = re.search("\r(?!\n)", text)
    if bare_cr:  # split on \n only, a file of old Mac line ends was one line with "invisible" characters in it
        number = text.count("\n", 0, bare_cr.start()) + 1
        raise VocabularyError(f"{where} line {number}: a line ends in a bare CR (old Mac line endings); save the "
                              "file with LF or CRLF line endings")
    terms = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 or a form feed in a term is refused
        line = line.removesuffix("\r")
        line = COMMENT.sub("", line)
        if not line.strip():
            continue
        term, tab, rest = line.partition("\t")
        weight, tab_2, forms = rest.partition("\t")
        at = f"{where} line {number}"
        if not tab and SPACED_WEIGHT.search(term):
            raise VocabularyError(f"{at}: {_excerpt(term.strip())} ends in spaces and a number: a weight must follow "
                                  "a TAB (an editor may have turned the TAB into spaces); a number that belongs "
                                  "to the term takes a single space (\"Windows 11\")")
        if "\t" in forms:
            raise VocabularyError(f"{at}: more than three TAB-separated fields; a line is the term, a TAB and its weight "
                                  f"(may be empty), a TAB and its sounds-like forms separated by {FORMS_SEPARATOR!r}")
        sounds_like = [form for form in forms.split(FORMS_SEPARATOR) if form.strip()] if tab_2 else []
        weighed = tab and (weight.strip() or not tab_2)  # "term<TAB><TAB>forms": no weight, so 1
        terms.append(check_term(term, _weight_text(weight, at) if weighed else 1.0, at, sounds_like))
    return check_terms(terms, where)


def term_line(term: Term) -> str:
    """`term` as a line of the file format, which `parse_text` reads back as the same term."""
    weight = "" if term.weight == 1.0 else str(term.weight).removesuffix(".0")
    if term.sounds_like:
        return "\t".join((term.text, weight, FORMS_SEPARATOR.join(term.sounds_like)))
    return f"{term.text}\t{weight}" if weight else term.text


def _weight_text(text: str, where: str) -> float:
    """The weight as written is what a message quotes: 1e309 read as inf and was called "inf"."""
    try:
        weight = float(text.strip())
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise VocabularyError(f"{where}: weight {_excerpt(text.strip())} is not a number; "
                              f"expected {MIN_WEIGHT} to {MAX_WEIGHT}")
    return weight


def read_file(path: str | os.PathLike[str]) -> tuple[Term, ...]:
    """A vocabulary file's terms: a regular UTF-8 file of at most MAX_FILE_BYTES (never a FIFO or device)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VocabularyError(f"{path}: file not found") from None
    except PermissionError:
        raise VocabularyError(f"{path}: permission denied (the service user must be able to read it)") from None
    except OSError as exc:
        raise VocabularyError(f"{path}: cannot be opened: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VocabularyError(f"{path}: not a regular file")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise VocabularyError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; a list holds at most {MAX_TERMS} terms")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VocabularyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_text(text, str(path))


def read_vocabulary_file(path: str | os.PathLike[str], glossary: Prompt = "auto") -> Vocabulary:
    """A whole `Vocabulary` from one file (edge-asr transcribe --vocabulary)."""
    return Vocabulary(read_file(path), DEFAULT_BONUS, "transcribe", glossary)


def combine(terms: Iterable[Term], file_terms: Iterable[Term], where: str) -> tuple[Term, ...]:
    """vocabulary.terms and vocabulary.file together, still within MAX_TERMS."""
    return check_terms([*terms, *file_terms], where)


def _kind(value: Any) -> str:
    names = {list: "a list", dict: "a mapping", str: "text", int: "a whole number", float: "a number", bool: "true/false"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _excerpt(value: Any, limit: int = 40) -> str:
    """A value as a message may quote it: invisible characters shown as \\uXXXX (a soft hyphen
    must not vanish from the message), cut to `limit` characters."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)  # as YAML and JSON write them: true, false, null
    elif isinstance(value, str):
        text = visible(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int) and value.bit_length() > 128:  # repr() of a 5000-digit integer raises
        text = "(a number of more than 38 digits)"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


