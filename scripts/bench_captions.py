#!/usr/bin/env python3
"""Does the caption page cost the daemon anything? (not a test)

Default: `edge-asr run` on longform_en/longform_01.wav at real-time pace, twice: once with
only this script's socket subscriber, once with `edge-asr captions` beside it and 20
browsers' event streams held open (plain HTTP clients reading /events). For both it prints
the subscriber's finals, how many of the file's segments got their final, and the
end-of-speech -> final latency p50/p95 (scripts/bench_latency.py's measures); for the
second, how many event streams got every final.

--soak: the daemon on ~30 min of audio (the longform_en files looped into one WAV) at fast
pace, with the caption server, one headless Chromium page and a few event streams, the
caption server's RSS sampled every second: start, peak and end.

    .venv/bin/python scripts/bench_captions.py [--repeat 3]
    .venv/bin/python scripts/bench_captions.py --soak

localhost only; everything it starts is stopped at the end (docs/benchmarks.md, "Caption page").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness reuses the caption tests' server, event stream and browser

from bench_latency import (  # noqa: E402
    DEFAULT_MODEL, EVAL, Run, audible_segments, final_latencies, proc_cpu_s, proc_status_mib, run_daemon,
)

from tests.test_captions import CaptionServer, EventStream, config_dir, open_page, start_chromium  # noqa: E402

LONGFORM = EVAL / "longform_en"
STREAMS = 20
SOAK_STREAMS = 3
DELIVERY_WAIT_S = 5.0  # after the daemon exits, for the last finals to cross the caption server


class StreamReader:
    """One browser's event stream, read on a thread of its own; keeps the finals' texts."""

    def __init__(self, port: int) -> None:
        self.stream = EventStream(port)
        self.finals: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                name, data = self.stream.event()
            except TimeoutError:
                continue  # a quiet spell longer than the socket timeout: the stream is still open
            except (EOFError, OSError):
                return  # closed, by the server or by close()
            if name == "final":
                self.finals.append(data["text"])

    def close(self) -> None:
        self.stream.close()
        self._thread.join(1)


class Beside:
    """`edge-asr captions` on the daemon's socket, with `streams` event streams and, if asked, a Chromium page."""

    def __init__(self, workdir: Path, socket_path: Path, streams: int, page: bool) -> None:
        self.workdir = workdir
        self.server = CaptionServer(config_dir(workdir), socket_path)
        self.streams = streams
        self.page = page
        self.readers: list[StreamReader] = []
        self.driver = None
        self.last_shown: str | None = None  # the page's newest line once the run is over
        self.rss_mib: list[float] = []
        self.cpu_percent = 0.0  # the caption server's, from its start-up's end to the run's
        self._cpu_from: tuple[float, float] = (0.0, 0.0)  # (monotonic time, CPU seconds) once all were connected
        self._sampling = threading.Event()

    def start(self) -> None:
        """Before the daemon, as on a box: the server's and the streams' start-up cost is not the daemon's to bear."""
        self.server.start()
        self.readers = [StreamReader(self.server.port) for _ in range(self.streams)]

    def daemon_up(self) -> None:
        """run_daemon's `on_socket`: open the page, and measure from now on."""
        if self.page:
            self.driver = start_chromium(self.workdir / "chromium")
            open_page(self.driver, self.server)
        self._cpu_from = (time.monotonic(), proc_cpu_s(self.server.process.pid))
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _sample_rss(self) -> None:
        """The caption server's RSS once a second: a memory leak would show as a climb over the soak."""
        while not self._sampling.is_set():
            rss = proc_status_mib(self.server.process.pid, "VmRSS")
            if rss is not None:
                self.rss_mib.append(rss)
            self._sampling.wait(1.0)

    def settle(self, expected: list[str]) -> None:
        """Give the last finals time to reach every stream (the daemon has exited); note the page's last line."""
        deadline = time.monotonic() + DELIVERY_WAIT_S
        while any(reader.finals != expected for reader in self.readers) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.driver is not None:
            self.last_shown = self.driver.execute_script(
                "return document.querySelector('.line:last-child')?.textContent")

    def close(self) -> None:
        since, cpu = self._cpu_from
        self.cpu_percent = 100 * (proc_cpu_s(self.server.process.pid) - cpu) / (time.monotonic() - since)
        self._sampling.set()
        if self.driver is not None:
            self.driver.quit()
        for reader in self.readers:
            reader.close()
        self.server.stop()


def daemon_run(audio: Path, pace: str, beside: bool, streams: int, page: bool) -> tuple[Run, Beside | None]:
    """One `edge-asr run` on `audio` (exits at its end), with the caption server and its clients if `beside`."""
    with tempfile.TemporaryDirectory(prefix="bench-") as work, tempfile.TemporaryDirectory(prefix="bench-") as pages:
        helpers = Beside(Path(pages), Path(work) / "asr.sock", streams, page) if beside else None
        try:
            if helpers is not None:
                helpers.start()
            run = run_daemon(audio, Path(work), DEFAULT_MODEL, {}, None, pace=pace,
                             on_socket=helpers.daemon_up if helpers else None)
            if helpers is not None:
                helpers.settle([final["text"] for final in run.of("final")])
        finally:
            if helpers is not None:
                helpers.close()
    return run, helpers


