"""Which hardware runs the model: board/runtime detection, `auto` selection, reasons.

Detection only reads files and asks onnxruntime for its providers; every input
is injectable (`Probe`) so tests can pretend to be a Jetson or an RK3588.
Opening then VERIFIES the choice: onnxruntime silently runs on CPU when a
provider cannot start, so a session that did not get the provider it was asked
for counts as a failure, and the next candidate is tried.

VAD (edge/vad.py) always stays on CPU: one Silero window costs about 0.1 ms
there, less than a single host-to-accelerator copy.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge.backends.base import BackendError
from edge.features import N_MELS

RKNN_SOCS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")

StatusCallback = Callable[[str], None]


class BackendStartError(RuntimeError):
    """No usable backend under `inference.strict` (or none at all); str() is the whole message."""


@dataclass(frozen=True)
class Probe:
    """What the box has. `root` prefixes /proc, /etc and /usr/lib paths."""

    root: Path = Path("/")
    providers: tuple[str, ...] | None = None  # None: ask onnxruntime
    rknnlite: bool | None = None  # None: try to find the module

    def ort_providers(self) -> tuple[str, ...]:
        if self.providers is not None:
            return self.providers
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())

    def has_rknnlite(self) -> bool:
        if self.rknnlite is not None:
            return self.rknnlite
        return importlib.util.find_spec("rknnlite") is not None

    def compatible(self) -> list[str]:
        """Device-tree `compatible` strings (NUL-separated), empty off ARM boards."""
        try:
            raw = (self.root / "proc/device-tree/compatible").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True)
class Board:
    kind: str  # "jetson", "rockchip" or "other"
    soc: str = ""

    def describe(self) -> str:
        return {"jetson": "an NVIDIA Jetson", "rockchip": f"a Rockchip {self.soc.upper()}"}.get(self.kind, "not a Jetson or Rockchip board")


def detect_board(probe: Probe) -> Board:
    compatible = probe.compatible()
    if (probe.root / "etc/nv_tegra_release").exists() or any(c.startswith("nvidia,tegra") for c in compatible):
        return Board("jetson", next((c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")), "tegra"))
    for entry in compatible:
        vendor, _, soc = entry.partition(",")
        if vendor == "rockchip" and soc.startswith("rk"):
            return Board("rockchip", soc)
    return Board("other")


@dataclass
class Candidate:
    """One row of `edge-asr backends`."""

    name: str
    available: bool
    reason: str
    selected: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "selected": self.selected, "reason": self.reason}


def _ort_candidate(name: str, provider: str, providers: tuple[str, ...], board: Board) -> Candidate:
    if provider in providers:
        return Candidate(name, True, f"onnxruntime has {provider}")
    hint = " (Jetson: install NVIDIA's onnxruntime-gpu wheel for JetPack)" if board.kind == "jetson" else ""
    return Candidate(name, False, f"onnxruntime has no {provider} (it has {', '.join(providers) or 'none'}){hint}")


def _rknn_candidate(cfg: Any, probe: Probe, board: Board) -> Candidate:
    from edge.backends import rknn

    if board.kind != "rockchip":
        return Candidate("rknn", False, f"no Rockchip NPU ({board.describe()})")
    if board.soc not in RKNN_SOCS:
        return Candidate("rknn", False, f"{board.soc} has no NPU supported by RKNN (supported: {', '.join(RKNN_SOCS)})")
    if not probe.has_rknnlite():
        return Candidate("rknn", False, "rknn-toolkit-lite2 (module rknnlite) is not installed")
    runtime = probe.root / rknn.LIBRKNNRT
    if not runtime.exists():
        return Candidate("rknn", False, f"/{rknn.LIBRKNNRT} is missing (install the RKNPU2 runtime)")
    model_dir = Path(cfg.inference.rknn_model_dir)
    try:
        missing = rknn.missing_files(model_dir)
    except BackendError as exc:
        return Candidate("rknn", False, f"{exc} (convert the model with scripts/check_rknn.sh)")
    if missing:
        return Candidate("rknn", False, f"{model_dir} lacks {', '.join(missing)}")
    return Candidate("rknn", True, f"{board.soc} NPU, librknnrt {rknn.runtime_version(runtime)}, rknnlite, .rknn models in {model_dir}")


def survey(cfg: Any, probe: Probe | None = None) -> list[Candidate]:
    """Every backend with whether this box could run it and why (not why not)."""
    from edge.backends.ort import CUDA, TENSORRT

    probe = probe or Probe()
    board = detect_board(probe)
    providers = probe.ort_providers()
    return [
        _ort_candidate("tensorrt", TENSORRT, providers, board),
        _ort_candidate("cuda", CUDA, providers, board),
        _rknn_candidate(cfg, probe, board),
        Candidate("cpu", True, "onnxruntime CPU is always available"),
    ]


def accelerator_model_dir(model_path: Path) -> Path:
    """GPUs run the fp32 graphs: the int8 ones use dynamic quantization ops TensorRT cannot take."""
    manifest = json.loads((Path(model_path) / "manifest.json").read_text())
    if manifest.get("precision") != "int8":
        return Path(model_path)
    sibling = Path(model_path).with_name(Path(model_path).name.replace("-int8", "-fp32"))
    return sibling if (sibling / "manifest.json").is_file() else Path(model_path)


def open_backend(name: str, cfg: Any) -> Any:
    """Start one backend and prove it runs where it was asked to."""
    if name == "rknn":
        from edge.backends.rknn import RknnWhisperBackend

        backend = RknnWhisperBackend(cfg.inference.rknn_model_dir, cfg.model.path, core_mask=cfg.inference.rknn_core_mask)
        backend.encode(np.zeros((N_MELS, 2), np.float32))  # loads the NPU runtime now, not mid-utterance
        return backend
    return _open_ort(name, cfg)


def _open_ort(name: str, cfg: Any) -> Any:
    from edge.backends.ort import REQUIRED_PROVIDER, OrtWhisperBackend, provider_chain, tensorrt_profiles

    model_dir = Path(cfg.model.path) if name == "cpu" else accelerator_model_dir(cfg.model.path)
    encoder_profile = decoder_profile = None
    if name == "tensorrt":
        Path(cfg.inference.tensorrt_cache_dir).mkdir(parents=True, exist_ok=True)
        dims = json.loads((model_dir / "manifest.json").read_text())["dims"]
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
    return backend


@dataclass
class Selection:
    """The outcome of choosing: the backend that runs, and every candidate's final reason."""

    backend: Any
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.backend.name


