"""Decoding logic on a scripted backend whose next-token distribution depends on the cached history.

The fake keeps each hypothesis's token history in its self-attention cache,
so a beam search that reorders the cache wrongly produces wrong text.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import pytest

from edge.asr.whisper.bias import BiasTrie, recital
from edge.asr.whisper.graph import CrossKV, SelfKV
from edge.asr.whisper.decoding import (
    GLOSSARY_GAIN_CAP,
    MAX_PROMPT_TOKENS,
    TEXT_CTX,
    DecodeOptions,
    Decoder,
    LogitRules,
    compression_ratio,
    has_loop,
    top_k,
    without_loop,
)
from edge.asr.whisper.tokenizer import Tokenizer
from edge.vocabulary import Term, Vocabulary

LETTERS = "abcdefghij"
N_STAMPS = 101  # <|0.00|> .. <|2.00|>
EOT, SOT, SOT_PREV, NO_SPEECH, NO_TS, TS0 = 10, 11, 12, 13, 14, 15
A, B, C, D, E, F, G, H, I, J = range(10)

Policy = Callable[[list[int]], dict[int, float]]


def make_tokenizer() -> Tokenizer:
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(N_STAMPS)]
    return Tokenizer.from_vocabulary((*LETTERS, *specials, *stamps), {"suppress_ids": [J], "suppress_ids_begin": [EOT]})


class ScriptedBackend:
    """Logits from `policy(history)`: {token: probability}; everything else gets ~0."""

    name = "scripted"

    def __init__(self, policy: Policy, vocab: int) -> None:
        self.policy = policy
        self.vocab = vocab
        self.calls: list[np.ndarray] = []

    def encode(self, mel: np.ndarray) -> CrossKV:
        return CrossKV(np.zeros((1, 1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1, 1), np.float32))

    def empty_cache(self, batch: int) -> SelfKV:
        return SelfKV(np.zeros((1, batch, 1, 0, 1), np.float32), np.zeros((1, batch, 1, 0, 1), np.float32))

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        self.calls.append(tokens.copy())
        history = np.concatenate([cache.k[0, :, 0, :, 0], tokens.astype(np.float32)], axis=1)
        logits = np.full((len(tokens), self.vocab), -30.0, np.float32)
        for row, seq in enumerate(history.astype(int).tolist()):
            for token, prob in self.policy(seq).items():
                logits[row, token] = np.log(prob)
        stored = history[None, :, None, :, None]
        return logits, SelfKV(stored, stored.copy())


def after_prefix(seq: list[int]) -> list[int]:
    """The sampled tokens: everything after <|notimestamps|> (or SOT with timestamps)."""
    marker = NO_TS if NO_TS in seq else SOT
    return seq[seq.index(marker) + 1 :]


def run(policy: Policy, fallback: bool = False, **options) -> tuple:
    backend = ScriptedBackend(policy, make_tokenizer().vocab_size)
    decoder = Decoder(backend, make_tokenizer())
    cross = backend.encode(np.zeros((80, 2), np.float32))
    opts = DecodeOptions(**options)
    result = decoder.decode_with_fallback(cross, opts) if fallback else decoder.decode(cross, opts)
    return result, backend


def garden_path(seq: list[int]) -> dict[int, float]:
    """Greedy takes `a` (0.55) into a flat continuation; beam finds `b f` (0.45 * 0.95)."""
    sampled = after_prefix(seq)
    if not sampled:
        return {A: 0.55, B: 0.45}
    if sampled == [A]:
        return {C: 0.3, D: 0.3, E: 0.4}
    if sampled[-1] == B:
        return {F: 0.95, G: 0.05}
    if sampled[-1] == F:
        # depends on a token two steps back: only a correctly reordered cache knows it
        return {EOT: 1.0} if B in sampled else {G: 1.0}
    return {EOT: 1.0}


def test_greedy_takes_the_locally_best_token():
    result, _ = run(garden_path, beam_size=1)
    assert result.text == "ae"
    assert result.sum_logprob == pytest.approx(np.log(0.55) + np.log(0.4), abs=1e-3)
    assert result.avg_logprob == pytest.approx(result.sum_logprob / 3)


def test_beam_search_finds_the_better_sequence_in_batched_calls():
    result, backend = run(garden_path, beam_size=3)
    assert result.text == "bf"
    steps = backend.calls[2:]  # after the two prefill calls
    assert max(len(call) for call in steps) > 1, "beam hypotheses must share one decoder call"
    assert len(steps) <= 4


def test_a_lead_is_fed_with_the_start_sequence_and_starts_the_result():
    """A final decoded again from where a sounds-like cue starts: the words before it are fed, not searched."""
    result, backend = run(garden_path, beam_size=3, lead=(A,))
    assert backend.calls[1].tolist() == [[NO_TS, A]]
    assert result.text == "ae" and result.tokens == (A, E)
    assert result.sum_logprob == pytest.approx(np.log(0.4), abs=1e-3)  # the lead is not scored
    result, _ = run(lambda seq: {B: 1.0}, beam_size=1, lead=(A, C), max_tokens=5)
    assert result.tokens == (A, C, B, B, B)  # the budget counts the lead


def test_prefill_puts_sot_last_and_reads_no_speech_there():
    def policy(seq):
        if seq[-1] == SOT:
            return {NO_SPEECH: 0.7, A: 0.3}
        return {A: 0.9, EOT: 0.1} if not after_prefix(seq) else {EOT: 1.0}

    result, backend = run(policy, beam_size=1, prompt=(B, C))
    assert backend.calls[0].tolist() == [[SOT_PREV, B, C, SOT]]
    assert backend.calls[1].tolist() == [[NO_TS]]
    assert result.no_speech_prob == pytest.approx(0.7, abs=1e-3)
    assert result.text == "a"


def test_blank_suppressed_at_start_and_suppress_ids_always():
    def policy(seq):
        return {EOT: 0.6, J: 0.3, A: 0.1} if not after_prefix(seq) else {J: 0.9, EOT: 0.1}

    result, _ = run(policy, beam_size=1)
    assert result.text == "a"


def test_loop_guard_stops_early_and_keeps_one_copy():
    cycle = {A: B, B: C, C: A}

    def policy(seq):
        sampled = after_prefix(seq)
        return {A: 0.99, EOT: 0.01} if not sampled else {cycle[sampled[-1]]: 0.99, EOT: 0.01}

    result, backend = run(policy, beam_size=1, max_tokens=200)
    assert result.looped
    assert result.text == "abc"
    assert len(backend.calls) < 30


def test_token_cap_is_hard():
    result, _ = run(lambda seq: {A: 0.9, EOT: 0.1}, beam_size=1, max_tokens=8)
    assert result.tokens == (A,) * 8


def loop_or_stop(seq: list[int]) -> dict[int, float]:
    """`a` (0.6) leads into an endless `a a a ...`; `b` (0.4) ends cleanly."""
    sampled = after_prefix(seq)
    if not sampled:
        return {A: 0.6, B: 0.4}
    return {A: 0.999, EOT: 0.001} if sampled[-1] == A else {EOT: 1.0}


def test_fallback_escapes_a_loop_reproducibly():
    first, backend = run(loop_or_stop, fallback=True, beam_size=1)
    again, _ = run(loop_or_stop, fallback=True, beam_size=1)
    assert first.text == "b" and not first.looped
    assert first.temperature > 0.0
    assert (again.text, again.temperature) == (first.text, first.temperature)
    assert sum(1 for call in backend.calls if call.tolist() == [[SOT]]) == 1, "prefix decoded once"


def test_no_fallback_for_confident_text():
    result, _ = run(garden_path, fallback=True, beam_size=1)
    assert result.temperature == 0.0 and result.text == "ae"


def glossary_options(vocab: int, beam_size: int = 1) -> dict:
    """Term "bc" (a small bonus) given as the glossary prompt too."""
    trie = BiasTrie([((B, C), 0.1, False)], np.zeros(vocab, np.float32), np.ones(vocab, bool))
    return {"glossary": (B, C), "bias": trie, "beam_size": beam_size}


def glossed(seq: list[int]) -> bool:
    """Whether this call's history holds the glossary prompt (B before SOT)."""
    return B in seq[: seq.index(SOT)]


