"""`edge-asr mqtt` against a real Mosquitto: finals, partials, status, last will, outages, spool, login.

Real parts only: a mosquitto process on a free localhost port (with persistence, so a
subscriber's session survives a broker restart), a fake daemon that is the real
`Publisher` on a Unix socket, the bridge as `python -m edge mqtt` (so it can be
SIGKILLed), and a paho subscriber with a persistent session, like a fleet consumer.
One test runs the real daemon (`edge-asr run` on a long-form recording) instead of the
stand-in. The fleet side too: docs/fleet.md's ACL file in mosquitto, and
scripts/fleet_consumer.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import types
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.apps.mqtt.broker import BrokerLink
from edge.apps.mqtt.payloads import Box, Topics, final_body, status_body
from edge.apps.mqtt.spool import FILE_NAME
from edge.config import ConfigError, MqttConfig, parse_config
from edge.publish import protocol
from edge.publish.server import Publisher
from tests.conftest import EVAL_DIR, REPO, notifications, notify_socket_at
from tests.ports import accepts, free_port
from tests.test_daemon import Subscriber as SocketSubscriber
from tests.test_daemon import finish, start_daemon, write_config
from tests.test_publisher import make_publisher, wait_for
from tests.test_systemd_unit import analyze, needs_analyze, unit_with_venv

sys.path.insert(0, str(REPO / "scripts"))
from bench_latency import proc_status_mib  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="mosquitto not installed (apt-get install mosquitto mosquitto-clients)")

BOX = "box-17"
PREFIX = f"edge-asr/{BOX}"
UNIT = REPO / "systemd" / "edge-asr-mqtt.service"
FLEET_DOC = REPO / "docs" / "fleet.md"
CONSUMER = REPO / "scripts" / "fleet_consumer.py"
RECONNECT_S = 40  # a bridge that retried for a while waits up to 30 s (its backoff cap) for its next try
DAEMON_STATUS = {"audio_time_s": 1.0, "state": "running", "uptime_s": 5.0, "backend": "cpu", "model": "whisper-tiny.en-int8",
                 "language": "en", "chinese_script": "taiwan", "dropped_audio_s": 0.0, "utterances": 3, "pending_finals": 0,
                 "vocabulary": {"terms": 39, "sounds_like": 0, "source": "config", "bonus": 2.0, "prompt": "auto",
                                "advice": "vocabulary: the 39 terms"}}


class Broker:
    """mosquitto in the foreground on a fixed port; restartable with its persisted sessions."""

    def __init__(self, directory: Path, password_file: Path | None = None, tls: tuple[Path, Path] | None = None,
                 acl_file: Path | None = None) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        access = f"allow_anonymous false\npassword_file {password_file}" if password_file else "allow_anonymous true"
        if acl_file:
            access += f"\nacl_file {acl_file}"
        if tls:
            access += f"\ncertfile {tls[0]}\nkeyfile {tls[1]}"
        user = pwd.getpwuid(os.getuid()).pw_name  # as root, mosquitto would drop to a user that cannot read tmp_path
        self.config.write_text(f"listener {self.port} 127.0.0.1\n{access}\npersistence true\n"
                               f"persistence_location {directory}/\nuser {user}\nlog_dest stderr\n")
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=log, stderr=log)
        wait_for(lambda: accepts(self.port))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Subscriber:
    """A fleet consumer: persistent session, QoS 1, every message of the box kept with its QoS and retain flag."""

    def __init__(self, port: int, name: str = "fleet", clean: bool = False, topic: str = f"{PREFIX}/#",
                 login: tuple[str, str] | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=clean)
        self.client.reconnect_delay_set(0.2, 1)
        if login:
            self.client.username_pw_set(*login)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK from the broker"

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == f"{PREFIX}/{topic}"]

    def bodies(self, topic: str) -> list[Any]:
        return [json.loads(m.payload) for m in self.on(topic)]

    def latest(self, topic: str) -> mqtt.MQTTMessage | None:
        found = self.on(topic)
        return found[-1] if found else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Bridge:
    """`python -m edge mqtt` with its own config file; its log is a file, read by the assertions."""

    def __init__(self, directory: Path, sock: Path, broker_port: int, **mqtt_keys: Any) -> None:
        model = directory / "model"
        model.mkdir(parents=True, exist_ok=True)
        (model / "manifest.json").write_text("{}")
        settings = {"enabled": True, "host": "127.0.0.1", "port": broker_port, "box_id": BOX, "status_interval_s": 1,
                    "spool_dir": str(directory / "spool"), **mqtt_keys}
        self.config = directory / "config.yaml"
        self.config.write_text(json.dumps({"model": {"path": str(model)}, "log": {"level": "debug"}, "mqtt": settings}))
        self.spool = directory / "spool" / FILE_NAME
        self.log = directory / "bridge.log"
        self.sock = sock
        self.process: subprocess.Popen | None = None

    def start(self, **systemd: str) -> None:
        """`systemd`: what a unit would set (NOTIFY_SOCKET, WATCHDOG_USEC); none by default."""
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}
        env.update(systemd)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "mqtt", "--config", str(self.config), "--socket", str(self.sock)],
                cwd=REPO, env=env, stdout=log, stderr=log)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(15)
        self.process = None
        return code

    def spooled(self) -> int:
        if not self.spool.exists():
            return 0
        with sqlite3.connect(self.spool) as db:
            return db.execute("SELECT COUNT(*) FROM finals").fetchone()[0]

    def text(self) -> str:
        return self.log.read_text()

    def reading(self, times: int = 1) -> bool:
        """Subscribed to the daemon (`times` counts starts that share this log)."""
        return self.text().count("reading the daemon") >= times


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def daemon(sock_path: Path) -> Iterator[Publisher]:
    publisher = make_publisher(sock_path, status=lambda: dict(DAEMON_STATUS))
    publisher.start()
    yield publisher
    publisher.close(timeout=1.0)


@pytest.fixture
def subscriber(broker: Broker) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker.port)
    yield subscriber
    subscriber.close()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[list[Bridge]]:
    """Bridges made by a test; any still running at the end are killed."""
    made: list[Bridge] = []
    yield made
    for bridge in made:
        if bridge.process is not None:
            bridge.process.kill()
            bridge.process.wait(10)


def new_bridge(bridges: list[Bridge], tmp_path: Path, sock: Path, port: int, **mqtt_keys: Any) -> Bridge:
    bridge = Bridge(tmp_path, sock, port, **mqtt_keys)
    bridges.append(bridge)
    bridge.start()
    return bridge


def final(uid: int, text: str = "") -> protocol.Final:
    return protocol.Final(utterance_id=uid, text=text or f"utterance {uid}", start_s=uid, end_s=uid + 0.5,
                          audio_time_s=uid + 1.0, language="en")


def online(subscriber: Subscriber) -> bytes | None:
    message = subscriber.latest("online")
    return message.payload if message else None


def unique_in_order(finals: list[dict]) -> list[dict]:
    """What a consumer keeps: the first copy of each (box_id, boot_id, seq), in arrival order."""
    seen: set[tuple[str, str, int]] = set()
    kept = []
    for body in finals:
        key = (body["box_id"], body["boot_id"], body["seq"])
        if key not in seen:
            seen.add(key)
            kept.append(body)
    return kept


def test_finals_partials_status_and_the_last_will(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                  daemon: Publisher, sock_path: Path, bridges: list[Bridge]) -> None:
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, partials=True)
    wait_for(lambda: online(subscriber) == b"true" and subscriber.on("status") and bridge.reading()
             and daemon.subscriber_count == 1, timeout=10)
    daemon.publish(protocol.Partial(utterance_id=1, text="turn on", stable_text="turn", start_s=1, end_s=1.2,
                                    audio_time_s=1.3))
    for uid in (1, 2, 3):
        daemon.publish(final(uid, "把会议室的灯打开" if uid == 2 else ""))
    wait_for(lambda: len(subscriber.on("final")) == 3, timeout=10)

    finals = subscriber.on("final")
    assert {m.qos for m in finals} == {1}
    bodies = [json.loads(m.payload) for m in finals]
    assert [b["seq"] for b in bodies] == [1, 2, 3] and {b["box_id"] for b in bodies} == {BOX}
    assert len({b["boot_id"] for b in bodies}) == 1
    assert bodies[1]["text"] == "把会议室的灯打开" and bodies[1]["utterance_id"] == 2 and bodies[1]["language"] == "en"
    [partial] = subscriber.on("partial")
    assert partial.qos == 0 and json.loads(partial.payload)["stable_text"] == "turn"
    wait_for(lambda: subscriber.bodies("status")[-1]["bridge"]["finals_sent"] == 3, timeout=5)
    status = subscriber.bodies("status")[-1]
    assert status["daemon"] == "running" and status["backend"] == "cpu" and status["degraded"] is False
    assert status["model"] == "whisper-tiny.en-int8" and status["language"] == "en" and status["utterances"] == 3
    assert status["chinese_script"] == "taiwan" and status["vocabulary"] == DAEMON_STATUS["vocabulary"]  # the fleet sees advice
    assert status["bridge"]["spooled"] == 0 and status["bridge"]["spool_dropped"] == 0

    bridge.stop(signal.SIGKILL)
    wait_for(lambda: online(subscriber) == b"false", timeout=10)
    late = Subscriber(broker.port, name="late", clean=True)  # a consumer that starts later sees the retained state
    try:
        wait_for(lambda: online(late) == b"false" and late.on("status"), timeout=5)
        assert all(m.retain for m in late.on("status") + late.on("online"))
    finally:
        late.close()


def test_a_slow_uplink_gets_the_newest_partial_not_a_backlog(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                             daemon: Publisher, sock_path: Path, bridges: list[Bridge]) -> None:
    """A broker that stops reading (SIGSTOP: the kernel's socket buffers fill, then paho's queue would)
    while 60 MB of partials come: the bridge holds only the newest, so its memory stays flat; after the
    stall the last partial said arrives, then the final. (A final that comes while a partial is held
    supersedes it: `NewestPartial.superseded`.)"""
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, partials=True)
    wait_for(lambda: online(subscriber) == b"true" and bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    assert broker.process is not None and bridge.process is not None
    filler, count = "word " * 2000, 6000  # 10 kB a partial
    before = proc_status_mib(bridge.process.pid, "VmRSS")
    broker.process.send_signal(signal.SIGSTOP)
    try:
        for n in range(count):
            daemon.publish(protocol.Partial(utterance_id=1, text=f"{n} {filler}", stable_text="", start_s=1,
                                            end_s=1.2, audio_time_s=1.3))
            if n % 50 == 49:
                time.sleep(0.05)  # about as fast as the bridge reads them
        time.sleep(1)
        grown = proc_status_mib(bridge.process.pid, "VmRSS") - before
    finally:
        broker.process.send_signal(signal.SIGCONT)
    assert grown < 20, f"the bridge grew by {grown:.0f} MiB while the broker did not read"
    daemon.publish(protocol.Partial(utterance_id=2, text="the newest", stable_text="", start_s=3, end_s=3.2,
                                    audio_time_s=3.3))
    wait_for(lambda: any(b["text"] == "the newest" for b in subscriber.bodies("partial")), timeout=30)
    daemon.publish(final(2))
    wait_for(lambda: subscriber.on("final"), timeout=10)
    received = len(subscriber.on("partial"))
    wait_for(lambda: subscriber.bodies("status")[-1]["bridge"]["partials_skipped"] > 0, timeout=5)
    skipped = subscriber.bodies("status")[-1]["bridge"]["partials_skipped"]
    assert skipped > 0 and received + skipped <= count + 1, (received, skipped)


def test_an_empty_final_is_published_and_numbered_like_any_other(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                                  daemon: Publisher, sock_path: Path, bridges: list[Bridge]) -> None:
    """docs/fleet.md "Empty finals": a consumer showing partials closes the utterance on it."""
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, partials=True)
    wait_for(lambda: online(subscriber) == b"true" and bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    daemon.publish(protocol.Partial(utterance_id=1, text="hm", stable_text="", start_s=1, end_s=1.2, audio_time_s=1.3))
    daemon.publish(protocol.Final(utterance_id=1, text="", start_s=1, end_s=1.4, audio_time_s=2.0, language="en"))
    daemon.publish(final(2))
    wait_for(lambda: len(subscriber.on("final")) == 2, timeout=10)
    bodies = subscriber.bodies("final")
    assert [(b["seq"], b["utterance_id"], b["text"]) for b in bodies] == [(1, 1, ""), (2, 2, "utterance 2")]
    assert bodies[0]["is_final"] is True and bodies[0]["end_s"] == 1.4


def test_two_bridges_with_one_box_id_back_off_and_say_why(tmp_path: Path, broker: Broker, daemon: Publisher,
                                                            sock_path: Path, bridges: list[Bridge]) -> None:
    """A cloned config.yaml: both boxes connect as edge-asr-<box_id>, and the broker drops the older
    connection each time the other connects. The backoff was reset at every connect, so both reconnected
    about once a second for ever, two log lines each time; now a connection must last 60 s to reset it."""
    pair = [new_bridge(bridges, tmp_path / name, sock_path, broker.port) for name in ("a", "b")]
    time.sleep(12)
    connects = [bridge.text().count(f"connected to broker 127.0.0.1:{broker.port} as {BOX}") for bridge in pair]
    assert 2 <= sum(connects) <= 12, connects  # 0.5-1, 1-2, 2-4, 4-8 s apart (reset at each connect: ~24 in 12 s)

    def warnings() -> list[str]:
        return [line for bridge in pair for line in bridge.text().splitlines() if "connections in a row ended" in line]

    wait_for(warnings, timeout=15)  # the third connection in a row, on a box slow to start two bridges
    said = warnings()
    assert said and "another client using the client id edge-asr-" + BOX in said[0], said
    assert "mqtt.box_id must be unique on the broker" in said[0]


def test_broker_outage_spools_then_replays_everything_in_order(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                               daemon: Publisher, sock_path: Path, bridges: list[Bridge]) -> None:
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port)
    wait_for(lambda: online(subscriber) == b"true" and bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    daemon.publish(protocol.Partial(utterance_id=1, text="x", stable_text="", start_s=1, end_s=1.1, audio_time_s=1.2))
    for uid in range(1, 6):
        daemon.publish(final(uid))
    wait_for(lambda: len(subscriber.on("final")) == 5, timeout=10)

    broker.stop()
    for uid in range(6, 21):
        daemon.publish(final(uid))
    wait_for(lambda: bridge.spooled() == 15, timeout=10)
    time.sleep(2)  # a few seconds without a broker: the bridge keeps retrying
    broker.start()

    wait_for(lambda: {b["seq"] for b in subscriber.bodies("final")} == set(range(1, 21)), timeout=20)
    kept = unique_in_order(subscriber.bodies("final"))
    assert [b["seq"] for b in kept] == list(range(1, 21))
    assert [b["utterance_id"] for b in subscriber.bodies("final")][:5] == [1, 2, 3, 4, 5]
    assert subscriber.on("partial") == []  # partials are off by default
    wait_for(lambda: bridge.spooled() == 0, timeout=5)
    # The outage as the bridge logs it: the connection lost once, then the retries refused (down >= 2 s,
    # the first retry within 1 s), then connected again.
    where = f"WARNING edge.apps.mqtt.broker: broker 127.0.0.1:{broker.port}"
    lost, refused = f"{where}: connection lost (", f"{where}: connection refused (no broker listening on that port?); retrying"
    connected = f"connected to broker 127.0.0.1:{broker.port} as {BOX}"
    wait_for(lambda: bridge.text().count(connected) == 2, timeout=5)
    text = bridge.text()
    assert text.count(lost) == 1 and text.count(refused) == 1, text[-3000:]
    assert text.index(connected) < text.index(lost) < text.index(refused) < text.rindex(connected), text[-3000:]


def test_spool_survives_a_bridge_restart_and_a_late_broker(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                           daemon: Publisher, sock_path: Path,
                                                           bridges: list[Bridge]) -> None:
    broker.stop()  # down before the bridge starts; the fleet's persistent session waits in its database
    first = new_bridge(bridges, tmp_path, sock_path, broker.port)
    wait_for(first.reading, timeout=10)
    wait_for(lambda: daemon.subscriber_count == 1, timeout=10)  # registered: a final published now reaches it
    for uid in range(1, 6):
        daemon.publish(final(uid))
    wait_for(lambda: first.spooled() == 5, timeout=10)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: daemon.subscriber_count == 0, timeout=10)

    second = new_bridge(bridges, tmp_path, sock_path, broker.port)  # same spool, same log file
    wait_for(lambda: second.reading(times=2), timeout=10)
    wait_for(lambda: daemon.subscriber_count == 1, timeout=10)
    daemon.publish(final(6))
    daemon.publish(final(7))
    wait_for(lambda: second.spooled() == 7, timeout=10)
    broker.start()
    wait_for(lambda: len(unique_in_order(subscriber.bodies("final"))) == 7, timeout=RECONNECT_S)
    bodies = subscriber.bodies("final")
    assert [b["utterance_id"] for b in bodies] == list(range(1, 8))
    boots = [b["boot_id"] for b in bodies]
    assert boots[0] == boots[4] != boots[5] == boots[6]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4, 5, 1, 2]
    wait_for(lambda: second.spooled() == 0)
    wait_for(lambda: online(subscriber) == b"true", timeout=10)
    assert second.stop() == 0
    wait_for(lambda: online(subscriber) == b"false", timeout=10)  # a clean stop says so itself


@pytest.mark.skipif(not (EVAL_DIR / "longform_en").is_dir(), reason=f"shared eval data not found at {EVAL_DIR}")
def test_the_real_daemon_loses_no_final_to_broker_outages(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                          sock_path: Path, bridges: list[Bridge],
                                                          int8_model_dir: Path) -> None:
    """The real daemon on a 48 s recording at real-time pace, the bridge beside it. The broker is
    down when they start (the first finals wait in the spool), and again for several seconds
    mid-run. A plain socket subscriber records what the daemon published: MQTT carries exactly that."""
    broker.stop()  # the fleet's persistent session waits in the broker's database
    (tmp_path / "daemon").mkdir()
    config = write_config(tmp_path / "daemon", int8_model_dir, publish={"socket": str(sock_path)})
    daemon = start_daemon(config, f"file:{EVAL_DIR / 'longform_en' / 'longform_01.wav'}", "--pace", "realtime",
                          "--exit-at-end")
    try:
        said = SocketSubscriber(sock_path)
        bridge = new_bridge(bridges, tmp_path, sock_path, broker.port)
        wait_for(bridge.reading, timeout=10)  # the first final comes after 12 s of speech
        wait_for(lambda: bridge.spooled() >= 1, timeout=30)
        broker.start()
        wait_for(lambda: subscriber.on("final"), timeout=RECONNECT_S)

        broker.stop()
        down_since, finals_before = time.monotonic(), len(said.of("final"))
        wait_for(lambda: len(said.of("final")) > finals_before and bridge.spooled() >= 1, timeout=30)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - down_since)))
        broker.start()
        code, err = finish(daemon, 60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            finish(daemon, 10)
    assert code == 0, err[-3000:]
    published = [(f["utterance_id"], f["text"]) for f in said.of("final")]
    wait_for(lambda: len(unique_in_order(subscriber.bodies("final"))) >= len(published), timeout=RECONNECT_S)

    bodies = subscriber.bodies("final")
    kept = unique_in_order(bodies)
    assert len(published) >= 4 and [(b["utterance_id"], b["text"]) for b in kept] == published
    assert [b["seq"] for b in kept] == list(range(1, len(published) + 1))
    assert {b["box_id"] for b in bodies} == {BOX} and len({b["boot_id"] for b in bodies}) == 1
    copies: dict[tuple, list[dict]] = {}
    for body in bodies:
        copies.setdefault((body["box_id"], body["boot_id"], body["seq"]), []).append(body)
    assert all(copy == same[0] for same in copies.values() for copy in same)  # a duplicate is the same message
    assert any(s["daemon"] == "running" and s["model"] == int8_model_dir.name for s in subscriber.bodies("status"))


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                       daemon: Publisher, sock_path: Path,
                                                       bridges: list[Bridge]) -> None:
    broker.stop()
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, spool_max_mb=0.1)
    wait_for(lambda: bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    for uid in range(1, 201):
        daemon.publish(final(uid, "x" * 1000))  # about 1.2 kB each: 100 kB holds about 80
    wait_for(lambda: spool_newest(bridge) == 200, timeout=20)
    kept = bridge.spooled()
    assert 60 < kept < 100
    broker.start()
    wait_for(lambda: len(subscriber.bodies("final")) >= kept and bridge.spooled() == 0, timeout=RECONNECT_S)
    seqs = [b["seq"] for b in unique_in_order(subscriber.bodies("final"))]
    assert seqs == list(range(201 - kept, 201))  # the newest, in order; the oldest were dropped
    wait_for(lambda: subscriber.bodies("status")[-1]["bridge"]["spool_dropped"] == 200 - kept, timeout=5)
    assert bridge.process.poll() is None
    assert bridge.text().count("spool full (mqtt.spool_max_mb: 0.1): dropping the oldest finals") == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 kB tmpfs, so that a test can fill it; skipped where mounting is not allowed."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill it: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> None:
    with contextlib.suppress(OSError), (directory / "ballast").open("wb", buffering=0) as ballast:
        while True:
            ballast.write(b"\0" * 4096)


def test_a_full_disk_moves_the_spool_into_memory_and_loses_no_final(
        tmp_path: Path, small_disk: Path, broker: Broker, subscriber: Subscriber, daemon: Publisher, sock_path: Path,
        bridges: list[Bridge]) -> None:
    """The spool's file stops taking writes: the bridge died at the error (exit 1), and after each restart
    at its first final again, until systemd gave up, while the daemon's replay window ran out."""
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, spool_dir=str(small_disk / "spool"))
    wait_for(lambda: online(subscriber) == b"true" and bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    for uid in range(1, 4):
        daemon.publish(final(uid))
    wait_for(lambda: len(subscriber.bodies("final")) == 3, timeout=10)
    fill(small_disk)
    for uid in range(4, 44):
        daemon.publish(final(uid, "y" * 2000))
    wait_for(lambda: {b["seq"] for b in subscriber.bodies("final")} == set(range(1, 44)), timeout=20)
    assert bridge.process.poll() is None
    wait_for(lambda: subscriber.bodies("status")[-1]["bridge"]["spool_on_disk"] is False, timeout=5)
    (said,) = [line for line in bridge.text().splitlines() if "finals are kept in memory" in line]
    assert "failed (database or disk is full)" in said and "systemctl restart edge-asr-mqtt" in said


def test_a_bad_password_is_a_clear_line_and_retries(tmp_path: Path, daemon: Publisher, sock_path: Path, bridges: list[Bridge]) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", password_file=password_file(tmp_path / "broker" / "passwd", {BOX: "right"}))
    broker.start()
    (tmp_path / "wrong").write_text("wrong\n")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "right").write_text("right\n")
    try:
        bad = new_bridge(bridges, tmp_path, sock_path, broker.port, username=BOX,
                         password_file=str(tmp_path / "wrong"))
        refused = f"the broker refused the login of user '{BOX}': Not authorized; check mqtt.username and mqtt.password_file"
        wait_for(lambda: bad.text().count(refused) >= 2, timeout=15)  # logged, retried, still alive
        assert bad.process.poll() is None and "Traceback" not in bad.text()
        assert bad.text().count(f"WARNING edge.apps.mqtt.broker: broker 127.0.0.1:{broker.port}: {refused}") == 1

        good = new_bridge(bridges, tmp_path / "good", sock_path, broker.port, username=BOX,
                          password_file="right")
        wait_for(lambda: f"connected to broker 127.0.0.1:{broker.port} as {BOX}" in good.text(), timeout=10)
    finally:
        broker.stop()


