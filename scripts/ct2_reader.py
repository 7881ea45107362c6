"""Read a CTranslate2 `model.bin` into numpy arrays without importing ctranslate2.

The build must not depend on the ctranslate2 runtime (it is a test-only
dependency), and the file format is small and stable: a header, a list of
named tensors, then a list of aliases (tied weights).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPPORTED_VERSIONS = (5, 6)

# CTranslate2 DataType enum -> numpy dtype.
_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: np.float64,
}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class Ct2Model:
    """The spec name, its revision and every variable (aliases resolved)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


class _Cursor:
    """Sequential little-endian reads over a bytes buffer, with bounds checks."""

    def __init__(self, data: bytes | bytearray, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise Ct2FormatError(f"{self.path}: truncated at byte {self.pos} (wanted {count} more)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        """u16 length (including the trailing NUL), then the bytes."""
        raw = self.take(self.u16())
        return raw.rstrip(b"\0").decode("utf-8")


def _read_variable(cur: _Cursor) -> tuple[str, np.ndarray]:
    name = cur.string()
    rank = cur.u8()
    shape = cur.unpack(f"{rank}I") if rank else ()
    dtype_id = cur.u8()
    if dtype_id not in _DTYPES:
        raise Ct2FormatError(f"{cur.path}: variable {name!r} has unknown dtype id {dtype_id}")
    nbytes = cur.u32()
    dtype = np.dtype(_DTYPES[dtype_id])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes != expected:
        raise Ct2FormatError(f"{cur.path}: variable {name!r} has {nbytes} bytes, shape {shape} needs {expected}")
    array = np.frombuffer(cur.take(nbytes), dtype=dtype).reshape(shape)
    return name, array


def read_ct2(path: Path) -> Ct2Model:
    """Parse the whole file; tied weights appear under both names."""
    path = Path(path)
    return parse_ct2(path.read_bytes(), path)


def parse_ct2(data: bytes | bytearray, path: Path) -> Ct2Model:
    """Parse a model.bin already in memory (e.g. reassembled from parts); `path` names it in errors."""
    cur = _Cursor(data, path)
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise Ct2FormatError(f"{path}: CTranslate2 format version {version} (supported: {SUPPORTED_VERSIONS})")
    spec = cur.string()
    revision = cur.u32()
    variables = dict(_read_variable(cur) for _ in range(cur.u32()))
    for _ in range(cur.u32()):
        alias, target = cur.string(), cur.string()
        if target not in variables:
            raise Ct2FormatError(f"{path}: alias {alias!r} points to missing {target!r}")
        variables[alias] = variables[target]
    if cur.pos != len(cur.data):
        raise Ct2FormatError(f"{path}: {len(cur.data) - cur.pos} trailing bytes")
    return Ct2Model(spec, revision, variables)
