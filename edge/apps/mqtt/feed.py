"""The daemon side: follow its socket like any subscriber, and come back when it restarts.

Status requests go over the same connection (the reply arrives among the events), so
the bridge is one subscriber, and "the daemon is up" means exactly "we are reading it".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.apps.mqtt.retry import Reconnecting, Working, unwatched
from edge.publish import protocol
from edge.publish.client import Subscription, refuse_newer_protocol

log = logging.getLogger(__name__)


class DaemonFeed:
    """Calls `on_event(dict)` for every event line and `on_down(reason)` whenever the connection ends."""

    def __init__(self, path: str, on_event: Callable[[dict[str, Any]], None], on_down: Callable[[str], None],
                 working: Working = unwatched) -> None:
        self._subscription = Subscription(path)
        self._working = working
        self._on_event = on_event
        self._on_down = on_down
        self._retry = Reconnecting(log, f"daemon at {path}", working=working, thread="mqtt-feed")

    def run(self, stop: threading.Event) -> None:
        """Thread body: read, reconnect with backoff, until `stop` is set (and close() called)."""
        self._retry.run(stop, self._follow, self._on_down)

    def request_status(self) -> bool:
        """Ask for a status event; False when there is no connection to ask on."""
        return self._subscription.send(protocol.request_line("status"))

    def request_replay(self, after: int) -> bool:
        """Ask for the finals after utterance `after` that the daemon still holds; False without a connection."""
        return self._subscription.send(protocol.request_line("replay", after=after))

    def close(self) -> None:
        """Wake the reader out of recv() so that run() can return."""
        self._subscription.wake()

    def _follow(self, stop: threading.Event) -> str:
        """One connection, read to its end; returns why it ended."""
        return self._subscription.follow(stop, self._event)

    def _event(self, line: bytes) -> None:
        with self._working("mqtt-feed"):
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            event = protocol.decode(line)
        except protocol.ProtocolError as exc:
            log.warning("skipped a line from the daemon: %s", exc)
            return
        if event["type"] == protocol.Hello.TYPE:  # served, not just accepted: a refused connection keeps backing off
            refuse_newer_protocol(event.get("protocol_version"), "MQTT bridge")
            self._retry.connected(f"reading the daemon at {self._subscription.path}")
        self._on_event(event)
