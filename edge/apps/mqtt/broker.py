"""The broker side: one MQTT connection at a time, each with a fresh paho client, re-made with backoff.

A fresh client per connection means paho keeps no messages of its own across a
reconnect: the spool is the only record of what still needs sending, and the
listener replays it from the oldest entry on every new connection. paho's
network loop runs on our thread (`client.loop()`), so every refusal (DNS, TCP,
TLS, login) is an exception or a CONNACK code we turn into one clear line; that
thread is also the only one that writes to the socket.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.apps.mqtt.payloads import OFFLINE, ONLINE, Topics
from edge.apps.mqtt.retry import Reconnecting, Working, unwatched
from edge.config import MqttConfig
from edge.errors import StartupError, one_line

log = logging.getLogger(__name__)

KEEPALIVE_S = 30  # a vanished box is declared offline (last will) after 1.5x this
CONNECT_TIMEOUT_S = 10.0
LOOP_S = 0.2  # longest wait in paho's select(): bounds how late an ack is settled and stop is seen
GOODBYE_S = 3.0  # on a clean stop, how long to wait for the broker to take `online: false`
MAX_INFLIGHT = 64  # unacknowledged QoS 1 messages on the wire (the listener keeps to it too)
_LOGIN_REFUSED = ("Bad user name or password", "Not authorized")
_FEATURE_REFUSED = ("QoS not supported", "Retain not supported")  # MQTT 5 CONNACK codes 0x9B, 0x9A
_NO_MQTT5 = "Unsupported protocol version"  # how paho reads a 3.1.1 broker's CONNACK 1 to our MQTT 5 CONNECT


class SettingsError(StartupError):
    """A file the mqtt section names is unusable (password, certificate): a config problem."""


class LinkListener(Protocol):
    """What the link tells the bridge, all on the link's thread. `acked` runs inside paho with its
    locks held, so it must not block (nor wait for a lock a publishing thread may hold)."""

    def link_up(self, client: mqtt.Client) -> None: ...

    def link_down(self, reason: str) -> None: ...

    def acked(self, client: mqtt.Client, mid: int) -> None: ...

    def tick(self) -> None: ...


class BrokerLink:
    """Keeps one connection to the broker, says `online`, and tells its listener what happens."""

    def __init__(self, settings: MqttConfig, topics: Topics, listener: LinkListener,
                 working: Working = unwatched) -> None:
        self._settings = settings
        self._working = working
        self._topics = topics
        self._listener = listener
        self._password = read_password(settings.password_file)
        self._tls = tls_context(settings) if settings.tls.enabled else None
        self._where = f"broker {settings.host}:{settings.broker_port}"
        self._retry = Reconnecting(log, self._where, brief_hint=(
            f" (another client using the client id edge-asr-{settings.box_id}? mqtt.box_id must be unique on "
            "the broker, which drops the older connection of the two)"), working=working, thread="mqtt-link")
        self._refusal: str | None = None
        self._accepted = False
        self._online_mid: int | None = None  # our `online: true`: its PUBACK says the broker lets us publish
        self._allowed = False
        self._protocol = mqtt.MQTTv5  # MQTTv311 once a broker turns 5 down

    def run(self, stop: threading.Event) -> None:
        """Thread body: connect, serve, reconnect with backoff, until `stop` is set."""
        self._retry.run(stop, self._session, self._listener.link_down)

    def _session(self, stop: threading.Event) -> str:
        """One connection from connect to loss; returns why it ended."""
        client = self._client()
        self._refusal, self._accepted, self._online_mid, self._allowed = None, False, None, False
        try:
            client.connect(self._settings.host, self._settings.broker_port, keepalive=KEEPALIVE_S)
        except OSError as exc:  # socket.gaierror, ssl.SSLError, timeouts, refusals are all OSErrors
            return describe_failure(exc, self._tls is not None)
        while not stop.is_set():
            with self._working("mqtt-link"):
                ended = self._turn(client)
            if ended is not None:
                return ended
        _goodbye(client, self._topics.online)
        return "stopped"

    def _turn(self, client: mqtt.Client) -> str | None:
        """One turn of paho's loop (at most LOOP_S waiting) and what it brought; why the connection ended, or None."""
        rc = client.loop(timeout=LOOP_S)
        if self._refusal is not None:  # a refused login, or a refused publish: the spool keeps the finals
            client.disconnect()
            return self._refusal
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return f"connection lost ({mqtt.error_string(rc)})"
        if self._accepted:
            self._accepted = False
            self._up(client)
        if self._allowed:
            self._allowed = False
            self._retry.connected(f"connected to {self._where} as {self._settings.box_id}")
        self._listener.tick()
        return None

    def _up(self, client: mqtt.Client) -> None:
        self._online_mid = client.publish(self._topics.online, ONLINE, qos=1, retain=True).mid
        self._listener.link_up(client)

    def _client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-asr-{self._settings.box_id}",
                             protocol=self._protocol, reconnect_on_failure=False)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.will_set(self._topics.online, OFFLINE, qos=1, retain=True)
        if self._settings.username is not None:
            client.username_pw_set(self._settings.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_socket_register_write = _written_by_the_link_loop
        return client

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        """Inside loop(): only note the outcome; `_session` acts on it outside paho's locks."""
        if str(reason) == _NO_MQTT5 and self._protocol == mqtt.MQTTv5:
            self._protocol = mqtt.MQTTv311
            log.warning("%s speaks only MQTT 3.1.1: using it. A 3.1.1 broker acknowledges a publish its ACL "
                        "refuses like one it takes, so such finals would leave the spool unseen: check the ACL",
                        self._where)
            self._refusal = "the broker does not speak MQTT 5; trying 3.1.1"
        elif reason.is_failure:
            self._refusal = describe_refusal(str(reason), self._settings.username)
        else:
            self._accepted = True

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                    properties: object) -> None:
        """Inside loop(). MQTT 5 is why the bridge speaks it: a 3.1.1 broker acknowledges a publish its
        ACL drops as if it took it, and the spool would delete a final nobody got."""
        if reason.is_failure:
            self._refusal = describe_publish_refusal(str(reason), self._settings.topic_prefix, self._settings.username)
            return
        if mid == self._online_mid:
            self._allowed = True
        self._listener.acked(client, mid)


