"""Microphone capture through a real PortAudio/PulseAudio path (tests/virtual_mic.py),
plus the device-resolution rules that need no audio server."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest
import sounddevice as sd

from edge.audio import mic as capture
from edge.audio.audiofile import load_audio
from edge.backoff import Backoff
from edge.audio.mic import (
    CaptureError,
    DeviceNotFoundError,
    InputDevice,
    MicSource,
    StreamFormat,
    find_device,
    stream_format,
)
from tests.conftest import EVAL_DIR
from tests.virtual_mic import open_virtual_mic

SPEECH = EVAL_DIR / "real_en" / "speechbrain_spk1_snt1.wav"  # 2.9 s


def audio_cfg(**overrides: object) -> SimpleNamespace:
    values = dict(device="pulse", sample_rate="native", channels="native", block_ms=20,
                  ring_buffer_s=5.0, stall_timeout_ms=400, reopen_backoff_max_s=1.0)  # fmt: skip
    values.update(overrides)
    return SimpleNamespace(**values)


def capture_for(source: MicSource, seconds: float) -> np.ndarray:
    blocks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        block = source.read(0.2)
        if block is not None:
            blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def wait_for_state(source: MicSource, state: str, within_s: float) -> float:
    """Keep reading until `source` reaches `state`; returns how long it took."""
    start = time.monotonic()
    while source.stats().state != state:
        assert time.monotonic() - start < within_s, f"still {source.stats().state!r}, wanted {state!r}"
        source.read(0.05)
    return time.monotonic() - start


def alignment(captured: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of `reference` with `captured` at their best lag."""
    assert captured.shape[0] > reference.shape[0], "capture shorter than the file played"
    size = captured.shape[0] + reference.shape[0]
    xcorr = np.fft.irfft(np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(xcorr[: captured.shape[0] - reference.shape[0] + 1]))
    return float(np.corrcoef(captured[lag : lag + reference.shape[0]], reference)[0, 1])


def play_and_capture(mic, source: MicSource, seconds: float) -> np.ndarray:
    mic.play(SPEECH)
    return capture_for(source, seconds)


@pytest.fixture
def speech(eval_dir) -> np.ndarray:
    """Skipped only without the eval data; a clip missing from it fails (load_audio names it)."""
    return load_audio(SPEECH)


def test_native_capture_hears_the_played_file(virtual_mic, speech) -> None:
    source = MicSource(audio_cfg(device=virtual_mic.device))
    source.start()
    try:
        captured = play_and_capture(virtual_mic, source, 3.8)
        stats = source.stats()
    finally:
        source.close()
    # `pulse` advertises 44.1 kHz and 32 pseudo-channels: native = 44.1 kHz, capped at 2 channels
    assert (stats.rate, stats.channels) == (44100, 2)
    assert alignment(captured, speech) > 0.95
    assert stats.overflows == 0 and stats.reopens == 0
    assert stats.position_s == pytest.approx(captured.shape[0] / 16000)


def test_48k_stereo_sink_is_resampled_to_16k_mono(monkeypatch, speech) -> None:
    """PortAudio's `pulse` device cannot know the sink's format, so the config names it."""
    with open_virtual_mic(monkeypatch, rate=48000, channels=2) as mic:
        source = MicSource(audio_cfg(device=mic.device, sample_rate=48000, channels=2))
        source.start()
        try:
            block = source.read(2.0)
            captured = play_and_capture(mic, source, 3.8)
            stats = source.stats()
        finally:
            source.close()
    assert block.dtype == np.float32 and block.shape == (320,)
    assert (stats.rate, stats.channels) == (48000, 2)
    assert alignment(captured, speech) > 0.95


def test_slow_consumer_overflows_drop_oldest_and_position_tracks_wall_clock(virtual_mic) -> None:
    source = MicSource(audio_cfg(device=virtual_mic.device, ring_buffer_s=0.3))
    source.start()
    started = time.monotonic()
    try:
        time.sleep(1.2)  # the consumer stalls: about 0.9 s must be dropped
        capture_for(source, 0.5)
        elapsed = time.monotonic() - started
        stats = source.stats()
    finally:
        source.close()
    assert stats.overflows >= 1
    assert 0.6 < stats.dropped_s < 1.2
    assert stats.position_s == pytest.approx(elapsed, abs=0.25)


