#!/usr/bin/env python3
"""Where a streaming final's time goes (not a test): its wait for the recognizer thread, and its decode.

It also reports how long the caption went without a partial inside each utterance (speech start,
each partial, speech end): the price a final pays for interrupting partials is paid there.

Feeds one long-form file through the streaming session in-process at real-time pace (the daemon's
blocks and the model's `auto` settings, real Silero), and logs every final decode: what the thread
was running when the final was queued (a partial, another final, nothing), how long the final
waited, how long it decoded, and whether it was a speculative decode cancelled by resumed speech.
The worker is instrumented by wrapping `Worker.submit` and its job runner in this process only.

    .venv/bin/python scripts/bench_final_wait.py --model models/whisper-base-int8 --language zh \
        ../shared/eval/longform_zh/longform_zh_01.wav
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.asr.load import load_recognizer  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.audio.base import SAMPLE_RATE  # noqa: E402
from edge.manifest import tuning  # noqa: E402
from edge.stream import worker  # noqa: E402
from edge.stream.session import StreamingSession, StreamSettings  # noqa: E402
from edge.vad.endpointer import EndpointSettings  # noqa: E402

BLOCK = 1024  # 64 ms: audio.block_ms's default
TAIL_S = 2.0  # silence after the file, so that its last utterance ends


def instrument(rows: list[dict]) -> None:
    """Record, for every final job, the running job at its submission, its wait and its decode."""
    submit, init = worker.Worker.submit, worker.Worker.__init__

    def timed_submit(self: worker.Worker, job: worker.Job) -> None:
        if job.kind == "final":
            running = self._running
            job.bench = {"queued": time.monotonic(), "behind": running.kind if running else "nothing"}
        submit(self, job)

    def timed_init(self: worker.Worker, run_job: Callable[[worker.Job], None]) -> None:
        def run(job: worker.Job) -> None:
            began = time.monotonic()
            run_job(job)
            if job.kind == "final":
                rows.append({"utterance": job.utterance_id, "behind": job.bench["behind"],
                             "wait_ms": (began - job.bench["queued"]) * 1000,
                             "decode_ms": (time.monotonic() - began) * 1000, "cancelled": job.cancelled})
        init(self, run)

    worker.Worker.submit, worker.Worker.__init__ = timed_submit, timed_init


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", type=Path)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "whisper-base-int8")
    parser.add_argument("--language", default="auto")
    args = parser.parse_args()

    rows: list[dict] = []
    instrument(rows)
    model_tuning = tuning(args.model)
    shown: list[tuple[float, str]] = []  # (wall time, event type) of speech_start, partial, speech_end
    session = StreamingSession(load_recognizer(args.model), EndpointSettings.from_config(None, model_tuning),
                               StreamSettings.from_config(None, args.language, model_tuning),
                               lambda event: shown.append((time.monotonic(), event.TYPE)),
                               lambda message: print("error:", message, file=sys.stderr))
    audio = np.concatenate([load_audio(args.audio), np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
    began = time.monotonic()
    try:
        for i in range(0, audio.size, BLOCK):
            session.feed(audio[i : i + BLOCK])
            time.sleep(max(0.0, began + (i + BLOCK) / SAMPLE_RATE - time.monotonic()))
        session.finish()
        session.drain(60)
    finally:
        session.close()

    print("| utterance | running when queued | wait ms | decode ms | cancelled (speech resumed) |")
    print("|---:|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['utterance']} | {row['behind']} | {row['wait_ms']:.0f} | {row['decode_ms']:.0f} | "
              f"{'yes' if row['cancelled'] else ''} |")
    used = [row for row in rows if not row["cancelled"]]
    waits = [f"{row['wait_ms']:.0f}" for row in rows if row["wait_ms"] >= 10]
    print(f"\n{len({row['utterance'] for row in rows})} utterances, {len(rows)} final decodes "
          f"({len(rows) - len(used)} cancelled when speech resumed); {len(waits)} waited >= 10 ms "
          f"({', '.join(waits) or '-'} ms); decodes not cancelled took "
          f"{min(r['decode_ms'] for r in used):.0f}-{max(r['decode_ms'] for r in used):.0f} ms")
    gaps = caption_gaps(shown)
    print(f"caption: {sum(kind == 'partial' for _, kind in shown)} partials shown; longest gap per utterance "
          f"p50 {np.percentile(gaps, 50):.2f} s, max {max(gaps):.2f} s")
    return 0


def caption_gaps(shown: list[tuple[float, str]]) -> list[float]:
    """Per utterance, the longest time between its speech start, its partials and its speech end."""
    gaps, since, longest = [], 0.0, 0.0
    for at, kind in shown:
        if kind == "speech_start":
            since, longest = at, 0.0
        elif kind in ("partial", "speech_end"):
            longest, since = max(longest, at - since), at
            if kind == "speech_end":
                gaps.append(longest)
    return gaps


if __name__ == "__main__":
    sys.exit(main())