def p50_p95(seconds: list[float]) -> str:
    return "/".join(f"{1000 * np.percentile(seconds, q):.0f}" for q in (50, 95)) if seconds else "-"


def streams_with_every_final(run: Run, helpers: Beside | None) -> str:
    if helpers is None:
        return "-"
    texts = [final["text"] for final in run.of("final")]
    return f"{sum(reader.finals == texts for reader in helpers.readers)}/{len(helpers.readers)}"


def comparison_row(audio: Path, segments: list[dict], streams: int, beside: bool) -> tuple[list[float], bool]:
    """One real-time run, printed as a table row; its final latencies, and whether every final arrived."""
    run, helpers = daemon_run(audio, "realtime", beside, streams, page=False)
    latencies = final_latencies(run, segments)
    every = streams_with_every_final(run, helpers)
    label = f"+ captions, {streams} event streams" if beside else "socket subscriber only"
    server_cpu = f"{helpers.cpu_percent:.1f}" if helpers else "-"
    print(f"| {label} | {len(run.of('final'))} | {len(latencies)}/{len(segments)} | {p50_p95(latencies)} "
          f"| {every} | {server_cpu} |", flush=True)
    return latencies, len(latencies) == len(segments) and every in ("-", f"{streams}/{streams}")


def compare(streams: int, repeat: int) -> int:
    """The same real-time run without and with the caption page's clients, alternating; 1 when a final went missing.

    A file has only a handful of segments, so one pair of runs says little about noise:
    `repeat` pairs also print the pooled latencies of each side.
    """
    row = next(r for r in map(json.loads, (LONGFORM / "manifest.jsonl").read_text().splitlines())
               if r["audio"] == "longform_01.wav")
    audio = LONGFORM / row["audio"]
    segments = audible_segments(audio, row["segments"])
    print(f"{audio.name} at real-time pace, {len(segments)} segments, model {DEFAULT_MODEL.name}")
    print("| run | finals | segments with their final | final latency p50/p95 ms | streams with every final "
          "| caption server CPU % |")
    print("|---|---|---|---|---|---|")
    pooled: dict[bool, list[float]] = {False: [], True: []}
    complete = True
    for _ in range(repeat):
        for beside in (False, True):
            latencies, arrived = comparison_row(audio, segments, streams, beside)
            pooled[beside] += latencies
            complete &= arrived
    if repeat > 1:
        for beside, label in ((False, "subscriber only"), (True, f"with {streams} event streams")):
            print(f"\npooled over {repeat} runs, {label}: final latency p50/p95 {p50_p95(pooled[beside])} ms "
                  f"({len(pooled[beside])} segments)")
    print(f"\nevery final arrived in every run: {'yes' if complete else 'NO'}")
    return 0 if complete else 1


def long_audio(minutes: float, path: Path) -> Path:
    """The longform_en files, looped into one WAV of at least `minutes` of audio."""
    files = sorted(LONGFORM.glob("*.wav"))
    pieces, rate, total = [], 16000, 0
    while total < minutes * 60 * rate:
        audio, rate = soundfile.read(files[len(pieces) % len(files)], dtype="int16")
        pieces.append(audio)
        total += audio.size
    soundfile.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
    return path


def soak(minutes: float, streams: int) -> int:
    """A long accelerated run with a real page open: is the caption server's memory bounded?"""
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        audio = long_audio(minutes, Path(scratch) / "soak.wav")
        seconds = soundfile.info(audio).duration
        started = time.monotonic()
        run, helpers = daemon_run(audio, "fast", True, streams, page=True)
    wall = time.monotonic() - started
    rss = helpers.rss_mib
    finals = [final["text"] for final in run.of("final")]
    print(f"{seconds / 60:.1f} min of audio (longform_en looped) at fast pace in {wall / 60:.1f} min wall time; "
          f"caption server with 1 Chromium page and {streams} event streams")
    print(f"finals: {len(finals)}; streams with every final: {streams_with_every_final(run, helpers)}; "
          f"the page's last line is the last final: {helpers.last_shown == finals[-1]}")
    print(f"caption server RSS MiB: start {rss[0]:.1f}, peak {max(rss):.1f}, end {rss[-1]:.1f} "
          f"({len(rss)} samples, 1 s apart); its CPU {helpers.cpu_percent:.1f} % of one core")
    print(f"daemon peak RSS MiB: {run.peak_rss_mib:.0f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="the long accelerated run with a browser open")
    parser.add_argument("--minutes", type=float, default=30.0, help="--soak: minutes of audio (default 30)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs to compare (default 1)")
    parser.add_argument("--streams", type=int,
                        help=f"event streams held open (default {STREAMS}; --soak {SOAK_STREAMS})")
    args = parser.parse_args()
    if args.soak:
        return soak(args.minutes, args.streams or SOAK_STREAMS)
    return compare(args.streams or STREAMS, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
