"""RKNN static-shape adaptation on x86: the static ONNX exports run by onnxruntime stand in for RKNNLite."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge.audio.audiofile import load_audio
from edge.asr.base import Interrupt, Interrupted
from edge.errors import BackendError
from edge.asr.whisper.ort import OrtWhisperBackend
from edge.accel.rknn import missing_files, rknnlite_opener
from edge.asr.whisper.rknn import RknnWhisperBackend
from edge.asr.whisper.recognizer import Recognizer, WhisperOptions
from edge.asr.whisper.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import rknn_export  # noqa: E402

BATCH, SLOTS = 5, 224


class OrtStaticModel:
    """Same inputs/outputs as RKNNLite.inference, on the same static graph the .rknn is converted from."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.calls = 0

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        return self.session.run(None, {i.name: x for i, x in zip(self.session.get_inputs(), inputs)})

    def release(self) -> None:
        """Nothing to free."""


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rknn-static")
    weights, dims = rknn_export.load_weights()
    rknn_export.write_graphs(weights, dims, out, [5, 10], BATCH, SLOTS)
    return out


@pytest.fixture(scope="module")
def opened(static_dir: Path) -> dict[str, OrtStaticModel]:
    return {}


@pytest.fixture(scope="module")
def rknn_backend(static_dir: Path, fp32_model_dir: Path, opened: dict) -> RknnWhisperBackend:
    def opener(stem: str) -> OrtStaticModel:
        opened[stem] = OrtStaticModel(static_dir / f"{stem}.onnx")
        return opened[stem]

    return RknnWhisperBackend(static_dir, fp32_model_dir, opener=opener)


@pytest.fixture(scope="module")
def cpu_backend(fp32_model_dir: Path) -> OrtWhisperBackend:
    return OrtWhisperBackend(fp32_model_dir)


def test_manifest_lists_the_files_a_board_needs(static_dir: Path) -> None:
    assert missing_files(static_dir, ".onnx") == []
    assert missing_files(static_dir) == ["encoder_500.rknn", "decoder_500.rknn", "encoder_1000.rknn", "decoder_1000.rknn"]


def test_mel_is_padded_to_the_smallest_bucket(rknn_backend: RknnWhisperBackend, opened: dict) -> None:
    mel = np.random.default_rng(0).uniform(-1, 1, (80, 620)).astype(np.float32)
    cross = rknn_backend.encode(mel)
    assert cross.k.shape == (4, 1, 6, 500, 64)
    assert "encoder_1000" in opened and "encoder_500" not in opened
    with pytest.raises(BackendError, match="largest RKNN bucket"):
        rknn_backend.encode(np.zeros((80, 1002), np.float32))


def test_decoder_steps_match_the_dynamic_decoder(rknn_backend: RknnWhisperBackend, cpu_backend: OrtWhisperBackend) -> None:
    """7 hypotheses (split 5 + 2), a 3-token prompt then one more step: same logits and cache as the CPU graph."""
    mel = np.random.default_rng(1).uniform(-1, 1, (80, 500)).astype(np.float32)
    cross = cpu_backend.encode(mel)
    prompt = np.tile(np.array([[50257, 50362, 440]], np.int64), (7, 1))
    prompt[:, 2] += np.arange(7)
    expected, expected_cache = cpu_backend.decode(prompt, cpu_backend.empty_cache(7), cross)
    logits, cache = rknn_backend.decode(prompt, rknn_backend.empty_cache(7), cross)
    np.testing.assert_allclose(logits, expected, atol=2e-3)
    assert cache.length == 3
    np.testing.assert_allclose(cache.k, expected_cache.k, atol=1e-4)
    step = expected.argmax(axis=1)[:, None]
    expected, _ = cpu_backend.decode(step, expected_cache, cross)
    logits, cache = rknn_backend.decode(step, cache, cross)
    np.testing.assert_allclose(logits, expected, atol=2e-3)
    assert cache.length == 4


def test_mask_shows_used_slots_and_the_new_token(rknn_backend: RknnWhisperBackend) -> None:
    mask = rknn_backend.mask(3)[0, 0]
    assert mask.shape == (SLOTS + 1,)
    assert (mask[:3] == 0).all() and mask[SLOTS] == 0
    assert (mask[3:SLOTS] < -1e8).all()


