"""Which runtime runs the model: `auto` selection over the board's accelerators, with reasons.

Opening VERIFIES the choice: onnxruntime silently runs on CPU when a provider
cannot start, so the model family's opener raises when a session did not get
the provider it was asked for, and the next candidate is tried.

VAD (edge/vad/) always stays on CPU: one Silero window costs about 0.1 ms
there, less than a single host-to-accelerator copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, TYPE_CHECKING, TypeVar

from edge.accel import rknn
from edge.accel.board import RKNN_SOCS, Board, Probe, detect_board
from edge.accel.ort import CUDA, TENSORRT
from edge.errors import BackendError, SetupError, StartupError, one_line

if TYPE_CHECKING:  # the schema is not loaded for offline transcription
    from edge.config import Config

T = TypeVar("T")
Opener = Callable[[str, "Config"], T]  # backend name, config -> something running on that backend


class BackendStartError(StartupError):
    """No usable backend under `inference.strict` (or none at all); str() is the whole message."""


class BackendSetupError(BackendStartError, SetupError):
    """Under `inference.strict`, an accelerator this process may not use: a device node the unit's sandbox
    keeps closed, a cache it may not write. Exit 78: a restart cannot mend it, and the unit restarts
    every other failure for ever (StartLimitIntervalSec=0), loading the model again each time."""


@dataclass
class Candidate:
    """One row of `edge-asr backends`."""

    name: str
    available: bool
    reason: str
    selected: bool = False
    broken: bool = False  # onnxruntime lists it but cannot load its libraries: a GPU box set up wrong
    setup: bool = False  # only a change of config or unit makes it run: strict then exits 78 (BackendSetupError)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "selected": self.selected, "reason": self.reason}


def _ort_candidate(name: str, provider: str, providers: tuple[str, ...], probe: Probe, board: Board,
                   wanted: str) -> Candidate:
    """Loading a provider's library pulls in CUDA, cuDNN, TensorRT: only for a backend that may be tried."""
    if provider in providers:
        if wanted not in ("auto", name):
            return Candidate(name, True, f"onnxruntime has {provider} (its libraries not loaded: inference.backend is {wanted})")
        problem = probe.provider_library_problem(provider)
        if problem:
            return Candidate(name, False, f"onnxruntime has {provider} but cannot load it: {problem}", broken=True)
        return Candidate(name, True, f"onnxruntime has {provider}")
    hint = " (Jetson: install NVIDIA's onnxruntime-gpu wheel for JetPack)" if board.kind == "jetson" else ""
    return Candidate(name, False, f"onnxruntime has no {provider} (it has {', '.join(providers) or 'none'}){hint}")


def _rknn_candidate(cfg: Config, probe: Probe, board: Board) -> Candidate:
    if board.kind != "rockchip":
        return Candidate("rknn", False, f"no Rockchip NPU ({board.describe()})")
    if board.soc not in RKNN_SOCS:
        return Candidate("rknn", False, f"{board.soc} has no NPU supported by RKNN (supported: {', '.join(RKNN_SOCS)})")
    mask_problem = rknn.core_mask_problem(board.soc, cfg.inference.rknn_core_mask)
    if mask_problem:
        return Candidate("rknn", False, mask_problem, setup=True)
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


def survey(cfg: Config, probe: Probe | None = None) -> list[Candidate]:
    """Every backend with whether this box could run it and why (not why not)."""
    probe = probe or Probe()
    board = detect_board(probe)
    providers, wanted = probe.ort_providers(), cfg.inference.backend
    return [
        _ort_candidate("tensorrt", TENSORRT, providers, probe, board, wanted),
        _ort_candidate("cuda", CUDA, providers, probe, board, wanted),
        _rknn_candidate(cfg, probe, board),
        Candidate("cpu", True, "onnxruntime CPU is always available"),
    ]


