"""A damaged model is refused with one line naming the file, at start-up and by check-config (issue 10 item 7)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.asr.load import load_recognizer
from edge.errors import ModelError
from edge.manifest import verify
from tests.conftest import REPO


@pytest.fixture
def copy(tmp_path: Path, int8_model_dir: Path) -> Path:
    target = tmp_path / "whisper-tiny.en-int8"
    shutil.copytree(int8_model_dir, target)
    return target


def flip_byte(path: Path, fraction: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_intact_model_verifies(int8_model_dir: Path) -> None:
    assert verify(int8_model_dir) == []


def test_one_flipped_byte_in_the_decoder_is_refused(copy: Path) -> None:
    flip_byte(copy / "decoder.onnx", 0.5)
    with pytest.raises(ModelError, match=r"decoder.onnx: content does not match the manifest's sha256"):
        load_recognizer(copy)


def test_a_replaced_config_json_is_refused_not_a_traceback(copy: Path) -> None:
    (copy / "config.json").write_text("[]")
    with pytest.raises(ModelError, match=r"config.json: \d+ bytes, the manifest says"):
        load_recognizer(copy)


def test_check_config_reports_a_damaged_model(copy: Path, tmp_path: Path) -> None:
    flip_byte(copy / "encoder.onnx", 0.3)
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {copy}\n")
    run = subprocess.run([sys.executable, "-m", "edge", "check-config", str(config)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 78
    assert "model.path:" in run.stderr and "encoder.onnx" in run.stderr and "Traceback" not in run.stderr
