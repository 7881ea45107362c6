"""Run the recognition daemon: audio -> VAD -> streaming recognizer -> socket subscribers."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NoReturn

from edge.audio.base import PACES
from edge.commands.service import EX_STARTUP, add_config_argument, configured
from edge.config import EX_CONFIG, Config, default_config_path
from edge.errors import ModelError, SetupError, StartupError, one_line
from edge.service.memory import limit_heap_growth

log = logging.getLogger("edge.run")

RESERVED_FDS = 256  # the model, config, audio device, journal, metrics: far more than they use
ENGINE_BUILD_LIMIT_S = 1800.0  # how long a first TensorRT start may build its engines before systemd may stop it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--source", default="mic", metavar="mic|file:PATH", help="audio source (default: mic, the configured device)"
    )
    parser.add_argument(
        "--pace", choices=PACES, default="realtime", help="file sources: realtime (like a microphone) or fast"
    )
    parser.add_argument(
        "--exit-at-end", action="store_true", help="file sources: exit 0 once the file ended and its last final is out"
    )
    parser.add_argument("--socket", metavar="PATH", help="publish on this socket instead of publish.socket")


def run(args: argparse.Namespace) -> int:
    cfg = configured(args.config, "run")
    if isinstance(cfg, int):
        return cfg
    limit_heap_growth()
    return _serve(cfg, default_config_path(args.config), args)


def _serve(cfg: Config, path: Path, args: argparse.Namespace) -> int:
    """Load the model, open the source, run; start-up problems are one log line, not a traceback."""
    # Heavy imports only once the config is known to be usable.
    from edge.asr.load import open_recognizer
    from edge.audio import open_source
    from edge.daemon import Daemon, StatusRelay

    reserve_descriptors(cfg.publish.max_subscribers)
    relay = StatusRelay()
    try:
        with _time_for_engines(cfg):
            recognizer = open_recognizer(cfg, relay)
        source = open_source(args.source, cfg.audio, args.pace, wait_for_device=True)
        daemon = Daemon(
            cfg,
            path,
            recognizer,
            source,
            exit_at_end=args.exit_at_end,
            socket_path=Path(args.socket) if args.socket else None,
            status_relay=relay,
        )
        if args.early_reload is not None and args.early_reload.is_set():
            log.info("a reload was requested during start-up; applying it now")
            daemon.request_reload()
    except (StartupError, OSError) as exc:
        return _cannot_start(exc)
    try:
        code = daemon.run()
    except StartupError as exc:  # the socket or the metrics listener
        code = _cannot_start(exc)
    except Exception:  # noqa: BLE001 - months in, whatever it was: the journal gets the traceback, systemd restarts
        log.exception("stopped by an unexpected error")
        code = EX_STARTUP
    _exit_now(code)  # always: a decode, or an accelerator call abandoned at its deadline, may still be in native code


def _time_for_engines(cfg: Config) -> AbstractContextManager[None]:
    """Where TensorRT may be chosen, its sessions build their engines at start when none are cached:
    minutes on a Jetson, past TimeoutStartSec=300s. Elsewhere the unit's own timeout stands."""
    from edge.accel.board import Probe
    from edge.accel.ort import TENSORRT
    from edge.service.sdnotify import Notifier, extended_start

    if cfg.inference.backend not in ("auto", "tensorrt") or TENSORRT not in Probe().ort_providers():
        return nullcontext()
    status = "loading the model (a first TensorRT start builds its engines: minutes)"
    return extended_start(Notifier(), status, ENGINE_BUILD_LIMIT_S)


def _cannot_start(exc: Exception) -> int:
    """One line in the journal; 78 where a restart cannot help (a damaged model: no loop of re-hashing it)."""
    log.error("cannot start: %s", one_line(exc, limit=1000))
    return EX_CONFIG if isinstance(exc, (ModelError, SetupError)) else EX_STARTUP


def reserve_descriptors(subscribers: int) -> None:
    """Room for every allowed subscriber plus RESERVED_FDS for the model, config, audio and logs:
    raise the soft RLIMIT_NOFILE toward the hard one if needed (1024 is a common default)."""
    needed = subscribers + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        log.warning("only %d file descriptors allowed (hard limit): publish.max_subscribers %d needs %d; "
                    "lower it or raise LimitNOFILE", wanted, subscribers, needed)


def _exit_now(code: int) -> NoReturn:
    """Leave without interpreter teardown: tearing down under a running onnxruntime call aborts the process."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
