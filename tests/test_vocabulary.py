"""Vocabulary biasing (issue 11): the prefix tree's bonus arithmetic, list validation, the
recognizer with a real model, and the live paths (socket request, SIGHUP) on a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys

import numpy as np
import pytest

from edge.asr.whisper.bias import BiasTrie, Match, build_trie, recital, spellings
from edge.asr.whisper.recognizer import Recognizer, glossary_advice, prompted
from edge.audio.audiofile import load_audio
from edge.vocabulary import (
    MAX_FILE_BYTES,
    MAX_TERM_CHARS,
    MAX_TERMS,
    Term,
    Vocabulary,
    VocabularyError,
    check_term,
    parse_items,
    parse_text,
    read_file,
)
from tests.conftest import REPO
from tests.test_daemon import Subscriber, finish, start_daemon, write_config

B = 2.0
# A toy vocabulary of 8 tokens: 1-2-3 is term "abc", 1-4 is term "ad" (weight 2), 5 continues a word.
CONTINUES = np.array([0, 0, 0, 0, 0, 1, 0, 0], dtype=np.float32)
OPENING = np.array([0, 1, 1, 1, 1, 1, 0, 1], dtype=bool)  # 6 is common, like " M": no bonus to open a term


def toy(paths=(((1, 2, 3), B, True), ((1, 4), 2 * B, True))) -> BiasTrie:
    return BiasTrie(paths, CONTINUES, OPENING)


def bonus(trie: BiasTrie, match: Match) -> np.ndarray:
    scores = np.zeros((1, len(CONTINUES)))
    trie.add_bonus(scores, [match])
    return scores[0]


def walk(trie: BiasTrie, tokens: list[int]) -> tuple[Match, float]:
    """The match after `tokens` and the total bonus the search gave them, step by step."""
    match, total = Match(), 0.0
    for token in tokens:
        total += bonus(trie, match)[token]
        match = trie.step(match, token)
    return match, total


def test_each_token_of_a_term_earns_its_bonus_and_a_shared_prefix_the_larger_one() -> None:
    trie = toy()
    assert bonus(trie, Match())[[1, 2, 6]].tolist() == [2 * B, 0.0, 0.0]  # "a" leads to "abc" and "ad"
    after_a = trie.step(Match(), 1)
    assert bonus(trie, after_a)[[2, 4]].tolist() == [B, 2 * B]
    assert walk(trie, [1, 2, 3])[1] == pytest.approx(2 * B + B + B)


def test_breaking_off_takes_back_what_the_half_match_earned() -> None:
    trie = toy()
    match, total = walk(trie, [1, 2, 6])
    assert total == pytest.approx(0.0) and match.node == 0
    match, total = walk(trie, [1, 2, 0])  # 0 stands for EOT or a timestamp: the unfinished match is lost
    assert total == pytest.approx(0.0)


def test_breaking_off_into_a_new_match_keeps_only_the_new_one() -> None:
    trie = toy()
    assert walk(trie, [1, 2, 1])[1] == pytest.approx(2 * B)  # "ab" lost, a new "a" started


def test_a_completed_term_keeps_its_bonus_at_a_word_boundary() -> None:
    trie = toy()
    assert walk(trie, [1, 4, 6])[1] == pytest.approx(4 * B)
    assert walk(trie, [1, 4, 0])[1] == pytest.approx(4 * B)


def test_a_word_term_loses_its_bonus_when_the_word_goes_on() -> None:
    trie = toy()
    assert walk(trie, [1, 4, 5])[1] == pytest.approx(0.0)  # "ad" + "is": not the term


def test_a_term_without_word_boundaries_keeps_its_bonus_before_any_token() -> None:
    trie = toy(paths=(((1, 4), B, False),))  # a Chinese term: characters run on
    assert walk(trie, [1, 4, 5])[1] == pytest.approx(2 * B)


def test_a_term_said_again_earns_nothing_the_second_time() -> None:
    trie = toy()
    once = walk(trie, [1, 4, 6])[1]
    assert walk(trie, [1, 4, 6, 1, 4, 6])[1] == pytest.approx(once)
    assert walk(trie, [1, 4, 6, 1, 2, 3, 6])[1] == pytest.approx(once + 4 * B)  # another term still earns


def test_a_term_inside_a_longer_one_is_not_said_when_the_word_runs_on() -> None:
    """Terms "Kuber" and "Kubernetes": "Kubernet said" kept Kuber's bonus (and its glossary gain), since
    the longer match took back only what it had added; "Kuber" was never said, the word ran on."""
    trie = toy(paths=(((1, 4), B, True), ((1, 4, 5, 2), B, True)))  # "ad", and "ad"+"is"+"b" (5 lengthens the word)
    assert walk(trie, [1, 4, 5, 6])[1] == pytest.approx(0.0)
    assert gained(trie, [1, 4, 5, 6])[1] == pytest.approx(0.0)
    assert walk(trie, [1, 4, 5, 2, 6])[1] == pytest.approx(4 * B)  # the longer term, said
    assert walk(trie, [1, 4, 6])[1] == pytest.approx(2 * B)  # the shorter one, said
    assert walk(trie, [1, 4, 6, 1, 4, 5, 6])[1] == pytest.approx(2 * B)  # said, then again but run on: once
    nested = toy(paths=(((1,), B, True), ((1, 5), B, True), ((1, 5, 5, 2), B, True)))  # "a", "a"+5, "a"+5+5+"b"
    assert walk(nested, [1, 5, 5, 6])[1] == pytest.approx(0.0)  # past both shorter terms, then broken off


def test_a_hypothesis_the_token_budget_cut_ranks_without_its_unfinished_match() -> None:
    """Cut at max_tokens in the middle of a term, it kept the bonus and gain an end of text takes back."""
    from edge.asr.whisper.decoding import _Candidate

    trie = toy()
    half = _Candidate([1], -1.0, -1.0 + 2 * B + GAIN, trie.step(Match(), 1, GAIN))  # "a" of "abc": unfinished
    assert half.cut(trie).score == pytest.approx(-1.0)
    whole = _Candidate([1, 4], -2.0, -2.0 + 4 * B, walk(trie, [1, 4])[0])  # "ad": a completed term keeps it
    assert whole.cut(trie).score == pytest.approx(-2.0 + 4 * B) and half.cut(None) is half


def test_no_bonus_leaks_into_unrelated_rows() -> None:
    trie = toy()
    scores = np.zeros((2, len(CONTINUES)))
    trie.add_bonus(scores, [Match(), trie.step(Match(), 1)])
    assert scores[0].tolist() == [0, 2 * B, 0, 0, 0, 0, 0, 0]
    assert scores[1].tolist() == [-2 * B, 0, B, -2 * B, 2 * B, -2 * B, -2 * B, -2 * B]  # after "a", which holds 2B


def test_a_common_first_token_opens_a_term_without_a_bonus() -> None:
    trie = toy(paths=(((6, 2), B, True), ((6,), B, True)))  # a one-token term always earns it
    assert walk(trie, [6, 0])[1] == pytest.approx(B)
    assert walk(trie, [6, 2, 0])[1] == pytest.approx(2 * B)  # both terms completed
    two_tokens = toy(paths=(((6, 2), B, True),))
    assert bonus(two_tokens, Match())[6] == 0.0 and walk(two_tokens, [6, 2, 0])[1] == pytest.approx(B)


GAIN = 0.5  # the glossary gain of every token in these tests (bonus B = 2.0 besides)


def gained(trie: BiasTrie, tokens: list[int], gain: float = GAIN) -> tuple[Match, float]:
    """`walk` with the glossary: every token would gain `gain`; the total of bonus and gains."""
    match, total = Match(), 0.0
    for token in tokens:
        scores = np.zeros((1, len(CONTINUES)))
        trie.add_bonus(scores, [match], np.full((1, len(CONTINUES)), gain))
        total += scores[0, token]
        match = trie.step(match, token, gain)
    return match, total


def test_the_glossary_gain_goes_to_term_tokens_only() -> None:
    trie = toy()
    scores = np.zeros((1, len(CONTINUES)))
    trie.add_bonus(scores, [Match()], np.full((1, len(CONTINUES)), GAIN))
    assert scores[0].tolist() == [0, 2 * B + GAIN, 0, 0, 0, 0, 0, 0]  # only "a" opens a term
    assert gained(trie, [1, 2, 3])[1] == pytest.approx(4 * B + 3 * GAIN)


def test_a_broken_off_match_loses_its_gain_with_its_bonus() -> None:
    trie = toy()
    assert gained(trie, [1, 2, 6])[1] == pytest.approx(0.0)
    assert gained(trie, [1, 2, 0])[1] == pytest.approx(0.0)
    assert gained(trie, [1, 2, 1])[1] == pytest.approx(2 * B + GAIN)  # "ab" lost, a new "a" started


def test_a_completed_term_keeps_its_gain_unless_the_word_goes_on_or_it_repeats() -> None:
    trie = toy()
    assert gained(trie, [1, 4, 6])[1] == pytest.approx(4 * B + 2 * GAIN)
    assert gained(trie, [1, 4, 5])[1] == pytest.approx(0.0)  # "ad" + "is": not the term
    assert gained(trie, [1, 4, 6, 1, 4, 6])[1] == pytest.approx(4 * B + 2 * GAIN)  # said again: nothing more
    chinese = toy(paths=(((1, 4), B, False),))
    assert gained(chinese, [1, 4, 5])[1] == pytest.approx(2 * B + 2 * GAIN)


def test_a_longer_term_through_a_completed_one_keeps_both_gains() -> None:
    """"ab" then "ab"+5 ("Kim" and "Kimberly"): 5 goes on with the word but into the longer term."""
    trie = toy(paths=(((1, 2), B, True), ((1, 2, 5), B, True)))
    assert gained(trie, [1, 2, 5, 6])[1] - walk(trie, [1, 2, 5, 6])[1] == pytest.approx(3 * GAIN)


def test_each_hypothesis_holds_its_own_gain() -> None:
    """Gains differ per row and step: a row takes back what its own match gained."""
    trie = toy()
    after_a_big = trie.step(Match(), 1, 3.0)
    after_a_small = trie.step(Match(), 1, 0.25)
    scores = np.zeros((2, len(CONTINUES)))
    trie.add_bonus(scores, [after_a_big, after_a_small], np.zeros((2, len(CONTINUES))))
    assert scores[:, 6].tolist() == [-2 * B - 3.0, -2 * B - 0.25]  # breaking off
    assert scores[:, 2].tolist() == [B, B]  # continuing keeps what was gained


def test_a_zero_bonus_list_still_has_a_tree_when_it_is_the_glossary(tiny) -> None:
    tokenizer = tiny.tokenizer
    names = Vocabulary((Term("Ljubljana"),), bonus=0.0, glossary="auto")
    trie = build_trie(names, tokenizer)
    assert trie is not None and len(trie) > 1
    scores = np.zeros((1, len(tokenizer.tokens)))
    trie.add_bonus(scores, [Match()])
    assert not scores.any()  # no bonus: only the glossary's gains go to its tokens
    assert tiny.options(vocabulary=names).bias is not None  # a short list: the glossary is used
    every = read_file(REPO / "scripts" / "vocab" / "terms_en.txt")  # too long for auto's glossary
    assert tiny.options(vocabulary=Vocabulary(every, bonus=0.0, glossary="auto")).bias is None


@pytest.mark.parametrize(("terms", "text", "recites"), [
    (["凯瑟琳", "北美"], "凯瑟琳 凯瑟琳", True),  # whisper-base's recital of a 19-term list
    (["Niamh"], " Niamh, Niamh.", True),
    (["Kim", "Kim Lee"], " Kim Lee Kim Lee", True),
    (["凯瑟琳", "杰西卡"], "凯瑟琳和杰西卡一分折腾", False),  # two terms in a sentence
    (["Niamh", "Saoirse"], " Niamh and Saoirse are booking the room.", False),
    (["Kim"], " Kim Kimberly", False),  # not inside another word
    (["Kim"], " Kim, kim.", False),  # case counts: the model recites the list's spelling
])
def test_a_term_said_twice_running_is_a_recital(terms, text, recites) -> None:
    assert (recital(Vocabulary(tuple(Term(t) for t in terms))).search(text) is not None) is recites


def test_the_recital_check_stays_fast_on_names_that_overlap() -> None:
    """{Kim, Lee, Kim Lee} in a long run of "Kim Lee x": one pass, not one per way to split it."""

    pattern = recital(Vocabulary((Term("Kim"), Term("Lee"), Term("Kim Lee"))))
    start = time.perf_counter()
    assert pattern.search(" " + "Kim Lee x " * 2000) is None
    assert time.perf_counter() - start < 0.5


def test_spellings_of_word_and_chinese_terms() -> None:
    assert spellings("ljubljana") == {" ljubljana", " Ljubljana"}
    assert " Kubernetes" in spellings("Kubernetes") and "Kubernetes" not in spellings("Kubernetes")
    assert {"张伟", " 张伟", "張偉", " 張偉"} <= spellings("张伟")
    assert {" Kubernetes", "Kubernetes"} <= spellings("Kubernetes", unspaced=True)  # a model that writes Chinese


@pytest.mark.parametrize(("text", "earns"), [
    ("我们用PostgreSQL存数据", True),  # a Latin term inside Chinese, written without spaces
    ("我们用 PostgreSQL，存数据", True),  # ... and followed by full-width punctuation
    ("我每天吃维生素C的时候", True),  # a Chinese term that ends in a Latin letter, then Han text
    (" PostgreSQLs are", False),  # a Latin word that runs on is still not the term
])
def test_latin_in_chinese_text_keeps_its_bonus(text: str, earns: bool) -> None:
    """Every Han character and full-width mark counted as lengthening the word before it, and a Latin
    term had only spaced spellings: "PostgreSQL" and "维生素C" earned nothing in Chinese speech."""
    from tests.conftest import _built_model
    from edge.asr.whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(_built_model("whisper-base-int8"))
    trie = build_trie(Vocabulary(parse_items(["PostgreSQL", "维生素C"], "t")), tokenizer)
    match, total = Match(), 0.0
    for token in tokenizer.encode(text):
        scores = np.zeros((1, len(tokenizer.tokens)))
        trie.add_bonus(scores, [match])
        total += scores[0, token]
        match = trie.step(match, token)
    assert (total > 0) == earns, total


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["ok", ""], "terms item 2: the term is empty"),
        (["x" * (MAX_TERM_CHARS + 1)], f"terms item 1: \"{'x' * 35}...\" is longer than {MAX_TERM_CHARS} characters"),
        (["a b c d e f g"], "has more than 6 words"),
        (["我们今天下午三点在会议室开会"], '"我们今天下午三点在会议室开会" has more than 12 Chinese or Japanese characters'),
        (["..."], "has no letter or digit"),
        (["bad\u0007bell"], 'terms item 1: "bad\\u0007bell" contains the invisible or invalid character \\u0007'),
        (["ab\ud800c"], 'terms item 1: "ab\\ud800c" contains the invisible or invalid character \\ud800'),
        (["Kuber\u00adnetes"], 'terms item 1: "Kuber\\u00adnetes" contains the invisible or invalid character \\u00ad'),
        ([True], "got true/false (YAML reads a bare yes, no, on, off, true or false that way: put the term in quotes)"),
        ([{"term": "Siobhan", "weight": 10**400}], "weight (a number of more than 38 digits) is out of range"),
        ([{"term": "Siobhan", "weight": 9}], "weight 9 is out of range; expected 0.1 to 5.0"),
        ([{"term": "Siobhan", "weight": "high"}], "weight \"high\" is not a number"),
        ([{"term": "Siobhan", "wieght": 2}], "unknown field(s) wieght"),
        ([{"weight": 2}], "terms item 1: missing `term`"),
        ([7], "terms item 1: a term must be text, got a whole number"),
        ("Siobhan", "terms: expected a list of terms, got text"),
        ([f"t{n}" for n in range(MAX_TERMS + 1)], f"more than {MAX_TERMS}"),
    ],
)
def test_a_bad_term_is_named(items, message) -> None:
    with pytest.raises(VocabularyError) as info:
        parse_items(items, "terms")
    assert message in str(info.value)


def test_terms_are_folded_and_repeats_merged_with_the_higher_weight() -> None:
    terms = parse_items(["  Grafana   Cloud ", {"term": "Grafana Cloud", "weight": 3}, "张伟"], "terms")
    assert terms == (Term("Grafana Cloud", 3.0), Term("张伟", 1.0))


def test_spellings_that_differ_in_case_are_each_kept_and_biased() -> None:
    """Merged, the heavier spelling won: " PostgreSQL" had no path in the tree."""
    terms = parse_items(["PostgreSQL", {"term": "postgresql", "weight": 2}], "terms")
    assert terms == (Term("PostgreSQL"), Term("postgresql", 2.0))
    assert check_term("Kubernetes").weight == 1.0


def test_one_name_typed_composed_or_decomposed_is_one_term() -> None:
    assert parse_items(["Gda\u0144sk", "Gdan\u0301sk"], "terms") == (Term("Gda\u0144sk"),)


def test_compatibility_forms_are_folded_and_blank_marks_refused() -> None:
    """Full-width Latin, ligatures and half-width kana are never what the model writes: they were kept,
    and could never match. A grapheme joiner or a Hangul filler is a blank the category check let by."""
    assert parse_items(["\uff27\uff30\uff34-\uff14", "\ufb01nance", "\uff76\uff80\uff76\uff85"], "t") == (
        Term("GPT-4"), Term("finance"), Term("\u30ab\u30bf\u30ab\u30ca"))
    for blank in ("\u034f", "\u3164", "\uffa0"):
        with pytest.raises(VocabularyError, match=f"contains the invisible or invalid character \\\\u{ord(blank):04x}"):
            check_term(f"Sio{blank}bhan")


def test_file_comments_follow_white_space_and_a_weight_needs_its_tab() -> None:
    text = "Siobhan  # the boss\nKubernetes\t2  # product\nC#\nWindows 11\n"
    assert parse_text(text, "f") == (Term("Siobhan"), Term("Kubernetes", 2.0), Term("C#"), Term("Windows 11"))
    with pytest.raises(VocabularyError, match=r'f line 2: "Saoirse    2" ends in spaces and a number: a weight must '
                                              r"follow a TAB"):
        parse_text("ok\nSaoirse    2\n", "f")


def test_file_format_names_the_line(tmp_path) -> None:
    assert parse_text("# rooms\n\nSiobhan\t2\n深圳\n", "f") == (Term("Siobhan", 2.0), Term("深圳"))
    with pytest.raises(VocabularyError, match=r"f line 3: weight \"x\" is not a number"):
        parse_text("a\n# c\nb\tx\n", "f")
    with pytest.raises(VocabularyError, match="f line 2: the term is empty"):
        parse_text("a\n\t2\n", "f")
    with pytest.raises(VocabularyError, match='f line 2: weight "1e309" is not a number'):  # not "inf"
        parse_text("a\nb\t1e309\n", "f")
    with pytest.raises(VocabularyError, match="f line 2: a line ends in a bare CR .* save the file with LF or CRLF"):
        parse_text("a\r\nb\rc\rd\r", "f")


def test_only_a_newline_ends_a_files_line() -> None:
    """splitlines() also split at U+2028, U+0085 and a form feed: "Sio\u2028bhan" became two junk terms
    and the lines after it were misnumbered. Such a character is refused in its term, on its line."""
    assert parse_text("Siobhan\r\nKubernetes\t2\r\n", "f") == (Term("Siobhan"), Term("Kubernetes", 2.0))
    for hidden in ("\u2028", "\x85", "\x0c", "\x1e"):
        with pytest.raises(VocabularyError, match=f"f line 2: .* contains the invisible or invalid character "
                                                  f"\\\\u{ord(hidden):04x}"):
            parse_text(f"ok\nSio{hidden}bhan\nlast\n", "f")


def test_unreadable_files_are_refused_in_one_line(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.txt"
    big.write_text("x\n" * (MAX_FILE_BYTES // 2 + 1))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Zürich\n".encode("latin-1"))
    for path, message in [(tmp_path / "none.txt", "file not found"), (fifo, "not a regular file"),
                          (tmp_path, "not a regular file"), (big, "larger than 64 KiB"), (latin1, "not UTF-8 text")]:
        with pytest.raises(VocabularyError, match=message):
            read_file(path)


def check_config(config) -> subprocess.CompletedProcess:
    """`edge-asr check-config CONFIG`, run as a technician runs it."""
    return subprocess.run([sys.executable, "-m", "edge", "check-config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_check_config_names_the_key_and_the_bad_term(tmp_path, int8_model_dir) -> None:
    terms = tmp_path / "terms.txt"
    terms.write_text("Siobhan\nKubernetes\tlots\n")
    config = write_config(tmp_path, int8_model_dir, vocabulary={"terms": ["ok", ""], "file": str(terms), "bonus": 11})
    result = check_config(config)
    assert result.returncode == 78 and "Traceback" not in result.stderr
    assert "vocabulary.terms item 2: the term is empty" in result.stderr
    assert f"vocabulary.file: \"{terms}\" -> {terms} line 2: weight \"lots\" is not a number" in result.stderr
    assert "vocabulary.bonus: 11 is out of range" in result.stderr


def test_check_config_warns_of_a_list_too_long_for_the_prompt(tmp_path, int8_model_dir) -> None:
    every = [term.text for term in read_file(REPO / "scripts" / "vocab" / "terms_en.txt")]
    config = write_config(tmp_path, int8_model_dir, vocabulary={"terms": every})
    result = check_config(config)
    assert result.returncode == 0 and "OK" in result.stdout
    assert "warning: vocabulary: the 39 terms take 172 of the model's tokens as a prompt, more than the 64" in result.stderr
    config = write_config(tmp_path, int8_model_dir, vocabulary={"terms": every[:10]})
    result = check_config(config)
    assert result.returncode == 0 and result.stderr == ""


def test_a_vocabulary_file_with_no_term_is_valid_but_warned_about(tmp_path, int8_model_dir) -> None:
    """A truncated copy, or one with every line commented out, silently added nothing."""
    terms = tmp_path / "terms.txt"
    terms.write_text("# people in this building\n\n")
    config = write_config(tmp_path, int8_model_dir, vocabulary={"file": str(terms)})
    result = check_config(config)
    assert result.returncode == 0 and "OK" in result.stdout
    assert f"warning: vocabulary.file {terms} holds no terms (empty, or only comments)" in result.stderr
    terms.write_text("Siobhan\n")
    result = check_config(config)
    assert result.returncode == 0 and result.stderr == ""


@pytest.fixture(scope="module")
def tiny(int8_model_dir) -> Recognizer:
    return Recognizer.from_dir(int8_model_dir)


def test_a_term_corrects_beam_search_and_greedy_partials(tiny, eval_dir) -> None:
    """tiny.en hears "on the best" in harvard_l03_s03 ("... sew a button on the vest")."""
    audio = load_audio(eval_dir / "tts_piper_en" / "harvard_l03_s03.wav")
    vest = Vocabulary((Term("vest"),), source="test")
    for partial in (False, True):
        plain = tiny.transcribe(audio, partial=partial, options=tiny.options(beam_size=5)).text
        biased = tiny.transcribe(audio, partial=partial, options=tiny.options(beam_size=5, vocabulary=vest)).text
        assert plain.endswith("on the best.") and biased.endswith("on the vest."), (partial, plain, biased)


def test_the_prefix_tree_alone_corrects_a_word_in_a_final(tiny, eval_dir) -> None:
    """Which of these words tiny.en int8 misreads depends on the CPU's int8 kernels: "Who is the load"
    on a 2-core Intel Xeon, "Hoist the load" on an AMD EPYC (2026-12-07); "best" for "vest" on both.
    The tree must correct each misread word, keep each right one, and this machine must misread one."""
    misread = []
    for clip, term, said in (("harvard_l04_s01.wav", "hoist", "Hoist the load"), ("harvard_l03_s03.wav", "vest", "on the vest.")):
        audio = load_audio(eval_dir / "tts_piper_en" / clip)
        plain = tiny.transcribe(audio, options=tiny.options(beam_size=5)).text
        only_tree = Vocabulary((Term(term),), glossary=False, source="test")
        biased = tiny.transcribe(audio, options=tiny.options(beam_size=5, vocabulary=only_tree)).text
        assert said in biased, (plain, biased)
        misread += [plain] if said not in plain else []
    assert misread


def test_terms_never_come_out_of_noise_or_silence(tiny, eval_dir) -> None:
    vocabulary = Vocabulary(read_file(REPO / "scripts" / "vocab" / "unrelated_50.txt"), bonus=4.0, source="test")
    for beam, partial in ((5, False), (1, True)):
        options = tiny.options(beam_size=beam, vocabulary=vocabulary)
        for path in sorted((eval_dir / "nonspeech").glob("*.wav")):
            assert tiny.transcribe(load_audio(path), partial=partial, options=options).text == "", path.name


def test_an_empty_list_or_zero_bonus_builds_no_tree(tiny) -> None:
    assert build_trie(Vocabulary(), tiny.tokenizer) is None
    assert build_trie(Vocabulary((Term("Siobhan"),), bonus=0.0, glossary=False), tiny.tokenizer) is None
    assert tiny.options(vocabulary=Vocabulary((Term("Siobhan"),), glossary=False)).glossary == ()


def test_prompt_auto_gives_a_short_list_whole_and_a_long_one_not_at_all(tiny) -> None:
    every = read_file(REPO / "scripts" / "vocab" / "terms_en.txt")  # 39 terms, 172 tokens
    short = Vocabulary(every[:10])
    assert tiny.tokenizer.decode(tiny.options(vocabulary=short).glossary).startswith(" Siobhan, Niamh,")
    assert tiny.options(vocabulary=Vocabulary(every)).glossary == ()
    assert 100 < len(tiny.options(vocabulary=Vocabulary(every, glossary=True)).glossary) <= 160  # true: the heaviest
    assert tiny.options(vocabulary=Vocabulary(every[:10], glossary=False)).glossary == ()


def test_a_list_the_glossary_cannot_hold_whole_is_explained(tiny) -> None:
    """`auto` left a long list to the prefix tree (40 % of names, not 85 %) and `true` dropped its lightest terms,
    and nothing said so: the technician gets the figures and what to do."""
    every = read_file(REPO / "scripts" / "vocab" / "terms_en.txt")  # 39 terms, 172 tokens
    advice = glossary_advice(Vocabulary(every), tiny.tokenizer, "auto")
    assert advice is not None and "the 39 terms take 172 of the model's tokens" in advice
    assert "more than the 64" in advice and "vocabulary.prompt: true" in advice
    advice = glossary_advice(Vocabulary(every, glossary=True), tiny.tokenizer, "auto")
    assert advice is not None and "so 35 of them (the heaviest first) are in the prompt and the other 4" in advice
    for quiet in (Vocabulary(every[:10]), Vocabulary(every[:10], glossary=True), Vocabulary(every, glossary=False),
                  Vocabulary()):
        assert glossary_advice(quiet, tiny.tokenizer, "auto") is None


def test_the_advice_says_what_the_decoder_does_at_the_edge_of_the_prompt(tiny) -> None:
    """Whether `auto` gives the list as the prompt is decided as the decoder decides it: heaviest first, where
    a term's trailing "?" tokenizes otherwise before "," than before "." (a list measured in its own order
    was called too long while the decoder took it whole)."""
    every = read_file(REPO / "scripts" / "vocab" / "terms_en.txt")
    outcomes = set()
    for size in range(1, 20):
        for extra in ((), (Term("Yahoo?", 2.0),), (Term("Ola"), Term("Yahoo?", 2.0))):
            names = Vocabulary((*every[:size], *extra))
            dropped = tiny.options(vocabulary=names, language="en").glossary == ()
            assert (glossary_advice(names, tiny.tokenizer, "en") is not None) == dropped, names
            outcomes.add(dropped)
    assert outcomes == {True, False}  # both sides of the 64-token edge were crossed


def test_auto_prompts_only_speech_known_to_be_english() -> None:
    """So a long list on a Chinese box is not advised about a prompt `auto` would not give it anyway."""
    names = Vocabulary((Term("Siobhan"),))
    assert prompted(names, "auto", ("en",)) and prompted(names, "en", ("en", "zh"))
    assert not prompted(names, "auto", ("en", "zh")) and not prompted(names, "zh", ("en", "zh"))
    assert prompted(Vocabulary((Term("张伟"),), glossary=True), "zh", ("en", "zh"))


def test_the_prompt_goes_to_every_window_of_long_audio(tiny, monkeypatch) -> None:
    """A 40 s file is decoded in windows (the seek loop): each one gets the list as its prompt, as a short file does."""
    from edge.asr.whisper.decoding import DecodeResult

    asked: list[tuple[int, ...]] = []
    heard_nothing = DecodeResult((), "", 0.0, -2.0, 1.0, 1.0, 0.0, False)

    def decode(cross, options):
        asked.append(options.glossary)
        return heard_nothing

    monkeypatch.setattr(tiny.decoder, "decode_with_fallback", decode)
    options = tiny.options(vocabulary=Vocabulary((Term("Siobhan"), Term("Ljubljana"))))
    noise = (0.05 * np.random.default_rng(0).standard_normal(40 * 16000)).astype(np.float32)
    tiny.transcribe(noise, options=options)
    assert len(asked) >= 2 and all(glossary == options.glossary != () for glossary in asked)


def test_transcribe_takes_a_vocabulary_file_and_names_a_bad_line(tmp_path, eval_dir) -> None:
    clip = eval_dir / "tts_piper_en" / "harvard_l03_s03.wav"
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("# clothes\nvest\n")
    bad.write_text("vest\t99\n")
    command = [sys.executable, "-m", "edge", "transcribe", str(clip), "--vocabulary"]
    ok = subprocess.run([*command, str(good)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("on the vest."), ok.stderr
    refused = subprocess.run([*command, str(bad)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == f"edge-asr transcribe: {bad} line 1 (\"vest\"): weight 99.0 is out of range; expected 0.1 to 5.0"
    prompted = subprocess.run([*command, str(good), "--vocabulary-prompt", "true"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
    assert prompted.returncode == 0 and prompted.stdout.strip().endswith("vest."), prompted.stderr
    assert ok.stderr == "" and prompted.stderr == ""
    whole = subprocess.run([*command, str(REPO / "scripts" / "vocab" / "terms_en.txt")], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert whole.returncode == 0 and whole.stdout.strip().endswith("on the best."), whole.stderr  # "vest" not in it
    assert whole.stderr.startswith("edge-asr transcribe: warning: vocabulary: the 39 terms take 172")


def send(subscriber: Subscriber, request: dict) -> None:
    subscriber._sock.sendall(json.dumps(request).encode() + b"\n")


def test_an_app_replaces_the_list_live_and_sighup_goes_back_to_the_config(tmp_path, int8_model_dir, eval_dir) -> None:
    longform = eval_dir / "longform_en" / "longform_01.wav"
    config = write_config(tmp_path, int8_model_dir, vocabulary={"terms": ["Siobhan", {"term": "深圳", "weight": 2}]})
    daemon = start_daemon(config, f"file:{longform}", "--pace", "realtime")
    try:
        app = Subscriber(tmp_path / "asr.sock")
        other = Subscriber(tmp_path / "asr.sock")
        send(app, {"type": "vocabulary"})
        asked = app.wait_for(lambda e: e["type"] == "vocabulary", 10)
        assert (asked["source"], asked["count"], asked["terms"]) == ("config", 2, ["Siobhan", "深圳"])

        send(app, {"type": "vocabulary", "terms": ["Kubernetes", {"term": "Ljubljana", "weight": 3, "sounds_like": ["Lublyana"]}]})
        replaced = app.wait_for(lambda e: e["type"] == "vocabulary" and e["source"] == "request", 10)
        assert replaced["terms"] == ["Kubernetes", "Ljubljana"] and replaced["count"] == 2
        other.wait_for(lambda e: e["type"] == "status" and "replaced by an app (2 terms)" in e.get("message", ""), 10)
        app.request_status()
        status = app.wait_for(lambda e: e["type"] == "status" and "vocabulary" in e, 10)
        assert status["vocabulary"]["source"] == "request" and status["vocabulary"]["terms"] == 2
        assert status["vocabulary"]["sounds_like"] == 1  # Ljubljana's "Lublyana"
        assert "advice" not in replaced  # two names: the prompt takes them whole
        every = [term.text for term in read_file(REPO / "scripts" / "vocab" / "terms_en.txt")]
        send(app, {"type": "vocabulary", "terms": every})
        long_list = app.wait_for(lambda e: e["type"] == "vocabulary" and e["count"] == 39, 10)
        assert long_list["advice"].startswith("vocabulary: the 39 terms take 172 of the model's tokens as a prompt")
        told = other.wait_for(lambda e: "replaced by an app (39 terms)" in e.get("message", ""), 10)  # the journal has it
        assert told["vocabulary"]["advice"] == long_list["advice"] and "advice" not in status["vocabulary"]

        seen = len(app.events)
        send(app, {"type": "vocabulary", "terms": ["ok", "x" * 60]})
        error = app.wait_for(lambda e: e["type"] == "error", 10, after=seen)
        assert error["reason"] == "bad_vocabulary" and "terms item 2" in error["message"]
        assert "unchanged" in error["message"]
        for bad, words in [({"reset": "no"}, 'reset must be true or false, got "no"'),
                           ({"terms": [{"term": "Siobhan", "weight": 10**400}]}, "out of range"),
                           ({"terms": ["Saoirse", "ab\ud800c"]}, "terms item 2"),  # once crashed the shutdown
                           ({"terms": [{"term": "Tadhg", "sounds_like": ["Saoirse"]}, "Saoirse"]}, "is also the term")]:
            seen = len(app.events)
            send(app, {"type": "vocabulary", **bad})
            error = app.wait_for(lambda e: e["type"] == "error", 10, after=seen)
            assert error["reason"] == "bad_vocabulary" and words in error["message"], error
        send(app, {"type": "vocabulary"})
        assert app.wait_for(lambda e: e["type"] == "vocabulary", 10, after=seen)["source"] == "request"

        seen, seen_other = len(app.events), len(other.events)
        app._sock.sendall(b'{"type":"vocabulary","terms":["Siobhan"]}\n' * 2000 + b'{"type":"vocabulary","terms":["Kubernetes"]}\n')
        app.wait_for(lambda e: e["type"] == "vocabulary" and e["terms"] == ["Kubernetes"], 60, after=seen)
        other.wait_for(lambda e: "replaced by an app" in e.get("message", "") and e["vocabulary"]["terms"] == 1, 10,
                       after=seen_other)
        time.sleep(1.5)  # a second status could follow at the next source check (0.5 s), not 2000 more
        told = [e for e in other.events[seen_other:] if "replaced by an app" in e.get("message", "")]
        assert not other.closed.is_set() and not [e for e in other.events[seen_other:] if e["type"] == "error"]
        assert 1 <= len(told) <= 2 and told[-1]["vocabulary"]["terms"] == 1, told  # not 2001 status events

        seen = len(app.events)
        daemon.send_signal(signal.SIGHUP)
        app.wait_for(lambda e: e["type"] == "status" and e.get("message") == "reloaded", 20, after=seen)
        send(app, {"type": "vocabulary"})
        back = app.wait_for(lambda e: e["type"] == "vocabulary", 10, after=seen)
        assert (back["source"], back["terms"]) == ("config", ["Siobhan", "深圳"])
        assert app.wait_for(lambda e: e["type"] == "final" and e["text"], 60, after=seen)["text"]  # recognition went on
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 30)
    assert code == 0 and "Traceback" not in err, err
    assert err.count("vocabulary: the 39 terms take 172") == 1, err  # the app's long list, not the short ones


def test_a_term_the_vocabulary_vouches_for_does_not_trigger_a_sampled_retry() -> None:
    from edge.asr.whisper.decoding import DecodeResult

    unsure = DecodeResult(tokens=(1, 2), text="Siobhan said", sum_logprob=-4.5, avg_logprob=-1.5, no_speech_prob=0.01,
                          compression_ratio=1.0, temperature=0.0, looped=False)
    assert unsure.needs_fallback
    vouched = DecodeResult(**{**unsure.__dict__, "avg_score": -0.2})
    assert not vouched.needs_fallback and vouched.avg_logprob == -1.5  # the model's own figure stays as it was


def test_a_long_chinese_name_is_a_term() -> None:
    """The 12-character cap leaves room for organisations and places, with Latin words among them."""
    terms = parse_items(["中国科学院自动化研究所", "阿里云 ECS 弹性计算", "深圳市南山区科技园"], "terms")
    assert [term.text for term in terms] == ["中国科学院自动化研究所", "阿里云 ECS 弹性计算", "深圳市南山区科技园"]
