"""Print the daemon's events as JSON lines until it disconnects.

The connection options and socket lookup are shared with `edge-asr status`;
the client itself is edge/publish/client.py.
"""

from __future__ import annotations

import argparse
import os
import sys

from edge.config import ConfigError, load_for_command
from edge.publish import protocol
from edge.publish.client import DaemonUnavailable, connect, read_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection options, shared with `edge-asr status`."""
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"daemon socket (default: publish.socket of the config, else {protocol.DEFAULT_SOCKET})",
    )
    parser.add_argument("--config", metavar="PATH", help="config file to take publish.socket from")


def socket_path(args: argparse.Namespace) -> str:
    """--socket, else publish.socket of the config, else the built-in default.

    These are diagnostic tools: a missing or broken config (or config module) must
    not stop them from trying the usual place.
    """
    if args.socket:
        return args.socket
    try:
        return str(load_for_command(args.config).publish.socket)
    except ConfigError:
        return protocol.DEFAULT_SOCKET


def run(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        with connect(path) as sock:
            for line in read_lines(sock):
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
    except DaemonUnavailable as exc:
        print(f"edge-asr listen: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _silence_stdout()
    return 0


def _silence_stdout() -> None:
    """`edge-asr listen | head` closed our stdout: stop quietly instead of a traceback at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
