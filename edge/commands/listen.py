"""Print the daemon's events as JSON lines until it disconnects.

Also home of the small client helpers that `edge-asr status` shares: finding the
socket path and connecting with one-line error messages.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Iterator

from edge import protocol


class DaemonUnavailable(Exception):
    """No daemon to talk to, or it went away badly; the message is one line for the user."""


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
        from edge.config import default_config_path, load_config

        return str(load_config(default_config_path(args.config)).publish.socket)
    except Exception:
        return protocol.DEFAULT_SOCKET


def connect(path: str, timeout: float | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(_connect_failure(path, exc)) from None
    return sock


def _connect_failure(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no edge-asr daemon at {path} (socket not found; is the daemon running?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"no edge-asr daemon at {path} (connection refused: stale socket)"
    if isinstance(exc, PermissionError):
        return f"permission denied on {path} (join the socket's group or use sudo)"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def read_lines(sock: socket.socket) -> Iterator[bytes]:
    """Complete event lines until a clean close; raises DaemonUnavailable on a broken one."""
    pending = b""
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise DaemonUnavailable("the daemon did not answer in time") from None
        except OSError as exc:
            raise DaemonUnavailable(f"connection to the daemon broke: {exc.strerror or exc}") from None
        if not data:
            if pending:
                raise DaemonUnavailable("the daemon closed the connection in the middle of an event")
            return
        *lines, pending = (pending + data).split(b"\n")
        yield from (line + b"\n" for line in lines)


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