def test_full_cache_is_a_backend_error(rknn_backend: RknnWhisperBackend, cpu_backend: OrtWhisperBackend) -> None:
    cross = rknn_backend.encode(np.zeros((80, 200), np.float32))
    shape = (4, 1, 6, SLOTS, 64)
    full = type(rknn_backend.empty_cache(1))(np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    with pytest.raises(BackendError, match="cache full"):
        rknn_backend.decode(np.array([[440]], np.int64), full, cross)


@pytest.mark.parametrize("clip", ["ljspeech_LJ050-0131.wav", "ljspeech_LJ002-0020.wav"])
def test_transcripts_match_the_cpu_backend(clip: str, rknn_backend: RknnWhisperBackend,
                                           cpu_backend: OrtWhisperBackend, eval_dir: Path, fp32_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_dir(fp32_model_dir)
    audio = load_audio(eval_dir / "real_en" / clip)
    expected = Recognizer(cpu_backend, tokenizer).transcribe(audio, options=WhisperOptions(beam_size=5)).text
    got = Recognizer(rknn_backend, tokenizer)
    assert got.backend_name == "rknn"
    assert got.transcribe(audio, options=WhisperOptions(beam_size=5)).text == expected


def test_an_interrupt_is_checked_before_each_npu_call(rknn_backend: RknnWhisperBackend, opened: dict) -> None:
    """RKNNLite cannot stop a call under way: once set, the next NPU call is refused, and only inside the block."""
    mel = np.zeros((80, 200), np.float32)
    cross = rknn_backend.encode(mel)
    tokens = np.array([[50257, 50362]], np.int64)
    interrupt = Interrupt()
    with rknn_backend.interruptible(interrupt):
        rknn_backend.decode(tokens, rknn_backend.empty_cache(1), cross)
        calls = opened["decoder_500"].calls, opened["encoder_500"].calls
        interrupt.set()
        with pytest.raises(Interrupted):
            rknn_backend.decode(tokens, rknn_backend.empty_cache(1), cross)
        with pytest.raises(Interrupted):
            rknn_backend.encode(mel)
        assert (opened["decoder_500"].calls, opened["encoder_500"].calls) == calls
    logits, _ = rknn_backend.decode(tokens, rknn_backend.empty_cache(1), cross)
    assert opened["decoder_500"].calls == calls[0] + 2 and logits.shape[0] == 1


def test_warm_up_opens_and_runs_what_the_shortest_utterance_uses(static_dir: Path, fp32_model_dir: Path) -> None:
    """Every window is at least 10 s: the 10 s bucket's encoder and decoder, not the 5 s encoder alone, so
    that a decoder RKNNLite cannot load fails selection at start-up rather than the first utterance."""
    opened: dict[str, OrtStaticModel] = {}

    def opener(stem: str) -> OrtStaticModel:
        opened[stem] = OrtStaticModel(static_dir / f"{stem}.onnx")
        return opened[stem]

    RknnWhisperBackend(static_dir, fp32_model_dir, opener=opener).warm_up()
    assert {stem: model.calls for stem, model in opened.items()} == {"encoder_1000": 1, "decoder_1000": 1}


def test_rknn_files_of_another_model_are_refused_by_name(static_dir: Path, fp32_model_dir: Path, tmp_path: Path) -> None:
    """whisper-base as model.path with tiny.en's .rknn files failed at the first decode (51865 tokens, 51864 logits)."""
    manifest = json.loads((fp32_model_dir / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "dims": {**manifest["dims"], "n_vocab": 51865}}))
    with pytest.raises(BackendError, match=f"{static_dir} was converted from another model than {tmp_path} \\(n_vocab differ\\)"):
        RknnWhisperBackend(static_dir, tmp_path, opener=lambda stem: None)


class Released(OrtStaticModel):
    def __init__(self, path: Path, released: list[str]) -> None:
        super().__init__(path)
        self.path, self._released = path, released

    def release(self) -> None:
        self._released.append(self.path.stem)


def test_a_warm_up_that_fails_releases_what_it_opened(static_dir: Path, fp32_model_dir: Path) -> None:
    """A decoder RKNNLite cannot load: selection moves on to CPU, and the encoder it had opened kept its
    NPU memory for the life of the process."""
    released: list[str] = []

    def opener(stem: str) -> OrtStaticModel:
        if stem.startswith("decoder"):
            raise BackendError(f"RKNNLite could not load {stem}.rknn")
        return Released(static_dir / f"{stem}.onnx", released)

    with pytest.raises(BackendError, match="could not load decoder_1000.rknn"):
        RknnWhisperBackend(static_dir, fp32_model_dir, opener=opener).warm_up()
    assert released == ["encoder_1000"]


def _stand_in_rknnlite(monkeypatch: pytest.MonkeyPatch, failing: str = "") -> list[object]:
    """rknn-toolkit-lite2's RKNNLite as its rknn_lite.py defines it: load_rknn and init_runtime return 0 on
    success, -1 on failure; inference returns None when setting inputs, running or reading outputs fails;
    the NPU_CORE_* values. The board's package is not installable on x86-64: stood in, not run on a board."""
    calls: list[object] = []

    class RKNNLite:
        NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
        NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 3, 7, 0xFFFF

        def __init__(self, verbose: bool = False) -> None:
            calls.append("new")

        def load_rknn(self, path: str) -> int:
            calls.append("load_rknn")
            return -1 if failing == "load_rknn" else 0

        def init_runtime(self, target: str | None = None, device_id: str | None = None, async_mode: bool = False,
                         core_mask: int = 0) -> int:
            calls.append(("init_runtime", core_mask))
            return -1 if failing == "init_runtime" else 0

        def inference(self, inputs: list[np.ndarray] | None = None, data_format: str | None = None) -> None:
            calls.append("inference")  # as the real one does when rknn_run fails

        def release(self) -> None:
            calls.append("release")

    monkeypatch.setitem(sys.modules, "rknnlite", types.ModuleType("rknnlite"))
    monkeypatch.setitem(sys.modules, "rknnlite.api", types.SimpleNamespace(RKNNLite=RKNNLite))
    return calls


@pytest.mark.parametrize("failing", ["load_rknn", "init_runtime"])
def test_a_model_whose_npu_runtime_fails_is_released(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: str) -> None:
    calls = _stand_in_rknnlite(monkeypatch, failing)
    with pytest.raises(BackendError, match="RKNNLite could not"):
        rknnlite_opener(tmp_path)("decoder_1000")
    assert calls[-1] == "release" and calls.count("release") == 1


@pytest.mark.parametrize(("mask", "value"), [("auto", 0), ("0", 1), ("2", 4), ("0_1", 3), ("0_1_2", 7)])
def test_the_core_mask_reaches_init_runtime_and_a_failed_run_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path, mask: str, value: int) -> None:
    calls = _stand_in_rknnlite(monkeypatch)
    model = rknnlite_opener(tmp_path, mask)("decoder_1000")
    assert ("init_runtime", value) in calls
    with pytest.raises(BackendError, match="RKNNLite inference returned no output"):
        model.inference([np.zeros((1, 1), np.int64)])
