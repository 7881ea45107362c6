"""List audio input devices (index, name, native rate, channels) for audio.device."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing edge.audio.mic loads PortAudio: only inside run()
    from edge.audio.mic import InputDevice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def _table(devices: list[InputDevice]) -> str:
    rows = [("", "index", "name", "rate_hz", "channels", "host_api")]
    for d in devices:
        rows.append(("*" if d.is_default else "", str(d.index), d.name, str(d.rate), str(d.channels), d.hostapi))
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["(* = default input device; audio.device takes the index or a name substring)"])


def run(args: argparse.Namespace) -> int:
    try:
        from edge.audio.mic import list_input_devices

        devices = list_input_devices()
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        print(f"edge-asr devices: PortAudio is not available ({exc}); install libportaudio2", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - sounddevice.PortAudioError, unnameable where importing sounddevice failed
        print(f"edge-asr devices: PortAudio cannot list the devices: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(d) for d in devices], indent=2))
    elif not devices:
        print("No audio input devices found (PortAudio lists none).")
    else:
        print(_table(devices))
    return 0
