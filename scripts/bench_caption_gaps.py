#!/usr/bin/env python3
"""How long the caption goes without a partial while someone speaks with short dips (not a test).

One utterance of about 12 s whose speech dips below the VAD threshold for `--dip-s` every
`--every-s`: each dip starts a speculative final, which speech resuming cancels. The real
session and worker run at real-time pace; the VAD is scripted (the audio's level is the speech
probability) and the recognizer is a stand-in whose decode time grows with the audio
(`--slowdown` scales it), so the schedule, not the model, is measured. It prints how many
partials were shown and the longest gap between speech start, the partials and speech end.

    .venv/bin/python scripts/bench_caption_gaps.py --every-s 0.7 --dip-s 0.1
    .venv/bin/python scripts/bench_caption_gaps.py --every-s 1.5 --dip-s 0.15 --slowdown 2

Another commit's behaviour: copy this script into a checkout of it and run it there.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_final_wait import caption_gaps  # noqa: E402

from edge.asr.base import Transcript  # noqa: E402
from edge.audio.base import SAMPLE_RATE  # noqa: E402
from edge.stream import session as streaming  # noqa: E402
from edge.vad.endpointer import EndpointSettings  # noqa: E402
from edge.vad.silero import WINDOW  # noqa: E402

SPEECH_S = 12.0
# Seconds per second of audio, plus a fixed part: a slow box, where partials and dips compete (on dev-2c
# tiny.en's partials take 0.12-0.25 s and base's 0.22-0.29 s for 1-12 s of audio; these 0.2-0.8 s).
PARTIAL_S = (0.06, 0.08)
FINAL_S = (0.10, 0.15)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-s", type=float, default=0.7, help="speech between two dips (s)")
    parser.add_argument("--dip-s", type=float, default=0.1, help="length of each dip (s)")
    parser.add_argument("--slowdown", type=float, default=1.0, help="decode times multiplied by this")
    parser.add_argument("--stale-intervals", type=float, default=None,
                        help="override PREEMPT_STALE_INTERVALS (a large value: always interrupt)")
    return parser.parse_args()


class LevelVad:
    """The audio's level is the speech probability."""

    def feed(self, block: np.ndarray) -> list[float]:
        return [float(block[0])]


class TimedRecognizer:
    """Decodes take time in proportion to the audio; an interrupt, where the session gives one, ends them early."""

    backend_name = "cpu"
    languages = ("en",)

    def __init__(self, slowdown: float) -> None:
        self.slowdown = slowdown

    def options(self, **_: object) -> None:
        return None

    def transcribe(self, audio: np.ndarray, *, partial: bool = False, interrupt=None, **_: object):
        seconds = audio.size / SAMPLE_RATE
        per_s, fixed = PARTIAL_S if partial else FINAL_S
        stopped = threading.Event()
        if interrupt is None:
            stopped.wait(self.slowdown * (per_s * seconds + fixed))
        else:
            with interrupt.on_set(stopped.set):
                stopped.wait(self.slowdown * (per_s * seconds + fixed))
            interrupt.check()
        return Transcript(f"words {seconds:.2f}", (1,), 0.0, 0.0, 1.0, ())


def dipped_speech(every_s: float, dip_s: float) -> np.ndarray:
    def span(level: float, seconds: float) -> np.ndarray:
        return np.full(round(seconds * SAMPLE_RATE / WINDOW) * WINDOW, level, np.float32)

    parts, spoken = [span(0.0, 0.5)], 0.0
    while spoken < SPEECH_S:
        parts += [span(0.9, every_s), span(0.0, dip_s)]
        spoken += every_s + dip_s
    return np.concatenate([*parts, span(0.0, 1.0)])


def main() -> None:
    args = parse_args()
    if args.stale_intervals is not None:
        streaming.PREEMPT_STALE_INTERVALS = args.stale_intervals
    shown: list[tuple[float, str]] = []  # (wall time, event type)
    session = streaming.StreamingSession(
        TimedRecognizer(args.slowdown), EndpointSettings.from_config(),
        streaming.StreamSettings.from_config(), lambda event: shown.append((time.monotonic(), event.TYPE)), print,
        vad=LevelVad())
    audio = dipped_speech(args.every_s, args.dip_s)
    began = time.monotonic()
    for i in range(0, audio.size, WINDOW):
        session.feed(audio[i : i + WINDOW])
        time.sleep(max(0.0, began + (i + WINDOW) / SAMPLE_RATE - time.monotonic()))
    session.finish()
    session.drain(10)
    stats = session.stats()
    session.close()
    gaps = caption_gaps(shown)
    print(f"utterances {len(gaps)}, partials shown {sum(kind == 'partial' for _, kind in shown)}, "
          f"longest gap {max(gaps):.2f} s, partials interrupted {stats.get('partials_interrupted', '-')}, "
          f"skipped {stats['partials_skipped']}")


if __name__ == "__main__":
    main()
