"""The subscriber side of the socket: connect, read event lines, ask for status.

Used by `edge-asr listen` and `edge-asr status`, and by any local app written
in Python. Every failure is a `DaemonUnavailable` whose message is one line
for the person at the terminal.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from edge.publish import protocol

RECV_BYTES = 65536


class DaemonUnavailable(Exception):
    """No daemon to talk to, or it went away badly; the message is one line for the user."""


class NoAnswer(DaemonUnavailable):
    """The daemon said nothing more within the time allowed."""


def refuse_newer_protocol(version: Any, app: str) -> None:
    """docs/protocol.md: an app refuses a daemon whose hello names a newer protocol, whose fields may
    mean something else now. DaemonUnavailable names the fix."""
    if isinstance(version, int) and version > protocol.PROTOCOL_VERSION:
        raise DaemonUnavailable(f"the daemon speaks protocol {version}, newer than this {app}'s "
                                f"{protocol.PROTOCOL_VERSION}: upgrade edge-asr")


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
    if isinstance(exc, (TimeoutError, BlockingIOError)):  # its backlog full: a daemon that stopped accepting
        return f"the daemon at {path} is not accepting connections (hung or overloaded?)"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def read_lines(sock: socket.socket, deadline: float | None = None) -> Iterator[bytes]:
    """Complete event lines until a clean close; raises DaemonUnavailable on a broken one.

    `deadline` (time.monotonic()) bounds the whole read, not each recv: a busy room's partials
    kept a request that the daemon never answered waiting for ever."""
    pending = b""
    while True:
        try:
            if deadline is not None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(RECV_BYTES)
        except socket.timeout:
            raise NoAnswer("the daemon did not answer in time") from None
        except OSError as exc:
            raise DaemonUnavailable(f"connection to the daemon broke: {exc.strerror or exc}") from None
        if not data:
            if pending:
                raise DaemonUnavailable("the daemon closed the connection in the middle of an event")
            return
        *lines, pending = (pending + data).split(b"\n")
        yield from (line + b"\n" for line in lines)


def farewell(line: bytes) -> str | None:
    """The daemon's words when this line is the error it hangs up after (too many subscribers, too slow):
    why the connection ends, rather than 'the daemon closed the connection'."""
    if b'"error"' not in line:
        return None
    try:
        event = protocol.decode(line)
    except protocol.ProtocolError:
        return None
    if event["type"] != protocol.Error.TYPE or event.get("reason") not in protocol.CLOSING_ERRORS:
        return None
    return f"the daemon refused this subscriber: {event.get('message', '')} ({event['reason']})"


class Subscription:
    """A long-lived subscriber's connection: followed to its end, woken or written to from other threads.

    The socket apps (captions, mqtt) reconnect with their own policies; this is what each
    connection needs: read its lines, let `wake()` end a blocked read (shutdown wakes recv)
    and let `send()` put a request on the same connection.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._cut: str | None = None  # why send() shut the current connection down, if it did

    def follow(self, stop: threading.Event, on_line: Callable[[bytes], None],
               on_connected: Callable[[], None] = lambda: None) -> str:
        """Connect and hand every line to `on_line` until the connection ends; returns why it ended.
        `on_line` may raise DaemonUnavailable to end it."""
        try:
            sock = connect(self.path)
        except DaemonUnavailable as exc:
            return str(exc)
        with self._lock:
            self._sock, self._cut = sock, None
        try:
            if stop.is_set():  # wake() ran before the socket was registered: it could not wake us
                return "stopped"
            on_connected()
            for line in read_lines(sock):
                on_line(line)
                refused = farewell(line)
                if refused is not None:
                    return refused
            return self._cut or "the daemon closed the connection (stopped or restarting)"
        except DaemonUnavailable as exc:
            return str(exc)
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def send(self, data: bytes) -> bool:
        """Write a request on the current connection without blocking; False when there is none, it
        broke (the reader will see), or the daemon has stopped reading requests.

        A blocking write would hold the lock that `wake()` needs, so a daemon that no longer reads
        could keep the app from stopping. A request the socket's buffer cannot take whole ends the
        connection (a part sent would garble the next request): the reader sees the end and says why.
        """
        with self._lock:
            if self._sock is None:
                return False
            try:
                sent = self._sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False
            if sent < len(data):
                self._cut = "the daemon stopped reading requests (its socket buffer is full)"
                self._shut_down()
            return sent == len(data)

    def wake(self) -> None:
        """End a read blocked in follow()."""
        with self._lock:
            self._shut_down()

    def _shut_down(self) -> None:
        """Shutdown wakes a blocked recv; the caller holds the lock."""
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already broken: the reader is leaving anyway
                self._sock.shutdown(socket.SHUT_RDWR)


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


# The errors that answer a status request. Others can arrive first and are not the answer: an
# `overload` broadcast (the connection stays open) while an operator asks why the box is slow.
STATUS_FAILURES = protocol.CLOSING_ERRORS | {"status_unavailable"}


def request_status(path: str, timeout: float) -> dict:
    """The daemon's status event; DaemonUnavailable if there is none or it answers an error.
    A `status` broadcast (a reload's) has no subscriber_id: the reply to this request has."""
    deadline = time.monotonic() + timeout
    with connect(path, timeout) as sock:
        try:
            sock.sendall(protocol.request_line("status"))
        except OSError as exc:
            raise DaemonUnavailable(f"cannot send to {path}: {exc.strerror or exc}") from None
        for line in read_lines(sock, deadline):
            event = _decode(line)
            if event["type"] == protocol.Status.TYPE and "subscriber_id" in event:
                return event
            if event["type"] == protocol.Error.TYPE and event.get("reason") in STATUS_FAILURES:
                raise DaemonUnavailable(f"the daemon answered: {event.get('message', event)}")
    raise DaemonUnavailable("the daemon closed the connection before answering")


def _decode(line: bytes) -> dict:
    try:
        return protocol.decode(line)
    except protocol.ProtocolError as exc:
        raise DaemonUnavailable(f"unexpected reply from the daemon: {exc}") from None