Plan = dict[tuple[int, ...], dict[int, float]]  # the tokens sampled so far -> the next one's distribution


def _two_models(plain: Plan, with_glossary: Plan) -> Policy:
    """Next-token distributions without and with the glossary prompt; EOT after anything unplanned."""
    def policy(seq):
        if seq[-1] == SOT:
            return {A: 1.0}
        return (with_glossary if glossed(seq) else plain).get(tuple(after_prefix(seq)), {EOT: 1.0})
    return policy


@pytest.mark.parametrize("beam_size", [1, 5])
def test_the_glossary_lifts_a_term_the_plain_model_finds_less_likely(beam_size):
    policy = _two_models(plain={(): {A: 0.7, B: 0.3}, (B,): {C: 1.0}},
                         with_glossary={(): {B: 0.9, A: 0.1}, (B,): {C: 1.0}})
    without, _ = run(policy, fallback=True, beam_size=beam_size)
    result, backend = run(policy, fallback=True, **glossary_options(make_tokenizer().vocab_size, beam_size))
    assert (without.text, result.text) == ("a", "bc")
    assert result.avg_logprob == pytest.approx(np.log(0.3) / 3, abs=1e-3), "the plain model's own log-probs"
    assert [[SOT_PREV, B, C, SOT]] in [call.tolist() for call in backend.calls]


