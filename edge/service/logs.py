"""Logging to journald when run by systemd, to stderr otherwise.

Under systemd the journal handler keeps priorities and adds structured fields
(logger name, code location), which plain stderr capture would lose; journald
adds its own timestamps, so the journal format has none.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
IDENTIFIER = "edge-asr"

_installed: logging.Handler | None = None


def under_systemd() -> bool:
    """systemd sets JOURNAL_STREAM (stderr goes to journald) or INVOCATION_ID for its services."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def setup_logging(level: str) -> logging.Handler:
    """Install the one root handler (replacing an earlier one of ours) and set the level."""
    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    _installed = _journal_handler() if under_systemd() else _stderr_handler()
    root.addHandler(_installed)
    set_level(level)
    return _installed


def set_level(level: str) -> None:
    """Change the root level (on SIGHUP); level is one of log.level's choices."""
    try:
        logging.getLogger().setLevel(LEVELS[level])
    except KeyError:
        raise ValueError(f"log.level: {level!r} is not one of {', '.join(LEVELS)}") from None


def _journal_handler() -> logging.Handler:
    from systemd.journal import JournalHandler

    handler = JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