def test_finals_the_broker_acl_refuses_stay_spooled_until_it_takes_them(tmp_path: Path, daemon: Publisher,
                                                                         sock_path: Path, bridges: list[Bridge]) -> None:
    """box_id that is not the ACL's user (docs/fleet.md's `pattern write edge-asr/%u/#`): over MQTT 3.1.1
    the broker acknowledged the refused finals, the spool deleted them and nothing said so."""
    (tmp_path / "broker").mkdir()
    logins = {"room-3": "pw", "fleet-reader": "pr"}
    acl = tmp_path / "broker" / "acl"
    acl.write_text(doc_block(FLEET_DOC, "# /etc/mosquitto/acl"))
    broker = Broker(tmp_path / "broker", password_file=password_file(tmp_path / "broker" / "passwd", logins),
                    acl_file=acl)
    broker.start()
    (tmp_path / "pw").write_text("pw\n")
    reader = Subscriber(broker.port, "fleet-reader", clean=True, topic="edge-asr/#", login=("fleet-reader", "pr"))
    try:
        bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, username="room-3", password_file="pw")
        wait_for(bridge.reading, timeout=15)
        for uid in range(3):
            daemon.publish(final(uid))
        refused = "the broker refused to take messages under edge-asr/box-17/ from user 'room-3': Not authorized"
        wait_for(lambda: bridge.spooled() == 3, timeout=10)
        seen = bridge.text().count(refused)
        wait_for(lambda: bridge.text().count(refused) >= seen + 2, timeout=RECONNECT_S)  # sessions since, each refused
        assert bridge.spooled() == 3 and reader.messages == []

        acl.write_text(acl.read_text() + "\nuser room-3\ntopic write edge-asr/box-17/#\n")  # the fix, as an admin would
        broker.process.send_signal(signal.SIGHUP)  # mosquitto re-reads its ACL file
        wait_for(lambda: len([m for m in reader.messages if m.topic.endswith("/final")]) >= 3, timeout=RECONNECT_S)
        wait_for(lambda: bridge.spooled() == 0, timeout=10)
        got = [json.loads(m.payload)["seq"] for m in reader.messages if m.topic.endswith("/final")]
        assert sorted(set(got)) == [1, 2, 3]
    finally:
        reader.close()
        broker.stop()


