"""Greedy, sampling and beam search over a `WhisperBackend`, with Whisper's rules and guards.

The decoder graph returns only the last position's logits, so the prompt is
fed in two calls: everything up to and including <|startoftranscript|> (whose
logits give the no-speech probability), then the rest of the prefix.

With a vocabulary's glossary (its terms as a prompt), a second stream decodes the
same hypotheses after that prompt, token for token. The plain stream's
log-probabilities score every token; a token that starts or extends a term also
gains how much likelier the glossed stream finds it (`glossary_gains`, held and
taken back by the prefix tree as its bonus is). Given as a plain prompt instead,
the terms rewrote the words around them and were recited into unclear speech
("Ula Chișinău, Dark, Nouakchott." for "Glue the sheet to the dark blue
background."), which took three guards to catch; as a second stream, unrelated
10-term lists changed no word of any eval set and recall rose (docs/benchmarks.md).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from edge.asr.whisper.bias import BiasTrie, Match
from edge.asr.whisper.graph import CrossKV, SelfKV, WhisperBackend
from edge.asr.whisper.tokenizer import Tokenizer, token_texts

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
# The glossary (the vocabulary's terms as a prompt) runs as a second decoder stream, and a token
# of a term gains how much likelier the prompted model finds it than the plain one, up to this
# many nats (e^7: ~1100x). Uncapped, tiny.en wrote "诸葛亮" (a term of an unrelated 10-term list)
# for "The girl at the booth sold 50 bonds."; with the cap at 6 / 7 / 8, 10-term lists recalled
# 42 / 44 / 44 of scripts/vocab's 52 English terms, and only at 8 did an unrelated 10-term list put
# a term into an eval set ("Thimphu" in tts_espeak_en; docs/benchmarks.md, "the glossary as a
# second stream").
GLOSSARY_GAIN_CAP = 7.0
NO_SPEECH_THRESHOLD = 0.6
# A detected language this unsure, on a window that is likely no speech, means noise: on
# ../shared/eval (whisper-base int8) every speech clip's language had p >= 0.92 (zh, yue,
# en), every nonspeech file p <= 0.55 ("nn" on noise, where base then wrote "2-3-4-4-4").
LANGUAGE_CONFIDENCE = 0.7
TEXT_CTX = 448  # n_text_ctx of every Whisper model: the decoder's positional table has no row past it
MAX_PROMPT_TOKENS = 223  # half the text context, minus <|startofprev|>
MAX_SAMPLE_TOKENS = 224  # with a whole prompt and the start sequence, 4 past TEXT_CTX: `_prefill` caps it
TIME_PRECISION = 0.02
# Repetition guard: a tail that repeats with period p at least
# max(LOOP_MIN_REPEATS, ceil(LOOP_MIN_SPAN / p)) times is a decoding loop.
LOOP_MAX_PERIOD = 50
LOOP_MIN_REPEATS = 3
LOOP_MIN_SPAN = 16
REPEAT_MIN_TOKENS = 6  # a repeated tail this long is a sentence said twice, not "no, no"
REPEAT_TAIL_TOKENS = 4  # words after the second copy ("... the lightress on.")


@dataclass(frozen=True)
class DecodeOptions:
    """One decoding pass; `temperature` > 0 samples `best_of` candidates instead of beam search."""

    beam_size: int = 5
    best_of: int = 5
    temperature: float = 0.0
    timestamps: bool = False
    max_initial_timestamp: float = 1.0
    max_timestamp: float | None = None
    max_tokens: int = MAX_SAMPLE_TOKENS
    prompt: tuple[int, ...] = ()
    seed: int = 0
    language: str | None = None  # multilingual models: None detects it from the first decoder step
    bias: BiasTrie | None = None  # the vocabulary's prefix tree (edge/asr/whisper/bias.py)
    glossary: tuple[int, ...] = ()  # the vocabulary's terms as a prompt, before `prompt` (second stream)
    recital: re.Pattern[str] | None = None  # a result that recites the glossary (bias.recital)
    lead: tuple[int, ...] = ()  # text tokens the result starts with, fed after the start sequence, not searched


@dataclass(frozen=True)
class DecodeResult:
    """The chosen hypothesis (sampled tokens without <|endoftext|>) and its quality signals."""

    tokens: tuple[int, ...]
    text: str
    sum_logprob: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    looped: bool
    language: str = "en"
    language_prob: float = 1.0  # 1.0 when the language was given, not detected
    avg_score: float | None = None  # avg_logprob plus the vocabulary terms' bonus (None: no vocabulary)
    alternatives: tuple[str, ...] = ()  # the other hypotheses the search finished, best first (greedy: none)

    @property
    def likely_no_speech(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD

    @property
    def is_silence(self) -> bool:
        """Whisper's rule: likely no speech, and the text (or the detected language) is not confident enough to overrule it."""
        unsure = self.avg_logprob < LOGPROB_THRESHOLD or self.language_prob < LANGUAGE_CONFIDENCE
        return self.likely_no_speech and unsure

    @property
    def needs_fallback(self) -> bool:
        """Too repetitive or too unsure: retry at a higher temperature (not for silence)."""
        if self.is_silence:
            return False
        return self.looped or self.compression_ratio > COMPRESSION_RATIO_THRESHOLD or (
            self.confidence < LOGPROB_THRESHOLD
        )

    @property
    def confidence(self) -> float:
        """The average log-probability, counting the terms the vocabulary vouches for.

        A name the model alone finds unlikely is what a vocabulary is for: without this, each
        term that wins pulls the average under the threshold and triggers a sampled retry.
        """
        return self.avg_logprob if self.avg_score is None else self.avg_score


