#!/usr/bin/env python3
"""Example fleet consumer for `edge-asr mqtt` (docs/fleet.md): every box's last status, and all finals.

Subscribes to `<root>/+/status`, `<root>/+/online` and `<root>/+/final` (QoS 1), prints a
table of the boxes whenever a shown column changes (the retained status and online flag
fill it at once), and prints every final once. Finals are at-least-once: a final is
dropped when its (box_id, boot_id, seq) was seen already. Within a boot_id finals arrive
in seq order (docs/protocol.md), so the highest seq per (box_id, boot_id) is all the
memory that needs, however long the consumer runs.

With --client-id the session is persistent (clean_session false): finals published while
the consumer is away are kept by the broker and delivered when it comes back.

    .venv/bin/python scripts/fleet_consumer.py --host broker.example.com --port 8883 --tls \
        --username fleet-reader --password-file ~/.fleet-password --client-id fleet-consumer-1
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

# (heading, status field); `online` comes from its own topic, the rest from <root>/<box>/status.
COLUMNS = (("daemon", "daemon"), ("backend", "backend"), ("degraded", "degraded"), ("model", "model"),
           ("lang", "language"), ("spooled", "spooled"), ("dropped", "spool_dropped"), ("broker error", "last_broker_error"))
BRIDGE_FIELDS = {"spooled", "spool_dropped", "last_broker_error"}  # these live under status["bridge"]


class Fleet:
    """What the consumer knows: each box's last status and online flag, and the finals seen so far."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.online: dict[str, str] = {}
        self.duplicates = 0
        self._last_seq: dict[tuple[str, str], int] = {}

    def is_new_final(self, body: dict[str, Any]) -> bool:
        """False for a final already seen (a QoS 1 re-send after a lost acknowledgement)."""
        boot = (body["box_id"], body["boot_id"])
        if body["seq"] <= self._last_seq.get(boot, 0):
            self.duplicates += 1
            return False
        self._last_seq[boot] = body["seq"]
        return True

    def table(self) -> str:
        """The boxes, one row each, sorted by box id; columns as wide as their widest cell."""
        rows = [("box", "online", *(heading for heading, _ in COLUMNS))]
        for box in sorted(self.status.keys() | self.online.keys()):
            status = self.status.get(box, {})
            rows.append((box, self.online.get(box, "?"), *(_cell(status, field) for _, field in COLUMNS)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _cell(status: dict[str, Any], field: str) -> str:
    value = (status.get("bridge") or {}).get(field) if field in BRIDGE_FIELDS else status.get(field)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Consumer:
    """paho callbacks around a Fleet: prints finals as they come and the table when it changes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fleet = Fleet()
        self._shown = ""

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            print(f"the broker refused the connection: {reason}", file=sys.stderr, flush=True)
            return
        client.subscribe([(f"{self.root}/+/{kind}", 1) for kind in ("status", "online", "final")])

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        print(f"subscribed to {self.root}/+/status, online, final", file=sys.stderr, flush=True)

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        box, kind = message.topic.split("/")[-2:]
        try:
            if kind == "final":
                self._final(json.loads(message.payload))
            elif kind == "status":
                self.fleet.status[box] = json.loads(message.payload)
            elif kind == "online":
                self.fleet.online[box] = message.payload.decode()
        except (ValueError, KeyError, TypeError) as exc:  # another publisher's junk must not stop the consumer
            print(f"skipped a malformed message on {message.topic}: {exc!r}", file=sys.stderr, flush=True)
        self._show_table()

    def _final(self, body: dict[str, Any]) -> None:
        """Print a new final; an empty one (an utterance with no words) only closes its utterance."""
        if self.fleet.is_new_final(body) and body["text"]:
            print(f"{body.get('received_at', '')} {body['box_id']} #{body['seq']} [{body.get('language') or '?'}] "
                  f"{body['text']}", flush=True)

    def _show_table(self) -> None:
        table = self.fleet.table()
        if table != self._shown:
            print(f"\n{table}\n", flush=True)
            self._shown = table


def client_for(args: argparse.Namespace, consumer: Consumer) -> mqtt.Client:
    """A persistent session when a client id is given, so that no final is missed across restarts."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id or "",
                         clean_session=not args.client_id)
    if args.username:
        password = Path(args.password_file).read_text().splitlines()[0] if args.password_file else None
        client.username_pw_set(args.username, password)
    if args.tls or args.ca_file:
        client.tls_set(ca_certs=args.ca_file)
    client.on_connect = consumer.on_connect
    client.on_subscribe = consumer.on_subscribe
    client.on_message = consumer.on_message
    return client


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, help="default: 1883, or 8883 with --tls")
    parser.add_argument("--root", default="edge-asr", help="the part of mqtt.topic_prefix before the box id")
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="a file whose first line is the password")
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CAs (or --ca-file)")
    parser.add_argument("--ca-file")
    parser.add_argument("--client-id", help="persistent session under this id; default: a clean, anonymous one")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    consumer = Consumer(args.root)
    client = client_for(args, consumer)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only set a flag: a KeyboardInterrupt raised inside paho's loop, or a disconnect() from
        # a handler, can land while paho holds one of its locks (a CI run hung on SIGINT once).
        signal.signal(signum, lambda *_: stop.set())
    client.connect(args.host, args.port or (8883 if args.tls or args.ca_file else 1883))
    client.loop_start()  # paho's thread: callbacks and reconnects
    stop.wait()
    client.disconnect()
    client.loop_stop()
    print(f"{consumer.fleet.duplicates} duplicate final(s) dropped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
