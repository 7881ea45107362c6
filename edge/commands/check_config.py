"""Validate a config file and list every problem in it (exit 0 when it is usable)."""

from __future__ import annotations

import argparse

from edge.config import ConfigError, default_config_path, load_for_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        help="config file (default: $EDGE_ASR_CONFIG, ./config.yaml, then /etc/edge-asr/config.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = load_for_command(args.path)
    except ConfigError as exc:
        return exc.report(default_config_path(args.path))
    print(f"{config.source_path}: OK (model {config.model.path}, backend {config.inference.backend})")
    return 0
