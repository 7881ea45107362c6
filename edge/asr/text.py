"""Text that a screen and an app can use, whatever model family wrote it.

Chinese: one script throughout (Whisper mixes simplified and traditional
characters; OpenCC's tables map them): simplified by default, or the
traditional standard a box's `model.chinese_script` names; full-width
punctuation after Chinese text, and no spaces between Han characters, while
embedded English words keep theirs ("我们用 Kubernetes 部署").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Iterable

# CJK ideographs (basic, extension A, compatibility, extensions B-F), CJK punctuation and full-width forms
CJK_CHARS = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
_HAN = re.compile(f"[{CJK_CHARS}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{CJK_CHARS}])\\s+(?=[{CJK_CHARS}])")
_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# ASCII punctuation right after a Han character, as whisper-base often writes it in Chinese
_FULL_WIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_ASCII_AFTER_HAN = re.compile(f"(?<=[{_IDEOGRAPHS}])(\\.{{2,}}|…+|[,.?!:;]+)\\s*")  # an ellipsis first: "好的..."
# 著 is a simplified character too (著名, 显著), so OpenCC's t2s keeps every one, and Whisper writes
# Taiwan-style 看著, 睡著, 接著 for 着. OpenCC's tw2s maps those, but also makes 土著 and 原著 (and a
# simplified 显著) wrong. 著 stays where simplified Chinese writes it: these words (zhù). Left out are
# the written words that spoken 着 meets more often: 著有 (听着有道理), 著书 (拿着书), 合著 (配合着),
# 大著 (大着胆子), 新著, 著文.
ZHU_WORDS = frozenset("著名 著作 著称 著述 著录 著者 显著 昭著 卓著 土著 名著 原著 巨著 专著 论著 "
                      "编著 译著 遗著 拙著 杰著 所著".split())
# ... and where a 着 runs into the start of one: always before 作业 (著作 + 业), and after a verb before
# 名字, 名单, 名牌 (叫着名字, 看着名单, 穿着名牌; 著名单位, 一个著名字画 stay).
ZHE_BEFORE = frozenset({"作业"})
ZHE_AFTER_VERB = frozenset({"名字", "名单", "名牌"})
VERBS_BEFORE_ZHE = frozenset("叫喊念读写看听拿穿戴填签记带")
# 着 verbs, which win over a 著 word before them (莫名着急, 场所着火; a 著 noun right before them is rare)
ZHE_VERBS = frozenset({"著急", "著火", "著迷", "著凉"})
SIMPLIFIED = ("zh",)  # languages shown in simplified characters (Cantonese keeps what the model writes)
CHINESE = ("zh", "yue")
OWN_HAN = ("ja", "ko")  # languages whose Han characters are their own writing, left as the model wrote them
# model.chinese_script: the OpenCC conversion from simplified. Characters only: s2twp would also
# swap words (软件 -> 軟體), which is rewriting what was said, not spelling it.
SCRIPTS = {"simplified": "", "traditional": "s2t", "taiwan": "s2tw", "hongkong": "s2hk"}
UNSPACED = ("zh", "yue", "ja")  # languages written without spaces between Han characters


@lru_cache(maxsize=4)
def _opencc(conversion: str) -> Callable[[str], str]:
    """OpenCC's converter for one conversion ("t2s", "s2t", ...), loaded once."""
    import opencc

    return opencc.OpenCC(conversion).convert


def to_traditional(text: str) -> str:
    """The traditional spelling of a simplified term, which the model often writes."""
    return _opencc("s2t")(text) if has_han(text) else text


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


def to_simplified(text: str) -> str:
    return _zhe(_opencc("t2s")(text)) if has_han(text) else text


def _zhe(text: str) -> str:
    """"看著我" -> "看着我", "著名" stays (ZHU_WORDS), "看著作业" -> "看着作业" (ZHE_BEFORE)."""
    def spelled(match: re.Match[str]) -> str:
        at = match.start()
        before, after = text[at - 1 : at], text[at + 1 : at + 3]  # text[-1:0] is "": nothing before
        if text[at : at + 2] in ZHE_VERBS:
            return "着"
        if before + "著" in ZHU_WORDS:  # 显著落后, 原著手稿, 名著装帧
            return "著"
        if after in ZHE_BEFORE or (after in ZHE_AFTER_VERB and before in VERBS_BEFORE_ZHE):
            return "着"
        return "著" if text[at : at + 2] in ZHU_WORDS else "着"

    return re.sub("著", spelled, text)


def join_cjk(text: str) -> str:
    """Remove the spaces a model puts between CJK characters; spaces next to Latin words stay."""
    return _SPACE_BETWEEN_CJK.sub("", text)


def full_width_punctuation(text: str) -> str:
    """"好的, 走吧..." -> "好的，走吧……": Chinese punctuation after Chinese text; "3.5" and "OK, fine" stay."""
    return _ASCII_AFTER_HAN.sub(_full_width, text)


def _full_width(match: re.Match[str]) -> str:
    """Each mark of a run: "?!" -> "？！"; two or more dots, or "…", are one ellipsis; "在.NET上" stays."""
    run, after = match.group(1), match.string[match.end(1) : match.end(1) + 1]
    if run == "." and after.isascii() and after.isalnum():
        return match.group(0)
    return "……" if run[:2] == ".." or run[0] == "…" else "".join(_FULL_WIDTH[mark] for mark in run)


def as_written(terms: Iterable[str], script: str) -> tuple[tuple[str, str], ...]:
    """(shown, written) for each vocabulary term written in traditional characters that `script`
    would show otherwise, longest first: a Taiwan list's 台積電 stays as written (s2tw makes 臺積電).
    A simplified box shows every term simplified."""
    if not SCRIPTS[script]:
        return ()
    pairs = {(shown, term) for term in terms
             if to_simplified(term) != term and (shown := tidy(term, "zh", script)) != term}
    return tuple(sorted(pairs, key=lambda pair: (-len(pair[0]), pair)))


def spellings(text: str, script: str, written: tuple[tuple[str, str], ...] = ()) -> tuple[str, ...]:
    """`text` as a box showing Chinese in `script` shows it, then the other ways it may be typed: a
    Chinese text in every script (a sounds-like form typed simplified on a Taiwan box is still its form)."""
    if not has_han(text):
        return (text,)
    return tuple(dict.fromkeys((tidy(text, "zh", script, written), text, *(tidy(text, "zh", other) for other in SCRIPTS))))


def tidy(text: str, language: str, script: str = "simplified", written: tuple[tuple[str, str], ...] = ()) -> str:
    """The displayed form of a transcript in `language`; Chinese in `script` (a key of SCRIPTS), with
    the vocabulary's terms as `written` (from `as_written`)."""
    chinese = language in CHINESE or (language not in OWN_HAN and has_han(text))
    if language in SIMPLIFIED or (chinese and language not in CHINESE):  # and a Chinese name in English
        text = to_simplified(text)
    if language in CHINESE:  # Cantonese's ASCII marks after Han text too (its characters stay the model's)
        text = full_width_punctuation(text)
    if chinese and SCRIPTS[script] and has_han(text):
        text = _opencc(SCRIPTS[script])(text)
        for shown, term in written:
            text = text.replace(shown, term)
    if language in UNSPACED:
        text = join_cjk(text)
    return text