def test_the_words_around_a_term_are_the_plain_models():
    """With the glossary the model would also say "e" after the term; without it, "d": not a term token, no gain."""
    policy = _two_models(plain={(): {B: 0.6, A: 0.4}, (B,): {C: 1.0}, (B, C): {D: 0.8, E: 0.2}},
                         with_glossary={(): {B: 0.9, A: 0.1}, (B,): {C: 1.0}, (B, C): {E: 0.9, D: 0.1}})
    result, _ = run(policy, fallback=True, **glossary_options(make_tokenizer().vocab_size, beam_size=5))
    assert result.text == "bcd"


def test_the_gain_is_capped():
    """A term the plain model all but rules out (1e-6) stays out however sure the glossed one is."""
    sure = 0.999999
    policy = _two_models(plain={(): {A: sure, B: 1e-6}, (B,): {C: 1.0}},
                         with_glossary={(): {B: sure, A: 1e-6}, (B,): {C: 1.0}})
    assert np.log(sure / 1e-6) > GLOSSARY_GAIN_CAP
    result, _ = run(policy, fallback=True, **glossary_options(make_tokenizer().vocab_size, beam_size=5))
    assert result.text == "a"


def test_a_result_the_glossary_leaves_unsure_is_decoded_again_without_it():
    """The glossary lifts "b", after which the plain model can only guess; without it, "a" is sure."""
    spread = {D: 0.2, E: 0.2, F: 0.2, G: 0.2, H: 0.2}
    guesses = {(B, *rest): spread for n in range(6) for rest in itertools.product(spread, repeat=n)}
    policy = _two_models(plain={(): {A: 0.9, B: 0.1}, **guesses}, with_glossary={(): {B: 0.99, A: 0.01}, **guesses})
    vocab = make_tokenizer().vocab_size
    trie = BiasTrie([((B,), 0.1, False)], np.zeros(vocab, np.float32), np.ones(vocab, bool))
    result, backend = run(policy, fallback=True, glossary=(B,), bias=trie, beam_size=1)
    assert (result.text, result.temperature) == ("a", 0.0)
    fed = [call.tolist() for call in backend.calls]
    assert fed.count([[B]]) == 2, "the glossed search took the term: both streams fed it"
    assert fed.count([[A]]) == 1, "then one search without the glossary"


def test_a_match_that_breaks_off_gives_its_gain_back():
    """The glossary lifts "b" towards the term "bcd", but the speaker goes on "bce": the gain is
    taken back, and "a" (which the plain model prefers) wins over "bce"."""
    policy = _two_models(plain={(): {A: 0.7, B: 0.3}, (B,): {C: 1.0}, (B, C): {E: 0.9, D: 0.1}},
                         with_glossary={(): {B: 0.95, A: 0.05}, (B,): {C: 1.0}, (B, C): {E: 0.9, D: 0.1}})
    vocab = make_tokenizer().vocab_size
    trie = BiasTrie([((B, C, D), 0.1, False)], np.zeros(vocab, np.float32), np.ones(vocab, bool))
    result, _ = run(policy, fallback=True, glossary=(B, C, D), bias=trie, beam_size=5)
    assert result.text == "a"


def test_both_streams_follow_the_beams_when_they_change_places():
    """The beams swap rows ("bf" overtakes "a"); the glossed stream then lifts the term "e" only
    after "b f", a history two steps back that only a correctly reordered glossed cache holds."""
    shared = {(): {A: 0.55, B: 0.45}, (A,): {C: 0.5, D: 0.5}, (B,): {F: 0.95, G: 0.05},
              (A, C): {G: 1.0}, (A, D): {G: 1.0}}
    policy = _two_models(plain={**shared, (B, F): {EOT: 0.8, E: 0.2}},
                         with_glossary={**shared, (B, F): {E: 0.99, EOT: 0.01}})
    vocab = make_tokenizer().vocab_size
    trie = BiasTrie([((E,), 0.1, False)], np.zeros(vocab, np.float32), np.ones(vocab, bool))
    without, _ = run(policy, beam_size=2)
    result, _ = run(policy, glossary=(B, E), bias=trie, beam_size=2)  # `glossed` knows the prompt by its B
    assert (without.text, result.text) == ("acg", "bfe")


