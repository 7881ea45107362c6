"""Sounds-like forms: what the model writes for a name, favoured as the name and shown as it (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from edge.asr.whisper.bias import Match, build_trie, idle_forms, ordinary_forms
from edge.asr.whisper.recognizer import Recognizer, _joined, forms_advice
from edge.audio.audiofile import load_audio
from edge.commands.learn_sounds_like import (
    Recording, RecordingsError, _heard, learned, read_recordings, rewritten, written_for,
)
from edge.vocabulary import (
    MAX_SOUNDS_LIKE, Term, Vocabulary, VocabularyError, cues, parse_items, parse_text, read_file, respelling,
    term_line,
)
from tests.conftest import REPO
from tests.test_daemon import write_config
from tests.test_vocabulary import check_config

VEST = "harvard_l03_s03.wav"  # tiny.en: "... sew a button on the best." for "on the vest"
BALL = "harvard_l02_s04.wav"  # "Kick the ball straight and follow through."
PLAIN = "harvard_l01_s01.wav"  # "The birch canoe slid on the smooth planks."; tiny.en: "The birch can use lid"


def test_forms_come_from_yaml_json_and_the_files_third_column() -> None:
    items = [{"term": "Krzysztof", "sounds_like": ["Kristoff", "Christoph"]}, {"term": "张伟", "sounds_like": "张维"}]
    assert parse_items(items, "terms") == (Term("Krzysztof", 1.0, ("Kristoff", "Christoph")), Term("张伟", 1.0, ("张维",)))
    text = "Krzysztof\t\tKristoff|Christoph  # the CTO\nKaohsiung\t2\tcase then\nSiobhan\t3\n"
    assert parse_text(text, "f") == (Term("Krzysztof", 1.0, ("Kristoff", "Christoph")),
                                     Term("Kaohsiung", 2.0, ("case then",)), Term("Siobhan", 3.0))


def test_a_repeated_term_keeps_every_form() -> None:
    terms = parse_items([{"term": "Niamh", "sounds_like": ["Nyan"]}, {"term": "Niamh", "weight": 2, "sounds_like": ["Naim"]}], "t")
    assert terms == (Term("Niamh", 2.0, ("Nyan", "Naim")),)


@pytest.mark.parametrize(("items", "message"), [
    ([{"term": "Siobhan", "sounds_like": ["siobhan"]}], 'terms item 1: "siobhan" is the term itself'),
    ([{"term": "Siobhan", "sounds_like": [""]}], "terms item 1 sounds_like: the sounds-like form is empty"),
    ([{"term": "Siobhan", "sounds_like": 7}], "sounds_like must be a list of spellings, got a whole number"),
    ([{"term": "Siobhan", "sounds_like": [True]}], "a sounds-like form must be text, got true/false"),
    ([{"term": "Siobhan", "sounds_like": ["Chi|von"]}], 'the sounds-like form "Chi|von" contains \'|\''),
    ([{"term": "Siobhan", "sounds_like": [f"f{n}" for n in range(MAX_SOUNDS_LIKE + 1)]}],
     f'"Siobhan" has {MAX_SOUNDS_LIKE + 1} sounds-like forms, more than {MAX_SOUNDS_LIKE}'),
    (["Ted", {"term": "Tadhg", "sounds_like": ["ted"]}], '"ted", a sounds-like form of "Tadhg", is also the term "Ted"'),
    ([{"term": "Aoife", "sounds_like": ["Eva"]}, {"term": "Eefa", "sounds_like": ["eva"]}],
     '"eva" is a sounds-like form of both "Aoife" and "Eefa"'),
])
def test_a_bad_form_is_named(items, message) -> None:
    with pytest.raises(VocabularyError) as info:
        parse_items(items, "terms")
    assert message in str(info.value)


def test_a_file_line_has_at_most_three_fields_and_a_form_no_comment() -> None:
    with pytest.raises(VocabularyError, match="f line 1: more than three TAB-separated fields"):
        parse_text("Krzysztof\t2\tKristoff\tChristoph\n", "f")
    with pytest.raises(VocabularyError, match='the sounds-like form "Kris #2" contains'):
        parse_items([{"term": "Krzysztof", "sounds_like": ["Kris #2"]}], "terms")


def test_a_tab_still_needs_a_weight_unless_forms_follow() -> None:
    with pytest.raises(VocabularyError, match='f line 1: weight "" is not a number'):
        parse_text("Siobhan\t\n", "f")
    with pytest.raises(VocabularyError, match='f line 1: weight "Chivon" is not a number'):
        parse_text("Siobhan\tChivon\n", "f")


@pytest.mark.parametrize("term", [Term("Siobhan"), Term("Siobhan", 2.5), Term("Krzysztof", 1.0, ("Kristoff", "Chris toff")),
                                  Term("张伟", 0.5, ("张维",))])
def test_a_terms_file_line_reads_back_as_the_same_term(term: Term) -> None:
    assert parse_text(term_line(term) + "\n", "f") == (term,)


def test_forms_are_shown_as_their_terms_in_any_case_as_whole_words() -> None:
    terms = parse_text("Kaohsiung\t\tcase then|case\nKrzysztof\t\tKristoff\n张伟\t\t张维\nTadhg\t\tTed\n", "f")
    show = respelling(Vocabulary(terms))
    assert show("Kristoff's case then, CASE in point") == "Krzysztof's Kaohsiung, Kaohsiung in point"
    assert show("Tedious casework by Ted.") == "Tedious casework by Tadhg."
    assert show("张维明天去深圳") == "张伟明天去深圳"
    studied = respelling(Vocabulary((*terms, Term("Case Western"))))
    assert studied("I studied at Case Western, in case.") == "I studied at Case Western, in Kaohsiung."
    assert respelling(Vocabulary((Term("Siobhan"),))) is None


def test_a_form_the_segments_split_is_shown_as_its_term_in_the_first() -> None:
    show = respelling(Vocabulary((Term("Krzysztof", 1.0, ("Chris Toff",)), Term("张伟", 1.0, ("张维",)))))
    assert show.segments(["Call Chris", "Toff now, Chris."], " ") == ["Call Krzysztof", "now, Chris."]
    assert show.segments(["Call Chris", "Toff"], " ") == ["Call Krzysztof", ""]
    assert show.segments(["我叫张", "维。", "你好"], "") == ["我叫张伟", "。", "你好"]
    assert show.segments([], " ") == []
    assert _joined([(0.0, 2.0, "Call Chris"), (2.0, 2.6, "Toff"), (2.6, 4.0, "now.")], ["Call Krzysztof", "", "now."]) == (
        (0.0, 2.6, "Call Krzysztof"), (2.6, 4.0, "now."))


def test_a_chinese_form_typed_in_another_script_than_the_box_shows_is_matched(tiny) -> None:
    vocabulary = Vocabulary((Term("张伟", 1.0, ("张维",)), Term("臺積電", 1.0, ("台机电",))))
    taiwan = tiny.options(vocabulary=vocabulary, script="taiwan").respell
    assert taiwan("張維明天去臺機電") == "張偉明天去臺積電"
    simplified = tiny.options(vocabulary=vocabulary).respell
    assert simplified("张维明天去台机电") == "张伟明天去台积电"


@pytest.fixture(scope="module")
def tiny(int8_model_dir) -> Recognizer:
    return Recognizer.from_dir(int8_model_dir)


def _earned(vocabulary: Vocabulary, text: str, tokenizer, trie=None) -> float:
    """The bonus a hypothesis earns by writing `text` (then ending the word), in `vocabulary`'s tree or `trie`."""
    trie = trie or build_trie(vocabulary, tokenizer)
    match, total = Match(), 0.0
    for token in [*tokenizer.encode(text), tokenizer.encode(".")[0]]:
        scores = np.zeros((1, len(tokenizer.tokens)))
        trie.add_bonus(scores, [match])
        total += scores[0, token]
        match = trie.step(match, token)
    return total


