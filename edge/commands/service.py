"""What the long-running commands (`run`, `captions`, `mqtt`) share: loading their config
the same way, with logging set up from it, and the exit status of a failed start.

Not a command itself: edge/cli.py lists the commands by name.
"""

from __future__ import annotations

import argparse
import logging

from edge.config import Config, ConfigError, default_config_path, load_for_command
from edge.service.logs import setup_logging

EX_STARTUP = 1  # a start-up problem that a restart may cure (device, socket, address in use)


CONFIG_SEARCH = "$EDGE_ASR_CONFIG, ./config.yaml, /etc/edge-asr/config.yaml"


def add_config_argument(parser: argparse.ArgumentParser, fallback: str = "") -> None:
    """--config, with where the file is looked for when it is not given (and `fallback`, if any)."""
    parser.add_argument("--config", metavar="PATH", help=f"config file (default: {CONFIG_SEARCH}{fallback})")


def journal_identifier(command: str) -> str:
    """The SyslogIdentifier= of the command's unit in systemd/: edge-asr for the daemon (`run`),
    edge-asr-<command> for the apps."""
    return "edge-asr" if command == "run" else f"edge-asr-{command}"


def configured(config_arg: str | None, command: str, *, defaults_if_absent: bool = False) -> Config | int:
    """The validated config with logging set up, or the exit status after its problems were printed (78).

    `command`: which long-running command, for the identifier of its journal lines.

    `defaults_if_absent`: apps of the socket can run with the documented defaults on a
    box without a config file; the daemon itself needs one.
    """
    try:
        cfg = load_for_command(config_arg, defaults_if_absent=defaults_if_absent)
    except ConfigError as exc:
        return exc.report(default_config_path(config_arg))
    setup_logging(cfg.log.level, journal_identifier(command))
    warning = cfg.empty_warning()
    if warning:
        logging.getLogger("edge.config").warning("%s: %s", cfg.source_path, warning)
    return cfg
