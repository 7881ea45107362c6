"""What a built model directory says about itself (manifest.json), for the parts of edge-asr
that must not load a model to know it: config validation and streaming settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

FORMAT = 2  # what scripts/build_model.py writes and this code reads; 2: the decoder takes cross K/V per layer


def read(model_dir: Path) -> dict[str, Any]:
    """The parsed manifest, its shared fields checked; OSError or ValueError (naming the field) when
    it cannot be used: a model built by another edge-asr must fail in check-config, not at start."""
    path = Path(model_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object")
    problem = _field_problem(manifest)
    if problem:
        raise ValueError(f"{problem}; rebuild the model with scripts/build_model.py")
    return manifest


def _field_problem(manifest: dict[str, Any]) -> str | None:
    """The first shared field of the wrong shape: format, family, dims, languages, streaming."""
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r} is not {FORMAT}, the one this edge-asr reads (another version built it)"
    if not isinstance(manifest.get("family", "whisper"), str):
        return f"family {manifest['family']!r} is not a name"
    dims = manifest.get("dims")
    if not isinstance(dims, dict) or not all(map(positive_whole, dims.values())):
        return "dims is missing or not a mapping of positive whole numbers"
    languages = manifest.get("languages", ["en"])
    if not isinstance(languages, list) or not languages or not all(isinstance(code, str) and code for code in languages):
        return f"languages {languages!r} is not a list of language codes"
    streaming = manifest.get("streaming", {})
    if not isinstance(streaming, dict):
        return f"streaming {streaming!r} is not a mapping"
    for item in fields(Tuning):
        if item.name in streaming and not _KINDS[str(item.type)](streaming[item.name]):
            return f"streaming.{item.name} {streaming[item.name]!r} is not {_NAMES[str(item.type)]}"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_whole(value: Any) -> bool:
    """A count or size a manifest may hold: a whole number above 0, not a bool."""
    return _whole(value) and value > 0


_KINDS = {"int": positive_whole, "float": lambda v: (_whole(v) or isinstance(v, float)) and v > 0,
          "bool": lambda v: isinstance(v, bool)}
_NAMES = {"int": "a positive whole number", "float": "a positive number", "bool": "true or false"}


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
    """The manifest's `streaming` entry over the defaults; the defaults if it cannot be read
    (the model's load then reports why)."""
    try:
        given = read(model_dir).get("streaming", {})
    except (OSError, ValueError):
        return Tuning()
    known = {item.name for item in fields(Tuning)}
    return Tuning(**{key: value for key, value in given.items() if key in known})


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
    strays = [name for name in listed if not _plain_name(name)]
    if strays:
        return [f"{model_dir / 'manifest.json'}: lists {strays[0]!r}, not a file of the model directory"]
    return [problem for name, entry in listed.items() if (problem := _file_problem(model_dir / name, entry))]


def listed_files(model_dir: Path) -> list[str]:
    """manifest.json and the files it lists: what install.sh copies, and nothing else a model directory
    holds (a link to a root-only file was copied and made world-readable). ValueError when one of them is
    not a plain file name of the directory."""
    listed = read(Path(model_dir)).get("files")
    if not isinstance(listed, dict) or not all(map(_plain_name, listed)):
        raise ValueError(f"{Path(model_dir) / 'manifest.json'}: its files are not plain names of the model directory")
    return ["manifest.json", *listed]


def _plain_name(name: str) -> bool:
    """A file right in the model directory: no path, no dot-file ("../x", "a/b", ".hidden")."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _file_problem(path: Path, entry: Any) -> str | None:
    if not isinstance(entry, dict) or "sha256" not in entry or "bytes" not in entry:
        return f"{path.parent / 'manifest.json'}: no size and sha256 for {path.name}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"{path}: missing or unreadable ({exc.strerror or exc})"
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, the manifest says {entry['bytes']} (damaged or replaced: rebuild the model)"
    try:
        digest = _sha256(path)
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc}; the service user must be able to read the model)"
    if digest != entry["sha256"]:
        return f"{path}: content does not match the manifest's sha256 (damaged: rebuild the model)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