def test_a_form_earns_what_it_would_earn_as_the_term(tiny) -> None:
    as_form = _earned(Vocabulary((Term("Krzysztof", 2.0, ("Kristoff",)),)), " Kristoff", tiny.tokenizer)
    as_term = _earned(Vocabulary((Term("Kristoff", 2.0),)), " Kristoff", tiny.tokenizer)
    assert as_form == as_term > 0
    assert _earned(Vocabulary((Term("Krzysztof", 2.0),)), " Kristoff", tiny.tokenizer) == 0


def test_a_final_and_a_partial_show_the_term_where_the_model_wrote_its_form(tiny, eval_dir) -> None:
    """Bonus 0: the tree does not move the search, so only the rewrite makes "birch" the term (" birch" is two
    of the model's tokens: a distinctive form, shown as its term)."""
    audio = load_audio(eval_dir / "tts_piper_en" / PLAIN)
    birk = Vocabulary((Term("Birk", 1.0, ("birch",)),), bonus=0.0, glossary=False, source="test")
    for partial in (False, True):
        plain = tiny.transcribe(audio, partial=partial, options=tiny.options(beam_size=5))
        shown = tiny.transcribe(audio, partial=partial, options=tiny.options(beam_size=5, vocabulary=birk))
        assert plain.text.startswith("The birch can") and shown.text.startswith("The Birk can"), (plain.text, shown.text)
        assert shown.segments[-1][2].startswith("The Birk can") and shown.tokens == plain.tokens