@pytest.mark.parametrize(("mqtt_keys", "line"), [
    ({"host": "no-such-broker.invalid"}, "WARNING edge.apps.mqtt.broker: broker no-such-broker.invalid:{port}: "
                                         "cannot resolve the host name ("),
    ({"tls": {"enabled": True}}, "broker 127.0.0.1:{port}: the broker hung up during the TLS handshake; "
                                 "is this the broker's TLS port? check mqtt.port; retrying"),
])
def test_unreachable_brokers_are_named_clearly(tmp_path: Path, broker: Broker, daemon: Publisher, sock_path: Path,
                                               bridges: list[Bridge], mqtt_keys: dict, line: str) -> None:
    """The TLS case speaks TLS to a plain listener. Both keep retrying, and keep spooling."""
    bridge = new_bridge(bridges, tmp_path, sock_path, broker.port, **mqtt_keys)
    wait_for(lambda: line.format(port=broker.port) in bridge.text() and bridge.reading()
             and daemon.subscriber_count == 1, timeout=10)
    daemon.publish(final(1))
    wait_for(lambda: bridge.spooled() == 1, timeout=10)
    # Retried: the same reason again (at debug: a repeated reason is not warned again), the bridge alive.
    reason = line.format(port=broker.port).removeprefix("WARNING edge.apps.mqtt.broker: ")
    wait_for(lambda: bridge.text().count(reason) >= 2, timeout=15)
    assert bridge.text().count(f"WARNING edge.apps.mqtt.broker: {reason}") == 1, bridge.text()[-3000:]
    assert bridge.process.poll() is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (apt-get install openssl)")
