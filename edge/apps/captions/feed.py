"""The caption server's side of the daemon socket: one subscriber that reconnects with backoff.

The shared blocking client (edge/publish/client.py) reads on a thread of its own, so the
web server's event loop never waits on the daemon and no browser can slow the reading.
Each event is cut down to what the page draws and handed over through `emit`, which the
server makes thread-safe; the connection state goes the same way as a `daemon` message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.backoff import Backoff
from edge.publish import protocol
from edge.publish.client import Subscription, parse_event, refuse_newer_protocol

log = logging.getLogger(__name__)

# A local socket is cheap to retry: the first retries come quickly so that a daemon
# restart shows as a blink, and the cap keeps a stopped daemon from costing anything.
FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0
_STOP_TIMEOUT_S = 2.0

Emit = Callable[[str, dict[str, Any]], None]
# model.chinese_script as the page's lang attribute, which picks the fonts whose glyphs the readers
# know (骨 and 直 are drawn differently in SC and TC fonts); a value a newer daemon adds: plain zh.
CHINESE_LANGS = {"simplified": "zh-CN", "traditional": "zh-Hant", "taiwan": "zh-TW", "hongkong": "zh-HK"}


def chinese_message(script: object) -> tuple[str, dict[str, Any]]:
    return "chinese", {"lang": CHINESE_LANGS.get(script, "zh") if isinstance(script, str) else "zh"}


def page_message(event: protocol.Event) -> tuple[str, dict[str, Any]] | None:
    """The (name, data) the page needs for an event, or None when the page has no use for it."""
    if isinstance(event, protocol.Status) and "chinese_script" in event.fields:  # a reload changed it
        return chinese_message(event.fields["chinese_script"])
    if isinstance(event, protocol.Final):
        return "final", {"id": event.utterance_id, "text": event.text, "language": event.language}
    if isinstance(event, protocol.Partial):
        return "partial", {"id": event.utterance_id, "text": event.text, "stable": event.stable_text}
    if isinstance(event, protocol.SpeechEnd):
        return "speech_end", {"id": event.utterance_id}
    return None


class DaemonFeed:
    """Subscribes to the daemon at `path` until stop(), calling `emit(name, data)` from its thread.
    `on_failure` runs if an unexpected error ends that thread: the page would show "Live" for ever,
    its captions frozen, while the server kept answering."""

    def __init__(self, path: str, emit: Emit, on_failure: Callable[[], None] = lambda: None) -> None:
        self._subscription = Subscription(path)
        self._emit = emit
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._greeted = False  # the current connection said hello: a drop then retries after FIRST_RETRY_S
        self._state: tuple[bool, str] | None = None
        self._thread = threading.Thread(target=self._run, name="captions-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread: waking the blocked read lets it see the stop."""
        self._stop.set()
        self._subscription.wake()
        self._thread.join(_STOP_TIMEOUT_S)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            log.exception("the caption server stops after an unexpected error reading the daemon")
            self._on_failure()

    def _follow(self) -> None:
        backoff = Backoff(FIRST_RETRY_S, MAX_RETRY_S)
        while not self._stop.is_set():
            self._greeted = False
            reason = self._subscription.follow(self._stop, self._forward)
            if self._stop.is_set():
                return
            self._tell(False, reason)
            if self._greeted:
                backoff.reset()
            self._stop.wait(backoff.next())

    def _forward(self, line: bytes) -> None:
        """Hand one event line to the page (the daemon's hello: to the connection state)."""
        try:
            event = parse_event(line)
        except protocol.ProtocolError as exc:
            log.debug("skipping an event the caption page cannot use: %s", exc)
            return
        if isinstance(event, protocol.Hello):
            self._greet(event)
            self._greeted = True
            return
        message = page_message(event)
        if message is not None:
            self._emit(*message)

    def _greet(self, hello: protocol.Hello) -> None:
        refuse_newer_protocol(hello.protocol_version, "caption server")
        self._emit(*chinese_message(hello.chinese_script))
        self._tell(True, f"{hello.model} on {hello.backend}")

    def _tell(self, connected: bool, message: str) -> None:
        """Log and pass on a change of the connection state; repeats of the same failure stay quiet."""
        if (connected, message) == self._state:
            return
        self._state = (connected, message)
        if connected:
            log.info("connected to edge-asr at %s (%s)", self._subscription.path, message)
        else:
            log.warning("not connected to edge-asr: %s; retrying", message)
        self._emit("daemon", {"connected": connected, "message": message})
