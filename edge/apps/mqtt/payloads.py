"""The bridge's topics and message bodies (docs/protocol.md, "MQTT"); pure, no I/O.

Finals and partials are forwarded as the daemon sent them, unknown fields and empty
finals included (protocol.md promises new fields without a version bump; docs/fleet.md
says why an empty final is worth its message), with the box's identity
added: `box_id`, `boot_id` (new each time the bridge starts) and, on finals, `seq`
(1, 2, 3, ... within a boot_id), so a consumer drops a duplicate by (box_id, boot_id, seq).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# What the fleet sees of the daemon's status; `degraded` is false when the daemon does not say.
DAEMON_FIELDS = ("state", "backend", "backend_requested", "degraded", "degraded_reason", "model", "language",
                 "chinese_script", "uptime_s", "utterances", "dropped_audio_s", "pending_finals", "lag_s", "overload", "finals_dropped",
                 "vocabulary")
ONLINE, OFFLINE = b"true", b"false"


@dataclass(frozen=True)
class Box:
    """Who is speaking: the configured box and this run of the bridge."""

    box_id: str
    boot_id: str

    def stamp(self) -> dict[str, str]:
        return {"box_id": self.box_id, "boot_id": self.boot_id}


@dataclass(frozen=True)
class Topics:
    final: str
    partial: str
    status: str
    online: str

    @classmethod
    def under(cls, prefix: str) -> Topics:
        return cls(**{name: f"{prefix}/{name}" for name in ("final", "partial", "status", "online")})


def final_body(event: Mapping[str, Any], box: Box, seq: int) -> bytes:
    """`received_at` is wall-clock time: the daemon's own times restart with it."""
    return _encode({**box.stamp(), "seq": seq, "received_at": utc_now(), **event})


def partial_body(event: Mapping[str, Any], box: Box) -> bytes:
    return _encode({**box.stamp(), **event})


def status_body(box: Box, daemon: Mapping[str, Any] | None, daemon_error: str | None,
                bridge: Mapping[str, Any]) -> bytes:
    """The daemon's fields (null while it is unreachable) and the bridge's own state under `bridge`."""
    fields = {name: (daemon or {}).get(name) for name in DAEMON_FIELDS}
    if daemon is not None:
        fields["degraded"] = bool(daemon.get("degraded", False))
    return _encode({**box.stamp(), "time": utc_now(), "daemon": "unreachable" if daemon is None else "running",
                    "daemon_error": daemon_error, **fields, "bridge": dict(bridge)})


def utc_now(timespec: str = "milliseconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
