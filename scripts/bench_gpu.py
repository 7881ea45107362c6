#!/usr/bin/env python3
"""The Whisper graphs on every onnxruntime backend of this machine, against CPU (not a test).

For one model directory (int8; the GPU backends run its fp32 sibling, as the
daemon does) and each backend asked for (cpu, cuda, tensorrt), it records:

- start-up: seconds to open and prove the sessions; TensorRT is opened twice,
  the second start being the engine-cache hit;
- per eval set: audio seconds, decode seconds (after one warm-up file), the
  real-time factor, WER (English) / CER (Chinese) and how many outputs equal
  the CPU fp32 graphs' word for word (the same graphs, so GPU numerics are the
  only difference);
- a forced mid-run failure: the accelerator's decoder is made to raise after
  a few steps of an utterance (an injected onnxruntime error, not a real
  fault), and the utterance must still come back, from CPU, equal to CPU's.

A backend that cannot start is a row with its reason, not a crash. Writes
everything as JSON (--json) and prints markdown tables.

    python scripts/bench_gpu.py --model models/whisper-tiny.en-int8 --sets real_en tts_piper_en
    python scripts/bench_gpu.py --model models/whisper-base-int8 --language zh --sets zh
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import scoring  # noqa: E402
from bench_recognizer import DEFAULT_EVAL_DIR, DEFAULT_MODEL, manifest, run_ours  # noqa: E402
from edge.accel.select import survey  # noqa: E402
from edge.asr.base import Recognizer  # noqa: E402
from edge.asr.load import family_of, open_recognizer  # noqa: E402
from edge.asr.whisper.family import accelerator_model_dir  # noqa: E402
from edge.audio.base import SAMPLE_RATE  # noqa: E402
from edge.audio.audiofile import load_audio  # noqa: E402
from edge.config import Config, parse_config  # noqa: E402
from edge.errors import one_line  # noqa: E402

BACKENDS = ("cpu", "cuda", "tensorrt")
FAIL_AFTER_STEPS = 3  # decoder calls of the broken utterance that still succeed
Sets = dict[str, tuple[list[np.ndarray], list[str]]]  # set name -> (audio arrays, reference texts)


@dataclass
class SetRun:
    """One backend on one eval set."""

    name: str
    audio_s: float = 0.0
    decode_s: float = 0.0
    error: float | None = None
    same_as_cpu_fp32: int = 0
    texts: list[str] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.decode_s / max(self.audio_s, 1e-9)


@dataclass
class BackendRun:
    """One backend: how it started and what it produced."""

    name: str
    started: bool = False
    reason: str = ""
    providers: list[str] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    sets: list[SetRun] = field(default_factory=list)


def config_for(backend: str, model: Path, cache_dir: Path, threads: int) -> Config:
    """Strict: a backend that cannot start is reported, never silently replaced by CPU."""
    inference = {"backend": backend, "strict": True, "tensorrt_cache_dir": str(cache_dir), "tensorrt_fp16": True}
    return parse_config({"model": {"path": str(model), "threads": threads}, "inference": inference}, base_dir=REPO)


def open_backend(backend: str, cfg: Config) -> tuple[Recognizer, float]:
    """The model family's recognizer on `backend`, proven to run there, and the seconds that took."""
    start = time.perf_counter()
    recognizer = family_of(Path(cfg.model.path)).open(backend, cfg)
    return recognizer, time.perf_counter() - start


def transcribe_all(recognizer: Recognizer, audios: list[np.ndarray], options: object) -> tuple[list[str], float]:
    """Every file's text, and the seconds for all of them (one number: per-file times are noise on a GPU)."""
    start = time.perf_counter()
    texts = [run_ours(recognizer, audio, options) for audio in audios]
    return texts, time.perf_counter() - start


def run_backend(name: str, args: argparse.Namespace, data: Sets, cache_dir: Path) -> BackendRun:
    """Start `name` (twice for TensorRT), warm it up on one file, then decode every set."""
    run = BackendRun(name)
    cfg = config_for(name, args.model, cache_dir, args.threads)
    row = next(c for c in survey(cfg) if c.name == name)
    if not row.available:
        run.reason = row.reason
        return run
    try:
        for _ in range(2 if name == "tensorrt" else 1):
            recognizer, seconds = open_backend(name, cfg)
            run.start_s.append(round(seconds, 2))
    except Exception as exc:  # noqa: BLE001 - a backend that cannot start is a result
        run.reason = one_line(exc)
        return run
    run.started, run.providers = True, list(recognizer.backend.active_providers)
    options = recognizer.options(beam_size=args.beam, language=args.language)
    first_audio = next(iter(data.values()))[0][0]
    run.warmup_s = round(transcribe_all(recognizer, [first_audio], options)[1], 3)
    for set_name, (audios, refs) in data.items():
        texts, seconds = transcribe_all(recognizer, audios, options)
        rate = scoring.error_rate(set_name, refs, texts)
        run.sets.append(SetRun(set_name, sum(len(a) for a in audios) / SAMPLE_RATE, seconds, rate, 0, texts))
    return run


