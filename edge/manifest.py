"""What a built model directory says about itself (manifest.json), for the parts of edge-asr
that must not load a model to know it: config validation and streaming settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def read(model_dir: Path) -> dict[str, Any]:
    """The parsed manifest; OSError or ValueError when it cannot be read."""
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"{Path(model_dir) / 'manifest.json'} is not a JSON object")
    return manifest


def languages(model_dir: Path) -> tuple[str, tuple[str, ...]]:
    """(model name, its language codes); manifests from before `languages` are English-only."""
    manifest = read(model_dir)
    return str(manifest.get("name", Path(model_dir).name)), tuple(manifest.get("languages") or ("en",))


@dataclass(frozen=True)
class Tuning:
    """The values of the `auto` streaming keys: what the model meets the latency budget with,
    and whether it gains from the previous text as a prompt.

    The defaults are tiny.en's, and apply to manifests from before `streaming`.
    """

    final_beam: int = 5
    partial_interval_ms: int = 500
    max_utterance_s: float = 20.0
    context: bool = True  # give the text said just before as a prompt (long-form windows, streaming utterances)


def tuning(model_dir: Path) -> Tuning:
    """The manifest's `streaming` entry over the defaults; the defaults if it cannot be read."""
    try:
        given = read(model_dir).get("streaming") or {}
    except (OSError, ValueError):
        return Tuning()
    kinds = {"int": int, "float": float, "bool": bool}
    known = {f.name: kinds[str(f.type)] for f in fields(Tuning)}
    return Tuning(**{key: known[key](value) for key, value in given.items() if key in known})


def verify(model_dir: Path) -> list[str]:
    """Every file the manifest lists, checked for size and sha256; one problem per bad file.

    A flipped byte in a weight file loads and runs, and only the words come out wrong
    (a corrupted embedding printed "And so" for a whole sentence): hashing the ~100 MB
    of a model costs about 0.2 s, once at start-up and in check-config.
    """
    model_dir = Path(model_dir)
    try:
        listed = read(model_dir).get("files")
    except (OSError, ValueError) as exc:
        return [f"{model_dir / 'manifest.json'}: cannot be read ({exc})"]
    if not isinstance(listed, dict) or not listed:
        return [f"{model_dir / 'manifest.json'}: lists no files (rebuild with scripts/build_model.py)"]
    return [problem for name, entry in listed.items() if (problem := _file_problem(model_dir / name, entry))]


def _file_problem(path: Path, entry: Any) -> str | None:
    if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
        return f"{path.parent / 'manifest.json'}: no size and sha256 for {path.name}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path}: missing or unreadable ({exc.strerror or exc})"
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, the manifest says {entry['bytes']} (damaged or replaced: rebuild the model)"
    if _sha256(path) != entry["sha256"]:
        return f"{path}: content does not match the manifest's sha256 (damaged: rebuild the model)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