def test_lost_device_is_detected_and_reopened(virtual_mic, speech) -> None:
    source = MicSource(audio_cfg(device=virtual_mic.device))
    source.start()
    try:
        assert capture_for(source, 0.3).shape[0] > 0
        virtual_mic.stop()
        assert wait_for_state(source, "lost", within_s=2.0) < 1.0
        assert source.stats().reopens == 0
        virtual_mic.start()
        wait_for_state(source, "running", within_s=4.0)
        captured = play_and_capture(virtual_mic, source, 3.8)
        stats = source.stats()
    finally:
        source.close()
    assert stats.reopens == 1 and stats.lost_s > 0
    assert alignment(captured, speech) > 0.95


def test_hung_device_is_detected_by_stall_timeout_and_reopened(virtual_mic, monkeypatch) -> None:
    monkeypatch.setattr(capture, "STUCK_AFTER_S", 0.5)
    source = MicSource(audio_cfg(device=virtual_mic.device))
    source.start()
    try:
        assert capture_for(source, 0.3).shape[0] > 0
        virtual_mic.freeze()
        assert 0.35 < wait_for_state(source, "lost", within_s=2.0) < 1.0  # stall_timeout_ms=400
        for _ in range(3):  # the audio left before the hang, then timeouts
            started = time.monotonic()
            source.read(0.1)
            assert time.monotonic() - started < 0.5, "read() blocked on the hung device"
        wait_for_state(source, "stuck", within_s=3.0)  # its close hangs too: no reopen possible
        virtual_mic.thaw()
        wait_for_state(source, "running", within_s=4.0)
        assert capture_for(source, 0.3).shape[0] > 0
        assert source.stats().reopens == 1
    finally:
        source.close()


def test_absent_device_can_be_waited_for(monkeypatch) -> None:
    with open_virtual_mic(monkeypatch) as mic:
        mic.stop()
        source = MicSource(audio_cfg(device=mic.device), wait_for_device=True)
        source.start()
        try:
            assert source.read(0.2) is None
            assert source.stats().state == "waiting"
            mic.start()
            wait_for_state(source, "running", within_s=4.0)
            assert source.read(1.0) is not None
            assert source.stats().reopens == 0
        finally:
            source.close()


def test_an_absent_device_is_said_once_while_it_stays_away(monkeypatch, caplog) -> None:
    """Each retry logged a warning listing every device: with the backoff at 1 s, a line a second."""
    caplog.set_level(logging.DEBUG, logger="edge.audio.mic")
    with open_virtual_mic(monkeypatch) as mic:
        mic.stop()
        source = MicSource(audio_cfg(device=mic.device), wait_for_device=True)
        source.start()
        try:
            capture_for(source, 3.5)
            retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(retries) >= 2 and len(warnings) == 1 and "waiting for it to appear" in warnings[0].getMessage()
            mic.start()
            wait_for_state(source, "running", within_s=4.0)
        finally:
            source.close()


def test_missing_device_message_lists_the_available_ones(virtual_mic) -> None:
    source = MicSource(audio_cfg(device="usb-mic-that-is-not-there"))
    expected = r"'usb-mic-that-is-not-there': no such input device; available input devices: .*'pulse' \(44100 Hz"
    with pytest.raises(DeviceNotFoundError, match=expected):
        source.start()


class FakeStream:
    """Stands in for `sd.InputStream` so a test can drive the callback itself."""

    def __init__(self, *, callback, finished_callback, device=None, **_: object) -> None:
        self.callback, self.finished_callback = callback, finished_callback
        self.device = device
        self.active = False

    def start(self) -> None:
        self.active = True

    def close(self) -> None:
        self.active = False


def fake_stream_source(monkeypatch, **overrides: object) -> tuple[MicSource, list[FakeStream]]:
    streams: list[FakeStream] = []
    monkeypatch.setattr(capture, "rescan_devices", lambda: None)
    monkeypatch.setattr(capture, "list_input_devices", lambda: DEVICES)
    monkeypatch.setattr(capture.sd, "InputStream", lambda **kw: streams.append(FakeStream(**kw)) or streams[-1])
    source = MicSource(audio_cfg(device="pnp", sample_rate=16000, **overrides))
    source.start()
    return source, streams


