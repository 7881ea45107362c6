"""Streaming recognition: VAD-gated utterances, stable partials, one beam-search final.

`StreamingSession.feed()` runs on the audio-reading thread and only does cheap
work (VAD, endpointing, copying audio); every decode runs on one worker thread.
Finals are queued; a partial waits in a single slot, so when recognition lags
only the newest partial is decoded. During silence nothing is submitted at all.
When recognition falls behind the audio, `OverloadPolicy` suspends partials, then
decodes finals greedily, then drops the stalest queued finals: a dropped utterance
still gets its final, marked `dropped`, with its newest partial as the text.

The final is started speculatively when the endpointer announces a pause, and
published only once the silence reaches `vad.min_silence_ms` (or discarded if
speech resumes): most of the beam search overlaps the silence wait. The end of
an utterance, and a pause while the caption is fresh, interrupt the partial
being decoded, so that the final does not wait for it; a speculative final
discarded is interrupted in turn, and a partial it displaced is asked for again
at the pace of an utterance's first partials.

Per utterance the order is: speech_start, partials, speech_end (as soon as the
endpoint is decided), then exactly one final, whose text may be empty (the VAD
heard something the recognizer found no words in, recognition failed, or shutdown
could not wait and nothing had been recognised yet): subscribers close every
utterance they saw open on its final.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edge.asr.base import Interrupt, Interrupted, Recognizer
from edge.audio.base import SAMPLE_RATE
from edge.audio.history import AudioHistory
from edge.config import StreamConfig, resolve
from edge.errors import one_line
from edge.limits import MAX_UTTERANCE_S
from edge.manifest import Tuning
from edge.publish.protocol import Final, Partial, SpeechEnd, SpeechStart, UtteranceEvent
from edge.stream.stabilizer import PartialStabilizer
from edge.stream.worker import Job, OverloadPolicy, Worker
from edge.vad.endpointer import Boundary, Endpointer, EndpointSettings
from edge.vad.silero import SileroVad
from edge.vocabulary import Source, Term, Vocabulary

log = logging.getLogger(__name__)

FIRST_PARTIAL_STEP_MS = 200  # until an utterance has text, retry partials this often
# A speculative final interrupts the partial being decoded only while the caption is fresh (a partial shown
# less than this many partial intervals ago). With a dip every 0.7 s and partials slower than that, interrupting
# at every dip left a 12 s utterance 7.5 s without a partial, this rule 1.8 s (scripts/bench_caption_gaps.py).
PREEMPT_STALE_INTERVALS = 2
# Under `stream.partial_interval_ms: auto`, partials take at most this share of one core: the next one waits
# until the last one's CPU time (every thread of the process) / PARTIAL_CPU_SHARE has passed. On a 2-core Zen 3
# without VNNI, tiny.en's partials every 500 ms took about 0.7 of a core and the daemon 1.03 cores while people
# spoke (base zh every 1000 ms: 1.17); paced, 0.76 and 0.87 (docs/benchmarks.md, "Partials at half a core").
PARTIAL_CPU_SHARE = 0.5
# Audio held: the longest utterance and some. A start is confirmed at most half the utterance
# limit after it (Endpointer.earliest_start), inside the utterance's own span.
HISTORY_S = MAX_UTTERANCE_S + 6.0
CONTEXT_MAX_GAP_S = 10.0  # a final said longer ago than this is no longer context for the next utterance
# A partial's detected language an utterance keeps only this sure: whisper-base detected every eval clip's
# language (zh, yue, en) at p >= 0.92, and nonspeech at p <= 0.55 (edge/asr/whisper/decoding.py)
KEEP_LANGUAGE_PROB = 0.9


@dataclass(frozen=True)
class StreamSettings:
    """The live-reloadable `stream.*` keys, `model.language`, `model.chinese_script`, and the active vocabulary."""

    partial_interval_ms: int
    final_beam: int
    language: str = "auto"
    vocabulary: Vocabulary = Vocabulary()
    script: str = "simplified"
    paced: bool = False  # partial_interval_ms is `auto`'s: longer where partials would take over PARTIAL_CPU_SHARE

    @classmethod
    def from_config(
        cls,
        stream_cfg: StreamConfig | None = None,
        language: str = "auto",
        tuning: Tuning = Tuning(),
        vocabulary: Vocabulary = Vocabulary(),
        script: str = "simplified",
    ) -> "StreamSettings":
        """From a `stream` config section (None: the documented defaults), model.language, the
        model's tuning for `auto` keys, the vocabulary (the config's, or an app's), and
        model.chinese_script."""
        stream_cfg = stream_cfg or StreamConfig()
        return cls(
            int(resolve(stream_cfg.partial_interval_ms, tuning.partial_interval_ms)),
            int(resolve(stream_cfg.final_beam, tuning.final_beam)),
            language,
            vocabulary,
            script,
            paced=stream_cfg.partial_interval_ms == "auto",
        )


@dataclass
class _Context:
    """The last published final: Whisper's previous-text prompt for the next utterance.

    Pauses split sentences into short utterances; without the words said just
    before, a fragment like "ask not ..." is misheard far more often.
    """

    tokens: tuple[int, ...] = ()
    end: int = 0  # stream position where that final ended
    breaks: int = 0  # breaks in the audio before that final's speech

    def prompt_for(self, start: int, breaks: int) -> tuple[int, ...]:
        """The tokens, for an utterance starting at `start` soon after them with no break in the audio
        between (`breaks`: those before its speech): a microphone back after hours is not the same
        conversation, and the stream's clock does not count the hours. Counted, not placed: with
        finals queued, a second break hid the first from a check of the latest one's position."""
        if breaks != self.breaks:
            return ()
        return self.tokens if start - self.end <= CONTEXT_MAX_GAP_S * SAMPLE_RATE else ()