def test_tls_checks_the_broker_certificate(tmp_path: Path, sock_path: Path, bridges: list[Bridge]) -> None:
    """A self-signed broker: refused with the system's CAs, accepted with mqtt.tls.ca_file naming it."""
    (tmp_path / "broker").mkdir()
    cert, key = tmp_path / "broker" / "cert.pem", tmp_path / "broker" / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", tls=(cert, key))
    broker.start()
    try:
        refused = new_bridge(bridges, tmp_path, sock_path, broker.port, tls={"enabled": True})
        wait_for(lambda: "TLS: the broker's certificate was rejected (self-signed certificate)" in refused.text(),
                 timeout=10)
        (tmp_path / "trusting").mkdir()
        trusting = new_bridge(bridges, tmp_path / "trusting", sock_path, broker.port,
                              tls={"enabled": True, "ca_file": str(cert)})
        wait_for(lambda: f"connected to broker 127.0.0.1:{broker.port} as {BOX}" in trusting.text(), timeout=10)
    finally:
        broker.stop()


def test_the_bridge_follows_a_daemon_restart(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                             sock_path: Path, bridges: list[Bridge]) -> None:
    daemon = make_publisher(sock_path, status=lambda: dict(DAEMON_STATUS))
    daemon.start()
    new_bridge(bridges, tmp_path, sock_path, broker.port)
    wait_for(lambda: subscriber.on("status") and subscriber.bodies("status")[-1]["daemon"] == "running", timeout=10)
    daemon.publish(final(1))
    daemon.close(timeout=1.0)
    wait_for(lambda: subscriber.bodies("status")[-1]["daemon"] == "unreachable", timeout=10)
    assert subscriber.bodies("status")[-1]["backend"] is None

    degraded = {"backend_requested": "cuda", "degraded": True, "degraded_reason": "cuda: no GPU; running on the CPU",
                "lag_s": 12.5, "overload": "greedy_finals", "finals_dropped": 0}
    restarted = make_publisher(sock_path, status=lambda: {**DAEMON_STATUS, **degraded})
    restarted.start()
    try:
        wait_for(lambda: subscriber.bodies("status")[-1]["daemon"] == "running", timeout=15)
        assert subscriber.bodies("status")[-1].items() >= degraded.items()
        restarted.publish(final(1))  # utterance ids restart with the daemon; seq does not
        wait_for(lambda: len(subscriber.on("final")) == 2, timeout=10)
        assert [b["seq"] for b in subscriber.bodies("final")] == [1, 2]
    finally:
        restarted.close(timeout=1.0)


