"""Reload the running daemon's config and say what came of it (the unit's ExecReload runs this).

`kill -HUP` returned before the daemon had read the file, so `systemctl reload` said nothing even
when the config was invalid and the old settings stayed. This subscribes to the daemon's socket,
sends the signal, and waits for the daemon's own word: the reload's `status` event, and the
`config_invalid` error that comes before it when the file is unusable (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from edge.commands import listen
from edge.publish import protocol
from edge.publish.client import DaemonUnavailable, NoAnswer, connect, farewell, read_lines

FAILED = "reload failed"  # how the daemon's status message starts when the old settings stay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    listen.add_arguments(parser)
    parser.add_argument("--pid", type=_daemon_pid, required=True, help="the daemon's process id (in the unit: $MAINPID)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the daemon's answer (default: 30)")


def _daemon_pid(value: str) -> int:
    """One process, not this one: kill(0) signals the caller's whole process group and kill(-1) every
    process it may signal, and `systemctl show -p MainPID` says 0 for a stopped service."""
    try:
        pid = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a process id") from None
    if pid <= 1 or pid == os.getpid():
        raise argparse.ArgumentTypeError(f"{pid} is not the daemon's process id (0: is the service running?)")
    return pid


def run(args: argparse.Namespace) -> int:
    path = listen.socket_path(args, "reload")
    try:
        if isinstance(path, int):  # said above: the config names no usable publish.socket
            raise DaemonUnavailable("the config names no usable publish.socket")
        sock = connect(path, args.timeout)
    except DaemonUnavailable as exc:
        return _unheard(args.pid, str(exc))
    try:
        with sock:
            message, problems = reload(sock, args.pid, args.timeout)
    except SubscribersFull as exc:  # a room of caption screens must not make the service unreloadable
        return _unheard(args.pid, str(exc))
    except DaemonUnavailable as exc:
        print(f"edge-asr reload: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"edge-asr reload: {problem}", file=sys.stderr)
    print(f"edge-asr reload: {message}", file=sys.stderr if message.startswith(FAILED) else sys.stdout)
    return 1 if message.startswith(FAILED) else 0


class SubscribersFull(DaemonUnavailable):
    """publish.max_subscribers are connected: the daemon runs, but this command cannot hear its answer."""


def _unheard(pid: int, why: str) -> int:
    """No socket to hear the answer on (an edit that moved publish.socket or broke the YAML): the signal
    still goes, so that the daemon reloads what it can and says why not in its journal; exit 1."""
    try:
        _signal(pid)
    except DaemonUnavailable as exc:
        print(f"edge-asr reload: {exc}", file=sys.stderr)
        return 1
    print(f"edge-asr reload: sent SIGHUP to {pid} but cannot hear its answer ({why}); "
          "see `journalctl -u edge-asr`", file=sys.stderr)
    return 1


def reload(sock: socket.socket, pid: int, timeout: float) -> tuple[str, list[str]]:
    """SIGHUP to `pid` while subscribed on `sock`: the reload's status message, and the problems the
    daemon found in the file (none when it took it). DaemonUnavailable otherwise."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    lines = read_lines(sock, deadline)
    first = next(lines, b"")
    greeting = _event(first) if first else {}
    if greeting.get("reason") == "too_many_subscribers":  # running, and full: it can still take the signal
        raise SubscribersFull(farewell(first))
    if greeting.get("type") != protocol.Hello.TYPE:  # stopping: no hello
        raise DaemonUnavailable(farewell(first) or "the daemon is not taking connections (stopping?)")
    asked_before = greeting.get("reload_requests")  # absent from a daemon older than this handshake
    _signal(pid)  # subscribed: the answer cannot come unheard
    try:
        for line in lines:
            event = _event(line)
            if event.get("type") == protocol.Error.TYPE and event.get("reason") == "config_invalid":
                problems.append(str(event.get("message", "")))
            elif event.get("type") == protocol.Status.TYPE and str(event.get("message", "")).startswith("reload"):
                if _earlier(event, asked_before):  # a reload in progress when we signalled: not our answer
                    problems.clear()  # nor are its problems
                    continue
                return str(event["message"]), problems
    except NoAnswer:
        pass
    raise DaemonUnavailable(f"the daemon (pid {pid}) did not say within {timeout:g} s whether it reloaded")


def _earlier(status: dict, asked_before: object) -> bool:
    """A reload status that answers only requests made before ours (a SIGHUP from elsewhere, its reload
    still running when we subscribed): the first reload status after our signal used to be taken."""
    answered = status.get("reload_requests_answered")
    return isinstance(asked_before, int) and isinstance(answered, int) and answered <= asked_before


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise DaemonUnavailable(f"no process {pid}: the daemon is not running") from None
    except PermissionError:
        raise DaemonUnavailable(f"not allowed to signal process {pid} (run as the daemon's user, or use sudo)") from None


def _event(line: bytes) -> dict:
    try:
        return protocol.decode(line)
    except protocol.ProtocolError as exc:
        raise DaemonUnavailable(f"unexpected line from the daemon: {exc}") from None
