"""Mandarin and other languages on whisper-base: language tokens, detection, simplified Chinese, config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import pytest

from edge.asr.base import Transcript
from edge.asr.text import as_written, tidy, to_simplified
from edge.asr.whisper.bias import spellings
from edge.asr.whisper.recognizer import Recognizer
from edge.asr.whisper.tokenizer import Tokenizer
from edge.audio.audiofile import load_audio
from edge.config import ConfigError, parse_config, restart_needed
from edge.vocabulary import Term, Vocabulary
from tests.conftest import REPO, _built_model, load_manifest
from tests.test_daemon import Subscriber, finish, start_daemon, write_config


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    return _built_model("whisper-base-int8")


@pytest.fixture(scope="module")
def base(base_model_dir: Path) -> Recognizer:
    return Recognizer.from_dir(base_model_dir, threads=2)


def test_prompt_auto_is_for_english_speech_only(base: Recognizer) -> None:
    """The glossary costs whisper-base 1.8x the decode time of finals already over their latency
    target: auto leaves it out unless the speech is known to be English (prompt: true gives it
    in any language)."""
    names = Vocabulary((Term("Siobhan"), Term("张伟")))
    assert base.options(language="en", vocabulary=names).glossary != ()
    assert base.options(language="zh", vocabulary=names).glossary == ()
    assert base.options(language="auto", vocabulary=names).glossary == ()
    assert base.options(language="zh", vocabulary=Vocabulary(names.terms, glossary=True)).glossary != ()


def cjk_chars(text: str) -> str:
    """The eval README's rule: simplified, no punctuation, no spaces."""
    return "".join(ch for ch in to_simplified(text).lower() if ch.isalnum())


def cer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.cer("".join(cjk_chars(r) for r in references), "".join(cjk_chars(h) for h in hypotheses))


def shown_as_chinese(text: str) -> bool:
    """Simplified only, and no space between two Han characters."""
    return to_simplified(text) == text and tidy(text, "zh") == text


# --- text ----------------------------------------------------------------------------------


def test_chinese_is_shown_simplified_without_spaces_between_han() -> None:
    assert tidy("這是一個 測試，說話", "zh") == "这是一个测试，说话"
    assert tidy("我们用 Kubernetes 部署 到 深圳", "zh") == "我们用 Kubernetes 部署到深圳"
    assert tidy("2024年3月,股价涨了3.5%", "zh") == "2024年3月，股价涨了3.5%"  # numbers stay as written
    assert tidy("他说: 好的. OK, fine.", "zh") == "他说：好的。OK, fine."
    assert tidy("好的... 走吧…", "zh") == "好的……走吧……"  # an ellipsis, not "。.."
    assert tidy("Hello world", "en") == "Hello world"
    assert tidy("這是", "yue") == "這是"  # Cantonese keeps the model's characters


def test_zhe_written_taiwan_style_is_simplified_and_zhu_words_keep_their_character() -> None:
    # OpenCC's t2s keeps every 著 (it is a simplified character too); tw2s would make 土著 and 原著 wrong.
    assert tidy("他看著我，睡著了，接著說", "zh") == "他看着我，睡着了，接着说"
    assert tidy("著手準備著陸", "zh") == "着手准备着陆"
    assert tidy("著名作家的原著效果顯著，土著居民", "zh") == "著名作家的原著效果显著，土著居民"
    # a particle 着 before a word that a written 著 word starts with (review: all five kept 著)
    spoken = ["他聽著有道理", "他拿著書走了", "我們配合著做", "他大著膽子說", "他看著作業", "莫名著急", "場所著火了",
              "叫著名字", "他看著名單", "她穿著名牌"]
    assert [tidy(text, "zh") for text in spoken] == ["他听着有道理", "他拿着书走了", "我们配合着做", "他大着胆子说",
                                                     "他看着作业", "莫名着急", "场所着火了", "叫着名字", "他看着名单",
                                                     "她穿着名牌"]
    # ... and the 著 words around them stay (a second review: the first fix turned these into 着)
    written = ["他是很著名的，他的著作，一部名著", "著名单口相声演员", "著名字画", "经济显著落后", "原著手稿", "名著装帧",
               "一个著名单位"]
    assert [tidy(text, "zh") for text in written] == written
    # Han characters in another language's text are Chinese words, in the box's script (review: kept as written),
    # except in Japanese and Korean, whose kanji and hanja are their own
    assert tidy("Please call 王經理 tomorrow", "en") == "Please call 王经理 tomorrow"
    assert tidy("Please call 王经理 tomorrow", "en", "taiwan") == "Please call 王經理 tomorrow"
    assert tidy("東京の會議", "ja") == "東京の會議" and tidy("大韓民國", "ko") == "大韓民國"
    assert tidy("佢哋食飯, 好唔好?", "yue", "hongkong") == "佢哋食飯，好唔好？"  # as zh text's marks are