def test_finals_published_while_the_bridge_was_away_are_replayed(tmp_path: Path, broker: Broker, subscriber: Subscriber,
                                                                 sock_path: Path, bridges: list[Bridge]) -> None:
    """The bridge killed while the daemon goes on, then the daemon restarted while the bridge is down:
    after each start the bridge asks for the finals after the last one it spooled (a new daemon run:
    all it holds), so the fleet gets every final once, in order; what the daemon no longer holds is counted."""
    daemon = make_publisher(sock_path, status=lambda: dict(DAEMON_STATUS))
    daemon.start()
    first = new_bridge(bridges, tmp_path, sock_path, broker.port)
    wait_for(lambda: first.reading() and daemon.subscriber_count == 1, timeout=10)
    for uid in (1, 2):
        daemon.publish(final(uid, f"a{uid}"))
    wait_for(lambda: len(subscriber.on("final")) == 2, timeout=10)
    first.stop(signal.SIGKILL)
    wait_for(lambda: daemon.subscriber_count == 0, timeout=10)
    for uid in (3, 4):  # nobody reads these
        daemon.publish(final(uid, f"a{uid}"))

    second = new_bridge(bridges, tmp_path, sock_path, broker.port)
    wait_for(lambda: second.reading(times=2) and daemon.subscriber_count == 1, timeout=10)
    daemon.publish(final(5, "a5"))
    wait_for(lambda: len(unique_in_order(subscriber.bodies("final"))) == 5, timeout=10)
    second.stop(signal.SIGKILL)
    daemon.close(timeout=1.0)

    restarted = make_publisher(sock_path, status=lambda: dict(DAEMON_STATUS), max_pending_finals=4)  # holds 2
    restarted.start()
    try:
        for uid in (1, 2, 3, 4):
            restarted.publish(final(uid, f"b{uid}"))
        third = new_bridge(bridges, tmp_path, sock_path, broker.port)
        wait_for(lambda: len(unique_in_order(subscriber.bodies("final"))) == 7, timeout=10)
        wait_for(lambda: subscriber.bodies("status")[-1]["bridge"]["daemon_missed"] == 2, timeout=10)
    finally:
        restarted.close(timeout=1.0)
    assert [b["text"] for b in unique_in_order(subscriber.bodies("final"))] == ["a1", "a2", "a3", "a4", "a5", "b3", "b4"]
    assert "re-sent 2 final(s)" in second.text() and "2 final(s) published while the bridge" in third.text()
    assert third.stop() == 0


def test_a_bridge_stuck_in_a_spool_write_withholds_the_watchdog_and_loses_nothing(
        tmp_path: Path, broker: Broker, subscriber: Subscriber, daemon: Publisher, sock_path: Path,
        bridges: list[Bridge]) -> None:
    """Idle, the bridge pings; a spool write held up (here by another process's lock on the file, for
    less than sqlite's 5 s wait) stops the pings, so that a write hung for good gets the bridge restarted."""
    notify = notify_socket_at(tmp_path / "notify.sock")
    bridge = Bridge(tmp_path, sock_path, broker.port)
    bridges.append(bridge)
    bridge.start(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000")  # checked every 1 s
    wait_for(lambda: online(subscriber) == b"true" and bridge.reading() and daemon.subscriber_count == 1, timeout=10)
    idle = [line for _, line in notifications(notify, 2.5)]
    assert "READY=1" in idle and idle.count("WATCHDOG=1") >= 2, idle
    lock = sqlite3.connect(bridge.spool, timeout=0)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        daemon.publish(final(1))
        published = time.monotonic()
        held = notifications(notify, 3.5)
    finally:
        lock.rollback()
        lock.close()
    late = [round(at - published, 2) for at, line in held if line == "WATCHDOG=1" and at > published + 2.2]
    assert late == [], f"pings while the write was stuck: {late}"
    assert "stuck in one piece of work: mqtt-feed for" in bridge.text()
    assert "WATCHDOG=1" in [line for _, line in notifications(notify, 2.5)]
    wait_for(lambda: len(subscriber.on("final")) == 1, timeout=10)
    assert json.loads(subscriber.on("final")[0].payload)["text"] == "utterance 1"
    assert "kept in memory" not in bridge.text() and bridge.stop() == 0
    notify.close()


def test_every_piece_of_the_bridges_work_is_timed_by_the_watchdog(tmp_path: Path, broker: Broker, daemon: Publisher,
                                                                   sock_path: Path) -> None:
    """Each thread's work runs inside `working(its name)`: the daemon's events (mqtt-feed), the turns of
    paho's loop and the end of a broker connection (mqtt-link: it settles acknowledged finals, a spool
    write), and the status tick (mqtt-status). Unmarked work could hang without stopping the pings."""
    from edge.apps.mqtt.bridge import Bridge as BridgeCore

    active: set[str] = set()

    @contextlib.contextmanager
    def working(name: str) -> Iterator[None]:
        active.add(name)
        try:
            yield
        finally:
            active.discard(name)

    settings = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, box_id=BOX, status_interval_s=1,
                          spool_dir=tmp_path / "spool")
    core = BridgeCore(settings, str(sock_path), working=working)
    marked: dict[str, list[bool]] = {}  # per method: was its thread's name marked at each call
    for owner, method, name in ((core._feed, "_on_event", "mqtt-feed"), (core, "link_down", "mqtt-link"),
                                (core, "tick", "mqtt-link"), (core, "_status_tick", "mqtt-status")):
        def spy(*args: Any, _method: str = method, _name: str = name, _real: Any = getattr(owner, method)) -> Any:
            marked.setdefault(_method, []).append(_name in active)
            return _real(*args)
        setattr(owner, method, spy)
    runner = threading.Thread(target=core.run)
    runner.start()
    try:
        wait_for(lambda: daemon.subscriber_count == 1 and "tick" in marked and "_status_tick" in marked, timeout=10)
        daemon.publish(final(1))
        wait_for(lambda: "_on_event" in marked, timeout=10)
        broker.stop()
        wait_for(lambda: "link_down" in marked, timeout=10)
    finally:
        core.stop()
        runner.join(10)
    assert {method: all(calls) for method, calls in marked.items()} == dict.fromkeys(
        ("_on_event", "link_down", "tick", "_status_tick"), True), marked


class _OfflineBridge:
    """The bridge's feed-thread side alone: events in through its entry points, requests recorded, a real spool."""

    def __init__(self, spool_dir: Path, partials: bool = False) -> None:
        from edge.apps.mqtt.bridge import Bridge as BridgeCore
        from edge.config import MqttConfig

        settings = MqttConfig(enabled=True, box_id=BOX, spool_dir=spool_dir, port=1, partials=partials)
        self.core = BridgeCore(settings, "/nonexistent.sock")
        self.asked: list[int] = []
        self.core._feed.request_replay = lambda after: self.asked.append(after) or True
        self.core._feed.request_status = lambda: True
        self.spool_dir = spool_dir

    def hello(self, run_id: str) -> None:
        self.core._on_event({"type": "hello", "audio_time_s": 0.0, "run_id": run_id})

    def finals(self, *ids: int) -> None:
        for uid in ids:
            self.core._on_event(final(uid).to_dict() if uid < 2**53 else {**final(1).to_dict(), "utterance_id": uid})

    def partial(self, text: str, uid: int = 1) -> None:
        self.core._on_event(protocol.Partial(utterance_id=uid, text=text, stable_text="", start_s=1, end_s=1.2,
                                             audio_time_s=1.3).to_dict())

    def replayed(self, count: Any, missing: Any) -> None:
        self.core._on_event({"type": "replay", "audio_time_s": 1.0, "after": 0, "count": count, "missing": missing})

    def down(self) -> None:
        self.core._daemon_down("the daemon closed the connection")

    def spooled(self) -> list[int]:
        with sqlite3.connect(self.spool_dir / FILE_NAME) as db:
            return [json.loads(row[0])["utterance_id"] for row in db.execute("SELECT payload FROM finals ORDER BY id")]


