#!/usr/bin/env python3
"""Latency / CPU / memory / accuracy benchmark of `edge-asr run` on long-form speech (not a test).

Runs the daemon at real-time pace on each file (a file source, or `--via-mic`
through the PulseAudio virtual microphone), subscribes to its socket, and uses
the manifest's `segments` to measure:

- onset latency: segment start -> first non-empty partial (or final) of it;
- partial gaps: between consecutive partials of one utterance (how often the caption moves);
- final latency: segment end -> the final covering it
  (segment start/end trimmed to where the audio is audible: the clips carry their own lead-in and tail);
- CPU (process CPU time / wall time, in % of one core) while speaking and
  while silent (a separate run on nonspeech/silence_10s.wav);
- peak RSS (VmHWM);
- WER (English) or CER (Mandarin) of the finals next to the offline recognizer
  (`edge-asr transcribe`) on the same audio.

Prints a markdown table. Run it on a quiet machine:

    .venv/bin/python scripts/bench_latency.py                       # longform_en, tiny.en
    .venv/bin/python scripts/bench_latency.py --eval-set longform_zh --model models/whisper-base-int8 \
        --set model.language=zh
    .venv/bin/python scripts/bench_latency.py --lead-in 1                       # 1 s of silence before each file
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from scoring import error_rate, metric_name

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "eval"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.05
AFTER_SPEECH_S = 1.0  # decoding the final still counts as "speaking"
ENERGY_RANGE_DB = 35.0
NOISE_MARGIN_DB = 10.0  # over the file's noise floor: what audible_segments counts as speech
DEFAULT_MODEL = REPO / "models" / "whisper-tiny.en-int8"


@dataclass
class Run:
    """What one daemon run produced."""

    events: list[dict] = field(default_factory=list)  # each with `_at` (monotonic receive time)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, CPU seconds)
    peak_rss_mib: float = 0.0
    connected_at: float = 0.0  # the socket appears once the model is loaded
    played_at: float | None = None  # virtual microphone: when playback of the file began
    lead_s: float = 0.0  # file source: seconds of silence put before the file (--lead-in)

    def stream_start(self) -> float:
        """Wall time of the file's first sample.

        File source: the stream's own origin, after the silence put before the file. Microphone:
        the capture runs before playback, so the playback start is the origin.
        """
        return self.played_at if self.played_at is not None else self.capture_origin() + self.lead_s

    def capture_origin(self) -> float:
        """Wall time of the stream's audio_time_s 0: the least-delayed event bounds it from above.
        `hello` is left out: it can come before the capture starts, with audio_time_s 0."""
        return min(e["_at"] - e["audio_time_s"] for e in self.events if e["type"] != "hello")

    def file_offset_s(self) -> float:
        """Stream seconds before the file's first sample (the capture's lead on playback; 0 for a file
        source: the silence put before it): events' start_s/end_s minus this are file times, as the
        manifest's segments are."""
        return self.lead_s if self.played_at is None else self.played_at - self.capture_origin()

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_mib(pid: int, key: str) -> float | None:
    """A memory figure of /proc/PID/status in MiB (VmHWM: peak RSS, VmRSS: RSS now); None once gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith(f"{key}:")), None)  # gone once a zombie
    return int(line.split()[1]) / 1024 if line else None


def _subscribe(path: Path, run: Run, process: subprocess.Popen, timeout: float = 120.0) -> threading.Thread:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"daemon socket {path} never appeared")
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited ({process.returncode}) before its socket appeared:\n{process.stderr.read()[-3000:]}")
        time.sleep(0.005)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    run.connected_at = time.monotonic()

    def read() -> None:
        with sock, sock.makefile("rb") as lines:
            for line in lines:
                run.events.append({**json.loads(line), "_at": time.monotonic()})

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _sample(process: subprocess.Popen, run: Run) -> None:
    while process.poll() is None:
        cpu, rss = proc_cpu_s(process.pid), proc_status_mib(process.pid, "VmHWM")
        if cpu is not None:
            run.cpu.append((time.monotonic(), cpu))
        if rss is not None:
            run.peak_rss_mib = max(run.peak_rss_mib, rss)
        time.sleep(SAMPLE_EVERY_S)


def run_daemon(
    audio: Path, work: Path, model: Path, overrides: dict, mic: object | None,
    pace: str = "realtime", on_socket: Callable[[], None] | None = None,
) -> Run:
    """One daemon run on `audio` (real-time pace unless told); returns the events and resource samples.

    `on_socket` runs once this benchmark's subscriber is connected, for whatever else should
    listen beside it (scripts/bench_captions.py: the caption server and its pages).
    """
    config = {
        "model": {"path": str(model)},
        "publish": {"socket": str(work / "asr.sock")},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        config.setdefault(section, {})[key] = value
    if mic is not None:
        config.setdefault("audio", {})["device"] = mic.device
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    from_file = ["--source", f"file:{audio}", "--pace", pace, "--exit-at-end"]
    source = ["--source", "mic"] if mic is not None else from_file
    env = {**os.environ, **(mic.env if mic is not None else {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(work / "config.yaml"), *source],
        cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = Run()
    sampler = threading.Thread(target=_sample, args=(process, run), daemon=True)
    sampler.start()
    reader = _subscribe(work / "asr.sock", run, process)
    if on_socket is not None:
        on_socket()
    if mic is not None:
        time.sleep(1.0)  # capture running
        run.played_at = time.monotonic()
        mic.play(audio, wait=True)
        time.sleep(2.0)  # the last final
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"daemon failed ({process.returncode}):\n{err[-3000:]}")
    reader.join(5)
    sampler.join(1)
    return run


def _cpu_percent(run: Run, t0: float, inside: list[tuple[float, float]]) -> float:
    """CPU % of one core over the sample intervals whose audio time lies inside the given spans."""
    busy = wall = 0.0
    for (t_a, c_a), (t_b, c_b) in zip(run.cpu, run.cpu[1:]):
        middle = (t_a + t_b) / 2 - t0
        if any(lo <= middle < hi for lo, hi in inside):
            busy += c_b - c_a
            wall += t_b - t_a
    return 100 * busy / wall if wall else float("nan")


def audible_segments(path: Path, segments: list[dict]) -> list[dict]:
    """Trim each manifest segment to where its audio is audible (the clips carry their own lead-in/tail).

    Audible = a 10 ms frame within ENERGY_RANGE_DB of the segment's loudest frame and NOISE_MARGIN_DB over
    the file's noise floor (its 5th-percentile frame): in longform_03_noisy_snr10 the floor is ~27 dB under
    the speech, so the range alone kept every frame, up to 1 s of noise tail, and its latencies read short.
    """
    import soundfile

    audio, rate = soundfile.read(path, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    frame = rate // 100
    floor_db = 20 * np.log10(np.percentile(_frame_rms(audio, frame), 5))
    out = []
    for seg in segments:
        level = 20 * np.log10(_frame_rms(audio[int(seg["start"] * rate) : int(seg["end"] * rate)], frame))
        in_range = level > level.max() - ENERGY_RANGE_DB
        loud = np.flatnonzero(in_range & (level > floor_db + NOISE_MARGIN_DB))
        if not loud.size:  # a segment no louder than the file's floor: the range alone (its loudest frame at least)
            loud = np.flatnonzero(in_range)
        out.append({**seg, "start": seg["start"] + loud[0] / 100, "end": seg["start"] + (loud[-1] + 1) / 100})
    return out


def with_lead_in(path: Path, seconds: float, directory: Path) -> Path:
    """`path` with `seconds` of digital silence before it, written in `directory`, samples unchanged.

    Where the speech starts in the stream moves the VAD's cuts, and a final that changes changes the
    next one's context prompt: longform_en's finals went from WER 2.4 to 3.2 with 1 s of silence before
    each file, the microphone run's total too (docs/benchmarks.md, "where the speech starts")."""
    import soundfile

    subtype = soundfile.info(path).subtype
    exact = "float64" if subtype in ("FLOAT", "DOUBLE") else "int32"  # an int read of a float file truncates it
    audio, rate = soundfile.read(path, dtype=exact, always_2d=True)
    silence = np.zeros((round(seconds * rate), audio.shape[1]), audio.dtype)
    out = directory / f"lead-in_{path.name}"
    soundfile.write(out, np.concatenate([silence, audio]), rate, subtype=subtype)
    return out


