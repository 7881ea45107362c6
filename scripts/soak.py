#!/usr/bin/env python3
"""Soak benchmark of `edge-asr run` (not a test): hours of audio through the real daemon, at fast pace.

Loops the files of an eval set into one temporary WAV of `--hours` (on /tmp,
deleted afterwards), runs the daemon on it (`--source file:... --pace fast
--exit-at-end`) with one socket subscriber, samples the daemon's VmRSS every
`--every` seconds against the audio position its events carry, and checks that
every speech_start gets exactly one final (empty finals count). Prints:
RSS at the first and last samples with audio moving (start-up and exit left
out) and the peak (VmHWM); RSS growth per audio hour (a linear fit over those
samples after `--warmup-hours`); utterances, finals, missing and
duplicate finals; audio and wall time. Exit status 1 if a final is missing or
doubled, or the daemon fails.

    .venv/bin/python scripts/soak.py                    # 6 h of longform_en, tiny.en (about 25 min on 2 cores)
    .venv/bin/python scripts/soak.py --hours 0.25 --warmup-hours 0.05   # a quick proof that it works
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from bench_latency import proc_status_mib

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.audio.audiofile import load_audio  # noqa: E402
from edge.audio.base import SAMPLE_RATE  # noqa: E402
from edge.publish import client, protocol  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
DEFAULT_MODEL = REPO / "models" / "whisper-tiny.en-int8"
GAP_S = 1.0  # silence between looped files, so that no utterance spans two of them
SOCKET_WAIT_S = 300.0  # model load on a busy 2-core box


@dataclass
class Tally:
    """What the subscriber saw, counted as it arrives (a 6-hour run keeps no event list)."""

    audio_s: float = 0.0  # the newest event's audio_time_s
    started: set[int] = field(default_factory=set)
    finals: Counter = field(default_factory=Counter)  # utterance_id -> finals received
    empty_finals: int = 0
    dropped_finals: int = 0
    unreadable: int = 0  # lines this version cannot parse

    def see(self, line: bytes) -> None:
        try:
            event = client.parse_event(line)
        except protocol.ProtocolError:
            self.unreadable += 1
            return
        self.audio_s = max(self.audio_s, event.audio_time_s)
        if isinstance(event, protocol.SpeechStart):
            self.started.add(event.utterance_id)
        elif isinstance(event, protocol.Final):
            self.finals[event.utterance_id] += 1
            self.empty_finals += not event.text.strip()
            self.dropped_finals += event.dropped


@dataclass
class Sample:
    audio_s: float  # the audio position when the sample was taken
    rss_mib: float


def build_audio(path: Path, eval_set: str, hours: float) -> float:
    """Write the set's files over and over (GAP_S apart) until `hours` of 16 kHz audio; returns seconds written."""
    clips = [load_audio(p) for p in sorted((EVAL / eval_set).glob("*.wav"))]
    if not clips:
        raise SystemExit(f"soak: no .wav files in {EVAL / eval_set}")
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    left = int(hours * 3600 * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as out:
        while left > 0:
            for clip in clips:
                piece = np.concatenate([clip, gap])[:left]
                out.write(piece)
                left -= len(piece)
                if left <= 0:
                    break
    return sf.info(str(path)).duration


def write_config(work: Path, model: Path) -> Path:
    """The defaults, with an absolute model path (relative ones resolve against the config's directory)."""
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"path": str(model.resolve())}}))
    return config


def subscribe(path: Path, tally: Tally, daemon: subprocess.Popen) -> threading.Thread:
    """Connect as soon as the socket appears (the model is loaded) and count events until the daemon exits."""
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not path.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"soak: the daemon's socket {path} never appeared")
        time.sleep(0.005)
    sock = client.connect(str(path))

    def read() -> None:
        with sock:
            for line in client.read_lines(sock):
                tally.see(line)

    thread = threading.Thread(target=read, name="subscriber", daemon=True)
    thread.start()
    return thread