def test_portaudio_overflow_flags_are_counted_and_audio_kept(monkeypatch) -> None:
    source, streams = fake_stream_source(monkeypatch)
    frames = np.full((320, 1), 0.25, np.float32)
    streams[0].callback(frames, 320, None, sd.CallbackFlags(sd._lib.paInputOverflow))
    streams[0].callback(frames, 320, None, sd.CallbackFlags())
    assert source.read(0.1).tolist() == [0.25] * 320
    assert source.stats().input_overflows == 1


def test_samples_that_are_not_numbers_are_read_as_silence_and_said_once(monkeypatch, caplog) -> None:
    """One NaN from a driver made the whole utterance's log-mel NaN (its text garbage): it is 0 now, the
    numbers around it are kept, and a driver that sends them in every block is logged once a minute."""
    caplog.set_level(logging.WARNING, logger="edge.audio.mic")
    source, streams = fake_stream_source(monkeypatch)
    frames = np.full((320, 1), 0.25, np.float32)
    frames[[3, 4, 5]] = [[np.nan], [np.inf], [-np.inf]]
    for _ in range(2):
        streams[0].callback(frames, 320, None, sd.CallbackFlags())
        block = source.read(0.1)
        assert block[3:6].tolist() == [0.0] * 3 and np.count_nonzero(block == np.float32(0.25)) == 317
    (said,) = [r.getMessage() for r in caplog.records if "not numbers" in r.getMessage()]
    assert said == "audio device 'USB PnP Sound Device: Audio (hw:1,0)' sent 3 samples that are not numbers (NaN or inf); read as silence"


def test_an_overrun_is_a_break_between_the_audio_before_and_after_it(monkeypatch, caplog) -> None:
    """A reader that fell ring_buffer_s behind lost the oldest audio, and what it had read before went out
    joined to what came after, as one speech: now the audio before the gap comes as a short block, then
    `breaks` counts the gap (the daemon ends the utterance there), then the newer audio."""
    caplog.set_level(logging.WARNING, logger="edge.audio.mic")
    source, streams = fake_stream_source(monkeypatch, ring_buffer_s=0.1)  # 1600 frames
    streams[0].callback(np.full((160, 1), 0.25, np.float32), 160, None, sd.CallbackFlags())
    assert source.read(0.05) is None  # half a block, waiting for the rest
    for _ in range(2):
        streams[0].callback(np.full((1000, 1), 0.75, np.float32), 1000, None, sd.CallbackFlags())
    assert source.read(0.1).tolist() == [0.25] * 160
    assert source.read(0.1) is None and source.breaks == 1
    after = [source.read(0.1) for _ in range(5)]
    assert [b.tolist() for b in after] == [[0.75] * 320] * 5 and source.breaks == 1
    assert source.stats().overflows == 1 and source.stats().dropped_s == pytest.approx(400 / 16000)
    (said,) = [r.getMessage() for r in caplog.records]
    assert "fell 0.1 s behind and the oldest audio was dropped" in said


def test_finished_stream_is_reopened_and_its_last_audio_is_read_out_before_the_break(monkeypatch) -> None:
    """The lost stream's last 160 samples used to wait for the new stream's and go out joined to them, as
    if no gap lay between: now they come as a short block, then `breaks` counts the gap."""
    source, streams = fake_stream_source(monkeypatch)
    streams[0].callback(np.full((480, 1), 0.5, np.float32), 480, None, sd.CallbackFlags())
    streams[0].finished_callback()
    assert source.read(0.1).shape == (320,)
    assert source.stats().state == "lost" and source.breaks == 0
    assert source.read(0.1).tolist() == [0.5] * 160  # the rest, short: nothing of it is lost
    assert source.read(0.05) is None and source.breaks == 1
    deadline = time.monotonic() + 2.0
    while len(streams) < 2:  # the first retry comes after 0.5 s
        assert source.read(0.05) is None and time.monotonic() < deadline
    streams[1].callback(np.full((320, 1), 0.75, np.float32), 320, None, sd.CallbackFlags())
    assert source.read(0.1).tolist() == [0.75] * 320
    assert source.stats().reopens == 1 and source.breaks == 1


