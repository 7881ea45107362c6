"""Fixtures shared by every test module: the eval data and the built models."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.virtual_mic"]  # the `virtual_mic` fixture: a PulseAudio null-sink microphone

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO.parent / "shared" / "eval"
MODELS = REPO / "models"


def load_manifest(set_name: str) -> list[dict]:
    """One eval set's manifest lines, with `path` added."""
    set_dir = EVAL_DIR / set_name
    rows = [json.loads(line) for line in (set_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row["path"] = set_dir / row["audio"]
    return rows


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not (EVAL_DIR / "README.md").exists():
        pytest.skip(f"shared eval data not found at {EVAL_DIR} (expected beside the project root)")
    return EVAL_DIR


def _built_model(name: str) -> Path:
    path = MODELS / name
    if not (path / "manifest.json").exists():
        pytest.fail(f"{path} is not built: run scripts/build_model.py (scripts/test.sh does it first)")
    return path


@pytest.fixture(scope="session")
def int8_model_dir() -> Path:
    return _built_model("whisper-tiny.en-int8")


@pytest.fixture(scope="session")
def fp32_model_dir() -> Path:
    return _built_model("whisper-tiny.en-fp32")


@pytest.fixture(scope="module")
def offline(int8_model_dir) -> Callable[[Path], str]:
    """What the offline recognizer (`edge-asr transcribe`) makes of a whole file."""
    from edge.audio.audiofile import load_audio
    from edge.asr.whisper.recognizer import Recognizer

    recognizer = Recognizer.from_dir(int8_model_dir)
    return lambda path: recognizer.transcribe_long(load_audio(path), options=recognizer.options(beam_size=5)).text


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A socket path short enough for AF_UNIX (pytest's tmp_path can exceed 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="easr-", dir="/tmp"))
    yield directory / "run" / "asr.sock"
    shutil.rmtree(directory, ignore_errors=True)


def notify_socket_at(path: Path) -> socket.socket:
    """A stand-in for systemd's notify socket at `path` (keep it short: sun_path is 108 bytes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def notifications(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """(arrival time, line) of every notification in the next `seconds`, for senders that never fall
    quiet (a watchdog): each wait is cut at the deadline, so the window is not overrun."""
    found, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.2))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        found += [(time.monotonic(), line) for line in data.splitlines()]
    return found
