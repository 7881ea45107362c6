"""The `edge-asr run` daemon: source -> VAD/endpointer -> streaming recognizer -> publisher.

The main thread reads audio and feeds the streaming session (cheap work only);
decoding runs on the session's worker thread and the publisher has its own.
Signals only set flags that the main loop acts on between blocks, so SIGHUP
and SIGTERM never interrupt a half-processed block.

systemd: READY=1 once the model is loaded, the socket serves and the source is open (or waiting for its device);
WATCHDOG=1 only while blocks keep being processed and no decode is wedged;
STATUS= follows the daemon's state. Outside systemd all of that is a no-op.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from edge.asr.base import Recognizer
from edge.asr.fallback import FallbackRecognizer
from edge.audio.base import SAMPLE_RATE, AudioSource
from edge.audio.recorder import UtteranceRecorder
from edge.config import LIVE_KEYS, LIVE_SECTIONS, OTHER_SERVICES, Config, ConfigError, changed_elsewhere, load_config, restart_needed
from edge.errors import StartupError, one_line
from edge.manifest import tuning
from edge.publish.protocol import Error, Event, Final, Partial, ProtocolError, Status, UtteranceEvent, VocabularyState
from edge.publish.server import Publisher
from edge.service.logs import set_level
from edge.service.metrics import Metrics, start_metrics
from edge.service.sdnotify import Notifier, ProgressWatchdog, watchdog_interval_s
from edge.stream.session import StreamingSession, StreamSettings
from edge.stream.worker import OverloadPolicy
from edge.vad.endpointer import EndpointSettings
from edge.vocabulary import Vocabulary, VocabularyError, parse_items

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1  # how long the main loop may wait for audio before handling signals
# SIGTERM to exit at most, subscribers that fell behind included: far inside systemd's
# TimeoutStopSec (20 s), and short because a restart loses that much audio.
SHUTDOWN_S = 3.0
SHUTDOWN_DRAIN_S = 1.4  # of it, first: finishing the last final (with subscribers that keep up, a stop takes < 2 s)
SHUTDOWN_TAIL_S = 0.2  # of it, last: stopping the worker, closing the source; in between, flushing subscribers
FAST_PACE_BACKLOG = 2  # finals queued before a source that can wait is read again
BACKLOG_POLL_S = 0.005
SOURCE_CHECK_S = 0.5  # how often the source's state is compared for status events
DECODE_STALL_S = 30.0  # a decode running this long on CPU counts as a stalled pipeline
# Every decode failing this long (at least 10 in a row) counts as a broken pipeline: a restart loads
# the model afresh (an onnxruntime session in a bad state, memory that ran out), where running on
# would publish empty finals for months.
DECODE_FAILING_S = 60.0
# Near a threshold the overload level can change with every decode: one status event per 5 s at most.
OVERLOAD_EVENT_GAP_S = 5.0


def decode_stall_s(backend: str, timeout_ms: int) -> float:
    """How long one decode may run before the watchdog stops pinging. On an accelerator a decode
    first waits out `inference.timeout_ms` and is then run again on CPU: the service must not be
    restarted before that fallback had its chance (timeout_ms may be up to 120 s, WatchdogSec is 30)."""
    return DECODE_STALL_S if backend == "cpu" else timeout_ms / 1000 + DECODE_STALL_S


class StatusRelay:
    """`on_status` for open_recognizer(): holds messages until the daemon can publish them."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._target: Callable[[str], None] | None = None

    def __call__(self, message: str) -> None:
        if self._target is None:
            self._pending.append(message)
        else:
            self._target(message)

    def attach(self, target: Callable[[str], None]) -> None:
        """Deliver the held messages and forward later ones."""
        self._target = target
        for message in self._pending:
            target(message)
        self._pending.clear()


