"""Print the daemon's events as JSON lines until it disconnects.

The connection options and socket lookup are shared with `edge-asr status`;
the client itself is edge/publish/client.py.
"""

from __future__ import annotations

import argparse
import os
import sys

from edge.config import ConfigError, configured_socket, default_config_path
from edge.publish import protocol
from edge.publish.client import DaemonUnavailable, connect, farewell, read_lines

HELLO_TIMEOUT_S = 5.0  # to connect and hear the hello: a daemon that accepts and says nothing is hung


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection options, shared with `edge-asr status`."""
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"daemon socket (default: publish.socket of the config, else {protocol.DEFAULT_SOCKET})",
    )
    parser.add_argument("--config", metavar="PATH", help="config file to take publish.socket from")


def socket_path(args: argparse.Namespace, command: str = "listen") -> str | int:
    """--socket, else publish.socket of the config, else the built-in default.

    Only publish.socket is read, so a config whose other keys are invalid still gives it
    (`config.configured_socket`). A --config that cannot give it is reported, and the exit status
    (78) comes back instead of a path; the config found at the usual places is a diagnostic tool's
    guess, so there a warning says why the built-in default is tried instead.
    """
    if args.socket:
        return args.socket
    try:
        return str(configured_socket(args.config))
    except ConfigError as exc:
        if args.config:
            return exc.report(default_config_path(args.config))
        print(f"edge-asr {command}: {exc.messages[0]} (trying {protocol.DEFAULT_SOCKET})", file=sys.stderr)
        return protocol.DEFAULT_SOCKET


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the daemon stops, 1 when it refused or dropped this subscriber (the reason on stderr:
    a script must tell "too slow" from "stopped"), 78 for a --config without a usable publish.socket."""
    path = socket_path(args)
    if isinstance(path, int):
        return path
    try:
        with connect(path, HELLO_TIMEOUT_S) as sock:
            for line in read_lines(sock):
                sock.settimeout(None)  # the hello came: from now on a quiet room is no error
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                refused = farewell(line)
                if refused is not None:
                    print(f"edge-asr listen: {refused}", file=sys.stderr)
                    return 1
    except DaemonUnavailable as exc:
        print(f"edge-asr listen: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _silence_stdout()
    return 0


def _silence_stdout() -> None:
    """`edge-asr listen | head` closed our stdout: stop quietly instead of a traceback at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
