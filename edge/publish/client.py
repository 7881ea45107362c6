"""The subscriber side of the socket: connect, read event lines, ask for status.

Used by `edge-asr listen` and `edge-asr status`, and by any local app written
in Python. Every failure is a `DaemonUnavailable` whose message is one line
for the person at the terminal.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import fields

from edge.publish import protocol

RECV_BYTES = 65536


class DaemonUnavailable(Exception):
    """No daemon to talk to, or it went away badly; the message is one line for the user."""


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
            data = sock.recv(RECV_BYTES)
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


def parse_event(line: bytes) -> protocol.Event:
    """One event line as a typed event; ProtocolError if it is not a valid event of a known type.

    Fields this version does not know are left out first: docs/protocol.md lets a newer
    daemon add fields without a version bump, and `Event.from_dict` alone would refuse them.
    """
    data = protocol.decode(line)
    kind = protocol.EVENT_CLASSES.get(data["type"])
    if kind is not None and kind is not protocol.Status:
        known = {f.name for f in fields(kind) if f.metadata.get("wire", True)}
        data = {key: value for key, value in data.items() if key == "type" or key in known}
    return protocol.Event.from_dict(data)


def request_status(path: str, timeout: float) -> dict:
    """The daemon's status event; DaemonUnavailable if there is none or it answers an error."""
    with connect(path, timeout) as sock:
        try:
            sock.sendall(b'{"type":"status"}\n')
        except OSError as exc:
            raise DaemonUnavailable(f"cannot send to {path}: {exc.strerror or exc}") from None
        for line in read_lines(sock):
            event = _decode(line)
            if event["type"] == "status":
                return event
            if event["type"] == "error":
                raise DaemonUnavailable(f"the daemon answered: {event.get('message', event)}")
    raise DaemonUnavailable("the daemon closed the connection before answering")


def _decode(line: bytes) -> dict:
    try:
        return protocol.decode(line)
    except protocol.ProtocolError as exc:
        raise DaemonUnavailable(f"unexpected reply from the daemon: {exc}") from None
