"""Convert the static ONNX exports to .rknn (fp16, int8) and check them in rknn-toolkit2's simulator.

Runs in .venv-rknn (the toolkit's pins clash with the main environment);
scripts/check_rknn.sh sets that up and calls this after scripts/rknn_export.py.

For each precision, every graph is built, exported to OUT/<precision>/ with
rknn_manifest.json beside it (copy that directory to the board's
inference.rknn_model_dir), then the check compares the simulator with
onnxruntime on the same static graphs:
  - encoder: cosine similarity of cross_k / cross_v over the check
    utterances (eval speech not used for calibration); the simulated cross
    K/V are saved for tests/test_rknn_sim.py, which decodes them on CPU with
    our decoder into transcripts;
  - decoder: logits cosine and arg-max agreement over teacher-forced steps,
    driven through edge.asr.whisper.rknn (the host-side cache/mask logic).
The simulator only runs a model built in the same process (init_runtime()
without a target), so conversion and check share one process.

int8 quantizes the encoder (w8a8, calibrated on eval speech mels, KL
divergence, with the toolkit's auto-hybrid keeping the layers that lose most
in fp16: encoder cosine 0.98/0.95 against 0.94/0.88 for plain "normal"); the
decoder stays fp16 in both sets: its inputs (cache, mask, cross K/V) need a
multi-input calibration set we do not have yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.asr.whisper.graph import CrossKV  # noqa: E402
from edge.accel.rknn import MANIFEST  # noqa: E402
from edge.asr.whisper.rknn import RknnWhisperBackend  # noqa: E402

PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")
DECODER_STEPS = 8
# Fusion rules of toolkit 2.3.2 that crash on these graphs (the toolkit's own error
# message suggests disabling them): the first two mis-reshape cross_kv's reshape/transpose
# chain ("Can not reshape from [6, 64, 1000] to [30, 64, 1000]"), the third fails on the
# decoder's Expand of cross K/V ("truth value of an array ... is ambiguous").
DISABLED_RULES = ["replace_inner_dim_shuffle_tp_rs_to_rs_gather", "reduce_reshape_op_around_split",
                 "swap_expand_transpose"]


class ConversionError(RuntimeError):
    """The toolkit refused a graph (it reports failures as return codes or ValueError)."""


def _checked(ret: int, what: str) -> None:
    if ret != 0:
        raise ConversionError(f"{what} failed (return code {ret})")


class SimulatedModel:
    """Converts one static graph, exports the .rknn and keeps the simulator open for the check."""

    def __init__(self, onnx_path: Path, rknn_path: Path, platform: str, dataset: Path | None,
                 algorithm: str = "normal", auto_hybrid: bool = False) -> None:
        from rknn.api import RKNN

        self.rknn = RKNN(verbose=False)
        started = time.monotonic()
        _checked(self.rknn.config(target_platform=platform, quantized_algorithm=algorithm, disable_rules=DISABLED_RULES),
                 "config")
        _checked(self.rknn.load_onnx(model=str(onnx_path)), f"load_onnx {onnx_path.name}")
        quantize = dataset is not None
        _checked(self.rknn.build(do_quantization=quantize, dataset=str(dataset) if quantize else None,
                                 auto_hybrid=quantize and auto_hybrid), f"build {onnx_path.name}")
        _checked(self.rknn.export_rknn(str(rknn_path)), f"export {rknn_path.name}")
        self.build_s = time.monotonic() - started
        _checked(self.rknn.init_runtime(), "simulator init_runtime")
        self.infer_s: list[float] = []

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        started = time.monotonic()
        outputs = self.rknn.inference(inputs=inputs)
        self.infer_s.append(time.monotonic() - started)
        return outputs

    def release(self) -> None:
        self.rknn.release()


class OrtModel:
    """The same static graph on onnxruntime CPU: the reference."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {i.name: x for i, x in zip(self.session.get_inputs(), inputs)})

    def release(self) -> None:
        """Nothing to free: the session goes with the object."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def prompt_tokens(model_dir: Path) -> list[int]:
    """Start-of-transcript prompt (English-only model: no language/task tokens)."""
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    return [vocabulary.index("<|startoftranscript|>"), vocabulary.index("<|notimestamps|>")]


def check_encoder(sim: RknnWhisperBackend, ref: RknnWhisperBackend, mels: list[np.ndarray]) -> tuple[dict, dict]:
    """Cosine of cross K/V per check utterance; also returns every cross K/V (sim and reference) by name."""
    crosses, k_cos, v_cos = {}, [], []
    for index, mel in enumerate(mels):
        sim_cross, ref_cross = sim.encode(mel), ref.encode(mel)
        k_cos.append(cosine(sim_cross.k, ref_cross.k))
        v_cos.append(cosine(sim_cross.v, ref_cross.v))
        crosses |= {f"sim_k_{index}": sim_cross.k, f"sim_v_{index}": sim_cross.v,
                    f"ref_k_{index}": ref_cross.k, f"ref_v_{index}": ref_cross.v}
    stats = {"utterances": len(mels), "cross_k_cosine_min": min(k_cos), "cross_v_cosine_min": min(v_cos),
             "cross_k_cosine_mean": float(np.mean(k_cos)), "cross_v_cosine_mean": float(np.mean(v_cos))}
    return stats, crosses


def check_decoder(sim: RknnWhisperBackend, ref: RknnWhisperBackend, cross, prompt: list[int]) -> dict:
    """Teacher-forced greedy steps: both get onnxruntime's cache and tokens, so errors do not compound."""
    cache, tokens = ref.empty_cache(1), np.array([prompt], np.int64)
    cosines, agree = [], 0
    for _ in range(DECODER_STEPS):
        sim_logits, _ = sim.decode(tokens, cache, cross)
        ref_logits, cache = ref.decode(tokens, cache, cross)
        cosines.append(cosine(sim_logits, ref_logits))
        agree += int(sim_logits.argmax() == ref_logits.argmax())
        tokens = np.array([[int(ref_logits.argmax())]], np.int64)
    return {"logits_cosine_min": min(cosines), "logits_cosine_mean": float(np.mean(cosines)),
            "argmax_agreement": f"{agree}/{DECODER_STEPS}"}


