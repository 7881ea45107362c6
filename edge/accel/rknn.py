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
from edge.manifest import positive_whole

MANIFEST = "rknn_manifest.json"
LIBRKNNRT = Path("usr/lib/librknnrt.so")
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2"}
# rknn-toolkit-lite2: set_core_mask "only valid for RK3576 / RK3588", NPU_CORE_0_1_2 RK3588 only; the
# other SoCs have one NPU core and take `auto`.
MULTI_CORE_SOCS = {"rk3588": tuple(CORE_MASKS), "rk3576": ("auto", "0", "1", "0_1")}


def core_mask_problem(soc: str, core_mask: str) -> str | None:
    """Why `inference.rknn_core_mask` cannot run on this SoC, or None: RKNNLite refuses it at init_runtime,
    where its failure looked like a missing runtime."""
    allowed = MULTI_CORE_SOCS.get(soc, ("auto",))
    if core_mask in allowed:
        return None
    return f"inference.rknn_core_mask {core_mask!r} is not a core set of the {soc}'s NPU (it takes {', '.join(allowed)})"


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


DIMS = ("n_text_layer", "n_text_head", "n_text_state")  # the decoder's shape, which the backend lays out


def read_manifest(model_dir: Path) -> dict:
    """rknn_manifest.json written by scripts/rknn_export.py (copied by convert_rknn.py), its fields checked:
    one of the wrong shape was a KeyError at start-up, even with inference.backend: cpu (survey reads it)."""
    path = Path(model_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise BackendError(f"{path}: {problem}; convert the model again with scripts/convert_rknn.py")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return "not a JSON object"
    frames = manifest.get("encoder_frames")
    if not isinstance(frames, list) or not frames or not all(map(positive_whole, frames)):
        return f"encoder_frames {frames!r} is not a list of frame counts"
    for key in ("batch", "cache_slots"):
        if not positive_whole(manifest.get(key)):
            return f"{key} {manifest.get(key)!r} is not a whole number above 0"
    if type(manifest.get("mask_value")) not in (int, float):
        return f"mask_value {manifest.get('mask_value')!r} is not a number"
    dims = manifest.get("dims")
    if not isinstance(dims, dict) or not all(positive_whole(dims.get(key)) for key in DIMS):
        return f"dims {dims!r} lacks whole numbers for {', '.join(DIMS)}"
    return None


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
        problem = None
        if self._rknn.load_rknn(str(path)) != 0:
            problem = f"RKNNLite could not load {path}"
        elif self._rknn.init_runtime(core_mask=getattr(RKNNLite, CORE_MASKS[core_mask])) != 0:
            problem = (f"RKNNLite could not start the NPU runtime for {path} with core mask {core_mask} "
                       "(librknnrt.so missing, or not the version rknn-toolkit-lite2 expects)")
        if problem:
            self._rknn.release()  # a loaded model whose runtime would not start still holds its memory
            raise BackendError(problem)

    def inference(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self._rknn.inference(inputs=inputs)
        if outputs is None:
            raise BackendError("RKNNLite inference returned no output")
        return outputs

    def release(self) -> None:
        self._rknn.release()


def rknnlite_opener(model_dir: Path, core_mask: str = "auto") -> ModelOpener:
    return lambda stem: _RknnLiteModel(Path(model_dir) / f"{stem}.rknn", core_mask)
