"""Static-shape ONNX exports of Whisper for RKNN: encoder length buckets, fixed-size decoder cache.

The RKNN compiler needs every shape fixed at conversion time, so the dynamic
graphs of build_model.py become:

  encoder_<F>.onnx   mel [1, n_mels, F] -> cross_k, cross_v [L*H, F/2, D]
                     one per bucket F (mel frames); the backend pads the mel
                     with silence to the smallest bucket that fits.
  decoder_<F>.onnx   tokens int64 [B, 1], position int64 [1],
                     self_k, self_v [L*B*H, S, D] (S cache slots),
                     self_mask [1, 1, S + 1] (additive: cached slots in use
                     and the new token get 0, the rest -1e9),
                     cross_k, cross_v [L*H, F/2, D]
                     -> logits [B, V], new_k, new_v [L*B*H, 1, D]
                     one decoder per encoder bucket (cross length is static).

Only the new token's key/value come out: the host writes them into its cache,
which keeps scatter ops out of the graph. Every input and output is at most
3-D, so no NHWC layout conversion applies to them on the NPU.
Linear projections are 1x1 Conv (the converter rejects MatMul of a 3-D
activation by a constant). The layer builders are scripts/whisper_onnx.py's.

Also writes calibration mels (.npy, one per line in dataset_<F>.txt) from the
shared eval speech for int8 conversion, and a check input for convert_rknn.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import whisper_onnx as wo  # noqa: E402
from build_model import DEFAULT_MODEL, MODELS, find_source, read_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO.parent / "shared" / "eval"
FRAMES_PER_SECOND = 100
DEFAULT_BUCKETS_S = (5, 10, 20, 30)
# Batch 1: rknn-toolkit2 2.3.2 mixes hypotheses up in a batch-5 decoder (simulator logits
# cosine 0.53 vs onnxruntime; batch 1: 1.0), so beams run one hypothesis per NPU call.
DEFAULT_BATCH = 1
DEFAULT_CACHE_SLOTS = 448
MANIFEST = "rknn_manifest.json"
# Calibration and check use different speech, so the check is not scored on calibration data;
# a multilingual model is calibrated on Mandarin too and checked on Mandarin.
CALIBRATION_SETS = {"whisper-tiny.en": ("tts_piper_en", "real_meeting", "tts_espeak_en", "longform_en"),
                    "whisper-base": ("longform_zh", "yue", "tts_piper_en", "longform_en")}
CHECK_SET = {"whisper-tiny.en": "real_en", "whisper-base": "zh"}
CHECK_MAX_FRAMES = 2000  # check utterances up to the 20 s bucket: 3 buckets built per precision


def static_encoder(weights: wo.Weights, dims: wo.Dims, frames: int) -> onnx.ModelProto:
    """build_encoder with a fixed mel length and 3-D outputs [L*H, F/2, D]."""
    model = wo.build_encoder(weights, dims, linear_as_conv=True)
    graph = model.graph
    rows, head_dim = dims.n_text_layer * dims.n_text_head, dims.n_text_state // dims.n_text_head
    flat = numpy_helper.from_array(np.array([rows, frames // 2, head_dim], np.int64), "encoder/flat_kv_shape")
    graph.initializer.append(flat)
    for name in ("cross_k", "cross_v"):
        producer = next(node for node in graph.node if name in node.output)
        producer.output[list(producer.output).index(name)] = f"{name}_5d"
        graph.node.append(helper.make_node("Reshape", [f"{name}_5d", flat.name], [name], name=f"{name}_flat"))
    _set_io(graph.input, {"mel": (TensorProto.FLOAT, [1, dims.n_mels, frames])})
    _set_io(graph.output, {n: (TensorProto.FLOAT, [rows, frames // 2, head_dim]) for n in ("cross_k", "cross_v")})
    return model


def _set_io(values, shapes: dict[str, tuple[int, list[int]]]) -> None:
    """Replace graph inputs/outputs with static-shape declarations of the same names."""
    del values[:]
    values.extend(_values(shapes))


def _unflatten(g: wo.GraphBuilder, prefix: str, x: str, shape: list[int]) -> str:
    return g.op("Reshape", [x, g.const(f"{prefix}/shape", np.array(shape, np.int64))], prefix)


def static_decoder(weights: wo.Weights, dims: wo.Dims, frames: int, batch: int, slots: int) -> onnx.ModelProto:
    """One decoder step for `batch` hypotheses over a fixed cache of `slots` positions."""
    layers, heads = dims.n_text_layer, dims.n_text_head
    head_dim, audio = dims.n_text_state // heads, frames // 2
    g = wo.GraphBuilder(linear_as_conv=True)
    x = _embed(g, weights)
    self_k = _unflatten(g, "decoder/self_k", "self_k", [layers, batch, heads, slots, head_dim])
    self_v = _unflatten(g, "decoder/self_v", "self_v", [layers, batch, heads, slots, head_dim])
    cross_k = _unflatten(g, "decoder/cross_k", "cross_k", [layers, 1, heads, audio, head_dim])
    cross_v = _unflatten(g, "decoder/cross_v", "cross_v", [layers, 1, heads, audio, head_dim])
    newest = (g.const("decoder/newest", np.array([slots], np.int64)), g.const("decoder/end", np.array([slots + 1], np.int64)))
    axis2 = g.const("decoder/axis2", np.array([2], np.int64))
    new_k, new_v = [], []
    for i in range(layers):
        prefix = f"decoder/layer_{i}"
        cache = (wo.layer_slice(g, prefix, self_k, i), wo.layer_slice(g, prefix, self_v, i))
        cross = tuple(_batched(g, prefix, wo.layer_slice(g, prefix, c, i), batch) for c in (cross_k, cross_v))
        x, k_all, v_all = wo.decoder_block(g, prefix, x, weights, dims, cache, cross, "self_mask")
        new_k.append(g.op("Slice", [k_all, *newest, axis2], prefix))
        new_v.append(g.op("Slice", [v_all, *newest, axis2], prefix))
    x = wo.layer_norm(g, "decoder/layer_norm", x, weights["decoder/layer_norm/gamma"], weights["decoder/layer_norm/beta"])
    logits = wo.logits_last(g, "decoder/projection", x, weights["decoder/projection/weight"])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    rows = layers * batch * heads
    for name, parts in (("new_k", new_k), ("new_v", new_v)):
        wo.stack_layers(g, f"decoder/{name}", parts, f"{name}_5d")
        flat = g.const(f"decoder/{name}/flat", np.array([rows, 1, head_dim], np.int64))
        g.nodes.append(helper.make_node("Reshape", [f"{name}_5d", flat], [name], name=name))
    inputs, outputs = _decoder_io(dims, frames, batch, slots)
    return g.model("whisper_decoder_static", _values(inputs), _values(outputs))


def _embed(g: wo.GraphBuilder, weights: wo.Weights) -> str:
    """Token embedding plus the learned position row picked by the explicit `position` input."""
    tokens = g.const("decoder/embeddings/weight", weights["decoder/embeddings/weight"])
    x = g.op("Gather", [tokens, "tokens"], "decoder/embeddings", axis=0)
    table = g.const("decoder/position_encodings/encodings", weights["decoder/position_encodings/encodings"])
    return g.op("Add", [x, g.op("Gather", [table, "position"], "decoder/position", axis=0)], "decoder/position")


def _decoder_io(dims: wo.Dims, frames: int, batch: int, slots: int) -> tuple[dict, dict]:
    """Static input/output declarations, in the order RKNNLite.inference takes them."""
    layers, heads = dims.n_text_layer, dims.n_text_head
    rows, head_dim, audio = layers * batch * heads, dims.n_text_state // heads, frames // 2
    inputs = {
        "tokens": (TensorProto.INT64, [batch, 1]),
        "position": (TensorProto.INT64, [1]),
        "self_k": (TensorProto.FLOAT, [rows, slots, head_dim]),
        "self_v": (TensorProto.FLOAT, [rows, slots, head_dim]),
        "self_mask": (TensorProto.FLOAT, [1, 1, slots + 1]),
        "cross_k": (TensorProto.FLOAT, [layers * heads, audio, head_dim]),
        "cross_v": (TensorProto.FLOAT, [layers * heads, audio, head_dim]),
    }
    outputs = {
        "logits": (TensorProto.FLOAT, [batch, dims.n_vocab]),
        "new_k": (TensorProto.FLOAT, [rows, 1, head_dim]),
        "new_v": (TensorProto.FLOAT, [rows, 1, head_dim]),
    }
    return inputs, outputs


def _batched(g: wo.GraphBuilder, prefix: str, x: str, batch: int) -> str:
    """[1, H, T, D] -> [B, H, T, D]: the converter mis-handles MatMul broadcasting over the batch."""
    return g.op("Expand", [x, g.const(f"{prefix}/batch_shape", np.array([batch, 1, 1, 1], np.int64))], prefix)


def _values(shapes: dict[str, tuple[int, list[int]]]) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in shapes.items()]


def frames_for(seconds: int) -> int:
    return int(seconds) * FRAMES_PER_SECOND


def pad_mel(mel: np.ndarray, frames: int) -> np.ndarray:
    """Cut or pad (with the mel's floor, i.e. silence) to exactly `frames` frames."""
    mel = mel[:, :frames]
    if mel.shape[1] < frames:
        floor = np.full((mel.shape[0], frames - mel.shape[1]), mel.min(), np.float32)
        mel = np.concatenate([mel, floor], axis=1)
    return np.ascontiguousarray(mel, dtype=np.float32)


def speech_mels(sets: tuple[str, ...], limit: int, max_frames: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Log-mels (as the recognizer computes them) of up to `limit` eval utterances with text."""
    from edge.audio.audiofile import load_audio
    from edge.asr.whisper.features import log_mel

    mels = []
    for set_name in sets:
        manifest = EVAL_DIR / set_name / "manifest.jsonl"
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()] if manifest.is_file() else []
        for row in (r for r in rows if r.get("text")):
            mel = log_mel(load_audio(EVAL_DIR / set_name / row["audio"]))
            if max_frames is None or mel.shape[1] <= max_frames:
                mels.append((f"{set_name}/{row['audio']}", mel))
            if len(mels) >= limit:
                return mels
    return mels


def write_calibration(out: Path, buckets: list[int], mels: list[tuple[str, np.ndarray]]) -> None:
    """dataset_<F>.txt: one .npy per line, each a mel padded/cut to the bucket."""
    calib = out / "calib"
    calib.mkdir(exist_ok=True)
    for frames in buckets:
        paths = []
        for index, (_, mel) in enumerate(mels):
            path = calib / f"mel_{frames}_{index}.npy"
            np.save(path, pad_mel(mel, frames)[None])
            paths.append(str(path))
        (out / f"dataset_{frames}.txt").write_text("\n".join(paths) + "\n")


def load_weights(model: str = DEFAULT_MODEL) -> tuple[dict, wo.Dims]:
    """The CTranslate2 weights build_model.py uses, straight from the installed package(s)."""
    weights = read_weights(find_source(model))
    return weights, wo.dims_from_weights(weights)


def write_graphs(weights: wo.Weights, dims: wo.Dims, out: Path, buckets_s: list[int], batch: int, slots: int) -> dict:
    """Every static encoder/decoder pair and rknn_manifest.json (what the backend reads)."""
    out.mkdir(parents=True, exist_ok=True)
    buckets = [frames_for(s) for s in sorted(buckets_s)]
    for frames in buckets:
        onnx.save(static_encoder(weights, dims, frames), out / f"encoder_{frames}.onnx")
        onnx.save(static_decoder(weights, dims, frames, batch, slots), out / f"decoder_{frames}.onnx")
    manifest = {"format": 1, "dims": dims.as_dict(), "encoder_frames": buckets, "batch": batch,
                "cache_slots": slots, "mask_value": wo.MASK_VALUE}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def export(model: str, out: Path, buckets_s: list[int], batch: int, slots: int, calibration: int,
           checks: int) -> dict:
    """The static graphs, int8 calibration mels and the check input of convert_rknn.py."""
    weights, dims = load_weights(model)
    manifest = write_graphs(weights, dims, out, buckets_s, batch, slots)
    write_calibration(out, manifest["encoder_frames"], speech_mels(CALIBRATION_SETS[model], calibration))
    write_check(out, speech_mels((CHECK_SET[model],), checks, CHECK_MAX_FRAMES))
    return manifest


def write_check(out: Path, mels: list[tuple[str, np.ndarray]]) -> None:
    """check.npz (mel_0, mel_1, ...) and check_audio.txt (their eval paths, same order)."""
    np.savez(out / "check.npz", **{f"mel_{i}": mel for i, (_, mel) in enumerate(mels)})
    (out / "check_audio.txt").write_text("".join(name + "\n" for name, _ in mels))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL, help="which weights to export")
    parser.add_argument("--out", type=Path, help="default: models/<model>-rknn-onnx")
    parser.add_argument("--buckets", default=",".join(map(str, DEFAULT_BUCKETS_S)), help="encoder lengths in seconds")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="decoder batch (hypotheses per NPU call)")
    parser.add_argument("--cache-slots", type=int, default=DEFAULT_CACHE_SLOTS, help="decoder self-attention cache size")
    parser.add_argument("--calibration", type=int, default=20, help="number of eval utterances for int8 calibration")
    parser.add_argument("--checks", type=int, default=10, help="number of eval utterances for the simulator check")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    buckets = [int(s) for s in args.buckets.split(",")]
    out = args.out or REPO / "models" / f"{args.model}-rknn-onnx"
    manifest = export(args.model, out, buckets, args.batch, args.cache_slots, args.calibration, args.checks)
    print(f"wrote {len(buckets)} encoder + {len(buckets)} decoder static graphs to {out} "
          f"(frames {manifest['encoder_frames']}, batch {args.batch}, cache {args.cache_slots})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
