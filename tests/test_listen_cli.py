"""`edge-asr listen` and `edge-asr status` against a real publisher (or none)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

from edge import cli
from edge.publish import protocol
from edge.commands import listen
from edge.publish import client
from tests.test_publisher import make_publisher, utterance, wire

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_listen_without_daemon_fails_with_one_line(capsys, sock_path: Path) -> None:
    code, out, err = run_cli(capsys, "listen", "--socket", str(sock_path))
    assert code == 1 and out == ""
    assert err == f"edge-asr listen: no edge-asr daemon at {sock_path} (socket not found; is the daemon running?)\n"


def test_listen_on_a_stale_socket_says_refused(capsys, sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))
    code, _, err = run_cli(capsys, "listen", "--socket", str(sock_path))
    assert code == 1 and "connection refused" in err and err.count("\n") == 1


def test_permission_denied_message() -> None:
    # Root bypasses socket permissions, so the mapping is checked directly.
    message = client._connect_failure("/run/edge-asr/asr.sock", PermissionError(13, "Permission denied"))
    assert message == "permission denied on /run/edge-asr/asr.sock (join the socket's group or use sudo)"


def test_listen_prints_events_as_they_come_and_exits_0_on_close(sock_path: Path) -> None:
    pub = make_publisher(sock_path)
    pub.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "listen", "--socket", str(sock_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert json.loads(proc.stdout.readline())["type"] == "hello"
        events = utterance(1, partials=2, text="héllo")
        for event in events[:2]:
            pub.publish(event)
        assert [json.loads(proc.stdout.readline()) for _ in range(2)] == wire(events[:2])  # flushed per line
        for event in events[2:]:
            pub.publish(event)
        pub.close(2.0)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        pub.close(1.0)
    assert [json.loads(line) for line in out.splitlines()] == wire(events[2:])
    assert proc.returncode == 0 and err == b""


def test_listen_fails_when_the_daemon_dies_mid_event(capsys, sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()

    def half_an_event() -> None:
        conn, _ = server.accept()
        conn.sendall(b'{"type":"speech_start","audio_time_s":1}\n{"type":"fin')
        conn.close()

    thread = threading.Thread(target=half_an_event)
    thread.start()
    code, out, err = run_cli(capsys, "listen", "--socket", str(sock_path))
    thread.join()
    server.close()
    assert code == 1
    assert out == '{"type":"speech_start","audio_time_s":1}\n'
    assert "closed the connection in the middle of an event" in err


def test_status_prints_text_and_json(capsys, sock_path: Path) -> None:
    pub = make_publisher(sock_path, status=lambda: {"audio_time_s": 7.5, "uptime_s": 60.0, "backend": "cpu",
                                                     "queues": {"audio": 2, "inference": 0}})
    pub.start()
    try:
        code, out, _ = run_cli(capsys, "status", "--socket", str(sock_path))
        assert code == 0
        assert f"edge-asr daemon at {sock_path}" in out
        assert "  backend: cpu\n" in out and "    audio: 2\n" in out and "  subscribers: 1\n" in out
        assert "id=1, depth=0, buffered_bytes=0, dropped_partials=0" in out

        code, out, _ = run_cli(capsys, "status", "--socket", str(sock_path), "--format", "json")
        status = json.loads(out)
        assert code == 0 and status["type"] == "status" and status["uptime_s"] == 60.0
        assert status["audio_time_s"] == 7.5 and status["subscribers"] == 1
    finally:
        pub.close(1.0)


def test_status_reports_a_daemon_side_error(capsys, sock_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("warming up")

    pub = make_publisher(sock_path, status=broken)
    pub.start()
    try:
        code, out, err = run_cli(capsys, "status", "--socket", str(sock_path))
    finally:
        pub.close(1.0)
    assert code == 1 and out == "" and "warming up" in err


def test_status_skips_broadcasts_that_arrive_before_its_reply(capsys, sock_path: Path) -> None:
    """An `overload` error (the connection stays open) and a reload's `status` broadcast can come
    first: in overload, when an operator most needs `edge-asr status`, it used to fail."""
    sock_path.parent.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    lines = [
        {"type": "hello", "audio_time_s": 1.0},
        {"type": "error", "reason": "overload", "message": "decoding is behind", "audio_time_s": 1.0},
        {"type": "status", "audio_time_s": 1.1, "message": "reloaded"},
        {"type": "status", "audio_time_s": 1.2, "backend": "cpu", "subscribers": 1, "subscriber_id": 4,
         "subscriber_queues": []},
    ]

    def daemon() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in lines))

    thread = threading.Thread(target=daemon)
    thread.start()
    try:
        code, out, err = run_cli(capsys, "status", "--socket", str(sock_path), "--format", "json")
    finally:
        thread.join()
        server.close()
    assert (code, err) == (0, "") and json.loads(out)["subscriber_id"] == 4


def test_status_without_daemon_fails(capsys, sock_path: Path) -> None:
    code, out, err = run_cli(capsys, "status", "--socket", str(sock_path), "--format", "json")
    assert code == 1 and out == "" and err.startswith("edge-asr status: no edge-asr daemon at")


def _args(config: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(socket=None, config=str(config) if config else None)


def test_default_socket_comes_from_the_config(tmp_path: Path, int8_model_dir: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {int8_model_dir}\npublish:\n  socket: /srv/asr/events.sock\n")
    assert listen.socket_path(_args(config)) == "/srv/asr/events.sock"


def test_default_socket_is_read_where_other_keys_are_invalid(tmp_path: Path, capsys) -> None:
    # A daemon still runs the config it started with; an edit since must not hide it from listen/status.
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  path: /not/copied/yet\npublish:\n  socket: /srv/asr/events.sock\n")
    assert listen.socket_path(_args(config)) == "/srv/asr/events.sock"
    assert capsys.readouterr().err == ""


def test_a_broken_config_at_the_usual_place_falls_back_with_a_warning(tmp_path: Path, monkeypatch, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("publish: [this is not: a mapping\n")
    monkeypatch.setenv("EDGE_ASR_CONFIG", str(config))
    assert listen.socket_path(_args()) == protocol.DEFAULT_SOCKET
    err = capsys.readouterr().err
    assert err.startswith(f"edge-asr listen: {config}") and f"(trying {protocol.DEFAULT_SOCKET})" in err
    monkeypatch.setenv("EDGE_ASR_CONFIG", str(tmp_path / "absent.yaml"))
    assert listen.socket_path(_args()) == protocol.DEFAULT_SOCKET


def test_a_given_config_without_a_usable_socket_is_an_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("publish:\n  socket: relative.sock\n")
    for command in ("listen", "status"):
        code, out, err = run_cli(capsys, command, "--config", str(config))
        assert code == 78 and out == "" and "publish.socket" in err and "relative.sock" in err
    code, _, err = run_cli(capsys, "listen", "--config", str(tmp_path / "absent.yaml"))
    assert code == 78 and "absent.yaml" in err


def test_listen_exits_1_and_says_why_when_the_daemon_refuses_it(capsys, sock_path: Path) -> None:
    pub = make_publisher(sock_path, max_subscribers=1)
    pub.start()
    try:
        with client.connect(str(sock_path)) as first:
            assert json.loads(next(client.read_lines(first)))["type"] == "hello"
            code, out, err = run_cli(capsys, "listen", "--socket", str(sock_path))
    finally:
        pub.close(1.0)
    assert code == 1 and json.loads(out)["reason"] == "too_many_subscribers"
    assert err.startswith("edge-asr listen: the daemon refused this subscriber:") and "too_many_subscribers" in err


def test_explicit_socket_wins() -> None:
    assert listen.socket_path(argparse.Namespace(socket="/x.sock", config=None)) == "/x.sock"


def test_help_lines() -> None:
    assert cli._help_line("listen") == "Print the daemon's events as JSON lines until it disconnects."
    assert cli._help_line("status").startswith("Ask the running daemon for its status")
