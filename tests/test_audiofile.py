"""AudioReader and load_audio: any WAV/FLAC rate and channel count in, 16 kHz mono float32 out, block by block;
clear errors otherwise."""

from __future__ import annotations

import os
import stat
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio.audiofile import READ_SAMPLES, AudioFileError, AudioReader, load_audio
from edge.audio.base import SAMPLE_RATE


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24")])
def test_any_rate_and_channel_count_becomes_16k_mono(tmp_path, rate, channels, fmt, subtype):
    tone = _tone(rate, 1.0)
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, np.repeat(tone[:, None], channels, axis=1), rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - SAMPLE_RATE) <= 2
    assert abs(_dominant_hz(audio) - 440.0) < 2.0
    assert 0.45 < np.abs(audio).max() < 0.55


def test_downmix_averages_channels(tmp_path):
    left = _tone(SAMPLE_RATE, 0.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-6)


def test_real_eval_clip_loads(eval_dir):
    audio = load_audio(eval_dir / "real_en" / "jfk.wav")
    assert len(audio) == 11 * SAMPLE_RATE


def _cut_in_half(path: Path) -> Path:
    """The first half of a written file: what a full disk or an interrupted copy leaves."""
    cut = path.with_name("cut" + path.suffix)
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _truncated_wav(tmp_path: Path) -> Path:
    sf.write(tmp_path / "whole.wav", _tone(SAMPLE_RATE, 1.0), SAMPLE_RATE)
    return _cut_in_half(tmp_path / "whole.wav")


def _truncated_flac(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE * 2)
    sf.write(tmp_path / "whole.flac", noise, SAMPLE_RATE, format="FLAC")
    return _cut_in_half(tmp_path / "whole.flac")


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    return path


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    return path


def _no_samples(tmp_path: Path) -> Path:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.float32), SAMPLE_RATE)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda tmp: tmp / "missing.wav", "no such file"),
        (lambda tmp: tmp, "is a directory"),
        (_empty_file, "is empty (0 bytes)"),
        (_text_file, "not a readable audio file"),
        (_no_samples, "no audio samples"),
        (_truncated_wav, "truncated"),
        (_truncated_flac, "damaged 0.7 s in; the audio before it was read ("),
    ],
    ids=["missing", "directory", "empty", "text", "no-samples", "truncated-wav", "truncated-flac"],
)
def test_bad_files_give_one_line_error_naming_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(AudioFileError) as err:
        load_audio(path)
    message = str(err.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_a_cut_flac_keeps_the_audio_up_to_the_cut_not_to_the_last_whole_block(tmp_path):
    """A read that meets the damage raises and returns nothing: whole blocks (4 s) lost 1.7 s of a cut 20 s FLAC."""
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, SAMPLE_RATE * 20)
    sf.write(tmp_path / "whole.flac", noise, SAMPLE_RATE, format="FLAC")
    blocks = []
    with pytest.raises(AudioFileError, match=r"cut\.flac: damaged 9\.\d s in; the audio before it was read"):
        blocks.extend(AudioReader(_cut_in_half(tmp_path / "whole.flac")))
    assert sum(map(len, blocks)) > 9.5 * SAMPLE_RATE > 2 * READ_SAMPLES


def test_libsndfiles_name_for_the_file_is_left_out(tmp_path):
    """Its "Error opening b'...mp3':" repeated the name as Python bytes."""
    path = tmp_path / "noise.mp3"
    path.write_bytes(bytes(range(256)) * 2)
    with pytest.raises(AudioFileError) as err:
        load_audio(path)
    assert str(err.value).startswith(f"{path}: not a readable audio file") and "b'" not in str(err.value)


def test_not_a_file_says_what_it_is(tmp_path, monkeypatch):
    with pytest.raises(AudioFileError, match="is a directory, not an audio file"):
        load_audio(tmp_path)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioFileError, match="not a regular file"):
        load_audio(fifo)
    readable = tmp_path / "tone.wav"
    sf.write(readable, _tone(SAMPLE_RATE, 0.5), SAMPLE_RATE)
    monkeypatch.setattr(os, "access", lambda *args: False)  # root reads anything: pretend it cannot
    with pytest.raises(AudioFileError, match="permission denied"):
        load_audio(readable)


