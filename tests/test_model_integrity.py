"""A damaged model is refused with one line naming the file, at start-up and by check-config (issue 10 item 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.asr.load import load_recognizer
from edge.errors import ModelError
from edge import manifest
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


def _edit_manifest(model: Path, change) -> None:  # noqa: ANN001 - a function of the manifest dict
    data = json.loads((model / "manifest.json").read_text())
    change(data)
    (model / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("dims"), "dims is missing or not a mapping of positive whole numbers"),
        (lambda m: m.update(family=["whisper"]), "family ['whisper'] is not a name"),
        (lambda m: m["streaming"].update(final_beam="five"), "streaming.final_beam 'five' is not a positive whole number"),
        (lambda m: m.update(streaming="x"), "streaming 'x' is not a mapping"),
        (lambda m: m.update(languages="zh"), "languages 'zh' is not a list of language codes"),
        (lambda m: m.update(family="parakeet"), "unknown model family 'parakeet' (this edge-asr knows whisper)"),
        (lambda m: m.update(format=1), "format 1 is not 2, the one this edge-asr reads (another version built it); "
                                       "rebuild the model with scripts/build_model.py"),
        (lambda m: m.pop("format"), "format None is not 2"),
    ],
    ids=["no-dims", "family-list", "beam-text", "streaming-text", "languages-text", "other-family", "format-1",
         "no-format"],
)
def test_a_manifest_field_of_the_wrong_shape_fails_check_config_not_the_start(copy: Path, tmp_path: Path, change,
                                                                              message: str) -> None:
    """A model built by another edge-asr: these passed check-config, then the daemon exited 1 or
    transcribe printed a traceback (TypeError, ValueError, KeyError 'dims')."""
    _edit_manifest(copy, change)
    with pytest.raises(ModelError) as refused:
        load_recognizer(copy)
    assert message in str(refused.value)
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {copy}\n")
    run = subprocess.run([sys.executable, "-m", "edge", "check-config", str(config)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 78 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_manifest_listing_a_path_outside_the_model_is_refused(copy: Path) -> None:
    """Its size and hash were checked at that path: a manifest could name any file on the box."""
    _edit_manifest(copy, lambda m: m["files"].update({"../encoder.onnx": m["files"]["encoder.onnx"]}))
    assert verify(copy) == [f"{copy / 'manifest.json'}: lists '../encoder.onnx', not a file of the model directory"]


def test_an_unreadable_model_file_is_named_not_a_traceback(copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root-only permissions after a copy; the service user gets EACCES while hashing (root here cannot be refused)."""
    def refuse(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(manifest, "_sha256", refuse)
    assert verify(copy)[0].endswith("cannot be read (Permission denied; the service user must be able to read the model)")


def test_the_daemon_exits_78_on_a_damaged_model_like_check_config(copy: Path, tmp_path: Path) -> None:
    """Exit 1 let systemd restart it five times, hashing the model each time; no restart mends it."""
    flip_byte(copy / "decoder.onnx", 0.5)
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {copy}\npublish:\n  socket: {tmp_path / 'asr.sock'}\n")
    run = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config), "--source", "file:/dev/null"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 78 and "decoder.onnx: content does not match" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
