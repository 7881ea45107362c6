"""A real microphone path without hardware: a private PulseAudio server whose
null sink `vmic` is heard through its monitor source.

Use the fixture `virtual_mic` (registered in tests/conftest.py); in a test
open `sounddevice`/`MicSource` on `virtual_mic.device` and feed it with
`virtual_mic.play(path)` (paplay, real-time paced). For another sink format
use `open_virtual_mic(monkeypatch, rate=48000, channels=2)` as a context
manager. `stop()` / `start()` kill and restart the server (device loss);
`freeze()` / `thaw()` suspend and resume it (a hung device).

Each server lives in its own temporary runtime/state directories, so tests
of several engineers (or xdist workers) never share one. Client autospawn is
off: a test that stops the server must not get a stray default daemon.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

SINK = "vmic"
NEEDED = ("pulseaudio", "paplay")
APT_HINT = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2"
READY_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def require_pulseaudio() -> None:
    """Skip the calling test, with the reason, when PulseAudio's tools are absent."""
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: virtual microphone tests need `{APT_HINT}`")


class VirtualMic:
    """A private PulseAudio server with a null sink `vmic`; capture `device` to hear it."""

    device = "pulse"  # ALSA's PulseAudio plug-in as PortAudio lists it

    def __init__(self, root: Path, rate: int = 16000, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        runtime = root / "runtime"
        for folder in (runtime, root / "state", root / "home"):
            folder.mkdir(parents=True, exist_ok=True)
        client_conf = root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        self.env = {
            "PULSE_RUNTIME_PATH": str(runtime),
            "PULSE_STATE_PATH": str(root / "state"),
            "PULSE_SERVER": f"unix:{runtime / 'native'}",
            "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_SOURCE": f"{SINK}.monitor",
        }
        # the server and players also get a private HOME: nothing lands in the real one
        self._child_env = {**self.env, "HOME": str(root / "home")}
        self._log = root / "pulseaudio.log"
        self._server: subprocess.Popen | None = None
        self._players: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start (or restart) the server; returns once clients can connect."""
        if self._server is not None:
            raise RuntimeError("virtual microphone server already running")
        sink = f"module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels} format=s16le norewinds=1"
        with open(self._log, "ab") as log:
            self._server = subprocess.Popen(
                ["pulseaudio", "--daemonize=no", "--use-pid-file=no", "-n", "--exit-idle-time=-1",
                 "-L", "module-native-protocol-unix auth-anonymous=1", "-L", sink, "-L", "module-always-sink"],
                env={**os.environ, **self._child_env}, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                break
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(self.env["PULSE_SERVER"].removeprefix("unix:")) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pulseaudio did not start: {self._log.read_text(errors='replace')[-2000:]}")

    def play(self, path: str | Path, wait: bool = False) -> subprocess.Popen:
        """Play a sound file into the microphone in real time (paplay)."""
        player = subprocess.Popen(
            ["paplay", f"--device={SINK}", str(path)],
            env={**os.environ, **self._child_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._players.append(player)
        if wait:
            _, err = player.communicate()
            if player.returncode != 0:
                raise RuntimeError(f"paplay {path} failed: {err.decode(errors='replace').strip()}")
        return player

    def stop(self) -> None:
        """Kill the server and any player: to PortAudio the device vanishes."""
        for player in self._players:
            _end(player)
        self._players.clear()
        if self._server is not None:
            self._server.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            _end(self._server)
            self._server = None

    def freeze(self) -> None:
        """Suspend the server: the device hangs (no data, no error) instead of vanishing."""
        self._server.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._server.send_signal(signal.SIGCONT)


def _die_with_parent() -> None:
    """In the server's child: get SIGTERM when the test process dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


@contextlib.contextmanager
def open_virtual_mic(monkeypatch: pytest.MonkeyPatch, rate: int = 16000, channels: int = 1) -> Iterator[VirtualMic]:
    """A running virtual microphone with its environment set in os.environ for the test."""
    require_pulseaudio()
    with tempfile.TemporaryDirectory(prefix="vmic-") as root:
        mic = VirtualMic(Path(root), rate, channels)
        for key, value in mic.env.items():
            monkeypatch.setenv(key, value)
        mic.start()
        try:
            yield mic
        finally:
            mic.stop()


@pytest.fixture
def virtual_mic(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualMic]:
    """A 16 kHz mono virtual microphone (skips when PulseAudio is not installed)."""
    with open_virtual_mic(monkeypatch) as mic:
        yield mic
