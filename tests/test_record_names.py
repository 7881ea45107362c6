"""`edge-asr record-names`: each term said in sentences, cut by the daemon's VAD, listed for learn-sounds-like.

The cutting runs on real speech of the eval sets, from a file and through the PulseAudio virtual
microphone; the recordings must be the speech that was played, each listed with its own sentence.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge.audio.file import FileSource
from edge.cli import main
from edge.commands.learn_sounds_like import read_recordings
from edge.commands.record_names import (
    ENDED, FRAMES, LISTING, PER_TERM, Listener, RecordError, read_sentences, sentences_for, still_to_record,
)
from edge.config import parse_config
from edge.vocabulary import parse_text
from tests.conftest import REPO, load_manifest
from tests.test_daemon import write_config

RATE = 16000


def test_made_sentences_say_every_term_once_a_round_in_its_own_script() -> None:
    terms = parse_text("Siobhan\n张伟\n", "list")
    sentences = sentences_for(terms, PER_TERM)
    assert len(sentences) == 2 * PER_TERM
    assert sentences[:2] == [FRAMES["en"][0].format("Siobhan"), FRAMES["zh"][0].format("张伟")]
    assert [s for s in sentences if "Siobhan" in s] == [frame.format("Siobhan") for frame in FRAMES["en"]]
    assert all("Siobhan" not in s for s in sentences if "张伟" in s)  # no English frame for a Chinese name
    assert len(sentences_for(terms, 2)) == 4


def test_a_run_goes_on_where_the_last_one_stopped() -> None:
    sentences = ["A.", "B.", "A.", "C."]
    assert still_to_record(sentences, []) == [(1, "A."), (2, "B."), (3, "A."), (4, "C.")]
    assert still_to_record(sentences, ["A.", "B."]) == [(3, "A."), (4, "C.")]  # "A." twice: one more to go
    assert still_to_record(sentences, ["A.", "A.", "B.", "C.", "D."]) == []


def test_own_sentences_are_read_one_a_line_and_a_tab_is_named(tmp_path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# mine\nThis is Siobhan.\n\n  Siobhan again.  \n", encoding="utf-8")
    assert read_sentences(good) == ["This is Siobhan.", "Siobhan again."]
    tabbed = tmp_path / "tabbed.txt"
    tabbed.write_text("# a\tcomment is no sentence\nThis is\tSiobhan.\n", encoding="utf-8")
    with pytest.raises(RecordError, match="line 2: a TAB"):
        read_sentences(tabbed)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(RecordError, match="no sentences"):
        read_sentences(empty)


def _joined_clips(tmp_path: Path, rows: list[dict], gap_s: float = 1.5) -> tuple[Path, list[tuple[int, int]]]:
    """The rows' clips in one file with `gap_s` of silence around each; and each clip's span in it."""
    parts, spans, at = [np.zeros(int(gap_s * RATE), np.float32)], [], int(gap_s * RATE)
    for row in rows:
        clip, rate = soundfile.read(row["path"], dtype="float32")
        assert rate == RATE
        parts += [clip, np.zeros(int(gap_s * RATE), np.float32)]
        spans.append((at, at + clip.size))
        at += clip.size + int(gap_s * RATE)
    path = tmp_path / "said.wav"
    soundfile.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path, spans


def _vocabulary(tmp_path: Path, *terms: str) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("".join(f"{term}\n" for term in terms), encoding="utf-8")
    return path


def _sentences(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("".join(row["text"] + "\n" for row in rows), encoding="utf-8")
    return path


def test_one_file_of_sentences_is_cut_into_one_recording_each_listed_with_its_sentence(
        tmp_path, eval_dir, capsys) -> None:
    rows = load_manifest("tts_piper_en")[:3]  # "The birch canoe ...", "Glue the sheet ...", "It's easy to tell ..."
    said, spans = _joined_clips(tmp_path, rows)
    out = tmp_path / "enroll"
    code = main(["record-names", "--vocabulary", str(_vocabulary(tmp_path, "canoe", "sheet", "tell")),
                 "--sentences", str(_sentences(tmp_path, rows)), "--out", str(out), "--source", f"file:{said}"])
    assert code == 0, capsys.readouterr().err
    recordings = read_recordings(out / LISTING)
    assert [r.said for r in recordings] == [row["text"] for row in rows]
    whole, _ = soundfile.read(said, dtype="int16")
    for recording, (start, end) in zip(recordings, spans):
        audio, rate = soundfile.read(recording.path, dtype="int16")
        assert rate == RATE
        at = _exactly_at(whole, audio)
        # the clip's speech, and no more than the VAD's padding (200 ms) and the silence that ended it around it
        assert start - RATE // 2 <= at and at + audio.size <= end + int(1.2 * RATE), (at, audio.size, start, end)
        assert audio.size >= 0.6 * (end - start)
        assert recording.path.stat().st_mode & 0o777 == 0o600  # speech is private, as the daemon's recordings
    assert out.stat().st_mode & 0o777 == 0o700


def _exactly_at(whole: np.ndarray, part: np.ndarray) -> int:
    """Where `part` lies in `whole`, sample for sample (a file source is bit-exact)."""
    first = int(np.flatnonzero(part)[0])
    probe = part[first:first + 64]
    windows = np.lib.stride_tricks.sliding_window_view(whole, probe.size)
    hits = np.flatnonzero((windows == probe).all(axis=1)) - first
    at = next(int(h) for h in hits if np.array_equal(whole[h:h + part.size], part))
    return at


def test_a_second_run_asks_only_what_is_left_and_silence_is_skipped_not_listed(tmp_path, eval_dir, capsys) -> None:
    rows = load_manifest("tts_piper_en")[:2]
    sentences = _sentences(tmp_path, rows)
    vocabulary = _vocabulary(tmp_path, "canoe", "sheet")
    out = tmp_path / "enroll"
    out.mkdir()
    (out / LISTING).write_text(f"earlier.wav\t{rows[0]['text']}\n", encoding="utf-8")
    said, _ = _joined_clips(tmp_path, rows[1:])
    code = main(["record-names", "--vocabulary", str(vocabulary), "--sentences", str(sentences), "--out", str(out),
                 "--source", f"file:{said}"])
    streams = capsys.readouterr()
    assert code == 0, streams.err
    assert "[1] Say" not in streams.out and f"[2] Say: {rows[1]['text']}" in streams.out
    assert [r.said for r in read_recordings(out / LISTING)] == [rows[0]["text"], rows[1]["text"]]

    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(3 * RATE, np.float32), RATE, subtype="PCM_16")
    again = tmp_path / "again"
    code = main(["record-names", "--vocabulary", str(vocabulary), "--sentences", str(sentences), "--out", str(again),
                 "--source", f"file:{quiet}", "--wait-s", "2"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "[1] skipped: nothing was said in 2 s" in err and "0 recorded, 2 skipped" in err
    assert not (again / LISTING).exists() and not list(again.iterdir())


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: None, ["--vocabulary", "{d}/missing.txt"], "missing.txt: file not found"),
    (lambda d: (d / "s.txt").write_text("a\tb\n"), ["--sentences", "{d}/s.txt"], "s.txt line 1: a TAB"),
    (lambda d: (d / "out").write_text("a file"), ["--out", "{d}/out"], "--out"),
    (lambda d: None, ["--source", "file:{d}/none.wav"], "none.wav"),
    (lambda d: (d / "empty.txt").write_text("# none yet\n"), ["--vocabulary", "{d}/empty.txt"], "no terms"),
    (lambda d: (d / "enroll").mkdir() or (d / "enroll" / LISTING).write_text("a.wav\n"), [], "expected the recording's path"),
])
def test_bad_input_is_named_and_nothing_is_recorded(tmp_path, capsys, setup, args, message) -> None:
    setup(tmp_path)
    listing = tmp_path / "enroll" / LISTING
    before = listing.read_text() if listing.exists() else None
    given = dict(zip(args[::2], (a.format(d=tmp_path) for a in args[1::2])))
    argv = {"--vocabulary": str(_vocabulary(tmp_path, "Siobhan")), "--out": str(tmp_path / "enroll"), **given}
    code = main(["record-names", *[part for pair in argv.items() for part in pair]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert (listing.read_text() if listing.exists() else None) == before


def test_a_bad_wait_is_named(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["record-names", "--vocabulary", str(_vocabulary(tmp_path, "Siobhan")), "--out", str(tmp_path / "o"),
              "--wait-s", "-1"])
    assert exited.value.code == 2 and "--wait-s: expected a number of seconds above 0, got '-1'" in capsys.readouterr().err


def test_the_virtual_microphone_is_recorded_sentence_by_sentence(tmp_path, eval_dir, int8_model_dir, virtual_mic) -> None:
    rows = load_manifest("tts_piper_en")[:2]
    config = write_config(tmp_path, int8_model_dir, audio={"device": virtual_mic.device})
    out = tmp_path / "enroll"
    command = [sys.executable, "-m", "edge", "record-names", "--config", str(config), "--vocabulary",
               str(_vocabulary(tmp_path, "canoe", "sheet")), "--sentences", str(_sentences(tmp_path, rows)),
               "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for number, row in enumerate(rows, 1):
            assert process.stdout.readline().startswith(f"[{number}] Say: {row['text']}")
            time.sleep(0.5)  # the person reads the prompt
            virtual_mic.play(row["path"], wait=True)
        code = process.wait(timeout=30)
    finally:
        process.kill()
    err = process.stderr.read()
    assert code == 0, err
    recordings = read_recordings(out / LISTING)
    assert [r.said for r in recordings] == [row["text"] for row in rows]
    for recording, row in zip(recordings, rows):
        heard, _ = soundfile.read(recording.path, dtype="float32")
        played, _ = soundfile.read(row["path"], dtype="float32")
        assert _best_correlation(heard, played) > 0.95


def _best_correlation(heard: np.ndarray, played: np.ndarray) -> float:
    """The normalised cross-correlation of the two at their best lag: 1.0 where `heard` holds `played` unchanged."""
    size = heard.size + played.size
    spectrum = np.fft.rfft(heard, size) * np.conj(np.fft.rfft(played, size))
    lag = int(np.argmax(np.fft.irfft(spectrum, size)))
    if lag >= heard.size:
        lag -= size
    a = heard[max(lag, 0):]
    b = played[max(-lag, 0):]
    n = min(a.size, b.size)
    return float(np.dot(a[:n], b[:n]) / (np.linalg.norm(a[:n]) * np.linalg.norm(b[:n]) + 1e-12))


def test_a_sound_too_short_for_the_sentence_is_listened_past(tmp_path, eval_dir, capsys) -> None:
    row = load_manifest("tts_piper_en")[0]
    clip, _ = soundfile.read(row["path"], dtype="float32")
    onset = int(np.flatnonzero(np.abs(clip) > 0.05)[0])
    blip = clip[onset:onset + int(0.3 * RATE)]  # "The b-": a word cut short, as a cough is
    silence = np.zeros(int(1.5 * RATE), np.float32)
    said = tmp_path / "said.wav"
    soundfile.write(said, np.concatenate((silence, blip, silence, clip, silence)), RATE, subtype="PCM_16")
    out = tmp_path / "enroll"
    code = main(["record-names", "--vocabulary", str(_vocabulary(tmp_path, "canoe")), "--sentences",
                 str(_sentences(tmp_path, [row])), "--out", str(out), "--source", f"file:{said}"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "[1] only 0." in err and "say the whole sentence" in err
    (recording,) = read_recordings(out / LISTING)
    assert soundfile.info(recording.path).duration >= row["duration_s"] * 0.6


def _listener(path: Path, live: bool = False, max_sentence_s: float = 20.0) -> Listener:
    source = FileSource(str(path), block_ms=64, pace="fast")
    source.can_wait = not live  # a microphone's prompts are shown as its audio comes
    source.start()
    return Listener(source, parse_config({}, base_dir=REPO), max_sentence_s)


def _clips_file(tmp_path: Path, lead_s: float, *rows: dict, gap_s: float = 1.8) -> Path:
    parts = [np.zeros(int(lead_s * RATE), np.float32)]
    for row in rows:
        parts += [soundfile.read(row["path"], dtype="float32")[0], np.zeros(int(gap_s * RATE), np.float32)]
    path = tmp_path / "said.wav"
    soundfile.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path


def test_on_a_microphone_speech_that_began_before_the_prompt_is_not_the_sentence(tmp_path, eval_dir) -> None:
    rows = load_manifest("tts_piper_en")[:2]
    listener = _listener(_clips_file(tmp_path, 0.0, *rows), live=True)
    early = listener.take(5)
    assert early.audio is None and early.again and "before the prompt" in early.reason
    later = listener.take(5)
    assert later.audio is not None and abs(later.audio.size / RATE - rows[1]["duration_s"]) < 1.0
    assert listener.take(5).reason == ENDED


def test_a_take_with_no_pause_for_too_long_is_not_a_sentence(tmp_path, eval_dir) -> None:
    row = load_manifest("tts_piper_en")[0]  # 2.3 s said without a pause
    listener = _listener(_clips_file(tmp_path, 1.0, row), max_sentence_s=2.0)
    take = listener.take(5)
    assert take.audio is None and take.again and "more than 2 s without a pause" in take.reason
    assert listener.take(5).reason == ENDED


def test_a_file_that_ends_before_the_sentences_do_leaves_the_rest_to_record(tmp_path, eval_dir, capsys) -> None:
    rows = load_manifest("tts_piper_en")[:3]
    out = tmp_path / "enroll"
    code = main(["record-names", "--vocabulary", str(_vocabulary(tmp_path, "canoe", "sheet", "tell")), "--sentences",
                 str(_sentences(tmp_path, rows)), "--out", str(out), "--source", f"file:{_clips_file(tmp_path, 1.0, rows[0])}"])
    streams = capsys.readouterr()
    err = streams.err
    assert code == 1, err
    assert f"[2] skipped: {ENDED}" in err and "[3] Say" not in streams.out
    assert "1 recorded, 2 skipped" in err
    assert [r.said for r in read_recordings(out / LISTING)] == [rows[0]["text"]]
    main(["record-names", "--vocabulary", str(_vocabulary(tmp_path, "canoe", "sheet", "tell")), "--sentences",
          str(_sentences(tmp_path, rows)), "--out", str(out), "--list-sentences"])
    assert capsys.readouterr().out == "".join(row["text"] + "\n" for row in rows[1:])  # what the next file must say
