"""sd_notify messages arrive on a real Unix datagram socket; the watchdog needs progress."""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.commands.service import journal_identifier
from edge.service import logs
from edge.service import sdnotify
from edge.service.sdnotify import Notifier, ProgressWatchdog, StallWatchdog, watchdog_interval_s
from tests.conftest import notifications, notify_socket_at

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A stand-in for systemd's notify socket (short path: sun_path is 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="sdn")
    path = os.path.join(directory, "notify")
    sock = notify_socket_at(Path(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def received(sock: socket.socket, timeout: float) -> list[str]:
    """Every datagram that arrives within `timeout` seconds."""
    sock.settimeout(timeout)
    messages = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        return messages


def test_messages_arrive(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.ready() and notifier.status("listening on mic\nsecond line") and notifier.stopping()
    assert notifier.reloading() and notifier.watchdog()
    assert received(notify_socket, 0.2) == [
        "READY=1", "STATUS=listening on mic second line", "STOPPING=1", "RELOADING=1", "WATCHDOG=1",
    ]


def test_a_long_start_keeps_pushing_the_start_timeout_until_it_ends(notify_socket: socket.socket,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A first TensorRT engine build ran past TimeoutStartSec=300s, was killed and began again at each
    restart. Scaled down: an extension every 0.05 s, the block 0.5 s."""
    monkeypatch.setattr(sdnotify, "EXTENSION_EVERY_S", 0.05)
    with sdnotify.extended_start(Notifier(), "building engines", limit_s=60):
        time.sleep(0.5)
    messages = received(notify_socket, 0.1)
    assert messages[0] == "STATUS=building engines"
    assert len(messages[1:]) >= 3 and set(messages[1:]) == {"EXTEND_TIMEOUT_USEC=60000000"}, messages
    assert received(notify_socket, 0.3) == []  # nothing more once the block ended


def test_a_start_that_hangs_is_extended_no_longer_than_its_limit(notify_socket: socket.socket,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdnotify, "EXTENSION_EVERY_S", 0.05)
    with sdnotify.extended_start(Notifier(), "building engines", limit_s=0.12):
        time.sleep(0.6)
    assert 1 <= len(received(notify_socket, 0.2)[1:]) <= 4  # about 12 without the limit; fewer only if slower


@pytest.mark.parametrize(("backend", "providers", "extended"), [
    ("auto", ["TensorrtExecutionProvider", "CPUExecutionProvider"], True),
    ("tensorrt", ["TensorrtExecutionProvider", "CPUExecutionProvider"], True),
    ("cpu", ["TensorrtExecutionProvider", "CPUExecutionProvider"], False),
    ("auto", ["CPUExecutionProvider"], False),
])
def test_the_daemon_extends_its_start_only_where_tensorrt_may_build_engines(notify_socket: socket.socket,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            backend: str, providers: list[str],
                                                                            extended: bool) -> None:
    import onnxruntime

    from edge.commands.run import _time_for_engines
    from edge.config import parse_config

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    with _time_for_engines(parse_config({"inference": {"backend": backend}}, base_dir=REPO)):
        pass
    messages = received(notify_socket, 0.2)
    assert ("EXTEND_TIMEOUT_USEC=60000000" in messages) == extended and bool(messages) == extended, messages


def test_no_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().ready() is False


def test_vanished_socket_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = Notifier()
    with caplog.at_level(logging.WARNING):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    assert len([r for r in caplog.records if "notification failed" in r.message]) == 1


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [("30000000", None, 30.0), ("30000000", "self", 30.0), ("30000000", "1", None), ("0", None, None),
     ("junk", None, None), (None, None, None)],
)
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert watchdog_interval_s() == expected


def test_watchdog_pings_only_after_progress(notify_socket: socket.socket) -> None:
    watchdog = ProgressWatchdog(Notifier(), interval_s=0.2)
    watchdog.start()
    try:
        watchdog.beat()
        assert received(notify_socket, 1.0) == ["WATCHDOG=1"]
        assert received(notify_socket, 0.6) == []
        watchdog.beat()
        assert received(notify_socket, 1.0) == ["WATCHDOG=1"]
    finally:
        watchdog.stop()


def test_watchdog_without_interval_never_starts(notify_socket: socket.socket) -> None:
    watchdog = ProgressWatchdog(Notifier(), interval_s=None)
    watchdog.start()
    watchdog.beat()
    assert not [t for t in threading.enumerate() if t.name == "sd-watchdog"]  # no pinger at any period
    assert received(notify_socket, 0.2) == []
    watchdog.stop()


def test_stall_watchdog_pings_while_idle_and_withholds_while_a_piece_of_work_hangs(
        notify_socket: socket.socket, caplog: pytest.LogCaptureFixture) -> None:
    """An MQTT bridge in a quiet room does nothing for hours and must not be restarted; one stuck in a
    spool write must be."""
    watchdog = StallWatchdog(Notifier(), interval_s=1.0)  # checks every 0.5 s
    release = threading.Event()

    def hang() -> None:
        with watchdog.working("mqtt-feed"):
            release.wait(10)

    def pings(seconds: float) -> int:
        return [line for _, line in notifications(notify_socket, seconds)].count("WATCHDOG=1")

    watchdog.start()
    worker = threading.Thread(target=hang)
    try:
        assert pings(1.3) >= 2  # no work at all: pinging
        with watchdog.working("mqtt-link"):
            pass  # a piece that ended is no stall
        worker.start()
        pings(1.0)  # a check within 0.5 s of the hang's start may still ping
        assert pings(1.2) == 0
        assert watchdog.stalled(0.5)[0][0] == "mqtt-feed"
        assert "stuck in one piece of work: mqtt-feed for" in caplog.text
        release.set()
        worker.join()
        assert pings(1.3) >= 2  # pinging again at once
        assert watchdog.stalled(0.0) == []
    finally:
        release.set()
        watchdog.stop()


def test_logging_goes_to_stderr_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    handler = logs.setup_logging("warning")
    try:
        assert isinstance(handler, logging.StreamHandler)
        assert logging.getLogger().level == logging.WARNING
        logs.set_level("debug")
        assert logging.getLogger().level == logging.DEBUG
        assert logs.setup_logging("info") in logging.getLogger().handlers
        assert handler not in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(logs.setup_logging("info"))


def _stderr_as_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """What systemd sets for a unit whose stderr is the journal: the stream's device:inode."""
    stat = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")


def test_logging_goes_to_journal_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    from systemd.journal import JournalHandler

    _stderr_as_journal(monkeypatch)
    handler = logs.setup_logging("info")
    try:
        assert isinstance(handler, JournalHandler)
    finally:
        logging.getLogger().removeHandler(handler)


def test_a_terminal_that_inherited_systemds_variables_keeps_its_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell started from a service's session has JOURNAL_STREAM and INVOCATION_ID while its stderr is a
    terminal: its lines went to the journal, not to the screen."""
    from systemd.journal import JournalHandler

    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    handler = logs.setup_logging("info")
    try:
        assert not isinstance(handler, JournalHandler)
    finally:
        logging.getLogger().removeHandler(handler)


def test_bad_level_names_the_key() -> None:
    with pytest.raises(ValueError, match="log.level: 'loud'"):
        logs.set_level("loud")


@pytest.mark.parametrize("unit", sorted((REPO / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_each_command_logs_under_its_units_identifier(unit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`journalctl -t edge-asr-mqtt` must find the bridge's own lines: the journal handler's
    SYSLOG_IDENTIFIER is the one the unit running the command names."""
    text = unit.read_text()
    command = re.search(r"^ExecStart=\S+/edge-asr (\S+)", text, re.M).group(1)
    wanted = re.search(r"^SyslogIdentifier=(\S+)$", text, re.M).group(1)
    _stderr_as_journal(monkeypatch)
    handler = logs.setup_logging("info", journal_identifier(command))
    sent: list[dict[str, object]] = []
    handler.send = lambda text, /, **fields: sent.append(fields)  # type: ignore[attr-defined]
    try:
        logging.getLogger("edge.test").warning("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    assert [fields["SYSLOG_IDENTIFIER"] for fields in sent] == [wanted]


def test_a_thread_that_dies_is_logged_as_an_error(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Python's default prints a dead thread's traceback to stderr, which journald files at info."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    handler = logs.setup_logging("info")

    def broken() -> None:
        raise RuntimeError("wedged in native code")

    try:
        thread = threading.Thread(target=broken, name="recognizer")
        thread.start()
        thread.join(5)
    finally:
        logging.getLogger().removeHandler(handler)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["thread recognizer stopped by an unexpected error"]
    assert errors[0].exc_info is not None and "wedged in native code" in str(errors[0].exc_info[1])
