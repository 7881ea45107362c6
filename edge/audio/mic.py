"""Microphone source: PortAudio input stream -> ring buffer -> 16 kHz mono blocks.

Two threads touch a stream. The PortAudio callback only copies frames into
a preallocated `RingBuffer` (no locks, no logging, no audio allocation).
The consumer, whoever calls `read()`, owns everything else: downmix, soxr
resampling, device-loss detection and reopening. Keeping the lifecycle on
the consumer thread means no supervisor thread and no locks.

A device is lost when the stream stops, its finished callback fires, or no
frame arrives for `audio.stall_timeout_ms`. It is then reopened with
exponential backoff; PortAudio is re-initialised before every open because
it snapshots the device list at initialisation. The old stream is closed on
a helper thread (closing a hung device can block) and no reopen is tried
until that close has returned.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sounddevice as sd
import soxr

from edge.audio.base import SAMPLE_RATE, MicStats, SourceError
from edge.audio.ringbuffer import RingBuffer
from edge.backoff import Backoff

log = logging.getLogger(__name__)

# ALSA plug-in devices (`pulse`, `default`) advertise 32 pseudo-channels; a
# "native" open takes at most this many (audio.channels can ask for more).
NATIVE_CHANNELS_CAP = 2
FIRST_RETRY_S = 0.5
CLOSE_WAIT_S = 2.0
# A lost stream still closing after this long (a frozen sound server) blocks every
# reopen: the source reports "stuck", and the daemon lets systemd's watchdog restart it.
STUCK_AFTER_S = 30.0
REPEAT_LOG_S = 60.0  # a driver that sends NaN sends it in every block; a starved box overruns as often


class LogThrottle:
    """`due()` is true at most once per REPEAT_LOG_S: a fault that comes back in every block gets a line a
    minute in the journal, not one per block."""

    def __init__(self) -> None:
        self._said_at = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._said_at < REPEAT_LOG_S:
            return False
        self._said_at = now
        return True


class CaptureError(SourceError):
    """The microphone cannot be used; the message says which device and why."""


class DeviceNotFoundError(CaptureError):
    """The configured input device is not present (message lists the ones that are)."""


class DeviceUnavailableError(CaptureError):
    """The device is there but cannot be opened now (held by another process, PortAudio failing): a
    daemon waits for it as for an absent one."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    rate: int  # PortAudio's default (native) sample rate
    channels: int  # max input channels
    hostapi: str
    is_default: bool


_ALSA_CARD = re.compile(r" \(hw:\d+,\d+\)$")  # "USB PnP Sound Device: Audio (hw:1,0)": the card's number now


def rescan_devices() -> None:
    """Re-initialise PortAudio: the only way it notices devices that (re)appeared."""
    try:
        if sd._initialized:  # a failed _initialize() left it at 0: _terminate() would fail on every retry
            sd._terminate()
        sd._initialize()
    except sd.PortAudioError as exc:
        raise DeviceUnavailableError(f"cannot re-initialise PortAudio: {exc}") from None


def _default_input_index() -> int:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError):
        return -1


def list_input_devices() -> list[InputDevice]:
    """Every PortAudio device with at least one input channel."""
    default = _default_input_index()
    hostapis = sd.query_hostapis()
    return [
        InputDevice(
            index=int(dev["index"]),
            name=str(dev["name"]),
            rate=int(dev["default_samplerate"]),
            channels=int(dev["max_input_channels"]),
            hostapi=str(hostapis[dev["hostapi"]]["name"]),
            is_default=int(dev["index"]) == default,
        )
        for dev in sd.query_devices()
        if dev["max_input_channels"] > 0
    ]


def describe_devices(devices: list[InputDevice]) -> str:
    """One line naming every input device, for error messages."""
    if not devices:
        return "no input devices at all"
    listed = ", ".join(f"{d.index} '{d.name}' ({d.rate} Hz, {d.channels} ch)" for d in devices)
    return f"available input devices: {listed}"


def find_device(spec: str | int, devices: list[InputDevice]) -> InputDevice:
    """Resolve `audio.device` (`default`, an index, or a name substring) to one device."""
    if isinstance(spec, int):
        matches = [d for d in devices if d.index == spec]
    elif spec == "default":
        matches = [d for d in devices if d.is_default]
    else:
        exact = [d for d in devices if d.name == spec]
        matches = exact or [d for d in devices if spec.lower() in d.name.lower()]
    if len(matches) > 1:
        names = ", ".join(f"{d.index} '{d.name}'" for d in matches)
        raise CaptureError(f"audio.device {spec!r} matches several input devices ({names}): give its index")
    if not matches:
        raise DeviceNotFoundError(f"audio.device {spec!r}: no such input device; {describe_devices(devices)}")
    return matches[0]


