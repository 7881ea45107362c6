"""Localhost ports for the servers the tests start: mosquitto, the caption page, the metrics
exporter and the publisher's TCP listener."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 1024  # metrics.port and captions' --listen take 1024-65535


def ephemeral_floor() -> int:
    """The lowest port the kernel hands to bind(0) and to outgoing connections (Linux: 32768)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A port nothing listens on now, below the kernel's ephemeral range where there is room.

    The server that will bind it starts later, often as another process. A port from bind(0)
    is an ephemeral one, and any outgoing connection on the box (another test's client, say)
    may take it in between; one below the range is taken only by an explicit bind.
    """
    floor = ephemeral_floor()
    if floor - LOWEST >= 1000:
        for _ in range(100):
            port = random.randrange(max(LOWEST, floor // 2), floor)
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