def test_a_result_that_recites_a_term_twice_running_is_decoded_again_without_the_glossary():
    """With the glossary the model starts with the term and says it again ("凯瑟琳 凯瑟琳" for a
    20 s clip); without it, "a"."""
    policy = _two_models(plain={(): {A: 0.9, B: 0.1}, (B,): {C: 1.0}, (B, C): {B: 0.9, EOT: 0.1}, (B, C, B): {C: 1.0}},
                         with_glossary={(): {B: 0.99, A: 0.01}, (B,): {C: 1.0}, (B, C): {B: 0.9, EOT: 0.1},
                                        (B, C, B): {C: 1.0}})
    options = glossary_options(make_tokenizer().vocab_size)
    plain_recital, _ = run(policy, fallback=True, **options)
    assert plain_recital.text == "bcbc"  # no check: the glossed reading stands
    result, _ = run(policy, fallback=True, recital=recital(Vocabulary((Term("bc"),))), **options)
    assert result.text == "a"


def test_a_long_prompt_loses_its_oldest_tokens_and_the_glossary_stays_whole():
    said_before = tuple([A] * 300)
    _, backend = run(lambda seq: {EOT: 1.0}, **glossary_options(make_tokenizer().vocab_size), prompt=said_before)
    starts = [call.tolist()[0] for call in backend.calls if call.tolist()[0][-1:] == [SOT]]
    assert starts[1] == [SOT_PREV, B, C, *[A] * (223 - 2), SOT]
    assert starts[0] == [SOT_PREV, *[A] * 223, SOT]  # no-speech and language: without the glossary


def test_no_speech_and_language_are_read_without_the_glossary_which_goes_unused_on_silence():
    def policy(seq):
        if seq[-1] == SOT:  # the glossary would make the model sure that somebody speaks
            return {NO_SPEECH: 0.1, A: 0.9} if B in seq else {NO_SPEECH: 0.9, A: 0.1}
        return {B: 0.6, A: 0.4} if not after_prefix(seq) else {EOT: 1.0}

    result, backend = run(policy, fallback=True, **glossary_options(make_tokenizer().vocab_size))
    assert result.no_speech_prob == pytest.approx(0.9, abs=1e-3)
    assert all(B not in call.tolist()[0] for call in backend.calls[:2]), "no glossary where nobody speaks"


def _rules(**options) -> LogitRules:
    return LogitRules(make_tokenizer(), DecodeOptions(timestamps=True, **options))


def _allowed(rules: LogitRules, seq: list[int]) -> set[int]:
    """Tokens still possible after the rules; text is made likely so that only the grammar decides."""
    logits = np.zeros((1, make_tokenizer().vocab_size), np.float32)
    logits[0, :TS0] = 10.0
    return set(np.flatnonzero(np.isfinite(rules.apply(logits, [seq])[0])).tolist())


def test_timestamps_first_token_is_an_early_timestamp():
    assert _allowed(_rules(max_initial_timestamp=1.0), []) == set(range(TS0, TS0 + 51))


def test_timestamps_come_in_pairs_and_never_go_back():
    rules = _rules()
    text_and_eot = set(range(EOT + 1)) - {J}
    assert _allowed(rules, [TS0 + 10, A]) == (text_and_eot | set(range(TS0 + 11, TS0 + N_STAMPS)))
    assert _allowed(rules, [TS0 + 10, A, TS0 + 30]) == {EOT} | set(range(TS0 + 30, TS0 + N_STAMPS))
    assert _allowed(rules, [TS0 + 10, A, TS0 + 30, TS0 + 30]) == text_and_eot


def test_no_timestamp_past_the_audio():
    assert max(_allowed(_rules(max_timestamp=1.5), [TS0, A])) == TS0 + 75


def test_timestamp_wins_when_timestamps_together_outweigh_text():
    rules = _rules()
    logits = np.full((1, make_tokenizer().vocab_size), -5.0, np.float32)
    logits[0, A] = 0.0  # best single token, but 101 timestamps at -3 outweigh it together
    logits[0, TS0:] = -3.0
    logprobs = rules.apply(logits, [[TS0, B]])
    assert np.all(np.isneginf(logprobs[0, :TS0]))


@pytest.mark.parametrize(
    "tokens, looped",
    [([1, 2, 3] * 6, True), ([7] * 16, True), ([7] * 15, False), ([1, 2, 3, 4] * 3, False), (list(range(40)), False)],
)
def test_has_loop(tokens, looped):
    assert has_loop(tokens) is looped