def _frame_rms(audio: np.ndarray, frame: int) -> np.ndarray:
    """RMS of each whole `frame` of `audio` (never 0: it goes into a log)."""
    return np.sqrt(np.mean(audio[: audio.size // frame * frame].reshape(-1, frame) ** 2, axis=1)) + 1e-10


def onset_latencies(run: Run, segments: list[dict]) -> list[float]:
    t0, offset = run.stream_start(), run.file_offset_s()
    texts = [e for e in run.events if e["type"] in ("partial", "final") and e["text"].strip()]
    out = []
    for seg in segments:
        first = next((e for e in texts if e["end_s"] - offset > seg["start"] and e["_at"] >= t0 + seg["start"]), None)
        if first is not None:
            out.append(first["_at"] - (t0 + seg["start"]))
    return out


def final_latencies(run: Run, segments: list[dict]) -> list[float]:
    """One per segment that a final covers to within 0.5 s of its end; the report says how many of all."""
    t0, offset = run.stream_start(), run.file_offset_s()
    out = []
    for seg in segments:
        covering = [f for f in run.of("final")
                    if f["start_s"] - offset < seg["end"] and f["end_s"] - offset >= seg["end"] - 0.5]
        if covering:
            last = max(covering, key=lambda f: f["end_s"])
            out.append(last["_at"] - (t0 + seg["end"]))
    return out


def partial_gaps(run: Run) -> list[float]:
    """Seconds between consecutive partials of each utterance, as subscribers received them."""
    times: dict[int, list[float]] = {}
    for event in run.of("partial"):
        times.setdefault(event["utterance_id"], []).append(event["_at"])
    return [later - earlier for kept in times.values() for earlier, later in zip(kept, kept[1:])]


def speaking_cpu(run: Run, segments: list[dict]) -> float:
    spans = [(s["start"], s["end"] + AFTER_SPEECH_S) for s in segments]
    return _cpu_percent(run, run.stream_start(), spans)


SILENCE_S = 10.0  # nonspeech/silence_10s.wav


def silent_cpu(run: Run) -> float:
    """Steady silence: a second after start-up until half a second before the file ends,
    so neither start-up nor the end-of-file flush and exit count as listening to silence."""
    return _cpu_percent(run, run.connected_at, [(1.0, SILENCE_S - 0.5)])


def offline_text(path: Path, model: Path, language: str) -> str:
    """What `edge-asr transcribe --language` makes of the whole file."""
    from edge.asr.load import load_recognizer
    from edge.audio.audiofile import load_audio

    recognizer = load_recognizer(model)
    return recognizer.transcribe(load_audio(path), options=recognizer.options(beam_size=5, language=language)).text


def _rate(eval_set: str, refs: list[str], hyps: list[str]) -> str:
    rate = error_rate(eval_set, refs, hyps)
    return "-" if rate is None else f"{100 * rate:.1f}"


def _p(values: list[float], q: float) -> str:
    """Nearest rank: with 6-20 values an interpolated p95 sat below the worst one it stood for."""
    return f"{1000 * float(np.percentile(values, q, method='inverted_cdf')):.0f}" if values else "-"


@contextlib.contextmanager
def _maybe_mic(enabled: bool) -> Iterator[object | None]:
    if not enabled:
        yield None
        return
    sys.path.insert(0, str(REPO))
    from tests.virtual_mic import VirtualMic

    with tempfile.TemporaryDirectory(prefix="bench-vmic-") as root:
        mic = VirtualMic(Path(root))
        mic.start()
        try:
            yield mic
        finally:
            mic.stop()


def _overrides(pairs: list[str]) -> dict:
    return {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="file names of the eval set (default: all)")
    parser.add_argument("--eval-set", default="longform_en", choices=("longform_en", "longform_zh"))
    parser.add_argument("--model", type=lambda value: Path(value).resolve(), default=DEFAULT_MODEL,
                        help="a built model directory (relative to the current directory)")
    parser.add_argument("--via-mic", action="store_true", help="play the files into the PulseAudio virtual microphone")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. vad.min_silence_ms=250"
    )
    parser.add_argument("--no-offline", action="store_true", help="skip the offline WER reference (faster)")
    parser.add_argument("--lead-in", type=float, default=0.0, metavar="SECONDS",
                        help="file source: silence before each file (the microphone run has 1 s)")
    args = parser.parse_args()
    if not 0 <= args.lead_in < math.inf or (args.lead_in and args.via_mic):
        parser.error("--lead-in takes seconds >= 0, and only with the file source (the microphone run has 1 s)")
    manifest = (EVAL / args.eval_set / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in manifest if line.strip()]
    rows = [r for r in rows if not args.files or r["audio"] in args.files]
    overrides = _overrides(args.set)
    language = overrides.get("model.language", "auto")
    metric = metric_name(args.eval_set)
    onsets, gaps, finals, speaking, rss, refs, hyps, offline = ([] for _ in range(8))
    utterances = 0  # every manifest segment: those no final covers are counted here, not in the latencies
    print(f"model {args.model.name}, {args.eval_set}")
    print(f"| file | onset p50/p95 ms | partial gaps p50/p95 ms | final p50/p95 ms | CPU speaking % | peak RSS MiB "
          f"| {metric} finals | {metric} offline |")
    print("|---|---|---|---|---|---|---|---|")
    with _maybe_mic(args.via_mic) as mic:
        for row in rows:
            path = EVAL / args.eval_set / row["audio"]
            with tempfile.TemporaryDirectory(prefix="bench-") as work:
                played = with_lead_in(path, args.lead_in, Path(work)) if args.lead_in else path
                run = run_daemon(played, Path(work), args.model, overrides, mic)
                run.lead_s = args.lead_in
            segments = audible_segments(path, row["segments"])
            on, gap, fin = onset_latencies(run, segments), partial_gaps(run), final_latencies(run, segments)
            utterances += len(segments)
            text = " ".join(f["text"] for f in run.of("final"))
            reference = "" if args.no_offline else offline_text(path, args.model, language)
            onsets += on
            gaps += gap
            finals += fin
            speaking.append(speaking_cpu(run, segments))
            rss.append(run.peak_rss_mib)
            refs.append(row["text"])
            hyps.append(text)
            offline.append(reference)
            offline_rate = "-" if args.no_offline else _rate(args.eval_set, [row["text"]], [reference])
            print(
                f"| {row['audio']} ({len(fin)} of {len(segments)}) | {_p(on, 50)}/{_p(on, 95)} "
                f"| {_p(gap, 50)}/{_p(gap, 95)} | {_p(fin, 50)}/{_p(fin, 95)} | {speaking[-1]:.0f} "
                f"| {run.peak_rss_mib:.0f} | {_rate(args.eval_set, [row['text']], [text])} | {offline_rate} |",
                flush=True,
            )
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            quiet = run_daemon(EVAL / "nonspeech" / "silence_10s.wav", Path(work), args.model, overrides, mic)
    all_wer = _rate(args.eval_set, [" ".join(refs)], [" ".join(hyps)])
    all_offline = "-" if args.no_offline else _rate(args.eval_set, [" ".join(refs)], [" ".join(offline)])
    print(
        f"| **all** (finals for {len(finals)} of {utterances} utterances) | {_p(onsets, 50)}/{_p(onsets, 95)} "
        f"| {_p(gaps, 50)}/{_p(gaps, 95)} | {_p(finals, 50)}/{_p(finals, 95)} "
        f"| {np.mean(speaking):.0f} | {max(rss):.0f} | {all_wer} | {all_offline} |"
    )
    print(f"\nCPU while silent (silence_10s.wav): {silent_cpu(quiet):.1f} % of one core; "
          f"text from silence: {[e['text'] for e in quiet.events if e.get('text')] or 'none'}")
    lead = f"; {args.lead_in:g} s of silence before each file" if args.lead_in else ""
    print(f"settings: {overrides or 'config defaults'}{'; via virtual microphone' if mic else ''}{lead}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
