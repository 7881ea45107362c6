"""`edge-asr transcribe`: the output contract other tools parse, error lines, exit codes, the progress bar."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.asr.base import Transcript
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
    assert all(set(r) == {"file", "text", "duration_s", "elapsed_s", "language", "segments"} for r in records)
    assert "ask not what your country can do for you" in records[0]["text"]
    assert records[0]["segments"] == [{"start_s": 0.0, "end_s": 11.0, "text": records[0]["text"]}]  # one window
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


@pytest.mark.parametrize("flag, value, says", [
    ("--beam", "0", "--beam: must be a whole number from 1 to 10, got '0'"),
    ("--beam", "abc", "--beam: must be a whole number from 1 to 10, got 'abc'"),
    ("--threads", "-1", "--threads: must be a whole number from 0 (all cores) to 64, got '-1'"),
    ("--format", "xml", "invalid choice: 'xml'"),
])
def test_bad_options_are_usage_errors(capsys, clips, flag, value, says):
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", flag, value, str(clips[0])])
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


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


@pytest.fixture(scope="module")
def long_clip(eval_dir) -> Path:
    return eval_dir / "longform_en" / "longform_02.wav"  # 77 s: over PROGRESS_MIN_S


def _on_a_terminal(*argv: str) -> tuple[int, str, str]:
    """`edge-asr transcribe` with stderr on a pseudo-terminal (100 columns), stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "edge", "transcribe", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    terminal = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        terminal += data
    os.close(master)
    out = proc.stdout.read().decode()
    return proc.wait(timeout=120), out, terminal.decode(errors="replace")


def _without_timing(out: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in out.splitlines()]


def test_progress_bar_only_on_a_terminal_and_only_for_long_files(capsys, clips, long_clip):
    argv = ("--format", "jsonl", "--beam", "1", "--threads", "2", str(clips[0]), str(long_clip))
    code, piped_out, piped_err = _run(capsys, *argv)
    assert code == 0 and piped_err == ""
    code, out, terminal = _on_a_terminal(*argv)
    assert code == 0
    assert "longform_02.wav:" in terminal and "/77 [" in terminal and "s/s]" in terminal
    assert "jfk.wav" not in terminal  # 11 s: done before a bar could say anything
    assert _without_timing(out) == _without_timing(piped_out)
    assert _without_timing(out)[1]["duration_s"] == 76.956


def test_a_file_damaged_part_way_is_reported_and_the_next_one_transcribed(capsys, clips, tmp_path):
    samples = 0.1 * np.sin(np.arange(40 * 16000) * 0.05)
    samples[35 * 16000] = np.nan  # found only once 32 s have been read
    damaged = tmp_path / "damaged.wav"
    sf.write(damaged, samples.astype(np.float32), 16000, subtype="FLOAT")
    code, out, err = _run(capsys, "--format", "jsonl", "--beam", "1", str(damaged), str(clips[0]))
    assert code == EXIT_FILE_ERRORS
    assert err == f"edge-asr transcribe: {damaged}: contains NaN or infinite samples (the text above is of the audio before it)\n"
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(damaged), str(clips[0])]
    assert lines[0]["text"] == "" and lines[1]["text"]  # a tone: no words, but its 35 s were decoded, not dropped
    # the record says so too (a reader of stdout alone took it for the whole file's text)
    assert lines[0]["error"] == f"{damaged}: contains NaN or infinite samples" and "error" not in lines[1]


def test_a_recognition_failure_is_reported_and_the_next_file_transcribed(capsys, clips, monkeypatch):
    import edge.asr.load

    fake = _WholeAudioOnly()
    heard = fake.transcribe

    def fail_first(audio, **kwargs):
        if not fake.heard:
            fake.heard.append(0)
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
        return heard(audio, **kwargs)

    fake.transcribe = fail_first
    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: fake)
    code, out, err = _run(capsys, str(clips[0]), str(clips[0]))
    assert code == EXIT_FILE_ERRORS and out == f"{clips[0]}: heard\n"
    assert err == f"edge-asr transcribe: {clips[0]}: recognition failed (RuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION)\n"


def test_a_file_name_that_is_not_utf8_is_transcribed(capsys, clips, tmp_path, monkeypatch):
    import edge.asr.load

    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: _WholeAudioOnly())
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")
    os.symlink(clips[0], os.fsencode(odd))
    code, out, err = _run(capsys, "--format", "jsonl", odd)
    assert (code, err) == (0, "") and json.loads(out)["file"].endswith("caf\\udce9.wav")


