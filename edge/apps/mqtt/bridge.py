"""The bridge: daemon events in, MQTT messages out, every final through the spool.

Three threads: the feed reads the daemon, the link runs paho's network loop, and the
caller's thread asks the daemon for its status every status_interval_s. Each thread's
pieces of work (an event, a turn of paho's loop, a status tick) are timed by `working`:
under systemd, one that never ends (a hung spool write, a deadlock) stops the watchdog's
pings and the bridge is restarted, while a bridge idle in a quiet room is not. A final is
numbered and written to the spool on the feed thread, then "pumped": spooled finals
go out in id order, at most MAX_INFLIGHT unacknowledged at a time, and each is deleted
when its PUBACK arrives. A new connection starts the pump again from the oldest
spooled final, so nothing is lost and the only duplicates are finals whose PUBACK the
old connection never delivered (same box_id, boot_id, seq: consumers drop them).

Finals the daemon published while the bridge was not reading it (the bridge restarting,
the daemon restarting under it) are asked for again with a `replay` request after each
`hello`, from the last final the spool took (its run_id and utterance_id, kept with it).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge.apps.mqtt.broker import MAX_INFLIGHT, BrokerLink
from edge.apps.mqtt.feed import DaemonFeed
from edge.apps.mqtt.payloads import Box, Topics, final_body, partial_body, status_body, utc_now
from edge.apps.mqtt.retry import Working, unwatched
from edge.apps.mqtt.spool import Spool
from edge.config import MqttConfig
from edge.publish import protocol

log = logging.getLogger(__name__)

# A daemon's error reply to the replay request: an older daemon's, or one whose replay failed. The
# finals held meanwhile then go on as live ones (replay_unavailable was missing: they piled up unsent).
REPLAY_REFUSALS = ("unknown_type", "bad_request", "replay_unavailable")
MAX_EXACT = 2**53  # the largest whole number every JSON reader holds exactly


class Bridge:
    """`run()` until `stop()`; `on_state` gets a one-line summary whenever a connection comes or goes."""

    def __init__(self, settings: MqttConfig, socket_path: str, on_state: Callable[[str], None] = lambda text: None,
                 working: Working = unwatched) -> None:
        self._settings = settings
        self._working = working
        self._box = Box(settings.box_id, uuid.uuid4().hex)
        self._topics = Topics.under(settings.topic_prefix)
        self._link = BrokerLink(settings, self._topics, self, working)  # first: a bad password file fails before any I/O
        self._spool = Spool(settings.spool_dir, round(settings.spool_max_mb * 1_000_000))
        self._feed = DaemonFeed(socket_path, self._on_event, self._daemon_down, working)
        self._on_state = on_state
        self._stop = threading.Event()
        self._failed = False
        self._lock = threading.Lock()  # guards the pump's state below
        self._client: mqtt.Client | None = None  # set while the broker has accepted us
        self._inflight: dict[int, int] = {}  # message id -> spool id, current connection only
        self._sent_upto = 0  # highest spool id handed to the current connection
        self._acks: deque[int] = deque()  # PUBACKed message ids, settled by the next pump
        self._seq = 0
        self._run_id: str | None = None  # the daemon's, from its hello
        self._held: list[dict[str, Any]] | None = None  # finals read while a replay is on its way
        self._finals_sent = 0
        self._partials = NewestPartial(self._topics.partial)  # under _lock
        self._warned_full = False
        self._daemon: dict[str, Any] | None = None
        self._daemon_error: str | None = "not connected yet"
        self._asked_status = False  # a status request is out and no status came back since
        self._last_broker_error: str | None = None
        self._connected_since: str | None = None

    def run(self) -> int:
        """0 after stop(); 1 when a thread died of an unexpected error (systemd restarts the bridge)."""
        threads = [threading.Thread(target=self._guarded, args=(body,), name=name, daemon=True)
                   for name, body in (("mqtt-feed", self._feed.run), ("mqtt-link", self._link.run))]
        for thread in threads:
            thread.start()
        log.info("bridging as box %s (boot %s) to %s/...; %d final(s) waiting in the spool",
                 self._box.box_id, self._box.boot_id, self._settings.topic_prefix, self._spool.stats()["spooled"])
        while not self._stop.wait(self._settings.status_interval_s):
            with self._working("mqtt-status"):
                self._status_tick()
        self._feed.close()
        for thread in threads:
            thread.join()
        self._spool.close()
        return 1 if self._failed else 0

    def _status_tick(self) -> None:
        """Ask the daemon for its status, which is published when it comes back; a daemon that did not
        answer the last request (its socket open, its publisher wedged) is reported as not answering,
        so that the retained status does not go on saying `running`."""
        if self._asked_status:
            came_back = self._daemon is not None
            self._daemon = None
            self._daemon_error = f"connected but not answering status requests (none in {self._settings.status_interval_s:g} s)"
            self._publish_status()
            if came_back:
                self._state_changed()
        self._asked_status = True  # before the request: its reply may come (and clear it) before send returns
        if not self._feed.request_status():
            self._asked_status = False
            self._publish_status()

    def stop(self) -> None:
        """Safe in a signal handler (it only sets an event): run() says `online: false` and returns."""
        self._stop.set()

    def _guarded(self, body: Callable[[threading.Event], None]) -> None:
        """A thread that dies would leave a bridge that looks alive and does nothing: stop it all instead."""
        try:
            body(self._stop)
        except Exception:
            log.exception("the bridge stops after an unexpected error in %s", threading.current_thread().name)
            self._failed = True
            self._stop.set()

    # --- daemon side (feed thread) ------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == protocol.Final.TYPE:
            if self._held is None:
                self._take_final(event)
            else:
                self._held.append(event)
        elif kind == protocol.Partial.TYPE and self._settings.partials:
            self._offer_partial(partial_body(event, self._box), _utterance_id(event))
        elif kind == protocol.Status.TYPE:
            came_back = self._daemon is None
            self._daemon, self._daemon_error, self._asked_status = event, None, False
            self._publish_status()
            if came_back:
                self._state_changed()
        elif kind == protocol.Replayed.TYPE:
            self._replayed(event)
        elif kind == protocol.Error.TYPE and self._held is not None and event.get("reason") in REPLAY_REFUSALS:
            log.warning("the daemon refused the replay request (%s); going on with live finals", event.get("message"))
            self._take_held()
        elif kind == protocol.Hello.TYPE:
            self._ask_replay(event.get("run_id"))
            self._feed.request_status()  # a (re)started daemon: its status goes out at once

    def _ask_replay(self, run_id: Any) -> None:
        """Ask for the finals published while this bridge did not read them: after the last one taken
        of the same daemon run, or all a new run still holds. Not on a first start (nothing taken yet),
        nor from a daemon without run_id (older than replay)."""
        previous, self._run_id = self._run_id, run_id if isinstance(run_id, str) and run_id else None
        last = self._spool.last_final or ((previous, 0) if previous else None)  # a run seen, none of its finals
        if self._run_id is None or last is None:
            return
        if self._feed.request_replay(last[1] if last[0] == self._run_id else 0):
            self._held = []

    def _replayed(self, reply: dict[str, Any]) -> None:
        count, missing = _whole(reply.get("count")), _whole(reply.get("missing"))
        if count:
            log.info("the daemon re-sent %s final(s) published while the bridge was not reading it", count)
        if missing:
            log.warning("%d final(s) published while the bridge was not reading the daemon are no longer held "
                        "by it (it keeps the last publish.max_pending_finals / 2); counted as daemon_missed", missing)
            self._spool.count_missed(missing)
        self._take_held()

    def _take_held(self, cut: bool = False) -> None:
        """The finals read while a replay was on its way, replayed and live alike, in utterance order.
        `cut` (the connection ended first): only those that follow the last one taken without a gap; the
        rest are asked for again, from there, on the next connection."""
        held, self._held = self._held or [], None
        last = self._spool.last_final
        following = last[1] + 1 if last and last[0] == self._run_id else 1
        for event in sorted(held, key=lambda final: _utterance_id(final) or 0):
            utterance_id = _utterance_id(event)
            if cut and utterance_id is not None and utterance_id > following:
                return
            self._take_final(event)
            following = max(following, (utterance_id or 0) + 1)

    def _take_final(self, event: dict[str, Any]) -> None:
        utterance_id = _utterance_id(event)
        mark = (self._run_id, utterance_id) if self._run_id and utterance_id is not None else None
        last = self._spool.last_final
        if mark and last and last[0] == mark[0] and mark[1] <= last[1]:
            return  # taken already: a replayed final that was also read live
        self._seq += 1
        with self._lock:
            self._partials.superseded(utterance_id)
        dropped = self._spool.add(final_body(event, self._box, self._seq), mark)
        if dropped and not self._warned_full:
            log.warning("spool full (mqtt.spool_max_mb: %s): dropping the oldest finals; "
                        "the count is spool_dropped in the status", self._settings.spool_max_mb)
            self._warned_full = True
        self._pump()

    def _daemon_down(self, reason: str) -> None:
        self._take_held(cut=True)  # a replay cut short: what did arrive in order is kept
        self._daemon, self._daemon_error, self._asked_status = None, reason, False
        self._publish_status()
        self._state_changed()

    # --- broker side (LinkListener: link thread) ------------------------------------

    def link_up(self, client: mqtt.Client) -> None:
        with self._lock:
            self._client = client
            self._inflight.clear()
            self._acks.clear()
            self._sent_upto = 0
            self._warned_full = False
            self._partials.restart()
        self._connected_since = utc_now("seconds")
        self._publish_status()
        self._pump()
        self._state_changed()

    def link_down(self, reason: str) -> None:
        """PUBACKs read in the loop that lost the link still count: settled now, those finals are not sent again."""
        with self._lock:
            self._settle()
            self._client = None
            self._partials.restart()
        self._last_broker_error = reason
        self._state_changed()

    def acked(self, client: mqtt.Client, mid: int) -> None:
        if client is self._client:
            self._acks.append(mid)

    def tick(self) -> None:
        if self._acks:
            self._pump()
        with self._lock:
            if self._client is not None:
                self._partials.send_next(self._client)

    # --- shared --------------------------------------------------------------------

    def _pump(self) -> None:
        """Settle acknowledged finals, then send spooled ones while the window has room."""
        with self._lock:
            self._settle()
            if self._client is None:
                return
            for row_id, body in self._spool.after(self._sent_upto, MAX_INFLIGHT - len(self._inflight)):
                self._inflight[self._client.publish(self._topics.final, body, qos=1).mid] = row_id
                self._sent_upto = row_id

    def _settle(self) -> None:
        done = []
        while self._acks:
            row_id = self._inflight.pop(self._acks.popleft(), None)
            if row_id is not None:
                done.append(row_id)
        if done:
            self._spool.remove(done)
            self._finals_sent += len(done)

    def _offer_partial(self, body: bytes, utterance_id: int | None) -> None:
        with self._lock:
            self._partials.offer(self._client, body, utterance_id)

    def _publish_status(self) -> None:
        bridge = {"connected_since": self._connected_since, "last_broker_error": self._last_broker_error,
                  "partials": self._settings.partials, "finals_sent": self._finals_sent,
                  "partials_skipped": self._partials.skipped, **self._spool.stats()}
        body = status_body(self._box, self._daemon, self._daemon_error, bridge)
        self._publish(self._topics.status, body, qos=1, retain=True)

    def _publish(self, topic: str, body: bytes, qos: int, retain: bool) -> None:
        """Skipped while disconnected: partials are disposable and a new connection sends a fresh status."""
        client = self._client
        if client is not None:
            client.publish(topic, body, qos=qos, retain=retain)

    def _state_changed(self) -> None:
        broker = "connected" if self._client is not None else self._last_broker_error or "connecting"
        daemon = "running" if self._daemon is not None else self._daemon_error
        self._on_state(f"broker: {broker}; daemon: {daemon}; {self._spool.stats()['spooled']} final(s) spooled")


class NewestPartial:
    """Partials (QoS 0) for an uplink slower than the speech: one waits in paho's queue, and only the
    newest of those that came meanwhile is kept here to follow it. Before, paho queued every partial
    without bound and a dashboard saw them minutes late; a partial's text is superseded by the next
    one, so only the newest is worth sending."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._queued: mqtt.MQTTMessageInfo | None = None  # the last one handed to paho on this connection
        self._next: tuple[int | None, bytes] | None = None  # (utterance id, body)
        self.skipped = 0  # not written to any connection, since the bridge started

    def offer(self, client: mqtt.Client | None, body: bytes, utterance_id: int | None) -> None:
        """Send it, hold it behind an unwritten one, or (no connection: `client` None) count it as skipped."""
        if client is None:
            self.skipped += 1
        elif self._waiting():
            self._drop_next()
            self._next = (utterance_id, body)
        else:
            self._send(client, body)

    def send_next(self, client: mqtt.Client) -> None:
        """On the link thread, after paho's loop turn that may have written the queued one."""
        if self._next is not None and not self._waiting():
            (_, body), self._next = self._next, None
            self._send(client, body)

    def superseded(self, utterance_id: int | None) -> None:
        """A final came: a partial held for its utterance (or an earlier one) is out of date; one of a
        later utterance is not (a replayed final)."""
        held = self._next[0] if self._next is not None else None
        if held is None or utterance_id is None or held <= utterance_id:
            self._drop_next()

    def restart(self) -> None:
        """A connection came or went: nothing of the old one is waiting any more. One its client had
        not written is lost with it: each connection has a client of its own (`BrokerLink._session`)."""
        if self._waiting():
            self.skipped += 1
        self._queued = None
        self._drop_next()

    def _send(self, client: mqtt.Client, body: bytes) -> None:
        """A publish paho refuses (the socket it closed in this turn, before `link_down`) is counted."""
        self._queued = client.publish(self._topic, body, qos=0, retain=False)
        if self._queued.rc != mqtt.MQTT_ERR_SUCCESS:
            self.skipped += 1

    def _waiting(self) -> bool:
        queued = self._queued
        return queued is not None and queued.rc == mqtt.MQTT_ERR_SUCCESS and not queued.is_published()

    def _drop_next(self) -> None:
        if self._next is not None:
            self._next = None
            self.skipped += 1


def _utterance_id(final: dict[str, Any]) -> int | None:
    return _whole(final.get("utterance_id"))


def _whole(value: Any) -> int | None:
    """A count or id from the daemon, if it is one: a whole number that JSON readers hold exactly
    (and sqlite's INTEGER does), not a bool."""
    return value if type(value) is int and 0 <= value <= MAX_EXACT else None