def test_a_backlog_of_the_lost_stream_is_read_out_before_a_new_stream_opens(monkeypatch) -> None:
    """The reader 4 blocks behind when the device went: the retry came due while its audio was still being
    read out, and the new stream's audio followed it unbroken (the break counted only after both)."""
    source, streams = fake_stream_source(monkeypatch)
    streams[0].callback(np.full((4 * 320, 1), 0.5, np.float32), 4 * 320, None, sd.CallbackFlags())
    streams[0].finished_callback()
    blocks = [source.read(0.1)]
    time.sleep(0.6)  # the first retry (0.5 s) is due while three blocks are still to read
    while (block := source.read(0.1)) is not None:
        blocks.append(block)
        assert len(blocks) <= 8, "the new stream's audio is read before the lost stream's break"
        if len(streams) > 1:
            streams[-1].callback(np.full((320, 1), 0.75, np.float32), 320, None, sd.CallbackFlags())
    assert [float(b.mean()) for b in blocks] == [0.5] * 4 and source.breaks == 1 and len(streams) == 1
    source.read(0.05)  # the retry, now that the break is out
    assert len(streams) == 2


def test_a_device_busy_at_start_is_waited_for_by_the_daemon(monkeypatch) -> None:
    """Held by another process at boot: `run` exited, and systemd's 5 restarts went in a minute."""
    streams: list[FakeStream] = []

    def open_stream(**kw) -> FakeStream:
        if not streams:
            streams.append(None)
            raise sd.PortAudioError("Device unavailable", -9985)
        streams.append(FakeStream(**kw))
        return streams[-1]

    monkeypatch.setattr(capture, "rescan_devices", lambda: None)
    monkeypatch.setattr(capture, "list_input_devices", lambda: DEVICES)
    monkeypatch.setattr(capture.sd, "InputStream", open_stream)
    with pytest.raises(capture.DeviceUnavailableError, match="cannot open input device .* Device unavailable"):
        MicSource(audio_cfg(device="pnp", sample_rate=16000)).start()  # an interactive command: at once
    streams.clear()
    source = MicSource(audio_cfg(device="pnp", sample_rate=16000), wait_for_device=True)
    source.start()
    assert source.stats().state == "waiting"
    wait_for_state(source, "running", within_s=2.0)
    streams[-1].callback(np.full((320, 1), 0.5, np.float32), 320, None, sd.CallbackFlags())
    assert source.read(0.1).tolist() == [0.5] * 320
    source.close()


def test_a_device_that_opens_but_sends_nothing_keeps_its_backoff(monkeypatch) -> None:
    """The delay went back to 0.5 s at every open, so such a device was reopened (and logged) every 2.5 s
    for good. Stall timeout 0.4 s, backoff 0.5 s then 1 s (the cap)."""
    source, streams = fake_stream_source(monkeypatch)
    opened_at = [time.monotonic()]
    deadline = time.monotonic() + 5.0
    while len(streams) < 3:
        assert time.monotonic() < deadline, len(streams)
        count = len(streams)
        source.read(0.02)
        if len(streams) > count:
            opened_at.append(time.monotonic())
    assert opened_at[2] - opened_at[1] > 1.3  # 0.4 s without audio, then 1 s: not 0.4 + 0.5
    streams[2].callback(np.full((320, 1), 0.5, np.float32), 320, None, sd.CallbackFlags())
    assert source.read(0.1) is not None
    streams[2].finished_callback()
    while len(streams) < 4:  # audio came: the next loss starts from 0.5 s again
        assert time.monotonic() < deadline + 2.0
        source.read(0.02)
    source.close()


