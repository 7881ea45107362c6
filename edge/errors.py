"""The error hierarchy every stage shares, and the one way to show an error in one line.

`StartupError` is anything that stops `edge-asr run` (or another command) from
starting: a missing model, an absent device, a busy socket. Its message is
already written for the person reading the journal, so callers print it as is.
"""

from __future__ import annotations

import unicodedata

MAX_LINE = 200
INVISIBLE = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format (soft hyphen, zero-width space, BOM), lone surrogates


def one_line(exc: BaseException, limit: int = MAX_LINE) -> str:
    """An exception as one short line: whitespace folded, the type when there is no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def codepoint(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def visible(text: str) -> str:
    """`text` as a message may quote it: what a terminal does not show (controls, format characters such as
    a soft hyphen, spaces other than the plain one, like a pasted non-breaking space) as \\uXXXX."""
    return "".join(codepoint(ch) if unicodedata.category(ch) in INVISIBLE or (ch.isspace() and ch != " ") else ch
                   for ch in text)


class StartupError(Exception):
    """A problem that keeps a command from starting; str() is the whole one-line message."""


class BackendError(StartupError):
    """An accelerator failed (at start-up or during inference); the caller may retry on CPU."""


class ModelError(StartupError):
    """The model directory is missing, incomplete or unreadable."""


class SetupError(StartupError):
    """A start-up problem that only a change of the config or the unit can mend (a restart cannot):
    exit 78, which the unit's RestartPreventExitStatus= keeps from a restart loop."""


class AccessError(BackendError, SetupError):
    """An accelerator this process may not use (a cache directory it may not write): `auto` goes on to the
    next backend, and under `inference.strict` it is exit 78, since a restart cannot mend it."""
