"""File source pacing (realtime without drift, fast), decoding as it goes, and `open_source()` dispatch."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from edge.audio.audiofile import READ_SAMPLES, AudioFileError
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


def test_the_file_is_decoded_as_it_is_delivered_not_whole(tmp_path: Path) -> None:
    path = tmp_path / "five-minutes.wav"
    with sf.SoundFile(path, "w", 16000, 1, "PCM_16") as out:
        for _ in range(5):
            out.write((0.1 * np.sin(np.arange(60 * 16000) * 0.05)).astype(np.float32))
    tracemalloc.start()
    source = FileSource(path, block_ms=20, pace="fast")
    source.start()
    blocks = [source.read(0.1) for _ in range(500)]  # 10 s
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    source.close()
    assert all(b is not None and b.shape == (320,) for b in blocks)
    assert peak_mib < 2, f"{peak_mib:.1f} MiB (the decoded file is 18 MiB)"


def test_damage_part_way_ends_the_file_there_with_a_warning(tmp_path: Path, caplog) -> None:
    samples = (0.5 * np.sin(np.arange(10 * 16000) * 0.05)).astype(np.float32)
    samples[8 * 16000] = np.nan
    path = tmp_path / "damaged.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    source = FileSource(path, block_ms=20, pace="fast")
    source.start()
    with caplog.at_level("WARNING", logger="edge.audio.file"):
        delivered = np.concatenate([block for _, block in drain(source)])
    np.testing.assert_array_equal(delivered, samples[: 8 * 16000])  # every sample before the damage
    assert source.stats().state == "ended"
    assert f"{path}: contains NaN or infinite samples; the file source ends there" in caplog.text
