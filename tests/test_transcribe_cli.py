"""`edge-asr transcribe`: the output contract other tools parse, error lines and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.commands.transcribe import DEFAULT_MODEL, EXIT_FILE_ERRORS, EXIT_MODEL_ERROR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(eval_dir) -> list[Path]:
    return [eval_dir / "real_en" / "jfk.wav", eval_dir / "nonspeech" / "silence_10s.wav"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["transcribe", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_model_is_the_int8_dir_beside_the_package(int8_model_dir):
    assert DEFAULT_MODEL == int8_model_dir


def test_jsonl_one_line_per_file_and_bad_file_reported(capsys, clips, int8_model_dir, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    code, out, err = _run(capsys, "--format", "jsonl", "--threads", "2", str(clips[0]), str(bad), str(clips[1]))
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == [str(clips[0]), str(clips[1])]
    assert all(set(r) == {"file", "text", "duration_s", "elapsed_s", "language"} for r in records)
    assert "ask not what your country can do for you" in records[0]["text"]
    assert records[0]["duration_s"] == 11.0 and 0 < records[0]["elapsed_s"] < 60
    assert records[1]["text"] == ""
    assert err.count("\n") == 1 and str(bad) in err
    assert code == EXIT_FILE_ERRORS


def test_text_format_prints_the_transcript(capsys, clips):
    code, out, err = _run(capsys, "--beam", "1", str(clips[0]))
    assert code == 0 and err == ""
    assert out.startswith("And so my fellow Americans")
    assert out.count("\n") == 1


def test_missing_model_dir_is_one_line_and_exit_2(capsys, clips, tmp_path):
    code, out, err = _run(capsys, "--model", str(tmp_path / "nope"), str(clips[0]))
    assert code == EXIT_MODEL_ERROR and out == ""
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.mark.parametrize("flag, value", [("--beam", "0"), ("--threads", "-1"), ("--format", "xml")])
def test_bad_options_are_usage_errors(capsys, clips, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", flag, value, str(clips[0])])
    assert exit_info.value.code == 2


def test_real_process_with_corrupt_model_has_no_traceback(int8_model_dir, clips, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for item in int8_model_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "encoder.onnx").unlink()
    (broken / "encoder.onnx").write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "transcribe", "--model", str(broken), str(clips[0])],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == EXIT_MODEL_ERROR
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "encoder.onnx: 64 bytes, the manifest says" in proc.stderr
