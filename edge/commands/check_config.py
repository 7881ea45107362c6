"""Validate a config file and the model it names; list every problem (exit 0 when usable)."""

from __future__ import annotations

import argparse
import sys

from edge import manifest
from edge.asr.load import read_family
from edge.config import ConfigError, default_config_path, load_for_command
from edge.errors import ModelError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = "config file (default: $EDGE_ASR_CONFIG, ./config.yaml, then /etc/edge-asr/config.yaml)"
    parser.add_argument("path", nargs="?", help=where)
    parser.add_argument("--config", dest="config_path", metavar="PATH",
                        help="the same, as every other command takes it (a config error says --config PATH)")


def run(args: argparse.Namespace) -> int:
    if args.path and args.config_path and args.path != args.config_path:
        print(f"edge-asr check-config: two config files given ({args.path}, --config {args.config_path}): "
              "give one", file=sys.stderr)
        return 2
    chosen = args.path or args.config_path
    path = default_config_path(chosen)
    try:
        config = load_for_command(chosen)
    except ConfigError as exc:
        return exc.report(path)
    try:
        family = read_family(config.model.path)
    except ModelError as exc:
        return ConfigError([f"{path}: model.path: {exc}"]).report(path)
    damaged = manifest.verify(config.model.path)
    if damaged:
        return ConfigError([f"{path}: model.path: {problem}" for problem in damaged]).report(path)
    try:
        advice = family.vocabulary_advice(config.model.path, config.vocabulary.vocabulary(), config.model.language)
    except ModelError as exc:  # its tokenizer's files unreadable
        return ConfigError([f"{path}: model.path: {exc}"]).report(path)
    for warning in (config.empty_warning(), config.vocabulary.empty_file_warning(), advice, *config.mqtt.warnings()):
        if warning:
            print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{config.source_path}: OK (model {config.model.path}, backend {config.inference.backend})")
    return 0
