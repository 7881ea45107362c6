"""Open the recognizer a model directory asks for: its family from the manifest, the best backend, a CPU safety net."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

from edge.accel.board import Probe
from edge.accel.select import select_backend
from edge.asr.base import Family, Recognizer
from edge.asr.fallback import FallbackRecognizer, StatusCallback
from edge.asr.whisper import family as whisper
from edge import manifest
from edge.errors import ModelError

if TYPE_CHECKING:  # the schema is not loaded for offline transcription
    from edge.config import Config

FAMILIES: dict[str, Family] = {"whisper": whisper}


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """The model directory's manifest.json; a `ModelError` names what is wrong with it."""
    if not Path(model_dir).exists():
        raise ModelError(f"model directory {model_dir} does not exist (build it with scripts/build_model.py)")
    if not Path(model_dir).is_dir():
        raise ModelError(f"model directory {model_dir} is a file, not a directory")
    try:
        return manifest.read(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{Path(model_dir) / 'manifest.json'} is not a valid model manifest ({exc})") from None


def read_family(model_dir: Path) -> Family:
    """The family the manifest names (before the field: Whisper), without hashing the files."""
    name = read_manifest(model_dir).get("family", "whisper")
    if name not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise ModelError(f"{Path(model_dir) / 'manifest.json'}: unknown model family {name!r} (this edge-asr knows {known})")
    return FAMILIES[name]


def check_model(model_dir: Path) -> None:
    """Every file as the manifest recorded it (size and sha256); a ModelError naming the first bad one."""
    problems = manifest.verify(model_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelError(problems[0] + more)


def family_of(model_dir: Path) -> Family:
    """The family of a verified model directory (the manifest's `family`; before the field: Whisper)."""
    family = read_family(model_dir)
    check_model(model_dir)
    return family


def load_recognizer(model_dir: Path | str, threads: int = 0) -> Recognizer:
    """A CPU recognizer for any built model directory (offline transcription, benchmarks)."""
    return family_of(Path(model_dir)).load(Path(model_dir), threads)


def open_recognizer(
    cfg: Config,
    on_status: StatusCallback,
    probe: Probe | None = None,
    opener: Callable[[str, Config], Recognizer] | None = None,
) -> Recognizer:
    """A recognizer on the best backend; accelerators get the CPU safety net.

    `opener(backend, cfg)` defaults to the model family's own; tests pass one
    that pretends to be an accelerator.
    """
    open_on = opener or family_of(Path(cfg.model.path)).open
    selection = select_backend(cfg, open_on, probe)
    for warning in selection.warnings:
        on_status(warning)
    if selection.name == "cpu":
        return selection.opened
    return FallbackRecognizer(
        selection.opened,
        lambda: open_on("cpu", cfg),
        on_status,
        timeout_ms=cfg.inference.timeout_ms,
        retry_accelerator_s=cfg.inference.retry_accelerator_s,
    )
