"""Ask the running daemon for its status (uptime, backend, queues, subscribers).

Connects to the publisher socket, sends {"type": "status"} and prints the reply as
indented text, or as one JSON line with --format json.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.commands import listen
from edge.publish.client import DaemonUnavailable, request_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    listen.add_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the reply (default: 5)"
    )


def run(args: argparse.Namespace) -> int:
    path = listen.socket_path(args, "status")
    if isinstance(path, int):
        return path
    try:
        event = request_status(path, args.timeout)
    except DaemonUnavailable as exc:
        print(f"edge-asr status: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(event, ensure_ascii=False))
    else:
        print(f"edge-asr daemon at {path}")
        print("\n".join(_degraded(event) + _pretty(event)))
    return 0


def _degraded(event: dict) -> list[str]:
    """A first line a technician cannot miss when the box runs on less than it was set up for."""
    if not event.get("degraded"):
        return []
    return [f"  DEGRADED: running on {event.get('backend')}, inference.backend is {event.get('backend_requested')}: "
            f"{event.get('degraded_reason')}"]


def _pretty(event: dict) -> list[str]:
    return [line for key, value in event.items() if key != "type" for line in _field(key, value, 1)]


def _field(key: str, value: Any, depth: int) -> list[str]:
    """`key: value`; objects nest one level deeper, a list of objects gets one line per item."""
    indent = "  " * depth
    if isinstance(value, dict):
        return [f"{indent}{key}:"] + [line for k, v in value.items() for line in _field(k, v, depth + 1)]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        items = (", ".join(f"{k}={_scalar(v)}" for k, v in item.items()) for item in value)
        return [f"{indent}{key}:"] + [f"{indent}  {line}" for line in items]
    return [f"{indent}{key}: {_scalar(value)}"]


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