def compression_ratio(text: str) -> float:
    """Raw / zlib-compressed size: repeated text compresses well, so a high ratio flags a loop."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax that tolerates -inf entries."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def loop_tail(tokens: Sequence[int]) -> tuple[int, int]:
    """(start, period) of a tail that is one short pattern repeated many times; (len, 0) if none."""
    n = len(tokens)
    for period in range(1, min(LOOP_MAX_PERIOD, n // LOOP_MIN_REPEATS) + 1):
        span = period * max(LOOP_MIN_REPEATS, -(-LOOP_MIN_SPAN // period))
        tail = list(tokens[n - span :]) if span <= n else []
        if tail and tail[:-period] == tail[period:]:
            start = n - span
            while start > 0 and tokens[start - 1] == tokens[start - 1 + period]:
                start -= 1
            return start, period
    return n, 0


def has_loop(tokens: Sequence[int]) -> bool:
    return loop_tail(tokens)[1] > 0


def without_loop(tokens: Sequence[int], eot: int) -> list[int]:
    """Keep one copy of a looping text tail (timestamps stay): a readable partial, not a wall of repeats."""
    positions = [i for i, t in enumerate(tokens) if t < eot]
    start, period = loop_tail([tokens[i] for i in positions])
    drop = set(positions[start + period :]) if period else set()
    return [t for i, t in enumerate(tokens) if i not in drop]


def without_repeated_sentence(tokens: Sequence[int], eot: int, stops: Collection[int] = frozenset()) -> list[int]:
    """Drop a copy of the text just before it, near the end ("Please scan your ticket. Please scan your ticket.").

    Decoding into the silence padded after an utterance sometimes says the utterance
    again; the loop guard needs three copies, this needs two of at least REPEAT_MIN_TOKENS.
    The copies may be parted by one punctuation token (one of `stops`) and the copy may end
    up to REPEAT_TAIL_TOKENS before the end, which stays: through the virtual microphone a
    zh-set clip gave "He must be home now for the lightress. He must be home now for the
    lightress on." Parted by a word, it is speech: "..., it was the epoch of belief, it was
    the epoch of incredulity." (longform_en) keeps both.
    """
    text = [t for t in tokens if t < eot]
    cut = _repeated_run(text, stops)
    if cut is None:
        return list(tokens)
    out, index = [], 0
    for token in tokens:  # timestamps stay; the text tokens in [start, end) go
        if token >= eot or not cut[0] <= index < cut[1]:
            out.append(token)
        index += token < eot
    return out


def _repeated_run(text: Sequence[int], stops: Collection[int]) -> tuple[int, int] | None:
    """[start, end) of the second copy and the stop before it, or None."""
    for tail in range(REPEAT_TAIL_TOKENS + 1):
        end = len(text) - tail
        for gap in (0, 1):
            for size in range((end - gap) // 2, REPEAT_MIN_TOKENS - 1, -1):
                second = end - size
                if gap and text[second - 1] not in stops:
                    continue
                if text[second:end] == text[second - gap - size : second - gap]:
                    return second - gap, end
    return None


def punctuation_tokens(tokens: Sequence[str], eot: int) -> frozenset[int]:
    """Text tokens that are nothing but stops and commas (".", ",", "?", "。"; not "-", "(" or
    a word): what may part a sentence from its copy."""
    stripped = [(text or "").strip() for text in token_texts(tokens, eot)]
    return frozenset(i for i, text in enumerate(stripped) if text and all(unicodedata.category(ch) == "Po" for ch in text))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices [B, k] of the k best scores per row, by repeated argmax.

    For k << V this is ~40x faster than np.argpartition over a 52k vocabulary.
    """
    scores = scores.copy()
    rows = np.arange(len(scores))
    picks = np.empty((len(scores), k), dtype=np.int64)
    for i in range(k):
        picks[:, i] = scores.argmax(axis=-1)
        scores[rows, picks[:, i]] = -np.inf
    return picks