def test_a_replay_cut_short_is_asked_again_from_its_gap(tmp_path: Path) -> None:
    bridge = _OfflineBridge(tmp_path)
    bridge.hello("R")
    bridge.finals(*range(1, 11))
    bridge.down()
    bridge.hello("R")  # asks after 10
    bridge.finals(20, 21, 11, 12, 13)  # two live finals, then the replay, cut after 13
    bridge.down()
    bridge.hello("R")
    assert bridge.asked == [10, 13] and bridge.spooled() == list(range(1, 14))  # 20, 21 come again after 14-19


def test_a_daemon_restart_before_the_first_final_is_replayed_from_the_start(tmp_path: Path) -> None:
    """A fresh spool (or one made before replay existed) has no last final; a run seen is enough."""
    bridge = _OfflineBridge(tmp_path)
    bridge.hello("R1")  # a first start: nothing to ask
    bridge.down()
    bridge.hello("R2")
    bridge.finals(4, 1, 2, 3)
    bridge.replayed(3, 0)
    assert bridge.asked == [0] and bridge.spooled() == [1, 2, 3, 4]


@pytest.mark.parametrize("reason", ["unknown_type", "replay_unavailable"])  # an older daemon; a replay that failed
def test_a_refused_replay_lets_the_held_finals_through(tmp_path: Path, reason: str) -> None:
    bridge = _OfflineBridge(tmp_path)
    bridge.hello("R")
    bridge.finals(1)
    bridge.down()
    bridge.hello("R")
    bridge.finals(2)
    bridge.core._on_event({"type": "error", "audio_time_s": 1.0, "reason": reason, "message": "no replay"})
    bridge.finals(3)
    assert bridge.spooled() == [1, 2, 3]


def test_a_daemon_that_stops_answering_status_requests_is_reported_not_left_running(tmp_path: Path) -> None:
    bridge = _OfflineBridge(tmp_path)
    published: list[dict] = []
    bridge.core._publish = lambda topic, body, qos, retain: published.append(json.loads(body))
    bridge.core._on_event({"type": "status", **DAEMON_STATUS})
    assert published[-1]["daemon"] == "running"
    bridge.core._status_tick()  # asked; the answer comes back as an event
    bridge.core._on_event({"type": "status", **DAEMON_STATUS})
    bridge.core._status_tick()
    assert [body["daemon"] for body in published] == ["running", "running"]
    bridge.core._status_tick()  # the last request was never answered (a wedged daemon, its socket open)
    assert published[-1]["daemon"] == "unreachable" and published[-1]["state"] is None
    assert published[-1]["daemon_error"] == "connected but not answering status requests (none in 30 s)"
    bridge.core._status_tick()
    assert len(published) == 4 and published[-1]["daemon"] == "unreachable"  # still told every interval
    bridge.core._on_event({"type": "status", **DAEMON_STATUS})
    assert published[-1]["daemon"] == "running" and published[-1]["daemon_error"] is None


def test_numbers_out_of_range_from_the_daemon_do_not_stop_the_bridge(tmp_path: Path) -> None:
    bridge = _OfflineBridge(tmp_path)
    bridge.hello("R")
    bridge.finals(1, 2**63)  # kept, without a place in the replay order
    bridge.replayed(True, 2**63)
    assert bridge.spooled() == [1, 2**63] and bridge.core._spool.last_final == ("R", 1)
    assert bridge.core._spool.missed == 0


class _Link:
    """What the bridge uses of a paho client: publish, numbering each message; `written` is what its
    messages' `is_published()` says (False: an uplink that never takes them), `rc` what `publish` returns."""

    def __init__(self, written: bool = True, rc: int = mqtt.MQTT_ERR_SUCCESS) -> None:
        self.sent: list[int] = []
        self.partials: list[str] = []
        self.written = written
        self.rc = rc

    def publish(self, topic: str, body: bytes, qos: int = 0, retain: bool = False) -> Any:
        self.sent.append(json.loads(body).get("utterance_id", -1) if topic.endswith("/final") else -1)
        if topic.endswith("/partial"):
            self.partials.append(json.loads(body)["text"])
        return types.SimpleNamespace(mid=len(self.sent), rc=self.rc, is_published=lambda: self.written)


def test_a_held_partial_goes_out_after_the_one_before_unless_its_final_came(tmp_path: Path) -> None:
    """The partial held behind an unwritten one is sent once that one is written; a final of its
    utterance drops it, a replayed final of an earlier utterance does not."""
    bridge = _OfflineBridge(tmp_path, partials=True)
    link = _Link(written=False)
    bridge.core.link_up(link)
    bridge.hello("R")
    bridge.partial("one", uid=1)
    bridge.partial("one more", uid=1)
    bridge.finals(1)
    bridge.partial("three", uid=3)
    bridge.partial("three more", uid=3)
    bridge.finals(2)  # a replayed final, say: utterance 3's partial stays held
    link.written = True
    bridge.core.tick()
    assert link.partials == ["one", "three more"]
    link.written = False
    bridge.partial("four", uid=4)
    bridge.partial("four more", uid=4)
    bridge.finals(4)
    link.written = True
    bridge.core.tick()
    assert link.partials == ["one", "three more"] and bridge.core._partials.skipped == 4


def test_a_partial_stuck_on_a_lost_connection_does_not_hold_back_the_next_ones(tmp_path: Path) -> None:
    """The newest partial waits for the one before it to be written; a connection that ends first
    never writes it, and the next connection must not go on waiting for it."""
    bridge = _OfflineBridge(tmp_path, partials=True)
    first = _Link(written=False)
    bridge.core.link_up(first)
    bridge.partial("a")
    bridge.partial("b")
    bridge.core.tick()
    assert first.partials == ["a"]
    bridge.core.link_down("the broker went away")
    second = _Link()
    bridge.core.link_up(second)
    bridge.partial("c")
    bridge.partial("d")
    assert second.partials == ["c", "d"]


def test_every_partial_not_written_to_the_broker_is_counted(tmp_path: Path) -> None:
    """`partials_skipped` counts what never reached the broker: partials that came while it was away,
    and the one paho had not written when the connection ended (the next has a new client), besides
    the held ones; a written one is not counted."""
    bridge = _OfflineBridge(tmp_path, partials=True)
    bridge.partial("away")
    bridge.partial("still away")
    assert bridge.core._partials.skipped == 2
    slow = _Link(written=False)
    bridge.core.link_up(slow)
    bridge.partial("queued")
    bridge.partial("held")
    bridge.core.link_down("the broker went away")
    assert slow.partials == ["queued"] and bridge.core._partials.skipped == 4
    fast = _Link()
    bridge.core.link_up(fast)
    bridge.partial("written")
    bridge.core.link_down("the broker went away again")
    assert fast.partials == ["written"] and bridge.core._partials.skipped == 4
    closing = _Link(rc=mqtt.MQTT_ERR_NO_CONN)  # paho closed the socket in this turn; link_down comes after it
    bridge.core.link_up(closing)
    bridge.partial("refused")
    assert bridge.core._partials.skipped == 5


