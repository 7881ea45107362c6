"""What a built model directory says about itself (manifest.json), for the parts of edge-asr
that must not load a model to know it: config validation and streaming settings.
"""

from __future__ import annotations

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