def test_a_final_carries_the_other_readings_its_beam_weighed_and_the_learner_hears_them(tiny, eval_dir) -> None:
    """tiny.en's beam for "... on the vest" ends on "the best" and also weighs "the vest"."""
    audio, options = load_audio(eval_dir / "tts_piper_en" / VEST), tiny.options(beam_size=5)
    final, partial = tiny.transcribe(audio, options=options), tiny.transcribe(audio, partial=True, options=options)
    assert final.text.endswith("on the best.") and any(other.endswith("on the vest.") for other in final.alternatives)
    assert final.text not in final.alternatives and len(set(final.alternatives)) == len(final.alternatives) <= 4
    assert partial.alternatives == ()
    heard = _heard(tiny, options, Recording(eval_dir / "tts_piper_en" / VEST, "Sew a button on the Vest."))
    assert heard == [("Sew a button on the Vest.", text) for text in (final.text, *final.alternatives, partial.text)]


def test_forms_that_ordinary_speech_says_are_warned_of(tiny) -> None:
    vocabulary = Vocabulary((Term("Kaohsiung", 1.0, ("case", "Gaoshiong")), Term("Thibault", 1.0, ("the ball",)),
                             Term("Ljubljana", 1.0, ("the Ubliana", "Ubiano")), Term("张伟", 1.0, ("张维",))))
    assert ordinary_forms(vocabulary, tiny.tokenizer) == [("Kaohsiung", "case"), ("Thibault", "the ball"),
                                                          ("Ljubljana", "the Ubliana")]
    unprompted = replace(vocabulary, glossary=False)
    advice = forms_advice(unprompted, tiny.tokenizer, "en")
    assert advice.startswith("vocabulary: 3 sounds-like form(s) are or start with ordinary words and do nothing here")
    assert '"case" (Kaohsiung)' in advice and "Gaoshiong" not in advice
    assert forms_advice(vocabulary, tiny.tokenizer, "en") is None  # prompt auto: they send a final to be decoded again
    assert forms_advice(Vocabulary((Term("Krzysztof", 1.0, ("Kristoff",)),), glossary=False), tiny.tokenizer, "en") is None


