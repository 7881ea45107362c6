"""`edge-asr listen` and `edge-asr status` against a real publisher (or none)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge import cli
from edge.publish import protocol
from edge.commands import listen, reload
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


def run_edge(*argv: str) -> subprocess.CompletedProcess[str]:
    """In a process of its own with a deadline: a command that hangs fails the test, not the whole run."""
    return subprocess.run([sys.executable, "-m", "edge", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=15, check=False)


def _chatty_daemon(sock_path: Path, greet: bool = True) -> tuple[socket.socket, threading.Event]:
    """A daemon that keeps sending partials (or, with greet=False, accepts and says nothing) and never
    answers a request."""
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            if greet:
                conn.sendall(b'{"type":"hello","audio_time_s":1.0,"model":"m","backend":"cpu","sample_rate":16000}\n')
            while not done.wait(0.2):
                if greet:
                    with contextlib.suppress(OSError):
                        conn.sendall(b'{"type":"partial","utterance_id":1,"text":"a","stable_text":"","start_s":0,'
                                     b'"end_s":1,"audio_time_s":1.0}\n')

    threading.Thread(target=serve, daemon=True).start()
    return server, done


def test_status_timeout_is_a_deadline_not_a_per_read_wait(sock_path: Path) -> None:
    """A busy room's partials kept `status --timeout 2` waiting for ever on a daemon that never answered."""
    server, done = _chatty_daemon(sock_path)
    try:
        result = run_edge("status", "--socket", str(sock_path), "--timeout", "1")
    finally:
        done.set()
        server.close()
    assert result.returncode == 1 and result.stdout == "" and "did not answer in time" in result.stderr


def test_listen_to_a_daemon_that_never_says_hello_gives_up_with_a_line(sock_path: Path) -> None:
    server, done = _chatty_daemon(sock_path, greet=False)
    try:
        result = run_edge("listen", "--socket", str(sock_path))
    finally:
        done.set()
        server.close()
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "edge-asr listen: the daemon did not answer in time\n")


def test_chinese_text_under_a_latin1_terminal_is_escaped_not_a_traceback(sock_path: Path) -> None:
    """A status with Chinese vocabulary terms under PYTHONIOENCODING=latin-1 raised UnicodeEncodeError."""
    pub = make_publisher(sock_path, status=lambda: {"state": "listening", "vocabulary_source": "深圳"})
    pub.start()
    try:
        result = subprocess.run([sys.executable, "-m", "edge", "status", "--socket", str(sock_path), "--format", "json"],
                                cwd=REPO, capture_output=True, env={**os.environ, "PYTHONIOENCODING": "latin-1"},
                                timeout=30, check=False)
    finally:
        pub.close(1.0)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert "深圳".encode("unicode_escape") in result.stdout  # \u6df1\u5733


@pytest.mark.parametrize("pid", ["0", "-1", "1", "own", "seven"])
def test_reload_refuses_a_pid_that_is_not_one_daemon(pid: str) -> None:
    """kill(0) signals the caller's whole process group, kill(-1) every process it may signal (as root: the
    box), and a stopped service's MainPID is 0. Checked on the parser, never by sending: a regression
    must fail this test, not signal the machine running it."""
    with pytest.raises(argparse.ArgumentTypeError, match="is not (the daemon's|a) process id"):
        reload._daemon_pid(str(os.getpid()) if pid == "own" else pid)


def test_reload_with_pid_0_says_so_and_signals_nothing(sock_path: Path) -> None:
    """The whole command, in a session of its own: were --pid 0 ever sent, only that session would get it."""
    result = subprocess.run([sys.executable, "-m", "edge", "reload", "--socket", str(sock_path), "--pid", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=15, check=False, start_new_session=True)
    assert result.returncode == 2 and "0 is not the daemon's process id (0: is the service running?)" in result.stderr


def test_backends_with_a_broken_config_exits_78_with_the_check_config_lines(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("inference:\n  backend: gpu\n")
    result = run_edge("backends", "--config", str(config))
    assert result.returncode == 78, result.stderr
    assert f'{config} line 2: inference.backend: "gpu" is not one of the choices' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"{config}: ") and result.stderr.rstrip().endswith("not usable")


def test_reload_takes_the_answer_to_its_own_signal_not_an_earlier_reloads(tmp_path: Path) -> None:
    """A reload started by a SIGHUP from elsewhere, still running when `edge-asr reload` subscribed: its
    status (and its config_invalid) came first and was reported as the answer."""
    path = tmp_path / "asr.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                                 "signal.SIG_IGN); print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    stand_in.stdout.readline()  # SIGHUP ignored from here on
    events = [
        {"type": "hello", "audio_time_s": 1.0, "model": "m", "backend": "cpu", "sample_rate": 16000, "reload_requests": 3},
        {"type": "error", "audio_time_s": 1.0, "reason": "config_invalid", "message": "vad.threshold: nine"},
        {"type": "status", "audio_time_s": 1.0, "message": "reload failed: config invalid, old settings kept",
         "reload_requests_answered": 3},
        {"type": "status", "audio_time_s": 1.1, "message": "reloaded", "reload_requests_answered": 4},
    ]

    def daemon() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"".join(json.dumps(event).encode() + b"\n" for event in events))
            conn.recv(1)  # until the command hangs up

    thread = threading.Thread(target=daemon)
    thread.start()
    try:
        with client.connect(str(path), 5) as sock:
            message, problems = reload.reload(sock, stand_in.pid, 5)
    finally:
        stand_in.kill()
        stand_in.wait()
        thread.join(5)
        server.close()
    assert (message, problems) == ("reloaded", [])
