"""Which languages a model directory knows, and a clear message for a code it does not.

Shared by the config schema (`model.language`) and `edge-asr transcribe
--language`, so a technician gets the same words from both. Only reads the
model's manifest.json: no model is loaded to check a config.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from edge import manifest

AUTO = "auto"
# What people type for a language instead of Whisper's code (mostly ISO 639-1); a tag's region or
# script part ("zh-TW", "en_US", "zh-Hant-HK") is dropped first.
ALIASES = {
    "cn": "zh", "cmn": "zh", "chinese": "zh", "mandarin": "zh", "putonghua": "zh", "cantonese": "yue",
    "english": "en", "eng": "en", "jp": "ja", "japanese": "ja", "kr": "ko", "korean": "ko", "german": "de",
    "french": "fr", "spanish": "es", "russian": "ru", "vn": "vi", "vietnamese": "vi", "thai": "th",
}  # fmt: skip
# A tag's part that names how Chinese is written: a key of its own (model.chinese_script)
SCRIPT_PARTS = {"tw": "taiwan", "hk": "hongkong", "mo": "hongkong", "hant": "traditional"}
MANDARIN_MODEL = "models/whisper-base-int8"
NEAREST = {"yue": "zh"}  # whisper-base has no Cantonese code and writes Cantonese as Chinese (yue set: CER, docs)


class LanguageError(ValueError):
    """A language code the model does not know; `reason` is the message after the quoted code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code!r} {reason}")
        self.reason = reason


def check_language(code: str, model_dir: Path, model_key: str = "model.path",
                   script_key: str = "model.chinese_script") -> str:
    """`code` if the model knows it (or it is `auto`); LanguageError naming the model and the fix otherwise.
    `model_key`, `script_key`: what chooses the model and the Chinese script where the fix is given
    (the config's keys, or a command's --model and --chinese-script)."""
    if code == AUTO:
        return code
    name, known = manifest.languages(model_dir)
    if code in known:
        return code
    raise LanguageError(code, problem(code, name, known, model_key, script_key))


def problem(code: str, model_name: str, known: tuple[str, ...], model_key: str = "model.path",
            script_key: str = "model.chinese_script") -> str:
    """Why `code` does not fit, and the fix: a close code, or the list."""
    if tuple(known) == ("en",):
        return (f"is not a language of {model_name}, an English-only model (use en or auto; "
                f"for Mandarin and other languages set {model_key} to {MANDARIN_MODEL})")
    guess = _guess(code, known)
    hint = f"did you mean {guess!r}?" if guess else f"use auto or one of: {', '.join(known)}"
    script = _script_in(code)
    if guess and script:
        hint += f" (with {script_key}: {script} for its characters)"
    return f"is not a language of {model_name}; {hint}"


def _parts(code: str) -> list[str]:
    """"zh_Hant-TW" -> ["zh", "hant", "tw"]."""
    return code.strip().lower().replace("_", "-").split("-")


def _script_in(code: str) -> str | None:
    """The chinese_script a Chinese tag names ("zh-TW": taiwan), or None."""
    language, *rest = _parts(code)
    if language not in ("zh", "yue", "cmn"):
        return None
    return next((SCRIPT_PARTS[part] for part in reversed(rest) if part in SCRIPT_PARTS), None)


def _guess(code: str, known: tuple[str, ...]) -> str | None:
    folded = code.strip().lower()
    if folded in known:
        return folded
    head = _parts(code)[0]
    alias = ALIASES.get(head, head)
    if alias in known:
        return alias
    if NEAREST.get(alias) in known:
        return NEAREST[alias]
    close = difflib.get_close_matches(folded, known, n=1, cutoff=0.6)
    return close[0] if close else None