@dataclass
class _Stream:
    """One decoder stream: the logits of each hypothesis' next token, and its cache."""

    logits: np.ndarray
    cache: SelfKV

    def advance(self, backend: WhisperBackend, cross: CrossKV, rows: list[int], feed: np.ndarray) -> None:
        """Keep hypotheses `rows` (in their new order) and feed each its next token.

        The old cache is let go before the decoder call: alive at once are only the kept rows
        and the decoder's output (a cache is ~12 KiB per token and hypothesis with tiny.en).
        """
        if rows != list(range(self.cache.k.shape[1])):
            self.cache = self.cache.select(np.array(rows, dtype=np.int64))
        self.logits, self.cache = backend.decode(feed, self.cache, cross)


@dataclass(frozen=True)
class _Prefix:
    """The decoder state after the start sequence, shared by every search of one window."""

    options: DecodeOptions  # with the language settled
    plain: _Stream
    no_speech: float
    language_prob: float
    glossed: _Stream | None = None  # the same after the glossary prompt (None: no glossary here)


class _Streams:
    """The plain stream and, with a glossary, the glossed one: advanced together, token for token.

    The glossed stream's only use is `gains`: the plain model decides every other token, so
    the prompt cannot rewrite the words around the terms, nor recite itself.
    """

    def __init__(self, prefix: _Prefix, rows: int = 1) -> None:
        self.plain = replace(prefix.plain)  # advanced in place: the prefix's own serves the next attempt
        fused = prefix.glossed is not None and prefix.options.temperature == 0.0 and rows == 1  # built only with a tree
        self.glossed = replace(prefix.glossed) if fused else None
        if rows > 1:
            logits = np.repeat(self.plain.logits[:1], rows, axis=0)
            self.plain = _Stream(logits, self.plain.cache.select(np.zeros(rows, np.int64)))

    def scores(self, rules: "LogitRules", candidates: Sequence["_Candidate"], bias: BiasTrie | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(log-probabilities, search scores, glossary gains or None) [B, V] for the next token."""
        sequences = [c.tokens for c in candidates]
        logprobs = rules.apply(self.plain.logits, sequences)
        gains = None
        if self.glossed is not None:
            gains = glossary_gains(logprobs, rules.apply(self.glossed.logits, sequences))
        scores = np.array([c.score for c in candidates])[:, None] + logprobs
        if bias is not None:
            bias.add_bonus(scores, [c.match for c in candidates], gains)
        return logprobs, scores, gains

    def advance(self, backend: WhisperBackend, cross: CrossKV, rows: list[int], tokens: list[int]) -> None:
        """Keep hypotheses `rows` (in their new order) and feed each its next token."""
        feed = np.array([[t] for t in tokens], dtype=np.int64)
        for stream in (self.plain, self.glossed):
            if stream is not None:
                stream.advance(backend, cross, rows, feed)


def glossary_gains(plain: np.ndarray, glossed: np.ndarray) -> np.ndarray:
    """How much likelier each token is with the glossary: log-prob difference in [0, GLOSSARY_GAIN_CAP]
    (0 for a token both streams rule out: fmax drops the NaN of -inf minus -inf)."""
    with np.errstate(invalid="ignore"):
        return np.fmin(np.fmax(glossed - plain, 0.0), GLOSSARY_GAIN_CAP)


@dataclass
class _Candidate:
    """A hypothesis being extended: its tokens, their summed log-probability, and its search score.

    `score` is `sum_logprob` plus the vocabulary bonus and glossary gains it holds (equal without
    a vocabulary); `match` is where it stands in the vocabulary's prefix tree.
    """

    tokens: list[int]
    sum_logprob: float
    score: float
    match: Match = Match()

    def extend(
        self, token: int, logprob: float, score: float, bias: BiasTrie | None, gain: float = 0.0
    ) -> "_Candidate":
        match = bias.step(self.match, token, gain) if bias is not None else self.match
        return _Candidate([*self.tokens, token], self.sum_logprob + logprob, score, match)

    def finish(self, logprob: float, score: float) -> "_Candidate":
        """The hypothesis ended by <|endoftext|> (not kept among its tokens)."""
        return _Candidate(list(self.tokens), self.sum_logprob + logprob, score, self.match)

    def cut(self, bias: BiasTrie | None) -> "_Candidate":
        """The hypothesis the token budget ended: ranked without the bonus and gain of a match it left
        unfinished, as an end of text takes them back (they ranked it above finished ones)."""
        if bias is None:
            return self
        return replace(self, score=self.score - bias.held(self.match.node) - self.match.gain)


class LogitRules:
    """Whisper's logit filters: suppression, timestamp grammar, loop guard."""

    def __init__(self, tokenizer: Tokenizer, options: DecodeOptions) -> None:
        self.tok = tokenizer
        self.options = options
        vocab = tokenizer.vocab_size
        always = np.zeros(vocab, dtype=bool)
        always[[i for i in tokenizer.suppress_ids if 0 <= i < vocab]] = True
        always[[tokenizer.no_timestamps, tokenizer.sot, tokenizer.sot_prev, tokenizer.no_speech]] = True
        ts = tokenizer.timestamp_begin
        if not options.timestamps:
            always[ts:] = True
        elif options.max_timestamp is not None:
            always[ts + int(round(options.max_timestamp / TIME_PRECISION)) + 1 :] = True
        begin = always.copy()
        begin[[i for i in tokenizer.suppress_ids_begin if 0 <= i < vocab]] = True
        if options.timestamps:
            begin[:ts] = True
            begin[ts + int(round(options.max_initial_timestamp / TIME_PRECISION)) + 1 :] = True
        # additive masks: one vectorised add per step instead of boolean indexing
        self.always_bias = np.where(always, -np.inf, 0.0).astype(np.float32)
        self.begin_bias = np.where(begin, -np.inf, 0.0).astype(np.float32)

    def apply(self, logits: np.ndarray, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Filtered log-probabilities [B, V] for the next token of each sequence."""
        logits = logits + (self.begin_bias if len(sequences[0]) == 0 else self.always_bias)
        for row, seq in enumerate(sequences):
            if self.options.timestamps:
                self._timestamp_grammar(logits[row], seq)
            if has_loop([t for t in seq if t < self.tok.eot]):
                eot_logit = logits[row, self.tok.eot]
                logits[row] = -np.inf
                logits[row, self.tok.eot] = eot_logit if np.isfinite(eot_logit) else 0.0
        logprobs = log_softmax(logits)
        if self.options.timestamps and self._prefer_timestamps(logits, logprobs):
            logprobs = log_softmax(logits)
        return logprobs

    def _timestamp_grammar(self, row: np.ndarray, seq: Sequence[int]) -> None:
        """Timestamps come in pairs (except before EOT) and never go backwards."""
        ts = self.tok.timestamp_begin
        last_ts = len(seq) >= 1 and seq[-1] >= ts
        penultimate_ts = len(seq) < 2 or seq[-2] >= ts
        if last_ts:
            if penultimate_ts:
                row[ts:] = -np.inf
            else:
                row[: self.tok.eot] = -np.inf
        stamps = [t for t in seq if t >= ts]
        if stamps:
            floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
            row[ts:floor] = -np.inf

    def _prefer_timestamps(self, logits: np.ndarray, logprobs: np.ndarray) -> bool:
        """Force a timestamp when all timestamps together outweigh the best text token; True if any row was."""
        ts = self.tok.timestamp_begin
        stamps = logprobs[:, ts:]
        top = stamps.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            stamp_mass = (top + np.log(np.exp(stamps - top).sum(axis=-1, keepdims=True)))[:, 0]
        forced = stamp_mass > logprobs[:, :ts].max(axis=-1)
        logits[forced, :ts] = -np.inf
        return bool(forced.any())


class Decoder:
    """Runs the decoder searches for one encoded window."""

    def __init__(self, backend: WhisperBackend, tokenizer: Tokenizer) -> None:
        self.backend = backend
        self.tok = tokenizer
        self.stops = punctuation_tokens(tokenizer.tokens, tokenizer.eot)

    def decode(self, cross: CrossKV, options: DecodeOptions) -> DecodeResult:
        """One pass at `options.temperature` (no fallback)."""
        prefix = self._prefill(cross, options)
        return self._search(cross, prefix)

    def decode_with_fallback(self, cross: CrossKV, options: DecodeOptions) -> DecodeResult:
        """Retry at rising temperatures until the result is neither a loop nor unsure.

        The prefix is decoded once and its cache reused by every attempt. With a glossary, the
        first attempt uses it (temperature 0); a result it leaves wanting a fallback, or one that
        recites it (`bias.recital`), is decoded again without it, from temperature 0: the
        glossary is an aid, not a reading to sample around (in a window of long audio with the
        glossary as a plain prompt, tiny.en fell back to temperature 0.6 and read its previous
        text back plus a loop: that file's WER 76.5).
        """
        prefix = self._prefill(cross, options)
        if prefix.glossed is not None:
            result = self._search(cross, prefix)
            if not result.needs_fallback and not _recites(result, options):
                return result
            prefix = replace(prefix, glossed=None)
        attempts: list[DecodeResult] = []
        for temperature in TEMPERATURES:
            result = self._search(cross, replace(prefix, options=replace(prefix.options, temperature=temperature)))
            attempts.append(result)
            if not result.needs_fallback:
                return result
        sane = [r for r in attempts if not r.looped and r.compression_ratio <= COMPRESSION_RATIO_THRESHOLD]
        return max(sane, key=lambda r: r.confidence) if sane else attempts[-1]

    def _prefill(self, cross: CrossKV, options: DecodeOptions) -> "_Prefix":
        """Feed the prompt so that SOT is the last token of the first call.

        Its logits give the no-speech probability and, on a multilingual model, the
        language (the token after SOT is the language token): detection costs no
        extra decoder call. The options come back with the language settled.

        Both are read without the glossary, so that a list of terms changes neither
        whether the model thinks someone speaks nor in which language. Where speech is
        likely, the glossary goes before the prompt in a second stream (`_Streams`); where
        it is not, it goes unused (as a prompt, tiny.en wrote "Thimphu, Guillermo," for
        white noise: scripts/bench_vocabulary.py --general --list-size 10 --prompt true).
        """
        tok = self.tok
        if options.lead and options.timestamps:
            raise ValueError("a lead is fed as text: it needs timestamps off")
        logits, cache = self._start(cross, options.prompt)
        sot_logprobs = log_softmax(logits[0].astype(np.float64))
        language_prob = 1.0
        if options.language is None:
            language, language_prob = self.detect_language(sot_logprobs)
            options = replace(options, language=language)
        no_speech = float(np.exp(sot_logprobs[tok.no_speech]))
        if no_speech > NO_SPEECH_THRESHOLD:
            # Likely no speech: no vocabulary bonus, which would otherwise lift a noise
            # hypothesis ("Mm. Mm." on ../shared/eval/nonspeech clicks) over the silence rule.
            options = replace(options, bias=None, glossary=())
        rest = [*tok.start_sequence(options.language)[1:], *([] if options.timestamps else [tok.no_timestamps]),
                *options.lead]
        plain = self._rest(cross, rest, logits, cache)
        glossed = None
        if options.glossary and options.bias is not None:
            glossed = self._rest(cross, rest, *self._start(cross, options.prompt, options.glossary))
        fed = max(stream.cache.length for stream in (plain, glossed) if stream is not None)
        options = replace(options, max_tokens=min(options.max_tokens - len(options.lead), TEXT_CTX - fed))
        return _Prefix(options, plain, no_speech, language_prob, glossed)

    def _rest(self, cross: CrossKV, rest: list[int], logits: np.ndarray, cache: SelfKV) -> _Stream:
        """The stream after the start sequence's tokens that follow SOT."""
        if rest:
            logits, cache = self.backend.decode(np.array([rest], dtype=np.int64), cache, cross)
        return _Stream(logits, cache)

    def _start(self, cross: CrossKV, prompt: Sequence[int], glossary: Sequence[int] = ()) -> tuple[np.ndarray, SelfKV]:
        """The logits after <|startofprev|> `glossary` `prompt` <|startoftranscript|>, and the cache.

        Within MAX_PROMPT_TOKENS the glossary (at most 160 tokens) stays whole and the prompt
        (the text said before) loses its oldest tokens.
        """
        room = max(MAX_PROMPT_TOKENS - len(glossary), 0)
        kept = prompt[max(len(prompt) - room, 0):]
        history = [self.tok.sot_prev, *glossary, *kept] if glossary or kept else []
        first = np.array([[*history, self.tok.sot]], dtype=np.int64)
        return self.backend.decode(first, self.backend.empty_cache(1), cross)

    def detect_language(self, sot_logprobs: np.ndarray) -> tuple[str, float]:
        """The most likely language token after SOT, and its probability among the languages."""
        if not self.tok.multilingual:
            return "en", 1.0
        first = self.tok.sot + 1
        scores = sot_logprobs[first : first + len(self.tok.languages)]
        probs = np.exp(scores - scores.max())
        best = int(np.argmax(probs))
        return self.tok.languages[best], float(probs[best] / probs.sum())

    def _search(self, cross: CrossKV, prefix: "_Prefix") -> DecodeResult:
        options = prefix.options
        rules = LogitRules(self.tok, options)
        if options.temperature == 0.0 and options.beam_size > 1:
            candidates = self._beam_search(cross, options, rules, prefix)
        else:
            candidates = self._sample(cross, options, rules, prefix)
        ranked = sorted(candidates or [_Candidate([], 0.0, 0.0)], key=self._rank, reverse=True)  # ties: first stays first
        result = self._result(ranked[0], prefix)
        lead = list(options.lead)
        others = (self.tok.decode([t for t in [*lead, *c.tokens] if t < self.tok.eot]).strip() for c in ranked[1:])
        return replace(result, alternatives=tuple(dict.fromkeys(t for t in others if t and t != result.text.strip())))

    def _rank(self, candidate: _Candidate) -> tuple[bool, float]:
        """Length-normalised score, but any candidate that does not loop beats one that does."""
        looped = has_loop([t for t in candidate.tokens if t < self.tok.eot])
        return (not looped, candidate.score / (len(candidate.tokens) + 1))

    def _result(self, best: _Candidate, prefix: "_Prefix") -> DecodeResult:
        """Scores are of the sampled tokens; the text (the lead's and the sampled) has a loop cut down to one copy."""
        every = [*prefix.options.lead, *best.tokens]
        looped = has_loop([t for t in every if t < self.tok.eot])
        tokens = without_loop(every, self.tok.eot) if looped else every
        tokens = without_repeated_sentence(tokens, self.tok.eot, self.stops)
        text = self.tok.decode(tokens)
        return DecodeResult(
            tokens=tuple(tokens),
            text=text,
            sum_logprob=best.sum_logprob,
            avg_logprob=best.sum_logprob / (len(best.tokens) + 1),
            avg_score=best.score / (len(best.tokens) + 1) if prefix.options.bias is not None else None,
            no_speech_prob=prefix.no_speech,
            compression_ratio=compression_ratio(self.tok.decode(every)),
            temperature=prefix.options.temperature,
            looped=looped,
            language=prefix.options.language or "en",
            language_prob=prefix.language_prob,
        )

    def _sample(self, cross: CrossKV, options: DecodeOptions, rules: LogitRules, prefix: _Prefix) -> list[_Candidate]:
        """Greedy (temperature 0, one row) or `best_of` independent samples batched together."""
        rows = 1 if options.temperature == 0.0 else max(1, options.best_of)
        rng = np.random.default_rng(options.seed)
        streams = _Streams(prefix, rows)
        live = [_Candidate([], 0.0, 0.0) for _ in range(rows)]
        done: list[_Candidate] = []
        for step in range(options.max_tokens):
            logprobs, scores, gains = streams.scores(rules, live, options.bias)
            picks = self._pick(scores, options.temperature, rng)
            keep, extended = [], []
            for row, (cand, token) in enumerate(zip(live, picks)):
                logprob, score = float(logprobs[row, token]), float(scores[row, token])
                if token == self.tok.eot:
                    done.append(cand.finish(logprob, score))
                else:
                    extended.append(cand.extend(int(token), logprob, score, options.bias, _gain(gains, row, token)))
                    keep.append(row)
            live = extended
            if not live or step == options.max_tokens - 1:
                break
            streams.advance(self.backend, cross, keep, [c.tokens[-1] for c in live])
        return done + [c.cut(options.bias) for c in live]

    @staticmethod
    def _pick(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """Argmax, or a draw from the temperature-scaled distribution (seeded: reproducible).

        Each row's constant (the hypothesis' score so far) cancels out in both.
        """
        if temperature == 0.0:
            return scores.argmax(axis=-1)
        probs = np.exp(log_softmax(scores.astype(np.float64) / temperature))
        cumulative = probs.cumsum(axis=-1)
        draws = rng.random(len(probs)) * cumulative[:, -1]
        return np.array([np.searchsorted(c, d, side="right") for c, d in zip(cumulative, draws)])

    def _beam_search(
        self, cross: CrossKV, options: DecodeOptions, rules: LogitRules, prefix: _Prefix
    ) -> list[_Candidate]:
        """Whisper's beam search: all live beams run as one decoder batch (per stream)."""
        width = options.beam_size
        streams = _Streams(prefix)
        beams = [_Candidate([], 0.0, 0.0)]
        finished: list[_Candidate] = []
        for step in range(options.max_tokens):
            logprobs, scores, gains = streams.scores(rules, beams, options.bias)
            top = top_k(scores, width + 1)
            ranked = sorted(
                ((float(scores[r, t]), r, int(t)) for r in range(len(beams)) for t in top[r]),
                key=lambda c: -c[0],
            )
            next_beams, rows, newly_finished = [], [], []
            for score, row, token in ranked:
                if not np.isfinite(score) or len(next_beams) == width:
                    break
                logprob = float(logprobs[row, token])
                if token == self.tok.eot:
                    newly_finished.append(beams[row].finish(logprob, score))
                else:
                    next_beams.append(beams[row].extend(token, logprob, score, options.bias, _gain(gains, row, token)))
                    rows.append(row)
            finished.extend(newly_finished[: max(0, width - len(finished))])
            beams = next_beams
            if len(finished) >= width or not beams or step == options.max_tokens - 1:
                break
            streams.advance(self.backend, cross, rows, [b.tokens[-1] for b in beams])
        return finished + [b.cut(options.bias) for b in beams[: max(0, width - len(finished))]]


def _recites(result: DecodeResult, options: DecodeOptions) -> bool:
    return options.recital is not None and options.recital.search(result.text) is not None


def _gain(gains: np.ndarray | None, row: int, token: int) -> float:
    return 0.0 if gains is None else float(gains[row, token])
