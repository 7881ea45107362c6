"""The error hierarchy every stage shares, and the one way to show an error in one line.

`StartupError` is anything that stops `edge-asr run` (or another command) from
starting: a missing model, an absent device, a busy socket. Its message is
already written for the person reading the journal, so callers print it as is.
"""

from __future__ import annotations

MAX_LINE = 200


def one_line(exc: BaseException, limit: int = MAX_LINE) -> str:
    """An exception as one short line: whitespace folded, the type when there is no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class StartupError(Exception):
    """A problem that keeps a command from starting; str() is the whole one-line message."""


class BackendError(StartupError):
    """An accelerator failed (at start-up or during inference); the caller may retry on CPU."""


class ModelError(StartupError):
    """The model directory is missing, incomplete or unreadable."""
