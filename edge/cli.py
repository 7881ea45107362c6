"""`edge-asr` entry point: dispatches to one module per sub-command.

Sub-command modules are imported lazily so that, say, `edge-asr listen`
never pays for loading onnxruntime.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import threading

import edge

COMMANDS = (
    "transcribe",
    "run",
    "listen",
    "status",
    "reload",
    "captions",
    "devices",
    "backends",
    "check-config",
    "mqtt",
    "learn-sounds-like",
    "record-names",
)


RELOADING = ("run",)  # commands for which SIGHUP means "reload the config"


def _module_name(command: str) -> str:
    return "edge.commands." + command.replace("-", "_")


def _help_line(command: str) -> str:
    """Help text without importing the command (keeps `--help` instant)."""
    spec = importlib.util.find_spec(_module_name(command))
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as src:
        for line in src:
            line = line.strip().strip('"')
            if line:
                return line
    return ""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-asr", description=edge.__doc__)
    parser.add_argument("--version", action="version", version=f"edge-asr {edge.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    for command in COMMANDS:
        cmd_parser = sub.add_parser(command, help=_help_line(command))
        if command == chosen:
            module = importlib.import_module(_module_name(command))
            module.add_arguments(cmd_parser)
            cmd_parser.set_defaults(handler=module.run)
    return parser


def _chosen(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _remember_sighup() -> threading.Event:
    """The daemon reloads on SIGHUP, but SIGHUP's default action kills: from the first moment
    until the daemon installs its own handler (a model load takes seconds), remember it."""
    requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: requested.set())
    return requested


def _printable_anywhere() -> None:
    """Under a locale that cannot write Chinese (a Latin-1 or Big5 terminal), text it cannot encode is
    escaped, not a UnicodeEncodeError traceback: `status` with Chinese terms, a Chinese device name."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _printable_anywhere()
    early_reload = _remember_sighup() if _chosen(argv) in RELOADING else None
    args = build_parser(argv).parse_args(argv)
    args.early_reload = early_reload
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`edge-asr ... | head`): no traceback, and no second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
