#!/usr/bin/env python3
"""Finals of `edge-asr run` on every eval set through the virtual microphone (not a test).

For each eval set, its clips are joined into one WAV with silence between them, the
daemon listens to the PulseAudio virtual microphone (scripts/bench_latency.py --via-mic
machinery) while the WAV plays into it at real time, and every final is checked:

- repeated sentence: the same run of >= 6 words (or >= 8 CJK characters) twice in a row
  inside one final, e.g. "Please scan your ticket at the gate. Please scan your ticket at the gate.";
- after the audio: a final that starts more than 0.5 s after the end of the clip it falls in
  (text decoded from the silence that follows speech);
- WER (English) / CER (Chinese) of all finals joined vs all references joined
  (scripts/scoring.py), and words output on the nonspeech set.

The full run plays 15 minutes of audio (19 with the pauses; about 20 minutes wall); run it on a quiet machine:

    .venv/bin/python scripts/bench_mic_sets.py                          # every set
    .venv/bin/python scripts/bench_mic_sets.py --sets tts_piper_en zh --limit 3
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from bench_latency import EVAL, REPO, _maybe_mic, _rate, run_daemon
from scoring import CHINESE_SETS, metric_name  # also puts the repository on sys.path, for tests.virtual_mic
from tests.virtual_mic import APT_HINT, NEEDED

RATE = 16000  # every eval clip is 16 kHz mono PCM_16 (../shared/eval/README.md)
GAP_S = 1.5  # silence after each clip: 5x the VAD's 300 ms end-of-speech pause, so each clip ends its utterance
LATE_MARGIN_S = 0.5  # a final may start this long after its clip's end before it counts as text after the audio
MIN_WORDS = 6  # a repeated run this long is a sentence, not "very very" or "no, no"
MIN_CJK_CHARS = 8  # the same for Chinese: 8 characters carry about what 6 English words do
TINY_EN = REPO / "models" / "whisper-tiny.en-int8"
BASE = REPO / "models" / "whisper-base-int8"
ZH = {"model.language": "zh"}
SETS: dict[str, tuple[Path, dict]] = {
    "real_en": (TINY_EN, {}),
    "real_meeting": (TINY_EN, {}),
    "tts_piper_en": (TINY_EN, {}),
    "tts_espeak_en": (TINY_EN, {}),
    "longform_en": (TINY_EN, {}),
    "nonspeech": (TINY_EN, {}),
    "zh": (BASE, ZH),
    "longform_zh": (BASE, ZH),
    "yue": (BASE, ZH),  # Cantonese: report only, no target yet
}
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNIT = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+(?:'[^\W{_CJK}]+)*")


@dataclass(frozen=True)
class Span:
    """Where one clip lies in the joined WAV, in seconds."""

    start: float
    end: float


def units(text: str) -> list[str]:
    """Words (lower case, apostrophes kept) and single CJK characters, punctuation dropped."""
    return _UNIT.findall(text.lower())


def _is_sentence(run: list[str]) -> bool:
    """Long enough to be a sentence: MIN_WORDS words, MIN_CJK_CHARS characters, or a mix weighing as much."""
    chars = sum(1 for unit in run if re.fullmatch(f"[{_CJK}]", unit))
    return (len(run) - chars) / MIN_WORDS + chars / MIN_CJK_CHARS >= 1


def repeated_sentence(text: str) -> str | None:
    """The shortest sentence-long run of `text` said twice in a row, or None."""
    found = units(text)
    for size in range(1, len(found) // 2 + 1):
        for at in range(len(found) - 2 * size + 1):
            run = found[at : at + size]
            if run == found[at + size : at + 2 * size] and _is_sentence(run):
                joiner = "" if all(re.fullmatch(f"[{_CJK}]", unit) for unit in run) else " "
                return joiner.join(run)
    return None


def join_clips(clips: list[np.ndarray], gap_s: float = GAP_S, rate: int = RATE) -> tuple[np.ndarray, list[Span]]:
    """The clips one after another, each followed by `gap_s` of silence (the last too, so its utterance ends)."""
    gap = np.zeros(round(gap_s * rate), dtype=np.int16)
    pieces, spans, at = [], [], 0
    for clip in clips:
        spans.append(Span(at / rate, (at + clip.size) / rate))
        pieces += [clip.astype(np.int16), gap]
        at += clip.size + gap.size
    return np.concatenate(pieces) if pieces else gap, spans


def clip_of(spans: list[Span], start: float, end: float) -> int:
    """The clip a final [start, end] (WAV time) falls in: the one it overlaps most, else the last one begun.

    Overlap first: the VAD keeps speech_pad_ms (200 ms) before speech, so a final's start
    can lie just before its clip, in the previous clip's gap.
    """
    overlaps = [min(end, s.end) - max(start, s.start) for s in spans]
    best = int(np.argmax(overlaps))
    if overlaps[best] > 0:
        return best
    return max(bisect.bisect_right([s.start for s in spans], start) - 1, 0)


def after_audio(start: float, end: float, spans: list[Span], margin_s: float = LATE_MARGIN_S) -> bool:
    """A final [start, end] (WAV time) begins after its clip's audio has ended, by more than the margin."""
    return start > spans[clip_of(spans, start, end)].end + margin_s


