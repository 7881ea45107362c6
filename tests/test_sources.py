"""File source pacing (realtime without drift, fast) and `open_source()` dispatch."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from edge.audio.audiofile import AudioFileError
from edge.audio import open_source
from edge.audio.base import SourceError
from edge.audio.file import FileSource

CFG = SimpleNamespace(device="default", sample_rate="native", channels="native", block_ms=20,
                      ring_buffer_s=30.0, stall_timeout_ms=2000, reopen_backoff_max_s=30.0)  # fmt: skip


@pytest.fixture
def tone(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """1.51 s of 16 kHz audio (not a whole number of 20 ms blocks) and its samples."""
    samples = (0.5 * np.sin(np.arange(24160) * 0.05)).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    return path, samples


def drain(source: FileSource) -> list[tuple[float, np.ndarray]]:
    """Every block with the time it arrived."""
    got = []
    while not source.ended:
        block = source.read(0.5)
        if block is not None:
            got.append((time.monotonic(), block))
    return got


def test_fast_delivers_every_sample_in_block_sized_pieces(tone) -> None:
    path, samples = tone
    source = FileSource(path, block_ms=20, pace="fast")
    source.start()
    started = time.monotonic()
    blocks = [block for _, block in drain(source)]
    assert time.monotonic() - started < 0.5
    assert [b.shape[0] for b in blocks] == [320] * 75 + [160]
    np.testing.assert_array_equal(np.concatenate(blocks), samples)
    assert source.ended and source.read(0.1) is None
    assert source.stats().state == "ended"
    assert source.position_s == pytest.approx(1.51)


def test_realtime_blocks_arrive_on_the_wall_clock_without_drift(tone) -> None:
    path, samples = tone
    source = FileSource(path, block_ms=20, pace="realtime")
    source.start()
    started = time.monotonic()
    arrivals = drain(source)
    ends = np.cumsum([block.shape[0] for _, block in arrivals]) / 16000
    lateness = np.array([at - started for at, _ in arrivals]) - ends
    assert lateness.min() > -0.002, "a block came before its audio could have been spoken"
    assert np.median(lateness) < 0.02
    assert lateness[-1] < 0.05, "pacing drifted"
    np.testing.assert_array_equal(np.concatenate([b for _, b in arrivals]), samples)


def test_realtime_read_times_out_before_the_block_is_due(tone) -> None:
    source = FileSource(tone[0], block_ms=200, pace="realtime")
    started = time.monotonic()
    source.start()
    assert source.read(0.05) is None
    block = source.read(0.5)
    assert block is not None and block.shape == (3200,)
    assert time.monotonic() - started >= 0.2


def test_read_before_start_is_an_error(tone) -> None:
    with pytest.raises(SourceError, match=r"tone.wav: read\(\) before start\(\)"):
        FileSource(tone[0]).read(0.1)


def test_open_source_dispatches_on_spec(tone) -> None:
    from edge.audio.mic import MicSource

    source = open_source(f"file:{tone[0]}", CFG, "fast")
    assert isinstance(source, FileSource) and source.pace == "fast"
    assert isinstance(open_source("mic", CFG, "realtime"), MicSource)


@pytest.mark.parametrize(
    "spec, pace, message",
    [
        ("speaker", "fast", "unknown audio source 'speaker': use 'mic' or 'file:PATH'"),
        ("file:", "fast", "unknown audio source 'file:'"),
        ("mic", "slow", "pace must be one of realtime, fast, got 'slow'"),
    ],
)
def test_open_source_rejects_bad_input(spec: str, pace: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(spec, CFG, pace)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        open_source(f"file:{tmp_path / 'nope.wav'}", CFG, "fast")