def test_each_mark_of_a_punctuation_run_after_chinese_is_full_width() -> None:
    assert tidy("你好!! 什么?!", "zh") == "你好！！什么？！"
    assert tidy("好的. 走吧", "zh") == "好的。走吧" and tidy("部署在.NET上", "zh") == "部署在.NET上"


def test_chinese_is_written_in_the_chosen_script_from_whatever_mix_the_model_wrote() -> None:
    mixed = "我们用软件部署到台灣, 裡面的头发, 看著台积电."  # both scripts, as the model writes them
    assert tidy(mixed, "zh") == "我们用软件部署到台湾，里面的头发，看着台积电。"
    assert tidy(mixed, "zh", "traditional") == "我們用軟件部署到臺灣，裏面的頭髮，看着臺積電。"
    assert tidy(mixed, "zh", "taiwan") == "我們用軟件部署到臺灣，裡面的頭髮，看著臺積電。"  # characters, not words: 軟件
    assert tidy(mixed, "zh", "hongkong") == "我們用軟件部署到台灣，裏面的頭髮，看着台積電。"
    assert tidy("佢哋喺度食紧饭", "yue", "hongkong") == "佢哋喺度食緊飯"
    assert tidy("佢哋喺度食紧饭", "yue") == "佢哋喺度食紧饭"  # simplified: Cantonese as the model wrote it
    assert tidy("Software, OK.", "en", "taiwan") == "Software, OK."


def test_a_term_written_in_traditional_characters_is_shown_as_written_in_a_traditional_script() -> None:
    written = as_written(["台積電", "台积电", "台北", "張偉", "Kubernetes"], "taiwan")
    assert written == (("臺積電", "台積電"),)  # 台积电 is simplified, 台北 both (shown 臺北), 張偉 the same in s2tw
    assert tidy("我在台积电上班", "zh", "taiwan", written) == "我在台積電上班"  # not 臺積電
    assert tidy("我在臺積電上班", "zh", "hongkong", as_written(["台積電"], "hongkong")) == "我在台積電上班"
    assert as_written(["台積電"], "simplified") == () and tidy("我在台積電上班", "zh") == "我在台积电上班"


def test_a_chinese_term_is_biased_in_both_scripts_however_it_is_written() -> None:
    assert {"台積電", "台积电", "臺積電"} <= {form.strip() for form in spellings("台積電")}
    assert {"软件", "軟件"} <= {form.strip() for form in spellings("軟件")}


def test_a_timestamp_inside_a_character_moves_its_first_tokens_to_the_next_segment(base: Recognizer) -> None:
    tok = base.tokenizer
    ids = tok.encode("这个翡翠很漂亮")  # 翡 and 翠 are two tokens each
    split = next(k for k in range(1, len(ids)) if tok.cut_character(ids[:k]))
    stamp = tok.timestamp_begin
    segments, _ = base._split((stamp, *ids[:split], stamp + 50, stamp + 50, *ids[split:], stamp + 100), 0.0, 3000)
    assert "".join(text for _, _, text in segments) == "这个翡翠很漂亮"  # before: "这个" + "\ufffd翠很漂亮"
    assert [start for start, _, _ in segments] == [0.0, 1.0]


# --- tokenizer -----------------------------------------------------------------------------