def test_finals_acknowledged_as_the_link_drops_are_not_sent_again(tmp_path: Path) -> None:
    """paho can read PUBACKs in the same loop call that loses the connection: they used to be
    thrown away by the next connection, and those finals were sent twice."""
    bridge = _OfflineBridge(tmp_path)
    first = _Link()
    bridge.core.link_up(first)
    bridge.hello("R")
    bridge.finals(1, 2, 3)
    for mid, uid in enumerate(first.sent, 1):
        if uid in (1, 2):
            bridge.core.acked(first, mid)
    bridge.core.link_down("the broker went away")
    second = _Link()
    bridge.core.link_up(second)
    assert [uid for uid in second.sent if uid > 0] == [3] and bridge.spooled() == [3]


def test_disabled_bridge_exits_with_ex_config(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, tmp_path / "none.sock", 1883, enabled=False)
    result = subprocess.run([sys.executable, "-m", "edge", "mqtt", "--config", str(bridge.config)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert f"mqtt.enabled is false in {bridge.config}: set it to true" in result.stderr


@pytest.mark.parametrize(("mqtt_keys", "message"), [
    ({"password": "secret"}, "mqtt.password is not a known key; did you mean mqtt.password_file?"),
    ({"host": "mqtt://broker.example.com"}, 'mqtt.host: "mqtt://broker.example.com" is a URL'),
    ({"topic_prefix": "fleet/+/x"}, 'mqtt.topic_prefix: "fleet/+/x" contains a wildcard'),
    ({"box_id": "room 1"}, 'mqtt.box_id: "room 1" is not usable as one MQTT topic level'),
    ({"password_file": "pw"}, "mqtt.password_file: (not shown) is set but mqtt.username is null"),
    ({"tls": {"ca_fil": "ca.pem"}}, "mqtt.tls.ca_fil is not a known key; did you mean mqtt.tls.ca_file?"),
    ({"tls": {"enabled": True, "key_file": "key.pem"}}, 'mqtt.tls.key_file: "key.pem" is set but mqtt.tls.cert_file is null'),
    ({"tls": {"ca_file": "ca.pem"}}, 'mqtt.tls.ca_file: "ca.pem" is set but mqtt.tls.enabled is false'),
    ({"spool_max_mb": 0}, "mqtt.spool_max_mb: 0 is out of range; expected a number of MB from 0.1 to 100000"),
    ({"port": 0}, 'mqtt.port: 0 is not allowed; expected "auto" (1883, or 8883 with mqtt.tls.enabled)'),
])
def test_config_errors_name_the_key_and_the_fix(tmp_path: Path, mqtt_keys: dict, message: str) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"path": "model"}, "mqtt": mqtt_keys}, base_dir=tmp_path)
    assert any(message in line for line in info.value.messages), info.value.messages


def test_a_daemon_that_turns_the_bridge_away_is_named_and_retried_with_backoff(
        tmp_path: Path, broker: Broker, sock_path: Path, bridges: list[Bridge]) -> None:
    """publish.max_subscribers reached: the backoff used to restart at every accepted-then-refused
    connection (42 tries in 30 s, each a log line) and the reason read 'the daemon closed the connection'."""
    publisher = make_publisher(sock_path, status=lambda: dict(DAEMON_STATUS), max_subscribers=1)
    publisher.start()
    holder = SocketSubscriber(sock_path)
    try:
        bridge = new_bridge(bridges, tmp_path, sock_path, broker.port)
        time.sleep(8)
        tries = [line for line in bridge.text().splitlines() if "retrying" in line and "too_many_subscribers" in line]
        assert 1 <= len(tries) <= 5, tries  # 0.5-1, 1-2, 2-4, 4-8 s apart (at a restarted backoff: ~11 in 8 s)
        assert "the daemon refused this subscriber: 1 subscribers are connected" in tries[0]
        assert bridge.stop() == 0
    finally:
        holder._sock.close()
        publisher.close(timeout=1.0)


def test_a_daemon_with_a_newer_protocol_is_refused_by_name(sock_path: Path) -> None:
    """docs/protocol.md: refuse a newer protocol_version, whose fields may mean something else."""
    from edge.apps.mqtt.feed import DaemonFeed

    sock_path.parent.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    events: list[dict] = []
    feed = DaemonFeed(str(sock_path), events.append, lambda reason: None)

    def daemon() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"type":"hello","audio_time_s":0.0,"protocol_version":2,"model":"m","backend":"cpu",'
                         b'"sample_rate":16000}\n{"type":"final","audio_time_s":1.0}\n')
            conn.settimeout(3.0)  # a bridge that reads on is cut off here, and the test fails rather than hangs
            with contextlib.suppress(TimeoutError):
                conn.recv(10)

    thread = threading.Thread(target=daemon)
    thread.start()
    try:
        reason = feed._follow(threading.Event())
    finally:
        thread.join()
        server.close()
    assert reason == "the daemon speaks protocol 2, newer than this MQTT bridge's 1: upgrade edge-asr" and events == []


class _QuietListener:
    def link_up(self, client: mqtt.Client) -> None: ...
    def link_down(self, reason: str) -> None: ...
    def acked(self, client: mqtt.Client, mid: int) -> None: ...
    def tick(self) -> None: ...


def test_only_the_link_thread_writes_to_the_broker(tmp_path: Path, broker: Broker, subscriber: Subscriber) -> None:
    """The feed thread publishes partials while the link thread runs paho's loop(): with paho writing
    on both threads, interleaved bytes made mosquitto drop the bridge for a protocol error."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    settings = parse_config({"model": {"path": "model"}, "mqtt": {"host": "127.0.0.1", "port": broker.port,
                                                                  "box_id": BOX}}, base_dir=tmp_path).mqtt
    client = BrokerLink(settings, Topics.under(PREFIX), _QuietListener())._client()
    writers: list[str] = []
    write = client.loop_write
    client.loop_write = lambda: writers.append(threading.current_thread().name) or write()  # type: ignore[method-assign]
    client.connect("127.0.0.1", broker.port)
    try:
        wait_for(lambda: client.loop(0.05) == mqtt.MQTT_ERR_SUCCESS and client.is_connected(), timeout=5)
        feed = threading.Thread(target=lambda: [client.publish(f"{PREFIX}/partial", b"p", qos=0) for _ in range(50)],
                                name="mqtt-feed")
        feed.start()
        feed.join()
        wait_for(lambda: client.loop(0.05) == mqtt.MQTT_ERR_SUCCESS and len(subscriber.on("partial")) == 50, timeout=5)
    finally:
        client.disconnect()
    assert writers and set(writers) == {threading.current_thread().name}, set(writers)


def test_a_broker_without_mqtt_5_gets_3_1_1_and_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 3.1.1-only broker (some managed ones) answers a 5 CONNECT with CONNACK 1: the bridge must still connect."""
    server = socket.create_server(("127.0.0.1", 0))
    levels: list[int] = []

    def serve() -> None:
        for answer in (b"\x20\x02\x00\x01", b"\x20\x02\x00\x00"):  # unacceptable protocol version; accepted
            conn, _ = server.accept()
            connect = conn.recv(4096)
            levels.append(connect[connect.index(b"MQTT") + 4])
            conn.sendall(answer)
            if answer.endswith(b"\x01"):
                conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    settings = parse_config({"model": {"path": "model"}, "mqtt": {"host": "127.0.0.1", "port": server.getsockname()[1],
                                                                  "box_id": BOX}}, base_dir=tmp_path).mqtt
    stop = threading.Event()
    link = threading.Thread(target=BrokerLink(settings, Topics.under(PREFIX), _QuietListener()).run, args=(stop,))
    with caplog.at_level(logging.WARNING, logger="edge.apps.mqtt.broker"):
        link.start()
        wait_for(lambda: len(levels) == 2, timeout=10)
        stop.set()
        link.join(10)
    assert levels == [5, 4]
    assert "speaks only MQTT 3.1.1: using it" in caplog.text