def mark_agreement(runs: list[BackendRun], reference: BackendRun) -> None:
    """Count, per set, the outputs equal to the reference's (the CPU on the same fp32 graphs)."""
    if not reference.started:
        return
    for run in runs:
        for set_run, ref_run in zip(run.sets, reference.sets):
            set_run.same_as_cpu_fp32 = sum(a == b for a, b in zip(set_run.texts, ref_run.texts))


def break_decoder_after(recognizer: Recognizer, steps: int) -> None:
    """Make the accelerator's decoder session raise from its `steps`+1-th call on: an injected
    fault standing in for a GPU that goes away mid-utterance."""
    recognizer.backend.decoder = _FailingSession(recognizer.backend.decoder, steps)


class _FailingSession:
    """An onnxruntime session whose `run` raises after `steps` calls; everything else is the real one's."""

    def __init__(self, session: object, steps: int) -> None:
        self._session, self._left = session, steps

    def run(self, *args: object, **kwargs: object) -> object:
        self._left -= 1
        if self._left < 0:
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 999: unknown error (injected by bench_gpu.py)")
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def forced_failure(backend: str, args: argparse.Namespace, audio: np.ndarray, cache_dir: Path) -> dict[str, object]:
    """Through the daemon's FallbackRecognizer: one good utterance, then one whose decoder breaks mid-way;
    the second must come back from the CPU (int8, as the daemon's safety net) exactly as the CPU says it."""
    statuses: list[str] = []
    cfg = config_for(backend, args.model, cache_dir, args.threads)
    try:
        recognizer = open_recognizer(cfg, statuses.append)
    except Exception as exc:  # noqa: BLE001 - a backend that cannot start is a result
        return {"backend": backend, "ran": False, "reason": one_line(exc)}
    options = recognizer.options(beam_size=args.beam, language=args.language)
    cpu_text = run_ours(open_backend("cpu", config_for("cpu", args.model, cache_dir, args.threads))[0], audio, options)
    before = recognizer.transcribe(audio, options=options).text
    break_decoder_after(recognizer.primary, FAIL_AFTER_STEPS)
    start = time.perf_counter()
    after = recognizer.transcribe(audio, options=options).text
    return {
        "backend": backend, "ran": True, "text_before": before, "text_after_failure": after,
        "equals_cpu_int8": after == cpu_text, "backend_after": recognizer.backend_name,
        "seconds_for_failed_utterance": round(time.perf_counter() - start, 2), "status": statuses,
    }


def load_sets(args: argparse.Namespace) -> Sets:
    """Each set's decoded audio and references, loaded once for every backend."""
    data = {}
    for name in args.sets:
        pairs = manifest(args.eval_dir, name, args.limit)
        data[name] = ([load_audio(path) for path, _ in pairs], [ref for _, ref in pairs])
    return data


def tables(runs: list[BackendRun], failure: list[dict]) -> str:
    """One markdown row per backend and set, then each forced failure as JSON."""
    lines = ["| backend | started | start s | warm-up s | set | audio s | decode s | RTF | error % | same as CPU fp32 |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        if not run.started:
            lines.append(f"| {run.name} | no: {run.reason} | | | | | | | | |")
        for s in run.sets:
            error = "-" if s.error is None else f"{100 * s.error:.1f}"
            lines.append(f"| {run.name} | {'+'.join(p.replace('ExecutionProvider', '') for p in run.providers)} "
                         f"| {' / '.join(map(str, run.start_s))} | {run.warmup_s} | {s.name} | {s.audio_s:.0f} "
                         f"| {s.decode_s:.2f} | {s.rtf:.4f} | {error} | {s.same_as_cpu_fp32}/{len(s.texts)} |")
    for row in failure:
        lines.append(f"\nforced failure on {row['backend']}: {json.dumps(row, ensure_ascii=False)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the int8 directory, as in config.yaml")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--sets", nargs="+", default=["real_en"])
    parser.add_argument("--language", default="auto")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--limit", type=int, default=0, help="first N files per set (0 = all)")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    parser.add_argument("--json", type=Path, help="write every figure and text here")
    args = parser.parse_args()
    data = load_sets(args)
    with tempfile.TemporaryDirectory() as cache:
        fp32 = accelerator_model_dir(args.model)  # what the GPU backends run
        reference = run_backend("cpu", argparse.Namespace(**{**vars(args), "model": fp32}), data, Path(cache))
        reference.name = "cpu (fp32 graphs)"
        runs = [run_backend(name, args, data, Path(cache)) for name in args.backends]
        mark_agreement([reference, *runs], reference)
        first_audio = next(iter(data.values()))[0][0]
        failure = [forced_failure(name, args, first_audio, Path(cache)) for name in args.backends if name != "cpu"]
    report = tables([reference, *runs], failure)
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"runs": [asdict(r) for r in [reference, *runs]], "failure": failure},
                                        ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