class Latest:
    """The newest of a run of messages put by other threads, and how many were put since the last take."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._message: str | None = None
        self._count = 0

    def put(self, message: str) -> None:
        with self._lock:
            self._message, self._count = message, self._count + 1

    def take(self) -> tuple[str, int] | None:
        with self._lock:
            news = None if self._message is None else (self._message, self._count)
            self._message, self._count = None, 0
        return news


class Daemon:
    """One run of the pipeline; `run()` returns the process exit status."""

    def __init__(
        self,
        cfg: Config,
        config_path: Path,
        recognizer: Recognizer,
        source: AudioSource,
        *,
        exit_at_end: bool = False,
        socket_path: Path | None = None,
        status_relay: StatusRelay | None = None,
    ) -> None:
        self._cfg = cfg
        self._config_path = config_path
        self._recognizer = recognizer
        self._source = source
        self._exit_at_end = exit_at_end
        self._status_relay = status_relay
        self._started = time.monotonic()
        self._state = "starting"
        # Plain flags, not Events: a signal handler runs between two bytecodes of the main thread, and
        # Event.set() there deadlocks if the main thread was inside that Event's own lock (wait, clear).
        self._stop_requested = False
        self._reload_requested = False
        self._reload_requests = 0  # SIGHUPs (and early reloads) received so far
        self._reload_answers = 0  # of those, how many the latest reload read the file after
        self._notifier = Notifier()
        self._watchdog = ProgressWatchdog(self._notifier, watchdog_interval_s())
        self._metrics = Metrics()
        self._backend = recognizer.backend_name
        self._decode_stall_s = decode_stall_s(self._backend, cfg.inference.timeout_ms)
        self._backend_news: str | None = None  # the latest selection/fallback message
        self._metrics.set_backend(self._backend, requested=cfg.inference.backend)
        self._recorder = (UtteranceRecorder(cfg.debug.record_audio_dir, cfg.debug.record_max_mb * 1_000_000)
                          if cfg.debug.record_audio_dir else None)
        self._tuning = tuning(cfg.model.path)
        self._session = self._make_session(cfg)
        self._log_advice()
        self._publisher = Publisher(cfg.publish, hello=self._hello, status_provider=self.status, socket_path=socket_path,
                                    requests={"vocabulary": self.on_vocabulary_request})
        self._source_state: tuple[str, int] | None = None
        self._dropped_s = 0.0
        self._lost_s = 0.0
        self._status_line = ""
        self._overload = "none"  # the level subscribers were last told
        self._said_failing = False
        self._breaks = 0  # the source's `breaks` the session has been told of
        self._fallbacks = 0  # the recognizer's `fallbacks` counted in the metrics
        self._overload_told_at = -OVERLOAD_EVENT_GAP_S
        self._vocabulary_news = Latest()

    # --- lifecycle ----------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or the end of a file with exit_at_end)."""
        self._install_signal_handlers()
        if self._status_relay is not None:  # first: the first subscriber's hello must already say "degraded"
            self._status_relay.attach(self.on_backend_status)
        self._publisher.start()
        exporter = None
        try:
            exporter = start_metrics(self._cfg.metrics, self._metrics)
            self._source.start()
            self._set_state("waiting for audio")
            self._notifier.ready()  # the socket serves and the source is open or waiting for its device
            self._watchdog.start()
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                if exporter is not None:  # after the last final: the textfile written on stop counts it
                    exporter.stop()
        return 0

    def request_stop(self) -> None:
        """From a signal handler or any thread: the main loop sees it within READ_TIMEOUT_S."""
        self._stop_requested = True

    def request_reload(self) -> None:
        self._reload_requests += 1
        self._reload_requested = True

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the caller drives request_stop / request_reload
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def _loop(self) -> None:
        next_check = 0.0
        while not self._stop_requested:
            if self._reload_requested:
                self._reload_requested = False  # before reading the file: a SIGHUP from now on reloads again
                self._reload_answers = self._reload_requests
                self.reload()
            if self._source.can_wait and self._session.pending_finals >= FAST_PACE_BACKLOG:
                time.sleep(BACKLOG_POLL_S)  # "as fast as the pipeline goes": recognition sets the pace
                continue
            if self._source.breaks != self._breaks:  # the last audio before a gap is in (read last time)
                self._breaks = self._source.breaks
                self._session.discontinuity()
            block = self._source.read(READ_TIMEOUT_S)
            if block is not None and block.size:
                self._session.feed(block)
                self._on_progress()
            elif self._source.ended:
                if self._at_end():
                    return
            elif self._source.stats().awaiting_audio:
                self._beat_unless_wedged()  # the source watches for its audio itself: a restart would only drop the subscribers
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + SOURCE_CHECK_S
                self._check_source()
                self._check_overload()
                self._tell_vocabulary()

    def _on_progress(self) -> None:
        if self._state == "waiting for audio":
            self._set_state("listening")
        self._beat_unless_wedged()

    def _beat_unless_wedged(self) -> None:
        """Progress for the watchdog, unless a decode has run past its stall limit or every decode has
        failed for DECODE_FAILING_S (said once in the journal: systemd restarts the service)."""
        if self._session.decode_busy_s() >= self._decode_stall_s:
            return
        failing_s = self._session.failing_s()
        if failing_s < DECODE_FAILING_S:
            self._said_failing = False
            self._watchdog.beat()
        elif not self._said_failing:
            self._said_failing = True
            log.error("every decode has failed for %.0f s: no more watchdog pings, so that systemd restarts "
                      "the service", failing_s)

    def _at_end(self) -> bool:
        """The file source has delivered everything: flush, then exit or idle."""
        if self._state != "file ended":
            self._session.finish()
            self._set_state("file ended")
        if self._exit_at_end:
            while not self._session.drain(READ_TIMEOUT_S):
                if self._stop_requested:
                    return True  # SIGTERM while draining: _shutdown() has the deadline
            return True
        self._beat_unless_wedged()  # idle by design, not stalled
        time.sleep(READ_TIMEOUT_S)
        return False

    def _shutdown(self) -> None:
        """Publish the final in progress, flush and close subscribers, remove the socket (within SHUTDOWN_S).
        Each closing step runs even if one before it fails: a worker left running aborts the interpreter."""
        began = time.monotonic()
        self._notifier.stopping()
        self._set_state("stopping")
        with ExitStack() as closing:  # callbacks run last-registered first
            closing.callback(self._watchdog.stop)
            if self._recorder is not None:
                closing.callback(self._recorder.close)
            closing.callback(self._source.close)
            closing.callback(self._session.close, 0.1)
            closing.callback(lambda: self._publisher.close(SHUTDOWN_S - SHUTDOWN_TAIL_S - (time.monotonic() - began)))
            self._publish_last_final()
        log.info("stopped after %.1f s of audio", self._session.position_s)

    def _publish_last_final(self) -> None:
        try:
            self._session.finish(quick=True)
        except Exception as exc:  # noqa: BLE001 - the finals already queued are still to be published
            log.error("shutdown: the utterance in progress could not be ended: %s", one_line(exc))
        if not self._session.drain(SHUTDOWN_DRAIN_S):
            log.warning("shutdown: a final was not decoded within %.1f s; publishing its partial", SHUTDOWN_DRAIN_S)
            self._session.give_up()

    # --- configuration ------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: apply vad.*, stream.*, vocabulary.*, log.level and LIVE_KEYS live; report the rest as
        needing a restart (captions.* and mqtt.*: as another service's)."""
        self._notifier.reloading()
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            self._reload_failed(exc.messages)
        except Exception as exc:  # noqa: BLE001 - whatever the file does, the daemon keeps running
            self._reload_failed([f"{self._config_path}: cannot be loaded: {one_line(exc)}"])
        else:
            if new.empty_warning():
                log.warning("%s: %s", self._config_path, new.empty_warning())
            self._apply(new)
        if self._state != "starting":
            self._notifier.ready()

    def _reload_failed(self, messages: list[str]) -> None:
        """The running settings stay; the journal and the subscribers are told why (messages are short)."""
        for message in messages:
            log.error("reload: %s", message)
        log.error("reload: %s is not usable; keeping the running settings", self._config_path)
        self._publish_error("config_invalid", "; ".join(messages))
        self._publish_status("reload failed: config invalid, old settings kept")

    def _make_session(self, cfg: Config) -> StreamingSession:
        try:
            vocabulary = self._configured_vocabulary(cfg)
        except VocabularyError as exc:  # the file changed since the config was checked
            raise StartupError(f"vocabulary.file: {exc}") from None
        return StreamingSession(
            self._recognizer,
            EndpointSettings.from_config(cfg.vad, self._tuning),
            StreamSettings.from_config(cfg.stream, cfg.model.language, self._tuning, vocabulary, cfg.model.chinese_script),
            emit=self._on_utterance_event,
            on_error=lambda message: self._publish_error("recognition_failed", message),
            record=self._recorder.save if self._recorder else None,
            overload=OverloadPolicy.patient() if self._source.can_wait else OverloadPolicy(),
        )

    @staticmethod
    def _configured_vocabulary(cfg: Config) -> Vocabulary:
        """The config's list, with a warning in the journal when its file holds no term."""
        warning = cfg.vocabulary.empty_file_warning()
        if warning:
            log.warning("%s", warning)
        return cfg.vocabulary.vocabulary()

    def _apply(self, new: Config) -> None:
        """Apply a validated config; the config's vocabulary replaces any list an app sent."""
        try:
            vocabulary = self._configured_vocabulary(new)
        except VocabularyError as exc:  # the file changed since it was checked
            self._reload_failed([f"vocabulary.file: {exc}"])
            return
        pending = restart_needed(self._cfg, new)
        for unit, keys in changed_elsewhere(self._cfg, new).items():
            log.info("reload: %s changed: %s reads it (systemctl restart %s applies it)", ", ".join(keys), unit, unit)
        live = {name: getattr(new, name) for name in (*LIVE_SECTIONS, *OTHER_SERVICES)}  # said once per change
        names = [key.removeprefix("model.") for key in LIVE_KEYS if key not in pending]  # model.* keys only
        live["model"] = self._cfg.model.model_copy(update={name: getattr(new.model, name) for name in names})
        self._cfg = self._cfg.model_copy(update=live)
        stream = StreamSettings.from_config(new.stream, self._cfg.model.language, self._tuning, vocabulary,
                                            self._cfg.model.chinese_script)
        self._session.update_settings(EndpointSettings.from_config(new.vad, self._tuning), stream)
        set_level(new.log.level)
        self._log_advice()
        if pending:
            log.warning("reload: %s changed but needs a restart; keeping the old value(s)", ", ".join(pending))
            self._publish_status("reloaded; needs restart for " + ", ".join(pending), needs_restart=pending)
        else:
            log.info("reload: configuration applied")
            self._publish_status("reloaded")

    # --- events -------------------------------------------------------------------

    def _hello(self) -> dict[str, Any]:
        """`reload_requests`: how many reloads were asked for before this connection; `edge-asr reload`
        takes as its answer only a reload status whose `reload_requests_answered` is above it."""
        return {"model": Path(self._cfg.model.path).name, **self._backend_fields(), "sample_rate": SAMPLE_RATE,
                "chinese_script": self._cfg.model.chinese_script, "reload_requests": self._reload_requests}

    def status(self) -> dict[str, Any]:
        """The daemon's state (thread-safe snapshot; also answers subscribers' status requests)."""
        source = self._source.stats()
        return {
            "audio_time_s": self._session.position_s,
            "state": self._state,
            "uptime_s": round(time.monotonic() - self._started, 3),
            **self._backend_fields(),
            "model": Path(self._cfg.model.path).name,
            "language": self._session.settings.language,  # what the recognizer is given: a reload is seen
            "chinese_script": self._session.settings.script,
            "reload_requests_answered": self._reload_answers,
            "vocabulary": self._vocabulary_summary(),
            "dropped_audio_s": float(source.dropped_s),
            "source": source.as_dict(),
            **self._session.stats(),
        }

    def _vocabulary_summary(self) -> dict[str, Any]:
        """The list's size, source and settings, and the advice on it when there is some."""
        settings = self._session.settings
        advice = self._advice(settings)
        return {**settings.vocabulary.summary(), **({"advice": advice} if advice else {})}

    def on_vocabulary_request(self, request: Mapping[str, Any]) -> VocabularyState:
        """An app's `vocabulary` request (publisher thread): replace the list, go back to the
        config's (`reset`), or just ask (neither). A bad list changes nothing."""
        unknown = sorted(set(request) - {"type", "terms", "reset"})
        if unknown:
            raise ProtocolError(f"vocabulary: unknown field(s) {', '.join(unknown)} (use terms or reset)", "bad_vocabulary")
        reset = request.get("reset", False)
        if not isinstance(reset, bool):
            raise ProtocolError(f"vocabulary: reset must be true or false, got {json.dumps(reset)[:40]}", "bad_vocabulary")
        if "terms" in request and reset:
            raise ProtocolError("vocabulary: send terms or reset, not both", "bad_vocabulary")
        try:
            if reset and self._session.set_vocabulary(self._cfg.vocabulary.vocabulary()):
                self._vocabulary_news.put("vocabulary reset to the config's list")
            elif "terms" in request:
                terms = parse_items(request["terms"], "terms")
                if self._session.set_terms(terms, "request" if terms else "none"):
                    self._vocabulary_news.put(f"vocabulary replaced by an app ({len(terms)} terms)")
        except VocabularyError as exc:
            raise ProtocolError(f"vocabulary: {exc}; the active list is unchanged", "bad_vocabulary") from None
        settings = self._session.settings
        active = settings.vocabulary
        return VocabularyState(audio_time_s=self._session.position_s, source=active.source,
                               count=len(active.terms), terms=[term.text for term in active.terms],
                               advice=self._advice(settings) or "")

    def _tell_vocabulary(self) -> None:
        """The list's latest change, as one log line and one status event per check (SOURCE_CHECK_S):
        an app that sends requests in a loop must not flood the journal or the other subscribers."""
        news = self._vocabulary_news.take()
        if news is None:
            return
        message, changes = news
        log.info("%s%s", message, f" (the last of {changes} changes)" if changes > 1 else "")
        self._log_advice()
        self._publish_status(message)

    def _advice(self, settings: StreamSettings) -> str | None:
        """The recognizer's advice on the list of `settings` (one too long for the prompt gets only the tree);
        asked afresh each time: 0.6 ms for the 39-term list, 3.9 ms for 500 terms (tiny.en's tokenizer)."""
        return self._recognizer.vocabulary_advice(settings.vocabulary, settings.language)

    def _log_advice(self) -> None:
        """The advice in the journal where a list is taken up: at start, on a reload, and (at most once per
        check, as its news) for an app's list."""
        advice = self._advice(self._session.settings)
        if advice:
            log.warning("%s", advice)

    def on_backend_status(self, message: str) -> None:
        """Backend selection / fallback news: a log line and a `status` event."""
        log.warning("%s", message)
        backend = self._recognizer.backend_name
        if isinstance(self._recognizer, FallbackRecognizer):  # each call re-run on CPU, a retry's too
            self._metrics.record_fallback(self._recognizer.fallbacks - self._fallbacks)
            self._fallbacks = self._recognizer.fallbacks
        self._backend = backend
        self._backend_news = message
        self._metrics.set_backend(backend, message, self._cfg.inference.backend, self._degradation()["degraded"])
        self._publish_status(message)

    def _backend_fields(self) -> dict[str, Any]:
        """What runs the model, what was asked for, and whether that is a degradation: for hello and status alike."""
        return {"backend": self._recognizer.backend_name, "backend_requested": self._cfg.inference.backend,
                **self._degradation()}

    def _degradation(self) -> dict[str, Any]:
        """`degraded`: an accelerator was wanted or found but the CPU does the work; `degraded_reason` says why."""
        wanted_accelerator = self._cfg.inference.backend != "cpu" and self._backend_news is not None
        if wanted_accelerator and self._recognizer.backend_name == "cpu":
            return {"degraded": True, "degraded_reason": self._backend_news}
        return {"degraded": False}

    def _set_state(self, state: str) -> None:
        self._state = state
        self._update_status_line()

    def _update_status_line(self) -> None:
        """STATUS= for `systemctl status`, sent only when it changes."""
        source = self._source_state[0] if self._source_state else "starting"
        line = f"{self._state}; audio {source}; {self._session.utterances} utterances; backend {self._backend}"
        if line != self._status_line:
            self._status_line = line
            self._notifier.status(line)

    def _publish(self, event: Event) -> None:
        try:
            self._publisher.publish(event)
        except RuntimeError:
            log.debug("publisher not running; %s dropped", event.TYPE)

    def _publish_status(self, message: str, **extra: Any) -> None:
        fields = self.status()
        audio_time_s = fields.pop("audio_time_s")
        self._publish(Status(audio_time_s=audio_time_s, fields={**fields, "message": message, **extra}))

    def _publish_error(self, reason: str, message: str) -> None:
        self._publish(Error(audio_time_s=self._session.position_s, reason=reason, message=message))

    def _on_utterance_event(self, event: UtteranceEvent) -> None:
        """Called by the session (either thread) for every utterance event: publish it, then account for it."""
        if isinstance(event, Final) and event.dropped:
            seconds = event.end_s - event.start_s
            self._publish_error("overload", f"utterance {event.utterance_id} ({seconds:.1f} s of speech) was not decoded: "
                                "recognition fell too far behind the audio; its final says dropped")
        self._publish(event)
        if isinstance(event, Partial):
            self._metrics.record_partial()
        elif isinstance(event, Final):
            latency = max(event.audio_time_s - event.end_s, 0.0)
            self._metrics.record_final(latency, event.end_s - event.start_s, event.decode_s)
            # transcripts are what people said: only in the journal when a technician asks for debug
            log.debug("final %d [%.2f-%.2f s] %s", event.utterance_id, event.start_s, event.end_s, event.text)

    def _check_overload(self) -> None:
        """Lag and what overload gave up, into the metrics; a status event and a log line when the level changes."""
        stats = self._session.stats()
        self._metrics.record_overload(stats)
        level, now = stats["overload"], time.monotonic()
        if level == self._overload or now - self._overload_told_at < OVERLOAD_EVENT_GAP_S:
            return
        self._overload, self._overload_told_at = level, now
        # A file at fast pace is read ahead while a final decodes: there lag is not lateness and only
        # partials pause (OverloadPolicy.patient), which the first-run demo should not call a warning.
        late = level != "none" and not self._source.can_wait
        log.log(logging.WARNING if late else logging.INFO,
                "overload: %s (recognition %.1f s behind the audio)", level, stats["lag_s"])
        self._publish_status(f"overload: {level}")

    def _check_source(self) -> None:
        """A lost or reopened device is a notable change: status event and log line."""
        stats = self._source.stats()
        state = (stats.state, stats.reopens)
        if self._source_state is not None and state != self._source_state:
            log.warning("audio source %s: %s (reopens %s)", stats.device, *state)
            self._publish_status(f"audio source {state[0]}")
        self._source_state = state
        self._update_status_line()
        self._metrics.record_dropped(stats.dropped_s - self._dropped_s, stats.lost_s - self._lost_s)
        self._metrics.set_subscribers(self._publisher.subscriber_count)
        self._dropped_s, self._lost_s = stats.dropped_s, stats.lost_s
