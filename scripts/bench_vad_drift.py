#!/usr/bin/env python3
"""Does Silero's recurrent state drift over a stream of days? (A benchmark, not a test.)

The daemon resets the VAD only when the audio breaks off, so a kiosk's VAD state runs for weeks.
This feeds one `SileroVad` hours of eval audio (speech clips, the nonspeech set and digital
silence, in a seeded random order), and at each checkpoint plays a probe: 1 s of silence, a
real_en clip, 1 s of silence, 5 s of a nonspeech clip. It compares the probe's per-window speech
probabilities with those of a fresh VAD: the largest and mean difference, and how many windows
each calls speech (over 0.5). A state that drifted would show a growing difference.

    .venv/bin/python scripts/bench_vad_drift.py                       # checkpoints up to 24 h (about 3 min)
    .venv/bin/python scripts/bench_vad_drift.py --hours 0.17 2 --eval-dir ../shared/eval
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_recognizer import DEFAULT_EVAL_DIR, manifest  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.audio.base import SAMPLE_RATE  # noqa: E402
from edge.vad.silero import WINDOW, SileroVad  # noqa: E402

SPEECH = 0.5


def clips(eval_dir: Path, set_name: str, limit: int = 0) -> list[np.ndarray]:
    """The audio of a set's manifest rows (the first `limit`, or all)."""
    return [load_audio(path) for path, _ in manifest(eval_dir, set_name, limit)]


def probabilities(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    """Speech probability of each whole window of `audio`, the state carried on."""
    return np.array([vad.window_probability(audio[start : start + WINDOW])
                     for start in range(0, len(audio) - WINDOW + 1, WINDOW)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--hours", type=float, nargs="+", default=[1, 6, 12, 24], help="checkpoints, in hours of audio")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    speech = clips(args.eval_dir, "real_en", limit=12)
    nonspeech = clips(args.eval_dir, "nonspeech")
    silence = np.zeros(SAMPLE_RATE, np.float32)
    probe = np.concatenate([silence, speech[0], silence, nonspeech[0][: 5 * SAMPLE_RATE]])
    fresh = probabilities(SileroVad(), probe)
    pool = speech[1:] + nonspeech + [np.zeros(20 * SAMPLE_RATE, np.float32)]
    rng = np.random.default_rng(args.seed)
    vad, fed_s, began = SileroVad(), 0.0, time.monotonic()
    print("| audio fed | largest difference | mean difference | windows over 0.5, fresh / after | wall s |")
    print("|---:|---:|---:|---:|---:|")
    for hours in sorted(args.hours):
        while fed_s < hours * 3600:
            audio = pool[rng.integers(len(pool))]
            probabilities(vad, audio)
            fed_s += len(audio) / SAMPLE_RATE
        now = probabilities(vad, probe)
        difference = np.abs(now - fresh)
        print(f"| {fed_s / 3600:.1f} h | {difference.max():.3f} | {difference.mean():.4f} | "
              f"{(fresh > SPEECH).sum()} / {(now > SPEECH).sum()} | {time.monotonic() - began:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
