"""Logging to journald when run by systemd, to stderr otherwise.

Under systemd the journal handler keeps priorities and adds structured fields
(logger name, code location), which plain stderr capture would lose; journald
adds its own timestamps, so the journal format has none. Each long-running command logs under its
own identifier, the one its unit's SyslogIdentifier= names, so `journalctl -t edge-asr-mqtt` finds
the bridge's lines and only those.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading

from edge.files import stderr_is_journal

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
IDENTIFIER = "edge-asr"

_installed: logging.Handler | None = None


def setup_logging(level: str, identifier: str = IDENTIFIER) -> logging.Handler:
    """Install the one root handler (replacing an earlier one of ours), set the level, and
    report crashes of any thread through it."""
    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    # the journal only where stderr is its stream: a terminal that inherited systemd's variables keeps its lines
    _installed = _journal_handler(identifier) if stderr_is_journal() else _stderr_handler()
    root.addHandler(_installed)
    set_level(level)
    _report_crashes()
    return _installed


def _report_crashes() -> None:
    """An exception that ends a thread is logged as an error with its traceback: Python's default
    prints it to stderr, which journald files at priority info, so `journalctl -p err` never
    showed a dead capture or recognizer thread. A fatal signal in native code (onnxruntime,
    PortAudio) dumps every thread's Python stack to stderr, not just "core dumped"; left alone
    where faulthandler is already on (PYTHONFAULTHANDLER, pytest)."""
    threading.excepthook = _log_thread_crash
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        faulthandler.enable(file=sys.__stderr__)


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("edge").error(
        "thread %s stopped by an unexpected error", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def set_level(level: str) -> None:
    """Change the root level (on SIGHUP); level is one of log.level's choices."""
    try:
        logging.getLogger().setLevel(LEVELS[level])
    except KeyError:
        raise ValueError(f"log.level: {level!r} is not one of {', '.join(LEVELS)}") from None


def _journal_handler(identifier: str) -> logging.Handler:
    from systemd.journal import JournalHandler

    handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return handler


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler
