"""`edge-asr devices`: table, JSON, no devices at all, and the real virtual microphone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.audio import mic as capture
from edge.audio.mic import InputDevice
from edge.cli import main
from tests.conftest import REPO

FAKE = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 44100, 2, "ALSA", False),
    InputDevice(4, "USB PnP Sound Device: Audio (hw:1,0)", 48000, 1, "ALSA", True),
]


def test_table_lists_index_name_rate_channels(monkeypatch, capsys) -> None:
    monkeypatch.setattr(capture, "list_input_devices", lambda: FAKE)
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["index", "name", "rate_hz", "channels", "host_api"]
    assert lines[2].split()[:2] == ["*", "4"] and "USB PnP Sound Device" in lines[2]
    assert lines[2].split()[-3:] == ["48000", "1", "ALSA"]


def test_json_format(monkeypatch, capsys) -> None:
    monkeypatch.setattr(capture, "list_input_devices", lambda: FAKE)
    assert main(["devices", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {
        "index": 0, "name": FAKE[0].name, "rate": 44100, "channels": 2, "hostapi": "ALSA", "is_default": False,
    }  # fmt: skip


def test_portaudio_that_cannot_list_is_one_line_not_a_traceback(monkeypatch, capsys) -> None:
    import sounddevice as sd

    def broken() -> list[InputDevice]:
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(capture, "list_input_devices", broken)
    assert main(["devices"]) == 1
    assert capsys.readouterr().err == "edge-asr devices: PortAudio cannot list the devices: Error querying device -1\n"


def test_no_devices_is_one_clear_line_and_success(monkeypatch, capsys) -> None:
    monkeypatch.setattr(capture, "list_input_devices", lambda: [])
    assert main(["devices"]) == 0
    assert capsys.readouterr().out == "No audio input devices found (PortAudio lists none).\n"


def test_lists_the_virtual_microphone(virtual_mic) -> None:
    done = subprocess.run([sys.executable, "-m", "edge", "devices", "--format", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = {row["name"]: row for row in json.loads(done.stdout)}
    assert names["pulse"]["channels"] == 32 and names["pulse"]["rate"] == 44100


def test_help_line_comes_from_the_docstring(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "List audio input devices (index, name, native rate, channels)" in " ".join(capsys.readouterr().out.split())
