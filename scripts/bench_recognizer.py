"""Benchmark our INT8 recognizer against faster-whisper on the shared eval sets.

Both run the same Whisper weights (the package the model directory was built
from: tiny.en or base), beam 5, the same thread count, the same language and
the same audio arrays; model loading and file decoding are outside the timings.
Files are processed alternately by the two engines so that load from other
processes on a shared machine hits both alike. Prints a markdown table.

English sets are scored by WER (EnglishTextNormalizer); Chinese sets (zh,
longform_zh, yue) by CER on simplified characters with punctuation and spaces
removed (the eval README's rule), and every output of ours that still holds a
traditional character is counted. faster-whisper runs with
condition_on_previous_text=False, int8.

    .venv/bin/python scripts/bench_recognizer.py [--threads 2] [--sets real_en nonspeech] [--limit 5]
    .venv/bin/python scripts/bench_recognizer.py --model models/whisper-base-int8 --language zh --sets zh longform_zh yue nonspeech
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

import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import build_model  # noqa: E402
import scoring  # noqa: E402
from scoring import CHINESE_SETS  # noqa: E402
from edge.asr.base import Recognizer  # noqa: E402
from edge.asr.load import load_recognizer, read_manifest  # noqa: E402
from edge.asr.text import to_simplified  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402

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


def manifest_rows(eval_dir: Path, set_name: str) -> list[dict]:
    """The rows of one set's manifest.jsonl."""
    lines = (eval_dir / set_name / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def manifest(eval_dir: Path, set_name: str, limit: int) -> list[tuple[Path, str]]:
    """(audio path, reference text) of one set, the first `limit` if limit > 0."""
    pairs = [(eval_dir / set_name / row["audio"], row["text"]) for row in manifest_rows(eval_dir, set_name)]
    return pairs[:limit] if limit > 0 else pairs


def timed(fn, *args, **kwargs) -> tuple[str, float]:
    start = time.perf_counter()
    text = fn(*args, **kwargs)
    return text, time.perf_counter() - start


def faster_whisper_model(ct2_dir: Path, threads: int):
    """The reference engine: CTranslate2 int8 on the same weights."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(ct2_dir), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)


def reference_engine(model_dir: Path, threads: int):
    """faster-whisper on the weights `model_dir` was built from (loaded in memory: the CT2 files may go)."""
    spec = read_manifest(model_dir)["name"].rsplit("-", 1)[0]  # whisper-base-int8 -> whisper-base
    with build_model.ct2_model_dir(build_model.find_source(spec)) as ct2_dir:
        return faster_whisper_model(ct2_dir, threads)


def run_theirs(model, audio: np.ndarray, beam: int, language: str) -> str:
    segments, _ = model.transcribe(audio, beam_size=beam, language=None if language == "auto" else language,
                                   condition_on_previous_text=False)
    return "".join(s.text for s in segments).strip()


def run_ours(recognizer: Recognizer, audio: np.ndarray, options: object) -> str:
    return recognizer.transcribe(audio, options=options).text


def score_set(name: str, files: list[tuple[Path, str]], recognizer: Recognizer, reference, args) -> SetScore:
    score = SetScore(name)
    options = recognizer.options(beam_size=args.beam, language=args.language, prompt=args.prompt)
    for path, ref in files:
        audio = load_audio(path)
        score.audio_s += len(audio) / 16000
        ours, ours_s = timed(run_ours, recognizer, audio, options)
        theirs, theirs_s = timed(run_theirs, reference, audio, args.beam, args.language)
        score.refs.append(ref)
        score.ours.append(ours)
        score.theirs.append(theirs)
        score.ours_s += ours_s
        score.theirs_s += theirs_s
        print(f"  {name}/{path.name}: ours {ours_s:.2f}s fw {theirs_s:.2f}s | {ours[:60]!r}", file=sys.stderr)
    return score


def words(hyps: list[str], normalize: EnglishTextNormalizer) -> int:
    return sum(len(normalize(h).split()) for h in hyps)


def traditional(hyps: list[str]) -> int:
    """Outputs holding at least one character that simplification would change."""
    return sum(to_simplified(h) != h for h in hyps)


def error_rate(score: SetScore, hyps: list[str]) -> str:
    rate = scoring.error_rate(score.name, score.refs, hyps)
    return "-" if rate is None else f"{100 * rate:.1f}"


def nonspeech_output(hyps: list[str], normalize: EnglishTextNormalizer) -> int:
    """What came out of non-speech: words, and characters of CJK text."""
    return words(hyps, normalize) + sum(len(scoring.chinese_chars(h)) for h in hyps if any(ord(c) > 0x2e80 for c in h))


def peak_rss_mib(files: list[Path], args) -> float:
    """Peak RSS of `edge-asr transcribe` over every file (the only child this process starts)."""
    cmd = [sys.executable, "-m", "edge", "transcribe", "--format", "jsonl", "--beam", str(args.beam)]
    cmd += ["--threads", str(args.threads), "--model", str(args.model), "--language", args.language]
    cmd += [*(["--prompt", args.prompt] if args.prompt else []), *map(str, files)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def total_row(label: str, scores: list[SetScore]) -> str:
    """Time summed over `scores`. The speech sets get their own row: faster-whisper spends far longer
    on nonspeech (2.5 against 0.4 s on tiny.en, 30.6 against 0.6 on base), which lifts the total."""
    ours = sum(s.ours_s for s in scores)
    theirs = sum(s.theirs_s for s in scores)
    return (f"| **{label}** | {sum(s.audio_s for s in scores):.0f} | | | | | {ours:.1f} | {theirs:.1f} "
            f"| {theirs / max(ours, 1e-9):.2f}x |")


def table(scores: list[SetScore], rss_mib: float, args) -> str:
    normalize = EnglishTextNormalizer()
    lines = [
        f"model {args.model.name}, language {args.language}, threads={args.threads}, beam={args.beam}"
        f"{f', prompt {args.prompt!r}' if args.prompt else ''}; WER (English sets, EnglishTextNormalizer) or CER "
        "(Chinese sets, simplified, no punctuation/spaces) in %, jiwer; times exclude model load",
        "",
        "| set | audio s | error ours | error faster-whisper | ours with traditional chars | output on nonspeech "
        "(ours / fw) | ours s | fw s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        nonspeech = f"{nonspeech_output(s.ours, normalize)} / {nonspeech_output(s.theirs, normalize)}" if not any(s.refs) else "-"
        lines.append(
            f"| {s.name} | {s.audio_s:.0f} | {error_rate(s, s.ours)} | {error_rate(s, s.theirs)} "
            f"| {traditional(s.ours)} | {nonspeech} | {s.ours_s:.1f} | {s.theirs_s:.1f} "
            f"| {s.theirs_s / max(s.ours_s, 1e-9):.2f}x |"
        )
    speech = [s for s in scores if any(s.refs)]
    if len(speech) < len(scores):
        lines.append(total_row("speech sets", speech))
    lines.append(total_row("total", scores))
    lines += ["", f"peak RSS of `edge-asr transcribe` over these files: {rss_mib:.0f} MiB"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sets", nargs="+", default=list(ENGLISH_SETS), choices=ENGLISH_SETS + CHINESE_SETS)
    parser.add_argument("--language", default="auto", help="a language code of the model, or auto (default)")
    parser.add_argument("--prompt", default="", help="text given to our recognizer as the initial prompt")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0, help="first N files per set (0 = all)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    args = parser.parse_args()
    files = {name: manifest(args.eval_dir, name, args.limit) for name in args.sets}
    rss = peak_rss_mib([p for pairs in files.values() for p, _ in pairs], args)
    recognizer = load_recognizer(args.model, threads=args.threads)
    reference = reference_engine(args.model, args.threads)
    scores = [score_set(name, pairs, recognizer, reference, args) for name, pairs in files.items()]
    print(table(scores, rss, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
