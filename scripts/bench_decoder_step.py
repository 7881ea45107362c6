"""Time one decoder step of the ONNX Whisper graphs (not a test).

A final's decode is mostly decoder steps, and a step's cost grows with the audio the
cross-attention reads (T), the hypotheses (B) and the cached tokens (P). This times
`OrtWhisperBackend.decode` at a few such points: the median of `--steps` calls, one new
token per hypothesis, after two untimed calls.

    .venv/bin/python scripts/bench_decoder_step.py [--threads 2] [--models models/whisper-base-int8 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.asr.whisper.graph import SelfKV  # noqa: E402
from edge.asr.whisper.ort import OrtWhisperBackend  # noqa: E402

FRAMES_PER_SECOND = 100
TOKEN = 50257  # any id both vocabularies have: a step's time does not depend on which
# (seconds of audio, hypotheses, cached tokens): a partial on 6 s, a base final (beam 2) on 12 s (its
# longest utterance) and on a full 30 s window, and a tiny.en final (beam 5) on a full window with a prompt.
POINTS = ((6, 1, 20), (12, 2, 60), (30, 2, 60), (30, 5, 190))


def step_ms(backend: OrtWhisperBackend, seconds: int, batch: int, cached: int, steps: int) -> float:
    """Median milliseconds of one decoder call on `seconds` of (random) audio."""
    mels = int(backend.encoder.get_inputs()[0].shape[1])
    mel = np.random.default_rng(0).standard_normal((mels, seconds * FRAMES_PER_SECOND)).astype(np.float32)
    cross = backend.encode(mel)
    empty = backend.empty_cache(batch)
    shape = list(empty.k.shape)
    shape[3] = cached
    cache = SelfKV(np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    tokens = np.full((batch, 1), TOKEN, np.int64)
    times = []
    for i in range(steps + 2):
        began = time.perf_counter()
        backend.decode(tokens, cache, cross)
        if i >= 2:
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["models/whisper-base-int8", "models/whisper-tiny.en-int8"])
    args = parser.parse_args()
    print("| model | " + " | ".join(f"{s} s, B={b}, P={p}" for s, b, p in POINTS) + " |")
    print("|---|" + "---:|" * len(POINTS))
    for model in args.models:
        backend = OrtWhisperBackend(Path(model), threads=args.threads)
        cells = [f"{step_ms(backend, *point, args.steps):.2f}" for point in POINTS]
        print(f"| {Path(model).name} | " + " | ".join(cells) + " |")
    print(f"ms per decoder step, median of {args.steps}; threads={args.threads}")


if __name__ == "__main__":
    main()