def test_a_device_given_by_index_is_found_by_its_name_after_the_indexes_shift(monkeypatch) -> None:
    """ALSA lists cards first: unplugging one moves the later indexes down, and index 3 became another device."""
    streams: list[FakeStream] = []
    devices = list(DEVICES)
    monkeypatch.setattr(capture, "rescan_devices", lambda: None)
    monkeypatch.setattr(capture, "list_input_devices", lambda: devices)
    monkeypatch.setattr(capture.sd, "InputStream", lambda **kw: streams.append(FakeStream(**kw)) or streams[-1])
    source = MicSource(audio_cfg(device=3, sample_rate=16000))
    source.start()
    try:
        assert streams[0].device == 3
        devices[:] = [InputDevice(3, "default", 44100, 32, "ALSA", True),
                      InputDevice(4, "USB PnP Sound Device: Audio (hw:1,0)", 48000, 1, "ALSA", False)]
        streams[0].finished_callback()
        deadline = time.monotonic() + 2.0
        while len(streams) < 2:
            assert time.monotonic() < deadline
            source.read(0.05)
        assert streams[1].device == 4 and source.stats().device == "USB PnP Sound Device: Audio (hw:1,0)"
        devices[:] = [InputDevice(3, "default", 44100, 32, "ALSA", True),
                      InputDevice(6, "USB PnP Sound Device: Audio (hw:2,0)", 48000, 1, "ALSA", False)]
        streams[1].finished_callback()  # replugged into another port: ALSA gave the card another number
        deadline = time.monotonic() + 3.0
        while len(streams) < 3:
            assert time.monotonic() < deadline
            source.read(0.05)
        assert streams[2].device == 6
    finally:
        source.close()


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 44100, 2, "ALSA", False),
    InputDevice(3, "USB PnP Sound Device: Audio (hw:1,0)", 48000, 1, "ALSA", False),
    InputDevice(5, "USB Audio Array (hw:2,0)", 16000, 6, "ALSA", False),
    InputDevice(7, "default", 44100, 32, "ALSA", True),
]


@pytest.mark.parametrize(
    "spec, index",
    [("default", 7), (3, 3), ("pnp", 3), ("Array", 5), ("hw:0,0", 0)],
)
def test_find_device(spec: str | int, index: int) -> None:
    assert find_device(spec, DEVICES).index == index


def test_find_device_rejects_ambiguous_and_absent() -> None:
    with pytest.raises(CaptureError, match=r"matches several input devices \(3 'USB PnP.*5 'USB Audio.*give its index"):
        find_device("usb", DEVICES)
    with pytest.raises(DeviceNotFoundError, match="audio.device 9: no such input device"):
        find_device(9, DEVICES)
    with pytest.raises(DeviceNotFoundError, match="'default': no such input device; no input devices at all"):
        find_device("default", [])


def test_stream_format_native_and_overrides() -> None:
    usb_array, alsa_default = DEVICES[2], DEVICES[3]
    assert stream_format(usb_array, "native", "native") == StreamFormat(16000, 2)
    assert stream_format(alsa_default, "native", "native") == StreamFormat(44100, 2)
    assert stream_format(DEVICES[1], "native", "native") == StreamFormat(48000, 1)
    assert stream_format(usb_array, 48000, 6) == StreamFormat(48000, 6)
    with pytest.raises(CaptureError, match="audio.channels is 8 but 'USB Audio Array.*only 6 input channels"):
        stream_format(usb_array, "native", 8)
    with pytest.raises(CaptureError, match="audio.sample_rate must be 'native' or a positive whole number, got 'auto'"):
        stream_format(usb_array, "auto", "native")


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
    jittered = Backoff(1.0, 30.0, jitter=True)
    delays = [jittered.next() for _ in range(7)]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(delays, [1, 2, 4, 8, 16, 30, 30])), delays


def test_a_repeated_fault_is_said_again_a_minute_later(monkeypatch) -> None:
    """Once a minute, not once a stream: a driver that still sends NaN an hour on is still in the journal."""
    clock = [1000.0]
    monkeypatch.setattr(capture.time, "monotonic", lambda: clock[0])
    throttle = capture.LogThrottle()
    said = []
    for step in (0.0, 1.0, 58.9, 60.0, 119.9, 120.0):
        clock[0] = 1000.0 + step
        said.append(throttle.due())
    assert said == [True, False, False, True, False, True]