@dataclass
class SetResult:
    name: str
    clips: int
    audio_s: float
    finals: list[dict]  # each with `wav_start_s` and `wav_end_s`: its start_s/end_s in the joined WAV's time
    spans: list[Span]
    error_rate: str

    def repeats(self) -> list[tuple[dict, str]]:
        return [(f, run) for f in self.finals if (run := repeated_sentence(f["text"])) is not None]

    def late(self) -> list[dict]:
        return [f for f in self.finals if after_audio(f["wav_start_s"], f["wav_end_s"], self.spans)]

    def words(self) -> int:
        return sum(len(units(f["text"])) for f in self.finals)


def _manifest(name: str, limit: int | None) -> list[dict]:
    lines = (EVAL / name / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()][:limit]


def run_set(name: str, limit: int | None, mic: object) -> SetResult:
    """Join the set's clips, play them to the daemon through the microphone, and keep its finals."""
    model, overrides = SETS[name]
    rows = _manifest(name, limit)
    audio, spans = join_clips([soundfile.read(EVAL / name / row["audio"], dtype="int16")[0] for row in rows])
    with tempfile.TemporaryDirectory(prefix="bench-mic-sets-") as work:
        wav = Path(work) / f"{name}.wav"
        soundfile.write(wav, audio, RATE, subtype="PCM_16")
        run = run_daemon(wav, Path(work), model, overrides, mic)
    said = [f for f in run.of("final") if f["text"].strip()]
    # stream time of the WAV's first sample; with no final (nonspeech) there is nothing to place
    offset = run.file_offset_s() if said else 0.0
    finals = [{**f, "wav_start_s": f["start_s"] - offset, "wav_end_s": f["end_s"] - offset} for f in said]
    rate = _rate(name, [" ".join(row["text"] for row in rows)], [" ".join(f["text"] for f in finals)])
    return SetResult(name, len(rows), audio.size / RATE, finals, spans, rate)


def _row(result: SetResult) -> str:
    model = SETS[result.name][0].name
    nonspeech = str(result.words()) if result.name == "nonspeech" else "-"
    return (f"| {result.name} | {model} | {result.clips} | {result.audio_s:.0f} | {len(result.finals)} "
            f"| {len(result.repeats())} | {len(result.late())} | {metric_name(result.name)} {result.error_rate} "
            f"| {nonspeech} |")  # fmt: skip


def _flagged(result: SetResult) -> list[str]:
    """One line per final that failed a check, with its times, so it can be looked up."""
    lines = [f"- {result.name} repeat ({run!r}) at {f['wav_start_s']:.2f} s: {f['text']!r}"
             for f, run in result.repeats()]  # fmt: skip
    for f in result.late():
        clip = result.spans[clip_of(result.spans, f["wav_start_s"], f["wav_end_s"])]
        lines.append(f"- {result.name} after audio: final at {f['wav_start_s']:.2f} s, its clip ended at "
                     f"{clip.end:.2f} s: {f['text']!r}")  # fmt: skip
    return lines


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--limit must be a positive whole number, not {value!r}")
    return int(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="eval sets (default: all)")
    parser.add_argument("--limit", type=_positive, help="at most this many clips per set")
    args = parser.parse_args()
    missing = sorted({str(SETS[name][0]) for name in args.sets if not (SETS[name][0] / "config.json").exists()})
    if missing:
        print(f"error: model not found: {', '.join(missing)} (scripts/setup.sh fetches the models)", file=sys.stderr)
        return 2
    if not all(shutil.which(tool) for tool in NEEDED):
        print(f"error: the virtual microphone needs {', '.join(NEEDED)}: `{APT_HINT}`", file=sys.stderr)
        return 2
    print("| set | model | clips | audio s | finals | repeated sentence | after audio | WER/CER | words on nonspeech |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    flagged: list[str] = []
    try:
        with _maybe_mic(True) as mic:
            for name in args.sets:
                result = run_set(name, args.limit, mic)
                print(_row(result), flush=True)
                flagged += _flagged(result)
    except RuntimeError as failure:  # the daemon or PulseAudio failed: what failed, and its last words
        lines = str(failure).strip().splitlines()
        print(f"error: {' '.join(dict.fromkeys([lines[0], lines[-1]]))}", file=sys.stderr)
        return 1
    print("\n".join(["", "Flagged finals:", *flagged] if flagged else ["", "No final repeated a sentence or began late."]))
    chinese = [name for name in args.sets if name in CHINESE_SETS]
    if chinese:
        print(f"{', '.join(chinese)}: decoded with model.language=zh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
