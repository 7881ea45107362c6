"""The Rockchip NPU runtime: rknn-toolkit-lite2 models, the runtime library's version, converted-model manifests.

`rknnlite` exists only on the board, so it is imported when a model is
opened, never at module import. Any object with `inference(inputs=[...])`
and `release()` can stand in for RKNNLite (tests use onnxruntime on the
same static exports; scripts/convert_rknn.py uses the toolkit's simulator).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edge.errors import BackendError

MANIFEST = "rknn_manifest.json"
LIBRKNNRT = Path("usr/lib/librknnrt.so")
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2"}


def runtime_version(library: Path) -> str:
    """The version librknnrt.so embeds ("librknnrt version: 2.3.2 ..."): it must match the converting toolkit."""
    try:
        found = re.search(rb"librknnrt version: ([0-9][0-9.]*)", library.read_bytes())
    except OSError:
        return "unknown version"
    return found.group(1).decode() if found else "unknown version"


class StaticModel(Protocol):
    """The part of RKNNLite this backend uses."""

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def release(self) -> None: ...


ModelOpener = Callable[[str], StaticModel]  # stem ("encoder_1000") -> loaded model


def read_manifest(model_dir: Path) -> dict:
    """rknn_manifest.json written by scripts/rknn_export.py (copied by convert_rknn.py)."""
    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None


def missing_files(model_dir: Path, suffix: str = ".rknn") -> list[str]:
    """Model files the manifest promises but the directory lacks."""
    manifest = read_manifest(model_dir)
    stems = [f"{part}_{frames}" for frames in manifest["encoder_frames"] for part in ("encoder", "decoder")]
    return [stem + suffix for stem in stems if not (Path(model_dir) / (stem + suffix)).is_file()]


class _RknnLiteModel:
    """One .rknn file on the NPU through rknn-toolkit-lite2."""

    def __init__(self, path: Path, core_mask: str) -> None:
        from rknnlite.api import RKNNLite  # board only

        self._rknn = RKNNLite(verbose=False)
        if self._rknn.load_rknn(str(path)) != 0:
            raise BackendError(f"RKNNLite could not load {path}")
        if self._rknn.init_runtime(core_mask=getattr(RKNNLite, CORE_MASKS[core_mask])) != 0:
            raise BackendError(f"RKNNLite could not start the NPU runtime for {path} (is librknnrt.so installed?)")

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self._rknn.inference(inputs=inputs)
        if outputs is None:
            raise BackendError("RKNNLite inference returned no output")
        return outputs

    def release(self) -> None:
        self._rknn.release()


def rknnlite_opener(model_dir: Path, core_mask: str = "auto") -> ModelOpener:
    return lambda stem: _RknnLiteModel(Path(model_dir) / f"{stem}.rknn", core_mask)