def test_an_absurd_sample_rate_is_refused_before_decoding(tmp_path):
    path = tmp_path / "one-hertz.wav"
    sf.write(path, np.zeros(64, np.float32), 1)
    with pytest.raises(AudioFileError, match="sample rate 1 Hz is not audio"):
        load_audio(path)


def _wav_with_nan_at(tmp_path: Path, seconds: float, nan_at_s: float) -> Path:
    samples = _tone(SAMPLE_RATE, seconds)
    samples[int(nan_at_s * SAMPLE_RATE)] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    return path


def test_reader_streams_in_bounded_blocks_and_starts_again_at_each_pass(tmp_path):
    path = tmp_path / "long.wav"
    tone = _tone(44100, 30.0)
    sf.write(path, np.stack([tone, tone], axis=1), 44100, subtype="PCM_16")
    with AudioReader(path) as reader:
        assert reader.duration_s == pytest.approx(30.0)
        first, again = list(reader), list(reader)
    assert max(len(block) for block in first) < 0.8 * SAMPLE_RATE  # a read: 0.74 s of 44.1 kHz stereo
    assert len(first) > 30
    whole = np.concatenate(first)
    np.testing.assert_array_equal(whole, np.concatenate(again))
    assert abs(len(whole) - 30 * SAMPLE_RATE) <= 2 and abs(_dominant_hz(whole) - 440.0) < 2.0


def test_reader_memory_does_not_depend_on_the_file_length(tmp_path):
    path = tmp_path / "ten-minutes.wav"
    with sf.SoundFile(path, "w", 48000, 1, "PCM_16") as out:
        for _ in range(10):
            out.write(_tone(48000, 60.0))
    tracemalloc.start()
    with AudioReader(path) as reader:
        samples = sum(len(block) for block in reader)
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert samples == 600 * SAMPLE_RATE
    assert peak_mib < 2, f"{peak_mib:.1f} MiB (the decoded file is 37 MiB)"


def test_bad_header_fails_on_open_before_any_decoding(tmp_path):
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        AudioReader(_text_file(tmp_path))


def test_a_cut_wav_gives_its_audio_then_the_cut(tmp_path):
    """An interrupted copy: the audio that is there is read, then the cut is told (it was refused at open,
    losing all of it)."""
    delivered = []
    with AudioReader(_truncated_wav(tmp_path)) as reader:
        with pytest.raises(AudioFileError, match="truncated"):
            for block in reader:
                delivered.append(block)
    assert abs(sum(map(len, delivered)) - SAMPLE_RATE // 2) < SAMPLE_RATE // 100, sum(map(len, delivered))


def test_damage_further_in_is_raised_after_the_audio_before_it(tmp_path):
    path = _wav_with_nan_at(tmp_path, 12.0, 9.0)
    delivered = []
    with AudioReader(path) as reader:
        with pytest.raises(AudioFileError, match=f"{path}: contains NaN or infinite samples"):
            for block in reader:
                delivered.append(block)
    assert sum(map(len, delivered)) == 9 * SAMPLE_RATE  # every sample up to the NaN, none after
    with pytest.raises(AudioFileError, match="NaN"):
        load_audio(path)


@pytest.mark.parametrize("fmt", ["MP3", "OGG"])
def test_compressed_files_are_read_and_a_cut_one_is_told(tmp_path, fmt):
    """Their header's length is an estimate (an MP3 without a Xing frame: 0.5 % off), not a count."""
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, _tone(SAMPLE_RATE, 5.0), SAMPLE_RATE, format=fmt)
    assert abs(len(load_audio(path)) - 5 * SAMPLE_RATE) < SAMPLE_RATE // 10
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioFileError, match="truncated|cut short"):
        load_audio(cut)