def sample_rss(daemon: subprocess.Popen, tally: Tally, every_s: float, samples: list[Sample],
               peak: list[float]) -> None:
    """VmRSS against the audio position until the daemon exits; `peak` keeps the largest VmHWM read."""
    while daemon.poll() is None:
        rss, hwm = proc_status_mib(daemon.pid, "VmRSS"), proc_status_mib(daemon.pid, "VmHWM")
        if rss is not None and hwm is not None:
            samples.append(Sample(tally.audio_s, rss))
            peak[0] = max(peak[0], hwm)
        time.sleep(every_s)


def growth_per_hour(samples: list[Sample], warmup_hours: float) -> float | None:
    """Slope of RSS (MiB) over audio hours after the warm-up; None with too few samples to fit."""
    after = [s for s in samples if s.audio_s >= warmup_hours * 3600]
    if len(after) < 3 or after[-1].audio_s - after[0].audio_s <= 0:
        return None
    hours = np.array([s.audio_s / 3600 for s in after])
    return float(np.polyfit(hours, np.array([s.rss_mib for s in after]), 1)[0])


def report(tally: Tally, samples: list[Sample], peak_mib: float, audio_s: float, wall_s: float,
           args: argparse.Namespace) -> bool:
    """Print the results; True if every utterance had exactly one final."""
    missing = len(tally.started - set(tally.finals))
    doubled = sum(1 for n in tally.finals.values() if n > 1)
    unannounced = len(set(tally.finals) - tally.started)
    running = [s for s in samples if 0 < s.audio_s < tally.audio_s] or samples  # not start-up, not the exit
    growth = growth_per_hour(running, args.warmup_hours)
    print(f"soak: {audio_s / 3600:.2f} h of {args.eval_set} (audio reached {tally.audio_s / 3600:.2f} h), "
          f"model {args.model.name}, pace fast, wall {wall_s / 60:.1f} min ({audio_s / wall_s:.1f}x real time)")
    print(f"RSS MiB: start {running[0].rss_mib:.0f}, peak {peak_mib:.0f} (VmHWM), end {running[-1].rss_mib:.0f}; "
          f"growth after {args.warmup_hours:g} h: "
          + (f"{growth:+.2f} MiB per audio hour" if growth is not None else "n/a (too few samples after warm-up)")
          + f" ({len(samples)} samples every {args.every:g} s)")
    print(f"utterances {len(tally.started)}, finals {sum(tally.finals.values())} "
          f"(empty {tally.empty_finals}, dropped {tally.dropped_finals}), missing finals {missing}, "
          f"doubled finals {doubled}, finals before the subscriber saw their speech_start {unannounced}, "
          f"unreadable lines {tally.unreadable}")
    return missing == 0 and doubled == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=6.0, help="hours of audio (default 6)")
    parser.add_argument("--eval-set", default="longform_en", help="eval set whose files are looped")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--warmup-hours", type=float, default=1.0,
                        help="audio hours left out of the growth fit (default 1)")
    args = parser.parse_args()
    if args.hours <= 0 or args.every <= 0:
        parser.error("--hours and --every must be more than 0")
    with tempfile.TemporaryDirectory(prefix="edge-soak-", dir="/tmp") as tmp:
        work = Path(tmp)
        audio_s = build_audio(work / "soak.wav", args.eval_set, args.hours)
        log = (work / "daemon.log").open("w+")
        command = [sys.executable, "-m", "edge", "run", "--config", str(write_config(work, args.model)),
                   "--source", f"file:{work / 'soak.wav'}", "--pace", "fast", "--exit-at-end",
                   "--socket", str(work / "asr.sock")]
        started = time.monotonic()
        daemon = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        tally, samples, peak = Tally(), [], [0.0]
        sampler = threading.Thread(target=sample_rss, args=(daemon, tally, args.every, samples, peak), daemon=True)
        sampler.start()
        subscriber = subscribe(work / "asr.sock", tally, daemon)
        code = daemon.wait()
        wall_s = time.monotonic() - started
        subscriber.join(10)
        sampler.join(args.every + 1)
        if code != 0 or not samples:
            log.seek(0)
            print(f"soak: the daemon exited with status {code}:\n{log.read()[-3000:]}", file=sys.stderr)
            return 1
        return 0 if report(tally, samples, peak[0], audio_s, wall_s, args) else 1


if __name__ == "__main__":
    sys.exit(main())