def _written_by_the_link_loop(client: mqtt.Client, userdata: object, sock: object) -> None:
    """paho's hook for an outside event loop. Set, it makes publish() from the feed or main thread
    only queue its packet and wake the link thread's select(); unset, paho writes on the caller's
    thread while the link thread's loop() writes too, and the interleaved bytes (seen with partials
    on a slow link) made the broker drop the connection for a protocol error."""


def _goodbye(client: mqtt.Client, online_topic: str) -> None:
    """A clean stop says `false` itself (a clean DISCONNECT does not fire the last will)."""
    if not client.is_connected():
        return
    info = client.publish(online_topic, OFFLINE, qos=1, retain=True)
    waited = 0.0
    while not info.is_published() and waited < GOODBYE_S and client.loop(timeout=LOOP_S) == mqtt.MQTT_ERR_SUCCESS:
        waited += LOOP_S
    client.disconnect()
    client.loop(timeout=LOOP_S)


def describe_failure(exc: OSError, tls: bool) -> str:
    """A connect() failure as one line a technician can act on (the caller names host and port)."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror}); check mqtt.host and DNS"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was rejected ({exc.verify_message}); check mqtt.tls.ca_file and mqtt.host"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or one_line(exc)}); is this the broker's TLS port? check mqtt.port"
    if tls and isinstance(exc, ConnectionResetError):
        return "the broker hung up during the TLS handshake; is this the broker's TLS port? check mqtt.port"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no broker listening on that port?)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:.0f} s (a firewall, or the wrong host?)"
    return f"cannot connect: {exc.strerror or one_line(exc)}"


def describe_refusal(reason: str, username: str | None) -> str:
    """A CONNACK refusal; a refused login names the user and the keys to check."""
    if reason in _LOGIN_REFUSED:
        who = f"user {username!r}" if username else "an anonymous client"
        return f"the broker refused the login of {who}: {reason}; check mqtt.username and mqtt.password_file"
    if reason in _FEATURE_REFUSED:
        return f"the broker refused the connection: {reason} (the bridge needs QoS 1 and retained messages)"
    return f"the broker refused the connection: {reason}"


def describe_publish_refusal(reason: str, prefix: str, username: str | None) -> str:
    """A PUBACK refusal (an ACL, a quota): the finals stay spooled and are sent again after a reconnect."""
    who = f"user {username!r}" if username else "an anonymous client"
    return (f"the broker refused to take messages under {prefix}/ from {who}: {reason}; the finals stay spooled. "
            "Check the broker's ACL for this user and mqtt.box_id / mqtt.topic_prefix")


def read_password(path: Path | None) -> str | None:
    """The first line of mqtt.password_file (validated to exist by the config). Its path is not shown, as
    the config's messages do not show it: a technician may have written the password there."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"mqtt.password_file: cannot read it ({exc.strerror or type(exc).__name__}); "
                            "the service user needs read access") from None
    except UnicodeDecodeError:
        raise SettingsError("mqtt.password_file: not UTF-8 text") from None
    if not lines or not lines[0]:
        raise SettingsError("mqtt.password_file: the first line is empty; it must hold the password")
    return lines[0]


def tls_context(settings: MqttConfig) -> ssl.SSLContext:
    """Built once at start, so that a bad certificate or key is a start-up error, not a retry loop."""
    tls = settings.tls
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise SettingsError(f"mqtt.tls: cannot load the CA, certificate or key: {one_line(exc)}") from None
    return context