def test_a_length_estimate_a_little_over_is_not_a_cut_file(tmp_path, monkeypatch):
    path = tmp_path / "tone.mp3"
    sf.write(path, _tone(SAMPLE_RATE, 5.0), SAMPLE_RATE, format="MP3")
    decoded = len(load_audio(path))
    real_frames = sf.SoundFile.frames
    monkeypatch.setattr(sf.SoundFile, "frames", property(lambda self: int(real_frames.fget(self) * 1.005)))
    assert len(load_audio(path)) == decoded  # before: "truncated", and transcribe printed nothing


def test_a_name_that_is_not_utf8_is_read(tmp_path):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav"))
    sf.write(os.fsencode(path), _tone(SAMPLE_RATE, 1.0), SAMPLE_RATE)
    assert len(load_audio(path)) == SAMPLE_RATE


def _wav_with_sizes(path: Path, data_size: int, seconds: float = 2.0) -> Path:
    """16-bit mono PCM after a header whose sizes a recorder writing to a pipe left as they were."""
    pcm = (_tone(SAMPLE_RATE, seconds) * 16000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
    riff = (data_size + 36) & 0xFFFFFFFF
    path.write_bytes(b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data_size) + pcm)
    return path


@pytest.mark.parametrize("data_size", [0x80000000, 0x7FFFF000, 0x7FFFFFFF, 0xFFFFFFFF],
                         ids=["arecord", "sox", "int-max", "all-ones"])
def test_a_wav_streamed_to_a_pipe_is_read_whole(tmp_path, data_size):
    """arecord and sox write placeholder sizes they cannot fix on a pipe; libsndfile reads what is there."""
    assert load_audio(_wav_with_sizes(tmp_path / "piped.wav", data_size)).size == 2 * SAMPLE_RATE


def test_a_wav_over_2_gib_cut_short_is_told_after_its_audio(tmp_path):
    """A 4-hour 48 kHz stereo recording declares 2.76 GB: cut in a copy, it passed as "streamed" with exit 0."""
    reader = AudioReader(_wav_with_sizes(tmp_path / "cut4h.wav", 0xA4CB8000))
    blocks = []
    with pytest.raises(AudioFileError, match="truncated"):
        blocks.extend(reader)
    assert sum(map(len, blocks)) == 2 * SAMPLE_RATE  # the audio there is delivered first


def test_a_header_declaring_no_samples_over_audio_says_how_to_repair_it(tmp_path):
    path = _wav_with_sizes(tmp_path / "unclosed.wav", 0)
    with pytest.raises(AudioFileError, match=r"header declares no audio samples, but the file holds 64044 bytes"):
        load_audio(path)


def test_a_flac_without_its_length_is_refused_with_the_fix(tmp_path):
    """An encoder writing to a pipe leaves STREAMINFO's total at 0: libsndfile stops 1-4 s before the end."""
    path = tmp_path / "piped.flac"
    sf.write(path, _tone(SAMPLE_RATE, 11.0), SAMPLE_RATE, format="FLAC")
    data = bytearray(path.read_bytes())
    (info,) = struct.unpack(">Q", bytes(data[18:26]))
    data[18:26] = struct.pack(">Q", info & ~((1 << 36) - 1))  # total samples: unknown
    path.write_bytes(bytes(data))
    with pytest.raises(AudioFileError, match=r"a FLAC whose header gives no length \(encoded to a pipe\)"):
        load_audio(path)


def test_integer_samples_stored_as_float_are_refused(tmp_path):
    """tiny.en read JFK at +-32767 as "No", with exit 0."""
    path = tmp_path / "scaled.wav"
    sf.write(path, _tone(SAMPLE_RATE, 1.0) * 40000, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"float samples reach 2\d{4}, far outside -1..1"):
        load_audio(path)
    sf.write(path, _tone(SAMPLE_RATE, 1.0) * 6, SAMPLE_RATE, subtype="FLOAT")  # hot (peak 3), but audio
    assert load_audio(path).size == SAMPLE_RATE
