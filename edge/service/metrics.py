"""Prometheus metrics: always recorded (cheap), exported only when metrics.enabled.

The registry is our own, not prometheus_client's global one, so tests and a
reload never see duplicate-registration errors, and only our series are exported.
Export is an HTTP endpoint on metrics.host:metrics.port (port 0 = none) and/or a
node-exporter textfile rewritten atomically (temp file + rename) every few seconds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest, start_http_server

from edge.files import write_whole

if TYPE_CHECKING:
    from edge.config import MetricsConfig

log = logging.getLogger(__name__)

TEXTFILE_INTERVAL_S = 10.0
TEXTFILE_MODE = 0o644  # node-exporter runs as another user; the unit's UMask=0027 made the file unreadable to it
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class Metrics:
    """Every series edge-asr exports, in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._utterances = Counter("edge_asr_utterances", "Final transcripts published", registry=reg)
        self._partials = Counter("edge_asr_partials", "Partial transcripts published", registry=reg)
        self._latency = Histogram(
            "edge_asr_final_latency_seconds", "End of speech to final transcript published",
            buckets=LATENCY_BUCKETS, registry=reg,
        )
        self._rtf = Histogram(
            "edge_asr_real_time_factor", "Decode time divided by utterance audio duration",
            buckets=RTF_BUCKETS, registry=reg,
        )
        self._dropped = Counter("edge_asr_dropped_audio_seconds", "Captured audio dropped: ring buffer overruns",
                                registry=reg)
        self._lost = Counter("edge_asr_lost_audio_seconds", "Audio never captured: the device was lost or stalled",
                             registry=reg)
        self._fallbacks = Counter("edge_asr_fallbacks", "Accelerator calls re-run on CPU", registry=reg)
        self._subscribers = Gauge("edge_asr_subscribers", "Connected result subscribers", registry=reg)
        self._backend = Info("edge_asr_backend", "Inference backend in use", registry=reg)
        self._lag = Gauge("edge_asr_lag_seconds", "Stream position minus the end of the oldest undecoded final",
                          registry=reg)
        self._overload = {  # the session's running totals (status fields) and the counters that follow them
            name: Counter(series, help_text, registry=reg)
            for name, series, help_text in (
                ("partials_skipped", "edge_asr_partials_skipped",
                 "Partials not decoded: superseded, dropped for a final, or suspended"),
                ("partials_interrupted", "edge_asr_partials_interrupted",
                 "Partials stopped mid-decode: a final needed the recognizer"),
                ("finals_degraded", "edge_asr_finals_degraded", "Finals decoded in one greedy pass: recognition lagged"),
                ("finals_dropped", "edge_asr_finals_dropped", "Finals not decoded: recognition lagged too far"),
                ("finals_dropped_s", "edge_asr_finals_dropped_seconds", "Speech in the finals not decoded"),
                ("decode_failures", "edge_asr_decode_failures", "Decodes that raised: their finals are empty"),
            )
        }
        self._overload_seen: dict[str, float] = {}

    def record_final(self, latency_s: float, audio_s: float, decode_s: float) -> None:
        """One final transcript: end-of-speech -> publish latency and real-time factor."""
        self._utterances.inc()
        self._latency.observe(latency_s)
        if audio_s > 0 and decode_s > 0:  # a final that was never decoded (dropped, shutdown) has no speed
            self._rtf.observe(decode_s / audio_s)

    def record_partial(self) -> None:
        self._partials.inc()

    def record_dropped(self, dropped_s: float, lost_s: float) -> None:
        """More audio dropped by overruns, and lost with the device (seconds since the last call)."""
        for counter, seconds in ((self._dropped, dropped_s), (self._lost, lost_s)):
            if seconds > 0:
                counter.inc(seconds)

    def record_overload(self, stats: Mapping[str, Any]) -> None:
        """The session's `lag_s` now, and its totals of what overload gave up (counters advance by the difference)."""
        self._lag.set(stats["lag_s"])
        for name, counter in self._overload.items():
            counter.inc(max(stats[name] - self._overload_seen.get(name, 0), 0))
            self._overload_seen[name] = stats[name]

    def record_fallback(self, calls: int = 1) -> None:
        if calls > 0:
            self._fallbacks.inc(calls)

    def set_subscribers(self, count: int) -> None:
        self._subscribers.set(count)

    def set_backend(self, name: str, detail: str = "", requested: str = "auto", degraded: bool = False) -> None:
        """name: e.g. "cpu", "tensorrt"; detail: e.g. the provider list or "fallback: <reason>";
        requested: inference.backend; degraded: an accelerator was wanted but the CPU does the work."""
        self._backend.info({"name": name, "detail": detail, "requested": requested, "degraded": str(degraded).lower()})


class MetricsExporter:
    """Whatever start_metrics started; stop() is always safe to call."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.port: int | None = None
        self._server = None
        self._server_thread: threading.Thread | None = None
        self._textfile: str | None = None
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing: str | None = None  # the textfile's last write error, said once

    def serve_http(self, host: str, port: int) -> None:
        """The scrape endpoint, or an error in the journal and none: metrics are not worth the recognition.
        A port taken, or the default unit's ban on IP sockets, used to stop the daemon (exit 1, five
        restarts, a failed unit)."""
        try:
            self._server, self._server_thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as exc:
            log.error("metrics.port: cannot listen on %s:%d (%s); running without the scrape endpoint. The default "
                      "unit allows no IP listener: see docs/operations.md (TCP publishing and the metrics HTTP "
                      "endpoint), or use metrics.textfile with metrics.port: 0", host, port, exc.strerror or exc)
            return
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def write_textfile(self, path: str) -> None:
        self._textfile = path
        self._write()
        self._writer = threading.Thread(target=self._write_loop, name="metrics-textfile", daemon=True)
        self._writer.start()

    def stop(self) -> None:
        """Shut the HTTP server, write the textfile one last time."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server_thread.join()
            self._server = None
        if self._writer is not None:
            self._writer.join()
            self._writer = None
            self._write()

    def _write_loop(self) -> None:
        while not self._stop.wait(TEXTFILE_INTERVAL_S):
            self._write()

    def _write(self) -> None:
        """A failure is logged when it starts or changes, and the recovery once: every 10 s it made
        8,640 journal lines a day (a read-only directory under the unit without its drop-in)."""
        try:
            # readable from the moment it is there: the library's writer renamed a file made under the
            # unit's UMask=0027 and only then opened it up, and a scrape between the two got EACCES
            write_whole(Path(self._textfile), generate_latest(self.metrics.registry), TEXTFILE_MODE)
        except OSError as exc:
            # strerror: the part file's random name would make every attempt a new problem
            problem = f"metrics.textfile: cannot write {self._textfile}: {exc.strerror or exc}"
            if problem != self._failing:
                log.warning("%s (said once; retried every %.0f s)", problem, TEXTFILE_INTERVAL_S)
            self._failing = problem
            return
        if self._failing is not None:
            log.info("metrics.textfile: %s written again", self._textfile)
            self._failing = None


def start_metrics(cfg: MetricsConfig, metrics: Metrics | None = None) -> MetricsExporter:
    """Export `metrics` as cfg says (nothing when disabled); a listener that cannot start is logged, not fatal."""
    exporter = MetricsExporter(metrics or Metrics())
    if not cfg.enabled:
        return exporter
    if cfg.port:
        exporter.serve_http(cfg.host, cfg.port)
    if cfg.textfile is not None:
        exporter.write_textfile(str(cfg.textfile))
    return exporter
