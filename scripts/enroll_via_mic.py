#!/usr/bin/env python3
"""`edge-asr record-names` through the PulseAudio virtual microphone, a recorded voice reading its prompts (not a test).

A made set of enrollment recordings (scripts/make_vocab_set.py --sentences ...) stands in for the
room's people: `record-names` runs on the virtual microphone with that set's sentences, and at each
`[N] Say: ...` prompt the recording of sentence N is played into the microphone in real time, as a
person would read it. What `record-names` cut and listed is then what `learn-sounds-like` learns
from, so the learned list can be compared with one learned from the files themselves
(docs/benchmarks.md, "Recording the names through the microphone"):

    .venv/bin/python scripts/enroll_via_mic.py --recordings build/eval/vocab_en_frames/recordings.tsv --limit 78 --out build/eval/vocab_en_frames_mic
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_latency import REPO, _maybe_mic

sys.path.insert(0, str(REPO))
from edge.commands.learn_sounds_like import read_recordings  # noqa: E402

READ_PAUSE_S = 0.7  # between a prompt and the voice: a person reads the sentence first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=Path, required=True, help="a made set's recordings.tsv: path TAB sentence")
    parser.add_argument("--limit", type=int, default=0, help="the first N recordings (0: all)")
    parser.add_argument("--vocabulary", type=Path, default=REPO / "scripts" / "vocab" / "terms_en.txt")
    parser.add_argument("--out", type=Path, required=True, help="record-names --out: a new directory")
    args = parser.parse_args()
    recordings = read_recordings(args.recordings)[: args.limit or None]
    if args.out.exists():
        parser.error(f"--out {args.out} exists: record-names would go on from what it holds")
    with tempfile.TemporaryDirectory(prefix="enroll-") as scratch, _maybe_mic(True) as mic:
        sentences = Path(scratch) / "sentences.txt"
        sentences.write_text("".join(r.said + "\n" for r in recordings), encoding="utf-8")
        config = Path(scratch) / "config.yaml"
        model = REPO / "models" / "whisper-tiny.en-int8"  # unused here, but a config must name a model it has
        config.write_text(f"model:\n  path: {model}\naudio:\n  device: {mic.device}\n", encoding="utf-8")
        command = [sys.executable, "-m", "edge", "record-names", "--config", str(config), "--vocabulary",
                   str(args.vocabulary), "--sentences", str(sentences), "--out", str(args.out)]
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **mic.env}, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("[") and "] Say: " in line:
                number = int(line[1:line.index("]")])
                time.sleep(READ_PAUSE_S)
                mic.play(recordings[number - 1].path, wait=True)
        code = process.wait()
    print(f"record-names exited {code} after {time.monotonic() - started:.0f} s; listing: {args.out / 'recordings.tsv'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