FAILURES_BEFORE_FAILING = 10  # decodes in a row that raised before `failing_s` counts


@dataclass
class _Failures:
    """Decodes that raised: all of them, and the run of them since the last one that worked.

    The first of a run is logged with its traceback, then only the 10th, 100th, ... of it: a backend
    that failed every call wrote a traceback per partial, five a second while people spoke, and
    nothing else told of it (the watchdog saw no decode running long)."""

    total: int = 0
    in_a_row: int = 0
    since: float = 0.0  # monotonic time of the run's first
    last: float = 0.0  # ...and of its latest: a few failures, then an hour of silence, are no broken backend
    next_report: int = 10

    def failed(self, utterance_id: int, exc: Exception) -> None:
        self.total += 1
        self.in_a_row += 1
        self.last = time.monotonic()
        if self.in_a_row == 1:
            self.since, self.next_report = self.last, 10
            log.error("recognition failed (utterance %d)", utterance_id, exc_info=exc)
        elif self.in_a_row == self.next_report:
            self.next_report *= 10
            log.error("recognition failed %d times in a row (utterance %d): %s", self.in_a_row, utterance_id,
                      one_line(exc))

    def worked(self) -> None:
        self.in_a_row = 0

    def failing_s(self) -> float:
        """From the first to the latest of a run of failed decodes, once FAILURES_BEFORE_FAILING have
        failed in a row; else 0."""
        return self.last - self.since if self.in_a_row >= FAILURES_BEFORE_FAILING else 0.0


@dataclass
class _Utterance:
    utterance_id: int
    start: int
    shown_at: int  # stream position of speech_start or of the last partial shown (its text may be unchanged)
    stabilizer: PartialStabilizer = field(default_factory=PartialStabilizer)
    last_partial_at: int | None = None  # stream position of the last partial request
    retry_partial: bool = False  # a speculative final displaced a partial: ask again at FIRST_PARTIAL_STEP_MS
    has_text: bool = False
    last_text: str = ""
    last_stable: str = ""
    speculative: Job | None = None
    # Its partials' options once the language or script changed under it (a reload): its stable text is
    # in the old one, and a hypothesis in the new one would not align with it and be appended whole.
    partial_options: object | None = None
    language: str | None = None  # under `auto`, the language its partials keep (`_keep_language`)