def test_without_loop_keeps_prefix_and_one_copy():
    assert without_loop([5, 6, *([1, 2, 3] * 6), 1], eot=10) == [5, 6, 1, 2, 3]
    assert without_loop([4, 5, 6], eot=10) == [4, 5, 6]


def test_compression_ratio_flags_repetition():
    assert compression_ratio("") == 0.0
    assert compression_ratio("the quick brown fox jumps over the lazy dog") < 1.5
    assert compression_ratio("thank you. " * 30) > 2.4


def test_top_k_matches_a_full_sort():
    scores = np.random.default_rng(0).standard_normal((4, 1000))
    scores[:, :10] = -np.inf
    expected = np.argsort(-scores, axis=-1)[:, :6]
    np.testing.assert_array_equal(top_k(scores, 6), expected)


def test_punctuation_tokens_are_the_stops_between_sentences() -> None:
    from edge.asr.whisper.decoding import punctuation_tokens
    from edge.asr.whisper.tokenizer import Tokenizer as Real
    from tests.conftest import _built_model

    tok = Real.from_dir(_built_model("whisper-base-int8"))
    stops = punctuation_tokens(tok.tokens, tok.eot)
    for text in (".", ",", "。", "?"):  # ("，" is two byte tokens in this vocabulary)
        assert tok.encode(text)[0] in stops, text
    for text in (" belief", " the", "的", "2", "-", "("):
        assert tok.encode(text)[0] not in stops, text


def test_a_sentence_decoded_twice_into_the_padding_is_kept_once() -> None:
    """Issue 10 item 8: "Please scan your ticket at the gate. Please scan your ticket at the gate." """
    from edge.asr.whisper.decoding import without_repeated_sentence

    eot = 1000
    sentence = [11, 12, 13, 14, 15, 16, 17]
    assert without_repeated_sentence(sentence + sentence, eot) == sentence
    assert without_repeated_sentence([5, *sentence, *sentence], eot) == [5, *sentence]
    assert without_repeated_sentence([1, 2, 1, 2], eot) == [1, 2, 1, 2]  # "no, no": short repeats stay
    assert without_repeated_sentence(sentence + [18], eot) == sentence + [18]
    full_stop, on = 19, 20  # "He must be home now for the lightress. He must be home now for the lightress on."
    parted = [*sentence, full_stop, *sentence, on, full_stop]
    assert without_repeated_sentence(parted, eot, stops={full_stop}) == [*sentence, on, full_stop]
    # "..., it was the epoch of belief, it was the epoch of incredulity.": parted by a word, both stay
    belief, incredulity = 21, 22
    anaphora = [*sentence, belief, *sentence, incredulity, full_stop]
    assert without_repeated_sentence(anaphora, eot, stops={full_stop}) == anaphora
    stamps = [eot + 1, *sentence, eot + 2, eot + 3, *sentence, eot + 4]  # timestamps stay
    assert without_repeated_sentence(stamps, eot) == [eot + 1, *sentence, eot + 2, eot + 3, eot + 4]
    far = [*sentence, *sentence, 21, 22, 23, 24, 25]  # the copy is not near the end: left alone
    assert without_repeated_sentence(far, eot) == far


def test_a_whole_prompt_and_a_sample_that_never_ends_stay_inside_the_text_context() -> None:
    """223 prompt tokens, the start sequence and 224 sampled ones were 452 positions: the graph's
    positional table has 448, and onnxruntime failed mid-utterance (a traceback in transcribe)."""

    class Bounded(ScriptedBackend):
        def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
            assert cache.length + tokens.shape[1] <= TEXT_CTX, cache.length + tokens.shape[1]
            return super().decode(tokens, cache, cross)

    thue_morse = [bin(n).count("1") % 2 for n in range(2000)]
    zeros = [n for n, bit in enumerate(thue_morse) if bit == 0]
    square_free = [(A, B, C)[later - earlier - 1] for earlier, later in zip(zeros, zeros[1:])]  # never a loop
    for beam in (1, 3):
        backend = Bounded(lambda seq: {square_free[len(after_prefix(seq))]: 1.0}, make_tokenizer().vocab_size)
        cross = backend.encode(np.zeros((80, 2), np.float32))
        result = Decoder(backend, make_tokenizer()).decode(cross, DecodeOptions(prompt=[C] * MAX_PROMPT_TOKENS, beam_size=beam))
        assert len(result.tokens) > 200, beam  # the search ran to its (capped) length