def convert_precision(args: argparse.Namespace, precision: str, manifest: dict) -> dict:
    """Build every graph of one precision that the check utterances need (all with --all-buckets)."""
    out = args.out / precision
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.rknn"):  # another platform's or toolkit's, or of other exports: never kept
        stale.unlink()
    shutil.copy(args.exports / MANIFEST, out / MANIFEST)
    built: dict[str, SimulatedModel] = {}

    def open_sim(stem: str) -> SimulatedModel:
        quantize = precision == "int8" and stem.startswith("encoder")
        dataset = args.exports / f"dataset_{stem.split('_')[1]}.txt" if quantize else None
        built[stem] = SimulatedModel(args.exports / f"{stem}.onnx", out / f"{stem}.rknn", args.platform, dataset,
                                     args.quantized_algorithm, args.auto_hybrid)
        return built[stem]

    sim = RknnWhisperBackend(out, args.model, opener=open_sim)
    ref = RknnWhisperBackend(out, args.model, opener=lambda stem: OrtModel(args.exports / f"{stem}.onnx"))
    with np.load(args.exports / "check.npz") as saved:
        mels = [saved[f"mel_{i}"] for i in range(len(saved.files))]
    encoder_stats, crosses = check_encoder(sim, ref, mels)
    np.savez(args.out / f"check_{precision}.npz", **crosses)
    first = CrossKV(crosses["ref_k_0"], crosses["ref_v_0"])
    decoder_stats = check_decoder(sim, ref, first, prompt_tokens(args.model)) if args.check_decoder else {}
    timings = {stem: {"build_s": round(m.build_s, 1), "sim_inference_s": round(float(np.mean(m.infer_s)), 2)}
               for stem, m in built.items()}
    sim.close()
    if args.all_buckets:
        for frames in manifest["encoder_frames"]:
            for stem in (f"encoder_{frames}", f"decoder_{frames}"):
                if stem not in built:
                    open_sim(stem).release()
                    timings[stem] = {"build_s": round(built[stem].build_s, 1)}
    return {"encoder": encoder_stats, "decoder": decoder_stats, "timings": timings}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=Path, default=REPO / "models" / "whisper-tiny.en-rknn-onnx")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "whisper-tiny.en-rknn")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "whisper-tiny.en-fp32", help="for the vocabulary")
    parser.add_argument("--platform", choices=PLATFORMS, default="rk3588")
    parser.add_argument("--precisions", default="fp16,int8")
    parser.add_argument("--quantized-algorithm", choices=("normal", "mmse", "kl_divergence"), default="kl_divergence",
                        help="int8 calibration method (mmse: about 25 min per encoder on 2 cores)")
    parser.add_argument("--no-auto-hybrid", dest="auto_hybrid", action="store_false",
                        help="int8: quantize every layer (default: the toolkit keeps layers below cosine 0.98 in fp16)")
    parser.add_argument("--no-decoder-check", dest="check_decoder", action="store_false")
    parser.add_argument("--all-buckets", action="store_true", help="also convert the buckets the check does not use")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = json.loads((args.exports / MANIFEST).read_text())
    check_audio = (args.exports / "check_audio.txt").read_text().split()
    report = {"platform": args.platform, "check_audio": check_audio, "results": {}}
    try:
        for precision in args.precisions.split(","):
            report["results"][precision] = convert_precision(args, precision, manifest)
            print(precision, json.dumps(report["results"][precision], indent=1), flush=True)
    except (ConversionError, ValueError) as exc:
        print(f"convert_rknn: error: {exc}", file=sys.stderr)
        return 1
    (args.out / "check_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {args.out / 'check_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