def test_a_form_as_common_as_me_is_no_cue(tiny) -> None:
    vocabulary = Vocabulary((Term("Nguyen", 1.0, ("me", "new in")), Term("Aoife", 1.0, ("If", "Eifa")),
                             Term("Kaohsiung", 1.0, ("case",)), Term("Niamh", 1.0, ("I am",))))
    assert idle_forms(ordinary_forms(vocabulary, tiny.tokenizer), tiny.tokenizer) == [("Nguyen", "me"), ("Aoife", "If")]
    listed = Vocabulary((*read_file(REPO / "scripts" / "vocab" / "terms_en.txt"), *vocabulary.terms))  # no glossary
    cued = {cue.term.text: cue for cue in tiny.options(vocabulary=listed).cues}
    assert sorted(cued) == ["Kaohsiung", "Nguyen", "Niamh"]
    assert cued["Nguyen"].heard("We met new in town.") and not cued["Nguyen"].heard("Call me.")
    advice = forms_advice(listed, tiny.tokenizer, "en")
    assert advice.startswith("vocabulary: 2 sounds-like form(s)") and '"me" (Nguyen), "If" (Aoife)' in advice


def test_a_cue_is_heard_where_a_form_is_written_and_the_term_is_not() -> None:
    vocabulary = Vocabulary((Term("Niamh", 1.0, ("I am", "Nyan")), Term("Thibault", 1.0, ("the ball",)), Term("Siobhan")))
    niamh, thibault = cues(vocabulary, [("Niamh", "I am"), ("Thibault", "the ball")])
    assert niamh.term == vocabulary.terms[0] and thibault.term == vocabulary.terms[1]
    assert niamh.heard("Please ask what I am doing.") and niamh.heard("i AM here")
    assert not niamh.heard("I amend it.") and not niamh.heard("Nyan said so.")  # a longer word; a distinctive form
    assert not niamh.heard("I am Niamh.")  # the term is shown already
    assert niamh.heard("Ask Nyan.", ("Ask I am.",)) and niamh.heard("Ask Nyan.", ("Ask Niamh.",))  # the beam's readings
    assert thibault.heard("Kick the ball.") and not thibault.heard("Kick the balls.")


def test_an_ordinary_form_is_neither_shown_as_its_term_nor_favoured(tiny, eval_dir) -> None:
    """Learned for Thibault, "the ball" made "Kick the ball straight" "Kick Thibault straight" (+1.0 WER on
    tts_piper_en, docs/benchmarks.md)."""
    audio = load_audio(eval_dir / "tts_piper_en" / BALL)
    thibault = Vocabulary((Term("Thibault", 1.0, ("the ball",)),), glossary=False)
    plain = tiny.transcribe(audio, options=tiny.options(beam_size=5))
    shown = tiny.transcribe(audio, options=tiny.options(beam_size=5, vocabulary=thibault))
    assert plain.text.startswith("Kick the ball straight") and shown.text == plain.text, shown.text
    trie = tiny.options(vocabulary=thibault).bias
    assert _earned(thibault, " the ball", tiny.tokenizer, trie) == 0 < _earned(thibault, " Thibault", tiny.tokenizer, trie)


def test_a_second_decode_starts_where_the_first_form_does(tiny) -> None:
    niamh, = cues(Vocabulary((Term("Niamh", 1.0, ("I am",)),)), [("Niamh", "I am")])
    said = " Please ask what I am doing, and if I am late."
    first = SimpleNamespace(text=said, tokens=tuple(tiny.tokenizer.encode(said)))
    assert tiny._lead(first, (niamh,)) == tuple(tiny.tokenizer.encode(" Please ask what"))
    other = SimpleNamespace(text=" Please ask what I'm doing.", tokens=tuple(tiny.tokenizer.encode(" Please ask what I'm doing.")))
    assert tiny._lead(other, (niamh,)) == ()  # heard only in another reading of the beam: decoded again whole