def select_backend(cfg: Any, probe: Probe | None = None, opener: Callable[[str, Any], Any] = open_backend) -> Selection:
    """Try the configured backend (or, for `auto`, each available one best first); CPU last.

    A wanted accelerator that is missing or fails to start raises BackendStartError
    under `inference.strict`; otherwise it becomes a warning and CPU runs.
    """
    candidates = survey(cfg, probe)
    wanted = cfg.inference.backend
    order = [c for c in candidates if c.available] if wanted == "auto" else [c for c in candidates if c.name in (wanted, "cpu")]
    warnings: list[str] = []
    for candidate in order:
        if candidate.name == "cpu" and wanted not in ("auto", "cpu"):
            _refuse_or_warn(cfg, wanted, candidates, warnings)
        if not candidate.available:
            continue
        try:
            backend = opener(candidate.name, cfg)
        except Exception as exc:  # noqa: BLE001 - any start-up failure means: try the next backend
            candidate.available, candidate.reason = False, f"failed to start: {one_line(exc)}"
            _started_badly(cfg, candidate, warnings)
            continue
        candidate.selected = True
        _mark_skipped(candidates, candidate)
        return Selection(backend, candidates, warnings)
    raise BackendStartError("no inference backend could start: " + "; ".join(f"{c.name}: {c.reason}" for c in candidates))


def _started_badly(cfg: Any, candidate: Candidate, warnings: list[str]) -> None:
    """A detected accelerator that does not start is worth a warning (`auto`) or an error (`strict`)."""
    if candidate.name == "cpu":
        return
    if cfg.inference.strict:
        raise BackendStartError(f"{candidate.name} {candidate.reason} (inference.strict is true: no CPU fallback)")
    if cfg.inference.backend == "auto":
        warnings.append(f"{candidate.name} {candidate.reason}; trying the next backend")


def _refuse_or_warn(cfg: Any, wanted: str, candidates: list[Candidate], warnings: list[str]) -> None:
    reason = next(c.reason for c in candidates if c.name == wanted)
    message = f"inference.backend is {wanted} but it cannot run: {reason}"
    if cfg.inference.strict:
        raise BackendStartError(message + " (inference.strict is true, so edge-asr will not fall back to CPU)")
    warnings.append(message + "; running on CPU")


def _mark_skipped(candidates: list[Candidate], chosen: Candidate) -> None:
    """Available backends that were not chosen say so."""
    for candidate in candidates:
        if candidate.available and not candidate.selected:
            candidate.reason = f"{candidate.reason}; not used ({chosen.name} selected)"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def open_recognizer(cfg: Any, on_status: StatusCallback, probe: Probe | None = None,
                    opener: Callable[[str, Any], Any] = open_backend) -> Any:
    """A Recognizer (plus `backend_name`) on the best backend; accelerators get the CPU safety net."""
    from edge.backends.fallback import FallbackRecognizer
    from edge.recognizer import Recognizer
    from edge.tokenizer import Tokenizer

    selection = select_backend(cfg, probe, opener)
    for warning in selection.warnings:
        on_status(warning)
    tokenizer = Tokenizer.from_dir(Path(cfg.model.path))
    recognizer = Recognizer(selection.backend, tokenizer)
    if selection.name == "cpu":
        return recognizer
    return FallbackRecognizer(
        recognizer,
        lambda: Recognizer(opener("cpu", cfg), tokenizer),
        on_status,
        timeout_ms=cfg.inference.timeout_ms,
        retry_accelerator_s=cfg.inference.retry_accelerator_s,
    )
