#!/usr/bin/env python3
"""Load figures for `edge-asr mqtt` (not a test): bridges fed by stand-in daemons, one local broker.

Every box is a real bridge process (`python -m edge mqtt`, its own config, box_id,
socket and spool) fed by a stand-in daemon: the real `Publisher` on that socket, in
this process, replaying a synthetic event stream at --finals-per-s finals and
--partials-per-s partials (partials on in the bridge: the heavier case). A paho
subscriber counts what reaches the broker, dropping duplicates like
scripts/fleet_consumer.py. CPU (% of one core) and RSS come from /proc, over the
measured window after every bridge is up.

    .venv/bin/python scripts/bench_mqtt.py --boxes 1 --finals-per-s 20 --partials-per-s 80 --duration 600
    .venv/bin/python scripts/bench_mqtt.py --boxes 200 --finals-per-s 0.25 --partials-per-s 2 --duration 300

localhost only; everything it starts is stopped at the end. Prints a markdown table
(docs/benchmarks.md, "MQTT bridge").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness reuses the tests' broker, bridge and stand-in daemon

from fleet_consumer import Fleet  # noqa: E402  (scripts/ is on sys.path when run as a script)

from edge.publish import protocol  # noqa: E402
from edge.publish.server import Publisher  # noqa: E402
from tests.test_mqtt import DAEMON_STATUS, Bridge, Broker, Subscriber, final  # noqa: E402
from tests.test_publisher import make_publisher, wait_for  # noqa: E402

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
TEXT = "so the next item on the agenda is the budget for the new meeting rooms on the third floor"
START_BATCH = 10  # bridges started at once: 200 Python start-ups together would starve each other


@dataclass
class Usage:
    """One process's CPU seconds and memory (kB) at one moment, from /proc."""

    cpu_s: float
    rss_kb: int
    peak_kb: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        memory = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return cls((int(fields[11]) + int(fields[12])) / CLOCK_TICK,
                   int(memory["VmRSS"].split()[0]), int(memory["VmHWM"].split()[0]))