@pytest.fixture
def decodes(tiny, monkeypatch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The glossary and lead of each decode `tiny` makes. With `stand_in` set, a glossed decode's text is read as
    "Vest" for "best": on this clip the prompted model writes "best" too, so the stand-in shows which decode's
    result the final takes (on scripts/vocab the second decodes took the names recalled from 37/52 to 43/52,
    docs/benchmarks.md)."""
    made = Decodes()
    for name in ("decode", "decode_with_fallback"):
        monkeypatch.setattr(tiny.decoder, name, made.wrap(getattr(tiny.decoder, name)))
    return made


class Decodes(list):
    stand_in = False

    def wrap(self, decode):
        def recorded(cross, options):
            self.append((options.glossary, options.lead))
            result = decode(cross, options)
            vest = self.stand_in and options.glossary
            return replace(result, text=result.text.replace(" best", " Vest")) if vest else result
        return recorded


def test_a_final_with_an_ordinary_form_is_decoded_again_with_its_term_as_the_prompt(tiny, eval_dir, decodes) -> None:
    """A long list under `auto` (no glossary): the tree alone, bonus 0, writes "on the best."; "best", a form of
    Vest, has the final decoded again with "Vest" as the prompt, from "best" on, and that decode's result is the
    final where it shows the term."""
    listed = Vocabulary((*read_file(REPO / "scripts" / "vocab" / "terms_en.txt"), Term("Vest", 1.0, ("best",))), bonus=0.0)
    vest, plain = (load_audio(eval_dir / "tts_piper_en" / clip) for clip in (VEST, PLAIN))
    first = tiny.transcribe(vest, options=tiny.options(vocabulary=listed))
    assert first.text == "Press the pants and sew a button on the best."  # the prompted model wrote "best" too
    lead = tuple(tiny.tokenizer.encode(" Press the pants and sew a button on the"))
    assert decodes == [((), ()), (tiny.tokenizer.encode(" Vest."), lead)]
    decodes.clear()
    decodes.stand_in = True
    assert tiny.transcribe(vest, options=tiny.options(vocabulary=listed)).text.endswith("on the Vest.")
    assert len(decodes) == 2
    decodes.clear()
    assert "best" not in tiny.transcribe(plain, options=tiny.options(vocabulary=listed)).text
    assert decodes == [((), ())]  # no form heard: one decode
    decodes.clear()
    unprompted = tiny.options(vocabulary=replace(listed, glossary=False))
    assert tiny.transcribe(vest, options=unprompted).text.endswith("on the best.") and decodes == [((), ())]
    decodes.clear()
    partial = tiny.transcribe(vest, partial=True, options=tiny.options(vocabulary=listed))
    assert partial.text.endswith("on the best.") and decodes == [((), ())]  # a greedy partial is never decoded again


def test_a_term_in_the_glossary_needs_no_second_decode(tiny) -> None:
    """`prompt: true` with more terms than the glossary holds: the forms of those left out are still cues."""
    every = read_file(REPO / "scripts" / "vocab" / "terms_en.txt")  # 172 tokens: Mattermost and 3 more left out
    forms = {"Niamh": ("I am",), "Mattermost": ("matter most",)}
    listed = Vocabulary(tuple(replace(term, sounds_like=forms.get(term.text, ())) for term in every), glossary=True)
    assert [cue.term.text for cue in tiny.options(vocabulary=listed).cues] == ["Mattermost"]
    assert [cue.term.text for cue in tiny.options(vocabulary=replace(listed, glossary="auto")).cues] == ["Niamh", "Mattermost"]
    assert tiny.options(vocabulary=replace(listed, terms=listed.terms[:3], glossary="auto")).cues == ()  # all glossed


def test_a_contraction_and_a_word_capitalised_out_of_one_token_are_ordinary_too(tiny) -> None:
    vocabulary = Vocabulary((Term("Niamh", 1.0, ("I'm", "Niam")), Term("Chidinma", 1.0, ("Gentlemen", "Chidima")),
                             Term("Tadhg", 1.0, ("they\u2019re both",)), Term("Wojciech", 1.0, ("Wab's H",))))
    assert ordinary_forms(vocabulary, tiny.tokenizer) == [("Niamh", "I'm"), ("Chidinma", "Gentlemen"),
                                                          ("Tadhg", "they\u2019re both")]


@pytest.mark.parametrize(("said", "written", "term", "form"), [
    ("This is Siobhan, our new colleague.", "This is Chivon, our new colleague.", "Siobhan", "Chivon"),
    ("The conference in Kaohsiung was great.", "The conference in case then was great.", "Kaohsiung", "case then"),
    ("Have you looked at Nextcloud yet?", "Have you looked at Next Cloud yet?", "Nextcloud", "Next Cloud"),
    ("This is Wojciech, our new colleague.", "This is Wab's H, our new colleague.", "Wojciech", "Wab's H"),
    ("张伟明天去深圳。", "张维明天去深圳。", "张伟", "张维"),
    ("Siobhan presents the Kubernetes plan.", "Chivon presents the two Bernities plan.", "Kubernetes", "two Bernities"),
    ("I had lunch with Siobhan today.", "I had lunch with Siobhan today.", "Siobhan", None),
    ("I had lunch with Siobhan today.", "I had lunch today.", "Siobhan", None),
    ("Have you looked at Grafana yet?", "Have you looked the Grafana yet?", "Grafana", None),
    ("I had lunch with Siobhan today.", "", "Siobhan", None),
    ("Nothing named here.", "Nothing named here.", "Siobhan", None),
    ("Call Krzysztof's phone.", "Call Kristoff's phone.", "Krzysztof", "Kristoff"),
    ("Send it to Krzysztof.", "Send it to Chris Toff. Thank you for watching!", "Krzysztof", "Chris Toff"),
])
def test_the_form_is_what_stands_where_the_term_was_said(said, written, term, form) -> None:
    assert written_for(said, written, term) == form


def test_learning_keeps_the_commonest_forms_and_never_another_term() -> None:
    vocabulary = Vocabulary((Term("Ouagadougou"), Term("Wojciech"), Term("Niamh", 2.0, ("Nyan",))))
    heard = [("We flew to Ouagadougou.", "We flew to Waga Dubu."), ("We flew to Ouagadougou.", "We flew to Waga Dubu."),
             ("We flew to Ouagadougou.", "We flew to Wojciech Dubu."), ("Ask Niamh.", "Ask Naim."),
             ("Ask Niamh.", "Ask Nyan."), ("Ask Niamh.", "Ask naim.")]
    assert learned(vocabulary, heard) == (Term("Ouagadougou", 1.0, ("Waga Dubu",)), Term("Wojciech"),
                                          Term("Niamh", 2.0, ("Nyan", "Naim")))


def test_a_learned_form_the_list_could_not_take_is_left_out() -> None:
    """Each made a file the daemon refused, or read back otherwise, or a crash after every recording was heard."""
    vocabulary = Vocabulary((Term("张伟"), Term("Krzysztof"), Term("Aoife"), Term("Eefa", 1.0, ("Eva",))))
    heard = [("我叫张伟，你好。", "我叫" + "长" * 13 + "，你好。"), ("Call Krzysztof now.", "Call Kris | Toff now."),
             ("Ask Aoife.", "Ask Eva."), ("Ask Aoife.", "Ask eva.")]
    assert learned(vocabulary, heard) == vocabulary.terms


def test_a_chinese_form_longer_than_its_term_is_not_learned() -> None:
    """A character is a syllable: 再打抹院 for 达摩院 took the voice's onset (the term starts the sentence), 负贷被 for
    复旦 the 的 after it. In a list, 再打抹院 made whisper-base drop half of a zh meeting clip that says no term.
    A shorter form (境的 for 景德镇: a syllable lost) and English forms of any length are learned."""
    vocabulary = Vocabulary((Term("达摩院"), Term("复旦"), Term("景德镇"), Term("Antananarivo")))
    heard = [("达摩院今年发布了新的研究报告。", "再打抹院今年发布了新的研究报告。"),
             ("复旦的校园非常漂亮。", "负贷被校园非常漂亮。"), ("复旦的校园非常漂亮。", "负淡的校园非常漂亮。"),
             ("我们打算去景德镇旅游。", "我们打算去境的旅游。"),
             ("We flew from Antananarivo today.", "We flew from Antenan arrival today.")]
    assert learned(vocabulary, heard) == (Term("达摩院"), Term("复旦", 1.0, ("负淡",)), Term("景德镇", 1.0, ("境的",)),
                                          Term("Antananarivo", 1.0, ("Antenan arrival",)))


def test_the_file_is_written_back_with_its_comments() -> None:
    text = "# our room\nKrzysztof  # the CTO\n\nSiobhan\t2\n"
    terms = (Term("Krzysztof", 1.0, ("Kristoff",)), Term("Siobhan", 2.0))
    assert rewritten(text, terms) == "# our room\nKrzysztof\t\tKristoff  # the CTO\n\nSiobhan\t2\n"
    assert rewritten(text.replace("\n", "\r\n"), terms) == rewritten(text, terms).replace("\n", "\r\n")


def test_a_bad_recordings_line_is_named(tmp_path) -> None:
    listing = tmp_path / "recordings.tsv"
    listing.write_text("# name recordings\na.wav\tThis is Siobhan.\nb.wav This is Niamh.\n")
    with pytest.raises(RecordingsError, match="recordings.tsv line 3: expected the recording's path, a TAB"):
        read_recordings(listing)


def test_learn_sounds_like_writes_the_list_with_what_the_model_wrote(tmp_path, int8_model_dir, eval_dir) -> None:
    """tiny.en writes "best" for the Vest said: an ordinary word, kept as a cue and named so."""
    names = tmp_path / "names.txt"
    names.write_text("# room 4\nVest\t\tthe vests  # the speaker\n")  # an ordinary form of the technician's own
    listing = tmp_path / "recordings.tsv"
    listing.write_text(f"{eval_dir / 'tts_piper_en' / VEST}\tSew a button on the Vest.\nmissing.wav\tThe Vest.\n")
    command = [sys.executable, "-m", "edge", "learn-sounds-like", "--vocabulary", str(names), "--recordings",
               str(listing), "--model", str(int8_model_dir), "--threads", "2", "--output", str(names)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1, result.stderr  # the missing recording: told, and the other one still learned from
    assert "missing.wav" in result.stderr
    assert "Vest: sounds like the vests, best; ordinary words, only a cue to decode a final again: the vests, best" \
        in result.stderr, result.stderr
    assert names.read_text() == "# room 4\nVest\t\tthe vests|best  # the speaker\n"


def test_check_config_warns_of_a_form_made_of_ordinary_words_that_can_do_nothing(tmp_path, int8_model_dir) -> None:
    forms = tmp_path / "names.txt"
    forms.write_text("Thibault\t\tthe ball|Teebo\n")
    result = check_config(write_config(tmp_path, int8_model_dir, vocabulary={"file": str(forms)}))
    assert result.returncode == 0 and "OK" in result.stdout and "ordinary words" not in result.stderr  # auto: a cue
    result = check_config(write_config(tmp_path, int8_model_dir, vocabulary={"file": str(forms), "prompt": False}))
    assert result.returncode == 0 and "OK" in result.stdout
    assert 'warning: vocabulary: 1 sounds-like form(s) are or start with ordinary words and do nothing' in result.stderr
    assert '"the ball" (Thibault)' in result.stderr and "Teebo" not in result.stderr
