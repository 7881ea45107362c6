"""scripts/bench_latency.py's --lead-in: the file with silence before it, and the clock that puts the
manifest's segments back on the file's own time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_latency import Run, with_lead_in  # noqa: E402


@pytest.mark.parametrize(("subtype", "samples"), [
    ("PCM_16", np.arange(-800, 800, dtype=np.int16) * 20),
    ("FLOAT", np.array([1e-6, 0.3, -0.5, 0.999], np.float32)),  # an int read would make these 0, 0, 0, 0
])
def test_lead_in_puts_silence_before_the_same_samples(tmp_path: Path, subtype: str, samples: np.ndarray) -> None:
    source = tmp_path / "clip.wav"
    soundfile.write(source, samples, 16000, subtype=subtype)
    led = with_lead_in(source, 0.25, tmp_path)
    audio, rate = soundfile.read(led, dtype=samples.dtype.name)
    assert rate == 16000 and soundfile.info(led).subtype == subtype
    assert not audio[:4000].any() and np.array_equal(audio[4000:], samples)


def test_a_file_source_with_lead_in_counts_file_time_after_the_silence() -> None:
    run = Run(events=[{"type": "partial", "audio_time_s": 2.0, "_at": 102.0}], lead_s=1.5)
    assert run.capture_origin() == 100.0
    assert run.stream_start() == 101.5 and run.file_offset_s() == 1.5
    assert Run(events=run.events).file_offset_s() == 0.0