@dataclass(frozen=True)
class StreamFormat:
    rate: int
    channels: int


def _setting(value: Any, key: str) -> int | None:
    """`native` -> None, a positive whole number -> itself, anything else is a clear error."""
    if value == "native":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise CaptureError(f"audio.{key} must be 'native' or a positive whole number, got {value!r}")


def stream_format(device: InputDevice, sample_rate: Any, channels: Any) -> StreamFormat:
    """The capture format: the device's native one unless the config overrides it."""
    rate = _setting(sample_rate, "sample_rate") or device.rate
    wanted = _setting(channels, "channels")
    if wanted is not None and wanted > device.channels:
        raise CaptureError(f"audio.channels is {wanted} but '{device.name}' has only {device.channels} input channels")
    return StreamFormat(rate, wanted or min(device.channels, NATIVE_CHANNELS_CAP))


class _OpenStream:
    """One running PortAudio stream, the ring its callback fills and its resampler."""

    def __init__(self, device: InputDevice, fmt: StreamFormat, block_ms: int, ring_s: float) -> None:
        self.device = device
        self.format = fmt
        self.ring = RingBuffer(max(1, round(ring_s * fmt.rate)), fmt.channels)
        self.finished = False  # set by PortAudio's thread only
        self.input_overflows = 0  # set by PortAudio's thread only
        self._nonfinite_log = LogThrottle()
        self._resampler = None if fmt.rate == SAMPLE_RATE else soxr.ResampleStream(fmt.rate, SAMPLE_RATE, 1, "float32")
        stream = None
        try:
            stream = sd.InputStream(
                device=device.index,
                samplerate=fmt.rate,
                channels=fmt.channels,
                dtype="float32",
                blocksize=max(1, round(fmt.rate * block_ms / 1000)),
                callback=self._callback,
                finished_callback=self._on_finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            if stream is not None:
                stream.close()
            where = f"{device.index} '{device.name}' at {fmt.rate} Hz x {fmt.channels} ch"
            raise DeviceUnavailableError(f"cannot open input device {where}: {exc}") from None
        self.stream = stream

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: sd.CallbackFlags) -> None:
        if status.input_overflow:
            self.input_overflows += 1
        self.ring.write(indata)

    def _on_finished(self) -> None:
        self.finished = True

    def alive(self) -> bool:
        return not self.finished and self.stream.active

    def pull(self, max_frames: int | None = None) -> np.ndarray:
        """Up to `max_frames` of the ring, downmixed and resampled to 16 kHz mono."""
        frames = self.ring.read(max_frames)
        mono = self._finite(np.ascontiguousarray(frames.mean(axis=1) if self.format.channels > 1 else frames[:, 0]))
        return self._resampler.resample_chunk(mono) if self._resampler else mono

    def _finite(self, audio: np.ndarray) -> np.ndarray:
        """NaN and inf samples (a driver's bad float frames) as silence: one of them made the whole utterance's
        log-mel NaN, and its text garbage, while Silero still heard speech. A line a minute at most says so."""
        bad = ~np.isfinite(audio)
        if bad.any():
            audio[bad] = 0.0
            if self._nonfinite_log.due():
                log.warning("audio device '%s' sent %d samples that are not numbers (NaN or inf); read as silence",
                            self.device.name, np.count_nonzero(bad))
        return audio

    def flush(self) -> np.ndarray:
        """The ring's rest plus the resampler's tail: the stream is going away."""
        head = self.pull()
        if self._resampler is None:
            return head
        return np.concatenate((head, self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)))

    @property
    def dropped_s(self) -> float:
        return self.ring.dropped / self.format.rate

    def close_in_background(self) -> threading.Thread:
        """Close on a helper thread: closing a wedged device (e.g. a hung sound
        server) can block for as long as it stays wedged."""
        closer = threading.Thread(target=self.stream.close, name="edge-capture-close", daemon=True)
        closer.start()
        return closer


