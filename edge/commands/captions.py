"""Serve a live caption web page (room screen, kiosk) fed by the daemon's socket.

The daemon socket is --socket, else publish.socket; the address --listen, else captions.listen.
Exit status: 0 after SIGTERM/SIGINT, 78 (EX_CONFIG) when the config is unusable, 1 when the
address cannot be served. A missing or restarting daemon is never fatal: the page says so.
"""

from __future__ import annotations

import argparse
import logging

from edge.apps.captions.server import serve
from edge.commands.service import EX_STARTUP, add_config_argument, configured
from edge.config import CaptionsConfig, split_listen
from edge.service.sdnotify import Notifier, ProgressWatchdog, watchdog_interval_s

log = logging.getLogger("edge.captions")


LISTEN_ALLOWED = CaptionsConfig.model_fields["listen"].description


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, ", else the defaults")
    parser.add_argument("--socket", metavar="PATH", help="daemon socket (default: publish.socket of the config)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", type=_listen_value, help="serve the page here (default: captions.listen)"
    )


def _listen_value(value: str) -> str:
    """Checked like captions.listen, with the same words."""
    try:
        split_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'"{value}" {exc}; expected {LISTEN_ALLOWED}') from None
    return value


def run(args: argparse.Namespace) -> int:
    cfg = configured(args.config, "captions", defaults_if_absent=True)
    if isinstance(cfg, int):
        return cfg
    socket_path = args.socket or str(cfg.publish.socket)
    listen = args.listen or cfg.captions.listen
    host, port = split_listen(listen)
    log.info("caption page on http://%s/ (events from %s)", listen, socket_path)
    notifier = Notifier()
    watchdog = ProgressWatchdog(notifier, watchdog_interval_s(), progress="beat of the page's event loop")

    def ready() -> None:
        notifier.ready()
        watchdog.start()

    try:
        served = serve(cfg.captions, socket_path, host, port, ready=ready, alive=watchdog.beat)
    except OSError as exc:
        log.error("cannot serve the caption page on %s: %s", listen, exc.strerror or exc)
        return EX_STARTUP
    finally:
        watchdog.stop()
        notifier.stopping()
    return 0 if served else EX_STARTUP  # systemd restarts it
