"""RKNN simulator results (opt-in: scripts/check_rknn.sh converts the model, then runs this with -m rknn).

Reads what scripts/convert_rknn.py left in the RKNN output directory: the
cosine similarities, and the simulated encoder output, which is decoded here
on CPU by our own decoder so the transcript shows what NPU errors cost.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio.audiofile import load_audio
from edge.asr.whisper.graph import CrossKV, SelfKV
from edge.asr.whisper.ort import OrtWhisperBackend
from edge.asr.whisper.recognizer import Recognizer
from edge.asr.whisper.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from scoring import error_rate  # noqa: E402

pytestmark = pytest.mark.rknn

MODELS = Path(__file__).resolve().parents[1] / "models"
OUT_DIR = Path(os.environ.get("RKNN_OUT_DIR", MODELS / "whisper-tiny.en-rknn"))
FP32_DIR = Path(os.environ.get("FP32_DIR", MODELS / "whisper-tiny.en-fp32"))  # scripts/check_rknn.sh sets both
# Measured in rknn-toolkit2's x86 simulator targeting rk3588 (not on a board) over 10 real_en utterances:
# fp16 cosine 0.999998 (10/10 transcripts identical);
# int8 (KL + auto-hybrid) cross_v cosine min 0.919: w8a8 loses that much on Whisper's encoder
# activations, and its transcripts often stop early. The gates below catch a broken conversion,
# they do not bless int8: fp16 must reproduce onnxruntime's transcripts; int8 must not be much
# worse against the reference texts.
MIN_COSINE = {"fp16": 0.999, "int8": 0.90}
MAX_WER_AGAINST_ONNXRUNTIME = 0.02  # fp16
MAX_EXTRA_WER = 0.10  # int8: WER against the reference text, minus onnxruntime's


class FixedEncoder:
    """The decoder on CPU, the encoder output taken from the simulator run."""

    def __init__(self, inner: OrtWhisperBackend, cross: CrossKV) -> None:
        self.name, self.inner, self.cross = "rknn-sim", inner, cross

    def encode(self, mel: np.ndarray) -> CrossKV:
        return self.cross

    def empty_cache(self, batch: int) -> SelfKV:
        return self.inner.empty_cache(batch)

    def decode(self, tokens: np.ndarray, cache: SelfKV, cross: CrossKV) -> tuple[np.ndarray, SelfKV]:
        return self.inner.decode(tokens, cache, cross)


@pytest.fixture(scope="module")
def report() -> dict:
    path = OUT_DIR / "check_report.json"
    if not path.is_file():
        pytest.skip(f"{path} not found: run scripts/check_rknn.sh")
    return json.loads(path.read_text())


def test_simulator_matches_onnxruntime(report: dict) -> None:
    for precision, result in report["results"].items():
        encoder, decoder = result["encoder"], result["decoder"]
        print(f"\n{precision}: encoder cosine over {encoder['utterances']} utterances: "
              f"k min {encoder['cross_k_cosine_min']:.6f} mean {encoder['cross_k_cosine_mean']:.6f}, "
              f"v min {encoder['cross_v_cosine_min']:.6f} mean {encoder['cross_v_cosine_mean']:.6f}; "
              f"decoder logits cosine min {decoder.get('logits_cosine_min', float('nan')):.6f}, "
              f"arg-max {decoder.get('argmax_agreement')}; timings {result['timings']}")
        assert min(encoder["cross_k_cosine_min"], encoder["cross_v_cosine_min"]) >= MIN_COSINE[precision]
        if decoder:
            assert decoder["logits_cosine_min"] >= MIN_COSINE[precision]


def transcripts(report: dict, precision: str, model_dir: Path, eval_dir: Path) -> list[tuple[str, str]]:
    """(through onnxruntime's static encoder, through the simulator's) for every check utterance."""
    tokenizer = Tokenizer.from_dir(model_dir)
    cpu = OrtWhisperBackend(model_dir)
    pairs = []
    with np.load(OUT_DIR / f"check_{precision}.npz") as saved:
        for index, name in enumerate(report["check_audio"]):
            audio = load_audio(eval_dir / name)
            ref, sim = (Recognizer(FixedEncoder(cpu, CrossKV(saved[f"{src}_k_{index}"], saved[f"{src}_v_{index}"])), tokenizer)
                        .transcribe(audio).text for src in ("ref", "sim"))
            pairs.append((ref, sim))
    return pairs


def reference_texts(names: list[str], eval_dir: Path) -> list[str]:
    texts = {}
    for set_name in {name.split("/")[0] for name in names}:
        for line in (eval_dir / set_name / "manifest.jsonl").read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if row:
                texts[f"{set_name}/{row['audio']}"] = row["text"]
    return [texts[name] for name in names]


def wer(truth: list[str], hypotheses: list[str], set_name: str) -> float:
    """WER on English sets, CER on Chinese ones (scripts/scoring.py); the check audio has reference text."""
    rate = error_rate(set_name, truth, [h or "-" for h in hypotheses])
    assert rate is not None, f"no reference text for {set_name}'s check audio"
    return rate


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_transcripts_through_the_simulated_encoder(report: dict, precision: str, eval_dir: Path) -> None:
    if precision not in report["results"]:
        pytest.skip(f"{precision} was not converted")
    pairs = transcripts(report, precision, FP32_DIR, eval_dir)
    set_name = report["check_audio"][0].split("/")[0]
    truth = reference_texts(report["check_audio"], eval_dir)
    for ref, sim in pairs:
        print(f"\n{precision} onnxruntime: {ref}\n{precision} simulator:   {sim}")
    refs, sims = [ref for ref, _ in pairs], [sim for _, sim in pairs]
    against_ort, ort_wer, sim_wer = wer(refs, sims, set_name), wer(truth, refs, set_name), wer(truth, sims, set_name)
    print(f"\n{precision}: {sum(r == s for r, s in pairs)}/{len(pairs)} transcripts identical; WER against "
          f"onnxruntime's {against_ort:.3f}; against the reference texts: onnxruntime {ort_wer:.3f}, simulator {sim_wer:.3f}")
    if precision == "fp16":
        assert against_ort <= MAX_WER_AGAINST_ONNXRUNTIME
    else:
        assert sim_wer <= ort_wer + MAX_EXTRA_WER
