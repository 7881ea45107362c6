"""Bridge the daemon's finals, partials and health to an MQTT broker, spooling finals while it is away.

Exit status: 0 after SIGTERM/SIGINT, 78 (EX_CONFIG) when the config is unusable or
mqtt.enabled is false (the unit's RestartPreventExitStatus keeps it from restart
loops), 1 when the spool cannot be opened. Broker and daemon outages are never fatal:
the bridge retries with backoff and reports them in the log and `systemctl status`.
"""

from __future__ import annotations

import argparse
import logging
import signal

from edge.apps.mqtt.bridge import Bridge
from edge.apps.mqtt.broker import SettingsError
from edge.commands.service import EX_STARTUP, add_config_argument, configured
from edge.config import EX_CONFIG, default_config_path
from edge.errors import StartupError, one_line
from edge.publish import protocol
from edge.service.sdnotify import Notifier, StallWatchdog, watchdog_interval_s

log = logging.getLogger("edge.mqtt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, ", else the defaults (the mqtt section must enable the bridge)")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"daemon socket (default: publish.socket of the config, else {protocol.DEFAULT_SOCKET})",
    )


def run(args: argparse.Namespace) -> int:
    cfg = configured(args.config, "mqtt", defaults_if_absent=True)
    if isinstance(cfg, int):
        return cfg
    path = default_config_path(args.config)
    if not cfg.mqtt.enabled:
        log.error("mqtt.enabled is false in %s: set it to true (and mqtt.host) to run the bridge", path)
        return EX_CONFIG
    for warning in cfg.mqtt.warnings():
        log.warning("%s: %s", path, warning)
    notifier = Notifier()
    watchdog = StallWatchdog(notifier, watchdog_interval_s())
    try:
        bridge = Bridge(cfg.mqtt, args.socket or str(cfg.publish.socket), on_state=notifier.status,
                        working=watchdog.working)
    except SettingsError as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    except StartupError as exc:
        log.error("cannot start: %s", one_line(exc, limit=1000))
        return EX_STARTUP
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: bridge.stop())
    notifier.ready()
    watchdog.start()
    try:
        return bridge.run()
    finally:
        watchdog.stop()
        notifier.stopping()
