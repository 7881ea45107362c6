"""Hostile or careless config files: every one is a ConfigError with short messages, fast, in bounded memory.

Issue 10 items 1 and 4: each of these used to kill `run` at a reload (exit 1), hang, or take
gigabytes; now each is one clear problem, and a reload keeps the old settings.
"""

from __future__ import annotations

import os
import tracemalloc
import time
from pathlib import Path

import pytest

from edge.config import MAX_CONFIG_BYTES, ConfigError, load_config

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9)
)


def wait_until_catching(pid: int, signum: int, timeout: float = 10.0) -> None:
    """Until the process has a handler for `signum` (the SigCgt mask in /proc): sending it earlier
    would hit Python's start-up, before any code of ours runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} never installed a handler for signal {signum}")


def problems(path: Path) -> list[str]:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert time.monotonic() - started < 2.0, "a bad config must be refused quickly"
    assert all(len(message) < 600 for message in caught.value.messages), caught.value.messages
    return caught.value.messages


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("# a bell \x07 in a comment\nvad:\n  threshold: 0.5\n", "control character"),
        ("x: " + "[" * 2000 + "]" * 2000 + "\n", "nested"),
        ("a: &a [*a]\n", "alias"),
        (ALIAS_BOMB, "alias"),
        ("vad: {threshold: 0.5, min_silence_ms: &m 300, speech_pad_ms: *m}\n", "alias"),
        ("vad:\n\tthreshold: 0.3\n", "YAML indents with spaces only: replace the TAB with spaces"),
    ],
    ids=["control-char", "deep-nesting", "recursive-alias", "alias-bomb", "plain-alias", "tab"],
)
def test_malformed_yaml_is_one_short_problem(tmp_path: Path, text: str, needle: str) -> None:
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and needle in found[0] and str(tmp_path) in found[0], found


def test_a_huge_value_is_shown_as_an_excerpt(tmp_path: Path) -> None:
    found = problems(write(tmp_path, f"log:\n  level: {'x' * 100_000}\n"))
    assert "log.level" in found[0] and "..." in found[0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"vad:\n  threshold: {'1' * 5000}\n", "line 2: \"111"),
        ("log:\n  level: 2026-13-45\n", 'line 2: log.level: "2026-13-45" is not one of the choices'),  # dates are text
        (f"vocabulary:\n  terms:\n    - a\n    - {{term: b, weight: 1{'0' * 400}}}\n",
         'line 4: vocabulary.terms item 2 ("b"): weight (a number of more than 38 digits) is out of range'),
    ],
    ids=["5000-digits", "date-is-text", "400-digit-weight"],
)
def test_a_value_python_cannot_build_is_one_problem_with_its_line(tmp_path: Path, text: str, needle: str) -> None:
    """These raised ValueError/OverflowError out of the YAML loader or the weight check (exit 1, a traceback)."""
    found = problems(write(tmp_path, text))
    assert any(needle in message for message in found), found


def test_an_oversized_file_is_not_read(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "# padding\n" * (MAX_CONFIG_BYTES // 10 + 10)))
    assert f"larger than {MAX_CONFIG_BYTES // 1024} KiB" in found[0]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_not_a_config_file(device: str) -> None:
    tracemalloc.start()
    try:
        found = problems(Path(device))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "not a regular file" in found[0]
    assert peak < MAX_CONFIG_BYTES  # nothing read from it (the process-wide ru_maxrss could not tell)


def test_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in problems(fifo)[0]


def test_a_symlink_loop_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    loop = tmp_path / "config.yaml"
    loop.symlink_to(tmp_path / "other.yaml")
    (tmp_path / "other.yaml").symlink_to(loop)
    assert "symbolic links" in problems(loop)[0] or "Too many levels" in problems(loop)[0]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('model:\n  path: "~nosuchuser/models"\n',
         'model.path: "~nosuchuser/models" cannot be resolved to a path (Could not determine home directory.)'),
        ("vocabulary:\n  file: LOOP\n", 'vocabulary.file: "LOOP" cannot be resolved to a path (Symlink loop from'),
        ('publish:\n  socket: "/run/a\\0b.sock"\n', 'publish.socket: "/run/a\\u0000b.sock" holds a NUL character'),
        (f"publish:\n  socket: /run/{'x' * 110}.sock\n", "is 120 bytes long; expected at most 89 (a Unix socket path holds 107, and the daemon first binds a name 18 bytes longer beside it)"),
        ("debug:\n  record_audio_dir: /etc/passwd\n", 'debug.record_audio_dir: "/etc/passwd" -> /etc/passwd is not a directory'),
        ("model:\n  path: MODEL\n  language: no\n", "model.language: false is true/false (YAML reads a bare yes, no, on or off that "
                                      "way: put the value in quotes)"),
        ('log:\n  level: "info\u00a0"\n', 'log.level: "info\\u00a0" is not one of the choices'),
        ("vad:\n  \u00a0threshold: 0.5\n", "vad.\\u00a0threshold is not a known key"),
    ],
    ids=["unknown-home", "symlink-loop", "nul", "long-socket", "record-dir-a-file", "bare-no", "nbsp-value", "nbsp-key"],
)
def test_paths_and_pasted_values_are_one_clear_problem(tmp_path: Path, int8_model_dir: Path, keys: str,
                                                        expected: str) -> None:
    """Each was a traceback (RuntimeError, PermissionError), passed check-config and stopped `run`, or
    printed a character the technician cannot see (a pasted non-breaking space)."""
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    keys = keys.replace("LOOP", str(loop)).replace("MODEL", str(int8_model_dir))
    path = write(tmp_path, f"model:\n  path: {int8_model_dir}\n" * ("model:" not in keys) + keys)
    found = problems(path)
    assert len(found) == 1 and expected.replace("LOOP", str(loop)) in found[0], found


def test_a_file_the_service_user_cannot_reach_is_named(tmp_path: Path, int8_model_dir: Path, monkeypatch) -> None:
    """`sudo -u edge-asr edge-asr check-config` on a password file in a directory it may not enter: a
    PermissionError traceback before. (The tests run as root, who reaches every file: the refusal is staged.)"""
    secret = tmp_path / "private" / "pw"
    real_stat = Path.stat

    def stat(path: Path, *args, **kwargs):
        if path == secret:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    found = problems(write(tmp_path, f"model:\n  path: {int8_model_dir}\nmqtt:\n  enabled: true\n  box_id: b1\n"
                                     f"  username: u\n  password_file: {secret}\n"))
    assert "mqtt.password_file: (not shown) cannot be reached (Permission denied; the service user needs access to it)" \
        in found[0] and str(secret) not in found[0]  # never quoted: the value may be the password itself


# --- the daemon: a bad reload never stops it ----------------------------------------------


def test_reloads_of_hostile_files_keep_the_daemon_and_its_settings(tmp_path: Path, int8_model_dir: Path,
                                                                     eval_dir: Path) -> None:
    import signal

    from tests.conftest import load_manifest
    from tests.test_daemon import Subscriber, finish, start_daemon, write_config

    silence = next(r for r in load_manifest("nonspeech") if r["audio"].startswith("silence"))["path"]
    config = write_config(tmp_path, int8_model_dir, vocabulary={"terms": ["Siobhan", "深圳"]})
    good = config.read_text()
    daemon = start_daemon(config, f"file:{silence}", "--pace", "fast")
    wait_until_catching(daemon.pid, signal.SIGHUP)  # edge-asr is up; the model load takes about a second more
    daemon.send_signal(signal.SIGHUP)  # remembered, not fatal
    subscriber = Subscriber(tmp_path / "asr.sock")
    try:
        kept = _settings(subscriber)
        assert kept["vocabulary"]["terms"] == 2
        for text in ("# \x07\n" + good, ALIAS_BOMB, "x: " + "[" * 2000 + "]" * 2000 + "\n"):
            config.write_bytes(text.encode())
            seen = len(subscriber.events)
            daemon.send_signal(signal.SIGHUP)
            error = subscriber.wait_for(lambda e: e["type"] == "error", 15, after=seen)
            assert error["reason"] == "config_invalid" and len(error["message"]) < 600
            assert daemon.poll() is None
        assert _settings(subscriber) == kept  # not the defaults a failed reload could have left
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, err = finish(daemon, 15)
    assert code == 0, err
    assert "Traceback" not in err and "a reload was requested during start-up" in err


def _settings(subscriber) -> dict:
    """What of the config a status shows: the model, its language and script, and the vocabulary."""
    seen = len(subscriber.events)
    subscriber.request_status()
    status = subscriber.wait_for(lambda e: e["type"] == "status" and "model" in e, 10, after=seen)
    return {key: status[key] for key in ("model", "language", "chinese_script", "vocabulary")}