class StreamingSession:
    """Audio blocks in, utterance events out (through `emit`, from either thread)."""

    def __init__(
        self,
        recognizer: Recognizer,
        endpoint: EndpointSettings,
        stream: StreamSettings,
        emit: Callable[[UtteranceEvent], None],
        on_error: Callable[[str], None],
        vad: SileroVad | None = None,
        record: Callable[[int, float, np.ndarray], None] | None = None,
        overload: OverloadPolicy = OverloadPolicy(),
    ) -> None:
        """`record(utterance_id, start_s, audio)` receives each final's audio (debug recording)."""
        self._recognizer = recognizer
        self._record = record
        self._stream = stream
        self._options = self._recognizer_options(stream)
        self._kept_options: dict[str, object] = {}  # partial options per kept language, for these settings
        self._emit = emit
        self._on_error = on_error
        self._vad = vad or SileroVad()
        self._endpointer = Endpointer(endpoint)
        self._history = AudioHistory(HISTORY_S)
        self._lock = threading.RLock()
        self._settings_lock = threading.Lock()  # one settings change at a time; taken before _lock, never inside it
        self._utterance: _Utterance | None = None
        self._voiced = False  # the newest VAD window is above the threshold
        self._unpublished: list[Job] = []  # confirmed finals still being decoded, in utterance order
        self._context = _Context()
        self._breaks = 0  # breaks in the audio so far (discontinuity)
        self._next_id = 1
        self.utterances = 0
        self._overload = overload
        self._partials_suspended = 0
        self._partials_interrupted = 0
        self._partial_cpu_s = 0.0  # CPU seconds the latest partial decode took, every thread of the process
        self._finals_degraded = 0
        self._finals_dropped = 0
        self._dropped_samples = 0
        self._failures = _Failures()
        self._worker = Worker(self._run_job)

    @property
    def position_s(self) -> float:
        """Stream time of the newest audio received."""
        return self._history.end / SAMPLE_RATE

    def stats(self) -> dict:
        """Counts and the overload state (thread-safe snapshot; docs/protocol.md names every field)."""
        backlog = self._worker.backlog(self._history.end)
        return {
            "utterances": self.utterances,
            "pending_finals": self._worker.pending_finals,
            "partials_skipped": self._worker.partials_skipped + self._partials_suspended,
            "partials_interrupted": self._partials_interrupted,
            "partial_interval_ms": round(self._partial_interval_ms()),
            "lag_s": round(backlog.lag_s, 3),
            "backlog_s": round(backlog.audio_s, 3),
            "overload": self._overload.level(backlog.lag_s),
            "finals_degraded": self._finals_degraded,
            "finals_dropped": self._finals_dropped,
            "finals_dropped_s": round(self._dropped_samples / SAMPLE_RATE, 3),
            "decode_failures": self._failures.total,
        }

    def failing_s(self) -> float:
        """Seconds every decode has failed (0 while they work): a watchdog restarts such a service."""
        return self._failures.failing_s()

    @property
    def pending_finals(self) -> int:
        return self._worker.pending_finals

    def decode_busy_s(self) -> float:
        """Seconds the current decode has run; a watchdog uses it to spot a wedged backend."""
        return self._worker.busy_s()

    def _recognizer_options(self, stream: StreamSettings) -> dict[str, object]:
        """The recognizer's options for partials and finals, made once per settings change."""
        return {"partial": self._decode_options(stream, 1, stream.language),
                "final": self._decode_options(stream, stream.final_beam, stream.language)}

    def _decode_options(self, stream: StreamSettings, beam_size: int, language: str) -> object:
        """The recognizer's options for one kind of decode under `stream`, in `language`."""
        return self._recognizer.options(beam_size=beam_size, language=language, vocabulary=stream.vocabulary,
                                        script=stream.script)

    @property
    def settings(self) -> StreamSettings:
        """The settings in use (a reload or an app's list replaces them whole)."""
        return self._stream

    def set_vocabulary(self, vocabulary: Vocabulary) -> bool:
        """Use another list from the next decode on (the model is not reloaded); False if it is the list in use."""
        with self._settings_lock:
            return self._use(replace(self._stream, vocabulary=vocabulary))

    def set_terms(self, terms: tuple[Term, ...], source: Source) -> bool:
        """Another list with the bonus and prompt in use (an app's request: a reload racing it keeps its settings)."""
        with self._settings_lock:
            return self._use(replace(self._stream, vocabulary=self._stream.vocabulary.with_terms(terms, source)))

    def update_settings(self, endpoint: EndpointSettings, stream: StreamSettings) -> None:
        """Apply reloaded `vad.*` / `stream.*` values from the next window on."""
        with self._settings_lock:
            self._use(stream, endpoint)

    def _use(self, stream: StreamSettings, endpoint: EndpointSettings | None = None) -> bool:
        """Switch to `stream` (caller holds _settings_lock). Its options are made first, outside the
        audio lock: a 500-term prefix tree takes ~35 ms, and a list the tokenizer refuses must leave
        the settings in use whole."""
        if stream == self._stream and endpoint is None:
            return False
        options = self._recognizer_options(stream)
        with self._lock:
            if endpoint is not None:
                self._endpointer.settings = endpoint
            if self._utterance and self._utterance.partial_options is None and _writing(stream) != _writing(self._stream):
                self._utterance.partial_options = self._options["partial"]
            self._stream, self._options, self._kept_options = stream, options, {}
        return True

    def feed(self, block: np.ndarray) -> None:
        """Called for every audio block, in order; never waits for recognition."""
        with self._lock:
            self._history.append(block, self._endpointer.earliest_start())
            for probability in self._vad.feed(block):
                self._voiced = probability >= self._endpointer.settings.threshold
                for boundary in self._endpointer.update(probability):
                    self._on_boundary(boundary)
            self._maybe_request_partial()

    def finish(self, quick: bool = False) -> None:
        """End any utterance in progress now; its final is queued.

        `quick` (shutdown, which has a deadline): decode that final greedily.
        """
        if quick:
            with self._settings_lock:
                self._use(replace(self._stream, final_beam=1))
        with self._lock:
            self._end_utterance()

    def discontinuity(self) -> None:
        """The audio broke off (a microphone lost): end the utterance in progress now, and hear what comes
        next afresh. Its final used to wait for the device to come back (hours, or never) and then join
        the speech from both sides of the gap, with Silero's state carried across it."""
        with self._lock:
            self._end_utterance()
            self._vad.reset()
            self._endpointer.resume_at(self._history.end)
            self._breaks += 1

    def _end_utterance(self) -> None:
        """The utterance in progress ends at the audio's end (caller holds _lock)."""
        for boundary in self._endpointer.flush(self._history.end):
            self._on_boundary(boundary)

    def drain(self, timeout: float | None) -> bool:
        """Wait until every queued final has been decoded and emitted."""
        return self._worker.wait_idle(timeout)

    def give_up(self) -> None:
        """Shutdown deadline: publish each final still being decoded with its newest partial's text."""
        with self._lock:
            for job in list(self._unpublished):
                _cancel(job)
                job.text = job.fallback_text
                self._publish_final(job)

    def close(self, timeout: float = 1.0) -> None:
        self._worker.stop(timeout)

    def _on_boundary(self, boundary: Boundary) -> None:
        if boundary.kind == "start":
            self._begin(boundary.start)
        elif boundary.kind == "pause":
            self._speculate(boundary.start, boundary.end)
        elif boundary.kind == "resume":
            self._cancel_speculation()
        else:
            self._end(boundary.start, boundary.end)

    def _begin(self, start: int) -> None:
        self._utterance = _Utterance(self._next_id, start, shown_at=self._history.end)
        self._next_id += 1
        self.utterances += 1
        self._emit(SpeechStart(audio_time_s=self.position_s, utterance_id=self._utterance.utterance_id, start_s=_s(start)))

    def _final_job(self, utterance_id: int, start: int, end: int) -> Job:
        """The interrupt stops its decode once nobody wants it (speech resumed, or shutdown gave up on it)."""
        audio = self._history.slice(start, end)
        return Job("final", utterance_id, start, end, audio, options=self._options["final"], interrupt=Interrupt(),
                   breaks=self._breaks)

    def _speculate(self, start: int, end: int) -> None:
        """Decode the final now, in case the pause turns out to be the end."""
        assert self._utterance is not None
        self._cancel_speculation()
        job = self._final_job(self._utterance.utterance_id, start, end)
        job.preempts = self._caption_fresh(self._utterance)
        self._utterance.speculative = job
        # or: a second pause before the first one's retried partial was asked for keeps the quick retry
        self._utterance.retry_partial = self._submit_final(job) or self._utterance.retry_partial

    def _caption_fresh(self, utterance: _Utterance) -> bool:
        """A partial was shown (or speech_start sent) less than PREEMPT_STALE_INTERVALS partial intervals ago."""
        fresh_ms = PREEMPT_STALE_INTERVALS * self._partial_interval_ms()
        return self._history.end - utterance.shown_at < fresh_ms * SAMPLE_RATE // 1000

    def _cancel_speculation(self) -> None:
        """Speech resumed: stop the speculative decode. If it displaced a partial, the next one comes as soon as
        an utterance's first partials do (a VAD flapping every window must not turn that into a partial a window)."""
        if self._utterance and self._utterance.speculative:
            _cancel(self._utterance.speculative)
            self._utterance.speculative = None

    def _end(self, start: int, end: int) -> None:
        utterance = self._utterance
        assert utterance is not None
        self._utterance = None
        self._emit(SpeechEnd(audio_time_s=self.position_s, utterance_id=utterance.utterance_id, start_s=_s(start), end_s=_s(end)))
        # A speculative final ran to the end of the pause's first silent window, and the utterance ends at or
        # after that window's start: an end inside it (speech_pad_ms under 32 ms, or max_utterance_s reached
        # in the pause) only leaves out a part of a window the VAD heard no speech in, so its text stands.
        job = utterance.speculative
        if job is None:
            job = self._final_job(utterance.utterance_id, start, end)
            self._submit_final(job)
        self._worker.interrupt_partial()  # a speculative final that let it run: its text can no longer be shown
        job.end = end  # the utterance owns the padding
        job.confirmed = True
        job.fallback_text = utterance.last_text
        self._unpublished.append(job)
        self._publish_ready()

    def _submit_final(self, job: Job) -> bool:
        """Queue a final; the queued ones that have waited past `max_lag_s` are dropped to make way for it.
        True if it displaced a partial (dropped from the queue, or interrupted)."""
        for stale in self._worker.shed(self._history.end - self._overload.max_lag_s * SAMPLE_RATE):
            self._drop(stale)
        return self._worker.submit(job)

    def _drop(self, job: Job) -> None:
        """A final that will not be decoded: its newest partial stands in, marked `dropped` (docs/protocol.md)."""
        job.text, job.dropped = job.fallback_text, True
        self._finals_dropped += 1
        self._dropped_samples += job.end - job.start
        log.warning("recognition is more than %.0f s behind: utterance %d (%.1f s of speech) dropped undecoded",
                    self._overload.max_lag_s, job.utterance_id, (job.end - job.start) / SAMPLE_RATE)
        self._publish_ready()

    def _publish_ready(self) -> None:
        """Publish the finals that have their text, in utterance order (a dropped one may be ready before the one
        being decoded)."""
        while self._unpublished and self._unpublished[0].text is not None:
            self._publish_final(self._unpublished[0])

    def _maybe_request_partial(self) -> None:
        utterance = self._utterance
        # Not at a dip in the speech either: the final may be due next and must not queue behind a partial.
        if utterance is None or not self._voiced or utterance.speculative is not None:
            return
        now = self._history.end
        step_ms = self._partial_interval_ms() if utterance.has_text and not utterance.retry_partial else min(
            FIRST_PARTIAL_STEP_MS, self._stream.partial_interval_ms
        )
        if utterance.last_partial_at is not None and now - utterance.last_partial_at < step_ms * SAMPLE_RATE // 1000:
            return
        if self._worker.backlog(now).lag_s >= self._overload.partials_off_s:  # the recognizer's time goes to finals
            utterance.last_partial_at = now
            self._partials_suspended += 1 + self._worker.drop_partial()  # the one waiting is stale as well
            return
        if self._worker.partial_pending:
            return
        utterance.last_partial_at, utterance.retry_partial = now, False
        audio = self._history.slice(utterance.start, now)
        options = self._partial_options(utterance)
        self._worker.submit(Job("partial", utterance.utterance_id, utterance.start, now, audio, options=options,
                                interrupt=Interrupt(), breaks=self._breaks))

    def _partial_interval_ms(self) -> float:
        """Time between an utterance's partials once it has text: `stream.partial_interval_ms`, and under `auto`
        at least the latest partial's CPU time / PARTIAL_CPU_SHARE (a slow CPU shows partials less often rather
        than spend more than a core while people speak; an utterance's first partials are not held back)."""
        paced_ms = 1000 * self._partial_cpu_s / PARTIAL_CPU_SHARE if self._stream.paced else 0.0
        return max(float(self._stream.partial_interval_ms), paced_ms)

    def _run_job(self, job: Job) -> None:
        """Worker thread: decode, then hand the text over under the session lock."""
        began, cpu = time.monotonic(), time.process_time()
        with self._lock:
            context = self._context.prompt_for(job.start, job.breaks)
            quick = job.kind == "partial" or self._late(job)
        try:
            transcript = self._recognizer.transcribe(job.audio, partial=quick, context=context, options=job.options,
                                                     interrupt=job.interrupt)
            text, tokens, language = transcript.text.strip(), transcript.tokens, transcript.language
            sure = transcript.language_prob >= KEEP_LANGUAGE_PROB
            self._failures.worked()
        except Exception as exc:  # a failed decode must not kill the worker thread
            if isinstance(exc, Interrupted) and (job.kind == "partial" or job.cancelled):  # nobody wants it now
                with self._lock:
                    self._partials_interrupted += job.kind == "partial"
                return
            self._failures.failed(job.utterance_id, exc)
            job.failure = f"recognition failed for utterance {job.utterance_id}: {exc}"
            text, tokens, language, sure = "", (), "", False
        with self._lock:
            if job.kind == "partial":
                self._partial_cpu_s = time.process_time() - cpu
                self._publish_partial(job, text, language if sure else "")
            elif not job.cancelled:
                job.text, job.tokens, job.language, job.decode_s = text, tokens, language, time.monotonic() - began
                if job.confirmed:
                    self._publish_ready()

    def _late(self, job: Job) -> bool:
        """A final whose speech ended `greedy_s` ago or more is decoded like a partial: one greedy pass, no
        temperature fallback (tiny.en: half the time of its beam 5; base: 10 % less than beam 2)."""
        if (self._history.end - job.end) / SAMPLE_RATE < self._overload.greedy_s:
            return False
        self._finals_degraded += 1
        return True

    def _publish_partial(self, job: Job, text: str, sure_language: str) -> None:
        """Shown while its utterance lasts, in a pause too: a partial a stale caption kept through a dip
        (PREEMPT_STALE_INTERVALS) is the text the room waited for, and speech_end has not been sent yet."""
        utterance = self._utterance
        if utterance is None or utterance.utterance_id != job.utterance_id or not text:
            return
        self._keep_language(utterance, sure_language)
        stable, shown = utterance.stabilizer.update(text)
        utterance.has_text, utterance.shown_at = True, self._history.end
        if (shown, stable) == (utterance.last_text, utterance.last_stable):
            return  # a partial whose stable part grew is sent: a caption draws it settled
        utterance.last_text, utterance.last_stable = shown, stable
        self._emit(Partial(audio_time_s=self.position_s, utterance_id=job.utterance_id, text=shown, stable_text=stable,
                           start_s=_s(job.start), end_s=_s(job.end)))

    def _keep_language(self, utterance: _Utterance, sure_language: str) -> None:
        """Under `auto` with a multilingual model, the first language a partial is sure of (KEEP_LANGUAGE_PROB)
        holds for the utterance's later partials: each detected its own, a Mandarin one read as `ja` kept
        traditional characters, and the stabilizer appended it whole to the simplified stable text. The
        final still detects on all of it."""
        if utterance.language is None and self._stream.language == "auto" and len(self._recognizer.languages) > 1 \
                and sure_language in self._recognizer.languages:
            utterance.language = sure_language

    def _partial_options(self, utterance: _Utterance) -> object:
        """The options of the utterance's next partial: a reload's, its kept language's (made once per
        settings: an app's new list applies from the next partial on), or the stream's."""
        if utterance.partial_options is not None:
            return utterance.partial_options
        if utterance.language is None:
            return self._options["partial"]
        if utterance.language not in self._kept_options:
            self._kept_options[utterance.language] = self._decode_options(self._stream, 1, utterance.language)
        return self._kept_options[utterance.language]

    def _publish_final(self, job: Job) -> None:
        """Every utterance's one final, empty text included; only a final with text becomes the next one's context
        (an empty one would drop the words said just before)."""
        self._unpublished.remove(job)
        if job.failure:  # only now: a speculative decode that failed is replaced if the speech goes on
            self._on_error(job.failure)
        if self._record is not None:
            self._record(job.utterance_id, job.start / SAMPLE_RATE, job.audio)
        text = job.text or ""
        if text:
            self._context = _Context(job.tokens, job.end, job.breaks)
        self._emit(Final(audio_time_s=self.position_s, utterance_id=job.utterance_id, text=text,
                         start_s=_s(job.start), end_s=_s(job.end), language=job.language, decode_s=job.decode_s,
                         dropped=job.dropped))


def _cancel(job: Job) -> None:
    """A final nobody will publish: its decode, if running, stops."""
    job.cancelled = True
    if job.interrupt is not None:
        job.interrupt.set()


def _s(position: int) -> float:
    """A stream position in seconds, as events carry it (millisecond precision)."""
    return round(position / SAMPLE_RATE, 3)


def _writing(stream: StreamSettings) -> tuple[str, str]:
    """What a partial's text is written in: its language and Chinese script."""
    return stream.language, stream.script
