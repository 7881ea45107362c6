"""Text that a screen and an app can use, whatever model family wrote it.

Chinese: simplified characters only (OpenCC's t2s tables: Whisper often
writes traditional), full-width punctuation after Chinese text, and no
spaces between Han characters, while embedded English words keep theirs
("我们用 Kubernetes 部署").
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

# CJK ideographs (basic, extension A, compatibility, extensions B-F), CJK punctuation and full-width forms
CJK_CHARS = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
_HAN = re.compile(f"[{CJK_CHARS}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{CJK_CHARS}])\\s+(?=[{CJK_CHARS}])")
# ASCII punctuation right after a Han character, as whisper-base often writes it in Chinese
_FULL_WIDTH = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_ASCII_AFTER_HAN = re.compile("(?<=[\u3400-\u9fff])(\\.{2,}|…+|[,.?!:;])\\s*")  # an ellipsis first: "好的..."
SIMPLIFIED = ("zh",)  # languages shown in simplified characters (Cantonese keeps what the model writes)
UNSPACED = ("zh", "yue", "ja")  # languages written without spaces between Han characters


@lru_cache(maxsize=2)
def _opencc(conversion: str) -> Callable[[str], str]:
    """OpenCC's converter for "t2s" or "s2t", loaded once per conversion."""
    import opencc

    return opencc.OpenCC(conversion).convert


def to_traditional(text: str) -> str:
    """The traditional spelling of a simplified term, which is what the model often writes."""
    return _opencc("s2t")(text) if has_han(text) else text


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


def to_simplified(text: str) -> str:
    return _opencc("t2s")(text) if has_han(text) else text


def join_cjk(text: str) -> str:
    """Remove the spaces a model puts between CJK characters; spaces next to Latin words stay."""
    return _SPACE_BETWEEN_CJK.sub("", text)


def full_width_punctuation(text: str) -> str:
    """"好的, 走吧..." -> "好的，走吧……": Chinese punctuation after Chinese text; "3.5" and "OK, fine" stay."""
    return _ASCII_AFTER_HAN.sub(lambda m: _FULL_WIDTH.get(m.group(1), "……"), text)


def tidy(text: str, language: str) -> str:
    """The displayed form of a transcript in `language`."""
    if language in SIMPLIFIED:
        text = full_width_punctuation(to_simplified(text))
    if language in UNSPACED:
        text = join_cjk(text)
    return text