class MicSource:
    """`AudioSource` for the configured microphone (see module docstring).

    `read()` returns blocks of exactly `audio.block_ms`, but for the last audio before a
    gap (shorter), after which `breaks` counts one more: a stream that was lost, or audio an
    overrun dropped (the reader fell `audio.ring_buffer_s` behind). `position_s` is the stream
    time at the end of the last block delivered.

    `wait_for_device=True` (a kiosk daemon waiting for its USB microphone)
    keeps retrying with backoff when the device is absent or cannot be opened at start
    (busy at boot: exiting instead spent systemd's 5 restarts in a minute, and the unit
    stayed down); `False` (interactive commands) raises at once.
    """

    ended = False  # a microphone never runs out
    can_wait = False  # audio not read in time is lost

    def __init__(self, audio_cfg: Any, *, wait_for_device: bool = False) -> None:
        self._cfg = audio_cfg
        self._wait = wait_for_device
        self._block = max(1, round(SAMPLE_RATE * audio_cfg.block_ms / 1000))
        self._stall_s = audio_cfg.stall_timeout_ms / 1000
        self._backoff = Backoff(FIRST_RETRY_S, audio_cfg.reopen_backoff_max_s)
        self._open: _OpenStream | None = None
        self._closer: threading.Thread | None = None
        self._closing_since = 0.0
        self._chunk = 0  # device frames pulled per step: about one block
        self._pending = np.zeros(0, np.float32)
        self._state = "idle"
        self._device_name = str(audio_cfg.device)
        self._retry_at = 0.0
        self._seen_written = 0
        self._last_data = 0.0
        self._delivered = 0
        self._closed_dropped_s = 0.0
        self._closed_overruns = 0
        self._closed_input_overflows = 0
        self._lost_s = 0.0
        self._reopens = 0
        self._said: str | None = None  # the last reopen failure put in the journal
        self._pinned: str | None = None  # the name of the device an index named at the first open
        self._break_at: int | None = None  # frames of `_pending` before a gap (lost stream, overrun)
        self._gap_log = LogThrottle()
        self._counting = threading.Lock()  # stats() runs on the publisher's thread while a stream retires
        self.breaks = 0

    def start(self) -> None:
        """Open the device; absent device: raise, or wait for it (see class docstring)."""
        if self._state != "idle":
            raise CaptureError(f"start() called twice (state {self._state})")
        try:
            self._connect()
        except (DeviceNotFoundError, DeviceUnavailableError) as exc:
            if not self._wait:
                raise
            log.warning("%s; waiting for it to appear", exc)
            self._said = str(exc)
            self._schedule_retry("waiting")

    def read(self, timeout: float) -> np.ndarray | None:
        """The next 16 kHz mono block of `audio.block_ms`, or None after `timeout` seconds."""
        if self._state in ("idle", "closed"):
            raise CaptureError(f"read() on a microphone source that is {self._state}")
        deadline = time.monotonic() + timeout
        poll_s = self._block / SAMPLE_RATE / 2
        while True:
            self._service()
            if self._break_at == 0:  # the audio before the gap is all out: what comes next is not its sequel
                self._break_at = None
                self.breaks += 1
                return None  # the reader sees the break before any audio after the gap
            if self._pending.shape[0] >= self._block or self._break_at is not None:
                return self._take()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(remaining, poll_s))

    @property
    def position_s(self) -> float:
        """Stream time: audio delivered plus audio dropped by overruns or lost with the device."""
        return self._position_s(self._open)

    def stats(self) -> MicStats:
        with self._counting:  # a retiring stream's counts are either its own or the closed ones, never both
            return self._stats(self._open)

    def _stats(self, current: _OpenStream | None) -> MicStats:
        return MicStats(
            device=self._device_name,
            state=self._reported_state(),
            rate=current.format.rate if current else None,
            channels=current.format.channels if current else None,
            overflows=self._closed_overruns + (current.ring.overruns if current else 0),
            input_overflows=self._closed_input_overflows + (current.input_overflows if current else 0),
            dropped_s=self._dropped_s(current),
            lost_s=self._lost_s,
            reopens=self._reopens,
            position_s=self._position_s(current),
        )

    def close(self) -> None:
        if self._open is not None:
            self._retire()
        if self._closer is not None:
            self._closer.join(CLOSE_WAIT_S)
            if self._closer.is_alive():
                log.warning("audio device '%s' did not close in %.0f s; abandoning it", self._device_name, CLOSE_WAIT_S)
        self._state = "closed"

    def _reported_state(self) -> str:
        closing = self._open is None and self._closer is not None and self._closer.is_alive()
        if closing and time.monotonic() - self._closing_since > STUCK_AFTER_S:
            return "stuck"
        return self._state

    def _dropped_s(self, current: _OpenStream | None) -> float:
        return self._closed_dropped_s + (current.dropped_s if current else 0.0)

    def _position_s(self, current: _OpenStream | None) -> float:
        return self._delivered / SAMPLE_RATE + self._dropped_s(current) + self._lost_s

    def _connect(self) -> None:
        """Open the configured device. An index names a device only at the first open: unplugging a USB
        card shifts ALSA's later indexes down, so a reopen looks for the device by the name it had."""
        rescan_devices()
        device = find_device(self._pinned or self._cfg.device, list_input_devices())
        if isinstance(self._cfg.device, int):
            self._pinned = _ALSA_CARD.sub("", device.name)  # replugged, a card may come back as another number
        fmt = stream_format(device, self._cfg.sample_rate, self._cfg.channels)
        self._open = _OpenStream(device, fmt, self._cfg.block_ms, self._cfg.ring_buffer_s)
        self._chunk = -(-self._block * fmt.rate // SAMPLE_RATE)
        self._device_name = device.name
        self._seen_written = 0
        self._last_data = time.monotonic()
        self._state = "running"
        log.info("capturing from %d '%s' at %d Hz x %d ch", device.index, device.name, fmt.rate, fmt.channels)

    def _service(self) -> None:
        """Move about a block of ring audio to `_pending` (a backlog stays in the ring,
        where overruns are counted); detect a lost device; retry opening when due."""
        if self._break_at is not None:
            return  # not before the audio ahead of a gap is read out: a new stream's would join it unbroken
        if self._open is None:
            if self._closer is not None and self._closer.is_alive():
                return  # re-initialising PortAudio under a closing stream would block or crash
            if self._state in ("lost", "waiting") and time.monotonic() >= self._retry_at:
                self._reconnect()
            return
        self._pull_block()
        reason = self._loss_reason()
        if reason:
            log.warning("audio device '%s' lost (%s); reopening with backoff", self._device_name, reason)
            self._retire()
            self._break_at = self._pending.shape[0]
            self._schedule_retry("lost")

    def _pull_block(self) -> None:
        """Top `_pending` up to a block; an overrun on the way marks a gap where the dropped audio was."""
        ring = self._open.ring
        while self._pending.shape[0] < self._block and ring.available():
            overruns = ring.overruns
            chunk = self._open.pull(self._chunk)
            if ring.overruns != overruns:
                self._break_at = self._pending.shape[0]
                self._say_gap(ring.dropped / self._open.format.rate)
            self._pending = np.concatenate((self._pending, chunk))
            if self._break_at is not None:
                return

    def _say_gap(self, dropped_s: float) -> None:
        """An overrun ends the utterance in progress at the gap (its two sides used to be joined as one
        speech); said at most once a minute, since a starved box overruns again and again."""
        if self._gap_log.due():
            log.warning("audio device '%s': the reader fell %.1f s behind and the oldest audio was dropped "
                        "(%.1f s in all on this stream); the speech on either side is heard apart",
                        self._device_name, self._cfg.ring_buffer_s, dropped_s)

    def _loss_reason(self) -> str | None:
        written = self._open.ring.frames_written
        now = time.monotonic()
        if written != self._seen_written:
            if self._seen_written == 0:  # audio at last: a device that opens but sends none keeps its backoff
                self._backoff.reset()
                self._said = None
            self._seen_written, self._last_data = written, now
        if not self._open.alive():
            return "stream stopped"
        if now - self._last_data > self._stall_s:
            return f"no audio for {self._stall_s * 1000:.0f} ms"
        return None

    def _retire(self) -> None:
        """Keep the closing stream's audio and counters, then close it."""
        gone = self._open
        self._pending = np.concatenate((self._pending, gone.flush()))
        with self._counting:
            self._closed_dropped_s += gone.dropped_s
            self._closed_overruns += gone.ring.overruns
            self._closed_input_overflows += gone.input_overflows
            self._open = None
        self._closer = gone.close_in_background()
        self._closing_since = time.monotonic()

    def _schedule_retry(self, state: str) -> float:
        delay = self._backoff.next()
        self._state = state
        self._retry_at = time.monotonic() + delay
        return delay

    def _reconnect(self) -> None:
        was_lost_at = self._last_data if self._state == "lost" else None
        try:
            self._connect()
        except CaptureError as exc:
            self._say_failure(str(exc), self._schedule_retry(self._state))
            return
        if was_lost_at is not None:
            with self._counting:
                self._lost_s += self._last_data - was_lost_at
                self._reopens += 1

    def _say_failure(self, problem: str, retry_s: float) -> None:
        """A reopen failure as a warning when it is new, then at debug level: each one lists every device,
        and with the backoff at its cap (30 s; 1 s allowed) an absent microphone filled the journal."""
        if problem == self._said:
            log.debug("%s; retrying in %.1f s", problem, retry_s)
        else:
            log.warning("%s; retrying in %.1f s (said once while it lasts; `edge-asr status` shows the state)",
                        problem, retry_s)
        self._said = problem

    def _take(self) -> np.ndarray:
        """A block, or the shorter rest before a gap."""
        size = self._block if self._break_at is None else min(self._block, self._break_at)
        block, self._pending = self._pending[:size], self._pending[size:]
        self._delivered += size
        if self._break_at is not None:
            self._break_at -= size
        return block
