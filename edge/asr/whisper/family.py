"""The Whisper family behind the `Family` seam: open its graphs on the CPU, onnxruntime GPUs or the RKNN NPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

import logging
from pathlib import Path

from edge.accel.board import int8_sums_clip_here
from edge.accel.ort import REQUIRED_PROVIDER, engine_cache, provider_chain
from edge.asr.whisper.bias import idle_forms as forms_too_common, ordinary_forms as forms_of_ordinary_words
from edge.asr.whisper.graph import WhisperBackend
from edge.asr.whisper.ort import OrtWhisperBackend, tensorrt_profiles
from edge.asr.whisper.recognizer import Recognizer, vocabulary_advice as advice
from edge.asr.whisper.rknn import RknnWhisperBackend
from edge.asr.whisper.tokenizer import Tokenizer
from edge.errors import BackendError
from edge.manifest import read, tuning, verify
from edge.vocabulary import Vocabulary

if TYPE_CHECKING:  # the schema is not loaded for offline transcription
    from edge.config import Config


def load(model_dir: Path, threads: int = 0) -> Recognizer:
    """A CPU recognizer; any problem with the directory is a `ModelError`."""
    recognizer = Recognizer.from_dir(model_dir, threads=threads)
    _warn_of_clipping(Path(model_dir))
    return recognizer


def int8_advice(model_dir: Path, manifest: dict, clips: bool) -> str | None:
    """What to do where a model with 8-bit int8 weights runs on a CPU whose int8 kernels clip their sums
    (`clips`: x86-64 without VNNI; None where there is nothing to say). Built there, it gets 7 bits."""
    encoder = (manifest.get("quantization") or {}).get("encoder") or {}
    if not clips or encoder.get("reduce_range") is not False:
        return None
    return (f"{model_dir} has 8-bit int8 weights (built on a CPU with VNNI, or by an older build), and this CPU's "
            "int8 kernels clip their sums (x86-64 without VNNI): it reads worse here (whisper-base agreed "
            "with fp32 on 0.916 of tokens instead of 0.956); rebuild it on this box: bash scripts/setup.sh or "
            "scripts/build_model.py (models/README.md, INT8)")


def _warn_of_clipping(model_dir: Path) -> None:
    advice = int8_advice(model_dir, read(model_dir), int8_sums_clip_here())
    if advice:
        log.warning("%s", advice)


def open(backend: str, cfg: Config) -> Recognizer:  # noqa: A001 - the Family protocol's name
    """A recognizer whose graphs run on `backend`, proven to (see `open_backend`)."""
    model_dir = Path(cfg.model.path)
    return Recognizer(open_backend(backend, cfg), Tokenizer.from_dir(model_dir), use_context=tuning(model_dir).context)


def vocabulary_advice(model_dir: Path, vocabulary: Vocabulary, language: str) -> str | None:
    """The recognizer's advice for check-config, which reads only the model's tokenizer, not its graphs."""
    return advice(vocabulary, Tokenizer.from_dir(Path(model_dir)), language)


def ordinary_forms(model_dir: Path, vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """`bias.ordinary_forms` by the model's tokenizer."""
    return forms_of_ordinary_words(vocabulary, Tokenizer.from_dir(Path(model_dir)))


def idle_forms(model_dir: Path, vocabulary: Vocabulary) -> list[tuple[str, str]]:
    """`bias.idle_forms` of `bias.ordinary_forms`, by the model's tokenizer."""
    tokenizer = Tokenizer.from_dir(Path(model_dir))
    return forms_too_common(forms_of_ordinary_words(vocabulary, tokenizer), tokenizer)


log = logging.getLogger(__name__)

# What an fp32 sibling must share with model.path to be the same model: one left from another build
# would run, and the GPU would print other words than the CPU fallback.
SAME_BUILD = ("format", "source", "builder", "dims")


def accelerator_model_dir(model_path: Path) -> Path:
    """GPUs run the fp32 graphs: the int8 ones use quantization ops TensorRT cannot take (models/README.md).

    The sibling is checked as model.path is (size and sha256 of every file: a flipped byte loads and
    runs, wrong), and must come from the same build; BackendError says which and how to fix it.
    """
    manifest = read(Path(model_path))
    if manifest.get("precision") != "int8":
        return Path(model_path)
    sibling = Path(model_path).with_name(Path(model_path).name.replace("-int8", "-fp32"))
    if not (sibling / "manifest.json").is_file():
        log.warning("no fp32 build of %s at %s: the GPU runs the int8 graphs, whose quantization operators "
                    "TensorRT cannot take (models/README.md); build it with scripts/build_model.py and install it "
                    "beside model.path (install.sh copies it on a Jetson)", model_path, sibling)
        return Path(model_path)
    problems = verify(sibling)
    if problems:
        raise BackendError(f"{problems[0]}: the GPU runs {sibling}; rebuild it with scripts/build_model.py")
    other = [key for key in SAME_BUILD if read(sibling).get(key) != manifest.get(key)]
    if other:
        raise BackendError(f"{sibling} is not the fp32 build of {model_path} (its {', '.join(other)} differ): "
                           "rebuild both with scripts/build_model.py")
    return sibling


def open_backend(name: str, cfg: Config) -> WhisperBackend:
    """Start the graphs on one backend and prove they run where they were asked to."""
    if name == "rknn":
        backend = RknnWhisperBackend(cfg.inference.rknn_model_dir, cfg.model.path, core_mask=cfg.inference.rknn_core_mask)
        backend.warm_up()
        return backend
    return _open_ort(name, cfg)


def _open_ort(name: str, cfg: Config) -> OrtWhisperBackend:
    model_dir = Path(cfg.model.path) if name == "cpu" else accelerator_model_dir(cfg.model.path)
    encoder_profile = decoder_profile = None
    if name == "tensorrt":
        engine_cache(Path(cfg.inference.tensorrt_cache_dir))
        dims = read(model_dir)["dims"]
        encoder_profile, decoder_profile = tensorrt_profiles(dims)
    chain = {"tensorrt_cache_dir": Path(cfg.inference.tensorrt_cache_dir), "tensorrt_fp16": cfg.inference.tensorrt_fp16}
    backend = OrtWhisperBackend(
        model_dir,
        name=name,
        providers=provider_chain(name, profile=encoder_profile, **chain),
        decoder_providers=provider_chain(name, profile=decoder_profile, **chain),
        threads=cfg.model.threads,
    )
    if not backend.runs_on(REQUIRED_PROVIDER[name]):
        raise BackendError(f"onnxruntime did not start {REQUIRED_PROVIDER[name]} (running on {', '.join(backend.active_providers)})")
    if name == "cpu":
        _warn_of_clipping(model_dir)
    return backend