def test_multilingual_tokenizer_knows_its_languages(base_model_dir: Path, int8_model_dir: Path) -> None:
    tok = Tokenizer.from_dir(base_model_dir)
    manifest = json.loads((base_model_dir / "manifest.json").read_text())
    assert tok.languages == tuple(manifest["languages"]) and len(tok.languages) == 99
    assert tok.tokens[tok.language_token("zh")] == "<|zh|>"
    assert [tok.tokens[t] for t in tok.start_sequence("zh")] == ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>"]
    english = Tokenizer.from_dir(int8_model_dir)
    assert not english.multilingual and english.start_sequence("en") == (english.sot,)


def test_prompt_text_is_encoded_with_the_models_bpe(base_model_dir: Path) -> None:
    tok = Tokenizer.from_dir(base_model_dir)
    ids = tok.encode("以下是普通话的句子。")
    assert ids and tok.decode(list(ids)) == "以下是普通话的句子。"


# --- recognition ---------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh", "auto"])
def test_mandarin_comes_out_simplified_and_detected(base: Recognizer, eval_dir: Path, language: str) -> None:
    rows = load_manifest("zh")[:8]
    options = base.options(beam_size=5, language=language)
    results = [base.transcribe(load_audio(r["path"]), options=options) for r in rows]
    assert {t.language for t in results} == {"zh"}
    assert all(shown_as_chinese(t.text) for t in results), [t.text for t in results]
    # measured 0.27 on these 8 (the hardest of the set; 16.5 % over all 30): English decoding would be ~1.0
    assert cer([r["text"] for r in rows], [t.text for t in results]) < 0.32


@pytest.mark.parametrize("language", ["zh", "auto", "en"])
@pytest.mark.parametrize("partial", [False, True])
def test_nonspeech_stays_empty_in_every_language_setting(base: Recognizer, eval_dir: Path, language: str,
                                                          partial: bool) -> None:
    options = base.options(beam_size=5, language=language)
    texts = {r["audio"]: base.transcribe(load_audio(r["path"]), partial=partial, options=options).text
             for r in load_manifest("nonspeech")}
    assert texts == {name: "" for name in texts}


def test_an_unknown_language_is_refused(base: Recognizer) -> None:
    with pytest.raises(ValueError, match="'xx' is not one this model knows"):
        base.options(language="xx")
    with pytest.raises(ValueError, match="script 'big5' is not one of: simplified, traditional, taiwan, hongkong"):
        base.options(script="big5")


def test_the_options_carry_the_terms_to_show_as_written(base: Recognizer) -> None:
    vocabulary = Vocabulary((Term("台積電"), Term("深圳")), source="config")
    assert base.options(vocabulary=vocabulary, script="taiwan").written == (("臺積電", "台積電"),)
    assert base.options(vocabulary=vocabulary).written == ()


def test_the_chosen_script_reaches_partials_finals_and_long_form_segments(base: Recognizer, eval_dir: Path) -> None:
    plain, taiwan = base.options(beam_size=2, language="zh"), base.options(beam_size=2, language="zh", script="taiwan")
    converted = 0
    for row in load_manifest("zh")[:3]:
        audio = load_audio(row["path"])
        for partial in (False, True):
            simplified = base.transcribe(audio, partial=partial, options=plain)
            traditional = base.transcribe(audio, partial=partial, options=taiwan)
            assert shown_as_chinese(simplified.text) and simplified.tokens == traditional.tokens
            assert traditional.text == tidy(simplified.text, "zh", "taiwan")
            converted += traditional.text != simplified.text
        simplified, traditional = base.transcribe_long(audio, options=plain), base.transcribe_long(audio, options=taiwan)
        assert [s for _, _, s in traditional.segments] == [tidy(s, "zh", "taiwan") for _, _, s in simplified.segments]
    assert converted >= 4, converted  # a sentence without a character that differs is rare: 6 of 6 measured

def test_an_empty_transcript_keeps_its_language() -> None:
    assert Transcript.empty(0.9, "zh").language == "zh"


# --- config and CLI ------------------------------------------------------------------------


