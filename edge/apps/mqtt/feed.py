"""The daemon side: follow its socket like any subscriber, and come back when it restarts.

Status requests go over the same connection (the reply arrives among the events), so
the bridge is one subscriber, and "the daemon is up" means exactly "we are reading it".
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from edge.apps.mqtt.retry import Reconnecting
from edge.publish import protocol
from edge.publish.client import DaemonUnavailable, connect, read_lines

log = logging.getLogger(__name__)

STATUS_REQUEST = b'{"type":"status"}\n'


class DaemonFeed:
    """Calls `on_event(dict)` for every event line and `on_down(reason)` whenever the connection ends."""

    def __init__(self, path: str, on_event: Callable[[dict[str, Any]], None], on_down: Callable[[str], None]) -> None:
        self._path = path
        self._on_event = on_event
        self._on_down = on_down
        self._retry = Reconnecting(log, f"daemon at {path}")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def run(self, stop: threading.Event) -> None:
        """Thread body: read, reconnect with backoff, until `stop` is set (and close() called)."""
        self._retry.run(stop, self._follow, self._on_down)

    def request_status(self) -> bool:
        """Ask for a status event; False when there is no connection to ask on."""
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendall(STATUS_REQUEST)
            except OSError:
                return False  # the reader sees the broken connection and reports it
            return True

    def close(self) -> None:
        """Wake the reader out of recv() so that run() can return."""
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):  # already broken: the reader is leaving anyway
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _follow(self, stop: threading.Event) -> str:
        """One connection, read to its end; returns why it ended."""
        try:
            sock = connect(self._path)
        except DaemonUnavailable as exc:
            return str(exc)
        with self._lock:
            self._sock = sock
        try:
            if stop.is_set():  # close() ran before the socket was registered: it could not wake us
                return "stopped"
            self._retry.connected(f"reading the daemon at {self._path}")
            for line in read_lines(sock):
                self._event(line)
            return "the daemon closed the connection"
        except DaemonUnavailable as exc:
            return str(exc)
        finally:
            with self._lock:
                self._sock = None
            sock.close()

    def _event(self, line: bytes) -> None:
        try:
            event = protocol.decode(line)
        except protocol.ProtocolError as exc:
            log.warning("skipped a line from the daemon: %s", exc)
            return
        self._on_event(event)