def test_config_defaults_follow_the_box(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "manifest.json").write_text("{}")
    settings = parse_config({"model": {"path": "model"}, "mqtt": {"tls": {"enabled": True}}}, base_dir=tmp_path).mqtt
    assert settings.box_id == socket.gethostname() and settings.topic_prefix == f"edge-asr/{socket.gethostname()}"
    assert settings.broker_port == 8883 and settings.tls.ca_file is None


@needs_analyze
def test_the_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    result = analyze("verify", str(unit_with_venv(tmp_path, UNIT)))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    security = analyze("security", "--offline=true", str(UNIT))
    assert "Overall exposure level for edge-asr-mqtt.service: 1." in security.stdout + security.stderr
    lines = set(UNIT.read_text().splitlines())
    assert {"RestartPreventExitStatus=78", "IPAddressDeny=any", "StateDirectory=edge-asr/mqtt", "Type=notify",
            "WatchdogSec=60s"} <= lines
    # stopped after the daemon, so the final it flushes while stopping reaches the spool
    assert "Before=edge-asr.service" in lines and not any(
        line.startswith("After=") and "edge-asr.service" in line for line in lines)
    # and nothing that would hold the daemon's start until the network is online
    assert not any("network-online.target" in line for line in lines if not line.startswith("#"))


def test_the_fleet_acl_keeps_each_box_in_its_prefix(tmp_path: Path) -> None:
    """docs/fleet.md's ACL file, as written there: a box cannot write under another box's prefix nor
    read other boxes; the consumer user reads them all and writes nothing."""
    (tmp_path / "broker").mkdir()
    acl = tmp_path / "broker" / "acl"
    acl.write_text(doc_block(FLEET_DOC, "# /etc/mosquitto/acl"))
    logins = {"box-a": "pa", "box-b": "pb", "fleet-reader": "pr"}
    broker = Broker(tmp_path / "broker", password_file=password_file(tmp_path / "broker" / "passwd", logins),
                    acl_file=acl)
    broker.start()
    opened: list[Subscriber] = []
    try:
        reader, nosy = (Subscriber(broker.port, user, clean=True, topic="edge-asr/#", login=(user, logins[user]))
                        for user in ("fleet-reader", "box-b"))
        opened += [reader, nosy]
        for user, topic in (("box-a", "edge-asr/box-b/final"), ("fleet-reader", "edge-asr/box-a/final"),
                            ("box-a", "edge-asr/box-a/final")):  # acknowledged one by one: the allowed one is last
            publish_as(broker.port, (user, logins[user]), topic)
        wait_for(lambda: reader.messages, timeout=5)
        assert [(m.topic, m.payload) for m in reader.messages] == [("edge-asr/box-a/final", b"box-a")]
        assert nosy.messages == []
    finally:
        for subscriber in opened:
            subscriber.close()
        broker.stop()


def test_the_fleet_consumer_shows_every_box_and_each_final_once(tmp_path: Path, broker: Broker) -> None:
    """scripts/fleet_consumer.py for a couple of seconds: retained status fills the table, a duplicate is dropped."""
    boxes = {name: Box(name, f"boot-{name}") for name in ("room-1", "room-3")}
    bridge = {"spooled": 0, "spool_dropped": 0, "last_broker_error": None}
    retained = [("room-1/status", status_body(boxes["room-1"], DAEMON_STATUS, None, bridge)), ("room-1/online", b"true"),
                ("room-3/status", status_body(boxes["room-3"], None, "no socket", {**bridge, "spooled": 2}))]
    for topic, body in retained:
        publish_as(broker.port, None, f"edge-asr/{topic}", body, retain=True)
    out, err = tmp_path / "consumer.out", tmp_path / "consumer.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        consumer = subprocess.Popen([sys.executable, str(CONSUMER), "--port", str(broker.port)], stdout=stdout,
                                    stderr=stderr)
    try:
        wait_for(lambda: "subscribed" in err.read_text(), timeout=10)
        for name, seq in (("room-1", 1), ("room-1", 2), ("room-1", 1), ("room-3", 1)):  # the second seq 1: a re-send
            event = json.loads(final(seq, f"{name} says {seq}").encode())
            publish_as(broker.port, None, f"edge-asr/{name}/final", final_body(event, boxes[name], seq))
        publish_as(broker.port, None, "edge-asr/room-3/online", b"false", retain=True)
        wait_for(lambda: "room-3 says 1" in out.read_text() and "room-3  false" in out.read_text(), timeout=10)
    finally:
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(10) == 0
    lines = out.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines if " #" in line] == [
        "room-1 #1 [en] room-1 says 1", "room-1 #2 [en] room-1 says 2", "room-3 #1 [en] room-3 says 1"]
    table = lines[max(i for i, line in enumerate(lines) if line.startswith("box ")):]
    assert [row.split() for row in table[:3]] == [
        ["box", "online", "daemon", "backend", "degraded", "model", "lang", "spooled", "dropped", "broker", "error"],
        ["room-1", "true", "running", "cpu", "no", "whisper-tiny.en-int8", "en", "0", "0", "-"],
        ["room-3", "false", "unreachable", "-", "-", "-", "-", "2", "0", "-"]]
    assert "1 duplicate final(s) dropped" in err.read_text()


def password_file(path: Path, logins: dict[str, str]) -> Path:
    """A mosquitto password file with these users, readable by its owner only."""
    for user, password in logins.items():
        create = [] if path.exists() else ["-c"]
        subprocess.run(["mosquitto_passwd", *create, "-b", str(path), user, password], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def publish_as(port: int, login: tuple[str, str] | None, topic: str, body: bytes | None = None,
               retain: bool = False) -> None:
    """One QoS 1 message, waited for until the broker acknowledged it; the body is the user name if not given."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if login:
        client.username_pw_set(*login)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, body if body is not None else login[0].encode(), qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def doc_block(document: Path, first_line: str) -> str:
    """The fenced block of `document` that starts with `first_line`: the tests run what the docs say."""
    blocks = re.findall(r"```\w*\n(.*?)```", document.read_text(), flags=re.S)
    return next(block for block in blocks if block.startswith(first_line))


def spool_newest(bridge: Bridge) -> int:
    """The seq of the newest spooled final (0 when none)."""
    if not bridge.spool.exists():
        return 0
    with sqlite3.connect(bridge.spool) as db:
        row = db.execute("SELECT payload FROM finals ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0])["seq"] if row else 0


@pytest.mark.parametrize(("content", "said"), [(b"", "the first line is empty"), (b"\xff\xfe", "not UTF-8 text")])
def test_a_password_file_problem_does_not_show_its_path(tmp_path: Path, content: bytes, said: str) -> None:
    """The config never shows the file's path (a technician may have written the password there); the
    bridge's own read showed it."""
    from edge.apps.mqtt.broker import SettingsError, read_password

    secret = tmp_path / "hunter2"
    secret.write_bytes(content)
    with pytest.raises(SettingsError) as refused:
        read_password(secret)
    assert str(refused.value).startswith(f"mqtt.password_file: {said}") and "hunter2" not in str(refused.value)