def test_model_language_is_checked_against_the_manifest(tmp_path: Path, base_model_dir: Path,
                                                         int8_model_dir: Path) -> None:
    with pytest.raises(ConfigError) as wrong:
        parse_config({"model": {"path": str(base_model_dir), "language": "cn"}}, base_dir=tmp_path)
    assert "model.language: \"cn\" is not a language of whisper-base-int8; did you mean 'zh'?" in str(wrong.value)
    with pytest.raises(ConfigError) as cantonese:  # base has no yue code, and writes Cantonese as Chinese
        parse_config({"model": {"path": str(base_model_dir), "language": "yue"}}, base_dir=tmp_path)
    assert "\"yue\" is not a language of whisper-base-int8; did you mean 'zh'?" in str(cantonese.value)
    with pytest.raises(ConfigError) as english_only:
        parse_config({"model": {"path": str(int8_model_dir), "language": "zh"}}, base_dir=tmp_path)
    assert "an English-only model (use en or auto; for Mandarin and other languages set model.path to" in str(english_only.value)
    for code in ("auto", "en"):
        parse_config({"model": {"path": str(int8_model_dir), "language": code}}, base_dir=tmp_path)
    assert parse_config({"model": {"path": str(base_model_dir), "language": "zh"}}, base_dir=tmp_path).model.language == "zh"


def test_a_language_code_that_names_a_script_points_to_chinese_script(tmp_path: Path, base_model_dir: Path) -> None:
    for code, script in (("zh-TW", "taiwan"), ("zh-hk", "hongkong"), ("zh-Hant", "traditional"), ("zh_hant", "traditional"),
                         ("zh-Hant-TW", "taiwan"), ("zh-Hant-HK", "hongkong")):
        with pytest.raises(ConfigError) as wrong:
            parse_config({"model": {"path": str(base_model_dir), "language": code}}, base_dir=tmp_path)
        assert (f"model.language: \"{code}\" is not a language of whisper-base-int8; did you mean 'zh'? "
                f"(with model.chinese_script: {script} for its characters)") in str(wrong.value)
    for code in ("zh-CN", "zh_Hans", "en-GB"):  # a region or script part that is no script of its own: the code alone
        with pytest.raises(ConfigError) as plain:
            parse_config({"model": {"path": str(base_model_dir), "language": code}}, base_dir=tmp_path)
        assert f"did you mean '{code[:2].lower()}'?; expected" in str(plain.value)
    with pytest.raises(ConfigError) as bad:
        parse_config({"model": {"path": str(base_model_dir), "chinese_script": "zh-tw"}}, base_dir=tmp_path)
    assert str(bad.value).endswith(
        'model.chinese_script: "zh-tw" is not one of the choices; expected one of simplified, traditional, taiwan, hongkong')
    config = parse_config({"model": {"path": str(base_model_dir), "language": "zh", "chinese_script": "taiwan"}},
                          base_dir=tmp_path)
    assert config.model.chinese_script == "taiwan"


def test_model_language_is_live_unless_the_model_changes(tmp_path: Path, base_model_dir: Path,
                                                          int8_model_dir: Path) -> None:
    def config(path: Path, language: str, script: str = "simplified"):
        return parse_config({"model": {"path": str(path), "language": language, "chinese_script": script}},
                            base_dir=tmp_path)

    assert restart_needed(config(base_model_dir, "zh"), config(base_model_dir, "auto", "hongkong")) == []
    assert restart_needed(config(base_model_dir, "zh"), config(int8_model_dir, "en", "taiwan")) == \
        ["model.path", "model.language", "model.chinese_script"]


