"""List the inference backends, which one this box would use, and why.

Selection is done for real (the model is loaded on the chosen backend), so
`selected` is what `edge-asr run` would get, not a guess from what is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge.accel.board import Probe, detect_board
from edge.accel.select import select_backend, survey
from edge.commands.service import add_config_argument
from edge.config import Config, ConfigError, default_config_path, load_for_command
from edge.errors import StartupError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, ", else the defaults")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def report(cfg: Config, probe: Probe | None = None) -> dict[str, Any]:
    """Every backend with available/selected/reason, plus the board and what was chosen.

    Choosing really opens the model on each candidate, as `run` would.
    """
    from edge.asr.load import family_of

    probe = probe or Probe()
    error = None
    try:
        selection = select_backend(cfg, family_of(Path(cfg.model.path)).open, probe)
        candidates, warnings, selected = selection.candidates, selection.warnings, selection.name
    except StartupError as exc:
        candidates, warnings, selected, error = survey(cfg, probe), [], None, str(exc)
    board = detect_board(probe)
    return {
        "board": {"kind": board.kind, "soc": board.soc},
        "onnxruntime_providers": list(probe.ort_providers()),
        "configured": cfg.inference.backend,
        "selected": selected,
        "backends": [c.as_dict() for c in candidates],
        "warnings": warnings,
        "error": error,
    }


def render_text(data: dict[str, Any]) -> str:
    rows = [("backend", "available", "selected", "reason")]
    rows += [(b["name"], _yes(b["available"]), _yes(b["selected"]), b["reason"]) for b in data["backends"]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    lines.append(f"configured: {data['configured']}; selected: {data['selected'] or 'none'}")
    lines += [f"warning: {w}" for w in data["warnings"]]
    if data["error"]:
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_for_command(args.config, defaults_if_absent=True)
    except ConfigError as exc:  # the same lines and status (78) as check-config
        return exc.report(default_config_path(args.config))
    data = report(cfg)
    print(json.dumps(data, indent=1) if args.format == "json" else render_text(data))
    return 0 if data["selected"] else 1
