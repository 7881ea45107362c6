"""edge.publish.client.Subscription: the connection the socket apps (captions, mqtt) follow."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from edge.publish.client import Subscription
from tests.test_publisher import make_publisher, wait_for


def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_follow_hands_over_lines_takes_requests_and_wakes_on_demand(tmp_path: Path) -> None:
    path = tmp_path / "asr.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        subscription, stop = Subscription(str(path)), threading.Event()
        lines: list[bytes] = []
        connected, reasons = threading.Event(), []
        reader = threading.Thread(target=lambda: reasons.append(subscription.follow(stop, lines.append, connected.set)))
        reader.start()
        conn, _ = server.accept()
        with conn:
            conn.sendall(b'{"type":"hello"}\n{"type":"fin')
            _until(lambda: lines == [b'{"type":"hello"}\n'])
            assert connected.is_set()
            assert subscription.send(b'{"type":"status"}\n')
            assert conn.recv(64) == b'{"type":"status"}\n'
            stop.set()
            subscription.wake()  # the reader is blocked in recv: this must end it
            reader.join(5)
            assert not reader.is_alive()  # here, while the server still holds the connection open
    assert reasons == ["the daemon closed the connection in the middle of an event"]
    assert not subscription.send(b"{}\n")  # no connection left to write on


def test_follow_says_why_there_is_no_connection(tmp_path: Path) -> None:
    reason = Subscription(str(tmp_path / "none.sock")).follow(threading.Event(), lambda line: None)
    assert reason.startswith("no edge-asr daemon at") and "socket not found" in reason


def test_a_daemon_that_turns_the_subscriber_away_is_quoted(tmp_path: Path) -> None:
    """The error event before the hang-up says why; the apps used to log 'the daemon closed the connection'."""
    publisher = make_publisher(tmp_path / "asr.sock", max_subscribers=1)
    publisher.start()
    try:
        first = Subscription(str(tmp_path / "asr.sock"))
        stop = threading.Event()
        holder = threading.Thread(target=first.follow, args=(stop, lambda line: None))
        holder.start()
        wait_for(lambda: publisher.subscriber_count == 1, timeout=5)
        reason = Subscription(str(tmp_path / "asr.sock")).follow(threading.Event(), lambda line: None)
        stop.set()
        first.wake()
        holder.join(5)
    finally:
        publisher.close(timeout=1.0)
    assert reason.startswith("the daemon refused this subscriber: 1 subscribers are connected") and \
        reason.endswith("(too_many_subscribers)"), reason


def test_a_stop_before_the_connection_is_registered_is_still_seen(tmp_path: Path) -> None:
    """wake() can only shut down a registered socket; a stop set earlier must end follow() at once."""
    path = tmp_path / "asr.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        stop = threading.Event()
        stop.set()
        seen: list[bytes] = []
        connected, reasons = threading.Event(), []
        reader = threading.Thread(target=lambda: reasons.append(Subscription(str(path)).follow(stop, seen.append, connected.set)))
        reader.start()
        reader.join(5)  # in a thread: without the check follow() would block in recv for good
        assert not reader.is_alive()
        assert reasons == ["stopped"] and seen == [] and not connected.is_set()


def test_a_daemon_that_stops_reading_requests_cannot_block_send_or_wake(tmp_path: Path) -> None:
    """send() never blocks under the lock wake() needs: once the socket's buffer is full the
    request is refused and the connection ended, with the reason."""
    path = tmp_path / "asr.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        subscription, stop, reasons = Subscription(str(path)), threading.Event(), []
        reader = threading.Thread(target=lambda: reasons.append(subscription.follow(stop, lambda line: None)))
        reader.start()
        conn, _ = server.accept()
        with conn:  # accepted, never read
            _until(lambda: subscription.send(b"{}\n"))
            request = b'{"type":"status"}\n' * 4096
            refused: list[int] = []
            sender = threading.Thread(target=lambda: refused.extend(
                n for n in range(1000) if not subscription.send(request)))
            sender.start()
            sender.join(5)  # in a thread: a blocking send would hang here, not fail
            assert not sender.is_alive() and refused
            reader.join(5)
            assert not reader.is_alive()
    assert reasons == ["the daemon stopped reading requests (its socket buffer is full)"]
    assert not subscription.send(b"{}\n")
