"""The main job on the embedded default: the daemon on a sample file, seen by a subscriber.

A box without a microphone has nothing to listen to, so the demo feeds the daemon a
speech file (a long-form eval file with pauses when ../shared/eval is there, else the
bundled espeak sample) and prints what an app on the socket receives.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.publish.protocol import decode

REPO = Path(__file__).resolve().parents[1]
EVAL_SAMPLE = REPO.parent / "shared" / "eval" / "longform_en" / "longform_01.wav"
BUNDLED_SAMPLE = REPO / "edge" / "data" / "sample.wav"


def default_source() -> str:
    return f"file:{EVAL_SAMPLE if EVAL_SAMPLE.exists() else BUNDLED_SAMPLE}"


def connect(path: Path, daemon: subprocess.Popen, timeout_s: float = 60.0) -> socket.socket:
    """Wait for the daemon's socket: it appears once the model is loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"demo: the daemon exited with status {daemon.returncode} before listening")
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(path))
            return client
        except OSError:
            client.close()
            time.sleep(0.05)
    raise SystemExit(f"demo: no socket at {path} after {timeout_s:.0f} s")


def show(event: dict) -> None:
    kind = event["type"]
    if kind == "hello":
        print(f"connected: model {event['model']}, backend {event['backend']}")
    elif kind == "final" and event["text"]:
        print(f"[{event['start_s']:7.2f} - {event['end_s']:7.2f}] {event['text']}")
    elif kind == "error":
        print(f"error: {event['message']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=default_source(), help="mic or file:PATH (default: a sample file)")
    parser.add_argument("--pace", choices=("realtime", "fast"), default="fast")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped either way, the daemon goes too
    edge_asr = Path(sys.executable).with_name("edge-asr")
    with tempfile.TemporaryDirectory(prefix="edge-asr-demo-") as tmp:
        sock = Path(tmp) / "asr.sock"
        command = [str(edge_asr), "run", "--config", str(REPO / "config.yaml"), "--source", args.source,
                   "--pace", args.pace, "--socket", str(sock)]
        if args.source != "mic":
            command.append("--exit-at-end")
        print(f"demo: {' '.join(command[1:])}", flush=True)
        daemon = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            with connect(sock, daemon) as client, client.makefile("rb") as lines:
                for line in lines:
                    show(decode(line))
        except KeyboardInterrupt:
            daemon.terminate()
        return daemon.wait()


if __name__ == "__main__":
    sys.exit(main())