class Counter(Subscriber):
    """The tests' fleet subscriber on every box, counting instead of keeping: unique finals, duplicates, delay."""

    def __init__(self, port: int) -> None:
        self.fleet = Fleet()
        self.finals = 0
        self.partials = 0
        self.delays_s: list[float] = []  # bridge read (received_at) -> here, per unique final
        super().__init__(port, "bench-counter", clean=True, topic="edge-asr/#")

    def _received(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Status and online (retained, periodic) are not counted."""
        if message.topic.endswith("/partial"):
            self.partials += 1
        elif message.topic.endswith("/final"):
            self._final(json.loads(message.payload))

    def _final(self, body: dict) -> None:
        if self.fleet.is_new_final(body):
            self.finals += 1
            self.delays_s.append(time.time() - datetime.fromisoformat(body["received_at"]).timestamp())


class Boxes:
    """The stand-in daemons and their bridges; `published` counts finals sent into the sockets."""

    def __init__(self, directory: Path, broker_port: int, count: int, status_interval_s: int) -> None:
        self.daemons: list[Publisher] = []
        self.bridges: list[Bridge] = []
        self.published = 0
        self.partials = 0
        for index in range(count):
            box = directory / f"box-{index:03d}"
            box.mkdir()
            sock = box / "asr.sock"
            self.daemons.append(make_publisher(sock, status=lambda: dict(DAEMON_STATUS)))
            self.bridges.append(Bridge(box, sock, broker_port, box_id=box.name, partials=True,
                                       status_interval_s=status_interval_s))

    def start(self) -> float:
        """Start every daemon, then the bridges in batches; returns the seconds until all read their daemon."""
        began = time.monotonic()
        for daemon in self.daemons:
            daemon.start()
        for first in range(0, len(self.bridges), START_BATCH):
            batch = self.bridges[first:first + START_BATCH]
            for bridge in batch:
                bridge.start()
            wait_for(lambda: all(bridge.reading() and "connected to broker" in bridge.text() for bridge in batch),
                     timeout=120)
        return time.monotonic() - began

    def replay(self, finals_per_s: float, partials_per_s: float, seconds: float) -> None:
        """Every box gets the same stream, shifted so that the boxes' finals do not coincide."""
        rate = finals_per_s + partials_per_s
        began = time.monotonic()
        for tick in range(int(seconds * rate)):
            time.sleep(max(0.0, began + tick / rate - time.monotonic()))
            for index, daemon in enumerate(self.daemons):
                daemon.publish(self._event(tick + 3 * index, finals_per_s / rate))

    def _event(self, number: int, final_share: float) -> protocol.Event:
        """Event `number` of the stream: a final whenever the running share of finals passes a whole one."""
        uid = int(number * final_share) + 1
        if int((number + 1) * final_share) > int(number * final_share):
            self.published += 1
            return final(uid, f"{uid}: {TEXT}")
        self.partials += 1
        return protocol.Partial(utterance_id=uid, text=TEXT[:40], stable_text=TEXT[:20], start_s=uid,
                                end_s=uid + 0.5, audio_time_s=uid + 0.6)

    def stop(self) -> None:
        """All bridges are signalled first, so that 200 of them say goodbye together, not one by one."""
        running = [bridge for bridge in self.bridges if bridge.process is not None]
        for bridge in running:
            bridge.process.terminate()
        for bridge in running:
            bridge.stop()  # waits; the second SIGTERM finds it stopping already
        for daemon in self.daemons:
            daemon.close(timeout=1.0)


class Sampler:
    """Samples processes every few seconds, so that the peak RSS of a group (not just each) is known."""

    def __init__(self, pids: dict[str, list[int]], every_s: float = 5.0) -> None:
        self._pids = pids
        self._every_s = every_s
        self._stop = threading.Event()
        self.first = self._sample()
        self.began = time.monotonic()
        self.peak_rss_kb = {name: 0 for name in pids}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[str, list[Usage]]:
        return {name: [Usage.of(pid) for pid in pids] for name, pids in self._pids.items()}

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            for name, usages in self._sample().items():
                self.peak_rss_kb[name] = max(self.peak_rss_kb[name], sum(u.rss_kb for u in usages))

    def finish(self) -> dict[str, dict[str, float]]:
        """Per group: CPU % of one core over the window, RSS now and at peak (MB; summed over the group)."""
        self._stop.set()
        self._thread.join()
        last, wall = self._sample(), time.monotonic() - self.began
        return {name: {"cpu_pct": 100 * sum(b.cpu_s - a.cpu_s for a, b in zip(self.first[name], usages)) / wall,
                       "rss_mb": sum(u.rss_kb for u in usages) / 1024,
                       "peak_mb": max(self.peak_rss_kb[name], sum(u.rss_kb for u in usages)) / 1024}
                for name, usages in last.items()}


def measure(args: argparse.Namespace, directory: Path) -> dict:
    """Start everything, replay for args.duration seconds, wait for delivery, and say what it cost."""
    (directory / "broker").mkdir()
    broker = Broker(directory / "broker")
    broker.start()
    boxes = Boxes(directory, broker.port, args.boxes, args.status_interval_s)
    counter = None
    try:
        counter = Counter(broker.port)
        startup_s = boxes.start()
        pids = {"broker": [broker.process.pid], "one bridge": [boxes.bridges[0].process.pid],
                "all bridges": [b.process.pid for b in boxes.bridges], "harness": [os.getpid()]}
        sampler = Sampler(pids)
        boxes.replay(args.finals_per_s, args.partials_per_s, args.duration)
        usage = sampler.finish()
        with contextlib.suppress(AssertionError):  # a shortfall is a result to report, not a crash
            wait_for(lambda: counter.finals >= boxes.published, timeout=30)
        return {"startup_s": startup_s, "usage": usage, "published": boxes.published, "partials": boxes.partials,
                "finals": counter.finals, "duplicates": counter.fleet.duplicates, "partials_seen": counter.partials,
                "delays_s": sorted(counter.delays_s), "spooled": sum(b.spooled() for b in boxes.bridges)}
    finally:
        if counter is not None:
            counter.close()
        boxes.stop()
        broker.stop()


def report(args: argparse.Namespace, result: dict) -> str:
    """The figures as markdown rows (durations in s, memory in MB)."""
    delays = result["delays_s"] or [float("nan")]
    lines = [f"boxes {args.boxes}, per box {args.finals_per_s} finals/s + {args.partials_per_s} partials/s, "
             f"{args.duration:.0f} s measured (all bridges up after {result['startup_s']:.0f} s)", "",
             "| process | CPU % of one core | RSS MB (end) | RSS MB (peak) |", "|---|---|---|---|"]
    for name, figures in result["usage"].items():
        lines.append(f"| {name} | {figures['cpu_pct']:.1f} | {figures['rss_mb']:.0f} | {figures['peak_mb']:.0f} |")
    lines += ["", f"finals: {result['published']} published by the stand-in daemons, {result['finals']} arrived "
              f"(unique), {result['duplicates']} duplicates, {result['spooled']} still spooled; partials: "
              f"{result['partials']} published, {result['partials_seen']} arrived",
              f"final delay (bridge read -> subscriber): median {statistics.median(delays) * 1000:.0f} ms, "
              f"p99 {delays[int(0.99 * (len(delays) - 1))] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=1)
    parser.add_argument("--finals-per-s", type=float, default=20.0, help="per box")
    parser.add_argument("--partials-per-s", type=float, default=80.0, help="per box")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of replay, measured")
    parser.add_argument("--status-interval-s", type=int, default=30, help="mqtt.status_interval_s of every bridge")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="easr-", dir="/tmp") as directory:  # AF_UNIX needs short socket paths
        print(report(args, measure(args, Path(directory))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