class _WholeAudioOnly:
    """A model family without the long-form capability: it is given the whole file at once."""

    backend_name = "cpu"
    languages = ("en",)

    def __init__(self) -> None:
        self.heard: list[int] = []

    def options(self, **_: object) -> None:
        return None

    def vocabulary_advice(self, vocabulary: object, language: str) -> None:
        return None

    def transcribe(self, audio: np.ndarray, **_: object) -> Transcript:
        self.heard.append(len(audio))
        return Transcript("heard", (), 0.0, 0.0, 0.0, ())


def test_a_family_without_streaming_gets_the_whole_file(capsys, clips, monkeypatch):
    import edge.asr.load

    fake = _WholeAudioOnly()
    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: fake)
    code, out, err = _run(capsys, str(clips[0]))
    assert (code, out, err) == (0, "heard\n", "")
    assert fake.heard == [11 * 16000]


def test_a_language_the_model_lacks_names_the_option_that_picks_the_model(capsys) -> None:
    code, out, err = _run(capsys, "--language", "zh", "any.wav")
    assert code == EXIT_MODEL_ERROR and out == ""
    assert "an English-only model" in err and "set --model to models/whisper-base-int8" in err and "model.path" not in err


# --- subtitles ---------------------------------------------------------------------------


def _cues(text: str, form: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue, parsed independently of the writer."""
    blocks = [block.splitlines() for block in text.strip().split("\n\n")]
    if form == "vtt":
        assert blocks[0] == ["WEBVTT"]
        blocks = [[None, *block] for block in blocks[1:]]
    else:
        assert [int(block[0]) for block in blocks] == list(range(1, len(blocks) + 1))
    separator = "," if form == "srt" else "."

    def seconds(clock: str) -> float:
        hours, minutes, rest = clock.split(":")
        whole, millis = rest.split(separator)
        return int(hours) * 3600 + int(minutes) * 60 + int(whole) + int(millis) / 1000

    cues = []
    for _, times, *words in blocks:
        start, end = times.split(" --> ")
        assert len(words) == 1 and words[0].strip(), words
        cues.append((seconds(start), seconds(end), words[0]))
    return cues


@pytest.mark.parametrize("form", ["srt", "vtt"])
def test_subtitles_are_timed_by_the_model_even_for_a_short_file(capsys, clips, form) -> None:
    code, out, err = _run(capsys, "--format", form, "--threads", "2", str(clips[0]))
    assert code == 0 and err == ""
    cues = _cues(out, form)
    assert len(cues) >= 2, cues  # 11 s: timestamps split it (measured: 0-8 s, 8-11 s)
    assert all(start < end for start, end, _ in cues) and cues[0][0] < 1.0 and cues[-1][1] <= 11.0
    assert all(earlier[1] <= later[0] for earlier, later in zip(cues, cues[1:]))
    said = " ".join(words for _, _, words in cues).lower()
    assert "ask not what your country can do for you" in said and "for your country" in said


def test_subtitles_of_several_files_go_to_output_dir_and_silence_has_no_cue(capsys, clips, tmp_path) -> None:
    code, out, err = _run(capsys, "--format", "srt", "--output-dir", str(tmp_path / "subs"), *map(str, clips))
    assert code == 0 and out == "" and err == ""
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["jfk.srt", "silence_10s.srt"]
    assert (tmp_path / "subs" / "silence_10s.srt").read_text() == ""
    assert len(_cues((tmp_path / "subs" / "jfk.srt").read_text(), "srt")) >= 2


@pytest.mark.parametrize("argv, says", [
    (["--format", "srt", "A", "B"], "--format srt with 2 files needs --output-dir DIR"),
    (["--format", "jsonl", "--output-dir", "OUT", "A"], "--output-dir is for --format srt or vtt"),
    (["--format", "vtt", "--output-dir", "OUT", "a/x.wav", "b/x.flac"], "two input files would both write x.vtt"),
    (["--format", "srt", "--output-dir", "FILE/sub", "A"], "/FILE/sub cannot be made: Not a directory"),
])
def test_output_options_that_cannot_work_are_refused_before_loading(capsys, tmp_path, argv, says) -> None:
    (tmp_path / "FILE").write_text("a file, not a directory")
    argv = [str(tmp_path / arg) if arg in ("A", "B", "OUT", "FILE/sub") or "/" in arg else arg for arg in argv]
    code, out, err = _run(capsys, "--model", str(tmp_path / "no-model-needed"), *argv)
    assert code == EXIT_MODEL_ERROR and out == ""
    assert err.startswith("edge-asr transcribe: ") and says in err and err.count("\n") == 1, err


def test_subtitle_text_is_one_line_per_cue_with_hours_and_no_arrow() -> None:
    from edge.commands.transcribe import subtitles

    segments = [(0.0, 1.5, "first"), (1.5, 2.0, "  "), (3725.5, 3727.25, "a --> b\nc")]
    assert subtitles(segments, "srt") == ("1\n00:00:00,000 --> 00:00:01,500\nfirst\n\n"
                                          "2\n01:02:05,500 --> 01:02:07,250\na -> b c\n")
    assert subtitles(segments, "vtt") == ("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nfirst\n\n"
                                          "01:02:05.500 --> 01:02:07.250\na -&gt; b c\n")
    assert subtitles([], "srt") == ""
    assert subtitles([(0.0, 1.0, "x < y & <b>")], "vtt") == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nx &lt; y &amp; &lt;b&gt;\n"


def test_an_onnxruntime_failure_is_a_runtime_error_that_skips_one_file(int8_model_dir) -> None:
    """onnxruntime's own errors (RuntimeException under a memory limit, InvalidArgument) are no
    RuntimeError: `transcribe` let one stop the batch with a traceback."""
    from edge.asr.whisper.ort import OrtWhisperBackend

    backend = OrtWhisperBackend(int8_model_dir, threads=1)
    with pytest.raises(RuntimeError, match=r"^onnxruntime: "):
        backend.encode(np.zeros((1, 2), np.float32))  # 1 mel bin where the graph takes 80


def test_a_full_stdout_ends_the_run_with_one_line(capsys, clips, monkeypatch) -> None:
    """A full disk behind `>`: every later file was still decoded, each error naming "None"."""
    import errno
    import io

    import edge.asr.load

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    fake = _WholeAudioOnly()
    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: fake)
    monkeypatch.setattr(sys, "stdout", Full())
    code = main(["transcribe", str(clips[0]), str(clips[0])])
    assert code == EXIT_FILE_ERRORS and len(fake.heard) == 1
    assert capsys.readouterr().err == "edge-asr transcribe: cannot write to stdout: No space left on device\n"


def test_a_closed_pipe_ends_the_run_quietly(clips) -> None:
    """`edge-asr transcribe ... | head -1`: exit 141 as a pipeline expects, not one error per later file."""
    process = subprocess.Popen([sys.executable, "-m", "edge", "transcribe", "--beam", "1", *map(str, [clips[0]] * 3)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(str(clips[0]).encode())
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and err == b"", err


def test_an_output_dir_that_cannot_be_written_is_refused_before_loading(capsys, tmp_path, monkeypatch) -> None:
    """Found after decoding every file before. (The tests run as root, who may write anywhere: staged.)"""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    code, out, err = _run(capsys, "--model", str(tmp_path / "no-model-needed"), "--format", "srt",
                          "--output-dir", str(tmp_path / "subs"), str(tmp_path / "a.wav"))
    assert code == EXIT_MODEL_ERROR and out == ""
    assert err == f"edge-asr transcribe: --output-dir {tmp_path / 'subs'} cannot be written: Permission denied\n"


def test_a_subtitle_that_cannot_be_written_names_its_own_path(capsys, clips, tmp_path, monkeypatch) -> None:
    import edge.asr.load

    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: _WholeAudioOnly())
    (tmp_path / "subs" / "jfk.srt").mkdir(parents=True)  # in the way of the rename
    code, out, err = _run(capsys, "--format", "srt", "--output-dir", str(tmp_path / "subs"), str(clips[0]))
    assert code == EXIT_FILE_ERRORS
    assert err == f"edge-asr transcribe: {clips[0]}: cannot write {tmp_path / 'subs' / 'jfk.srt'}: Is a directory\n"
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["jfk.srt"]  # no .part left


def test_a_subtitle_is_written_past_a_planted_link_with_the_umasks_mode(capsys, clips, tmp_path, monkeypatch) -> None:
    """Its part file had a fixed name (jfk.srt.part) written through: a link planted there in a shared
    --output-dir was followed and its target overwritten (a twin of the metrics textfile's fix)."""
    import edge.asr.load

    monkeypatch.setattr(edge.asr.load, "load_recognizer", lambda *args, **kwargs: _WholeAudioOnly())
    subs = tmp_path / "subs"
    subs.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (subs / "jfk.srt.part").symlink_to(victim)
    previous = os.umask(0o027)
    try:
        code, _, _ = _run(capsys, "--format", "srt", "--output-dir", str(subs), str(clips[0]))
    finally:
        os.umask(previous)
    assert code == 0 and victim.read_text() == "keep me"
    assert (subs / "jfk.srt").is_file() and (subs / "jfk.srt").stat().st_mode & 0o777 == 0o640