@dataclass
class Selection(Generic[T]):
    """The outcome of choosing: what the opener started, on which backend, and every candidate's final reason."""

    opened: T
    name: str
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def select_backend(cfg: Config, opener: Opener[T], probe: Probe | None = None) -> Selection[T]:
    """Try the configured backend (or, for `auto`, each available one best first); CPU last.

    A wanted accelerator that is missing or fails to start raises BackendStartError
    under `inference.strict`; otherwise it becomes a warning and CPU runs.
    """
    probe = probe or Probe()
    candidates, board = survey(cfg, probe), detect_board(probe)
    wanted = cfg.inference.backend
    order = [c for c in candidates if c.available] if wanted == "auto" else [c for c in candidates if c.name in (wanted, "cpu")]
    warnings: list[str] = []
    if wanted == "auto":  # it ran on CPU with no word of the missing library
        for candidate in (c for c in candidates if c.broken):
            _started_badly(cfg, candidate, warnings)
    for candidate in order:
        if candidate.name == "cpu" and wanted not in ("auto", "cpu"):
            _refuse_or_warn(cfg, wanted, candidates, warnings)
        if candidate.name == "cpu" and wanted == "auto" and _has_accelerator(board):
            _board_left_idle(cfg, board, candidates, warnings)
        if not candidate.available:
            continue
        try:
            opened = opener(candidate.name, cfg)
        except Exception as exc:  # noqa: BLE001 - any start-up failure means: try the next backend
            closed = probe.unopenable_nodes(candidate.name)
            candidate.available, candidate.reason = False, f"failed to start: {one_line(exc)}{_nodes_hint(closed)}"
            candidate.setup = probe.denies(candidate.name, closed) or isinstance(exc, SetupError)
            _started_badly(cfg, candidate, warnings)
            continue
        candidate.selected = True
        _mark_skipped(candidates, candidate)
        return Selection(opened, candidate.name, candidates, warnings)
    cpu_first = sorted(candidates, key=lambda c: c.name != "cpu")  # CPU's reason is the one that matters most
    raise BackendStartError("no inference backend could start: " + "; ".join(f"{c.name}: {c.reason}" for c in cpu_first))


def _nodes_hint(closed: list[str]) -> str:
    """The likelier cause of an accelerator that failed to start under the unit's sandbox."""
    if not closed:
        return ""
    return (f"; this process may not open {', '.join(closed)}: under systemd, allow them with a drop-in "
            "(docs/operations.md, Accelerators)")


def _started_badly(cfg: Config, candidate: Candidate, warnings: list[str]) -> None:
    """A detected accelerator that does not start is worth a warning (`auto`) or an error (`strict`)."""
    if candidate.name == "cpu":
        return
    if cfg.inference.strict:
        error = _strict_error([candidate])
        raise error(f"{candidate.name} {candidate.reason} (inference.strict is true: no CPU fallback)")
    if cfg.inference.backend == "auto":
        warnings.append(f"{candidate.name} {candidate.reason}; trying the next backend")


def _strict_error(failed: list[Candidate]) -> type[BackendStartError]:
    """Exit 78 (BackendSetupError) where only a change of config or unit makes these run, else 1."""
    return BackendSetupError if any(c.setup for c in failed) else BackendStartError


def _has_accelerator(board: Board) -> bool:
    return board.kind == "jetson" or board.kind == "rockchip" and board.soc in RKNN_SOCS


def _board_left_idle(cfg: Config, board: Board, candidates: list[Candidate], warnings: list[str]) -> None:
    """`auto` on a Jetson or an RK3588 that ends on CPU (PyPI's CPU-only onnxruntime, .rknn files missing)
    did so without a word, and `strict` let it start: "a box without its GPU must not start"."""
    family = ("tensorrt", "cuda") if board.kind == "jetson" else ("rknn",)
    why = "; ".join(f"{c.name}: {c.reason}" for c in candidates if c.name in family)
    message = f"this is {board.describe()}, but its accelerator cannot run ({why})"
    if cfg.inference.strict:
        error = _strict_error([c for c in candidates if c.name in family])
        raise error(message + " (inference.strict is true: no CPU fallback)")
    warnings.append(message + "; running on CPU")


def _refuse_or_warn(cfg: Config, wanted: str, candidates: list[Candidate], warnings: list[str]) -> None:
    candidate = next(c for c in candidates if c.name == wanted)
    message = f"inference.backend is {wanted} but it cannot run: {candidate.reason}"
    if cfg.inference.strict:
        raise _strict_error([candidate])(message + " (inference.strict is true, so edge-asr will not fall back to CPU)")
    warnings.append(message + "; running on CPU")


def _mark_skipped(candidates: list[Candidate], chosen: Candidate) -> None:
    """Available backends that were not chosen say so."""
    for candidate in candidates:
        if candidate.available and not candidate.selected:
            candidate.reason = f"{candidate.reason}; not used ({chosen.name} selected)"