def test_transcribe_language_flag(base_model_dir: Path, eval_dir: Path) -> None:
    clip = load_manifest("zh")[1]
    run = subprocess.run([sys.executable, "-m", "edge", "transcribe", "--model", str(base_model_dir), "--language",
                          "zh", "--format", "jsonl", str(clip["path"])], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    # Within one character of "换一首歌": int8 with beam 5 wrote "坏一首歌" on an AVX2-only AMD EPYC (2026-12-07;
    # greedy and fp32 "换"), exact on VNNI CPUs. The flag ignored (English, or no Chinese) scores 1.0.
    assert record["language"] == "zh" and cer([clip["text"]], [record["text"]]) <= 0.25, record["text"]
    bad = subprocess.run([sys.executable, "-m", "edge", "transcribe", "--model", str(base_model_dir), "--language",
                          "cn", str(clip["path"])], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "edge-asr transcribe: 'cn' is not a language of whisper-base-int8; did you mean 'zh'?"
    taiwan = subprocess.run([sys.executable, "-m", "edge", "transcribe", "--model", str(base_model_dir), "--language",
                             "zh", "--chinese-script", "taiwan", str(clip["path"])], cwd=REPO, capture_output=True, text=True)
    assert taiwan.returncode == 0 and taiwan.stdout.strip() == tidy(record["text"], "zh", "taiwan"), taiwan.stderr
    hint = subprocess.run([sys.executable, "-m", "edge", "transcribe", "--model", str(base_model_dir), "--language",
                           "zh-tw", str(clip["path"])], cwd=REPO, capture_output=True, text=True)
    assert hint.stderr.strip().endswith("did you mean 'zh'? (with --chinese-script: taiwan for its characters)")


# --- the daemon ----------------------------------------------------------------------------


def test_daemon_streams_mandarin_with_language_and_reloads_it_live(tmp_path: Path, base_model_dir: Path,
                                                                   eval_dir: Path) -> None:
    row = load_manifest("longform_zh")[0]
    config = write_config(tmp_path, base_model_dir, model={"language": "zh"})
    daemon = start_daemon(config, f"file:{row['path']}", "--pace", "fast")
    subscriber = Subscriber(tmp_path / "asr.sock")
    deadline = time.monotonic() + 300  # the clip decodes in about a minute on 2 cores
    try:
        while not subscriber.of("status") or subscriber.of("status")[-1].get("state") != "file ended" \
                or subscriber.of("status")[-1].get("pending_finals"):
            subscriber.request_status()
            time.sleep(0.5)
            assert daemon.poll() is None and time.monotonic() < deadline, subscriber.of("status")[-1:]
        write_config(tmp_path, base_model_dir, model={"language": "auto", "chinese_script": "taiwan"})
        daemon.send_signal(signal.SIGHUP)
        reloaded = subscriber.wait_for(lambda e: e["type"] == "status" and "reload" in e.get("message", ""), 30)
        assert reloaded["language"] == "auto" and reloaded["chinese_script"] == "taiwan"
        assert "needs_restart" not in reloaded
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 30)
    assert code == 0, err
    finals = subscriber.of("final")
    partials = subscriber.of("partial")
    assert finals and {f["language"] for f in finals} == {"zh"}
    assert all(shown_as_chinese(e["text"]) for e in finals + partials)
    assert all(p["text"].startswith(p["stable_text"]) for p in partials)
    assert cer([row["text"]], [f["text"] for f in finals]) < 0.25  # measured: docs/benchmarks.md


# --- streaming settings that follow the model ----------------------------------------------


def test_auto_streaming_keys_take_the_models_tuning(tmp_path: Path, base_model_dir: Path, int8_model_dir: Path) -> None:
    from edge.manifest import Tuning, tuning
    from edge.stream.session import StreamSettings
    from edge.vad.endpointer import EndpointSettings

    assert tuning(int8_model_dir) == Tuning(final_beam=5, partial_interval_ms=500, max_utterance_s=20, context=True)
    base_tuning = tuning(base_model_dir)
    assert base_tuning == Tuning(final_beam=2, partial_interval_ms=1000, max_utterance_s=12, context=False)
    cfg = parse_config({"model": {"path": str(base_model_dir)}}, base_dir=tmp_path)
    assert StreamSettings.from_config(cfg.stream, "zh", base_tuning) == StreamSettings(1000, 2, "zh", paced=True)
    assert EndpointSettings.from_config(cfg.vad, base_tuning).max_utterance_s == 12
    pinned = parse_config({"stream": {"final_beam": 4, "partial_interval_ms": 700}, "vad": {"max_utterance_s": 7}},
                          base_dir=REPO)
    pinned_stream = StreamSettings.from_config(pinned.stream, "auto", base_tuning)
    assert (pinned_stream.final_beam, pinned_stream.partial_interval_ms, pinned_stream.paced) == (4, 700, False)
    assert EndpointSettings.from_config(pinned.vad, base_tuning).max_utterance_s == 7  # the model's is 12
    assert tuning(tmp_path) == Tuning()  # no manifest: the documented defaults


def test_a_bad_streaming_value_names_auto_as_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config({"stream": {"final_beam": 11}}, base_dir=REPO)
    assert 'stream.final_beam: 11' in str(bad.value) and '"auto"' in str(bad.value)
